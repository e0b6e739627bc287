//! The real `floodgate serve` process on loopback port 0, with its own data directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{HttpClient, Method, StatusCode};

/// How long a gateway may take to start (build caches cold, slow CI disk).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running gateway; killed when dropped.
pub struct GatewayProcess {
    child: Child,
    /// `http://127.0.0.1:PORT` of the public listener.
    pub public_url: String,
    /// `http://127.0.0.1:PORT` of the admin listener.
    pub admin_url: String,
    /// The admin bearer token.
    pub admin_token: String,
}

impl GatewayProcess {
    /// Starts `binary serve` on `data_dir` with both listeners on port 0, and waits until it
    /// announces its addresses. `extra_config` is appended to the generated config file.
    pub fn spawn(binary: &Path, data_dir: &Path, extra_config: &str) -> std::io::Result<Self> {
        Self::spawn_with_env(binary, data_dir, extra_config, &[])
    }

    /// [`Self::spawn`] with extra environment variables (such as `FLOODGATE_STORE_URL`).
    pub fn spawn_with_env(
        binary: &Path,
        data_dir: &Path,
        extra_config: &str,
        env: &[(&str, &str)],
    ) -> std::io::Result<Self> {
        Self::spawn_with_server(binary, data_dir, "", extra_config, env)
    }

    /// [`Self::spawn_with_env`] with `server_keys` added to the `[server]` table (its limits,
    /// its trusted proxies).
    pub fn spawn_with_server(
        binary: &Path,
        data_dir: &Path,
        server_keys: &str,
        extra_config: &str,
        env: &[(&str, &str)],
    ) -> std::io::Result<Self> {
        let admin_token = "test-admin-token".to_owned();
        let config_path: PathBuf = data_dir.join("floodgate.toml");
        std::fs::create_dir_all(data_dir)?;
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{server_keys}\n\
             [store]\npath = {:?}\n{extra_config}",
            data_dir.join("store").display().to_string()
        );
        std::fs::write(&config_path, config)?;
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("FLOODGATE_ADMIN_TOKEN", &admin_token)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        // Read the announcements on a thread so a silent child cannot hang the test.
        let (lines, announced) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut public_url, mut admin_url) = (None, None);
        while public_url.is_none() || admin_url.is_none() {
            let line = announced.recv_timeout(START_TIMEOUT).map_err(|_| {
                let _ = child.kill();
                std::io::Error::other("floodgate did not announce its listeners in time")
            })?;
            if let Some(url) = line.strip_prefix("floodgate public ") {
                public_url = Some(url.to_owned());
            } else if let Some(url) = line.strip_prefix("floodgate admin ") {
                admin_url = Some(url.to_owned());
            }
        }
        Ok(Self {
            child,
            public_url: public_url.unwrap_or_default(),
            admin_url: admin_url.unwrap_or_default(),
            admin_token,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Authorization` header value for the admin API.
    pub fn admin_authorization(&self) -> String {
        format!("Bearer {}", self.admin_token)
    }

    /// Creates or replaces drop `drop_id` through the admin API; any answer but `200` is an
    /// error that quotes it.
    pub async fn put_drop(
        &self,
        client: &HttpClient,
        drop_id: &str,
        spec: &serde_json::Value,
    ) -> Result<(), String> {
        let url = format!("{}/admin/drops/{drop_id}", self.admin_url);
        let authorization = self.admin_authorization();
        let answer = client
            .send(
                Method::PUT,
                &url,
                &[("authorization", &authorization)],
                Some(spec),
            )
            .await?;
        if answer.status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("PUT {url}: {} {}", answer.status, answer.body))
        }
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited successfully.
    pub fn terminate(mut self) -> std::io::Result<bool> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other("kill -TERM failed"));
        }
        Ok(self.child.wait()?.success())
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
