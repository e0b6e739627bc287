//! Threads that serve connections, one per core, as nginx's workers do: each runs its own
//! single-threaded runtime, and a connection handed to it stays there, its reads, handlers and
//! writes on one thread.
//!
//! Tokio's shared scheduler moves tasks between its workers, and to do so it wakes an idle
//! worker for nearly every batch of ready sockets: an inter-processor interrupt each time, which
//! on a virtual machine is a trip through the hypervisor. Measured on two cores, serving
//! connections here instead cut the CPU time of a `/healthz` request by 7 % and raised proxied
//! throughput by a tenth (see ARCHITECTURE.md). The shared runtime keeps the accept loops and the
//! background tasks.

use std::cell::Cell;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The running loops; dropping them stops every loop and cancels what still runs there.
pub struct ConnectionLoops {
    loops: Vec<ConnectionLoop>,
    next: AtomicUsize,
}

struct ConnectionLoop {
    runtime: Handle,
    /// Dropped to stop the loop.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ConnectionLoops {
    /// Starts `count` loops, each on its own thread named `name` and its number, each running
    /// `on_start` in its runtime first (the application's hook for what must live on every
    /// loop: the store's relay of its answers).
    pub fn start(count: NonZeroUsize, name: &str, on_start: fn()) -> std::io::Result<Self> {
        let loops = (0..count.get())
            .map(|index| start_loop(index, name, on_start))
            .collect::<std::io::Result<_>>()?;
        Ok(Self {
            loops,
            next: AtomicUsize::new(0),
        })
    }

    /// Spawns `task` on the next loop in turn (connections live long under keep-alive, so
    /// taking turns spreads them evenly).
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        self.spawn_on(turn, task);
    }

    /// Spawns `task` on loop `index` (modulo their count), for a caller that keeps state of
    /// its own per loop.
    pub fn spawn_on(&self, index: usize, task: impl Future<Output = ()> + Send + 'static) {
        self.loops[index % self.loops.len()].runtime.spawn(task);
    }

    /// Runs a future from `make` on every loop at once; what each returned (a loop whose task
    /// panicked is left out).
    pub async fn on_each<F>(&self, make: impl Fn() -> F) -> Vec<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let running: Vec<_> = self
            .loops
            .iter()
            .map(|each| each.runtime.spawn(make()))
            .collect();
        futures_util::future::join_all(running)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect()
    }

    /// How many loops there are.
    pub fn count(&self) -> usize {
        self.loops.len()
    }
}

thread_local! {
    static CURRENT_LOOP: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the loop running on this thread; `None` on any other thread.
pub fn current_loop() -> Option<usize> {
    CURRENT_LOOP.with(Cell::get)
}

fn start_loop(index: usize, name: &str, on_start: fn()) -> std::io::Result<ConnectionLoop> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = runtime.handle().clone();
    handle.spawn(keep_a_timer_armed());
    let thread = std::thread::Builder::new()
        .name(format!("{name}{index}"))
        .spawn(move || {
            CURRENT_LOOP.with(|current| current.set(Some(index)));
            runtime.block_on(async {
                on_start();
                let _ = stopped.await;
            });
        })?;
    Ok(ConnectionLoop {
        runtime: handle,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// How far ahead the loop's anchor timer always is: less than any request timer (the header
/// read timeout, a route's timeout), so those never come first.
const ANCHOR_PERIOD: Duration = Duration::from_millis(500);

/// Keeps a timer pending on the loop at all times. Tokio's timer driver wakes its thread (a
/// write to the loop's own eventfd, and one more trip through `epoll_wait`) whenever a new timer
/// falls due before every pending one, which with no timer pending is every new timer: the header
/// read timeout, armed for each request, paid a system call per request that way
/// (strace: one `write` per request on each loop). With this one always nearer, a request's
/// timer wakes nothing; the anchor itself costs one wake-up per period.
async fn keep_a_timer_armed() {
    let mut anchor = tokio::time::interval(ANCHOR_PERIOD);
    loop {
        anchor.tick().await;
    }
}

impl Drop for ConnectionLoops {
    fn drop(&mut self) {
        for each in &mut self.loops {
            each.stop.take();
        }
        for each in &mut self.loops {
            if let Some(thread) = each.thread.take() {
                // A loop that panicked has already said so on stderr.
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_take_turns_between_the_loops_and_run_inside_their_runtimes() {
        let loops =
            ConnectionLoops::start(NonZeroUsize::new(2).unwrap(), "floodgate-loop", || {}).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let done = done.clone();
            loops.spawn(async move {
                let inside_a_runtime = Handle::try_current().is_ok();
                let thread = std::thread::current().name().map(str::to_owned);
                done.send((thread, inside_a_runtime)).unwrap();
            });
        }
        let mut ran: Vec<_> = finished.iter().take(4).collect();
        ran.sort();
        let on = |name: &str| (Some(name.to_owned()), true);
        assert_eq!(
            ran,
            [
                on("floodgate-loop0"),
                on("floodgate-loop0"),
                on("floodgate-loop1"),
                on("floodgate-loop1")
            ]
        );
    }
}
