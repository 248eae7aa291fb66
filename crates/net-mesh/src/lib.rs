//! The encrypted mesh transport of the net event bus.
//!
//! Nodes talk over TCP through Noise sessions (`Noise_XX_25519_ChaChaPoly_BLAKE2s`, or its
//! `XXpsk3` variant with a pre-shared key). Each node has an ed25519 identity
//! ([`EntityKeypair`]) that signs its Noise static key and the handshake hash, so a peer
//! knows which node it talks to, and an allow-list can restrict who may connect.
//!
//! The crate has two layers:
//!
//! - a sans-I/O protocol core (the private `session` and `frame` modules, public only with
//!   the `fuzzing` feature; [`Session`] is exported): the handshake state machine, framing,
//!   fragmentation and reassembly, rekeying; bytes in, frames and bytes out, no sockets and
//!   no clock, so it is unit-tested and fuzzed in memory;
//! - a tokio driver that runs sessions over TCP, and [`NetAdapter`], the bus adapter on top.
//!
//! The wire protocol is specified in `docs/mesh-protocol.md`.
//!
//! # Example
//!
//! A node that stores every shard, and a node that sends it a batch and reads it back:
//!
//! ```
//! use net_adapter::{Adapter, Batch, BatchEvent};
//! use net_mesh::{EntityKeypair, NetAdapter, NetAdapterConfig, ShardRange};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let psk = [7u8; 32];
//! let storage = NetAdapter::new(
//!     NetAdapterConfig::default()
//!         .listen("127.0.0.1:0")
//!         .keypair(EntityKeypair::generate()?)
//!         .psk(psk)
//!         .stores(ShardRange::ALL)
//!         .tag("memory"),
//! )?;
//! storage.start().await?;
//!
//! let client = NetAdapter::new(
//!     NetAdapterConfig::default()
//!         .peer(storage.local_addr().unwrap().to_string())
//!         .psk(psk)
//!         .allow([storage.node_id()]),
//! )?;
//! client.start().await?;
//! assert!(client.wait_for_coverage(0, 1, Duration::from_secs(5)).await);
//!
//! let batch = Batch {
//!     shard_id: 0,
//!     events: vec![BatchEvent { raw: r#"{"hello":"mesh"}"#.into(), insertion_ts: 1, shard_id: 0 }],
//!     sequence_start: 0,
//!     process_nonce: 42,
//! };
//! client.on_batch(Arc::new(batch)).await?; // returns once the storage node stored it
//! let page = client.poll_shard(0, None, 10).await?;
//! assert_eq!(&page.events[0].raw[..], br#"{"hello":"mesh"}"#);
//! # Ok(())
//! # }
//! ```

mod adapter;
mod admission;
mod config;
#[cfg(feature = "fuzzing")]
pub mod connection;
#[cfg(not(feature = "fuzzing"))]
#[allow(unreachable_pub)]
mod connection;
#[cfg(feature = "fuzzing")]
pub mod frame;
// Its items are public for the `fuzzing` build; without it only the re-exports below are.
#[cfg(not(feature = "fuzzing"))]
#[allow(unreachable_pub)]
mod frame;
mod identity;
mod node;
#[cfg(feature = "fuzzing")]
pub mod session;
#[cfg(not(feature = "fuzzing"))]
#[allow(unreachable_pub)]
mod session;

pub use adapter::{MeshError, NetAdapter, NodeStats, PeerInfo};
pub use config::{NetAdapterConfig, NoPeerPolicy, MAX_COUNT, MAX_DURATION, MAX_FRAME_LIMIT};
pub use frame::{Capabilities, ShardRange};
pub use identity::{EntityKeypair, IdentityError, NodeId};
pub use session::{Role, Session, SessionConfig, SessionError, SessionEvent};
