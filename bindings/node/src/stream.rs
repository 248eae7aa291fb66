//! `NativeEventStream`: `net_sdk::EventStream` behind promises; `index.js` makes it an async
//! iterator.
//!
//! The Rust stream borrows its bus, so it lives inside a task of the runtime that owns a
//! handle on the bus. JavaScript asks the task for one event at a time; the task polls the
//! Rust stream once per request and answers. Nothing is read ahead of what JavaScript asked
//! for, so the cursor is saved exactly when the Rust stream saves it: before it fetches the
//! next page, once every event of the previous page was handed out, and when it ends.

use crate::bus::{filter, ordering};
use crate::errors;
use crate::event::EventRecord;
use napi_derive::napi;
use net_sdk::{CursorStore, EventBus, FileCursor, MemoryCursor, StoredEvent, StreamError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};

/// The settings of `stream`. Every field is optional.
#[napi(object)]
#[derive(Default)]
pub struct StreamOptions {
    /// A file the cursor is loaded from at the start and saved to as events are handed out.
    pub cursor_file: Option<String>,
    /// Keep waiting for new events at the end instead of finishing (default false).
    pub follow: Option<bool>,
    /// Events fetched per poll (default 256).
    pub page_size: Option<u32>,
    /// A filter, as JSON text (the JavaScript layer serializes objects).
    pub filter: Option<String>,
    /// `'sequence'` (the default) or `'timestamp'`.
    #[napi(ts_type = "'sequence' | 'timestamp'")]
    pub ordering: Option<String>,
    /// Start from the oldest event even when the cursor file holds a position.
    pub from_start: Option<bool>,
    /// Finish after this many events.
    pub max_events: Option<u32>,
    /// Dedup ids remembered to skip copies (default: the Rust stream's).
    pub dedup_capacity: Option<u32>,
    /// Shortest wait between empty polls while following.
    pub min_backoff_ms: Option<u32>,
    /// Longest wait between empty polls while following.
    pub max_backoff_ms: Option<u32>,
}

impl StreamOptions {
    fn options(&self) -> napi::Result<net_sdk::StreamOptions> {
        let mut options = net_sdk::StreamOptions::default()
            .follow(self.follow.unwrap_or(false))
            .page_size(self.page_size.unwrap_or(256) as usize)
            .ordering(ordering(self.ordering.as_deref())?)
            .from_start(self.from_start.unwrap_or(false));
        if let Some(filter) = filter(self.filter.as_deref())? {
            options = options.filter(filter);
        }
        if let Some(n) = self.max_events {
            options = options.max_events(u64::from(n));
        }
        if let Some(n) = self.dedup_capacity {
            options = options.dedup_capacity(n as usize);
        }
        if self.min_backoff_ms.is_some() || self.max_backoff_ms.is_some() {
            let ms = |x: Option<u32>, default: u64| x.map_or(default, u64::from);
            let min = Duration::from_millis(ms(self.min_backoff_ms, 10));
            let max = Duration::from_millis(ms(self.max_backoff_ms, 1000)).max(min);
            options = options.backoff(min, max);
        }
        Ok(options)
    }
}

type Item = Option<Result<StoredEvent, StreamError>>;

/// A request to the task that owns the Rust stream.
enum Request {
    /// The next event (`None`: the stream ended).
    Next(oneshot::Sender<Item>),
    /// Save the cursor if every fetched event was handed out.
    Commit(oneshot::Sender<Result<bool, StreamError>>),
}

/// The cursor store of a stream: a file, or memory when no file was given.
enum Store {
    File(FileCursor),
    Memory(MemoryCursor),
}

impl CursorStore for Store {
    fn load(&mut self) -> std::io::Result<Option<String>> {
        match self {
            Store::File(s) => s.load(),
            Store::Memory(s) => s.load(),
        }
    }

    fn save(&mut self, cursor: &str) -> std::io::Result<()> {
        match self {
            Store::File(s) => s.save(cursor),
            Store::Memory(s) => s.save(cursor),
        }
    }
}

