//! The edge cache: whole responses kept in memory, least recently used evicted first once the
//! byte budget is spent, with one origin request per URL however many shoppers miss at once.
//!
//! A response is kept when the request was a `GET` without `Authorization`, the status is one a
//! shared cache may keep, it sets no cookie, its `Cache-Control` allows a shared cache to store
//! it, and it has a freshness (the route's `ttl_s`, else `s-maxage`, else `max-age`). `Vary`
//! splits the entries of a URL by the request headers it names (`Vary: *` is not kept). A stale
//! entry is still served for the route's `stale_while_revalidate_s` (while one request refreshes
//! it) and `stale_if_error_s` (when the origin fails).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header,
};
use bytes::Bytes;
use floodgate_core::CacheControl;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::settings::RouteCache;

/// The largest response kept; larger ones stream through uncached.
pub(crate) const MAX_ENTRY_BYTES: usize = 8 * 1024 * 1024;

pub(crate) const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// How a response was served, for `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// From a fresh entry (or a fill another request made).
    Hit,
    /// From the origin.
    Miss,
    /// From a stale entry.
    Stale,
}

impl Served {
    /// The `X-Cache` value.
    pub(crate) fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Stale => "STALE",
        })
    }
}

/// A kept response.
#[derive(Debug)]
pub(crate) struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    stored: Instant,
    fresh_for: Duration,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
}

/// What the cache holds for a request.
pub(crate) enum Lookup {
    /// Fresh: serve it.
    Fresh(Arc<Entry>),
    /// Past freshness but still inside stale-while-revalidate: serve it and refresh.
    Revalidate(Arc<Entry>),
    /// Past that, but usable if the origin fails.
    StaleIfError(Arc<Entry>),
    /// Nothing usable.
    Miss,
}

/// The outcome of a fill, shared with the requests that waited for it (`None`: nothing they
/// may share; they go to the origin themselves).
pub(crate) type Filled = Option<Arc<Entry>>;

/// Either this request fills the entry, or it waits for the one that does.
pub(crate) enum Fill {
    /// Fetch, then [`FillGuard::finish`].
    Leader(FillGuard),
    /// Wait for the leader's outcome.
    Follower(watch::Receiver<Option<Filled>>),
}

/// The right and duty to fill one key; followers are released when it finishes or is dropped.
pub(crate) struct FillGuard {
    cache: Arc<EdgeCache>,
    key: String,
    outcome: watch::Sender<Option<Filled>>,
}

/// The cache of one gateway.
pub(crate) struct EdgeCache {
    max_bytes: usize,
    store: Mutex<Store>,
    fills: Mutex<HashMap<String, watch::Receiver<Option<Filled>>>>,
}

#[derive(Default)]
struct Store {
    entries: HashMap<String, (Arc<Entry>, u64)>,
    /// Last use → key, oldest first.
    recency: BTreeMap<u64, String>,
    /// The request headers each URL's responses vary on.
    vary: HashMap<String, Vec<HeaderName>>,
    bytes: usize,
    tick: u64,
}

impl Entry {
    fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        self.body.len() + headers + 128
    }

    fn age(&self, now: Instant) -> Duration {
        now.duration_since(self.stored)
    }

    /// The response to send from this entry.
    pub(crate) fn respond(&self, method: &Method, served: Served) -> Response<Body> {
        let body = if method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(self.body.clone())
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        let age = self.age(Instant::now()).as_secs();
        response
            .headers_mut()
            .insert(header::AGE, HeaderValue::from(age));
        response.headers_mut().insert(X_CACHE, served.header());
        response
    }
}

