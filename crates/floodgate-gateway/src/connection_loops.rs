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

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

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
    /// Starts `count` loops, each on its own thread.
    pub fn start(count: NonZeroUsize) -> std::io::Result<Self> {
        let loops = (0..count.get())
            .map(start_loop)
            .collect::<std::io::Result<_>>()?;
        Ok(Self {
            loops,
            next: AtomicUsize::new(0),
        })
    }

    /// Spawns `task` on the next loop in turn (connections live long under keep-alive, so
    /// taking turns spreads them evenly).
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.loops.len();
        self.loops[turn].runtime.spawn(task);
    }
}

fn start_loop(index: usize) -> std::io::Result<ConnectionLoop> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = runtime.handle().clone();
    let thread = std::thread::Builder::new()
        .name(format!("floodgate-loop{index}"))
        .spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
    Ok(ConnectionLoop {
        runtime: handle,
        stop: Some(stop),
        thread: Some(thread),
    })
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
        let loops = ConnectionLoops::start(NonZeroUsize::new(2).unwrap()).unwrap();
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
