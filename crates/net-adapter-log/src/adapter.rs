//! [`LogAdapter`]: the shards of one log directory behind the [`Adapter`] trait, plus the
//! background thread that syncs on an interval and applies retention.
//!
//! Who touches what: each shard is a `Mutex<Shard>`; appends, trims, seals and retention of
//! a shard hold its mutex, reads hold it only to plan. The map of shards is behind an
//! `RwLock` taken briefly. The manifest has its own mutex, which makes `record_layout`'s
//! `IfAbsent` atomic within the process; the `LOCK` file makes the process the only one.
//! File I/O never holds up the async executor: it runs in `tokio::task::spawn_blocking`, except
//! appends that do not sync (policies `Interval` and `Never`), which only copy into the page
//! cache and run under `tokio::task::block_in_place` on a multi-thread runtime (the worker's
//! other tasks move to another thread meanwhile), sparing two thread hand-offs per batch.
//! The background thread holds only a `Weak` reference, so it never keeps the log open.

use crate::append::{Direct, WriteLayer};
use crate::config::{FsyncPolicy, LogAdapterConfig};
use crate::files::{self, Manifest};
use crate::page;
use crate::read_cache::Readers;
use crate::recovery::Recovery;
use crate::shard::Shard;
use crate::LogError;
use net_adapter::{
    async_trait, Adapter, AdapterError, Batch, LayoutWrite, ShardPollResult, StreamLayout, MAX_PAGE,
};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A failure the next `on_batch` of one shard meets (a test hook, feature `test-hooks`).
#[cfg(feature = "test-hooks")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFault {
    /// Refuse the batch with a fatal error before writing anything.
    Fatal,
    /// Write and sync the batch, then return a retryable error (a lost acknowledgement).
    TransientAfterWrite,
    /// Write and sync the batch, then never complete (the caller times out and retries).
    StallAfterWrite,
    /// The write stores half of the batch's bytes and then fails with "no space left on
    /// device", as a full disk does; the segment is cut back as for a real one.
    DiskFull,
}

/// Encode buffers kept for reuse, at most.
const KEPT_BUFFERS: usize = 8;
/// The largest encode buffer kept for reuse; a larger one (a huge batch) is freed.
const KEPT_BUFFER_BYTES: usize = 4 << 20;

/// Shared state of one open log.
struct Inner {
    config: LogAdapterConfig,
    root: PathBuf,
    shards: RwLock<HashMap<u16, Arc<Mutex<Shard>>>>,
    /// Read handles of sealed segments, shared by the shards.
    readers: Arc<Readers>,
    /// Encode buffers of appends, reused: one is taken per append and given back after.
    buffers: Mutex<Vec<Vec<u8>>>,
    manifest: Mutex<Manifest>,
    lock: Mutex<Option<File>>,
    shut_down: AtomicBool,
    recovery: Recovery,
    segments_deleted: AtomicU64,
    damaged_reads: AtomicU64,
    #[cfg(feature = "test-hooks")]
    faults: Mutex<HashMap<u16, LogFault>>,
}

/// The embedded durable log as an [`Adapter`]. See the crate docs for the format and the
/// guarantees.
///
/// [`LogAdapter::open`] opens (or creates) the directory, takes its lock and recovers every
/// shard; the adapter is ready when it returns, and [`Adapter::init`] does nothing more.
/// Dropping the adapter (or [`Adapter::shutdown`]) releases the directory.
pub struct LogAdapter {
    inner: Arc<Inner>,
    background: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl std::fmt::Debug for LogAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogAdapter")
            .field("dir", &self.inner.root)
            .field("fsync", &self.inner.config.fsync)
            .finish_non_exhaustive()
    }
}

/// Disk figures of one shard ([`LogAdapter::shard_usage`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardUsage {
    /// The log start offset: offsets below it were trimmed.
    pub start: u64,
    /// The offset the next event gets.
    pub next: u64,
    /// Bytes in the shard's segment files.
    pub bytes: u64,
}

