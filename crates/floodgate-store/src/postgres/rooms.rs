//! PostgreSQL as the nodes' [`SharedRooms`]. Joins, polls and passes are single statements on
//! the read connections; an advance is one transaction on the coordinator's connection, holding
//! the room's row lock from counting the passes in force to issuing new ones.

use floodgate_core::{DropId, Timestamp};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::PostgresStore;
use super::schema::{backend, bigint, seconds, unsigned};
use crate::{AdmissionRules, SharedPlace, SharedRoomView, SharedRooms, StoreError, StoreFuture};

/// Waiting places read per step of an advance beyond the free passes (silent ones are skipped
/// without taking a pass).
const ADVANCE_WINDOW: i64 = 256;

/// A place's columns, as [`place_from_row`] reads them.
const PLACE_COLUMNS: &str = "state, position, (extract(epoch FROM expires_at) * 1000)::int8, \
     expires_at > now()";

/// A digest as an order-preserving `BIGINT` (its top bit flipped), so the database sorts
/// identities and draw keys as the unsigned numbers they are.
fn ordered(value: u64) -> i64 {
    i64::from_be_bytes((value ^ (1 << 63)).to_be_bytes())
}

fn unordered(value: i64) -> u64 {
    u64::from_be_bytes(value.to_be_bytes()) ^ (1 << 63)
}

fn place_from_row(row: &Row) -> SharedPlace {
    let state: &str = row.get(0);
    let position: Option<i64> = row.get(1);
    let in_force: Option<bool> = row.get(3);
    match (state, position) {
        ("prequeue", _) => SharedPlace::Prequeue,
        ("waiting", Some(position)) => SharedPlace::Waiting {
            position: unsigned(position),
        },
        ("admitted" | "held", Some(pass)) if in_force == Some(true) => SharedPlace::Admitted {
            pass: unsigned(pass),
            expires_at: Timestamp::from_unix_millis(row.get::<_, Option<i64>>(2).unwrap_or(0)),
        },
        _ => SharedPlace::Lapsed,
    }
}

/// The sequence of room `room_no`'s positions (a number, so the name needs no quoting).
fn sequence(room_no: i64) -> String {
    format!("room_positions_{room_no}")
}

