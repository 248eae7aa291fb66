//! [`EventStream`]: a consumer as a [`Stream`] of events, with cursor persistence and dedup.
//!
//! The stream polls the bus page by page, drops copies by dedup id ([`Dedup`]) and hands the
//! events out one at a time. It saves the cursor through a [`CursorStore`] when every event of
//! a page has been handed out and the next page is asked for, so a consumer that stops (or
//! crashes) while it works on a page gets that page again on restart: delivery is at least
//! once, and each page is saved at most once.
//!
//! - [`FileCursor`] keeps the cursor in a file, replaced atomically on every save.
//! - [`MemoryCursor`] keeps it in memory (tests, or a consumer that saves it elsewhere).
//! - Any type implementing [`CursorStore`] can keep it anywhere else.

use crate::Dedup;
use futures_core::Stream;
use net_adapter::StoredEvent;
use net_core::{
    ConsumeRequest, ConsumeResponse, ConsumerError, ConsumerResult, EventBus, Filter, Ordering,
};
use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::future::Future;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use thiserror::Error;

/// Where an [`EventStream`] keeps its cursor between runs.
///
/// Implement it to keep the cursor next to your own state, e.g. in the database transaction
/// that records what a page did:
///
/// ```
/// use net_sdk::CursorStore;
/// use std::collections::HashMap;
///
/// /// Cursors of several consumers, by name.
/// struct Named<'a> {
///     name: &'a str,
///     table: &'a mut HashMap<String, String>,
/// }
///
/// impl CursorStore for Named<'_> {
///     fn load(&mut self) -> std::io::Result<Option<String>> {
///         Ok(self.table.get(self.name).cloned())
///     }
///     fn save(&mut self, cursor: &str) -> std::io::Result<()> {
///         self.table.insert(self.name.to_owned(), cursor.to_owned());
///         Ok(())
///     }
/// }
///
/// let mut table = HashMap::new();
/// let mut store = Named { name: "billing", table: &mut table };
/// store.save("AQID")?;
/// assert_eq!(store.load()?.as_deref(), Some("AQID"));
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait CursorStore: Send {
    /// The saved cursor, or `None` when nothing was saved yet.
    fn load(&mut self) -> io::Result<Option<String>>;
    /// Saves `cursor`; it must be readable by the next [`CursorStore::load`], even after a
    /// crash in the middle of the save.
    fn save(&mut self, cursor: &str) -> io::Result<()>;
}

/// A cursor kept in a file: one line of text, replaced atomically (written to a temporary file
/// in the same directory, synced, renamed over the old one, and the directory synced), so
/// after a crash the file holds either the old cursor or the new one, never a mix and never
/// nothing.
///
/// Loads and saves block on the file system (a save syncs the file and its directory). Called
/// on a worker thread of a multi-threaded tokio runtime, as [`EventStream`] does, they run in
/// a blocking section ([`tokio::task::block_in_place`]), so the runtime moves its other tasks
/// to another thread instead of waiting for the disk. A current-thread runtime has no other
/// thread to give them to; there they run inline.
///
/// Because a save never leaves the file empty, [`CursorStore::load`] refuses a file that is
/// empty, not text, or more than one line (it was damaged or is not a cursor file) with an
/// [`io::ErrorKind::InvalidData`] error, rather than starting over from the beginning.
///
/// ```
/// use net_sdk::{CursorStore, FileCursor};
///
/// let dir = std::env::temp_dir().join(format!("net-doc-cursor-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let mut store = FileCursor::new(dir.join("orders.cursor"));
/// assert_eq!(store.load()?, None);
/// store.save("AQID")?;
/// assert_eq!(store.load()?.as_deref(), Some("AQID"));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct FileCursor {
    path: PathBuf,
}

/// Longest cursor file [`FileCursor::load`] reads; a cursor is far shorter.
const MAX_CURSOR_FILE_BYTES: u64 = 1 << 20;

impl FileCursor {
    /// A store at `path`. The file is created by the first save; its directory must exist.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where the cursor is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn invalid_data(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// Runs `work`, which blocks on the file system, in a blocking section when called on a
/// worker thread of a multi-threaded tokio runtime, so the runtime's other tasks keep running;
/// anywhere else (no runtime, a current-thread runtime) it runs inline.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

impl CursorStore for FileCursor {
    fn load(&mut self) -> io::Result<Option<String>> {
        blocking(|| load_cursor_file(&self.path))
    }