impl LogAdapter {
    /// Opens the log in `config.dir` (creating it), takes the directory's lock, checks the
    /// manifest and recovers every shard (invariant 4). Blocking: call it before the runtime
    /// starts or inside `spawn_blocking`.
    pub fn open(config: LogAdapterConfig) -> Result<LogAdapter, LogError> {
        config.validate()?;
        let root = config.dir.clone();
        fs::create_dir_all(&root).map_err(|e| LogError::io("create", &root, e))?;
        let lock = files::lock(&root)?;
        let manifest_path = root.join("MANIFEST");
        let manifest = match Manifest::load(&manifest_path)? {
            Some(m) => m,
            None => {
                let m = Manifest { shards: None };
                m.store(&manifest_path)?;
                m
            }
        };
        let mut recovery = Recovery::default();
        let mut shards = HashMap::new();
        let readers = Arc::new(Readers::default());
        let listing = fs::read_dir(&root).map_err(|e| LogError::io("list", &root, e))?;
        for entry in listing {
            let entry = entry.map_err(|e| LogError::io("list", &root, e))?;
            let Some(id) = files::parse_shard_dir(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            let shard = Shard::open(&root, id, &mut recovery, readers.clone())?;
            shards.insert(id, Arc::new(Mutex::new(shard)));
        }
        if recovery.truncated_bytes > 0 || recovery.damaged_spans > 0 {
            tracing::warn!(dir = %root.display(), ?recovery, "the log recovered from damage");
        } else {
            tracing::debug!(dir = %root.display(), ?recovery, "log opened");
        }
        let inner = Arc::new(Inner {
            config,
            root,
            shards: RwLock::new(shards),
            readers,
            buffers: Mutex::new(Vec::new()),
            manifest: Mutex::new(manifest),
            lock: Mutex::new(Some(lock)),
            shut_down: AtomicBool::new(false),
            recovery,
            segments_deleted: AtomicU64::new(0),
            damaged_reads: AtomicU64::new(0),
            #[cfg(feature = "test-hooks")]
            faults: Mutex::new(HashMap::new()),
        });
        let background = start_background(&inner);
        Ok(LogAdapter { inner, background })
    }

    /// What recovery found and repaired when the log was opened.
    pub fn recovery(&self) -> Recovery {
        self.inner.recovery
    }

    /// Damaged spans that reads have skipped since the log was opened (each read that meets
    /// a span counts it again).
    pub fn damaged_reads(&self) -> u64 {
        self.inner.damaged_reads.load(Ordering::Relaxed)
    }

    /// Segments retention has deleted since the log was opened.
    pub fn segments_deleted(&self) -> u64 {
        self.inner.segments_deleted.load(Ordering::Relaxed)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.root
    }

    /// Start, end and size of `shard` (all zero for a shard never written).
    pub fn shard_usage(&self, shard: u16) -> ShardUsage {
        self.inner
            .shard(shard)
            .map_or_else(ShardUsage::default, |s| {
                let s = s.lock();
                ShardUsage {
                    start: s.start(),
                    next: s.next(),
                    bytes: s.bytes(),
                }
            })
    }

    /// Trims `shard` so that only its newest `keep` events remain: the log start moves
    /// (`START`), and segments wholly below it are deleted. Cursors below the new start are
    /// stale. Blocking.
    pub fn trim(&self, shard: u16, keep: u64) -> Result<(), LogError> {
        if let Some(s) = self.inner.shard(shard) {
            let mut s = s.lock();
            let start = s.next().saturating_sub(keep);
            s.set_start(start)?;
        }
        Ok(())
    }

    /// Applies retention to every shard now, as the background thread does on its interval;
    /// returns how many segments were deleted. Blocking.
    pub fn enforce_retention(&self) -> Result<u64, LogError> {
        self.inner.enforce_retention()
    }

    /// Appends one damaged record to `shard` (a frame whose checksum does not match) that
    /// takes the next offset, as a torn write or bit rot would leave it; returns its offset.
    /// A test hook (feature `test-hooks`). Blocking.
    #[cfg(feature = "test-hooks")]
    pub fn inject_corrupt(&self, shard: u16) -> Result<u64, LogError> {
        let s = self.inner.shard_or_create(shard);
        let mut s = s.lock();
        s.append_corrupt(&self.inner.root)
    }

    /// Makes the next `on_batch` of `shard` meet `fault` (a test hook, feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    pub fn inject_fault(&self, shard: u16, fault: LogFault) {
        self.inner.faults.lock().insert(shard, fault);
    }

