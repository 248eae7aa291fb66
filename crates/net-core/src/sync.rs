//! The atomics of the producer/worker handshakes, from std or, under `cfg(loom)`, from loom.
//!
//! The handshakes themselves live in `shard` (reservations and wake-ups) and `state` (the
//! closing bit and routing version); their loom models sit beside them. Only the types those
//! models exercise come from here, so a `--cfg loom` build swaps exactly the memory the
//! models check. Build and run the models with
//! `RUSTFLAGS="--cfg loom" cargo test -p net-core --lib loom --release` (or `cargo xtask loom`).
//!
//! loom treats a `SeqCst` load, store or read-modify-write as `AcqRel`, but models a
//! `SeqCst` fence exactly. The handshakes are therefore written with one `fence(SeqCst)` on
//! each side, so that what loom checks is the reasoning the code relies on.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, Ordering};