/// Owns the Rust stream and answers requests until every sender is gone. A stream that
/// cannot start (its cursor file is unreadable) answers the first request with the error.
async fn serve(
    bus: Arc<EventBus>,
    options: net_sdk::StreamOptions,
    store: Store,
    mut requests: mpsc::Receiver<Request>,
) {
    use futures_util::StreamExt;
    let mut stream = match net_sdk::EventStream::new(&bus, options, store) {
        Ok(stream) => stream,
        Err(e) => {
            let mut error = Some(e);
            while let Some(request) = requests.recv().await {
                match request {
                    Request::Next(reply) => {
                        let _ = reply.send(error.take().map(Err));
                    }
                    Request::Commit(reply) => {
                        let _ = reply.send(Ok(false));
                    }
                }
            }
            return;
        }
    };
    // An item fetched for a request whose promise went away.
    let mut kept: Option<Item> = None;
    while let Some(request) = requests.recv().await {
        match request {
            Request::Next(mut reply) => {
                let item = match kept.take() {
                    Some(item) => item,
                    None => {
                        tokio::select! {
                            item = stream.next() => item,
                            () = reply.closed() => continue,
                        }
                    }
                };
                if let Err(item) = reply.send(item) {
                    kept = Some(item);
                }
            }
            Request::Commit(reply) => {
                let _ = reply.send(stream.commit());
            }
        }
    }
}

/// Events of a bus, one per `next()`, without copies (by dedup id), resuming from a saved
/// cursor. `index.js` wraps it as an async iterator.
#[napi]
pub struct NativeEventStream {
    /// `None` once `close` was called: the task then ends, saving nothing more.
    requests: Arc<Mutex<Option<mpsc::Sender<Request>>>>,
}

impl NativeEventStream {
    /// Starts the task of a stream over `bus`.
    pub(crate) fn start(bus: Arc<EventBus>, settings: StreamOptions) -> napi::Result<Self> {
        let options = settings.options()?;
        let store = match &settings.cursor_file {
            Some(path) => Store::File(FileCursor::new(PathBuf::from(path))),
            None => Store::Memory(MemoryCursor::default()),
        };
        let (requests, receiver) = mpsc::channel(1);
        napi::bindgen_prelude::spawn(serve(bus, options, store, receiver));
        Ok(Self {
            requests: Arc::new(Mutex::new(Some(requests))),
        })
    }

    async fn sender(&self) -> Option<mpsc::Sender<Request>> {
        self.requests.lock().await.clone()
    }
}

#[napi]
impl NativeEventStream {
    /// The next event, or `null` when the stream ended (or was closed).
    #[napi]
    pub async fn next(&self) -> napi::Result<Option<EventRecord>> {
        let Some(requests) = self.sender().await else {
            return Ok(None);
        };
        let (reply, answer) = oneshot::channel();
        if requests.send(Request::Next(reply)).await.is_err() {
            return Ok(None);
        }
        match answer.await {
            Ok(Some(Ok(event))) => Ok(Some(EventRecord::from(event))),
            Ok(Some(Err(e))) => Err(errors::stream(e)),
            Ok(None) | Err(_) => Ok(None),
        }
    }

    /// Saves the cursor now if every fetched event was handed out; resolves to whether the
    /// store holds the current position.
    #[napi]
    pub async fn commit(&self) -> napi::Result<bool> {
        let Some(requests) = self.sender().await else {
            return Ok(false);
        };
        let (reply, answer) = oneshot::channel();
        if requests.send(Request::Commit(reply)).await.is_err() {
            return Ok(false);
        }
        match answer.await {
            Ok(result) => result.map_err(errors::stream),
            Err(_) => Ok(false),
        }
    }

    /// Ends the stream: later `next()` calls resolve to `null`. The task stops once the
    /// request it is serving (if any) is answered.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        self.requests.lock().await.take();
        Ok(())
    }
}