    /// The segment files of `shard`, oldest first (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    pub fn segment_paths(&self, shard: u16) -> Vec<PathBuf> {
        self.inner
            .shard(shard)
            .map_or_else(Vec::new, |s| s.lock().segment_paths())
    }

    fn check_open(&self) -> Result<(), AdapterError> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            Err(AdapterError::Shutdown)
        } else {
            Ok(())
        }
    }
}

impl Inner {
    fn shard(&self, id: u16) -> Option<Arc<Mutex<Shard>>> {
        self.shards.read().get(&id).cloned()
    }

    fn shard_or_create(&self, id: u16) -> Arc<Mutex<Shard>> {
        if let Some(s) = self.shard(id) {
            return s;
        }
        self.shards
            .write()
            .entry(id)
            .or_insert_with(|| {
                Arc::new(Mutex::new(Shard::empty(
                    &self.root,
                    id,
                    self.readers.clone(),
                )))
            })
            .clone()
    }

    fn all_shards(&self) -> Vec<Arc<Mutex<Shard>>> {
        self.shards.read().values().cloned().collect()
    }

    fn append(&self, batch: &Batch, io: &dyn WriteLayer) -> Result<(), AdapterError> {
        let shard = self.shard_or_create(batch.shard_id);
        let mut buf = self.buffers.lock().pop().unwrap_or_default();
        let result = {
            let mut shard = shard.lock();
            // Checked under the shard's lock: nothing is written once shutdown has synced.
            if self.shut_down.load(Ordering::Acquire) {
                return Err(AdapterError::Shutdown);
            }
            shard.append(
                &self.root,
                batch,
                self.config.segment_bytes,
                self.config.fsync,
                io,
                &mut buf,
            )
        };
        if buf.capacity() <= KEPT_BUFFER_BYTES {
            let mut buffers = self.buffers.lock();
            if buffers.len() < KEPT_BUFFERS {
                buffers.push(buf);
            }
        }
        result.map_err(LogError::into_adapter_error)
    }

    fn poll(
        &self,
        id: u16,
        cursor: Option<u64>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        let budget = limit.min(MAX_PAGE);
        loop {
            let shard = self.shard(id);
            let plan = match &shard {
                Some(s) => s.lock().plan(cursor, budget),
                None => Shard::empty(&self.root, id, self.readers.clone()).plan(cursor, budget),
            }
            .map_err(|bad| AdapterError::InvalidCursor(format!("log: {}", bad.0)))?;
            let read = page::read(id, plan, &self.readers).map_err(LogError::into_adapter_error)?;
            if let Some(mut page) = read {
                let opened = std::mem::take(&mut page.opened);
                if let (Some(s), false) = (&shard, opened.is_empty()) {
                    s.lock().adopt_readers(opened);
                }
                if page.damaged > 0 {
                    self.damaged_reads
                        .fetch_add(page.damaged, Ordering::Relaxed);
                    tracing::warn!(
                        dir = %self.root.display(),
                        shard = id,
                        spans = page.damaged,
                        cursor = page.cursor,
                        "a read skipped damaged records; the cursor moved past them"
                    );
                }
                return Ok(ShardPollResult {
                    events: page.events,
                    cursor: page.cursor.to_string(),
                    has_more: page.has_more,
                });
            }
            // Retention deleted a segment under the read: plan again from the new start.
        }
    }

    /// Syncs every dirty shard.
    fn sync_all(&self) -> Result<(), LogError> {
        for shard in self.all_shards() {
            shard.lock().sync()?;
        }
        Ok(())
    }

