//! Drops as the admin API takes them.

use serde_json::{Value, json};

use crate::{HttpClient, JsonResponse, Method};

/// A drop open from 2020 to 2099 selling `stock` units of one SKU, `rod`, one to a customer,
/// behind a waiting room that lets `max_active` shoppers in at once.
pub fn open_with_room(name: &str, stock: u64, max_active: u32) -> Value {
    json!({
        "name": name, "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z",
        "limit_per_customer": 1,
        "skus": [{"sku": "rod", "name": "Rod", "price_cents": 100, "stock": stock}],
        "waiting_room": {"enabled": true, "max_active": max_active, "prequeue_s": 0, "pass_ttl_s": 600},
    })
}

/// Orders one `rod` for `customer` at `orders_url` under `key`, holding the waiting room's
/// `pass`.
pub async fn order_a_rod(
    client: &HttpClient,
    orders_url: &str,
    customer: &str,
    key: &str,
    pass: &str,
) -> JsonResponse {
    let body = json!({ "customer": customer, "sku": "rod", "quantity": 1 });
    client
        .send(
            Method::POST,
            orders_url,
            &[("idempotency-key", key), ("floodgate-pass", pass)],
            Some(&body),
        )
        .await
        .expect("the order is answered")
}

/// `customer` joins the waiting room at `queue_url` (`…/api/drops/{drop}/queue`).
pub async fn join(client: &HttpClient, queue_url: &str, customer: &str) -> JsonResponse {
    let body = json!({ "customer": customer });
    client
        .send(Method::POST, queue_url, &[], Some(&body))
        .await
        .expect("the join is answered")
}
