//! [`TransportServer`]: serving an engine's transport on its own listener.

use std::net::SocketAddr;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::Routes;

use crate::error::{Error, Result};
use crate::tls::{PeerCredentials, PeerIncoming, PeerLimits};

/// A tonic server running an engine's transport on a listener of its own.
///
/// Dropping it stops the server (in-flight calls are cut); prefer
/// [`TransportServer::shutdown`], which waits for it to stop.
#[derive(Debug)]
#[must_use = "dropping a TransportServer stops the transport at once; keep it for as long as the node serves"]
pub struct TransportServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::result::Result<(), tonic::transport::Error>>>,
}

impl TransportServer {
    /// Serves `routes` on `listener` in a new task, through
    /// [`PeerIncoming`] (TLS with `credentials`, plaintext without).
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if the listener's address cannot be read.
    pub fn spawn(
        routes: Routes,
        listener: tokio::net::TcpListener,
        credentials: Option<PeerCredentials>,
        limits: PeerLimits,
    ) -> Result<Self> {
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::transport("read listener address", e))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = PeerIncoming::new(listener, credentials, limits);
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .max_concurrent_streams(Some(limits.max_concurrent_streams))
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(TransportServer {
            local_addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets in-flight calls finish for up to
    /// [`TransportServer::SHUTDOWN_GRACE`], then cuts the rest and waits.
    ///
    /// The grace period is bounded because peers keep long-lived streams
    /// open (pipelined appends) that would otherwise hold the server forever.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if the server failed while running.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        let joined = match tokio::time::timeout(Self::SHUTDOWN_GRACE, &mut task).await {
            Ok(joined) => joined,
            Err(_) => {
                task.abort();
                return Ok(());
            }
        };
        match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::transport("transport server failed", e)),
            Err(e) => Err(Error::transport("transport server task failed", e)),
        }
    }

    /// How long [`TransportServer::shutdown`] lets in-flight calls finish.
    pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
}

impl Drop for TransportServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
