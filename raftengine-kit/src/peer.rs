//! What every backend's peer transport does the same way: the client
//! endpoint's defaults and the removed-node notice's delivery.
//!
//! The wire messages stay each backend's own (their payload encodings
//! differ on purpose); these helpers take the call as a closure.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use tonic::transport::Endpoint;

/// HTTP/2 keepalive pings on a peer connection, so a half-open TCP
/// connection (a peer that lost power) is noticed without waiting for a
/// write to time out.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// The client endpoint for the peer at `address` (`host:port`): connect
/// deadline `connect_timeout`, `TCP_NODELAY` (Raft messages are small and
/// latency-bound), keepalive pings every 5 s answered within
/// `connect_timeout`, also while idle. `local_ip` binds the connection's
/// source address (tests tell links apart by it); `None` lets the OS pick.
///
/// Returns `None` when `address` does not make a URI (addresses are
/// checked with [`raftengine::check_address`] before they get here).
///
/// ```
/// let e = raftengine_kit::peer::endpoint("127.0.0.1:7001", std::time::Duration::from_secs(1), None);
/// assert_eq!(e.map(|e| e.uri().to_string()), Some("http://127.0.0.1:7001/".to_owned()));
/// ```
pub fn endpoint(
    address: &str,
    connect_timeout: Duration,
    local_ip: Option<IpAddr>,
) -> Option<Endpoint> {
    let endpoint = Endpoint::from_shared(format!("http://{address}")).ok()?;
    Some(
        endpoint
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .local_address(local_ip)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(connect_timeout)
            .keep_alive_while_idle(true),
    )
}

/// How many times the removed-node notice is tried before the leader gives
/// up (the removed node then stays up until its operator stops it).
pub const REMOVED_NOTICE_ATTEMPTS: usize = 30;

/// Delivers the removed-node notice: `call` is tried up to
/// [`REMOVED_NOTICE_ATTEMPTS`] times, each within `deadline` and `deadline`
/// apart, until the peer accepts it or refuses it as not meant for it
/// (`InvalidArgument`: it is another node now, or the notice is stale).
/// Logs the outcome for `removed_id` and returns whether the peer accepted
/// it.
///
/// # Cancel safety
///
/// Dropping the future stops the retries; a call in flight may still land.
pub async fn deliver_removed_notice<F, Fut, T>(
    removed_id: &str,
    deadline: Duration,
    mut call: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    for _ in 0..REMOVED_NOTICE_ATTEMPTS {
        match tokio::time::timeout(deadline, call()).await {
            Ok(Ok(_)) => {
                tracing::info!(node = %removed_id, "removed node notified");
                return true;
            }
            Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => break,
            _ => tokio::time::sleep(deadline).await,
        }
    }
    tracing::info!(node = %removed_id, "removed node did not take the notice; it stays up until stopped");
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_notice_is_retried_until_accepted() {
        let tries = AtomicUsize::new(0);
        let accepted = deliver_removed_notice("n9", Duration::from_millis(2), || {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    Err(tonic::Status::unavailable("down"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(accepted);
        assert_eq!(tries.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_refused_notice_is_not_retried_and_retries_are_bounded() {
        let tries = AtomicUsize::new(0);
        let refused = deliver_removed_notice("n9", Duration::from_millis(2), || {
            tries.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(tonic::Status::invalid_argument("not me")) }
        })
        .await;
        assert!(!refused);
        assert_eq!(tries.load(Ordering::SeqCst), 1);

        let tries = AtomicUsize::new(0);
        let silent = deliver_removed_notice("n9", Duration::from_millis(2), || {
            tries.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<(), tonic::Status>>()
        })
        .await;
        assert!(!silent);
        assert_eq!(tries.load(Ordering::SeqCst), REMOVED_NOTICE_ATTEMPTS);
    }

    #[test]
    fn a_bad_address_makes_no_endpoint() {
        assert!(endpoint("bad address with spaces", Duration::from_secs(1), None).is_none());
    }
}
