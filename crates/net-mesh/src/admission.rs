//! Admission of unauthenticated connections, and the rate-limited account of failed
//! handshakes.
//!
//! The listener accepts every connection the kernel hands it, at once: it never stops calling
//! `accept` because handshake slots are full, so the kernel's backlog never fills up and an
//! honest dialer is always seen. Each accepted connection takes a place in the
//! [`Admission`] table until its handshake ends. The table is bounded in total and per source
//! address; when a newcomer finds it full, the connection that has shown the least
//! [`Progress`] (oldest first among equals) is evicted to make room, taken from the
//! newcomer's own address when that address is at its cap, otherwise from the address that
//! holds the most places.
//!
//! Why eviction and not refusal: refusing newcomers lets whoever filled the table first keep
//! it, and a flood from the same address as an honest peer (a shared NAT, or loopback)
//! cannot be told apart by address. An honest dialer sends its first handshake message as
//! soon as TCP connects and answers each handshake message within a round trip, so it never
//! waits long since its last progress, while a stalled connection's wait only grows: a
//! flood evicts its own stalled connections long before it reaches the honest one.
//!
//! Who touches what: the table sits behind one mutex held only for bookkeeping (never across
//! an `.await`). Each connection holds a [`Ticket`]; it advances its own progress (an
//! atomic, read by eviction), waits on its eviction signal, and leaves the table when the
//! handshake succeeds ([`Ticket::promote`]) or when the ticket is dropped.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::warn;

/// How far a connection has come in its handshake; less progress is evicted first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Progress {
    /// Accepted; no complete handshake message read yet.
    Accepted = 0,
    /// The first handshake message arrived and was answered.
    Started = 1,
    /// Noise finished and the peer's identity is proven; waiting for its `Hello`.
    Authenticated = 2,
}

/// A connection's progress and when it last made some, shared by its ticket and the table.
struct Cell {
    stage: AtomicU8,
    /// Microseconds after the table's epoch at which the stage last advanced (or the
    /// connection was admitted).
    since: AtomicU64,
}

struct Entry {
    ip: IpAddr,
    progress: Arc<Cell>,
    /// Held only to be dropped: that tells the connection it was evicted.
    _evict: oneshot::Sender<()>,
}

#[derive(Default)]
struct Table {
    next: u64,
    /// By admission order: a smaller key is older.
    entries: BTreeMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        if let Some(n) = self.per_ip.get_mut(&entry.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&entry.ip);
            }
        }
        Some(entry)
    }

    /// The entry of `ip` that has waited longest since its last progress (the less
    /// advanced, then the older, among equals).
    fn weakest_of(&self, ip: IpAddr) -> Option<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| e.ip == ip)
            .min_by_key(|(id, e)| {
                (
                    e.progress.since.load(Ordering::Relaxed),
                    e.progress.stage.load(Ordering::Relaxed),
                    **id,
                )
            })
            .map(|(id, _)| *id)
    }

    /// The address holding the most places (the smallest address among equals, so the
    /// choice does not depend on hash order).
    fn busiest(&self) -> Option<IpAddr> {
        self.per_ip
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(ip, _)| *ip)
    }
}

/// The bounded table of connections still in their handshake.
pub(crate) struct Admission {
    total: usize,
    per_addr: usize,
    epoch: Instant,
    table: Mutex<Table>,
}

impl Admission {
    /// A table of at most `total` places, at most `per_addr` of them per source address.
    pub(crate) fn new(total: usize, per_addr: usize) -> Arc<Self> {
        Arc::new(Self {
            total: total.max(1),
            per_addr: per_addr.clamp(1, total.max(1)),
            epoch: Instant::now(),
            table: Mutex::new(Table::default()),
        })
    }

    /// Admits a connection from `ip`, evicting others if the table or the address is full.
    /// Returns its ticket and how many connections were evicted for it.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> (Ticket, usize) {
        let progress = Arc::new(Cell {
            stage: AtomicU8::new(Progress::Accepted as u8),
            since: AtomicU64::new(micros_since(self.epoch)),
        });
        let (evict, evicted) = oneshot::channel();
        let mut victims = Vec::new();
        let id = {
            let mut table = self.table.lock();
            while table.per_ip.get(&ip).copied().unwrap_or(0) >= self.per_addr {
                match table.weakest_of(ip).and_then(|v| table.remove(v)) {
                    Some(victim) => victims.push(victim),
                    None => break,
                }
            }
            while table.entries.len() >= self.total {
                let victim = table
                    .busiest()
                    .and_then(|busy| table.weakest_of(busy))
                    .and_then(|v| table.remove(v));
                match victim {
                    Some(victim) => victims.push(victim),
                    None => break,
                }
            }
            let id = table.next;
            table.next += 1;
            table.entries.insert(
                id,
                Entry {
                    ip,
                    progress: progress.clone(),
                    _evict: evict,
                },
            );
            *table.per_ip.entry(ip).or_insert(0) += 1;
            id
        };
        // Dropping the senders (outside the lock) wakes the evicted connections.
        let evictions = victims.len();
        drop(victims);
        (
            Ticket {
                admission: self.clone(),
                id,
                progress,
                evicted,
            },
            evictions,
        )
    }

    /// Connections in their handshake now.
    pub(crate) fn len(&self) -> usize {
        self.table.lock().entries.len()
    }
}