impl EdgeCache {
    /// A cache holding at most `max_bytes`.
    pub(crate) fn new(max_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            max_bytes,
            store: Mutex::new(Store::default()),
            fills: Mutex::new(HashMap::new()),
        })
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a request may be answered from (and fill) the cache at all.
    pub(crate) fn applies_to<B>(request: &Request<B>) -> bool {
        matches!(*request.method(), Method::GET | Method::HEAD)
            && !request.headers().contains_key(header::AUTHORIZATION)
    }

    /// The entry key of a request: its site key (URL and site) and the values of the headers
    /// answers under it vary on.
    pub(crate) fn key<B>(&self, request: &Request<B>) -> String {
        let site = site_key(request);
        let store = self.store();
        variant_key(&site, store.vary.get(&site), request.headers())
    }

    /// What the cache holds for `key`.
    pub(crate) fn lookup(&self, key: &str) -> Lookup {
        let now = Instant::now();
        let mut store = self.store();
        let Some((entry, _)) = store.entries.get(key) else {
            return Lookup::Miss;
        };
        let entry = Arc::clone(entry);
        let age = entry.age(now);
        let lookup = if age < entry.fresh_for {
            Lookup::Fresh(Arc::clone(&entry))
        } else if age < entry.fresh_for + entry.stale_while_revalidate {
            Lookup::Revalidate(Arc::clone(&entry))
        } else if age < entry.fresh_for + entry.stale_if_error {
            Lookup::StaleIfError(Arc::clone(&entry))
        } else {
            Lookup::Miss
        };
        store.touch(key);
        lookup
    }

    /// Joins the fill of `key`: the first request leads, the others follow.
    pub(crate) fn join_fill(self: &Arc<Self>, key: &str) -> Fill {
        let mut fills = self.fills.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(outcome) = fills.get(key) {
            return Fill::Follower(outcome.clone());
        }
        let (outcome, receiver) = watch::channel(None);
        fills.insert(key.to_owned(), receiver);
        Fill::Leader(FillGuard {
            cache: Arc::clone(self),
            key: key.to_owned(),
            outcome,
        })
    }

    /// Builds an entry from a fetched response if a shared cache may keep it.
    pub(crate) fn entry_for<B>(
        request: &Request<B>,
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
        policy: &RouteCache,
    ) -> Option<Entry> {
        let keepable_status = matches!(status.as_u16(), 200 | 203 | 204 | 300 | 301 | 404 | 410);
        let cache_control = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let directives = CacheControl::parse(&cache_control);
        let varies_on_everything = headers
            .get_all(header::VARY)
            .iter()
            .any(|value| value.to_str().is_ok_and(|vary| vary.contains('*')));
        if request.method() != Method::GET
            || !keepable_status
            || headers.contains_key(header::SET_COOKIE)
            || !directives.storable()
            || varies_on_everything
        {
            return None;
        }
        let fresh_for = policy
            .ttl_s
            .map(Duration::from_secs)
            .or(directives.freshness())?;
        // Never fresh and never to be served stale: nothing to keep it for.
        if fresh_for.is_zero()
            && policy.stale_while_revalidate_s == 0
            && policy.stale_if_error_s == 0
        {
            return None;
        }
        // The connection's own headers never get here: the upstream codec leaves them out.
        let transient = [header::AGE, X_CACHE];
        // Values copied: an upstream's header values share its connection's read buffer, which
        // an entry must not keep alive (the cache counts an entry's own bytes).
        let mut kept = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers.iter().filter(|(name, _)| !transient.contains(name)) {
            let mut copied = HeaderValue::from_bytes(value.as_bytes())
                .expect("a header value's own bytes are a valid value");
            copied.set_sensitive(value.is_sensitive());
            kept.append(name.clone(), copied);
        }
        Some(Entry {
            status,
            headers: kept,
            body,
            stored: Instant::now(),
            fresh_for,
            stale_while_revalidate: Duration::from_secs(policy.stale_while_revalidate_s),
            stale_if_error: Duration::from_secs(policy.stale_if_error_s),
        })
    }

    /// Keeps `entry` for `request`, learning which headers its URL varies on.
    pub(crate) fn insert<B>(&self, request: &Request<B>, entry: Entry) -> Option<Arc<Entry>> {
        let size = entry.size();
        if size > MAX_ENTRY_BYTES.min(self.max_bytes) {
            return None;
        }
        let site = site_key(request);
        let vary: Vec<HeaderName> = entry
            .headers
            .get_all(header::VARY)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        let key = variant_key(&site, Some(&vary), request.headers());
        let entry = Arc::new(entry);
        let mut store = self.store();
        store.vary.insert(site, vary);
        store.remove(&key);
        store.tick += 1;
        let tick = store.tick;
        store
            .entries
            .insert(key.clone(), (Arc::clone(&entry), tick));
        store.recency.insert(tick, key);
        store.bytes += size;
        while store.bytes > self.max_bytes {
            let Some((_, oldest)) = store.recency.pop_first() else {
                break;
            };
            store.remove(&oldest);
        }
        Some(entry)
    }

    /// Drops every entry whose path starts with `prefix`; how many went.
    pub(crate) fn purge(&self, prefix: &str) -> usize {
        let mut store = self.store();
        let doomed: Vec<String> = store
            .entries
            .keys()
            .filter(|key| key.starts_with(prefix))
            .cloned()
            .collect();
        for key in &doomed {
            store.remove(key);
        }
        store.vary.retain(|url, _| !url.starts_with(prefix));
        doomed.len()
    }
}

