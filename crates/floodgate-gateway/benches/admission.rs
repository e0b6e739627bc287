//! The admission decision on its own: classify a request among 20 routes, check its per-client
//! and global rate limits, take and give back a slot in its pool's adaptive limit.
//!
//! `cargo bench -p floodgate-gateway --bench admission` (target: median under 1 µs).

use std::hint::black_box;

use axum::http::{HeaderMap, HeaderValue, Method};
use criterion::{Criterion, criterion_group, criterion_main};
use floodgate_config::Config;
use floodgate_front_door::{Decision, FrontDoor};
use floodgate_http::ClientAddr;

fn front_door() -> FrontDoor {
    let mut toml = String::from(
        "[origin]\nurl = \"http://127.0.0.1:9\"\n\
         [[pools]]\nname = \"hot\"\nupstreams = [\"http://127.0.0.1:9\"]\nmax_concurrency = 1000\n",
    );
    for index in 0..19 {
        toml.push_str(&format!(
            "[[routes]]\npath = \"/shop/category-{index}/**\"\nclass = \"browse\"\n"
        ));
    }
    toml.push_str(
        "[[routes]]\nmethods = [\"GET\"]\npath = \"/shop/rods/muskie/*\"\npool = \"hot\"\n\
         class = \"browse\"\n\
         rate_limit = { per_client_per_s = 1000000, burst = 1000, key = \"header:x-customer\", \
         global_per_s = 100000000 }\n",
    );
    let config = Config::from_toml(&toml).expect("valid config");
    FrontDoor::new(&config.front_door)
}

fn admission(criterion: &mut Criterion) {
    let door = front_door();
    let client = ClientAddr::new("192.0.2.7".parse().expect("address"));
    let customers: Vec<HeaderMap> = (0..1_000)
        .map(|customer| {
            let mut headers = HeaderMap::new();
            let id = HeaderValue::from_str(&format!("c-{customer}")).expect("header");
            headers.insert("x-customer", id);
            headers
        })
        .collect();
    let mut turn = 0;
    criterion.bench_function("classify + rate limit + adaptive limit", |bench| {
        bench.iter(|| {
            turn = (turn + 1) % customers.len();
            let decision = door.decide(
                &Method::GET,
                black_box("/shop/rods/muskie/casting-rod"),
                &customers[turn],
                &client,
            );
            match decision {
                Decision::Admitted(_, permit) => permit.finish(false),
                _ => panic!("the bench expects every request admitted"),
            }
        });
    });
}

criterion_group!(benches, admission);
criterion_main!(benches);
