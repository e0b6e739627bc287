//! The waiting rooms of a node sharing its store with others: every place lives in the store,
//! so a ticket polled or a pass spent on any node finds it, and passes are issued only under
//! the room's lock in the store, so `max_active` holds across the nodes.
//!
//! A node keeps, per room it serves, the room's view as of its last advance (a quarter of a
//! second old at most): a shopper still behind the head of the line is answered from it without
//! a lookup, and their poll is recorded in a batch written once per advance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodgate_core::{
    DropId, DropState, Identity, RecentTurns, RoomTotals, Standing, Timestamp, commitment,
    draw_key, throttled_cap,
};
use floodgate_store::{AdmissionRules, Cluster, SharedPlace, SharedRoomView, Store};
use tokio::time::Instant;

use super::{Fairness, Occupancy, RoomDrop};
use crate::error::ApiError;
use crate::{Intake, lock};

/// One room as this node serves it.
struct SharedRoom {
    drop: RoomDrop,
    seed: [u8; 32],
    view: Mutex<SharedRoomView>,
    /// Identities that polled since the last advance.
    seen: Mutex<Vec<u64>>,
    /// Joins this node answered "sold out".
    turned_away: AtomicU64,
    /// One advance at a time, and when the last one began: a join skips its own advance when
    /// one began after its place was written (that advance already covers it).
    advancing: tokio::sync::Mutex<Option<Instant>>,
}

/// The rooms this node serves.
pub(super) struct SharedRooms {
    store: Arc<dyn Store>,
    abandon_after: Duration,
    rooms: Mutex<HashMap<DropId, Arc<SharedRoom>>>,
}

impl SharedRooms {
    /// Rooms kept in `store`, if it is shared with other nodes.
    pub(super) fn of(store: &Arc<dyn Store>, abandon_after_ms: i64) -> Option<Self> {
        store.cluster()?;
        Some(Self {
            store: Arc::clone(store),
            abandon_after: Duration::from_millis(u64::try_from(abandon_after_ms).unwrap_or(0)),
            rooms: Mutex::default(),
        })
    }

    fn cluster(&self) -> &dyn Cluster {
        self.store
            .cluster()
            .expect("shared rooms are built only on a shared store")
    }

