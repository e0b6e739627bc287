//! Background WAL checkpoints, so copying the log into the database file does not stall commits.
//!
//! SQLite checkpoints automatically at the end of a commit once the WAL passes a threshold, and
//! that commit (with every order waiting on it) pays for copying the whole log. Here a second
//! connection copies it in `PASSIVE` mode every [`CHECKPOINT_INTERVAL`], never blocking the
//! writer; the writer's own automatic checkpoint stays on as a backstop that bounds the WAL, and
//! finds little left to copy.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

use rusqlite::Connection;

use super::schema::backend;
use crate::StoreError;

/// How often the background checkpoint runs.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// A connection ready to run checkpoints.
pub(super) struct Checkpointer {
    connection: Connection,
}

/// Stops the checkpoint thread when dropped.
pub(super) struct Running {
    _stop: Sender<()>,
}

impl Checkpointer {
    /// Opens the checkpoint connection on the database at `path`.
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = Connection::open(path).map_err(backend)?;
        // FULL: a checkpoint fsyncs the database file before the log may be reused.
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        Ok(Self { connection })
    }

    /// Starts checkpointing on its own thread until the returned guard is dropped.
    pub(super) fn start(self) -> Running {
        let (stop, stopped) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new().name("floodgate-store-checkpoint".into()).spawn(
            move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_INTERVAL) {
                    let checkpoint = self
                        .connection
                        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(error) = checkpoint {
                        tracing::warn!(%error, "background checkpoint failed; the writer's own will run");
                    }
                }
            },
        );
        if let Err(error) = spawned {
            tracing::warn!(%error, "no background checkpoints; the writer's own will run");
        }
        Running { _stop: stop }
    }
}
