//! The dispatcher against the simulated legacy shop in process, on paused time: pacing, faults,
//! refusals and dead letters, measured by the shop.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodgate_core::{Clock, Order, OrderState};
use floodgate_dispatch::{Dispatcher, Downstream, Fence, Reply, ReplyFuture};
use floodgate_store::Delivery;
use floodgate_testkit::legacy::{LegacyConfig, LegacyShop};
use support::{MemoryOutbox, T0, orders, settings};
use tokio::time::Instant;

fn shop(config: LegacyConfig) -> Arc<LegacyShop> {
    Arc::new(LegacyShop::new(config))
}

fn start<D: Downstream>(outbox: &Arc<MemoryOutbox>, downstream: &Arc<D>, rate: u32) -> Dispatcher {
    Dispatcher::start(
        Arc::clone(outbox),
        Arc::clone(downstream),
        settings(rate),
        Clock::manual(T0).0,
        Arc::new(|_: &Order| {}),
        Fence::solo(),
    )
}

/// Every order reached the shop exactly once as new, and is confirmed with the shop's reference.
fn each_confirmed_once(outbox: &MemoryOutbox, shop: &LegacyShop) {
    let received = shop.received();
    let mut taken = shop.order_ids();
    taken.dedup();
    assert_eq!(
        taken,
        shop.order_ids(),
        "an order reached the shop twice as new"
    );
    for order in outbox.all() {
        assert_eq!(order.state, OrderState::Confirmed, "{order:?}");
        let at_shop = received
            .iter()
            .find(|r| r.order_id == order.order_id.as_str())
            .expect("every confirmed order is at the shop");
        assert_eq!(at_shop.idempotency_key, order.order_id.as_str());
        assert_eq!(
            order.downstream_ref.as_deref(),
            Some(at_shop.reference.as_str())
        );
    }
    assert_eq!(received.len(), outbox.all().len());
}

#[tokio::test(start_paused = true)]
async fn a_backlog_of_500_drains_at_10_a_second_and_never_faster() {
    let outbox = MemoryOutbox::new(orders(500));
    let shop = shop(LegacyConfig::default());
    let started = Instant::now();
    let dispatcher = start(&outbox, &shop, 10);
    outbox.settled(500).await;
    let elapsed = started.elapsed();
    dispatcher.stop().await;

    each_confirmed_once(&outbox, &shop);
    let stats = shop.stats();
    assert!(stats.max_starts_in_any_second <= 10, "{stats:?}");
    assert_eq!(stats.duplicates, 0);
    // 50 s at the limit; the pacer's 2 % jitter margin makes it 51.
    let seconds = elapsed.as_secs_f64();
    assert!(
        (47.5..=52.5).contains(&seconds),
        "drained in {seconds:.2} s"
    );
}

#[tokio::test(start_paused = true)]
async fn faults_and_an_outage_lose_nothing_double_nothing_and_keep_the_pace() {
    let outbox = MemoryOutbox::new(orders(300));
    let shop = shop(LegacyConfig {
        error_rate: 0.3,
        retry_after_s: Some(1),
        timeout_rate: 0.05,
        drop_rate: 0.05,
        outage: Some((Duration::from_secs(5), Duration::from_secs(20))),
        ..LegacyConfig::default()
    });
    let dispatcher = start(&outbox, &shop, 10);
    outbox.settled(300).await;
    dispatcher.stop().await;

    each_confirmed_once(&outbox, &shop);
    let stats = shop.stats();
    assert!(stats.max_starts_in_any_second <= 10, "{stats:?}");
    // Timed-out orders were taken before the answer was lost: their retries were repeats.
    assert!(stats.duplicates > 0, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn a_permanent_refusal_rejects_the_order_and_returns_its_units() {
    let mut batch = orders(20);
    for order in batch.iter_mut().step_by(4) {
        order.sku = "discontinued".into();
    }
    let outbox = MemoryOutbox::new(batch);
    let shop = shop(LegacyConfig {
        reject_sku: Some("discontinued".into()),
        ..LegacyConfig::default()
    });
    let returned = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&returned);
    let dispatcher = Dispatcher::start(
        Arc::clone(&outbox),
        Arc::clone(&shop),
        settings(10),
        Clock::manual(T0).0,
        Arc::new(move |order: &Order| seen.lock().unwrap().push(order.order_id.clone())),
        Fence::solo(),
    );
    outbox.settled(20).await;
    dispatcher.stop().await;

    let rejected: Vec<_> = outbox
        .all()
        .into_iter()
        .filter(|order| order.state == OrderState::Rejected)
        .collect();
    assert_eq!(rejected.len(), 5);
    assert_eq!(outbox.in_state(OrderState::Confirmed), 15);
    let mut returned = returned.lock().unwrap().clone();
    returned.sort();
    let rejected_ids: Vec<_> = rejected
        .iter()
        .map(|order| order.order_id.clone())
        .collect();
    assert_eq!(returned, rejected_ids);
    assert!(rejected[0].last_error.as_deref().unwrap().contains("422"));
    // A refusal is final: each was sent once.
    assert!(rejected.iter().all(|order| order.attempts == 1));
}

/// A downstream that answers 503 until healed, then hands over to the shop.
struct Broken {
    healed: AtomicUsize,
    shop: Arc<LegacyShop>,
    sent_while_broken: AtomicUsize,
}

impl Downstream for Broken {
    fn deliver<'a>(&'a self, order: &'a Order) -> ReplyFuture<'a> {
        if self.healed.load(Ordering::SeqCst) == 1 {
            return self.shop.deliver(order);
        }
        self.sent_while_broken.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Reply::Answered {
                status: http::StatusCode::INTERNAL_SERVER_ERROR,
                retry_after: None,
                reference: None,
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn an_order_that_keeps_failing_is_dead_lettered_then_delivered_after_a_redrive() {
    let outbox = MemoryOutbox::new(orders(3));
    let broken = Arc::new(Broken {
        healed: AtomicUsize::new(0),
        shop: shop(LegacyConfig::default()),
        sent_while_broken: AtomicUsize::new(0),
    });
    let dispatcher = start(&outbox, &broken, 10);
    outbox.settled(3).await;
    let max_attempts = settings(10).max_attempts.get();
    for order in outbox.all() {
        assert_eq!(order.state, OrderState::Failed);
        assert_eq!(order.attempts, max_attempts);
        assert!(
            order.last_error.as_deref().unwrap().contains("500"),
            "{order:?}"
        );
    }
    assert_eq!(
        broken.sent_while_broken.load(Ordering::SeqCst),
        3 * max_attempts as usize
    );

    broken.healed.store(1, Ordering::SeqCst);
    for order in outbox.all() {
        use floodgate_dispatch::Outbox;
        outbox
            .record(order.order_id, Delivery::Redrive, T0)
            .await
            .unwrap();
    }
    outbox.settled(3).await;
    dispatcher.stop().await;
    each_confirmed_once(&outbox, &broken.shop);
    assert!(outbox.all().iter().all(|order| order.attempts == 1));
}