    fn save(&mut self, cursor: &str) -> io::Result<()> {
        blocking(|| save_cursor_file(&self.path, cursor))
    }
}

/// What [`FileCursor::load`] reads, on the calling thread.
fn load_cursor_file(path: &Path) -> io::Result<Option<String>> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    io::Read::read_to_end(
        &mut io::Read::take(file, MAX_CURSOR_FILE_BYTES + 1),
        &mut bytes,
    )?;
    if bytes.len() as u64 > MAX_CURSOR_FILE_BYTES {
        return Err(invalid_data("too large for a cursor file"));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| invalid_data("not a cursor file: it holds binary data"))?;
    let cursor = text.trim();
    if cursor.is_empty() {
        return Err(invalid_data(
            "the cursor file is empty (a saved cursor never is: it was truncated)",
        ));
    }
    if cursor.contains(['\n', '\r']) || cursor.chars().any(char::is_control) {
        return Err(invalid_data(
            "not a cursor file: more than one line of text",
        ));
    }
    Ok(Some(cursor.to_owned()))
}

/// What [`FileCursor::save`] writes, on the calling thread.
fn save_cursor_file(path: &Path, cursor: &str) -> io::Result<()> {
    if cursor.is_empty() || cursor.contains(['\n', '\r']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a cursor is one non-empty line",
        ));
    }
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(cursor.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes the rename of `path` durable by syncing its directory (on Unix; elsewhere the
/// rename itself is all the platform offers).
fn sync_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// A cursor kept in memory only.
///
/// ```
/// use net_sdk::{CursorStore, MemoryCursor};
///
/// let mut store = MemoryCursor::new(None);
/// store.save("AQID")?;
/// assert_eq!(store.get(), Some("AQID"));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryCursor {
    cursor: Option<String>,
}

impl MemoryCursor {
    /// A store that starts with `cursor` (`None`: from the start).
    pub fn new(cursor: Option<String>) -> Self {
        Self { cursor }
    }

    /// The last saved cursor.
    pub fn get(&self) -> Option<&str> {
        self.cursor.as_deref()
    }
}

impl CursorStore for MemoryCursor {
    fn load(&mut self) -> io::Result<Option<String>> {
        Ok(self.cursor.clone())
    }

    fn save(&mut self, cursor: &str) -> io::Result<()> {
        self.cursor = Some(cursor.to_owned());
        Ok(())
    }
}

/// How an [`EventStream`] reads. Start from [`StreamOptions::default`] and use the setters.
///
/// ```
/// use net_sdk::{Filter, Ordering, StreamOptions};
/// use std::time::Duration;
///
/// let options = StreamOptions::default()
///     .page_size(500)
///     .filter(Filter::parse(r#"{"type": "click"}"#).expect("a valid filter"))
///     .ordering(Ordering::Timestamp)
///     .follow(true)
///     .backoff(Duration::from_millis(5), Duration::from_millis(500))
///     .dedup_capacity(40_000);
/// assert!(options.follow);
/// assert_eq!(options.page_size, 500);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StreamOptions {
    /// Events asked for per poll (default 1,000; clamped by the bus to `MAX_POLL_LIMIT`).
    pub page_size: usize,
    /// Only matching events are handed out; the others still move the cursor.
    pub filter: Option<Filter>,
    /// How shards are interleaved.
    pub ordering: Ordering,
    /// Keep waiting for new events once the stored ones are read (default: end the stream).
    pub follow: bool,
    /// Wait after the first empty poll when following; doubled on each further empty poll.
    pub min_backoff: Duration,
    /// Longest wait between polls when following.
    pub max_backoff: Duration,
    /// Capacity of the dedup window (see [`Dedup`] for the sizing rule).
    pub dedup_capacity: usize,
    /// End the stream after this many events (the cursor then covers exactly those).
    pub max_events: Option<u64>,
    /// Ignore the saved cursor and read from the earliest retained event.
    pub from_start: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            page_size: 1000,
            filter: None,
            ordering: Ordering::Sequence,
            follow: false,
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            dedup_capacity: Dedup::DEFAULT_CAPACITY,
            max_events: None,
            from_start: false,
        }
    }
}

