//! [`NetAdapterConfig`]: where a node listens, whom it dials, who it is and what it stores.

use crate::frame::{Capabilities, ShardRange, MAX_RANGES, MAX_TAGS, MAX_TAG_LEN};
use crate::identity::{EntityKeypair, NodeId};
use net_adapter::Adapter;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// The longest any timeout, interval or window may be (one day): longer ones would
/// overflow deadline arithmetic long before they meant anything.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400);
/// The largest queue, slot or replica count a setting may ask for.
pub const MAX_COUNT: usize = 1 << 20;
/// The largest `max_frame` a node may accept (1 GiB).
pub const MAX_FRAME_LIMIT: usize = 1 << 30;

/// What `on_batch` and `poll_shard` do when no connected peer stores the shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoPeerPolicy {
    /// Return [`AdapterError::Connection`](net_adapter::AdapterError::Connection), which the
    /// bus retries with backoff: a storing peer may connect (or reconnect) later. The default.
    #[default]
    Retry,
    /// Return [`AdapterError::Fatal`](net_adapter::AdapterError::Fatal): the batch is dropped
    /// (and counted) at once.
    Fatal,
}

/// Settings of a [`NetAdapter`](crate::NetAdapter).
///
/// Build it from [`NetAdapterConfig::default`] with the setters, or set the public fields.
/// Addresses given as text to [`NetAdapterConfig::listen`] and [`NetAdapterConfig::peer`]
/// are parsed (or resolved) at once; one that does not parse is reported by
/// [`NetAdapterConfig::validate`] and when the adapter starts.
#[derive(Clone)]
pub struct NetAdapterConfig {
    /// Where to accept connections from peers. `None`: dial only.
    pub listen: Option<SocketAddr>,
    /// Peers to dial, and to redial with backoff whenever the session drops.
    pub peers: Vec<SocketAddr>,
    /// This node's identity. `None`: a fresh keypair is generated at start (the node id then
    /// changes on every start, which is fine without an allow-list).
    pub keypair: Option<EntityKeypair>,
    /// Pre-shared key: peers must hold the same key to complete the handshake.
    pub psk: Option<[u8; 32]>,
    /// When set, only these node ids may be peers (both directions).
    pub allow: Option<Vec<NodeId>>,
    /// The shards this node stores for its peers (announced after each handshake). Empty:
    /// it stores nothing and only forwards.
    pub stores: Vec<ShardRange>,
    /// Tags announced with the capabilities (`durable`, `region=eu`, ...).
    pub tags: Vec<String>,
    /// Where this node stores what peers send it. `None`: a `MemoryAdapter`.
    pub storage: Option<Arc<dyn Adapter>>,
    /// How many covering peers must accept each batch before `on_batch` succeeds.
    pub replication: usize,
    /// What happens when no connected peer stores a shard.
    pub no_peer: NoPeerPolicy,
    /// How long a request (a batch or a poll) to a peer may take.
    pub request_timeout: Duration,
    /// How long this node's storage may take to answer a peer's request.
    pub storage_timeout: Duration,
    /// How long a handshake may take, counted from the TCP connection and including both
    /// sides' `Hello`.
    pub handshake_timeout: Duration,
    /// How long the listener waits for a new connection's first complete handshake message.
    /// An honest dialer sends it as soon as TCP connects.
    pub first_message_timeout: Duration,
    /// How often an idle session is pinged.
    pub ping_interval: Duration,
    /// A session that receives nothing for this long is closed.
    pub idle_timeout: Duration,
    /// First delay before redialing a peer; doubled after each failure.
    pub reconnect_min: Duration,
    /// Longest delay between redials.
    pub reconnect_max: Duration,
    /// Frames queued per session before senders wait (and time out with backpressure).
    pub send_queue: usize,
    /// Requests a peer may have in progress at this node at once; more are answered with
    /// backpressure.
    pub max_inflight: usize,
    /// Largest frame accepted from a peer, after reassembly.
    pub max_frame: usize,
    /// Records sent before switching to a new key.
    pub rekey_after: u64,
    /// Plaintext bytes sent before switching to a new key (whichever limit comes first).
    pub rekey_after_bytes: u64,
    /// Connections the listener holds in their handshake at once, from all addresses. The
    /// listener keeps accepting when they are all taken: a newcomer evicts the connection
    /// that made the least progress (see `docs/mesh-protocol.md`, §3.5).
    pub max_handshakes: usize,
    /// Connections in their handshake at once from one IP address; a newcomer from an
    /// address at this cap evicts that address's least advanced connection.
    pub max_handshakes_per_addr: usize,
    /// How long this node retries a peer's batch against its own storage while the storage
    /// answers with retryable errors (a broker restarting) before it answers the peer with
    /// the error. Zero: one attempt.
    pub storage_retry_window: Duration,
    invalid: Vec<String>,
}

