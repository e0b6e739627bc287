//! Getting ready for a drop before its surge, in two passes (`floodgate_core::PrewarmStage`):
//!
//! - the **rehearsal**, `prewarm_s` before the start: sizes the drop's tables for its expected
//!   shoppers (so nothing rehashes during the surge), opens its waiting room, fetches every
//!   `prewarm_paths` page through the front door, opens idle connections to every upstream and
//!   checks that the downstream answers a connection — so what does not work is known minutes
//!   ahead, in the log and in `GET /admin/drops/{drop}`;
//! - the **final warm-up**, ten seconds before the start: the pages and connections again, so
//!   they are fresh (caches expire, idle connections are closed after a minute).
//!
//! Meanwhile `floodgate_expected_load` carries the expected shoppers from the rehearsal to the
//! end, for an autoscaler to add nodes before the surge. Each pass runs once per drop and start
//! time, in its own task; the once-a-second observer starts it.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::body::Body;
use axum::http::{Request, header};
use floodgate_core::{DropId, DropSpec, PrewarmStage, Timestamp};
use http_body_util::BodyExt;
use serde::Serialize;

use crate::Gateway;
use crate::waiting_room::RoomDrop;
use floodgate_http::ClientAddr;
use floodgate_http::ConnectionLoops;

/// Tables are sized up front for at most this many shoppers: past it, sizing would hold
/// gigabytes before anyone came, and the tables grow a 64th at a time anyway.
const MAX_PRESIZED_SHOPPERS: u64 = 10_000_000;
/// Idle connections opened per upstream at most: enough for a pool's first burst; the rest
/// open as the surge needs them.
const MAX_CONNECTIONS_PER_UPSTREAM: usize = 64;
/// The peer a pre-warm request comes from, as the front door sees it.
const PREWARM_CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Checks that the downstream takes connections; the bin wires one in with
/// [`Gateway::probe_downstream_with`] (the gateway itself never calls the downstream).
pub type DownstreamProbe =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// What one pass did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WarmUp {
    pub(crate) stage: &'static str,
    pub(crate) started_at: Timestamp,
    /// `None` while it runs.
    pub(crate) finished_at: Option<Timestamp>,
    /// Shoppers the tables were sized for (the rehearsal only).
    pub(crate) sized_for: Option<u64>,
    pub(crate) pages: Vec<PageWarmed>,
    pub(crate) connections_opened: usize,
    /// `"reachable"`, or why not; absent without a downstream.
    pub(crate) downstream: Option<String>,
}

impl WarmUp {
    fn started(stage: PrewarmStage, at: Timestamp) -> Self {
        Self {
            stage: stage.as_str(),
            started_at: at,
            finished_at: None,
            sized_for: None,
            pages: Vec::new(),
            connections_opened: 0,
            downstream: None,
        }
    }
}

/// One page fetched through the front door.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PageWarmed {
    pub(crate) path: String,
    pub(crate) status: u16,
    /// The answer is in the edge cache (its route caches and the origin allowed it).
    pub(crate) cached: bool,
}

/// The passes run so far, per drop, for the start time they were run for.
#[derive(Default)]
pub(crate) struct Prewarm {
    passes: Mutex<HashMap<DropId, (Timestamp, Vec<WarmUp>)>>,
    downstream: OnceLock<DownstreamProbe>,
    /// Where requests are served, so connections are opened there.
    loops: OnceLock<Arc<ConnectionLoops>>,
}

impl Prewarm {
    /// Opens the pre-warm's connections on `loops` from now on.
    pub(crate) fn open_on(&self, loops: Arc<ConnectionLoops>) {
        let _ = self.loops.set(loops);
    }

