//! [`PeerCredentials`]: this node's TLS material, checked once at start and
//! read again for every new connection.

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};

use super::{NODE_ID_URI_PREFIX, PeerTls};
use crate::error::{Error, Result};

/// The node id a certificate (DER) speaks for: its one URI subject
/// alternative name under [`NODE_ID_URI_PREFIX`]. `None` when it names
/// none, names several, or does not parse.
pub fn node_id_of(certificate: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut ids = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => uri.strip_prefix(NODE_ID_URI_PREFIX),
        _ => None,
    });
    let id = ids.next()?;
    if id.is_empty() || ids.next().is_some() {
        return None;
    }
    Some(id.to_owned())
}

/// Which peer ids a connection may reach (the one it dialled).
pub(crate) type AcceptsPeer = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// One reading of the three files and what was built from it.
struct Material {
    files: [Vec<u8>; 3],
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    server: Arc<ServerConfig>,
}

struct Inner {
    tls: PeerTls,
    local_id: String,
    provider: Arc<CryptoProvider>,
    current: Mutex<Arc<Material>>,
    /// The last contents that failed to build, so a bad rotation is
    /// logged once, not at every connection.
    rejected: Mutex<Option<[Vec<u8>; 3]>>,
}

/// This node's peer TLS material: the CA to verify peers against, its own
/// certificate chain and key. Cheap to clone.
///
/// # Contract
///
/// [`load`](Self::load) checks everything that can be checked alone: the
/// files parse, the certificate names `local_id` ([`super::node_id_uri`])
/// and chains to the CA for both client and server use, and the key fits
/// the certificate. Afterwards each new connection reads the files again;
/// changed contents that pass the same checks take effect for that
/// connection and every later one, while contents that fail them are
/// logged once and the last good material stays in use (a half-written
/// rotation never takes the node off the network).
#[derive(Clone)]
pub struct PeerCredentials {
    inner: Arc<Inner>,
}

impl fmt::Debug for PeerCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerCredentials")
            .field("tls", &self.inner.tls)
            .field("local_id", &self.inner.local_id)
            .finish_non_exhaustive()
    }
}

impl PeerCredentials {
    /// Reads and checks the files for node `local_id`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the file and what is wrong with it.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn load(tls: &PeerTls, local_id: &str) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = read_files(tls).await?;
        let material = build(tls, local_id, &provider, files)?;
        Ok(PeerCredentials {
            inner: Arc::new(Inner {
                tls: tls.clone(),
                local_id: local_id.to_owned(),
                provider,
                current: Mutex::new(Arc::new(material)),
                rejected: Mutex::new(None),
            }),
        })
    }

    /// The node id these credentials speak for.
    pub fn local_id(&self) -> &str {
        &self.inner.local_id
    }

    /// The server side of a new connection: presents this node's
    /// certificate and requires one from the peer that chains to the CA.
    pub async fn server_config(&self) -> Arc<ServerConfig> {
        self.refresh().await.server.clone()
    }

    /// The client side of a new connection to a peer: presents this node's
    /// certificate and accepts the peer's only if it chains to the CA and
    /// names a node id for which `accepts` holds (the id being dialled).
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if rustls refuses the material (it passed the
    /// same checks when loaded, so this means a broken invariant).
    pub async fn client_config(
        &self,
        accepts: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Result<Arc<ClientConfig>> {
        let m = self.refresh().await;
        client_config(&self.inner.provider, &m, Arc::new(accepts)).map(Arc::new)
    }

    /// The material for a new connection, read again from the files.
    async fn refresh(&self) -> Arc<Material> {
        let current = self.current();
        let files = match read_files(&self.inner.tls).await {
            Ok(files) => files,
            Err(e) => {
                self.reject_once(None, &e);
                return current;
            }
        };
        if files == current.files {
            return current;
        }
        match build(
            &self.inner.tls,
            &self.inner.local_id,
            &self.inner.provider,
            files.clone(),
        ) {
            Ok(m) => {
                let m = Arc::new(m);
                *self.inner.current.lock().unwrap_or_else(|p| p.into_inner()) = m.clone();
                tracing::info!(cert = %self.inner.tls.cert_file.display(), "peer TLS material reloaded");
                m
            }
            Err(e) => {
                self.reject_once(Some(files), &e);
                current
            }
        }
    }

    fn current(&self) -> Arc<Material> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn reject_once(&self, files: Option<[Vec<u8>; 3]>, e: &Error) {
        let mut rejected = self
            .inner
            .rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if files.is_some() && *rejected == files {
            return;
        }
        *rejected = files;
        tracing::warn!(error = %e, "new peer TLS material refused; the previous material stays in use");
    }
}

async fn read_files(tls: &PeerTls) -> Result<[Vec<u8>; 3]> {
    let read = |path: std::path::PathBuf| async move {
        tokio::fs::read(&path)
            .await
            .map_err(|e| Error::InvalidConfig(format!("read {}: {e}", path.display())))
    };
    Ok([
        read(tls.ca_file.clone()).await?,
        read(tls.cert_file.clone()).await?,
        read(tls.key_file.clone()).await?,
    ])
}

fn invalid(file: &std::path::Path, what: impl fmt::Display) -> Error {
    Error::InvalidConfig(format!("{}: {what}", file.display()))
}

fn certificates(file: &std::path::Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| invalid(file, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(file, "holds no certificate"));
    }
    Ok(certs)
}

