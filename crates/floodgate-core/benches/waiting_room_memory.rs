//! Resident memory of a waiting room holding 1,000,000 waiters (target: at most 64 bytes each).
//!
//! `cargo bench -p floodgate-core --bench waiting_room_memory`
#![allow(clippy::print_stdout)] // a benchmark program reports on stdout

use floodgate_core::{RoomRules, Timestamp, WaitingRoom};

const WAITERS: u64 = 1_000_000;

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .expect("a number");
    kib * 1024
}

fn main() {
    let now = Timestamp::from_unix_millis(1_800_000_000_000);
    let rules = RoomRules::unthrottled(1_000, 600_000, 60_000);
    let before = resident_bytes();
    let mut room = WaitingRoom::new(rules, now, [7; 32], now);
    for identity in 0..(WAITERS + 1_000) {
        // Spread keys as real identity digests are spread.
        room.join(identity.wrapping_mul(0x9e37_79b9_7f4a_7c15), now);
    }
    let after = resident_bytes();
    let per_waiter = (after - before) as f64 / room.waiting() as f64;
    println!(
        "{} waiters: resident memory grew by {:.1} MiB, {per_waiter:.1} bytes per waiter (target <= 64)",
        room.waiting(),
        (after - before) as f64 / (1024.0 * 1024.0)
    );
}
