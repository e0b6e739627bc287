//! `SIGHUP`: the configuration file and TLS material read again, as nginx does on reload.
//!
//! The listeners' certificates and keys change in place: new connections get the new ones,
//! open connections keep theirs. A file with problems changes nothing, and each problem is
//! logged with its key path, as `check-config` prints it. A change only a restart can make (a
//! listen address, TLS on or off, the store, the connection threads) is refused whole, with a
//! log line naming the key. Other sections are not reloaded in place yet: a change to them is
//! logged as waiting for the next restart.

use std::path::PathBuf;
use std::sync::Arc;

use floodgate_config::Config;
use floodgate_gateway::{Gateway, ReloadOutcome};
use floodgate_http::tls::ServerTls;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// What a reload reads again and where it puts it: the file, the `SIGHUP`s (listened for from
/// the start, so an early one does not end the process), each listener's TLS.
pub(crate) struct Reloadable {
    /// The file `serve` was started with (`None`: the defaults, nothing to read again).
    pub(crate) path: Option<PathBuf>,
    pub(crate) hangups: Signal,
    pub(crate) public_tls: Option<Arc<ServerTls>>,
    pub(crate) admin_tls: Option<Arc<ServerTls>>,
}

impl Reloadable {
    /// Listens for `SIGHUP` from now on.
    pub(crate) fn listen(
        path: Option<PathBuf>,
        public_tls: Option<Arc<ServerTls>>,
        admin_tls: Option<Arc<ServerTls>>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            path,
            hangups: signal(SignalKind::hangup())?,
            public_tls,
            admin_tls,
        })
    }

    /// Reloads on every `SIGHUP`, against `running`, counting each in `gateway`'s metrics.
    pub(crate) async fn run(mut self, mut running: Config, gateway: Arc<Gateway>) {
        while self.hangups.recv().await.is_some() {
            let outcome = self.reload(&mut running);
            tracing::info!(outcome = outcome.as_str(), "configuration reload");
            gateway.count_reload(outcome);
        }
    }

    fn reload(&self, running: &mut Config) -> ReloadOutcome {
        let Some(path) = &self.path else {
            tracing::warn!("serve was started without --config: there is no file to read again");
            return ReloadOutcome::Refused;
        };
        let config = match crate::load_config(Some(path)) {
            Ok(config) => config,
            Err(problems) => {
                for problem in problems {
                    tracing::warn!(%problem, "reload: the configuration in force stays");
                }
                return ReloadOutcome::Invalid;
            }
        };
        let fixed = restart_only_changes(running, &config);
        if !fixed.is_empty() {
            for key in fixed {
                tracing::warn!(key, "reload refused: this key changes only with a restart");
            }
            return ReloadOutcome::Refused;
        }
        // The files were read with the rest of the file: all of them loaded, or nothing changes.
        for (tls, loaded) in [
            (&self.public_tls, &config.server.tls),
            (&self.admin_tls, &config.server.admin_tls),
        ] {
            if let (Some(tls), Some(loaded)) = (tls, loaded) {
                tls.replace(Arc::clone(&loaded.config));
            }
        }
        for section in waiting_for_restart(running, &config) {
            tracing::warn!(
                section,
                "reload: this section changes only at the next restart for now"
            );
        }
        running.server.tls = config.server.tls;
        running.server.admin_tls = config.server.admin_tls;
        ReloadOutcome::Applied
    }
}

/// The keys whose new values only a restart can put in force.
fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    let (old, now) = (&running.server, &new.server);
    [
        ("server.listen", old.listen != now.listen),
        ("server.admin_listen", old.admin_listen != now.admin_listen),
        ("server.tls", old.tls.is_some() != now.tls.is_some()),
        (
            "server.admin_tls",
            old.admin_tls.is_some() != now.admin_tls.is_some(),
        ),
        (
            "server.worker_threads",
            old.worker_threads != now.worker_threads,
        ),
        ("store", running.store != new.store),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// The sections that changed in ways a reload does not put in force yet.
fn waiting_for_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    let server = |config: &Config| {
        let mut server = config.server.clone();
        (server.tls, server.admin_tls) = (None, None);
        server
    };
    [
        ("server", server(running) != server(new)),
        ("intake", running.intake != new.intake),
        ("downstream", running.downstream != new.downstream),
        (
            "origin, pools, routes, cache, admission",
            running.front_door != new.front_door,
        ),
        ("waiting_room", running.waiting_room != new.waiting_room),
        ("drops", running.drops != new.drops),
    ]
    .into_iter()
    .filter_map(|(section, changed)| changed.then_some(section))
    .collect()
}
