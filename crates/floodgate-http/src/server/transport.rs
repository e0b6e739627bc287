//! The byte stream a connection is served over: a TCP socket, or TLS over one.

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::wire;

/// Room made for the first read of a connection that holds no read buffer: most request heads
/// fit, and a busy connection's buffer grows to the full read size as it needs.
const FIRST_READ: usize = 4 * 1024;

/// What a connection reads from and writes to.
pub(super) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Reads what has arrived into `buffer`.
    fn read_some(
        &mut self,
        buffer: &mut BytesMut,
    ) -> impl Future<Output = io::Result<usize>> + Send;

    /// Writes `bytes` whole; each write must make progress within `timeout`.
    fn send_all(
        &mut self,
        bytes: &[u8],
        timeout: Duration,
    ) -> impl Future<Output = io::Result<()>> + Send;
}

impl Transport for TcpStream {
    /// A buffer with no room left (a connection that has not spoken yet, or gave its buffers
    /// back) gets room only once bytes are there.
    async fn read_some(&mut self, buffer: &mut BytesMut) -> io::Result<usize> {
        if buffer.capacity() == buffer.len() {
            loop {
                self.readable().await?;
                buffer.reserve(FIRST_READ);
                match self.try_read_buf(buffer) {
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    read => return read,
                }
            }
        }
        wire::make_read_room(buffer);
        self.read_buf(buffer).await
    }

    async fn send_all(&mut self, mut bytes: &[u8], timeout: Duration) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.try_write(bytes) {
                // As `std`'s `write_all` does: a socket that takes nothing will never take it.
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => bytes = &bytes[written..],
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    match tokio::time::timeout(timeout, self.writable()).await {
                        Ok(ready) => ready?,
                        Err(_) => return Err(io::ErrorKind::TimedOut.into()),
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

impl Transport for TlsStream<TcpStream> {
    /// TLS keeps its own record buffers: the read buffer is made room in at once.
    async fn read_some(&mut self, buffer: &mut BytesMut) -> io::Result<usize> {
        wire::make_read_room(buffer);
        self.read_buf(buffer).await
    }

    async fn send_all(&mut self, mut bytes: &[u8], timeout: Duration) -> io::Result<()> {
        while !bytes.is_empty() {
            match tokio::time::timeout(timeout, self.write(bytes)).await {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(written)) => bytes = &bytes[written..],
                Ok(Err(error)) => return Err(error),
                Err(_) => return Err(io::ErrorKind::TimedOut.into()),
            }
        }
        // The records rustls has sealed but the socket has not taken yet.
        match tokio::time::timeout(timeout, self.flush()).await {
            Ok(flushed) => flushed,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }
}
