//! The client side of a TLS connection to a node: the one dialler both
//! backends' peer channels and applications' clients use.

use std::net::IpAddr;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

use super::PeerCredentials;
use crate::BoxError;

/// Connects to `host:port` (from `local_ip` if set, with `TCP_NODELAY`)
/// and completes a TLS handshake presenting `credentials`' certificate,
/// accepting the node's only if it chains to the CA and names a node id
/// for which `accepts` holds. The TCP connect and the handshake each get
/// `deadline`.
///
/// # Errors
///
/// No address resolves, the connection or the handshake fails or runs out
/// of time, or the node's certificate is refused.
///
/// # Cancel safety
///
/// Dropping the future closes whatever connection it opened.
pub async fn dial(
    credentials: &PeerCredentials,
    host: &str,
    port: u16,
    local_ip: Option<IpAddr>,
    deadline: Duration,
    accepts: impl Fn(&str) -> bool + Send + Sync + 'static,
) -> Result<TlsStream<TcpStream>, BoxError> {
    let tcp = tokio::time::timeout(deadline, connect_tcp(host, port, local_ip))
        .await
        .map_err(|_| format!("connect to {host}:{port} timed out after {deadline:?}"))??;
    let config = credentials.client_config(accepts).await?;
    // The verifier checks the node id, not a host name; the name is a
    // placeholder rustls requires.
    let name = rustls::pki_types::ServerName::try_from("raftengine-peer")
        .map_err(|e| format!("server name: {e}"))?;
    let tls = tokio::time::timeout(
        deadline,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| format!("TLS handshake with {host}:{port} timed out after {deadline:?}"))??;
    Ok(tls)
}

/// A TCP connection to `host:port`, from `local_ip` if set, with
/// `TCP_NODELAY`.
async fn connect_tcp(
    host: &str,
    port: u16,
    local_ip: Option<IpAddr>,
) -> std::io::Result<TcpStream> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut last = std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("no address for {host}:{port}"),
    );
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = local_ip {
            socket.bind(std::net::SocketAddr::new(ip, 0))?;
        }
        match socket.connect(addr).await {
            Ok(tcp) => {
                tcp.set_nodelay(true)?;
                return Ok(tcp);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}
