//! The waiting room in process: joins and polls per second (target: at least 100,000 joins a
//! second, i.e. under 10 µs a join).
//!
//! `cargo bench -p floodgate-core --bench waiting_room`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use floodgate_core::{Identity, RoomRules, Timestamp, WaitingRoom};

const NOW: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);
const RULES: RoomRules = RoomRules::unthrottled(1_000, 600_000, 60_000);

fn empty_room() -> WaitingRoom {
    WaitingRoom::new(RULES, NOW, [7; 32], NOW)
}

fn joins_and_polls(criterion: &mut Criterion) {
    let mut growing = empty_room();
    let mut next = 0u64;
    criterion.bench_function("join (new shopper, queue growing)", |bench| {
        bench.iter(|| {
            next += 1;
            black_box(growing.join(Identity::of(&next.to_string()).key(), NOW));
        });
    });
    let mut room = empty_room();
    let waiting: Vec<u64> = (0..100_000u64)
        .map(|serial| Identity::of(&serial.to_string()).key())
        .collect();
    for identity in &waiting {
        room.join(*identity, NOW);
    }
    let mut turn = 0;
    criterion.bench_function("poll (100,000 waiting)", |bench| {
        bench.iter(|| {
            turn = (turn + 1) % waiting.len();
            black_box(room.poll(waiting[turn], NOW));
        });
    });
}

criterion_group!(benches, joins_and_polls);
criterion_main!(benches);