fn build(
    tls: &PeerTls,
    local_id: &str,
    provider: &Arc<CryptoProvider>,
    files: [Vec<u8>; 3],
) -> Result<Material> {
    let [ca, cert, key] = &files;
    let mut roots = RootCertStore::empty();
    for c in certificates(&tls.ca_file, ca)? {
        roots
            .add(c)
            .map_err(|e| invalid(&tls.ca_file, format!("not a usable CA certificate: {e}")))?;
    }
    let roots = Arc::new(roots);
    let chain = certificates(&tls.cert_file, cert)?;
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| invalid(&tls.key_file, format!("not a PEM private key: {e}")))?;
    match node_id_of(&chain[0]) {
        Some(id) if id == local_id => {}
        Some(id) => {
            return Err(invalid(
                &tls.cert_file,
                format!("the certificate is for node {id:?}, not {local_id:?}"),
            ));
        }
        None => {
            return Err(invalid(
                &tls.cert_file,
                format!(
                    "the certificate names no node id (one URI SAN {:?})",
                    super::node_id_uri(local_id)
                ),
            ));
        }
    }
    for usage in [
        webpki::KeyUsage::client_auth(),
        webpki::KeyUsage::server_auth(),
    ] {
        verify_chain(
            provider,
            &roots,
            &chain[0],
            &chain[1..],
            UnixTime::now(),
            usage,
        )
        .map_err(|e| {
            invalid(
                &tls.cert_file,
                format!("does not verify against the CA: {e}"),
            )
        })?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| invalid(&tls.ca_file, e))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidConfig(format!("TLS versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| invalid(&tls.key_file, format!("does not fit the certificate: {e}")))?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let material = Material {
        files: files.clone(),
        roots,
        chain,
        key: Arc::new(key),
        server: Arc::new(server),
    };
    // The client side is built per connection; build one now so that a
    // key rustls refuses as a client is refused here, not at first use.
    client_config(provider, &material, Arc::new(|_: &str| false))
        .map_err(|e| invalid(&tls.key_file, e))?;
    Ok(material)
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    m: &Material,
    accepts: AcceptsPeer,
) -> Result<ClientConfig> {
    let verifier = PeerVerifier {
        provider: provider.clone(),
        roots: m.roots.clone(),
        accepts,
    };
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::transport("TLS versions", e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(m.chain.clone(), m.key.clone_key())
        .map_err(|e| Error::transport("TLS client certificate", e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    // Peers are named by node id, not host name: nothing to indicate.
    config.enable_sni = false;
    Ok(config)
}

fn verify_chain(
    provider: &CryptoProvider,
    roots: &RootCertStore,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
) -> std::result::Result<(), webpki::Error> {
    let cert = webpki::EndEntityCert::try_from(end_entity)?;
    cert.verify_for_usage(
        provider.signature_verification_algorithms.all,
        &roots.roots,
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map(|_| ())
}

/// Verifies the peer a node dialled: the chain to the CA (server use), then
/// the node id its certificate names. Host names play no part: a peer is
/// who its certificate says, wherever it is reached.
struct PeerVerifier {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    accepts: AcceptsPeer,
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerVerifier").finish_non_exhaustive()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        verify_chain(
            &self.provider,
            &self.roots,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )
        .map_err(|e| {
            rustls::Error::InvalidCertificate(match e {
                webpki::Error::UnknownIssuer => CertificateError::UnknownIssuer,
                webpki::Error::CertExpired { .. } => CertificateError::Expired,
                webpki::Error::CertNotValidYet { .. } => CertificateError::NotValidYet,
                other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
            })
        })?;
        match node_id_of(end_entity) {
            Some(id) if (self.accepts)(&id) => Ok(ServerCertVerified::assertion()),
            _ => Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
