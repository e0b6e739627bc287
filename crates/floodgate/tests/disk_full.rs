//! A disk that fills up under a running drop, against the real binary whose store lies on a
//! small tmpfs: while commits fail, shoppers get `503 overloaded` with `Retry-After` (never a
//! `500`) and `/readyz` says `503`; once space returns both recover, and every order that got
//! a `202` is there after a restart.
//!
//! Mounting a tmpfs needs root, as CI runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use floodgate_testkit::{GatewayProcess, HttpClient, Method, StatusCode};
use serde_json::json;
use tokio::time::Instant;

/// Small enough to fill in a moment, large enough for the store's files and a few batches.
const TMPFS_BYTES: u64 = 48 * 1024 * 1024;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_floodgate"))
}

/// A tmpfs mounted for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf) -> Self {
        std::fs::create_dir_all(&at).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_BYTES}")])
            .arg("tmpfs")
            .arg(&at)
            .status()
            .expect("mount runs");
        assert!(
            mounted.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Self(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the disk refuses more.
fn fill(path: &Path) {
    let mut filler = std::fs::File::create(path).unwrap();
    let block = vec![0_u8; 1024 * 1024];
    while filler.write_all(&block).is_ok() {}
    let _ = filler.flush();
}

struct Shop {
    client: HttpClient,
    public_url: String,
}

impl Shop {
    /// One order; its status, its order id if accepted, whether it said when to retry.
    async fn order(&self, serial: usize) -> (StatusCode, Option<String>, bool) {
        let key = format!("order-{serial}");
        let answer = self
            .client
            .send(
                Method::POST,
                &format!("{}/api/drops/disk/orders", self.public_url),
                &[("idempotency-key", &key)],
                Some(&json!({ "customer": format!("c-{serial}"), "sku": "rod", "quantity": 1 })),
            )
            .await
            .unwrap();
        let id = answer.body["order_id"].as_str().map(str::to_owned);
        let retry_after = answer.headers.contains_key("retry-after");
        (answer.status, id, retry_after)
    }

    async fn ready(&self) -> StatusCode {
        let url = format!("{}/readyz", self.public_url);
        self.client.get(&url, &[]).await.unwrap().status
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_503_and_not_ready_then_recovers_and_loses_no_accepted_order() {
    let data = tempfile::tempdir().unwrap();
    let store = Tmpfs::mount(data.path().join("store"));
    let gateway = GatewayProcess::spawn(binary(), data.path(), "").unwrap();
    let client = HttpClient::new(Duration::from_secs(20));
    let drop = json!({
        "name": "Disk drop", "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z",
        "limit_per_customer": 1,
        "skus": [{ "sku": "rod", "name": "Rod", "price_cents": 100, "stock": 10_000_000 }],
    });
    gateway.put_drop(&client, "disk", &drop).await.unwrap();
    let shop = Shop {
        client: client.clone(),
        public_url: gateway.public_url.clone(),
    };
    let mut accepted = Vec::new();
    let mut serial = 0;
    for _ in 0..200 {
        let (status, id, _) = shop.order(serial).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        accepted.extend(id);
        serial += 1;
    }
    assert_eq!(shop.ready().await, StatusCode::OK);

    fill(&store.0.join("filler"));
    // Orders go on until the store's files can grow no further; every answer is a 202 or a 503
    // that says when to retry.
    let started = Instant::now();
    let mut refused = 0;
    while refused < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "commits never failed"
        );
        let (status, id, retry_after) = shop.order(serial).await;
        serial += 1;
        match status {
            StatusCode::ACCEPTED => accepted.extend(id),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(retry_after, "a 503 says when to retry");
                refused += 1;
                assert_eq!(shop.ready().await, StatusCode::SERVICE_UNAVAILABLE);
            }
            other => panic!("order {serial} answered {other} on a full disk"),
        }
    }
    for _ in 0..3 {
        assert_eq!(
            shop.ready().await,
            StatusCode::SERVICE_UNAVAILABLE,
            "still full"
        );
    }

    std::fs::remove_file(store.0.join("filler")).unwrap();
    let started = Instant::now();
    while shop.ready().await != StatusCode::OK {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "ready once space is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..200 {
        let (status, id, _) = shop.order(serial).await;
        assert_eq!(status, StatusCode::ACCEPTED, "orders are taken again");
        accepted.extend(id);
        serial += 1;
    }

    gateway.kill();
    let gateway = GatewayProcess::spawn(binary(), data.path(), "").unwrap();
    for id in &accepted {
        let url = format!("{}/api/orders/{id}", gateway.public_url);
        let order = client.get(&url, &[]).await.unwrap();
        assert_eq!(order.status, StatusCode::OK, "accepted order {id} is kept");
    }
    eprintln!(
        "{} orders accepted, {refused} refused while the disk was full",
        accepted.len()
    );
}
