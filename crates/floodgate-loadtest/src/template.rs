//! Templated values in a scenario: `"/products/{sku}"`, `"c-{run}-{shopper}"`.

use std::fmt::Write;

/// A value a template can name; each shopper carries its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// The run's id, so keys and customers of separate runs never collide on a store that persists.
    Run,
    /// The shopper's arrival number, from 0.
    Shopper,
    /// The customer identity, itself rendered from `values.customer`.
    Customer,
    /// The SKU drawn for this shopper from `values.skus`.
    Sku,
    /// `values.drop`.
    Drop,
}

impl Var {
    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "run" => Self::Run,
            "shopper" => Self::Shopper,
            "customer" => Self::Customer,
            "sku" => Self::Sku,
            "drop" => Self::Drop,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A string with `{name}` holes, parsed once and rendered per shopper.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// The values one shopper renders templates with.
#[derive(Debug, Clone)]
pub struct Values<'a> {
    /// The run id.
    pub run: &'a str,
    /// The arrival number.
    pub shopper: u64,
    /// The rendered customer identity.
    pub customer: &'a str,
    /// The drawn SKU ("" when the scenario lists none).
    pub sku: &'a str,
    /// The drop id ("" when the scenario names none).
    pub drop: &'a str,
}

impl Template {
    /// Parses `text`; `{{` and `}}` stand for literal braces.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    let var = Var::named(&name).ok_or_else(|| {
                        format!(
                            "unknown value {{{name}}} in {text:?} (known: run, shopper, customer, sku, drop)"
                        )
                    })?;
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Var(var));
                }
                '}' => return Err(format!("unmatched '}}' in {text:?}")),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Self { parts })
    }

    /// Whether the template names `var`.
    pub fn uses(&self, var: Var) -> bool {
        self.parts.contains(&Part::Var(var))
    }

    /// The text, when the template names no value: the same for every shopper.
    pub fn fixed(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(text)] => Some(text),
            _ => None,
        }
    }

    /// Appends the rendered template to `out`.
    pub fn render_into(&self, values: &Values<'_>, out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(Var::Run) => out.push_str(values.run),
                Part::Var(Var::Shopper) => {
                    let _ = write!(out, "{}", values.shopper);
                }
                Part::Var(Var::Customer) => out.push_str(values.customer),
                Part::Var(Var::Sku) => out.push_str(values.sku),
                Part::Var(Var::Drop) => out.push_str(values.drop),
            }
        }
    }

    /// The rendered template.
    pub fn render(&self, values: &Values<'_>) -> String {
        let mut out = String::new();
        self.render_into(values, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values<'static> {
        Values {
            run: "r1",
            shopper: 7,
            customer: "c-7",
            sku: "sku-a",
            drop: "d1",
        }
    }

    #[test]
    fn renders_every_value_and_literal_braces() {
        let template =
            Template::parse("/{drop}/{sku}?c={customer}&s={shopper}&r={run}&{{x}}").unwrap();
        assert_eq!(template.render(&values()), "/d1/sku-a?c=c-7&s=7&r=r1&{x}");
        assert!(template.uses(Var::Sku));
    }

    #[test]
    fn refuses_unknown_values_and_stray_braces() {
        assert!(
            Template::parse("/{nope}")
                .unwrap_err()
                .contains("unknown value {nope}")
        );
        assert!(Template::parse("/a}").unwrap_err().contains("unmatched"));
        assert!(!Template::parse("/plain").unwrap().uses(Var::Sku));
    }

    #[test]
    fn only_a_template_without_values_is_fixed() {
        assert_eq!(Template::parse("/a/{{b}}").unwrap().fixed(), Some("/a/{b}"));
        assert_eq!(Template::parse("").unwrap().fixed(), Some(""));
        assert_eq!(Template::parse("/a/{sku}").unwrap().fixed(), None);
    }
}
