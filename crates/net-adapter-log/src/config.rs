//! [`LogAdapterConfig`]: where the log lives, how big its segments grow, when it syncs and
//! what it keeps.

use crate::LogError;
use std::path::PathBuf;
use std::time::Duration;

/// The smallest segment size [`LogAdapterConfig::validate`] accepts.
pub const MIN_SEGMENT_BYTES: u64 = 4 * 1024;

/// The largest segment size [`LogAdapterConfig::validate`] accepts. Sparse index positions
/// are 32-bit, and one batch may overshoot a segment by up to [`MAX_BATCH_BYTES`].
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;

/// The most bytes one batch may take once framed; a larger batch is refused whole.
pub const MAX_BATCH_BYTES: u64 = 1 << 31;

/// When the log syncs what it wrote to the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// `on_batch` returns `Ok` only after `fdatasync`: an acknowledged batch survives a power
    /// loss. The default.
    #[default]
    EveryBatch,
    /// A background thread syncs dirty segments at this period: a power loss may take the
    /// batches of the last period; a killed process loses nothing the OS accepted.
    Interval(Duration),
    /// The OS writes back when it likes: a killed process loses nothing, a power loss may
    /// lose everything not yet written back.
    Never,
}

/// What each shard keeps. Enforced in the background by deleting whole sealed segments,
/// oldest first; `None` means no limit of that kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Keep at least this many of the newest events per shard; older whole segments go.
    pub max_events: Option<u64>,
    /// Keep at least this many bytes of the newest segments per shard; older ones go.
    pub max_bytes: Option<u64>,
    /// Delete a segment once its newest event is older than this (by insertion timestamp).
    pub max_age: Option<Duration>,
    /// How often the background thread checks every shard.
    pub check_interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_events: None,
            max_bytes: None,
            max_age: None,
            check_interval: Duration::from_secs(10),
        }
    }
}

impl Retention {
    /// No limit: the log keeps everything (the default).
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// Keeps at least the newest `n` events per shard.
    pub fn max_events(mut self, n: u64) -> Self {
        self.max_events = Some(n);
        self
    }

    /// Keeps at least the newest `n` bytes of segments per shard.
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = Some(n);
        self
    }

    /// Drops segments whose newest event is older than `age`.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Sets how often retention is checked.
    pub fn check_interval(mut self, every: Duration) -> Self {
        self.check_interval = every;
        self
    }

    /// True when some limit is set.
    pub fn is_limited(&self) -> bool {
        self.max_events.is_some() || self.max_bytes.is_some() || self.max_age.is_some()
    }
}

/// Settings of a [`LogAdapter`](crate::LogAdapter). Build with [`LogAdapterConfig::new`] and
/// the setters; [`LogAdapterConfig::validate`] (called by `open`) refuses absurd values.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogAdapterConfig {
    /// The log's directory; created when missing.
    pub dir: PathBuf,
    /// A segment is sealed and a new one started once the next batch would take it past this
    /// many bytes (64 MiB by default).
    pub segment_bytes: u64,
    /// When written data is synced to the disk.
    pub fsync: FsyncPolicy,
    /// What each shard keeps.
    pub retention: Retention,
}

impl LogAdapterConfig {
    /// A log in `dir` with 64 MiB segments, a sync per batch and no retention limit.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 64 << 20,
            fsync: FsyncPolicy::EveryBatch,
            retention: Retention::default(),
        }
    }

    /// Sets the segment size in bytes.
    pub fn segment_bytes(mut self, n: u64) -> Self {
        self.segment_bytes = n;
        self
    }

    /// Sets the sync policy.
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.fsync = policy;
        self
    }

    /// Sets the retention.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Refuses settings that cannot work: an empty path, a segment size outside
    /// [`MIN_SEGMENT_BYTES`]..=[`MAX_SEGMENT_BYTES`], a zero or huge sync interval or
    /// retention check interval, a zero retention limit.
    pub fn validate(&self) -> Result<(), LogError> {
        let bad = |why: String| Err(LogError::Config(why));
        if self.dir.as_os_str().is_empty() {
            return bad("the log directory path is empty".into());
        }
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return bad(format!(
                "segment_bytes {} is outside {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}",
                self.segment_bytes
            ));
        }
        let day = Duration::from_secs(86_400);
        if let FsyncPolicy::Interval(every) = self.fsync {
            if every.is_zero() || every > day {
                return bad(format!(
                    "fsync interval {every:?} must be above zero and at most a day"
                ));
            }
        }
        let r = &self.retention;
        if r.check_interval.is_zero() || r.check_interval > day {
            return bad(format!(
                "retention check_interval {:?} must be above zero and at most a day",
                r.check_interval
            ));
        }
        if r.max_events == Some(0) || r.max_bytes == Some(0) || r.max_age == Some(Duration::ZERO) {
            return bad("a retention limit of zero would delete every event".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(config: LogAdapterConfig, expected: Result<(), &str>) {
        match (config.validate(), expected) {
            (Ok(()), Ok(())) => {}
            (Err(LogError::Config(why)), Err(want)) => assert!(why.contains(want), "{why}"),
            (got, want) => panic!("{config:?}: got {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn validation() {
        let base = || LogAdapterConfig::new("/tmp/x");
        check(base(), Ok(()));
        check(LogAdapterConfig::new(""), Err("empty"));
        check(base().segment_bytes(0), Err("segment_bytes 0"));
        check(base().segment_bytes(4095), Err("segment_bytes"));
        check(base().segment_bytes(4096), Ok(()));
        check(base().segment_bytes(1 << 30), Ok(()));
        check(base().segment_bytes((1 << 30) + 1), Err("segment_bytes"));
        check(base().segment_bytes(u64::MAX), Err("segment_bytes"));
        check(
            base().fsync(FsyncPolicy::Interval(Duration::ZERO)),
            Err("fsync interval"),
        );
        check(
            base().fsync(FsyncPolicy::Interval(Duration::from_millis(5))),
            Ok(()),
        );
        check(
            base().fsync(FsyncPolicy::Interval(Duration::MAX)),
            Err("fsync interval"),
        );
        check(
            base().retention(Retention::default().check_interval(Duration::ZERO)),
            Err("check_interval"),
        );
        check(
            base().retention(Retention::default().max_events(0)),
            Err("zero"),
        );
        check(
            base().retention(Retention::default().max_bytes(0)),
            Err("zero"),
        );
        check(
            base().retention(Retention::default().max_age(Duration::ZERO)),
            Err("zero"),
        );
        check(
            base().retention(Retention::default().max_events(1).max_bytes(1)),
            Ok(()),
        );
    }
}
