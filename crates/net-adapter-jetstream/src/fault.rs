//! The fault switch, a test hook compiled only with the `test-hooks` feature.
//!
//! A test makes the next batch of a shard fail after it was really stored, so a retry
//! exercises the server's dedup window. Without the feature neither the switch nor its lock
//! exist, and `on_batch` does not look for a fault at all.

use crate::connection::classify_publish;
use async_nats::jetstream::context::PublishErrorKind;
use net_adapter::AdapterError;
use parking_lot::Mutex;
use std::collections::HashMap;

/// A failure the next `on_batch` of one shard simulates after writing (a test hook, feature
/// `test-hooks`).
///
/// Set with [`JetStreamAdapter::inject_fault`](crate::JetStreamAdapter::inject_fault). The
/// batch is really published and acknowledged by the server; the adapter then reports the
/// failure through its own error classification, as if the acks had been lost, so a retry
/// exercises the server's dedup window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JetStreamFault {
    /// Report the connection as broken after every message was stored.
    AckLostAfterWrite,
    /// Report the acks as timed out after every message was stored.
    AckTimeoutAfterWrite,
}

/// The faults waiting for the next batch of their shard.
#[derive(Debug, Default)]
pub(crate) struct Faults(Mutex<HashMap<u16, JetStreamFault>>);

impl Faults {
    /// Arms `fault` for the next batch of `shard_id`.
    pub(crate) fn arm(&self, shard_id: u16, fault: JetStreamFault) {
        self.0.lock().insert(shard_id, fault);
    }

    /// Takes the fault armed for `shard_id`, as the error the adapter reports for it.
    pub(crate) fn take(&self, shard_id: u16) -> Option<AdapterError> {
        let fault = self.0.lock().remove(&shard_id)?;
        let kind = match fault {
            JetStreamFault::AckLostAfterWrite => PublishErrorKind::BrokenPipe,
            JetStreamFault::AckTimeoutAfterWrite => PublishErrorKind::TimedOut,
        };
        let what = format!("jetstream: injected fault on shard {shard_id}");
        Some(classify_publish(kind, &what, "injected"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_applies_once_to_its_shard() {
        let faults = Faults::default();
        faults.arm(3, JetStreamFault::AckLostAfterWrite);
        assert!(faults.take(2).is_none());
        let error = faults.take(3).expect("armed for shard 3");
        assert!(error.is_retryable(), "{error}");
        assert!(faults.take(3).is_none());
        faults.arm(3, JetStreamFault::AckTimeoutAfterWrite);
        let error = faults.take(3).expect("armed again");
        assert!(error.to_string().contains("ack timed out"), "{error}");
    }
}
