//! The kv client's side of the API port's mutual TLS (`kv serve
//! --api-tls`): each connection presents the client's certificate and
//! accepts the node's only if it chains to the cluster CA and names a node
//! id. The node serves the API with its peer credentials, so a client
//! needs a certificate from the same CA (`kv gen-certs --out certs
//! <client-id>`).

use std::time::Duration;

use raftengine::tls::PeerCredentials;
use tonic::transport::{Channel, Endpoint, Uri};

/// A channel to the API at `address`: in plaintext without `credentials`,
/// with mutual TLS with them. Connecting takes at most `connect_timeout`
/// (TCP and TLS handshake each), every call at most `timeout`.
///
/// # Errors
///
/// The address does not make a URI, or the connection fails.
pub async fn connect(
    address: &str,
    credentials: Option<&PeerCredentials>,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("{address}: {e}"))?
        .connect_timeout(connect_timeout)
        .timeout(timeout);
    let Some(credentials) = credentials.cloned() else {
        return endpoint
            .connect()
            .await
            .map_err(|e| format!("connect {address}: {e}"));
    };
    let connector = tower::service_fn(move |uri: Uri| {
        let credentials = credentials.clone();
        async move {
            let host = uri.host().ok_or_else(|| format!("no host in {uri}"))?;
            let port = uri.port_u16().ok_or_else(|| format!("no port in {uri}"))?;
            // Any member may answer: the client follows leader hints.
            let tls =
                raftengine::tls::dial(&credentials, host, port, None, connect_timeout, |_| true)
                    .await?;
            Ok::<_, raftengine::BoxError>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("connect {address}: {e}"))
}