impl SharedRooms for PostgresStore {
    fn open_room(&self, drop_id: DropId, seed: [u8; 32]) -> StoreFuture<'_, [u8; 32]> {
        Box::pin(async move {
            let client = self.reader().await?;
            let open = "WITH created AS (
                            INSERT INTO rooms (drop_id, seed) VALUES ($1, $2)
                            ON CONFLICT (drop_id) DO NOTHING RETURNING room_no, seed
                        )
                        SELECT room_no, seed FROM created
                        UNION ALL SELECT room_no, seed FROM rooms WHERE drop_id = $1";
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
                [&drop_id.as_str(), &seed.as_slice()];
            let mut row = client.query_opt(open, &params).await.map_err(backend)?;
            if row.is_none() {
                // Another node created the room while this statement ran: its snapshot missed
                // the row, a second look finds it.
                row = client.query_opt(open, &params).await.map_err(backend)?;
            }
            let row = row.ok_or_else(|| StoreError::Backend("cannot open the room".into()))?;
            let room_no: i64 = row.get(0);
            let created = client
                .batch_execute(&format!(
                    "CREATE SEQUENCE IF NOT EXISTS {}",
                    sequence(room_no)
                ))
                .await;
            // Two nodes creating it at once: the loser's error says it exists (once the winner
            // committed), which is all that was asked.
            if let Err(error) = created
                && error.code() != Some(&SqlState::UNIQUE_VIOLATION)
                && error.code() != Some(&SqlState::DUPLICATE_TABLE)
            {
                return Err(backend(error));
            }
            let stored: Vec<u8> = row.get(1);
            stored
                .try_into()
                .map_err(|_| StoreError::Backend("stored room seed is malformed".into()))
        })
    }

    fn join_room(
        &self,
        drop_id: DropId,
        identity: u64,
        draw_key: u64,
    ) -> StoreFuture<'_, SharedPlace> {
        Box::pin(async move {
            let client = self.reader().await?;
            let held = format!(
                "UPDATE room_places SET seen_at = now()
                 WHERE drop_id = $1 AND identity = $2
                   AND (state IN ('prequeue', 'waiting')
                        OR (state IN ('admitted', 'held') AND expires_at > now()))
                 RETURNING {PLACE_COLUMNS}"
            );
            // A new place, or a fresh one for a lapsed place; the room's row is read under a
            // share lock so no place joins the pre-queue after its draw (and names the room's
            // sequence, named as `sequence` names it).
            let fresh = format!(
                "WITH room AS (SELECT drawn, room_no FROM rooms WHERE drop_id = $1 FOR SHARE)
                 INSERT INTO room_places AS place (drop_id, identity, draw_key, state, position,
                                                   seen_at)
                 SELECT $1, $2, $3, CASE WHEN drawn THEN 'waiting' ELSE 'prequeue' END,
                        CASE WHEN drawn
                             THEN nextval(('room_positions_' || room_no)::regclass) END,
                        now()
                 FROM room
                 ON CONFLICT (drop_id, identity) DO UPDATE
                 SET state = excluded.state, position = excluded.position, seen_at = now(),
                     admitted_at = NULL, expires_at = NULL
                 WHERE place.state IN ('spent', 'expired', 'skipped')
                    OR (place.state IN ('admitted', 'held') AND place.expires_at <= now())
                 RETURNING {PLACE_COLUMNS}"
            );
            let (drop_id, identity) = (drop_id.as_str(), ordered(identity));
            // Two rounds at most: a place another request created between the two statements
            // is found by the second look.
            for _ in 0..2 {
                let row = client
                    .query_opt(&held, &[&drop_id, &identity])
                    .await
                    .map_err(backend)?;
                if let Some(row) = row {
                    return Ok(place_from_row(&row));
                }
                let row = client
                    .query_opt(&fresh, &[&drop_id, &identity, &ordered(draw_key)])
                    .await
                    .map_err(backend)?;
                if let Some(row) = row {
                    return Ok(place_from_row(&row));
                }
            }
            Err(StoreError::Backend(
                "a waiting-room place changed under two joins in a row".into(),
            ))
        })
    }

    fn find_place(&self, drop_id: DropId, identity: u64) -> StoreFuture<'_, SharedPlace> {
        Box::pin(async move {
            let row = self
                .reader()
                .await?
                .query_opt(
                    &format!(
                        "SELECT {PLACE_COLUMNS} FROM room_places
                         WHERE drop_id = $1 AND identity = $2"
                    ),
                    &[&drop_id.as_str(), &ordered(identity)],
                )
                .await
                .map_err(backend)?;
            Ok(row.as_ref().map_or(SharedPlace::Lapsed, place_from_row))
        })
    }

    fn mark_seen(&self, drop_id: DropId, identities: Vec<u64>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let identities: Vec<i64> = identities.into_iter().map(ordered).collect();
            self.reader()
                .await?
                .execute(
                    // The room's row first, as an advance takes it: an advance and this update
                    // of many places never hold places the other waits for.
                    "WITH room AS (SELECT 1 FROM rooms WHERE drop_id = $1 FOR SHARE)
                     UPDATE room_places SET seen_at = now()
                     WHERE drop_id = $1 AND identity = ANY($2) AND state = 'waiting'
                       AND EXISTS (SELECT 1 FROM room)",
                    &[&drop_id.as_str(), &identities],
                )
                .await
                .map(drop)
                .map_err(backend)
        })
    }

    fn advance_room(
        &self,
        drop_id: DropId,
        rules: AdmissionRules,
    ) -> StoreFuture<'_, SharedRoomView> {
        Box::pin(async move {
            let mut coordinator = self.coordinator().await?;
            let transaction = coordinator.transaction().await.map_err(backend)?;
            let drop_id = drop_id.as_str();
            let room = transaction
                .query_opt(
                    "SELECT room_no, drawn, entrants, head, admitted,
                            (extract(epoch FROM now()) * 1000)::int8
                     FROM rooms WHERE drop_id = $1 FOR UPDATE",
                    &[&drop_id],
                )
                .await
                .map_err(backend)?
                .ok_or_else(|| StoreError::Backend(format!("no waiting room for {drop_id}")))?;
            let room_no: i64 = room.get(0);
            let mut view = SharedRoomView {
                drawn: room.get(1),
                entrants: unsigned(room.get(2)),
                head: unsigned(room.get(3)),
                admitted: unsigned(room.get(4)),
                ..SharedRoomView::default()
            };
            let now = Timestamp::from_unix_millis(room.get(5));
            if !view.drawn && now >= rules.starts_at {
                view.entrants = draw(&transaction, drop_id, room_no).await?;
                view.drawn = true;
            }
            transaction
                .execute(
                    "UPDATE room_places SET state = 'expired'
                     WHERE drop_id = $1 AND state IN ('admitted', 'held') AND expires_at <= now()",
                    &[&drop_id],
                )
                .await
                .map_err(backend)?;
            let in_force: i64 = transaction
                .query_one(
                    "SELECT COUNT(*) FROM room_places
                     WHERE drop_id = $1 AND state IN ('admitted', 'held')",
                    &[&drop_id],
                )
                .await
                .map_err(backend)?
                .get(0);
            let recent = transaction
                .query_one(
                    "SELECT COUNT(*) FILTER (WHERE state <> 'skipped'),
                            COUNT(*) FILTER (WHERE state = 'skipped'),
                            COALESCE((extract(epoch FROM now() - MIN(admitted_at)
                                      FILTER (WHERE state <> 'skipped')) * 1000)::int8, 0)
                     FROM room_places
                     WHERE drop_id = $1 AND admitted_at > now() - interval '1 minute'",
                    &[&drop_id],
                )
                .await
                .map_err(backend)?;
            view.in_force = u32::try_from(in_force).unwrap_or(u32::MAX);
            view.admitted_last_minute = unsigned(recent.get(0));
            view.skipped_last_minute = unsigned(recent.get(1));
            view.admission_span_ms = recent.get(2);
            let ceiling = rules.admit_per_minute.map_or(u64::MAX, u64::from);
            let mut free = if view.drawn && !rules.sold_out {
                u64::from(rules.cap.saturating_sub(view.in_force))
                    .min(ceiling.saturating_sub(view.admitted_last_minute))
            } else {
                0
            };
            while free > 0 {
                let turn = take_turns(&transaction, drop_id, &rules, free).await?;
                view.head = view.head.max(turn.head);
                free -= turn.admitted;
                view.in_force += u32::try_from(turn.admitted).unwrap_or(u32::MAX);
                view.admitted += turn.admitted;
                view.admitted_last_minute += turn.admitted;
                view.skipped_last_minute += turn.skipped;
                if turn.exhausted {
                    break;
                }
            }
            transaction
                .execute(
                    "UPDATE rooms SET head = $2, admitted = $3 WHERE drop_id = $1",
                    &[&drop_id, &bigint(view.head), &bigint(view.admitted)],
                )
                .await
                .map_err(backend)?;
            let counts = transaction
                .query_one(
                    &format!(
                        "SELECT (SELECT COUNT(*) FROM room_places
                                 WHERE drop_id = $1 AND state = 'waiting'),
                                (SELECT COUNT(*) FROM room_places
                                 WHERE drop_id = $1 AND state = 'prequeue'),
                                (SELECT CASE WHEN is_called THEN last_value ELSE 0 END
                                 FROM {})",
                        sequence(room_no)
                    ),
                    &[&drop_id],
                )
                .await
                .map_err(backend)?;
            view.waiting = unsigned(counts.get(0));
            if !view.drawn {
                view.entrants = unsigned(counts.get(1));
            }
            view.queued = unsigned(counts.get(2));
            transaction.commit().await.map_err(backend)?;
            Ok(view)
        })
    }

    fn hold_pass(&self, drop_id: DropId, identity: u64, pass: u64) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let held = self
                .reader()
                .await?
                .execute(
                    "UPDATE room_places SET state = 'held'
                     WHERE drop_id = $1 AND position = $2 AND identity = $3
                       AND state = 'admitted' AND expires_at > now()",
                    &[&drop_id.as_str(), &bigint(pass), &ordered(identity)],
                )
                .await
                .map_err(backend)?;
            Ok(held == 1)
        })
    }

    fn settle_pass(&self, drop_id: DropId, pass: u64, spent: bool) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.reader()
                .await?
                .execute(
                    "UPDATE room_places
                     SET state = CASE WHEN $3 THEN 'spent' ELSE 'admitted' END
                     WHERE drop_id = $1 AND position = $2 AND state = 'held'",
                    &[&drop_id.as_str(), &bigint(pass), &spent],
                )
                .await
                .map(drop)
                .map_err(backend)
        })
    }

    fn revoke_pass(&self, drop_id: DropId, pass: u64) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let revoked = self
                .reader()
                .await?
                .execute(
                    "UPDATE room_places SET state = 'spent'
                     WHERE drop_id = $1 AND position = $2
                       AND state IN ('admitted', 'held') AND expires_at > now()",
                    &[&drop_id.as_str(), &bigint(pass)],
                )
                .await
                .map_err(backend)?;
            Ok(revoked == 1)
        })
    }
}

