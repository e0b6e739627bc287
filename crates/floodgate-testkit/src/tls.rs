//! TLS for tests: a certificate authority made afresh (rcgen), the server and client
//! certificates it issues as PEM files, and a client that speaks raw HTTP/1.1 over TLS.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
pub use tokio_rustls::client::TlsStream;

/// The name the server certificate is issued for, and clients ask for.
pub const SERVER_NAME: &str = "localhost";

/// A certificate authority and what it issued, as files in a directory of their own.
pub struct TestPki {
    _dir: tempfile::TempDir,
    /// The authority's certificate.
    pub ca: PathBuf,
    /// A server certificate for [`SERVER_NAME`].
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// A client certificate.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

impl TestPki {
    /// A new authority with a server and a client certificate of its own.
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("a directory for the certificates");
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };
        let mut authority = CertificateParams::new(Vec::new()).expect("no names");
        authority.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        authority.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let authority_key = KeyPair::generate().expect("a key");
        let ca = write(
            "ca.pem",
            authority.self_signed(&authority_key).expect("sign").pem(),
        );
        let issuer = Issuer::new(authority, authority_key);
        let issue = |name: &str, purpose: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(vec![name.to_owned()]).expect("a name");
            params.use_authority_key_identifier_extension = true;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![purpose];
            let key = KeyPair::generate().expect("a key");
            let certificate = params.signed_by(&key, &issuer).expect("sign");
            (certificate.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = issue(SERVER_NAME, ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = issue("operator", ExtendedKeyUsagePurpose::ClientAuth);
        Self {
            ca,
            server_cert: write("server.pem", server_cert),
            server_key: write("server.key", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client.key", client_key),
            _dir: dir,
        }
    }

    /// A TLS table for floodgate's configuration: `{ cert = …, key = … }`, with `extra` keys.
    pub fn server_table(&self, extra: &str) -> String {
        format!(
            "{{ cert = {:?}, key = {:?}{extra} }}",
            self.server_cert.display().to_string(),
            self.server_key.display().to_string()
        )
    }

    /// A client that trusts this authority, offering `alpn`, with the client certificate
    /// when `present_certificate`.
    pub fn client(&self, alpn: &[&[u8]], present_certificate: bool) -> TlsClient {
        self.client_of(rustls::DEFAULT_VERSIONS, alpn, present_certificate)
    }

    /// [`Self::client`] speaking only the TLS `versions` given.
    pub fn client_of(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
        present_certificate: bool,
    ) -> TlsClient {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_file_iter(&self.ca).expect("the CA file") {
            roots
                .add(certificate.expect("a CA certificate"))
                .expect("a root");
        }
        let builder = rustls::ClientConfig::builder_with_provider(floodgate_http::tls::provider())
            .with_protocol_versions(versions)
            .expect("versions the provider supports")
            .with_root_certificates(roots);
        let mut config = if present_certificate {
            let chain = CertificateDer::pem_file_iter(&self.client_cert)
                .expect("the client certificate")
                .collect::<Result<Vec<_>, _>>()
                .expect("a certificate");
            let key = PrivateKeyDer::from_pem_file(&self.client_key).expect("the client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("a client certificate")
        } else {
            builder.with_no_client_auth()
        };
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
        }
    }
}

/// A TLS client for tests.
pub struct TlsClient {
    connector: TlsConnector,
}

impl TlsClient {
    /// A TLS connection to the listener at `url` (`https://address`), naming [`SERVER_NAME`],
    /// its handshake done.
    pub async fn connect(&self, url: &str) -> io::Result<TlsStream<TcpStream>> {
        let address = url.strip_prefix("https://").unwrap_or(url);
        let tcp = TcpStream::connect(address).await?;
        let name = ServerName::try_from(SERVER_NAME).expect("a valid name");
        self.connector.connect(name, tcp).await
    }
}

/// What one exchange over TLS gave.
#[derive(Debug)]
pub struct TlsAnswer {
    /// The protocol ALPN settled on.
    pub alpn: Option<Vec<u8>>,
    /// Everything the server sent until it closed.
    pub text: String,
}

impl TlsClient {
    /// Sends `request` (raw HTTP/1.1; the server should close after it) to the listener at
    /// `url` (`https://address`), naming [`SERVER_NAME`], and reads until the server closes.
    pub async fn exchange(&self, url: &str, request: &str) -> io::Result<TlsAnswer> {
        let mut stream = self.connect(url).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok(TlsAnswer {
            alpn: stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec),
            text: String::from_utf8_lossy(&answer).into_owned(),
        })
    }
}