impl Store {
    fn touch(&mut self, key: &str) {
        self.tick += 1;
        let tick = self.tick;
        if let Some((_, used)) = self.entries.get_mut(key) {
            let previous = std::mem::replace(used, tick);
            self.recency.remove(&previous);
            self.recency.insert(tick, key.to_owned());
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some((entry, used)) = self.entries.remove(key) {
            self.recency.remove(&used);
            self.bytes -= entry.size();
        }
    }
}

impl FillGuard {
    /// Publishes the outcome to the waiting requests.
    pub(crate) fn finish(self, filled: Filled) {
        self.outcome.send_replace(Some(filled));
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        self.cache
            .fills
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        // A leader that gave up (its client went away) releases the followers empty-handed.
        self.outcome.send_if_modified(|outcome| {
            if outcome.is_none() {
                *outcome = Some(None);
                true
            } else {
                false
            }
        });
    }
}

/// Waits for a leader's outcome, at most `timeout`.
pub(crate) async fn followed(
    mut outcome: watch::Receiver<Option<Filled>>,
    timeout: Duration,
) -> Filled {
    let waited = tokio::time::timeout(timeout, outcome.wait_for(Option::is_some)).await;
    match waited {
        Ok(Ok(filled)) => filled.clone().flatten(),
        _ => None,
    }
}

/// The part of an entry's key every variant shares: the URL, then what says which site it is
/// of (the `Host`, and the forwarding headers that name a host or scheme when a client sent
/// them). The URL comes first, so a purge by path prefix reaches every host's entries.
///
/// A forwarding header a client sent is dropped before the origin sees it unless the client
/// is a trusted proxy (see `proxy`); keyed on whenever present, it can split entries, never
/// let one site's answer be served for another.
fn site_key<B>(request: &Request<B>) -> String {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    let headers = request.headers();
    let mut url = String::with_capacity(path.len() + 32);
    url.push_str(path);
    url.push_str("\n@");
    if let Some(host) = headers.get(header::HOST) {
        url.extend(
            host.as_bytes()
                .iter()
                .map(|byte| char::from(byte.to_ascii_lowercase())),
        );
    }
    for name in &SITE_HEADERS {
        for value in headers.get_all(name) {
            url.push('\n');
            url.push_str(name.as_str());
            url.push(':');
            url.extend(value.as_bytes().iter().map(|&byte| char::from(byte)));
        }
    }
    url
}

/// Forwarding headers that tell the origin which site a request is for.
const SITE_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("forwarded"),
];