    /// Syncs dirty shards without holding their locks during the sync (background).
    fn sync_dirty_in_background(&self) {
        for shard in self.all_shards() {
            let files = shard.lock().take_dirty();
            for (base, file) in files {
                if let Err(error) = file.sync_data() {
                    tracing::error!(dir = %self.root.display(), %error, "background sync failed");
                    shard.lock().unsynced_again(base, file);
                }
            }
        }
    }

    fn enforce_retention(&self) -> Result<u64, LogError> {
        let mut deleted = 0;
        for shard in self.all_shards() {
            let mut shard = shard.lock();
            if self.shut_down.load(Ordering::Acquire) {
                break;
            }
            deleted += shard.enforce(&self.config.retention, self.config.fsync)?;
        }
        self.segments_deleted.fetch_add(deleted, Ordering::Relaxed);
        Ok(deleted)
    }

    /// Syncs everything and releases the directory. Idempotent.
    fn close(&self) -> Result<(), LogError> {
        self.shut_down.store(true, Ordering::Release);
        let result = self.sync_all();
        self.lock.lock().take();
        result
    }
}

/// Starts the background thread when there is something for it to do: interval syncs or a
/// retention limit.
fn start_background(inner: &Arc<Inner>) -> Option<(mpsc::Sender<()>, JoinHandle<()>)> {
    let sync_every = match inner.config.fsync {
        FsyncPolicy::Interval(every) => Some(every),
        _ => None,
    };
    let retention = inner.config.retention;
    let retain_every = retention.is_limited().then_some(retention.check_interval);
    if sync_every.is_none() && retain_every.is_none() {
        return None;
    }
    let (stop, stopped) = mpsc::channel::<()>();
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let spawned = std::thread::Builder::new()
        .name("net-log-background".into())
        .spawn(move || {
            let now = Instant::now();
            let mut next_sync = sync_every.map(|d| now + d);
            let mut next_retain = retain_every.map(|d| now + d);
            loop {
                let due = [next_sync, next_retain].into_iter().flatten().min();
                let wait = due.map_or(Duration::from_secs(3600), |d| {
                    d.saturating_duration_since(Instant::now())
                });
                match stopped.recv_timeout(wait) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                if inner.shut_down.load(Ordering::Acquire) {
                    return;
                }
                let now = Instant::now();
                if let (Some(at), Some(every)) = (next_sync, sync_every) {
                    if now >= at {
                        inner.sync_dirty_in_background();
                        next_sync = Some(now + every);
                    }
                }
                if let (Some(at), Some(every)) = (next_retain, retain_every) {
                    if now >= at {
                        if let Err(error) = inner.enforce_retention() {
                            tracing::error!(dir = %inner.root.display(), %error, "retention failed");
                        }
                        next_retain = Some(now + every);
                    }
                }
            }
        });
    match spawned {
        Ok(handle) => Some((stop, handle)),
        Err(error) => {
            tracing::error!(%error, "could not start the log's background thread");
            None
        }
    }
}

impl Drop for LogAdapter {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.background.take() {
            drop(stop);
            let _ = handle.join();
        }
        if let Err(error) = self.inner.close() {
            tracing::error!(dir = %self.inner.root.display(), %error, "sync on drop failed");
        }
    }
}

/// Runs blocking work off the async executor's threads.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AdapterError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AdapterError::Fatal(format!("log: {what}: the blocking task failed: {e}")))
}

/// Runs short blocking work (a write that only reaches the page cache) on the calling thread
/// when that cannot hold up other tasks: on a multi-thread runtime, `block_in_place` first
/// hands this worker's other tasks to another thread. This saves the two thread hand-offs of
/// [`blocking`] per call. Elsewhere (a current-thread runtime) it is [`blocking`].
async fn in_place<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AdapterError> {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        Ok(tokio::task::block_in_place(f))
    } else {
        blocking(what, f).await
    }
}

/// Parses a cursor: the decimal offset of the next event to read.
fn parse_cursor(cursor: &str) -> Result<u64, AdapterError> {
    let shown: String = cursor.chars().take(40).collect();
    if cursor.is_empty() || cursor.len() > 20 || !cursor.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AdapterError::InvalidCursor(format!(
            "log: {shown:?} is not a log position"
        )));
    }
    cursor
        .parse()
        .map_err(|_| AdapterError::InvalidCursor(format!("log: {shown:?} is not a log position")))
}

