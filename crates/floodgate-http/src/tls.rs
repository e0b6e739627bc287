//! TLS for a listener, with rustls: the certificate chain and key from PEM files, TLS 1.2 and
//! 1.3 with rustls's safe defaults, ALPN, and client certificates checked against a CA when
//! one is given.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// The files a TLS listener is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The certificate's private key (PEM: PKCS #8, PKCS #1 or SEC 1).
    pub key: PathBuf,
    /// When set, clients must present a certificate this CA (PEM, one or more) issued.
    pub client_ca: Option<PathBuf>,
}

/// A listener's TLS files and the configuration read from them. Two are equal when they name
/// the same files: what the files held when read is not part of the setting.
#[derive(Debug, Clone)]
pub struct LoadedTls {
    /// Where the material comes from.
    pub files: TlsFiles,
    /// What the files held when they were read.
    pub config: Arc<rustls::ServerConfig>,
}

impl LoadedTls {
    /// Reads `files`.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = server_config(&files)?;
        Ok(Self { files, config })
    }
}

impl PartialEq for LoadedTls {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files
    }
}

impl Eq for LoadedTls {}

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM section of the kind wanted.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the material (a key that does not match the certificate, say).
    #[error("{0}")]
    Refused(#[from] rustls::Error),
}

/// A listener's TLS configuration, replaced in place on reload: each handshake takes the one in
/// force when its connection arrives, and connections already open keep theirs.
#[derive(Debug)]
pub struct ServerTls {
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl ServerTls {
    /// `config` in force until replaced.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(config),
        })
    }

    /// Puts `config` in force for the connections that arrive from now on.
    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// The protocols a listener offers by ALPN, most preferred first.
const ALPN: [&[u8]; 1] = [b"http/1.1"];

/// The cryptography every TLS context of floodgate's uses: rustls's default, aws-lc-rs, with
/// post-quantum key exchange preferred.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A server configuration from `files`.
fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| TlsError::File {
        path: files.key.clone(),
        reason: pem_reason(&error, "private key"),
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(path)? {
                roots.add(certificate)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|error| TlsError::File {
                    path: path.clone(),
                    reason: error.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Every certificate in the PEM file at `path`, at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let unreadable = |error: rustls::pki_types::pem::Error| TlsError::File {
        path: path.to_owned(),
        reason: pem_reason(&error, "certificate"),
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(unreadable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    if chain.is_empty() {
        return Err(unreadable(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(chain)
}

fn pem_reason(error: &rustls::pki_types::pem::Error, wanted: &str) -> String {
    match error {
        rustls::pki_types::pem::Error::NoItemsFound => format!("no PEM {wanted} in the file"),
        other => other.to_string(),
    }
}