/// Places the pre-queue in the order of its draw keys (then identities), taking positions from
/// the room's sequence; how many were drawn. The caller holds the room's row lock, and joins
/// read it under a share lock, so nobody enters the pre-queue meanwhile.
async fn draw(
    transaction: &tokio_postgres::Transaction<'_>,
    drop_id: &str,
    room_no: i64,
) -> Result<u64, StoreError> {
    let rows = transaction
        .query(
            "SELECT identity, draw_key FROM room_places
             WHERE drop_id = $1 AND state = 'prequeue'",
            &[&drop_id],
        )
        .await
        .map_err(backend)?;
    let mut entrants: Vec<(u64, u64)> = rows
        .iter()
        .map(|row| (unordered(row.get(1)), unordered(row.get(0))))
        .collect();
    entrants.sort_unstable();
    let count = i64::try_from(entrants.len()).unwrap_or(i64::MAX);
    let mut positions: Vec<i64> = transaction
        .query(
            &format!(
                "SELECT nextval('{}') FROM generate_series(1, $1::int8)",
                sequence(room_no)
            ),
            &[&count],
        )
        .await
        .map_err(backend)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    positions.sort_unstable();
    let identities: Vec<i64> = entrants.iter().map(|(_, id)| ordered(*id)).collect();
    transaction
        .execute(
            "UPDATE room_places AS place
             SET state = 'waiting', position = drawn.position, seen_at = now()
             FROM unnest($2::int8[], $3::int8[]) AS drawn (identity, position)
             WHERE place.drop_id = $1 AND place.identity = drawn.identity",
            &[&drop_id, &identities, &positions],
        )
        .await
        .map_err(backend)?;
    transaction
        .execute(
            "UPDATE rooms SET drawn = true, entrants = $2 WHERE drop_id = $1",
            &[&drop_id, &count],
        )
        .await
        .map_err(backend)?;
    Ok(unsigned(count))
}