#[async_trait]
impl Adapter for LogAdapter {
    async fn on_batch(&self, batch: Arc<Batch>) -> Result<(), AdapterError> {
        self.check_open()?;
        if batch.events.is_empty() {
            return Ok(());
        }
        #[cfg(feature = "test-hooks")]
        let fault = self.inner.faults.lock().remove(&batch.shard_id);
        #[cfg(feature = "test-hooks")]
        if fault == Some(LogFault::Fatal) {
            return Err(AdapterError::Fatal(format!(
                "log: append to shard {}: refused (injected fault)",
                batch.shard_id
            )));
        }
        let inner = self.inner.clone();
        #[cfg(feature = "test-hooks")]
        let layer: Box<dyn WriteLayer> = if fault == Some(LogFault::DiskFull) {
            Box::new(HalfThenFull)
        } else {
            Box::new(Direct)
        };
        #[cfg(not(feature = "test-hooks"))]
        let layer: Box<dyn WriteLayer> = Box::new(Direct);
        let b = batch.clone();
        let append = move || inner.append(&b, &*layer);
        if self.inner.config.fsync == FsyncPolicy::EveryBatch {
            blocking("append", append).await??;
        } else {
            // No sync: the write only copies the batch into the page cache.
            in_place("append", append).await??;
        }
        #[cfg(feature = "test-hooks")]
        match fault {
            Some(LogFault::TransientAfterWrite) => {
                return Err(AdapterError::Transient(format!(
                    "log: append to shard {}: acknowledgement lost (injected fault)",
                    batch.shard_id
                )))
            }
            Some(LogFault::StallAfterWrite) => std::future::pending::<()>().await,
            _ => {}
        }
        Ok(())
    }

    async fn poll_shard(
        &self,
        shard_id: u16,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ShardPollResult, AdapterError> {
        self.check_open()?;
        let cursor = cursor.map(parse_cursor).transpose()?;
        let inner = self.inner.clone();
        blocking("read", move || inner.poll(shard_id, cursor, limit)).await?
    }

    async fn flush(&self) -> Result<(), AdapterError> {
        self.check_open()?;
        let inner = self.inner.clone();
        blocking("flush", move || inner.sync_all())
            .await?
            .map_err(LogError::into_adapter_error)
    }

    async fn shutdown(&self) -> Result<(), AdapterError> {
        let inner = self.inner.clone();
        blocking("shutdown", move || inner.close())
            .await?
            .map_err(LogError::into_adapter_error)
    }

    fn name(&self) -> &str {
        "log"
    }

    async fn is_healthy(&self) -> bool {
        !self.inner.shut_down.load(Ordering::Acquire)
    }

    async fn record_layout(
        &self,
        layout: StreamLayout,
        write: LayoutWrite,
    ) -> Result<Option<StreamLayout>, AdapterError> {
        self.check_open()?;
        let inner = self.inner.clone();
        blocking("record the layout", move || {
            let mut manifest = inner.manifest.lock();
            if let (LayoutWrite::IfAbsent, Some(n)) = (write, manifest.shards) {
                return Ok(Some(StreamLayout::new(n)));
            }
            let updated = Manifest {
                shards: Some(layout.shards),
            };
            updated
                .store(&inner.root.join("MANIFEST"))
                .map_err(LogError::into_adapter_error)?;
            *manifest = updated;
            Ok(Some(layout))
        })
        .await?
    }
}

/// The write layer of [`LogFault::DiskFull`]: half the bytes land, then ENOSPC.
#[cfg(feature = "test-hooks")]
struct HalfThenFull;

#[cfg(feature = "test-hooks")]
impl WriteLayer for HalfThenFull {
    fn write_at(&self, file: &File, buf: &[u8], at: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        file.write_all_at(&buf[..buf.len() / 2], at)?;
        Err(std::io::Error::from(std::io::ErrorKind::StorageFull))
    }
}
