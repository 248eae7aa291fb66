//! The producer nonce and where sequence numbers start.
//!
//! Every batch carries `(process_nonce, shard_id, sequence_start)`, and dedup ids are built
//! from it, so two different events must never share that triple. Without a nonce file each
//! bus draws a random nonce and numbers every shard from 0.
//!
//! With `producer_nonce_path` the nonce survives restarts, which would make a restarted bus
//! reuse the sequence numbers of its previous life, and an adapter deduplicating by them
//! would silently discard new events as retries. So the file also holds an epoch that is
//! incremented (atomically: write to a temporary file, fsync, rename) every time a bus starts
//! from it, and each shard's sequence numbers start at `epoch << EPOCH_SHIFT`. A lifetime can
//! use 2^44 sequence numbers per shard before it would reach the next epoch's range; the
//! nonce and epoch stay unique for 2^20 starts, after which a new random nonce is drawn.
//!
//! File format (text, one `key=value` per line):
//! ```text
//! net-producer-nonce v1
//! nonce=0123456789abcdef
//! epoch=3
//! ```
//! One bus at a time may use a given path.

use crate::error::ConfigError;
use std::io::Write;
use std::path::Path;

/// Sequence numbers of epoch `e` start at `e << EPOCH_SHIFT`.
pub(crate) const EPOCH_SHIFT: u32 = 44;
const MAX_EPOCH: u64 = (1 << (64 - EPOCH_SHIFT)) - 1;
const HEADER: &str = "net-producer-nonce v1";

/// The identity a bus stamps on its batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProducerIdentity {
    pub(crate) nonce: u64,
    pub(crate) sequence_base: u64,
}

pub(crate) fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    if getrandom::fill(&mut buf).is_err() {
        // No OS randomness: fall back to the clock and the address of a stack value, which
        // still differ between processes in practice.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let addr = &buf as *const _ as u64;
        return xxhash_rust::xxh3::xxh3_64(&[t.to_le_bytes(), addr.to_le_bytes()].concat());
    }
    u64::from_le_bytes(buf)
}

/// A fresh identity for a bus without a nonce file.
pub(crate) fn ephemeral() -> ProducerIdentity {
    ProducerIdentity {
        nonce: random_u64(),
        sequence_base: 0,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> ConfigError {
    ConfigError::NonceFile {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn parse(path: &Path, text: &str) -> Result<(u64, u64), ConfigError> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(corrupt(
            path,
            format!("corrupt: the first line is not {HEADER:?}"),
        ));
    }
    let mut nonce = None;
    let mut epoch = None;
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| corrupt(path, format!("corrupt line {line:?}")))?;
        match key {
            "nonce" if value.len() == 16 => {
                nonce = Some(
                    u64::from_str_radix(value, 16)
                        .map_err(|_| corrupt(path, format!("corrupt nonce {value:?}")))?,
                )
            }
            "nonce" => return Err(corrupt(path, "corrupt nonce: expected 16 hex digits")),
            "epoch" => {
                epoch = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| corrupt(path, format!("corrupt epoch {value:?}")))?,
                )
            }
            other => return Err(corrupt(path, format!("corrupt: unknown key {other:?}"))),
        }
    }
    match (nonce, epoch) {
        (Some(n), Some(e)) => Ok((n, e)),
        _ => Err(corrupt(path, "corrupt: nonce or epoch missing")),
    }
}

fn write_atomically(path: &Path, nonce: u64, epoch: u64) -> Result<(), ConfigError> {
    let io = |e: std::io::Error| corrupt(path, format!("cannot write: {e}"));
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile_in(dir, path).map_err(io)?;
    let text = format!("{HEADER}\nnonce={nonce:016x}\nepoch={epoch}\n");
    tmp.1.write_all(text.as_bytes()).map_err(io)?;
    tmp.1.sync_all().map_err(io)?;
    std::fs::rename(&tmp.0, path).map_err(io)?;
    // Make the rename itself durable where the platform allows opening a directory.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn tempfile_in(dir: &Path, target: &Path) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "nonce".to_owned());
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", random_u64()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    Ok((tmp, file))
}

/// Loads the identity at `path` (creating the file when absent) and claims the next epoch.
pub(crate) fn load_or_create(path: &Path) -> Result<ProducerIdentity, ConfigError> {
    let (nonce, epoch) = match std::fs::read(path) {
        Ok(bytes) => {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| corrupt(path, "corrupt: not UTF-8 text"))?;
            let (nonce, last) = parse(path, text)?;
            if last >= MAX_EPOCH {
                tracing::warn!(path = %path.display(), "producer epochs exhausted; drawing a new nonce");
                (random_u64(), 0)
            } else {
                (nonce, last + 1)
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (random_u64(), 0),
        Err(e) => return Err(corrupt(path, format!("cannot read: {e}"))),
    };
    write_atomically(path, nonce, epoch)?;
    Ok(ProducerIdentity {
        nonce,
        sequence_base: epoch << EPOCH_SHIFT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_survives_and_epoch_advances() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nonce");
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.nonce, b.nonce);
        assert_eq!(a.sequence_base, 0);
        assert_eq!(b.sequence_base, 1 << EPOCH_SHIFT);
    }

    #[test]
    fn corrupt_files_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nonce");
        for bad in [
            "",
            "garbage",
            "net-producer-nonce v1\nnonce=xyz\nepoch=1\n",
            "net-producer-nonce v1\nnonce=0123456789abcdef\n",
            "net-producer-nonce v1\nnonce=0123456789abcdef\nepoch=-1\n",
            "net-producer-nonce v2\nnonce=0123456789abcdef\nepoch=1\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            match load_or_create(&path) {
                Err(ConfigError::NonceFile { reason, .. }) => {
                    assert!(reason.contains("corrupt"), "{reason}")
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(ConfigError::NonceFile { .. })
        ));
    }
}