impl Default for NetAdapterConfig {
    fn default() -> Self {
        Self {
            listen: None,
            peers: Vec::new(),
            keypair: None,
            psk: None,
            allow: None,
            stores: Vec::new(),
            tags: Vec::new(),
            storage: None,
            replication: 1,
            no_peer: NoPeerPolicy::Retry,
            request_timeout: Duration::from_secs(10),
            storage_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(5),
            first_message_timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(20),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            send_queue: 1024,
            max_inflight: 256,
            max_frame: 64 << 20,
            rekey_after: 1 << 20,
            rekey_after_bytes: 16 << 30,
            max_handshakes: 256,
            max_handshakes_per_addr: 32,
            storage_retry_window: Duration::ZERO,
            invalid: Vec::new(),
        }
    }
}

impl fmt::Debug for NetAdapterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetAdapterConfig")
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("keypair", &self.keypair)
            .field("psk", &self.psk.map(|_| "<set>"))
            .field("allow", &self.allow)
            .field("stores", &self.stores)
            .field("tags", &self.tags)
            .field(
                "storage",
                &self.storage.as_ref().map(|s| s.name().to_owned()),
            )
            .field("replication", &self.replication)
            .field("no_peer", &self.no_peer)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

fn parse_addr(text: &str) -> Option<SocketAddr> {
    text.parse()
        .ok()
        .or_else(|| text.to_socket_addrs().ok().and_then(|mut a| a.next()))
}

impl NetAdapterConfig {
    /// Listens on `addr` (`"0.0.0.0:7777"`, `"127.0.0.1:0"` for any free port).
    pub fn listen(mut self, addr: impl AsRef<str>) -> Self {
        match parse_addr(addr.as_ref()) {
            Some(a) => self.listen = Some(a),
            None => self.invalid.push(addr.as_ref().to_owned()),
        }
        self
    }

    /// Adds a peer to dial.
    pub fn peer(mut self, addr: impl AsRef<str>) -> Self {
        match parse_addr(addr.as_ref()) {
            Some(a) => self.peers.push(a),
            None => self.invalid.push(addr.as_ref().to_owned()),
        }
        self
    }

    /// Sets the node's identity.
    pub fn keypair(mut self, keypair: EntityKeypair) -> Self {
        self.keypair = Some(keypair);
        self
    }

    /// Requires peers to hold this pre-shared key.
    pub fn psk(mut self, psk: [u8; 32]) -> Self {
        self.psk = Some(psk);
        self
    }

    /// Accepts only these node ids as peers.
    pub fn allow(mut self, ids: impl IntoIterator<Item = NodeId>) -> Self {
        self.allow = Some(ids.into_iter().collect());
        self
    }

    /// Stores (for peers) the shards of `range`, in addition to any set before.
    pub fn stores(mut self, range: ShardRange) -> Self {
        self.stores.push(range);
        self
    }

    /// Adds a capability tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Stores peers' batches in `adapter` instead of a `MemoryAdapter`.
    pub fn storage(mut self, adapter: Arc<dyn Adapter>) -> Self {
        self.storage = Some(adapter);
        self
    }

    /// Requires `n` covering peers to accept every batch (at least 1).
    pub fn replication(mut self, n: usize) -> Self {
        self.replication = n;
        self
    }

    /// Sets the policy when no peer stores a shard.
    pub fn no_peer(mut self, policy: NoPeerPolicy) -> Self {
        self.no_peer = policy;
        self
    }

