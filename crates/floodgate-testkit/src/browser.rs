//! A headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`, which
//! `.ci/run` installs), for tests of floodgate's pages. Only loopback addresses are used.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use crate::HttpClient;

/// How long chromedriver may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A browser session; the driver is stopped when dropped.
pub struct Browser {
    driver: Child,
    session_url: String,
    client: HttpClient,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless session with a window of
    /// `width` × `height` pixels. Fails with a clear message when chromedriver is not installed.
    pub async fn start(width: u32, height: u32) -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| error.to_string())?
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| {
                format!(
                    "cannot start chromedriver ({error}); install Debian's chromium and \
                     chromium-driver (.ci/run does)"
                )
            })?;
        let client = HttpClient::new(Duration::from_secs(30));
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Self {
            driver,
            session_url: String::new(),
            client,
        };
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while browser
            .client
            .get(&format!("{base}/status"), &[])
            .await
            .is_err()
        {
            if tokio::time::Instant::now() > deadline {
                return Err("chromedriver did not start listening".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
                // A desktop window cannot be narrower than about 500 px; emulating a device can.
                "mobileEmulation": { "deviceMetrics": {
                    "width": width, "height": height, "pixelRatio": 2.0,
                }},
            },
        }}});
        let created = browser
            .client
            .send(
                Method::POST,
                &format!("{base}/session"),
                &[],
                Some(&capabilities),
            )
            .await?;
        let session = created.body["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session: {}", created.body))?;
        browser.session_url = format!("{base}/session/{session}");
        Ok(browser)
    }

    async fn command(&self, method: Method, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}{path}", self.session_url);
        let body = (method == Method::POST).then_some(&body);
        let answer = self.client.send(method, &url, &[], body).await?;
        if answer.status.is_success() {
            Ok(answer.body["value"].clone())
        } else {
            Err(format!("WebDriver {path}: {}", answer.body))
        }
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.command(Method::POST, "/url", json!({ "url": url }))
            .await
            .map(drop)
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> Result<String, String> {
        let found = self
            .command(
                Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await?;
        let element = found
            .as_object()
            .and_then(|object| object.values().next())
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no element {css}"))?
            .to_owned();
        let text = self
            .command(
                Method::GET,
                &format!("/element/{element}/text"),
                Value::Null,
            )
            .await?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    /// The page's laid-out width and the viewport's, in CSS pixels (a page that fits a phone
    /// is no wider than the phone's viewport).
    pub async fn widths(&self) -> Result<(u64, u64), String> {
        let widths = self
            .script("return [document.documentElement.scrollWidth, window.innerWidth];")
            .await?;
        match (widths[0].as_u64(), widths[1].as_u64()) {
            (Some(page), Some(viewport)) => Ok((page, viewport)),
            _ => Err(format!("no widths: {widths}")),
        }
    }
}

impl Browser {
    /// Runs `script` (a function body that may `return` a value) in the page.
    pub async fn script(&self, script: &str) -> Result<Value, String> {
        self.command(
            Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) -> Result<(), String> {
        use base64::Engine;
        let encoded = self
            .command(Method::GET, "/screenshot", Value::Null)
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .map_err(|error| format!("screenshot: {error}"))?;
        std::fs::write(path, png).map_err(|error| format!("{}: {error}", path.display()))
    }

    /// Ends the session (closing Chromium), then stops the driver.
    pub async fn close(self) {
        let _ = self
            .client
            .send(Method::DELETE, &self.session_url, &[], None)
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
