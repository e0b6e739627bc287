//! A property test of order intake against a model: random sequences of orders, replays, pauses
//! and restarts. After every step, the intake's answer equals the model's, units held never
//! exceed the stock, each key has one answer, and no customer holds more than the limit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use floodgate_core::ledger::Refusal;
use floodgate_core::{DropId, DropSpec, IdempotencyKey, OrderRequest, SkuSpec, Timestamp};
use floodgate_gateway::{ApiError, Intake, IntakeLimits, Placed};
use floodgate_store::{OrderFilter, SqliteOptions, SqliteStore, Store};
use proptest::prelude::*;

const NOW: Timestamp = Timestamp::from_unix_millis(1_000_000);
const SKUS: [&str; 2] = ["rod", "reel"];
const STOCK: u64 = 6;
const LIMIT: u32 = 3;

#[derive(Debug, Clone)]
enum Step {
    Order {
        key: u8,
        customer: u8,
        sku: usize,
        quantity: u32,
    },
    Pause,
    Resume,
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u8..12, 0u8..4, 0usize..2, 1u32..4)
            .prop_map(|(key, customer, sku, quantity)| Step::Order { key, customer, sku, quantity }),
        1 => Just(Step::Pause),
        1 => Just(Step::Resume),
        1 => Just(Step::Restart),
    ]
}

#[derive(Default)]
struct Model {
    held_per_sku: HashMap<usize, u64>,
    held_per_customer: HashMap<u8, u32>,
    answered: HashMap<u8, (OrderRequest, String)>,
    paused: bool,
}

impl Model {
    /// What the intake must answer: `Ok(None)` for a new order, `Ok(Some(id))` for a replay.
    fn expect(
        &self,
        key: u8,
        customer: u8,
        sku: usize,
        request: &OrderRequest,
    ) -> Result<Option<String>, &'static str> {
        if let Some((first, order_id)) = self.answered.get(&key) {
            return if first == request {
                Ok(Some(order_id.clone()))
            } else {
                Err("idempotency_key_reused")
            };
        }
        let available = STOCK - self.held_per_sku.get(&sku).copied().unwrap_or(0);
        let held = self.held_per_customer.get(&customer).copied().unwrap_or(0);
        if self.paused {
            Err("not_live")
        } else if available == 0 {
            Err("sold_out")
        } else if available < u64::from(request.quantity) {
            Err("insufficient_stock")
        } else if held + request.quantity > LIMIT {
            Err("limit_reached")
        } else {
            Ok(None)
        }
    }
}

fn spec(paused: bool) -> DropSpec {
    let skus = SKUS
        .iter()
        .map(|sku| SkuSpec {
            sku: (*sku).into(),
            name: (*sku).into(),
            price_cents: 1,
            stock: STOCK,
        })
        .collect();
    DropSpec {
        paused,
        ..DropSpec::new(
            "model".into(),
            NOW.add_millis(-1),
            NOW.add_millis(3_600_000),
            LIMIT,
            skus,
        )
    }
}

fn code(error: &ApiError) -> &'static str {
    match error {
        ApiError::IdempotencyKeyReused => "idempotency_key_reused",
        ApiError::Refused(Refusal::NotLive(_)) => "not_live",
        ApiError::Refused(Refusal::SoldOut) => "sold_out",
        ApiError::Refused(Refusal::InsufficientStock { .. }) => "insufficient_stock",
        ApiError::Refused(Refusal::LimitReached { .. }) => "limit_reached",
        _ => "unexpected",
    }
}

async fn open(dir: &std::path::Path) -> (Arc<dyn Store>, Intake) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir, SqliteOptions::default()).unwrap());
    let limits = IntakeLimits {
        max_quantity_per_order: 10,
        idempotency_retention: Duration::from_secs(86_400),
        lease_ttl: Duration::from_secs(15),
    };
    let intake = Intake::restore(Arc::clone(&store), limits, NOW)
        .await
        .unwrap();
    (store, intake)
}

async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let drop_id = DropId::parse("model").unwrap();
    let (mut store, mut intake) = open(dir.path()).await;
    intake
        .put_drop(drop_id.clone(), spec(false), NOW)
        .await
        .unwrap();
    let mut model = Model::default();
    for step in steps {
        match step {
            Step::Order {
                key,
                customer,
                sku,
                quantity,
            } => {
                let request = OrderRequest {
                    customer: format!("c{customer}"),
                    sku: SKUS[sku].into(),
                    quantity,
                };
                let expected = model.expect(key, customer, sku, &request);
                let key_text = IdempotencyKey::parse(&format!("key-{key}")).unwrap();
                let answer = intake
                    .place_order(&drop_id, key_text, request.clone(), NOW)
                    .await;
                match (expected, answer) {
                    (Ok(None), Ok(Placed::Accepted(order_id))) => {
                        *model.held_per_sku.entry(sku).or_default() += u64::from(quantity);
                        *model.held_per_customer.entry(customer).or_default() += quantity;
                        model.answered.insert(key, (request, order_id.to_string()));
                    }
                    (Ok(Some(first)), Ok(Placed::Replayed(order_id))) => {
                        prop_assert_eq!(first, order_id.to_string())
                    }
                    (Err(expected), Err(error)) => prop_assert_eq!(expected, code(&error)),
                    (expected, answer) => {
                        prop_assert!(false, "model {:?}, intake {:?}", expected, answer)
                    }
                }
            }
            Step::Pause | Step::Resume => {
                let paused = matches!(step, Step::Pause);
                intake.set_paused(&drop_id, paused, NOW).await.unwrap();
                model.paused = paused;
            }
            Step::Restart => {
                store.close().await.unwrap();
                drop(intake);
                (store, intake) = open(dir.path()).await;
            }
        }
        // Invariants, read back from the store itself.
        let orders = store
            .orders(OrderFilter {
                limit: 1_000,
                ..OrderFilter::default()
            })
            .await
            .unwrap();
        for (index, sku) in SKUS.iter().enumerate() {
            let held: u64 = orders
                .iter()
                .filter(|order| order.sku == *sku)
                .map(|order| u64::from(order.quantity))
                .sum();
            prop_assert!(held <= STOCK, "{} units of {} held", held, sku);
            prop_assert_eq!(held, model.held_per_sku.get(&index).copied().unwrap_or(0));
            prop_assert_eq!(
                intake.with_drop(&drop_id, |drop| drop.held(sku)).flatten(),
                Some(held)
            );
        }
        let mut per_customer: HashMap<&str, u32> = HashMap::new();
        let mut keys = std::collections::HashSet::new();
        for order in &orders {
            *per_customer.entry(order.customer.as_str()).or_default() += order.quantity;
            prop_assert!(
                keys.insert(order.idempotency_key.clone()),
                "two orders for one key"
            );
        }
        prop_assert!(per_customer.values().all(|held| *held <= LIMIT));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn intake_matches_the_model(steps in proptest::collection::vec(step(), 1..40)) {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run(steps))?;
    }
}