impl StreamOptions {
    /// Sets [`StreamOptions::page_size`] (at least 1).
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// Sets [`StreamOptions::filter`].
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Sets [`StreamOptions::ordering`].
    pub fn ordering(mut self, ordering: Ordering) -> Self {
        self.ordering = ordering;
        self
    }

    /// Sets [`StreamOptions::follow`].
    pub fn follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }

    /// Sets the backoff bounds of a following stream (`min` at least 1 ms, `max` at least
    /// `min`).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min.max(Duration::from_millis(1));
        self.max_backoff = max.max(self.min_backoff);
        self
    }

    /// Sets [`StreamOptions::dedup_capacity`].
    pub fn dedup_capacity(mut self, n: usize) -> Self {
        self.dedup_capacity = n;
        self
    }

    /// Sets [`StreamOptions::max_events`].
    pub fn max_events(mut self, n: u64) -> Self {
        self.max_events = Some(n);
        self
    }

    /// Sets [`StreamOptions::from_start`].
    pub fn from_start(mut self, yes: bool) -> Self {
        self.from_start = yes;
        self
    }
}

/// Why an [`EventStream`] could not go on.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The poll failed. Adapter errors are retried on the next poll of the stream (after a
    /// backoff); a bad cursor, filter or shard ends the stream.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// The cursor store failed to load or save; the stream ends.
    #[error("cursor store: {0}")]
    Cursor(#[source] io::Error),
}

type PollFuture<'a> = Pin<Box<dyn Future<Output = ConsumerResult<ConsumeResponse>> + Send + 'a>>;

enum State<'a> {
    /// Ready to hand out buffered events, or to fetch the next page once they are gone.
    Idle,
    Fetching(PollFuture<'a>),
    Sleeping(Pin<Box<tokio::time::Sleep>>),
    Done,
}

/// A [`Stream`] of the events of a bus, resuming from a saved cursor, without copies.
///
/// Build it with [`EventStream::new`] and read it with `StreamExt::next` (futures-util or
/// tokio-stream). It must be polled inside a tokio runtime (it sleeps between empty polls
/// when following). See the module documentation for when the cursor is saved.
///
/// ```
/// use futures_util::StreamExt;
/// use net_sdk::{AdapterConfig, EventBus, EventBusConfig, EventStream, IngestTyped,
///               MemoryCursor, StreamOptions};
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = EventBus::new(EventBusConfig::builder().adapter(AdapterConfig::memory()).build()?).await?;
/// for n in 0..3 {
///     bus.ingest_typed(&serde_json::json!({ "n": n }))?;
/// }
/// bus.flush().await?;
///
/// let mut events = EventStream::new(&bus, StreamOptions::default(), MemoryCursor::default())?;
/// let mut seen = 0;
/// while let Some(event) = events.next().await {
///     let _event = event?;
///     seen += 1;
/// }
/// assert_eq!(seen, 3);
/// // The store now holds a cursor after the third event: a new stream starts there.
/// let store = events.into_store();
/// let mut rest = EventStream::new(&bus, StreamOptions::default(), store)?;
/// assert!(rest.next().await.is_none());
/// # drop(rest);
/// bus.shutdown().await?;
/// # Ok(())
/// # }
/// ```
pub struct EventStream<'a, S: CursorStore> {
    bus: &'a EventBus,
    store: S,
    options: StreamOptions,
    dedup: Dedup,
    /// The cursor after every event fetched so far.
    cursor: Option<String>,
    /// The cursor last given to the store.
    saved: Option<String>,
    buffer: VecDeque<StoredEvent>,
    state: State<'a>,
    delivered: u64,
    backoff: Duration,
}

impl<S: CursorStore> fmt::Debug for EventStream<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("options", &self.options)
            .field("cursor", &self.cursor)
            .field("buffered", &self.buffer.len())
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

impl<'a, S: CursorStore> EventStream<'a, S> {
    /// A stream over `bus` starting at the cursor in `store` (or at the start, when the store
    /// is empty or `options.from_start` is set).
    pub fn new(
        bus: &'a EventBus,
        options: StreamOptions,
        mut store: S,
    ) -> Result<Self, StreamError> {
        let cursor = if options.from_start {
            None
        } else {
            store.load().map_err(StreamError::Cursor)?
        };
        Ok(Self {
            bus,
            store,
            dedup: Dedup::with_capacity(options.dedup_capacity),
            backoff: options.min_backoff,
            options,
            saved: cursor.clone(),
            cursor,
            buffer: VecDeque::new(),
            state: State::Idle,
            delivered: 0,
        })
    }

