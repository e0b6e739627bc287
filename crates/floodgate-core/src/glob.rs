//! Path globs for routes: `*` matches within one path segment, `**` across segments.
//!
//! `/shop/rods/*` matches `/shop/rods/muskie` but not `/shop/rods/muskie/reviews`;
//! `/shop/rods/**` matches both (and `/shop/rods/` itself). Matching walks the set of reachable
//! offsets once per pattern part, so it costs at most parts × path length whatever the input:
//! no backtracking blow-up from a hostile path.

/// A parsed path glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathGlob {
    pattern: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**`: any run of characters.
    AnyDepth,
}

/// Why a pattern is not a glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    /// Patterns are absolute paths.
    #[error("must start with '/'")]
    NotAbsolute,
    /// `***` and longer runs mean nothing.
    #[error("'***' is not a pattern; use '*' (one segment) or '**' (any depth)")]
    TooManyStars,
}

impl PathGlob {
    /// Parses `pattern`.
    pub fn parse(pattern: &str) -> Result<Self, GlobError> {
        if !pattern.starts_with('/') {
            return Err(GlobError::NotAbsolute);
        }
        let mut parts = Vec::new();
        let mut rest = pattern;
        while !rest.is_empty() {
            let stars = rest.len() - rest.trim_start_matches('*').len();
            match stars {
                0 => {
                    let literal_end = rest.find('*').unwrap_or(rest.len());
                    parts.push(Part::Literal(rest[..literal_end].to_owned()));
                    rest = &rest[literal_end..];
                }
                1 => {
                    parts.push(Part::Star);
                    rest = &rest[1..];
                }
                2 => {
                    parts.push(Part::AnyDepth);
                    rest = &rest[2..];
                }
                _ => return Err(GlobError::TooManyStars),
            }
        }
        Ok(Self {
            pattern: pattern.to_owned(),
            parts,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `path` (without the query) matches.
    pub fn matches(&self, path: &str) -> bool {
        // Most route patterns are a literal with at most one trailing wildcard: decided without
        // allocating, as the admission decision's budget (under 1 µs for 20 routes) needs.
        if let Some(Part::Literal(prefix)) = self.parts.first()
            && !path.starts_with(prefix.as_str())
        {
            return false;
        }
        match self.parts.as_slice() {
            [Part::Literal(literal)] => path.len() == literal.len(),
            [Part::Literal(_), Part::AnyDepth] => true,
            [Part::Literal(prefix), Part::Star] => !path[prefix.len()..].contains('/'),
            _ => self.matches_in_general(path),
        }
    }

    fn matches_in_general(&self, path: &str) -> bool {
        let bytes = path.as_bytes();
        // reachable[i]: the parts so far can consume exactly path[..i].
        let mut reachable = vec![false; bytes.len() + 1];
        reachable[0] = true;
        for part in &self.parts {
            let mut next = vec![false; bytes.len() + 1];
            match part {
                Part::Literal(literal) => {
                    for start in (0..=bytes.len()).filter(|&start| reachable[start]) {
                        if bytes[start..].starts_with(literal.as_bytes()) {
                            next[start + literal.len()] = true;
                        }
                    }
                }
                Part::Star => {
                    let mut open = false;
                    for (offset, slot) in next.iter_mut().enumerate() {
                        open |= reachable[offset];
                        *slot = open;
                        if bytes.get(offset) == Some(&b'/') {
                            open = false;
                        }
                    }
                }
                Part::AnyDepth => {
                    if let Some(first) = reachable.iter().position(|&at| at) {
                        next[first..].iter_mut().for_each(|slot| *slot = true);
                    }
                }
            }
            reachable = next;
        }
        reachable[bytes.len()]
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn glob(pattern: &str) -> PathGlob {
        PathGlob::parse(pattern).unwrap()
    }

    #[test]
    fn literals_match_exactly() {
        assert!(glob("/healthz").matches("/healthz"));
        assert!(!glob("/healthz").matches("/healthz/"));
        assert!(!glob("/healthz").matches("/health"));
    }

    #[test]
    fn one_star_stays_within_a_segment() {
        let rods = glob("/shop/rods/*");
        assert!(rods.matches("/shop/rods/muskie"));
        assert!(rods.matches("/shop/rods/"));
        assert!(!rods.matches("/shop/rods/muskie/reviews"));
        assert!(!rods.matches("/shop/reels/x"));
        let middle = glob("/shop/*/reviews");
        assert!(middle.matches("/shop/muskie/reviews"));
        assert!(!middle.matches("/shop/a/b/reviews"));
        assert!(glob("/static/*.css").matches("/static/site.css"));
        assert!(!glob("/static/*.css").matches("/static/site.js"));
    }

    #[test]
    fn two_stars_cross_segments() {
        let tree = glob("/shop/rods/**");
        assert!(tree.matches("/shop/rods/"));
        assert!(tree.matches("/shop/rods/muskie/reviews/2"));
        assert!(!tree.matches("/shop/rod"));
        assert!(glob("/**/checkout").matches("/eu/de/checkout"));
        assert!(glob("/**").matches("/"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert_eq!(PathGlob::parse("shop/*"), Err(GlobError::NotAbsolute));
        assert_eq!(PathGlob::parse("/shop/***"), Err(GlobError::TooManyStars));
    }

    proptest! {
        /// The allocation-free shortcuts agree with the general matcher.
        #[test]
        fn shortcuts_agree_with_the_general_matcher(
            pattern in "/[a-c/]{0,6}(\\*{1,2})?",
            path in "/[a-c/]{0,10}",
        ) {
            let glob = glob(&pattern);
            prop_assert_eq!(glob.matches(&path), glob.matches_in_general(&path));
        }
    }

    #[test]
    fn a_hostile_path_costs_linear_time() {
        let pattern = glob(&"/*a".repeat(50));
        let path = "/".to_owned() + &"a".repeat(20_000);
        assert!(!pattern.matches(&path));
    }
}
