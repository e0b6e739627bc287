//! Exactly one node delivers when several share a store: the leader of the `delivery` role.
//!
//! The term is a row in the store, kept by its holder and taken over only once the database's
//! clock says it expired (`Cluster::lead`). The [`Fence`] is this node's side of it: a leader may
//! start a request only until its own monotonic clock passes the moment it asked for the term
//! plus most of the term, which comes before the database's expiry. So a leader that was paused
//! (a stopped process, a long GC-like stall, a partition) finds its fence closed when it wakes,
//! before any other node could have taken over. A node that takes over waits one more second, so
//! no one-second window holds starts of two leaders and the downstream's limit stays global.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use floodgate_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::pacer::WINDOW;

/// The role's name in the store.
const ROLE: &str = "delivery";

/// A term is renewed four times per length, so one lost renewal does not end it.
const RENEWALS_PER_TERM: u32 = 4;

/// Whether this node may start a delivery now.
#[derive(Debug)]
pub struct Fence {
    /// `None`: this node delivers alone (an unshared store), from `alone_from` on (if set).
    term: Option<Mutex<Lease>>,
    alone_from: Option<Instant>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Lease {
    number: u64,
    /// Starts are allowed from `opens_at` until `closes_at`.
    opens_at: Option<Instant>,
    closes_at: Option<Instant>,
}

impl Fence {
    /// Always open: the only node.
    pub fn solo() -> Arc<Self> {
        Arc::new(Self {
            term: None,
            alone_from: None,
        })
    }

    /// The only node, starting on a store a killed predecessor may have delivered from a moment
    /// ago: closed for one pacer window, so no one-second window holds both processes' starts
    /// (the same wait as a takeover's).
    pub fn solo_after_restart() -> Arc<Self> {
        Arc::new(Self {
            term: None,
            alone_from: Some(Instant::now() + WINDOW),
        })
    }

    /// Closed until [`keep_leadership`] wins a term.
    pub fn shared() -> Arc<Self> {
        Arc::new(Self {
            term: Some(Mutex::new(Lease::default())),
            alone_from: None,
        })
    }

    /// The term this node may deliver under at `now` (`Some(0)` when alone), `None` if it may
    /// not.
    pub fn term_at(&self, now: Instant) -> Option<u64> {
        let Some(term) = &self.term else {
            return self.alone_from.is_none_or(|from| now >= from).then_some(0);
        };
        let lease = *term.lock().unwrap_or_else(PoisonError::into_inner);
        let open = lease.opens_at.is_some_and(|opens| opens <= now)
            && lease.closes_at.is_some_and(|closes| now < closes);
        open.then_some(lease.number)
    }

    fn hold(&self, number: u64, opens_at: Instant, closes_at: Instant) {
        if let Some(term) = &self.term {
            let mut lease = term.lock().unwrap_or_else(PoisonError::into_inner);
            let opens_at = if lease.number == number {
                lease.opens_at.unwrap_or(opens_at)
            } else {
                opens_at
            };
            *lease = Lease {
                number,
                opens_at: Some(opens_at),
                closes_at: Some(closes_at),
            };
        }
    }

    fn close(&self) {
        if let Some(term) = &self.term {
            *term.lock().unwrap_or_else(PoisonError::into_inner) = Lease::default();
        }
    }
}

/// Keeps trying to lead delivery for `store`'s cluster, keeping `fence` in step, until stopped;
/// then closes the fence and resigns the term so a follower takes over at once.
pub struct Leadership {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Leadership {
    /// Starts contending for the lead with terms of `term` length.
    pub fn start(store: Arc<dyn Store>, fence: Arc<Fence>, term: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let Some(cluster) = store.cluster() else {
                return;
            };
            let mut ticks = tokio::time::interval(term / RENEWALS_PER_TERM);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut leading = false;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stopped.changed() => break,
                }
                let asked_at = Instant::now();
                match cluster.lead(ROLE, term).await {
                    Ok(Some(won)) => {
                        let opens_at = if won.taken_over {
                            asked_at + WINDOW
                        } else {
                            asked_at
                        };
                        // The database's expiry is at least `term` after `asked_at`; this
                        // node stops a fifth of a term before that.
                        fence.hold(won.number, opens_at, asked_at + term - term / 5);
                        if !leading {
                            tracing::info!(
                                term = won.number,
                                node = cluster.node(),
                                "leading delivery"
                            );
                        }
                        leading = true;
                    }
                    Ok(None) => {
                        if leading {
                            tracing::warn!("another node leads delivery now");
                        }
                        fence.close();
                        leading = false;
                    }
                    // The fence closes by itself when the term runs out unrenewed.
                    Err(error) => tracing::warn!(%error, "cannot renew the delivery term"),
                }
            }
            fence.close();
            if leading && let Err(error) = cluster.resign(ROLE).await {
                tracing::warn!(%error, "cannot resign the delivery term; it expires by itself");
            }
        });
        Self { stop, task }
    }

    /// Stops contending, closes the fence and resigns (after the dispatcher has stopped).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "leadership task failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_solo_fence_is_always_open_and_a_shared_one_only_within_its_term() {
        let now = Instant::now();
        assert_eq!(Fence::solo().term_at(now), Some(0));
        let restarted = Fence::solo_after_restart();
        assert_eq!(restarted.term_at(now), None, "a predecessor's last second");
        assert_eq!(restarted.term_at(now + WINDOW + WINDOW), Some(0));
        let fence = Fence::shared();
        assert_eq!(fence.term_at(now), None);
        let second = Duration::from_secs(1);
        fence.hold(3, now + second, now + 4 * second);
        assert_eq!(
            fence.term_at(now),
            None,
            "the quiet second after a takeover"
        );
        assert_eq!(fence.term_at(now + second), Some(3));
        // A renewal of the same term keeps its opening; it does not restart the quiet second.
        fence.hold(3, now + 2 * second, now + 5 * second);
        assert_eq!(fence.term_at(now + second), Some(3));
        assert_eq!(fence.term_at(now + 5 * second), None, "a lapsed term");
        fence.close();
        assert_eq!(fence.term_at(now + second), None);
    }
}