    /// Events fetched but not handed out yet.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Hands out every buffered event at once (for a consumer that stops and wants to finish
    /// the current page before it saves the cursor with [`EventStream::commit`]).
    pub fn drain_buffered(&mut self) -> Vec<StoredEvent> {
        self.delivered += self.buffer.len() as u64;
        self.buffer.drain(..).collect()
    }

    /// Saves the cursor now if every fetched event has been handed out; returns whether the
    /// store holds the current position afterwards. The stream also does this on its own
    /// before it fetches the next page and when it ends.
    pub fn commit(&mut self) -> Result<bool, StreamError> {
        if !self.buffer.is_empty() {
            return Ok(false);
        }
        if self.cursor != self.saved {
            if let Some(cursor) = &self.cursor {
                self.store.save(cursor).map_err(StreamError::Cursor)?;
            }
            self.saved = self.cursor.clone();
        }
        Ok(true)
    }

    /// The bus cursor after every event fetched so far (`None`: nothing read yet).
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// Events handed out so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The dedup filter (for its `dropped()` count).
    pub fn dedup(&self) -> &Dedup {
        &self.dedup
    }

    /// Gives the cursor store back.
    pub fn into_store(self) -> S {
        self.store
    }

    fn remaining(&self) -> Option<u64> {
        self.options
            .max_events
            .map(|max| max.saturating_sub(self.delivered))
    }

    fn request(&self) -> ConsumeRequest {
        let mut limit = self.options.page_size.max(1);
        if let Some(remaining) = self.remaining() {
            limit = limit.min(usize::try_from(remaining).unwrap_or(usize::MAX));
        }
        let mut request = ConsumeRequest::new(limit).ordering(self.options.ordering);
        if let Some(cursor) = &self.cursor {
            request = request.from(cursor.clone());
        }
        if let Some(filter) = &self.options.filter {
            request = request.filter(filter.clone());
        }
        request
    }

    fn sleep(&mut self) {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.options.max_backoff);
        self.state = State::Sleeping(Box::pin(tokio::time::sleep(wait)));
    }
}

