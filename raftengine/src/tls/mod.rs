//! How peers authenticate each other: mutual TLS with the node id bound to
//! the certificate, or an explicit plaintext opt-out.
//!
//! A node's certificate names the node id it speaks for as a URI subject
//! alternative name, [`node_id_uri`] (`urn:raftengine:node:<id>`). Every
//! node presents its certificate and verifies its peers' against the CA
//! (both directions: it is a client when it sends, a server when it
//! receives); a connection whose certificate names no node id carries no
//! identity, and the backends refuse its calls. Certificate, key and CA
//! are read again for each new connection, so rotating them needs no
//! restart.
//!
//! Both backends take the same [`PeerSecurity`] through
//! [`FactoryConfig::peer_security`](crate::FactoryConfig::peer_security);
//! [`FactoryResult::serve`](crate::FactoryResult::serve) serves the
//! transport with it, and an application with a server of its own serves
//! [`PeerIncoming`] instead of a plain listener.

mod credentials;
mod dial;
mod incoming;

pub use credentials::{PeerCredentials, node_id_of};
pub use dial::dial;
pub use incoming::{
    HANDSHAKE_TIMEOUT, MAX_PENDING_HANDSHAKES, MAX_PENDING_HANDSHAKES_PER_IP, PeerConn,
    PeerIncoming, PeerInfo, PeerLimits,
};

use std::path::PathBuf;

/// The URI prefix of the subject alternative name that binds a certificate
/// to a node id.
pub const NODE_ID_URI_PREFIX: &str = "urn:raftengine:node:";

/// The URI subject alternative name a certificate for node `id` carries.
///
/// ```
/// assert_eq!(raftengine::tls::node_id_uri("n1"), "urn:raftengine:node:n1");
/// ```
pub fn node_id_uri(id: &str) -> String {
    format!("{NODE_ID_URI_PREFIX}{id}")
}

/// How this node's peer transport authenticates.
///
/// # Contract
///
/// There is no default: a [`FactoryConfig`](crate::FactoryConfig) without
/// one is refused with `InvalidConfig`, so plaintext is always a choice
/// someone wrote down. With [`PeerSecurity::Tls`] a node refuses plaintext
/// connections and calls from a certificate that names no node id or
/// another sender than the message claims; with
/// [`PeerSecurity::Plaintext`] it logs a warning at start.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerSecurity {
    /// Mutual TLS against a CA, the node id bound to each certificate.
    Tls(PeerTls),
    /// No authentication and no encryption: anyone who can reach the port
    /// can speak as any member. For tests and closed networks only.
    Plaintext,
}

/// Where this node's TLS material lies (PEM files).
///
/// # Contract
///
/// `cert_file` holds this node's certificate (then any intermediates),
/// which must name the node's id ([`node_id_uri`]) and chain to a
/// certificate in `ca_file`; `key_file` holds its private key (PKCS#8,
/// PKCS#1 or SEC1). The files are checked when the engine is created and
/// read again for every new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerTls {
    /// The CA certificates peers' certificates must chain to.
    pub ca_file: PathBuf,
    /// This node's certificate chain.
    pub cert_file: PathBuf,
    /// This node's private key.
    pub key_file: PathBuf,
}

impl PeerTls {
    /// The three PEM files.
    pub fn new(
        ca_file: impl Into<PathBuf>,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        PeerTls {
            ca_file: ca_file.into(),
            cert_file: cert_file.into(),
            key_file: key_file.into(),
        }
    }
}
