//! The encrypted mesh transport of the net event bus.
//!
//! Nodes talk over TCP through Noise sessions (`Noise_XX_25519_ChaChaPoly_BLAKE2s`, or its
//! `XXpsk3` variant with a pre-shared key). Each node has an ed25519 identity
//! ([`EntityKeypair`]) that signs its Noise static key and the handshake hash, so a peer
//! knows which node it talks to, and an allow-list can restrict who may connect.
//!
//! The crate has two layers:
//!
//! - a sans-I/O protocol core ([`session`], [`frame`]): the handshake state machine,
//!   framing, fragmentation and reassembly, rekeying; bytes in, frames and bytes out, no
//!   sockets and no clock, so it is unit-tested and fuzzed in memory;
//! - a tokio driver that runs sessions over TCP, and [`NetAdapter`], the bus adapter on top.
//!
//! The wire protocol is specified in `docs/mesh-protocol.md`.

mod adapter;
mod config;
pub mod frame;
mod identity;
mod node;
pub mod session;

pub use adapter::{MeshError, NetAdapter, PeerInfo};
pub use config::{NetAdapterConfig, NoPeerPolicy};
pub use frame::{Capabilities, ShardRange};
pub use identity::{EntityKeypair, IdentityError, NodeId};
pub use session::{Role, Session, SessionConfig, SessionError, SessionEvent};