/// A connection's place in the [`Admission`] table.
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    progress: Arc<Cell>,
    /// Resolves when the connection was evicted.
    pub(crate) evicted: oneshot::Receiver<()>,
}

impl Ticket {
    /// A handle that records progress without borrowing the ticket.
    pub(crate) fn progress(&self) -> ProgressHandle {
        ProgressHandle {
            cell: self.progress.clone(),
            epoch: self.admission.epoch,
        }
    }

    /// Leaves the table because the handshake succeeded. False when the connection was
    /// evicted first (it must then close).
    pub(crate) fn promote(self) -> bool {
        self.admission.table.lock().remove(self.id).is_some()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.table.lock().remove(self.id);
    }
}

/// Records a connection's progress for eviction; see [`Ticket::progress`].
#[derive(Clone)]
pub(crate) struct ProgressHandle {
    cell: Arc<Cell>,
    epoch: Instant,
}

impl ProgressHandle {
    /// Records how far the handshake got (progress never goes back), and when.
    pub(crate) fn advance(&self, to: Progress) {
        if self.cell.stage.fetch_max(to as u8, Ordering::Relaxed) < to as u8 {
            self.cell
                .since
                .store(micros_since(self.epoch), Ordering::Relaxed);
        }
    }
}

fn micros_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Why a handshake (or an accept) failed, as counted and logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum FailReason {
    /// The peer closed the connection, or a socket error.
    Closed,
    /// The first message or the whole handshake missed its deadline.
    Timeout,
    /// Evicted from a full admission table to make room for a newer connection.
    Evicted,
    /// Noise failed: wrong pre-shared key, tampering or garbage.
    Crypto,
    /// The peer's identity payload is malformed or its signature does not verify.
    Identity,
    /// The peer's node id is not on the allow-list.
    NotAllowed,
    /// Oversized or malformed records, or a first frame other than a valid `Hello`.
    Protocol,
    /// `accept` itself failed (out of file descriptors, for instance).
    Accept,
}

impl FailReason {
    /// Every reason, in a fixed order.
    pub(crate) const ALL: [FailReason; 8] = [
        FailReason::Closed,
        FailReason::Timeout,
        FailReason::Evicted,
        FailReason::Crypto,
        FailReason::Identity,
        FailReason::NotAllowed,
        FailReason::Protocol,
        FailReason::Accept,
    ];

    /// A short stable label (logs and metrics).
    pub(crate) fn label(self) -> &'static str {
        match self {
            FailReason::Closed => "closed",
            FailReason::Timeout => "timeout",
            FailReason::Evicted => "evicted",
            FailReason::Crypto => "crypto",
            FailReason::Identity => "identity",
            FailReason::NotAllowed => "not_allowed",
            FailReason::Protocol => "protocol",
            FailReason::Accept => "accept",
        }
    }
}

#[derive(Default)]
struct Window {
    counts: BTreeMap<FailReason, u64>,
    last: Option<(Option<SocketAddr>, String)>,
    last_line: Option<Instant>,
}

/// Counts failed handshakes by reason and logs them at most about once per interval.
///
/// After a quiet interval the first failure is logged at once, with its address and reason;
/// failures that follow within the interval are only counted, and [`FailureLog::flush`]
/// (called periodically and at shutdown) logs them as one summary line with counts by
/// reason. So a flood costs at most two lines per interval, whatever its rate.
pub(crate) struct FailureLog {
    interval: Duration,
    window: Mutex<Window>,
    totals: [AtomicU64; FailReason::ALL.len()],
}