    /// Sets the request timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The capabilities this node announces.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            shards: self.stores.clone(),
            tags: self.tags.clone(),
        }
    }

    /// Checks the settings: addresses parsed, no zero where a positive value is needed.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(bad) = self.invalid.first() {
            return Err(format!("cannot parse or resolve address {bad:?}"));
        }
        let durations = [
            ("request_timeout", self.request_timeout),
            ("storage_timeout", self.storage_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("first_message_timeout", self.first_message_timeout),
            ("ping_interval", self.ping_interval),
            ("idle_timeout", self.idle_timeout),
            ("reconnect_max", self.reconnect_max),
        ];
        for (name, value) in durations {
            if value.is_zero() {
                return Err(format!("{name} must be positive"));
            }
        }
        if self.idle_timeout <= self.ping_interval {
            return Err("idle_timeout must be longer than ping_interval".into());
        }
        let counts = [
            ("replication", self.replication as u64),
            ("send_queue", self.send_queue as u64),
            ("max_inflight", self.max_inflight as u64),
            ("max_handshakes", self.max_handshakes as u64),
            (
                "max_handshakes_per_addr",
                self.max_handshakes_per_addr as u64,
            ),
            ("rekey_after", self.rekey_after),
            ("rekey_after_bytes", self.rekey_after_bytes),
        ];
        for (name, value) in counts {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        let bounded = [
            ("request_timeout", self.request_timeout),
            ("storage_timeout", self.storage_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("first_message_timeout", self.first_message_timeout),
            ("ping_interval", self.ping_interval),
            ("idle_timeout", self.idle_timeout),
            ("reconnect_min", self.reconnect_min),
            ("reconnect_max", self.reconnect_max),
            ("storage_retry_window", self.storage_retry_window),
        ];
        for (name, value) in bounded {
            if value > MAX_DURATION {
                return Err(format!(
                    "{name} must be at most {} s",
                    MAX_DURATION.as_secs()
                ));
            }
        }
        let capped = [
            ("replication", self.replication, MAX_COUNT),
            ("send_queue", self.send_queue, MAX_COUNT),
            ("max_inflight", self.max_inflight, MAX_COUNT),
            ("max_handshakes", self.max_handshakes, MAX_COUNT),
            (
                "max_handshakes_per_addr",
                self.max_handshakes_per_addr,
                MAX_COUNT,
            ),
        ];
        for (name, value, max) in capped {
            if value > max {
                return Err(format!("{name} must be at most {max}"));
            }
        }
        if self.max_frame > MAX_FRAME_LIMIT {
            return Err(format!("max_frame must be at most {MAX_FRAME_LIMIT} bytes"));
        }
        if self.max_frame < 1024 {
            return Err("max_frame must be at least 1024 bytes".into());
        }
        if self.stores.len() > MAX_RANGES {
            return Err(format!(
                "at most {MAX_RANGES} shard ranges can be announced"
            ));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(format!("at most {MAX_TAGS} tags can be announced"));
        }
        if let Some(tag) = self.tags.iter().find(|t| t.len() > MAX_TAG_LEN) {
            return Err(format!("tag {tag:?} is longer than {MAX_TAG_LEN} bytes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_parses_addresses() {
        let c = NetAdapterConfig::default()
            .listen("0.0.0.0:7777")
            .peer("10.0.0.2:7777");
        assert_eq!(c.listen, Some("0.0.0.0:7777".parse().unwrap()));
        assert_eq!(c.peers, vec!["10.0.0.2:7777".parse().unwrap()]);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn invalid_settings_are_reported() {
        let check = |c: NetAdapterConfig, needle: &str| {
            let e = c.validate().unwrap_err();
            assert!(e.contains(needle), "{e}");
        };
        check(
            NetAdapterConfig::default().peer("not an address"),
            "not an address",
        );
        check(NetAdapterConfig::default().replication(0), "replication");
        check(
            NetAdapterConfig::default().request_timeout(Duration::ZERO),
            "request_timeout",
        );
        let mut c = NetAdapterConfig::default();
        c.idle_timeout = c.ping_interval;
        check(c, "idle_timeout");
        check(
            NetAdapterConfig::default().tag("x".repeat(300)),
            "longer than",
        );
        // Huge values are refused before anything uses them.
        check(
            NetAdapterConfig::default().request_timeout(Duration::MAX),
            "request_timeout must be at most",
        );
        let huge_queue = NetAdapterConfig {
            send_queue: usize::MAX,
            ..Default::default()
        };
        check(huge_queue, "send_queue must be at most");
        let no_slots = NetAdapterConfig {
            max_handshakes_per_addr: 0,
            ..Default::default()
        };
        check(no_slots, "max_handshakes_per_addr");
        let endless = NetAdapterConfig {
            storage_retry_window: Duration::from_secs(u64::MAX),
            ..Default::default()
        };
        check(endless, "storage_retry_window");
    }

    #[test]
    fn debug_hides_the_psk() {
        let c = NetAdapterConfig::default().psk([0x5a; 32]);
        let text = format!("{c:?}");
        assert!(!text.contains("90"), "{text}");
        assert!(text.contains("<set>"));
    }
}
