//! Business checks against the target's public API: stock before, orders' fates after.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::client::Pool;
use crate::record::Checks;
use crate::scenario::Method;
use crate::shopper::Ledger;

/// Order lookups in flight at once after the run: enough to be quick, few enough to be polite.
const LOOKUPS_IN_FLIGHT: usize = 32;

#[derive(Deserialize)]
struct DropAnswer {
    skus: Vec<SkuAnswer>,
}

#[derive(Deserialize)]
struct SkuAnswer {
    sku: String,
    available: u64,
}

#[derive(Deserialize)]
struct OrderAnswer {
    state: String,
}

/// Units available per SKU of `drop`, from `GET /api/drops/{drop}`.
pub async fn stock(pool: &Pool, drop: &str) -> Result<BTreeMap<String, u64>, String> {
    let request = pool
        .target()
        .request(Method::Get, &format!("/api/drops/{drop}"), &[], None);
    let response = pool
        .send(&request)
        .await
        .result
        .map_err(|failure| format!("GET /api/drops/{drop}: {failure:?}"))?;
    if response.status != 200 {
        return Err(format!(
            "GET /api/drops/{drop} answered {}",
            response.status
        ));
    }
    let answer: DropAnswer = serde_json::from_slice(&response.body)
        .map_err(|error| format!("GET /api/drops/{drop}: not a drop: {error}"))?;
    Ok(answer
        .skus
        .into_iter()
        .map(|s| (s.sku, s.available))
        .collect())
}

/// Looks up every accepted order and checks that no SKU holds more units than it had.
pub async fn audit(
    pool: Arc<Pool>,
    drop: String,
    stock_before: Result<BTreeMap<String, u64>, String>,
    ledger: &Ledger,
) -> Checks {
    let accepted = std::mem::take(&mut *ledger.accepted.lock().expect("ledger lock"));
    let mut seen = HashSet::new();
    let orders: Vec<_> = accepted
        .into_iter()
        .filter(|(id, _, _)| seen.insert(id.clone()))
        .collect();
    let permits = Arc::new(Semaphore::new(LOOKUPS_IN_FLIGHT));
    let mut lookups = tokio::task::JoinSet::new();
    for (order_id, sku, quantity) in orders.iter().cloned() {
        let (pool, permits) = (Arc::clone(&pool), Arc::clone(&permits));
        lookups.spawn(async move {
            let _permit = permits.acquire().await.expect("never closed");
            let request =
                pool.target()
                    .request(Method::Get, &format!("/api/orders/{order_id}"), &[], None);
            let state = match pool.send(&request).await.result {
                Ok(response) if response.status == 200 => {
                    serde_json::from_slice::<OrderAnswer>(&response.body)
                        .map_or_else(|_| "unreadable".to_owned(), |a| a.state)
                }
                Ok(response) if response.status == 404 => "unknown".to_owned(),
                _ => "unreachable".to_owned(),
            };
            (sku, quantity, state)
        });
    }
    let mut checks = Checks {
        drop: Some(drop),
        accepted_orders: orders.len() as u64,
        replays: ledger.replays.load(Ordering::Relaxed),
        replay_mismatches: ledger.replay_mismatches.load(Ordering::Relaxed),
        ..Checks::default()
    };
    while let Some(Ok((sku, quantity, state))) = lookups.join_next().await {
        if !matches!(state.as_str(), "rejected" | "released") {
            *checks.units_held.entry(sku).or_default() += u64::from(quantity);
        }
        *checks.final_states.entry(state).or_default() += 1;
    }
    match stock_before {
        Ok(stock) => {
            for (sku, &held) in &checks.units_held {
                let had = stock.get(sku).copied().unwrap_or(0);
                if held > had {
                    checks.failures.push(format!(
                        "oversold {sku}: accepted orders hold {held} units, {had} were available before the run"
                    ));
                }
            }
            checks.stock_before = stock;
        }
        Err(problem) => checks.failures.push(format!(
            "could not read the stock before the run: {problem}"
        )),
    }
    if let Some(&lost) = checks.final_states.get("unknown") {
        checks.failures.push(format!(
            "{lost} orders answered 202 are unknown to the target: accepted orders were lost"
        ));
    }
    if checks.replay_mismatches > 0 {
        checks.failures.push(format!(
            "{} of {} replayed orders got another answer than the first: idempotency keys are not honoured",
            checks.replay_mismatches, checks.replays
        ));
    }
    checks
}