    pub(super) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// `drop`'s room, opened (and advanced once) if this node has not served it yet.
    async fn room(
        &self,
        drop: &RoomDrop,
        sold_out: bool,
        share: f64,
    ) -> Result<Arc<SharedRoom>, ApiError> {
        if let Some(room) = lock(&self.rooms).get(&drop.id) {
            return Ok(Arc::clone(room));
        }
        let mut seed = [0; 32];
        seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        seed[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        let seed = self.cluster().open_room(drop.id.clone(), seed).await?;
        let room = Arc::new(SharedRoom {
            drop: drop.clone(),
            seed,
            view: Mutex::default(),
            seen: Mutex::default(),
            turned_away: AtomicU64::new(0),
            advancing: tokio::sync::Mutex::new(None),
        });
        self.advance(&room, share, sold_out).await?;
        let mut rooms = lock(&self.rooms);
        Ok(Arc::clone(rooms.entry(drop.id.clone()).or_insert(room)))
    }

    /// Advances `room` in the store and keeps the view it returns.
    async fn advance(&self, room: &SharedRoom, share: f64, sold_out: bool) -> Result<(), ApiError> {
        let seen = std::mem::take(&mut *lock(&room.seen));
        let cluster = self.cluster();
        if !seen.is_empty() {
            cluster.mark_seen(room.drop.id.clone(), seen).await?;
        }
        let spec = &room.drop.room;
        let rules = AdmissionRules {
            cap: throttled_cap(spec.max_active, share),
            pass_ttl: Duration::from_secs(u64::from(spec.pass_ttl_s)),
            abandon_after: self.abandon_after,
            admit_per_minute: spec.admit_per_minute,
            starts_at: room.drop.starts_at,
            sold_out,
        };
        let view = cluster.advance_room(room.drop.id.clone(), rules).await?;
        *lock(&room.view) = view;
        Ok(())
    }

    /// Advances `room` unless an advance began after `since`.
    async fn advance_after(
        &self,
        room: &SharedRoom,
        since: Instant,
        share: f64,
    ) -> Result<(), ApiError> {
        let mut last_started = room.advancing.lock().await;
        if last_started.is_some_and(|started| started > since) {
            return Ok(());
        }
        *last_started = Some(Instant::now());
        self.advance(room, share, false).await
    }

    /// Advances every room this node serves (a quarter of a second apart): the draw, expiries,
    /// admissions, and the polls recorded since the last time.
    pub(super) async fn tend(&self, intake: &Intake, share: f64, now: Timestamp) {
        let rooms: Vec<_> = lock(&self.rooms).values().cloned().collect();
        for room in rooms {
            let sold_out = intake
                .with_drop(&room.drop.id, |ledger| {
                    ledger.state_at(now) == DropState::SoldOut
                })
                .unwrap_or(true);
            let mut last_started = room.advancing.lock().await;
            *last_started = Some(Instant::now());
            if let Err(error) = self.advance(&room, share, sold_out).await {
                tracing::warn!(drop = %room.drop.id, %error, "cannot advance the shared waiting room");
            }
        }
    }

    /// `identity` joins `drop`'s room.
    pub(super) async fn join(
        &self,
        drop: &RoomDrop,
        identity: &Identity,
        sold_out: bool,
        share: f64,
    ) -> Result<Standing, ApiError> {
        let room = self.room(drop, sold_out, share).await?;
        if sold_out {
            room.turned_away.fetch_add(1, Ordering::Relaxed);
            return Ok(Standing::SoldOut);
        }
        let key = identity.key();
        let joined_at = Instant::now();
        let cluster = self.cluster();
        let mut place = cluster
            .join_room(drop.id.clone(), key, draw_key(&room.seed, key))
            .await?;
        // With passes free, an advance admits the newcomer at once: no visible wait.
        let cap = throttled_cap(drop.room.max_active, share);
        if matches!(place, SharedPlace::Waiting { .. }) && lock(&room.view).in_force < cap {
            self.advance_after(&room, joined_at, share).await?;
            place = cluster.find_place(drop.id.clone(), key).await?;
        }
        room.standing(place)
    }

    /// Where the holder of a ticket for `position` in `drop`'s room stands (0: the pre-queue).
    pub(super) async fn poll(
        &self,
        drop: &RoomDrop,
        identity: &Identity,
        position: u64,
        sold_out: bool,
        share: f64,
    ) -> Result<Standing, ApiError> {
        let room = self.room(drop, sold_out, share).await?;
        if sold_out {
            return Ok(Standing::SoldOut);
        }
        let key = identity.key();
        lock(&room.seen).push(key);
        let view = *lock(&room.view);
        if position > view.head {
            return Ok(room.waiting(position, &view));
        }
        if position == 0 && !view.drawn {
            return Ok(Standing::Prequeue {
                starts_at: drop.starts_at,
            });
        }
        room.standing(self.cluster().find_place(drop.id.clone(), key).await?)
    }

    /// What anyone may check about the draw of `drop`'s pre-queue.
    pub(super) async fn fairness(
        &self,
        drop: &RoomDrop,
        sold_out: bool,
        share: f64,
    ) -> Result<Fairness, ApiError> {
        let room = self.room(drop, sold_out, share).await?;
        let view = *lock(&room.view);
        Ok(Fairness {
            commitment: commitment(&room.seed),
            seed: view.drawn.then_some(room.seed),
            entrants: usize::try_from(view.entrants).unwrap_or(usize::MAX),
        })
    }

    /// Holds pass `pass` of `identity` for an order.
    pub(super) async fn hold(
        &self,
        drop_id: &DropId,
        identity: &Identity,
        pass: u64,
    ) -> Result<(), ApiError> {
        let held = self
            .cluster()
            .hold_pass(drop_id.clone(), identity.key(), pass)
            .await?;
        if held {
            Ok(())
        } else {
            Err(ApiError::InvalidPass)
        }
    }

    /// Revokes pass `pass`.
    pub(super) async fn revoke(&self, drop_id: &DropId, pass: u64) -> Result<(), ApiError> {
        let revoked = self.cluster().revoke_pass(drop_id.clone(), pass).await?;
        if revoked {
            Ok(())
        } else {
            Err(ApiError::InvalidPass)
        }
    }

    /// `drop_id`'s room as this node last saw it.
    pub(super) fn occupancy(&self, drop_id: &DropId) -> Option<Occupancy> {
        let room = lock(&self.rooms).get(drop_id).cloned()?;
        let view = *lock(&room.view);
        Some(Occupancy {
            waiting: view.waiting,
            in_force: view.in_force,
            admitted_last_minute: usize::try_from(view.admitted_last_minute).unwrap_or(usize::MAX),
            eta_of_last: view
                .waiting
                .checked_sub(1)
                .and_then(|ahead| recent_turns(&view).eta_seconds(ahead)),
            totals: RoomTotals {
                arrivals: view.queued.max(view.entrants),
                turned_away: room.turned_away.load(Ordering::Relaxed),
                queued: view.queued,
                head: view.head,
                admitted: view.admitted,
            },
        })
    }
}

fn recent_turns(view: &SharedRoomView) -> RecentTurns {
    RecentTurns {
        admitted: view.admitted_last_minute,
        skipped: view.skipped_last_minute,
        span_ms: view.admission_span_ms,
    }
}

impl SharedRoom {
    fn standing(&self, place: SharedPlace) -> Result<Standing, ApiError> {
        Ok(match place {
            SharedPlace::Admitted { pass, expires_at } => Standing::Admitted { pass, expires_at },
            SharedPlace::Waiting { position } => self.waiting(position, &lock(&self.view)),
            SharedPlace::Prequeue => Standing::Prequeue {
                starts_at: self.drop.starts_at,
            },
            SharedPlace::Lapsed => return Err(ApiError::PlaceLapsed),
        })
    }

    fn waiting(&self, position: u64, view: &SharedRoomView) -> Standing {
        let ahead = position.saturating_sub(view.head + 1);
        Standing::Waiting {
            position,
            ahead,
            eta_seconds: recent_turns(view).eta_seconds(ahead),
        }
    }
}
