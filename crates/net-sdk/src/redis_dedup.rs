//! [`RedisStreamDedup`]: the consumer-side dedup filter for the Redis adapter.

/// A bounded seen-set of dedup ids for events read from Redis Streams: the generic
/// [`crate::Dedup`] under the name the Redis adapter's documentation uses.
///
/// The Redis adapter's default (script) write path never stores a retried batch twice, but
/// its `MULTI`/`EXEC` path can: a retry after a timed-out `EXEC` that did run on the server
/// writes the batch again, and consumers see each of those events twice. Passing what a
/// consumer reads through this filter drops the second copy.
///
/// # Sizing
///
/// > capacity ≥ peak events per second × out-of-order tolerance in seconds
///
/// For the `MULTI`/`EXEC` path the tolerance is about the bus's longest retry delay plus the
/// command timeout: 20 000 events/s with copies at most 2 s apart needs a capacity of at least
/// 40 000. The default is 4096.
///
/// ```
/// use net_sdk::RedisStreamDedup;
///
/// let mut dedup = RedisStreamDedup::with_capacity(40_000);
/// assert!(dedup.is_new("1f:0:0:0"));
/// assert!(!dedup.is_new("1f:0:0:0"));
/// assert_eq!(dedup.dropped(), 1);
/// ```
pub type RedisStreamDedup = crate::Dedup;