/// One step of an advance.
struct Turns {
    admitted: u64,
    skipped: u64,
    /// The last position that had its turn.
    head: u64,
    /// Nobody is left waiting.
    exhausted: bool,
}

/// Gives the next waiters their turns in position order: up to `free` present ones get a pass,
/// the silent ones before them are skipped.
async fn take_turns(
    transaction: &tokio_postgres::Transaction<'_>,
    drop_id: &str,
    rules: &AdmissionRules,
    free: u64,
) -> Result<Turns, StoreError> {
    let window = i64::try_from(free)
        .unwrap_or(i64::MAX)
        .saturating_add(ADVANCE_WINDOW);
    let rows = transaction
        .query(
            "SELECT identity, position, seen_at >= now() - $2 * interval '1 second'
             FROM room_places WHERE drop_id = $1 AND state = 'waiting'
             ORDER BY position LIMIT $3",
            &[&drop_id, &seconds(rules.abandon_after), &window],
        )
        .await
        .map_err(backend)?;
    let mut turns = Turns {
        admitted: 0,
        skipped: 0,
        head: 0,
        exhausted: i64::try_from(rows.len()).unwrap_or(i64::MAX) < window,
    };
    let (mut identities, mut states) = (Vec::new(), Vec::new());
    for row in &rows {
        if turns.admitted == free {
            turns.exhausted = false;
            break;
        }
        let present: bool = row.get(2);
        identities.push(row.get::<_, i64>(0));
        states.push(if present { "admitted" } else { "skipped" });
        if present {
            turns.admitted += 1;
        } else {
            turns.skipped += 1;
        }
        turns.head = unsigned(row.get(1));
    }
    // The time of this statement, not of the transaction's start: advances queue for the
    // room's lock, and one that began earlier may take its turns later.
    transaction
        .execute(
            "UPDATE room_places AS place
             SET state = turn.state, admitted_at = statement_timestamp(),
                 expires_at = CASE WHEN turn.state = 'admitted'
                                   THEN statement_timestamp() + $2 * interval '1 second' END
             FROM unnest($3::int8[], $4::text[]) AS turn (identity, state)
             WHERE place.drop_id = $1 AND place.identity = turn.identity",
            &[&drop_id, &seconds(rules.pass_ttl), &identities, &states],
        )
        .await
        .map_err(backend)?;
    Ok(turns)
}
