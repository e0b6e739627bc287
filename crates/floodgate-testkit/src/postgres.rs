//! A throwaway PostgreSQL cluster for tests: `initdb` and `pg_ctl` from Debian's `postgresql`
//! package (which `.ci/run` installs) on a temporary directory and a free loopback port, stopped
//! and removed when dropped. PostgreSQL refuses to run as root, so as root the cluster runs as the
//! package's `postgres` user.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The cluster's superuser, trusted on loopback (the cluster lives for one test).
const SUPERUSER: &str = "postgres";

/// A running cluster.
pub struct PostgresCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The user the server runs as when the test runs as root.
    run_as: Option<&'static str>,
}

impl PostgresCluster {
    /// Creates and starts a cluster; fails with a clear message when PostgreSQL is missing.
    pub fn start() -> Result<Self, String> {
        let bin = server_binaries().ok_or(
            "PostgreSQL is not installed: no initdb on PATH or in /usr/lib/postgresql/*/bin; \
             install Debian's postgresql package (.ci/run does)",
        )?;
        let dir =
            tempfile::tempdir().map_err(|error| format!("no temporary directory: {error}"))?;
        let run_as = running_as_root().then_some(SUPERUSER);
        if let Some(user) = run_as {
            run(Command::new("chown").arg(user).arg(dir.path()), "chown")?;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| format!("no free port: {error}"))?
            .port();
        let cluster = Self {
            dir,
            bin,
            port,
            run_as,
        };
        let data = cluster.data_dir();
        cluster.server_command("initdb", |command| {
            command
                .arg("-D")
                .arg(&data)
                .args(["--auth=trust", "--username", SUPERUSER, "--encoding=UTF8"])
                .arg("--no-sync");
        })?;
        cluster.resume()?;
        Ok(cluster)
    }

    /// Stops the server (fast shutdown: connections are closed), keeping its data.
    pub fn pause(&self) -> Result<(), String> {
        let data = self.data_dir();
        self.server_command("pg_ctl", |command| {
            command
                .arg("-D")
                .arg(&data)
                .args(["-m", "fast", "-w", "stop"]);
        })
    }

    /// Starts the server on its data and port (again, after [`Self::pause`]).
    pub fn resume(&self) -> Result<(), String> {
        let data = self.data_dir();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.server_command("pg_ctl", |command| {
            command
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-o", &options, "-w", "start"]);
        })
    }

    /// A URL for `database` (the cluster starts with `postgres`).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// A client of the database at `url`, its connection driven on the current runtime.
    pub async fn connect(url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to the throwaway cluster");
        tokio::spawn(connection);
        client
    }

    /// Creates an empty database.
    pub fn create_database(&self, name: &str) -> Result<(), String> {
        let port = self.port.to_string();
        self.server_command("createdb", |command| {
            command.args(["-h", "127.0.0.1", "-p", &port, "-U", SUPERUSER, name]);
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of the server's programs, as the server's user when the test runs as root.
    fn server_command(&self, program: &str, args: impl FnOnce(&mut Command)) -> Result<(), String> {
        let binary = self.bin.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        args(&mut command);
        run(&mut command, program)
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self.server_command("pg_ctl", |command| {
            command
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"]);
        });
    }
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output: Output = command
        .output()
        .map_err(|error| format!("cannot run {what}: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The folder holding `initdb` and `pg_ctl`: on PATH, or Debian's newest version.
fn server_binaries() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| dir.join("initdb").is_file()));
    let found = on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
            .filter(|bin| bin.join("initdb").is_file())
            .collect();
        versions.sort_by_key(|bin| version_of(bin));
        versions.pop()
    })?;
    // Resolve links (Debian links some programs into /usr/local/bin) to find pg_ctl beside it.
    let initdb = std::fs::canonicalize(found.join("initdb")).ok()?;
    initdb.parent().map(Path::to_path_buf)
}

/// `/usr/lib/postgresql/15/bin` → 15.
fn version_of(bin: &Path) -> u32 {
    bin.parent()
        .and_then(Path::file_name)
        .and_then(|name| name.to_str()?.parse().ok())
        .unwrap_or(0)
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|proc| proc.uid() == 0)
}
