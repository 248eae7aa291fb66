//! [`LogError`]: what can go wrong with the log's directory and files, and how it maps to the
//! bus's [`AdapterError`] classification.

use net_adapter::AdapterError;
use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// What went wrong in the durable log.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LogError {
    /// The settings cannot work.
    #[error("invalid log configuration: {0}")]
    Config(String),
    /// Another process (or another adapter in this one) has the directory open.
    #[error(
        "log directory {} is in use by another process (its LOCK file is held); \
         stop that process or use another directory",
        path.display()
    )]
    Locked {
        /// The log directory.
        path: PathBuf,
    },
    /// The manifest was written by a newer version of this crate.
    #[error(
        "manifest {} has format {found}; this version reads format {supported} only",
        path.display()
    )]
    FutureFormat {
        /// The manifest file.
        path: PathBuf,
        /// The format it names.
        found: u64,
        /// The format this version writes and reads.
        supported: u64,
    },
    /// The manifest cannot be read as one.
    #[error("manifest {} is unreadable: {reason}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file system has no room left (ENOSPC or a quota). Nothing of the batch was kept.
    #[error("{op} {}: the disk is full: {source}", path.display())]
    NoSpace {
        /// What the log was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error the OS returned.
        #[source]
        source: io::Error,
    },
    /// The directory or file system does not allow writing.
    #[error("{op} {}: the log is not writable: {source}", path.display())]
    ReadOnly {
        /// What the log was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error the OS returned.
        #[source]
        source: io::Error,
    },
    /// Any other I/O failure.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What the log was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error the OS returned.
        #[source]
        source: io::Error,
    },
    /// A shard could not undo a failed write, so its tail is in an unknown state; it accepts
    /// no more writes until the log is opened again (recovery then repairs the tail).
    #[error("shard {shard}: a failed write could not be undone; reopen the log to recover it")]
    ShardFailed {
        /// The shard.
        shard: u16,
    },
    /// A batch is larger than one write of the log may be.
    #[error("shard {shard}: a batch of {size} bytes is over the limit of {max} bytes")]
    BatchTooLarge {
        /// The shard.
        shard: u16,
        /// The framed size of the batch.
        size: u64,
        /// The limit.
        max: u64,
    },
}

impl LogError {
    /// Classifies an I/O error of `op` on `path`: a full disk and a read-only file system get
    /// their own variants.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                LogError::NoSpace { op, path, source }
            }
            io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied => {
                LogError::ReadOnly { op, path, source }
            }
            _ => LogError::Io { op, path, source },
        }
    }

    /// True when the same operation may succeed later without anyone changing the setup: a
    /// full disk (retention or an operator may free space) and interrupted or timed-out I/O.
    /// Everything else (read-only, locked, unknown I/O errors such as EIO) is permanent, so
    /// the bus does not retry it forever.
    pub fn is_retryable(&self) -> bool {
        match self {
            LogError::NoSpace { .. } => true,
            LogError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            _ => false,
        }
    }

    /// The bus's view of this error, with the adapter's name in front.
    pub fn into_adapter_error(self) -> AdapterError {
        match self {
            LogError::BatchTooLarge { shard, size, max } => AdapterError::TooLarge {
                what: format!("log: appending a batch to shard {shard}"),
                size: usize::try_from(size).unwrap_or(usize::MAX),
                max: usize::try_from(max).unwrap_or(usize::MAX),
            },
            e if e.is_retryable() => AdapterError::Transient(format!("log: {e}")),
            e => AdapterError::Fatal(format!("log: {e}")),
        }
    }
}

impl From<LogError> for AdapterError {
    fn from(e: LogError) -> Self {
        e.into_adapter_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(e: LogError, retryable: bool, text: &str) {
        let shown = e.to_string();
        assert!(shown.contains(text), "{shown}");
        assert_eq!(e.is_retryable(), retryable, "{shown}");
        let adapter = e.into_adapter_error();
        assert_eq!(adapter.is_retryable(), retryable, "{adapter}");
        assert!(adapter.to_string().contains("log: "), "{adapter}");
    }

    #[test]
    fn classification() {
        let os = |kind: io::ErrorKind| io::Error::new(kind, "x");
        check(
            LogError::io("append to", "/d/a.log", os(io::ErrorKind::StorageFull)),
            true,
            "append to /d/a.log: the disk is full",
        );
        check(
            LogError::io("create", "/d", os(io::ErrorKind::ReadOnlyFilesystem)),
            false,
            "not writable",
        );
        check(
            LogError::io("create", "/d", os(io::ErrorKind::PermissionDenied)),
            false,
            "not writable",
        );
        check(
            LogError::io("sync", "/d/a.log", io::Error::from_raw_os_error(5)),
            false,
            "sync /d/a.log",
        );
        check(
            LogError::io("read", "/d", os(io::ErrorKind::Interrupted)),
            true,
            "read /d",
        );
        check(
            LogError::Locked { path: "/d".into() },
            false,
            "in use by another process",
        );
        check(
            LogError::FutureFormat {
                path: "/d/MANIFEST".into(),
                found: 9,
                supported: 1,
            },
            false,
            "format 9",
        );
        let big = LogError::BatchTooLarge {
            shard: 1,
            size: 10,
            max: 5,
        }
        .into_adapter_error();
        assert_eq!(big.kind(), "too_large");
    }
}
