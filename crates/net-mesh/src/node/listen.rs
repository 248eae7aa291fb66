//! Accepting and dialing: the listener, which never stops accepting and holds connections
//! in their handshake in the bounded admission table, the dialers with backoff, and the
//! periodic summary of failed handshakes.

use super::Node;
use crate::admission::FailReason;
use crate::session::Role;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

impl Node {
    /// Logs the failed handshakes of each interval as one line, until shutdown.
    pub(super) async fn summarise_failures(self: Arc<Self>) {
        let mut stop = self.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(self.failures.interval()) => self.failures.flush(),
            }
        }
    }

    /// Accepts connections for as long as the node runs, never waiting for a free handshake
    /// place: admission makes room by evicting the least advanced handshake.
    pub(super) async fn listen(self: Arc<Self>, listener: TcpListener) {
        let mut stop = self.shutdown.subscribe();
        loop {
            let accepted = tokio::select! {
                _ = stop.changed() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, addr)) => {
                    let started = tokio::time::Instant::now();
                    let (ticket, evicted) = self.admission.admit(addr.ip());
                    for _ in 0..evicted {
                        self.failures.record(
                            FailReason::Evicted,
                            Some(addr),
                            "evicted by a newer connection (admission table full)",
                        );
                    }
                    let node = self.clone();
                    tokio::spawn(async move {
                        node.run_connection(stream, addr, Role::Responder, Some(ticket), started)
                            .await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors, most likely: evictions free some soon.
                    self.failures
                        .record(FailReason::Accept, None, &format!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    pub(super) async fn dial(self: Arc<Self>, addr: SocketAddr) {
        let mut stop = self.shutdown.subscribe();
        let mut delay = self.config.reconnect_min;
        loop {
            if *stop.borrow() {
                return;
            }
            let started = tokio::time::Instant::now();
            let connect =
                tokio::time::timeout(self.config.handshake_timeout, TcpStream::connect(addr));
            let established = tokio::select! {
                _ = stop.changed() => return,
                result = connect => match result {
                    Ok(Ok(stream)) => {
                        // The connection watches the shutdown signal itself.
                        self.clone()
                            .run_connection(stream, addr, Role::Initiator, None, started)
                            .await
                    }
                    Ok(Err(e)) => {
                        debug!(%addr, error = %e, "mesh dial failed");
                        false
                    }
                    Err(_) => {
                        debug!(%addr, "mesh dial timed out");
                        false
                    }
                },
            };
            if established {
                delay = self.config.reconnect_min;
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(self.config.reconnect_max);
        }
    }
}
