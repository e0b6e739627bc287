//! A recording origin: keeps every byte each connection sends it, and answers each request
//! with what it was asked (the target and the `Host`), cacheable for a minute, so a test can
//! see both what reached the origin and whose answer a cache kept.
//!
//! It reads request bodies by `Content-Length` or by chunks (to the last chunk); a request it
//! cannot read closes the connection, and the bytes stay recorded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request as the origin read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The method.
    pub method: String,
    /// The request target, as sent.
    pub target: String,
    /// The header lines, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body, decoded from its chunks if it had them.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The values of header `name` (lower case), in order.
    pub fn header(&self, name: &str) -> Vec<&str> {
        (self.headers.iter())
            .filter(|(each, _)| each == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

#[derive(Debug, Default)]
struct Log {
    raw: Vec<u8>,
    requests: Vec<Recorded>,
    connections: usize,
}

/// A running recording origin; stops when dropped.
pub struct RecordingOrigin {
    address: SocketAddr,
    log: Arc<Mutex<Log>>,
    task: JoinHandle<()>,
}

impl RecordingOrigin {
    /// Serves on a fresh loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Log::default()));
        let served = Arc::clone(&log);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                lock(&served).connections += 1;
                tokio::spawn(serve(stream, Arc::clone(&served)));
            }
        });
        Ok(Self { address, log, task })
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every request it has read whole, in the order they came.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.log).requests.clone()
    }

    /// Every byte it has received, on all connections.
    pub fn raw(&self) -> Vec<u8> {
        lock(&self.log).raw.clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.log).connections
    }
}

impl Drop for RecordingOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn serve(mut stream: TcpStream, log: Arc<Mutex<Log>>) {
    let mut buffer = Vec::new();
    loop {
        let request = loop {
            match parse(&buffer) {
                Parsed::Request(request, length) => {
                    buffer.drain(..length);
                    break request;
                }
                Parsed::Broken => return,
                Parsed::Partial => {}
            }
            let mut piece = [0; 16 * 1024];
            match stream.read(&mut piece).await {
                Ok(0) | Err(_) => return,
                Ok(read) => {
                    lock(&log).raw.extend_from_slice(&piece[..read]);
                    buffer.extend_from_slice(&piece[..read]);
                }
            }
        };
        let host = request
            .header("host")
            .first()
            .copied()
            .unwrap_or("")
            .to_owned();
        let body = format!("{} {} @{host}", request.method, request.target);
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncache-control: max-age=60\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        lock(&log).requests.push(request);
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

enum Parsed {
    Request(Recorded, usize),
    Partial,
    Broken,
}

/// A whole request at the front of `buffer`, with its length.
fn parse(buffer: &[u8]) -> Parsed {
    let mut lines = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut lines);
    let head = match request.parse(buffer) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Broken,
    };
    let headers: Vec<(String, String)> = (request.headers.iter())
        .map(|line| {
            let value = String::from_utf8_lossy(line.value).into_owned();
            (line.name.to_ascii_lowercase(), value)
        })
        .collect();
    let recorded = |body: Vec<u8>| Recorded {
        method: request.method.unwrap_or_default().to_owned(),
        target: request.path.unwrap_or_default().to_owned(),
        headers: headers.clone(),
        body,
    };
    let value = |name: &str| {
        (headers.iter())
            .find(|(each, _)| each == name)
            .map(|(_, value)| value.as_str())
    };
    let rest = &buffer[head..];
    if value("transfer-encoding").is_some_and(|coding| coding.contains("chunked")) {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let Some(end) = find(&rest[at..], b"\r\n") else {
                return Parsed::Partial;
            };
            let size = String::from_utf8_lossy(&rest[at..at + end]);
            let size = size.split(';').next().unwrap_or("").trim().to_owned();
            let Ok(size) = usize::from_str_radix(&size, 16) else {
                return Parsed::Broken;
            };
            at += end + 2;
            if size == 0 {
                // No trailers are sent to it.
                return match rest.get(at..at + 2) {
                    Some(b"\r\n") => Parsed::Request(recorded(body), head + at + 2),
                    Some(_) => Parsed::Broken,
                    None => Parsed::Partial,
                };
            }
            let Some(chunk) = rest.get(at..at + size + 2) else {
                return Parsed::Partial;
            };
            body.extend_from_slice(&chunk[..size]);
            at += size + 2;
        }
    }
    let length = match value("content-length").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(length)) => length,
        Some(Err(_)) => return Parsed::Broken,
    };
    match rest.get(..length) {
        Some(body) => Parsed::Request(recorded(body.to_vec()), head + length),
        None => Parsed::Partial,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
