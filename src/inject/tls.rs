//! The webhook's serving certificate: read from PEM files (the mounted Secret), reloaded when
//! their contents change, so a rotated certificate is served without a restart.
//!
//! Kubernetes updates a mounted Secret by swapping a symlink, so the files are polled (cheap:
//! two small reads every [`RELOAD_INTERVAL`]) rather than watched. A bad new pair is logged
//! and the last good one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// How often the files are checked for a new certificate.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Why a certificate pair cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate(PathBuf),
    /// The key file holds no usable private key.
    #[error("{path} holds no usable PEM private key: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The certificate and key files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// PEM certificate chain (`tls.crt`).
    pub cert: PathBuf,
    /// PEM private key (`tls.key`).
    pub key: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl CertFiles {
    fn load(&self) -> Result<(Vec<u8>, Arc<CertifiedKey>), TlsError> {
        let (cert_pem, key_pem) = (read(&self.cert)?, read(&self.key)?);
        let certified = certified_key(&cert_pem, &key_pem, self)?;
        let mut both = cert_pem;
        both.extend_from_slice(&key_pem);
        Ok((both, Arc::new(certified)))
    }
}

fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    files: &CertFiles,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    }
    let bad_key = |reason: String| TlsError::BadKey {
        path: files.key.clone(),
        reason,
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad_key(e.to_string()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| bad_key(e.to_string()))
}

/// Serves the current certificate to every handshake.
#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<(Vec<u8>, Arc<CertifiedKey>)>,
    files: CertFiles,
}

impl ReloadingCert {
    /// Loads the pair once; an error here stops the server from starting.
    pub fn load(files: CertFiles) -> Result<Arc<ReloadingCert>, TlsError> {
        let current = files.load()?;
        Ok(Arc::new(ReloadingCert {
            current: RwLock::new(current),
            files,
        }))
    }

    /// Re-reads the files; swaps the certificate when they changed and are valid.
    /// Returns whether a new certificate is now served.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (cert_pem, key_pem) = (read(&self.files.cert)?, read(&self.files.key)?);
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.0.len() == cert_pem.len() + key_pem.len()
                && current.0[..cert_pem.len()] == cert_pem[..]
                && current.0[cert_pem.len()..] == key_pem[..]
            {
                return Ok(false);
            }
        }
        let certified = certified_key(&cert_pem, &key_pem, &self.files)?;
        let mut both = cert_pem;
        both.extend_from_slice(&key_pem);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (both, Arc::new(certified));
        Ok(true)
    }

    /// Polls the files until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RELOAD_INTERVAL) => {}
            }
            match self.reload() {
                Ok(true) => {
                    failing = false;
                    tracing::info!(cert = %self.files.cert.display(), "webhook certificate reloaded");
                }
                Ok(false) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot reload the webhook certificate; serving the previous one");
                }
                Err(_) => {}
            }
        }
    }

    /// A rustls server config serving this certificate over HTTP/1.1 only (the webhook
    /// needs nothing more, and it keeps TLS connections off the HTTP/2 stack).
    pub fn server_config(self: &Arc<Self>) -> ServerConfig {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .clone(),
        )
    }
}