impl FailureLog {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            window: Mutex::new(Window::default()),
            totals: Default::default(),
        }
    }

    /// Counts a failure and logs it if the log has been quiet for an interval.
    pub(crate) fn record(&self, reason: FailReason, addr: Option<SocketAddr>, detail: &str) {
        self.totals[reason as usize].fetch_add(1, Ordering::Relaxed);
        let mut w = self.window.lock();
        let quiet =
            w.counts.is_empty() && w.last_line.is_none_or(|at| at.elapsed() >= self.interval);
        if quiet {
            w.last_line = Some(Instant::now());
            drop(w);
            match addr {
                Some(addr) => warn!(
                    %addr,
                    reason = reason.label(),
                    detail,
                    "mesh handshake failed (further failures are summarised)"
                ),
                None => warn!(
                    reason = reason.label(),
                    detail, "mesh accept failed (further failures are summarised)"
                ),
            }
            return;
        }
        *w.counts.entry(reason).or_insert(0) += 1;
        w.last = Some((addr, detail.to_owned()));
    }

    /// Logs one summary line of the failures counted since the last line, if any.
    pub(crate) fn flush(&self) {
        let mut w = self.window.lock();
        if w.counts.is_empty() {
            return;
        }
        let counts = std::mem::take(&mut w.counts);
        let last = w.last.take();
        w.last_line = Some(Instant::now());
        drop(w);
        let failed: u64 = counts.values().sum();
        let reasons = counts
            .iter()
            .map(|(r, n)| format!("{}={n}", r.label()))
            .collect::<Vec<_>>()
            .join(" ");
        let (last_addr, last_detail) = match last {
            Some((Some(addr), detail)) => (addr.to_string(), detail),
            Some((None, detail)) => ("-".to_owned(), detail),
            None => ("-".to_owned(), String::new()),
        };
        warn!(
            failed,
            reasons = %reasons,
            last_addr = %last_addr,
            last_detail = %last_detail,
            "mesh handshakes failed"
        );
    }

    /// How many failures of each reason so far, in [`FailReason::ALL`] order.
    pub(crate) fn totals(&self) -> Vec<(FailReason, u64)> {
        FailReason::ALL
            .iter()
            .map(|&r| (r, self.totals[r as usize].load(Ordering::Relaxed)))
            .collect()
    }

    /// The interval between summary lines.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn the_connection_waiting_longest_since_progress_is_evicted_and_the_newcomer_stays() {
        let admission = Admission::new(100, 3);
        let tick = || std::thread::sleep(Duration::from_millis(2));
        let (mut a, _) = admission.admit(ip(1));
        tick();
        let (b, _) = admission.admit(ip(1));
        tick();
        let (mut c, _) = admission.admit(ip(1));
        tick();
        // b made progress last, so the one waiting longest (a) goes first, then c.
        b.progress().advance(Progress::Started);
        tick();
        let (_d, evicted) = admission.admit(ip(1));
        assert_eq!(evicted, 1);
        assert_eq!(
            a.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        );
        assert_eq!(
            c.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        );
        assert_eq!(admission.len(), 3);
        // Another newcomer evicts c (waiting since before b's progress and d's arrival).
        let (_e, _) = admission.admit(ip(1));
        assert_eq!(
            c.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        );
        assert!(b.promote(), "b was not evicted");
        assert_eq!(admission.len(), 2);
    }

    #[test]
    fn a_full_table_evicts_from_the_busiest_address() {
        let admission = Admission::new(4, 4);
        let (mut quiet, _) = admission.admit(ip(9));
        let mut flood: Vec<Ticket> = (0..3).map(|_| admission.admit(ip(1)).0).collect();
        let (_newcomer, evicted) = admission.admit(ip(2));
        assert_eq!(evicted, 1);
        assert_eq!(
            quiet.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Empty),
            "the older connection of a quiet address survives a flood from another"
        );
        let gone = flood
            .iter_mut()
            .map(|t| t.evicted.try_recv())
            .filter(|r| *r == Err(oneshot::error::TryRecvError::Closed))
            .count();
        assert_eq!(gone, 1);
        assert_eq!(admission.len(), 4);
    }

    #[test]
    fn dropping_or_promoting_a_ticket_frees_its_place() {
        let admission = Admission::new(2, 2);
        let (a, _) = admission.admit(ip(1));
        let (b, _) = admission.admit(ip(1));
        drop(a);
        assert!(b.promote());
        assert_eq!(admission.len(), 0);
        assert!(admission.table.lock().per_ip.is_empty());
    }

    #[test]
    fn failures_are_counted_by_reason_and_logged_sparingly() {
        let log = FailureLog::new(Duration::from_secs(3600));
        for _ in 0..1000 {
            log.record(FailReason::Crypto, None, "bad");
        }
        log.record(FailReason::Timeout, None, "slow");
        let totals: BTreeMap<_, _> = log.totals().into_iter().collect();
        assert_eq!(totals[&FailReason::Crypto], 1000);
        assert_eq!(totals[&FailReason::Timeout], 1);
        // One failure was logged at once; the rest wait for the summary.
        let pending: u64 = log.window.lock().counts.values().sum();
        assert_eq!(pending, 1000);
        log.flush();
        assert!(log.window.lock().counts.is_empty());
        // Within the interval after a summary, the next failure is only counted.
        log.record(FailReason::Closed, None, "eof");
        assert_eq!(log.window.lock().counts.values().sum::<u64>(), 1);
    }
}
