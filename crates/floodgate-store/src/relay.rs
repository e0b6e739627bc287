//! Answers from the writer thread handed on by one task per connection loop, so a commit wakes
//! each loop once instead of once per write.
//!
//! Waking a task of a single-threaded runtime from another thread is a system call: a write to
//! that runtime's eventfd, then one more return from its `epoll_wait`. strace counted one
//! `write` per order on the writer thread. A thread that calls [`relay_answers_here`] gets its
//! answers through a channel instead: the writer sends each relay all of a commit's answers for
//! it in one message, and the relay's task hands each on from inside its own thread, where a
//! wake-up is a push onto the runtime's local queue.

use std::cell::RefCell;

use tokio::sync::{mpsc, oneshot};

use crate::StoreError;

/// Where the writer sends one write's outcome.
pub(crate) struct Reply {
    to: Caller,
    via: Option<Relay>,
}

/// The task waiting for a write's outcome.
type Caller = oneshot::Sender<Result<(), StoreError>>;
/// A write's outcome and who waits for it.
type Answer = (Caller, Result<(), StoreError>);

/// The sending side of one thread's relay.
#[derive(Clone)]
struct Relay(mpsc::UnboundedSender<Vec<Answer>>);

thread_local! {
    static HERE: RefCell<Option<Relay>> = const { RefCell::new(None) };
}

/// Relays the answers to writes submitted from this thread through a task on the current
/// runtime. Call it inside a single-threaded runtime that runs as long as the thread (a
/// connection loop); writes submitted from any other thread are answered directly.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn relay_answers_here() {
    let (relay, mut batches) = mpsc::unbounded_channel::<Vec<Answer>>();
    tokio::spawn(async move {
        while let Some(batch) = batches.recv().await {
            for (to, outcome) in batch {
                let _ = to.send(outcome);
            }
        }
    });
    HERE.with(|here| *here.borrow_mut() = Some(Relay(relay)));
}

impl Reply {
    /// A reply to `to`, through this thread's relay if it has one.
    pub(crate) fn here(to: Caller) -> Self {
        let via = HERE.with(|here| here.borrow().clone());
        Self { to, via }
    }
}

/// One commit's outcomes, gathered per relay so each is woken once.
#[derive(Default)]
pub(crate) struct Answers {
    by_relay: Vec<(Relay, Vec<Answer>)>,
    direct: Vec<Answer>,
}

impl Answers {
    /// Adds the outcome of the write `reply` belongs to.
    pub(crate) fn add(&mut self, reply: Reply, outcome: Result<(), StoreError>) {
        let answer = (reply.to, outcome);
        let Some(relay) = reply.via else {
            return self.direct.push(answer);
        };
        // A handful of loops: a scan beats hashing.
        match self
            .by_relay
            .iter_mut()
            .find(|(known, _)| known.0.same_channel(&relay.0))
        {
            Some((_, answers)) => answers.push(answer),
            None => self.by_relay.push((relay, vec![answer])),
        }
    }

    /// Delivers every outcome; a caller that has gone (client hung up) is not told, and its
    /// write stands either way.
    pub(crate) fn deliver(self) {
        let mut direct = self.direct;
        for (relay, answers) in self.by_relay {
            // A relay whose runtime has stopped gives its answers back.
            if let Err(returned) = relay.0.send(answers) {
                direct.extend(returned.0);
            }
        }
        for (to, outcome) in direct {
            let _ = to.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn answers_reach_their_callers_with_or_without_a_relay() {
        let (to, direct) = oneshot::channel();
        let direct_reply = Reply::here(to);
        relay_answers_here();
        let (first, relayed) = oneshot::channel();
        let (second, relayed_too) = oneshot::channel();
        let replies = [direct_reply, Reply::here(first), Reply::here(second)];
        assert!(replies[0].via.is_none() && replies[1].via.is_some());
        std::thread::spawn(move || {
            let mut answers = Answers::default();
            for (reply, outcome) in
                replies
                    .into_iter()
                    .zip([Ok(()), Err(StoreError::Overloaded), Ok(())])
            {
                answers.add(reply, outcome);
            }
            assert_eq!(answers.by_relay.len(), 1, "one message for the relay");
            answers.deliver();
        })
        .join()
        .unwrap();
        assert_eq!(direct.await.unwrap(), Ok(()));
        assert_eq!(relayed.await.unwrap(), Err(StoreError::Overloaded));
        assert_eq!(relayed_too.await.unwrap(), Ok(()));
    }

    #[test]
    fn a_relay_whose_runtime_has_stopped_answers_directly() {
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async { relay_answers_here() });
            drop(runtime);
            let (to, answer) = oneshot::channel();
            let mut answers = Answers::default();
            answers.add(Reply::here(to), Ok(()));
            answers.deliver();
            assert_eq!(answer.blocking_recv().unwrap(), Ok(()));
        })
        .join()
        .unwrap();
    }
}