impl<S: CursorStore + Unpin> Stream for EventStream<'_, S> {
    type Item = Result<StoredEvent, StreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.buffer.pop_front() {
                this.delivered += 1;
                return Poll::Ready(Some(Ok(event)));
            }
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Idle => {
                    if let Err(e) = this.commit() {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                    if this.remaining() == Some(0) {
                        this.state = State::Done;
                        continue;
                    }
                    let request = this.request();
                    let bus = this.bus;
                    this.state = State::Fetching(Box::pin(bus.poll(request)));
                }
                State::Fetching(future) => {
                    let response = match future.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(response) => response,
                    };
                    match response {
                        Ok(page) => {
                            this.cursor = Some(page.cursor);
                            let fetched = !page.events.is_empty();
                            this.buffer.extend(this.dedup.filter(page.events));
                            if fetched || page.has_more {
                                this.backoff = this.options.min_backoff;
                                this.state = State::Idle;
                            } else if this.options.follow {
                                this.sleep();
                            } else {
                                this.state = State::Done;
                                if let Err(e) = this.commit() {
                                    return Poll::Ready(Some(Err(e)));
                                }
                            }
                        }
                        Err(ConsumerError::Adapter(e)) => {
                            this.sleep();
                            return Poll::Ready(Some(Err(ConsumerError::Adapter(e).into())));
                        }
                        Err(e) => {
                            this.state = State::Done;
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    }
                }
                State::Sleeping(sleep) => match sleep.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => this.state = State::Idle,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AdapterConfig, IngestTyped};
    use futures_util::StreamExt;
    use net_core::EventBusConfig;

    async fn bus_with(events: u64) -> EventBus {
        let config = EventBusConfig::builder()
            .shards(4)
            .adapter(AdapterConfig::memory())
            .build()
            .unwrap();
        let bus = EventBus::new(config).await.unwrap();
        for n in 0..events {
            bus.ingest_typed(&serde_json::json!({ "n": n, "even": n % 2 == 0 }))
                .unwrap();
        }
        bus.flush().await.unwrap();
        bus
    }

    async fn collect<S: CursorStore + Unpin>(stream: &mut EventStream<'_, S>) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(event) = stream.next().await {
            let value: serde_json::Value = serde_json::from_slice(&event.unwrap().raw).unwrap();
            out.push(value["n"].as_u64().unwrap());
        }
        out.sort_unstable();
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resumes_where_it_stopped_without_repeats() {
        let bus = bus_with(250).await;
        let options = StreamOptions::default().page_size(40).max_events(100);
        let mut first = EventStream::new(&bus, options.clone(), MemoryCursor::default()).unwrap();
        let a = collect(&mut first).await;
        assert_eq!(a.len(), 100);
        let store = first.into_store();
        assert!(store.get().is_some());
        let mut second =
            EventStream::new(&bus, StreamOptions::default().page_size(40), store).unwrap();
        let b = collect(&mut second).await;
        assert_eq!(b.len(), 150);
        let mut all: Vec<u64> = a.into_iter().chain(b).collect();
        all.sort_unstable();
        assert_eq!(all, (0..250).collect::<Vec<_>>());
        // From the start again, ignoring the saved cursor.
        let store = second.into_store();
        let mut again =
            EventStream::new(&bus, StreamOptions::default().from_start(true), store).unwrap();
        assert_eq!(collect(&mut again).await.len(), 250);
        drop(again);
        bus.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn filters_and_follows() {
        let bus = bus_with(10).await;
        let filter = Filter::parse(r#"{"even": true}"#).unwrap();
        let options = StreamOptions::default()
            .filter(filter)
            .follow(true)
            .backoff(Duration::from_millis(1), Duration::from_millis(5));
        let mut stream = EventStream::new(&bus, options, MemoryCursor::default()).unwrap();
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(stream.next().await.unwrap().unwrap());
        }
        // Following: nothing more yet, so the next item waits until an event arrives.
        let waiting = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
        assert!(
            waiting.is_err(),
            "a following stream must wait for new events"
        );
        assert!(stream.commit().unwrap());
        bus.ingest_typed(&serde_json::json!({ "n": 10, "even": true }))
            .unwrap();
        bus.flush().await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the new event arrives")
            .unwrap()
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&next.raw).unwrap();
        assert_eq!(value["n"], 10);
        drop(stream);
        bus.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_saved_cursor_ends_the_stream_with_an_error() {
        let bus = bus_with(1).await;
        let store = MemoryCursor::new(Some("not a cursor!".into()));
        let mut stream = EventStream::new(&bus, StreamOptions::default(), store).unwrap();
        match stream.next().await {
            Some(Err(StreamError::Consumer(ConsumerError::InvalidCursor(_)))) => {}
            other => panic!("expected an invalid cursor, got {other:?}"),
        }
        assert!(stream.next().await.is_none());
        drop(stream);
        bus.shutdown().await.unwrap();
    }

    /// Hands out every stored event twice, as a backend that stored a retried batch again
    /// would.
    struct Doubling(net_adapter::MemoryAdapter);

    #[async_trait::async_trait]
    impl net_adapter::Adapter for Doubling {
        async fn on_batch(
            &self,
            batch: std::sync::Arc<net_adapter::Batch>,
        ) -> Result<(), net_adapter::AdapterError> {
            self.0.on_batch(batch).await
        }

        async fn poll_shard(
            &self,
            shard_id: u16,
            cursor: Option<&str>,
            limit: usize,
        ) -> Result<net_adapter::ShardPollResult, net_adapter::AdapterError> {
            let mut page = self.0.poll_shard(shard_id, cursor, limit).await?;
            page.events = page
                .events
                .into_iter()
                .flat_map(|e| [e.clone(), e])
                .collect();
            Ok(page)
        }

        async fn flush(&self) -> Result<(), net_adapter::AdapterError> {
            self.0.flush().await
        }

        async fn shutdown(&self) -> Result<(), net_adapter::AdapterError> {
            self.0.shutdown().await
        }

        fn name(&self) -> &str {
            "doubling"
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn copies_are_dropped() {
        let config = EventBusConfig::builder()
            .shards(2)
            .adapter(AdapterConfig::custom(Doubling(
                net_adapter::MemoryAdapter::new(),
            )))
            .build()
            .unwrap();
        let bus = EventBus::new(config).await.unwrap();
        for n in 0..100 {
            bus.ingest_typed(&serde_json::json!({ "n": n })).unwrap();
        }
        bus.flush().await.unwrap();
        let mut stream =
            EventStream::new(&bus, StreamOptions::default(), MemoryCursor::default()).unwrap();
        let got = collect(&mut stream).await;
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(stream.dedup().dropped(), 100);
        drop(stream);
        bus.shutdown().await.unwrap();
    }

    #[test]
    fn file_cursor_round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileCursor::new(dir.path().join("c"));
        assert_eq!(store.load().unwrap(), None);
        store.save("one").unwrap();
        store.save("two").unwrap();
        assert_eq!(store.load().unwrap().as_deref(), Some("two"));
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let mut missing_dir = FileCursor::new(dir.path().join("no/such/dir/c"));
        assert!(missing_dir.save("x").is_err());
        // A cursor that would not read back as itself is refused, leaving the old one.
        assert!(store.save("").is_err());
        assert!(store.save("a\nb").is_err());
        assert_eq!(store.load().unwrap().as_deref(), Some("two"));
    }

    /// A save that blocks on the disk must not hold up the runtime's other tasks. The save's
    /// temporary file is made a FIFO, so opening it blocks until someone reads it, as a write
    /// to a stalled disk would; the runtime has a single worker, so a save that blocked that
    /// worker would stop every other task.
    #[cfg(unix)]
    #[test]
    fn a_file_cursor_save_that_blocks_leaves_the_runtime_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let tmp = dir.path().join(format!(".c.tmp-{}", std::process::id()));
        let made = std::process::Command::new("mkfifo").arg(&tmp).status();
        assert!(made.expect("mkfifo runs").success(), "mkfifo failed");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (started, wait_started) = std::sync::mpsc::channel();
        let mut store = FileCursor::new(&path);
        let save = runtime.spawn(async move {
            started.send(()).unwrap();
            store.save("AQID")
        });
        wait_started.recv().unwrap();
        // Give the save time to reach its blocking open.
        std::thread::sleep(Duration::from_millis(50));
        // The other task and the wait for it use no tokio timer: the runtime's only worker
        // drives the timers, and it may be the thread that is stuck.
        let (ran, wait_ran) = std::sync::mpsc::channel();
        drop(runtime.spawn(async move { ran.send(()).unwrap() }));
        let other_ran = wait_ran.recv_timeout(Duration::from_secs(5)).is_ok();
        let save_was_blocked = !save.is_finished();
        // Unblock the save whatever happened, then check.
        let written = fs::read(&tmp).unwrap();
        // The FIFO takes the bytes but cannot be synced; what matters is that they arrived.
        let _ = runtime.block_on(save).unwrap();
        assert!(save_was_blocked, "the save did not block on the FIFO");
        assert!(
            other_ran,
            "a blocked save stopped the runtime's other tasks"
        );
        assert_eq!(written, b"AQID\n");
    }

    /// Loads a cursor file holding `bytes`: the cursor, or the kind of error.
    fn load(bytes: &[u8]) -> Result<Option<String>, io::ErrorKind> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        fs::write(&path, bytes).unwrap();
        FileCursor::new(path).load().map_err(|e| e.kind())
    }

    #[test]
    fn damaged_cursor_files_are_refused_not_restarted_from_the_start() {
        assert_eq!(load(b"AQID\n"), Ok(Some("AQID".into())));
        assert_eq!(load(b"  AQID  "), Ok(Some("AQID".into())));
        for bytes in [
            &b""[..],
            b"\n",
            b"   \n\t",
            b"\x00\x01\x02",
            b"\xff\xfe cursor",
            b"AQID\nAQIE\n",
            b"AQ\x00ID",
        ] {
            assert_eq!(load(bytes), Err(io::ErrorKind::InvalidData), "{bytes:?}");
        }
        let huge = vec![b'A'; (MAX_CURSOR_FILE_BYTES + 1) as usize];
        assert_eq!(load(&huge), Err(io::ErrorKind::InvalidData));
    }
}