fn variant_key(url: &str, vary: Option<&Vec<HeaderName>>, headers: &HeaderMap) -> String {
    let mut key = url.to_owned();
    for name in vary.into_iter().flatten() {
        key.push('\n');
        key.push_str(name.as_str());
        key.push(':');
        for value in headers.get_all(name) {
            key.push_str(value.to_str().unwrap_or(""));
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
        let mut request = Request::get(path).body(Body::empty()).unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        request
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        request("/", pairs).headers().clone()
    }

    const POLICY: RouteCache = RouteCache {
        ttl_s: None,
        stale_while_revalidate_s: 10,
        stale_if_error_s: 60,
    };

    fn keep(cache: &EdgeCache, request: &Request<Body>, response: &[(&str, &str)], body: &str) {
        let entry = EdgeCache::entry_for(
            request,
            StatusCode::OK,
            &headers(response),
            Bytes::from(body.to_owned()),
            &POLICY,
        )
        .expect("cacheable");
        cache.insert(request, entry).expect("kept");
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_then_revalidate_then_stale_if_error_then_gone() {
        let cache = EdgeCache::new(1 << 20);
        let page = request("/shop/rods?page=1", &[]);
        keep(&cache, &page, &[("cache-control", "max-age=5")], "rods");
        let key = cache.key(&page);
        assert!(matches!(cache.lookup(&key), Lookup::Fresh(_)));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(matches!(cache.lookup(&key), Lookup::Revalidate(_)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(matches!(cache.lookup(&key), Lookup::StaleIfError(_)));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(matches!(cache.lookup(&key), Lookup::Miss));
    }

    #[test]
    fn what_a_shared_cache_must_not_keep_is_not_kept() {
        let page = request("/p", &[]);
        let refused = |response: &[(&str, &str)]| {
            EdgeCache::entry_for(
                &page,
                StatusCode::OK,
                &headers(response),
                Bytes::new(),
                &POLICY,
            )
            .is_none()
        };
        assert!(refused(&[]), "no freshness");
        assert!(refused(&[("cache-control", "private, max-age=60")]));
        assert!(refused(&[("cache-control", "no-store")]));
        assert!(refused(&[
            ("cache-control", "max-age=60"),
            ("set-cookie", "s=1")
        ]));
        assert!(refused(&[("cache-control", "max-age=60"), ("vary", "*")]));
        let post = Request::post("/p").body(Body::empty()).unwrap();
        let cc = headers(&[("cache-control", "max-age=60")]);
        assert!(EdgeCache::entry_for(&post, StatusCode::OK, &cc, Bytes::new(), &POLICY).is_none());
        let error = StatusCode::INTERNAL_SERVER_ERROR;
        assert!(EdgeCache::entry_for(&page, error, &cc, Bytes::new(), &POLICY).is_none());
        let override_ttl = RouteCache {
            ttl_s: Some(30),
            ..POLICY
        };
        assert!(
            EdgeCache::entry_for(
                &page,
                StatusCode::OK,
                &headers(&[]),
                Bytes::new(),
                &override_ttl
            )
            .is_some(),
            "the route's TTL stands in for a missing max-age"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn vary_splits_entries_by_the_named_headers() {
        let cache = EdgeCache::new(1 << 20);
        let german = request("/home", &[("accept-language", "de")]);
        let vary = [("cache-control", "max-age=60"), ("vary", "Accept-Language")];
        keep(&cache, &german, &vary, "Hallo");
        let english = request("/home", &[("accept-language", "en")]);
        assert!(matches!(cache.lookup(&cache.key(&english)), Lookup::Miss));
        let Lookup::Fresh(entry) = cache.lookup(&cache.key(&german)) else {
            panic!("the German page is kept");
        };
        assert_eq!(entry.body, "Hallo");
    }

    #[tokio::test(start_paused = true)]
    async fn the_byte_budget_evicts_the_least_recently_used() {
        let cache = EdgeCache::new(3 * 1_200);
        let cc = [("cache-control", "max-age=60")];
        let body = "x".repeat(1_000);
        for page in ["/a", "/b", "/c"] {
            keep(&cache, &request(page, &[]), &cc, &body);
        }
        // Using /a makes /b the oldest.
        assert!(matches!(
            cache.lookup(&cache.key(&request("/a", &[]))),
            Lookup::Fresh(_)
        ));
        keep(&cache, &request("/d", &[]), &cc, &body);
        assert!(matches!(
            cache.lookup(&cache.key(&request("/b", &[]))),
            Lookup::Miss
        ));
        for kept in ["/a", "/c", "/d"] {
            assert!(
                matches!(
                    cache.lookup(&cache.key(&request(kept, &[]))),
                    Lookup::Fresh(_)
                ),
                "{kept}"
            );
        }
        assert!(cache.store().bytes <= 3 * 1_200);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_are_kept_apart_by_the_site_the_request_names() {
        let cache = EdgeCache::new(1 << 20);
        let cc = [("cache-control", "max-age=60")];
        let poisoned = [
            [("host", "evil.example")],
            [("x-forwarded-host", "evil.example")],
            [("x-forwarded-proto", "gopher")],
            [("forwarded", "host=evil.example")],
        ];
        for headers in &poisoned {
            keep(&cache, &request("/shop/rods", headers), &cc, "evil");
        }
        let plain = request("/shop/rods", &[("host", "shop.example")]);
        assert!(
            matches!(cache.lookup(&cache.key(&plain)), Lookup::Miss),
            "no other site's answer"
        );
        keep(&cache, &plain, &cc, "rods");
        let shouted = request("/shop/rods", &[("host", "SHOP.example")]);
        let Lookup::Fresh(entry) = cache.lookup(&cache.key(&shouted)) else {
            panic!("a host is one host in any case");
        };
        assert_eq!(entry.body, "rods");
        assert_eq!(
            cache.purge("/shop/"),
            poisoned.len() + 1,
            "a purge reaches every site"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn purge_drops_a_prefix() {
        let cache = EdgeCache::new(1 << 20);
        let cc = [("cache-control", "max-age=60")];
        for page in ["/shop/a", "/shop/b", "/blog/c"] {
            keep(&cache, &request(page, &[]), &cc, "x");
        }
        assert_eq!(cache.purge("/shop/"), 2);
        assert!(matches!(
            cache.lookup(&cache.key(&request("/shop/a", &[]))),
            Lookup::Miss
        ));
        assert!(matches!(
            cache.lookup(&cache.key(&request("/blog/c", &[]))),
            Lookup::Fresh(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn one_leader_fills_and_followers_share_it() {
        let cache = EdgeCache::new(1 << 20);
        let Fill::Leader(leader) = cache.join_fill("/hot") else {
            panic!("first is the leader");
        };
        let Fill::Follower(follower) = cache.join_fill("/hot") else {
            panic!("second follows");
        };
        let waiting = tokio::spawn(followed(follower, Duration::from_secs(5)));
        let page = request("/hot", &[]);
        let entry = EdgeCache::entry_for(
            &page,
            StatusCode::OK,
            &headers(&[("cache-control", "max-age=60")]),
            Bytes::from_static(b"hot"),
            &POLICY,
        )
        .unwrap();
        leader.finish(cache.insert(&page, entry));
        assert_eq!(waiting.await.unwrap().unwrap().body, "hot");
        assert!(
            matches!(cache.join_fill("/hot"), Fill::Leader(_)),
            "the fill is over"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_gives_up_releases_its_followers() {
        let cache = EdgeCache::new(1 << 20);
        let leader = cache.join_fill("/p");
        let Fill::Follower(follower) = cache.join_fill("/p") else {
            panic!("second follows");
        };
        drop(leader);
        assert!(followed(follower, Duration::from_secs(5)).await.is_none());
    }
}
