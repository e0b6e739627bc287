//! The generator's threads: event loops, each a single-threaded runtime with its own share of
//! the connections, the way wrk gives each of its threads a loop and connections of its own.
//!
//! One multi-threaded runtime would let busy threads steal work, but on a load generator that
//! shares its machine with the target the stealing costs more than it balances: with two workers
//! against nginx on 2 cores it spent 10.5 µs of CPU per answer, where one thread spent 8.2 µs.
//! A loop's connections are registered with its own runtime, so a shopper only ever uses the
//! pool of the loop it runs on.

use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use floodgate_http::ConnectionLoops;

use crate::client::{Pool, Target};

/// The running loops, each with its pool; dropping them stops every loop and cancels what
/// still runs there.
pub struct EventLoops {
    loops: ConnectionLoops,
    pools: Vec<Arc<Pool>>,
}

impl EventLoops {
    /// Starts `count` loops (0: one per CPU; at most one per connection) sharing
    /// `max_connections` connections to `target`.
    pub fn start(
        count: usize,
        target: &Target,
        max_connections: usize,
        timeout: Duration,
    ) -> io::Result<Self> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            count => count,
        }
        .min(max_connections)
        .max(1);
        let loops = ConnectionLoops::start(
            NonZeroUsize::new(count).unwrap_or(NonZeroUsize::MIN),
            "loadtest-loop-",
            || {},
        )?;
        let pools = (0..count)
            .map(|number| {
                let connections = share(max_connections, count, number);
                Arc::new(Pool::new(target.clone(), connections, timeout))
            })
            .collect();
        Ok(Self { loops, pools })
    }

    /// Spawns the task `make` builds with the loop's pool on loop `index % loops`, so
    /// consecutive arrivals take turns.
    pub fn spawn<F>(&self, index: u64, make: impl FnOnce(Arc<Pool>) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let chosen = (index % self.pools.len() as u64) as usize;
        self.loops
            .spawn_on(chosen, make(Arc::clone(&self.pools[chosen])));
    }

    /// Spawns the task `make` builds on every loop.
    pub fn spawn_on_each<F>(&self, make: impl Fn() -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        for chosen in 0..self.pools.len() {
            self.loops.spawn_on(chosen, make());
        }
    }
}

/// Loop `number`'s part of `total` connections over `loops` loops: as even as they go, the
/// first loops taking the remainder.
fn share(total: usize, loops: usize, number: usize) -> usize {
    total / loops + usize::from(number < total % loops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_split_across_loops_and_arrivals_take_turns() {
        assert_eq!(
            (0..3).map(|n| share(8, 3, n)).collect::<Vec<_>>(),
            [3, 3, 2]
        );
        let target = Target::resolve("http://127.0.0.1:9").await.unwrap();
        let loops = EventLoops::start(3, &target, 8, Duration::from_secs(1)).unwrap();
        let (sender, mut names) = tokio::sync::mpsc::unbounded_channel();
        for index in 0..6 {
            let sender = sender.clone();
            loops.spawn(index, move |_| async move {
                let name = std::thread::current().name().map(str::to_owned);
                sender.send((index, name)).unwrap();
            });
        }
        drop(sender);
        let mut seen = Vec::new();
        while let Some(pair) = names.recv().await {
            seen.push(pair);
        }
        seen.sort();
        let loop_of: Vec<String> = seen.into_iter().map(|(_, name)| name.unwrap()).collect();
        assert_eq!(
            loop_of,
            [0, 1, 2, 0, 1, 2].map(|n| format!("loadtest-loop-{n}"))
        );
    }

    #[tokio::test]
    async fn there_are_never_more_loops_than_connections() {
        let target = Target::resolve("http://127.0.0.1:9").await.unwrap();
        let timeout = Duration::from_secs(1);
        assert_eq!(
            EventLoops::start(4, &target, 2, timeout)
                .unwrap()
                .loops
                .count(),
            2
        );
        assert_eq!(
            EventLoops::start(0, &target, 1, timeout)
                .unwrap()
                .loops
                .count(),
            1
        );
    }
}
