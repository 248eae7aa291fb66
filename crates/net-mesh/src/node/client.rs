//! The requesting side of a session: [`Link`], an established session as the adapter sees
//! it, and the reply slots of the requests it sent.

use crate::frame::{Capabilities, Frame, RemoteError};
use crate::identity::NodeId;
use net_adapter::{AdapterError, ShardPollResult};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A reply to a request this node sent.
pub(crate) enum Reply {
    Ack(Result<(), RemoteError>),
    Page(Result<ShardPollResult, RemoteError>),
}

/// An established session with a peer, as the adapter sees it.
pub(crate) struct Link {
    pub(crate) id: NodeId,
    pub(crate) capabilities: Capabilities,
    pub(crate) addr: SocketAddr,
    /// Tells this connection apart from a later one with the same peer.
    pub(super) connection: u64,
    /// The session's bounded frame queue.
    pub(super) tx: mpsc::Sender<Frame>,
    /// Reply slots of the requests in flight, by request id.
    pub(super) pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
}

impl Link {
    /// Sends the request `build` makes around the id `request` and waits for its reply,
    /// for at most `timeout` to queue it and `timeout` for the answer.
    pub(super) async fn request(
        &self,
        request: u64,
        timeout: Duration,
        build: impl FnOnce(u64) -> Frame,
    ) -> Result<Reply, AdapterError> {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(request, tx);
        let guard = PendingGuard {
            link: self,
            request,
        };
        match tokio::time::timeout(timeout, self.tx.send(build(request))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(AdapterError::Connection(format!(
                    "session with peer {} closed",
                    self.id.short()
                )))
            }
            Err(_) => return Err(AdapterError::Backpressure),
        }
        let reply = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(AdapterError::Connection(format!(
                "session with peer {} closed before it replied",
                self.id.short()
            ))),
            Err(_) => Err(AdapterError::Transient(format!(
                "peer {} did not reply within {timeout:?}",
                self.id.short()
            ))),
        };
        drop(guard);
        reply
    }
}

/// Removes a request's reply slot however the request ends (reply, timeout, cancellation).
struct PendingGuard<'a> {
    link: &'a Link,
    request: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.link.pending.lock().remove(&self.request);
    }
}