    /// The passes run for `drop_id`'s current start.
    pub(crate) fn passes(&self, drop_id: &DropId) -> Vec<WarmUp> {
        self.lock()
            .get(drop_id)
            .map(|(_, passes)| passes.clone())
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DropId, (Timestamp, Vec<WarmUp>)>> {
        self.passes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims `stage` of `drop_id` for the start `starts_at`: true if it had not run yet.
    fn claim(
        &self,
        drop_id: &DropId,
        starts_at: Timestamp,
        stage: PrewarmStage,
        now: Timestamp,
    ) -> bool {
        let mut passes = self.lock();
        let (for_start, done) = passes
            .entry(drop_id.clone())
            .or_insert_with(|| (starts_at, Vec::new()));
        if *for_start != starts_at {
            // Rescheduled: the passes for the old start say nothing about the new one.
            *for_start = starts_at;
            done.clear();
        }
        if done.iter().any(|pass| pass.stage == stage.as_str()) {
            return false;
        }
        done.push(WarmUp::started(stage, now));
        true
    }

    fn finish(&self, drop_id: &DropId, pass: WarmUp) {
        if let Some((_, done)) = self.lock().get_mut(drop_id)
            && let Some(slot) = done.iter_mut().find(|done| done.stage == pass.stage)
        {
            *slot = pass;
        }
    }
}

impl Gateway {
    /// Lets the pre-warm check the downstream; a second probe is ignored.
    pub fn probe_downstream_with(&self, probe: DownstreamProbe) {
        let _ = self.prewarm.downstream.set(probe);
    }

    /// Starts the pre-warm passes due at `now` that have not run; the observer calls it every
    /// second.
    pub(crate) fn start_due_prewarms(self: &Arc<Self>, now: Timestamp) {
        for drop_id in self.intake.drop_ids() {
            let due = self.intake.with_drop(&drop_id, |ledger| {
                let spec = ledger.spec();
                Some((spec.prewarm_stage(now)?, spec.starts_at))
            });
            let Some((stage, starts_at)) = due.flatten() else {
                continue;
            };
            // The definition is copied only for a pass that starts, not every drop every second.
            if self.prewarm.claim(&drop_id, starts_at, stage, now)
                && let Some(spec) = self
                    .intake
                    .with_drop(&drop_id, |ledger| ledger.spec().clone())
            {
                let gateway = Arc::clone(self);
                tokio::spawn(async move { gateway.warm_up(drop_id, spec, stage, now).await });
            }
        }
    }

    async fn warm_up(
        self: &Arc<Self>,
        drop_id: DropId,
        spec: DropSpec,
        stage: PrewarmStage,
        started_at: Timestamp,
    ) {
        let mut pass = WarmUp::started(stage, started_at);
        if stage == PrewarmStage::Rehearsal {
            let shoppers = spec.expected_shoppers.min(MAX_PRESIZED_SHOPPERS);
            let stock: u64 = spec.skus.iter().map(|sku| sku.stock).sum();
            // Each order holds a unit, so no more customers than units hold a key or a holding.
            let customers = usize::try_from(shoppers.min(stock)).unwrap_or(usize::MAX);
            self.intake.presize(&drop_id, customers);
            if spec.waiting_room.enabled {
                let room = RoomDrop {
                    id: drop_id.clone(),
                    room: spec.waiting_room.clone(),
                    starts_at: spec.starts_at,
                    ends_at: spec.ends_at,
                };
                let shoppers = usize::try_from(shoppers).unwrap_or(usize::MAX);
                self.rooms.presize(&room, shoppers, started_at);
            }
            pass.sized_for = Some(shoppers);
        }
        for path in &spec.prewarm_paths {
            pass.pages.push(self.warm_page(path).await);
        }
        pass.connections_opened = self.open_connections().await;
        if let Some(probe) = self.prewarm.downstream.get() {
            pass.downstream = Some(match probe().await {
                Ok(()) => "reachable".to_owned(),
                Err(error) => error,
            });
        }
        pass.finished_at = Some(self.clock.now());
        let failed_pages = pass.pages.iter().filter(|page| page.status >= 400).count();
        if failed_pages > 0 || pass.downstream.as_deref().is_some_and(|d| d != "reachable") {
            tracing::warn!(drop = %drop_id, stage = pass.stage, failed_pages, downstream = ?pass.downstream, "pre-warm found problems");
        } else {
            tracing::info!(drop = %drop_id, stage = pass.stage, pages = pass.pages.len(), connections = pass.connections_opened, "pre-warmed");
        }
        self.prewarm.finish(&drop_id, pass);
    }

    /// Opens idle connections to every upstream, on each connection loop: a connection is of use
    /// only to the loop it was opened on (`front_door::upstream`). Without loops (a gateway
    /// driven directly, as in tests), on this thread.
    async fn open_connections(self: &Arc<Self>) -> usize {
        let Some(loops) = self.prewarm.loops.get() else {
            return self
                .front_door
                .open_connections(MAX_CONNECTIONS_PER_UPSTREAM)
                .await;
        };
        let per_loop = MAX_CONNECTIONS_PER_UPSTREAM.div_ceil(loops.count());
        let opened = loops.on_each(|| {
            let gateway = Arc::clone(self);
            async move { gateway.front_door.open_connections(per_loop).await }
        });
        opened.await.into_iter().sum()
    }

    /// Fetches `path` through the front door, as a browser would, so a cacheable answer is in
    /// the edge cache before the first shopper asks.
    async fn warm_page(&self, path: &str) -> PageWarmed {
        let request = || {
            Request::get(path)
                .header(header::ACCEPT, "text/html")
                .header("x-floodgate-prewarm", "1")
                .body(Body::empty())
        };
        let (Ok(fetch), Ok(check)) = (request(), request()) else {
            return PageWarmed {
                path: path.to_owned(),
                status: 400,
                cached: false,
            };
        };
        let client = ClientAddr::new(PREWARM_CLIENT);
        let response = self.front_door.handle(fetch, &client).await;
        let status = response.status().as_u16();
        // Read to the end, so the connection goes back to the idle list.
        let _ = response.into_body().collect().await;
        PageWarmed {
            path: path.to_owned(),
            status,
            cached: self.front_door.holds_fresh(&check),
        }
    }
}
