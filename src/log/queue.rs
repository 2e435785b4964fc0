//! Queue: the per-worker queue of serialized log records, in native memory,
//! bounded, batched, with retries. Lua owns the timer and the socket; this
//! module only decides what to send, when, and what to forget.
//!
//! # Model
//! Records are appended to the newest batch, already framed for the sink
//! ([`Framing`]); a batch holds at most `batch_max_entries` records and is
//! *sealed* when full or when taken for sending (no record is ever added to a
//! batch after it was first taken). Batches leave the queue oldest first.
//!
//! Sending is a three-step protocol, one batch at a time:
//! [`Queue::take`] hands out the oldest batch and marks it *in flight*; Lua
//! sends it, then calls [`Queue::ack`] (delivered: forgotten) or
//! [`Queue::fail`] (kept at the front for a retry after a backoff, or dropped
//! when its retry window is over). Every `take` must be followed by one
//! `ack` or `fail` with the batch's id, including on Lua error paths: until
//! then nothing else can be taken. An `ack` or `fail` with any other id is
//! ignored, so a late answer can never remove a batch twice.
//!
//! # Bound
//! [`Queue::bytes`] counts the framed payload of every batch, in flight
//! included, and never exceeds `queue_max_bytes`. A push that would exceed it
//! first drops whole batches, oldest first, skipping the one in flight (it is
//! never dropped while in flight; a batch that failed and waits for its retry
//! is no longer in flight and is the first to go). If the record cannot fit
//! even then, because it is larger than the bound or than what the batch in
//! flight leaves free, the record itself is dropped and no batch is.
//!
//! # Backoff
//! The backoff belongs to the collector, not to a batch: after the `k`-th
//! consecutive failed attempt the next attempt waits
//! `min(RETRY_BASE_S * 2^(k-1), RETRY_CAP_S)` = 1, 2, 4, 8, 16, 32, 60, 60 ...
//! seconds, and the first delivery resets it. So dropping a waiting batch
//! (overflow or give-up) does not make the next one hammer a collector that is
//! down. Each batch has its own retry window of `retry_max_s` from its first
//! attempt: the delay is shortened so that the last retry happens at the end of
//! the window (a collector back within the window still gets the batch), and a
//! failure at or after the end of the window drops the batch. `retry_max_s = 0`
//! means a single attempt.
//!
//! # Accounting
//! Every record is counted once in `queued` when pushed, then exactly once in
//! `sent` (its batch was acked) or `dropped` (oversize, overflow, retry window),
//! unless it is still in the queue:
//! `queued == sent + dropped + len_records()` at all times.
//!
//! Time is passed in (seconds, as `ngx.now()`); the queue reads no clock.

use std::collections::VecDeque;

/// First retry delay, seconds.
pub const RETRY_BASE_S: f64 = 1.0;
/// Longest retry delay, seconds.
pub const RETRY_CAP_S: f64 = 60.0;

/// How records are framed into a batch's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// tcp sink: each record followed by `\n`.
    Ndjson,
    /// http sink: the batch is one JSON array, `[record,record]`.
    JsonArray,
}

impl Framing {
    /// Framed bytes a record adds to a batch that already has records:
    /// its `\n`, or its `,` separator.
    fn per_record(self) -> usize {
        1
    }

    /// Framed bytes a batch costs beyond its records: none for ndjson; for an
    /// array, `[` and `]` minus the one separator its first record does not
    /// need.
    fn per_batch(self) -> usize {
        match self {
            Framing::Ndjson => 0,
            Framing::JsonArray => 1,
        }
    }
}

/// The most a new batch reserves up front (below glibc's mmap threshold, so
/// a batch of one record at low traffic costs no system call).
const BATCH_RESERVE_MAX: usize = 64 * 1024;

/// Queue counters, for `stats()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueCounters {
    /// Records pushed (every one, including those dropped at once).
    pub queued: u64,
    /// Records in acked batches.
    pub sent: u64,
    /// Failed send attempts (calls to `fail` for the batch in flight).
    pub retried: u64,
    /// Records dropped: oversize, overflow, or retry window over.
    pub dropped: u64,
    /// Framed bytes currently queued, batch in flight included.
    pub bytes: u64,
    /// Batches currently queued, batch in flight included.
    pub batches: u64,
}

/// One batch of framed records.
#[derive(Debug)]
struct Batch {
    id: u64,
    /// Framed records; for an array, `]` is appended when sealed.
    payload: Vec<u8>,
    /// Framed size, counted in the bound (equals `payload.len()` once sealed).
    size: usize,
    records: usize,
    sealed: bool,
    /// When it was first taken.
    first_attempt: Option<f64>,
}

impl Batch {
    fn seal(&mut self, framing: Framing) {
        if self.sealed {
            return;
        }
        if framing == Framing::JsonArray {
            self.payload.push(b']');
        }
        // A payload grown by doubling may hold up to twice its length; a
        // sealed batch can wait for minutes, so give the slack back.
        self.payload.shrink_to_fit();
        self.sealed = true;
    }
}

/// The per-worker queue of serialized records.
#[derive(Debug)]
pub struct Queue {
    framing: Framing,
    batch_max_entries: usize,
    queue_max_bytes: usize,
    batches: VecDeque<Batch>,
    /// Whether the front batch is in flight.
    in_flight: bool,
    next_id: u64,
    bytes: usize,
    records: usize,
    /// Consecutive failed attempts (reset by an ack).
    failures: u32,
    /// No attempt before this time.
    not_before: f64,
    counters: QueueCounters,
}

impl Queue {
    /// An empty queue. `batch_max_entries` below 1 is taken as 1.
    pub fn new(framing: Framing, batch_max_entries: usize, queue_max_bytes: usize) -> Self {
        Queue {
            framing,
            batch_max_entries: batch_max_entries.max(1),
            queue_max_bytes,
            batches: VecDeque::new(),
            in_flight: false,
            next_id: 1,
            bytes: 0,
            records: 0,
            failures: 0,
            not_before: 0.0,
            counters: QueueCounters::default(),
        }
    }

    /// Appends one serialized record (one JSON object, no newline).
    ///
    /// The record goes into the newest batch, or a new one when that is
    /// sealed. If the queue would then exceed `queue_max_bytes`, whole
    /// batches are dropped oldest first (never the one in flight) until it
    /// fits; a record that cannot fit even then is dropped instead. Drops are
    /// counted; see the module docs.
    ///
    /// Returns whether this record filled its batch (`batch_max_entries`):
    /// the batch is then ready, and the sink need not wait for its flush
    /// interval to send it.
    pub fn push(&mut self, record: &[u8]) -> bool {
        self.counters.queued += 1;
        let per_record = record.len() + self.framing.per_record();
        let alone = per_record + self.framing.per_batch();
        let in_flight_bytes = match self.batches.front() {
            Some(b) if self.in_flight => b.size,
            _ => 0,
        };
        if in_flight_bytes.saturating_add(alone) > self.queue_max_bytes {
            self.counters.dropped += 1;
            return false;
        }
        // Fits once every batch not in flight is gone, so this ends.
        loop {
            let cost = if self.open_batch().is_some() {
                per_record
            } else {
                alone
            };
            if self.bytes + cost <= self.queue_max_bytes {
                break;
            }
            self.drop_oldest_waiting();
        }
        let framing = self.framing;
        let full_at = self.batch_max_entries;
        if self.open_batch().is_none() {
            self.new_batch(per_record);
        }
        let Some(batch) = self.batches.back_mut() else {
            // Unreachable (a batch was just ensured); keeps the books right.
            self.counters.dropped += 1;
            return false;
        };
        match (framing, batch.records) {
            (Framing::JsonArray, 0) => batch.payload.push(b'['),
            (Framing::JsonArray, _) => batch.payload.push(b','),
            (Framing::Ndjson, _) => {}
        }
        batch.payload.extend_from_slice(record);
        if framing == Framing::Ndjson {
            batch.payload.push(b'\n');
        }
        batch.records += 1;
        let added = if batch.records == 1 {
            alone
        } else {
            per_record
        };
        batch.size += added;
        let full = batch.records >= full_at;
        if full {
            batch.seal(framing);
        }
        self.bytes += added;
        self.records += 1;
        full
    }

    /// The newest batch if records may still be added to it.
    fn open_batch(&mut self) -> Option<&mut Batch> {
        self.batches.back_mut().filter(|b| !b.sealed)
    }

    /// Opens a batch with room for `batch_max_entries` records the size of
    /// its first (`per_record` framed bytes), up to [`BATCH_RESERVE_MAX`]:
    /// grown from empty, a batch of a hundred 3 KiB records was reallocated
    /// and copied a dozen times. The slack goes back when it is sealed.
    fn new_batch(&mut self, per_record: usize) {
        let id = self.next_id;
        self.next_id += 1;
        let room = per_record
            .saturating_mul(self.batch_max_entries)
            .saturating_add(self.framing.per_batch())
            .min(BATCH_RESERVE_MAX)
            .min(self.queue_max_bytes);
        self.batches.push_back(Batch {
            id,
            payload: Vec::with_capacity(room),
            size: 0,
            records: 0,
            sealed: false,
            first_attempt: None,
        });
    }

    /// Drops the oldest batch that is not in flight, if any.
    fn drop_oldest_waiting(&mut self) {
        let index = usize::from(self.in_flight);
        if let Some(b) = self.batches.remove(index) {
            self.forget(&b);
            self.counters.dropped += b.records as u64;
        }
    }

    fn forget(&mut self, b: &Batch) {
        self.bytes -= b.size;
        self.records -= b.records;
    }

    /// Takes the oldest batch for sending at `now` (seconds).
    ///
    /// Returns `(id, payload, records)`: the id to pass to [`Queue::ack`] or
    /// [`Queue::fail`], the framed payload (ndjson lines, or one JSON array)
    /// and its record count. The batch is sealed and stays in the queue, in
    /// flight, until then. `None` when the queue is empty, a batch is already
    /// in flight, or `now` is before [`Queue::next_attempt_at`] (backoff).
    pub fn take(&mut self, now: f64) -> Option<(u64, &[u8], usize)> {
        if self.in_flight || now < self.not_before {
            return None;
        }
        let framing = self.framing;
        let b = self.batches.front_mut()?;
        b.seal(framing);
        b.first_attempt.get_or_insert(now);
        self.in_flight = true;
        Some((b.id, &b.payload, b.records))
    }

    /// The batch in flight was delivered: forget it and reset the backoff.
    ///
    /// Returns whether `id` was the batch in flight; any other id is ignored.
    pub fn ack(&mut self, id: u64) -> bool {
        if !self.is_in_flight(id) {
            return false;
        }
        self.in_flight = false;
        if let Some(b) = self.batches.pop_front() {
            self.forget(&b);
            self.counters.sent += b.records as u64;
        }
        self.failures = 0;
        self.not_before = 0.0;
        true
    }

    /// Delivery of the batch in flight failed at `now` (seconds).
    ///
    /// The batch goes back to the front, no longer in flight, and the next
    /// attempt waits for the backoff (module docs), shortened to end at the
    /// batch's retry window (`retry_max_s` after its first attempt). When the
    /// window is over, the batch is dropped and its records counted as dropped;
    /// the backoff still applies to the next batch.
    ///
    /// Returns the delay in seconds before the batch's next attempt, or `None`
    /// if it was dropped or `id` was not the batch in flight (ignored).
    pub fn fail(&mut self, id: u64, now: f64, retry_max_s: f64) -> Option<f64> {
        if !self.is_in_flight(id) {
            return None;
        }
        self.in_flight = false;
        self.counters.retried += 1;
        self.failures = self.failures.saturating_add(1);
        let backoff = backoff(self.failures);
        self.not_before = now + backoff;
        let first = self.batches.front().and_then(|b| b.first_attempt)?;
        let left = first + retry_max_s - now;
        // `!(left > 0)` also drops on a NaN window.
        if left.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            if let Some(b) = self.batches.pop_front() {
                self.forget(&b);
                self.counters.dropped += b.records as u64;
            }
            return None;
        }
        let delay = backoff.min(left);
        self.not_before = now + delay;
        Some(delay)
    }

    fn is_in_flight(&self, id: u64) -> bool {
        self.in_flight && self.batches.front().is_some_and(|b| b.id == id)
    }

    /// When the next attempt may happen (seconds, comparable to `now`;
    /// `0.0` when there is no backoff), `None` when there is nothing to send
    /// or a batch is in flight.
    pub fn next_attempt_at(&self) -> Option<f64> {
        if self.in_flight || self.batches.is_empty() {
            None
        } else {
            Some(self.not_before)
        }
    }

    /// Forgets the backoff so the next [`Queue::take`] may happen at once
    /// (worker exit: one last attempt for what is left). Failures still count
    /// towards each batch's retry window.
    pub fn clear_backoff(&mut self) {
        self.failures = 0;
        self.not_before = 0.0;
    }

    /// The counters; `bytes` and `batches` are current values.
    pub fn counters(&self) -> QueueCounters {
        QueueCounters {
            bytes: self.bytes as u64,
            batches: self.batches.len() as u64,
            ..self.counters
        }
    }

    /// Records currently queued, batch in flight included.
    pub fn len_records(&self) -> usize {
        self.records
    }

    /// Framed bytes currently queued, batch in flight included.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The delay after `failures` consecutive failed attempts (at least 1).
fn backoff(failures: u32) -> f64 {
    let doublings = failures.saturating_sub(1).min(30);
    (RETRY_BASE_S * f64::from(1u32 << doublings)).min(RETRY_CAP_S)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn rec(n: usize) -> Vec<u8> {
        format!(r#"{{"n":{n}}}"#).into_bytes()
    }

    fn taken(q: &mut Queue, now: f64) -> (u64, Vec<u8>, usize) {
        let (id, p, n) = q.take(now).expect("a batch to take");
        (id, p.to_vec(), n)
    }

    fn numbers(framing: Framing, payload: &[u8]) -> Vec<u64> {
        let values: Vec<Value> = match framing {
            Framing::JsonArray => serde_json::from_slice(payload).expect("a JSON array"),
            Framing::Ndjson => {
                assert_eq!(payload.last(), Some(&b'\n'));
                payload[..payload.len() - 1]
                    .split(|&b| b == b'\n')
                    .map(|l| serde_json::from_slice(l).expect("a JSON line"))
                    .collect()
            }
        };
        values.iter().map(|v| v["n"].as_u64().expect("n")).collect()
    }

    fn assert_balanced(q: &Queue) {
        let c = q.counters();
        assert_eq!(c.queued, c.sent + c.dropped + q.len_records() as u64);
        assert_eq!(c.bytes, q.bytes() as u64);
    }

    #[test]
    fn records_are_grouped_into_batches_of_at_most_max_entries() {
        let mut q = Queue::new(Framing::Ndjson, 3, 1 << 20);
        for n in 0..7 {
            q.push(&rec(n));
        }
        assert_eq!(q.counters().batches, 3);
        let mut sizes = Vec::new();
        while let Some((id, _, n)) = q.take(0.0) {
            sizes.push(n);
            assert!(q.ack(id));
        }
        assert_eq!(sizes, [3, 3, 1]);
        assert_eq!(q.counters().sent, 7);
        assert_eq!(q.bytes(), 0);
        assert_balanced(&q);
    }

    #[test]
    fn ndjson_batch_is_one_record_per_line() {
        let mut q = Queue::new(Framing::Ndjson, 10, 1 << 20);
        q.push(b"{\"n\":1}");
        q.push(b"{\"n\":2}");
        let size = q.bytes();
        let (_, payload, n) = taken(&mut q, 0.0);
        assert_eq!(payload, b"{\"n\":1}\n{\"n\":2}\n");
        assert_eq!(n, 2);
        assert_eq!(size, payload.len());
    }

    #[test]
    fn json_array_batch_is_a_valid_array() {
        let mut q = Queue::new(Framing::JsonArray, 10, 1 << 20);
        for n in 0..3 {
            q.push(&rec(n));
        }
        let size = q.bytes();
        let (_, payload, _) = taken(&mut q, 0.0);
        assert_eq!(payload, br#"[{"n":0},{"n":1},{"n":2}]"#);
        assert_eq!(numbers(Framing::JsonArray, &payload), [0, 1, 2]);
        assert_eq!(size, payload.len());
    }

    #[test]
    fn full_json_array_batch_is_closed_before_take() {
        let mut q = Queue::new(Framing::JsonArray, 2, 1 << 20);
        q.push(&rec(0));
        q.push(&rec(1));
        q.push(&rec(2));
        let (id, payload, _) = taken(&mut q, 0.0);
        assert_eq!(numbers(Framing::JsonArray, &payload), [0, 1]);
        q.ack(id);
        let (_, payload, _) = taken(&mut q, 0.0);
        assert_eq!(numbers(Framing::JsonArray, &payload), [2]);
    }

    #[test]
    fn a_push_that_fills_its_batch_says_so() {
        let mut q = Queue::new(Framing::Ndjson, 3, 1 << 20);
        let full: Vec<bool> = (0..7).map(|n| q.push(&rec(n))).collect();
        assert_eq!(full, [false, false, true, false, false, true, false]);
        let (id, payload, n) = taken(&mut q, 0.0);
        assert_eq!((numbers(Framing::Ndjson, &payload), n), (vec![0, 1, 2], 3));
        q.ack(id);
        let (id, _, n) = taken(&mut q, 0.0);
        assert_eq!(n, 3);
        q.ack(id);
        // a batch taken before it filled (the flush interval) is sealed as is
        let (_, _, n) = taken(&mut q, 0.0);
        assert_eq!(n, 1);
        assert!(!q.push(&rec(7)), "a new batch after the one in flight");
        // a record dropped for the bound fills nothing
        let mut tiny = Queue::new(Framing::Ndjson, 1, 4);
        assert!(!tiny.push(&rec(0)));
    }

    #[test]
    fn records_pushed_while_in_flight_go_into_a_new_batch() {
        let mut q = Queue::new(Framing::JsonArray, 10, 1 << 20);
        q.push(&rec(0));
        let (id, payload, _) = taken(&mut q, 0.0);
        q.push(&rec(1));
        assert!(q.take(0.0).is_none(), "one batch in flight at a time");
        q.ack(id);
        assert_eq!(numbers(Framing::JsonArray, &payload), [0]);
        let (_, payload, _) = taken(&mut q, 0.0);
        assert_eq!(numbers(Framing::JsonArray, &payload), [1]);
    }

    #[test]
    fn overflow_drops_the_oldest_batch_and_counts_its_records() {
        // Each record is 7 bytes + '\n' = 8; batches of 2 = 16 bytes; bound 48.
        let mut q = Queue::new(Framing::Ndjson, 2, 48);
        for n in 0..6 {
            q.push(&rec(n));
        }
        assert_eq!(q.bytes(), 48);
        q.push(&rec(6));
        let c = q.counters();
        assert_eq!(c.dropped, 2);
        assert_eq!(q.len_records(), 5);
        assert!(q.bytes() <= 48);
        let (_, payload, _) = taken(&mut q, 0.0);
        assert_eq!(numbers(Framing::Ndjson, &payload), [2, 3]);
        assert_balanced(&q);
    }

    #[test]
    fn overflow_never_drops_the_batch_in_flight() {
        let mut q = Queue::new(Framing::Ndjson, 2, 48);
        for n in 0..6 {
            q.push(&rec(n));
        }
        let (id, _, _) = taken(&mut q, 0.0);
        q.push(&rec(6));
        assert_eq!(q.counters().dropped, 2);
        assert!(q.ack(id), "the batch in flight survived");
        assert_eq!(q.counters().sent, 2);
        let (_, payload, _) = taken(&mut q, 0.0);
        assert_eq!(numbers(Framing::Ndjson, &payload), [4, 5]);
        assert_balanced(&q);
    }

    #[test]
    fn record_that_cannot_fit_beside_the_batch_in_flight_is_dropped_alone() {
        let mut q = Queue::new(Framing::Ndjson, 10, 40);
        for n in 0..4 {
            q.push(&rec(n)); // 32 bytes
        }
        let (id, _, _) = taken(&mut q, 0.0);
        q.push(&[b'x'; 8]); // 9 bytes: 41 > 40
        assert_eq!(q.counters().dropped, 1);
        assert_eq!(q.len_records(), 4);
        q.push(&rec(4)); // 8 bytes: fits
        assert_eq!(q.counters().dropped, 1);
        assert!(q.ack(id));
        assert_balanced(&q);
    }

    #[test]
    fn oversize_record_is_dropped_and_counted() {
        let mut q = Queue::new(Framing::JsonArray, 10, 1024);
        q.push(&rec(0));
        q.push(&vec![b'x'; 1023]); // '[' + 1023 + ']' = 1025 > 1024
        let c = q.counters();
        assert_eq!((c.queued, c.dropped), (2, 1));
        assert_eq!(q.len_records(), 1, "the older record stays");
        q.push(&vec![b'x'; 1022]); // exactly the bound alone: the older batch goes
        assert_eq!(q.counters().dropped, 2);
        assert_eq!(q.bytes(), 1024);
        assert_balanced(&q);
    }

    #[test]
    fn retry_backoff_doubles_up_to_the_cap() {
        let mut q = Queue::new(Framing::Ndjson, 10, 1 << 20);
        q.push(&rec(0));
        let mut now = 100.0;
        let mut delays = Vec::new();
        for _ in 0..9 {
            let (id, _, _) = taken(&mut q, now);
            let d = q.fail(id, now, 1e9).expect("retried");
            assert_eq!(q.next_attempt_at(), Some(now + d));
            assert!(q.take(now + d - 0.001).is_none(), "backoff holds");
            delays.push(d);
            now += d;
        }
        assert_eq!(delays, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]);
        assert_eq!(q.counters().retried, 9);
        assert_balanced(&q);
    }

    #[test]
    fn batch_is_dropped_when_its_retry_window_is_over() {
        let mut q = Queue::new(Framing::Ndjson, 10, 1 << 20);
        q.push(&rec(0));
        q.push(&rec(1));
        let mut now = 0.0;
        let mut attempts = Vec::new();
        loop {
            let (id, _, _) = taken(&mut q, now);
            attempts.push(now);
            match q.fail(id, now, 60.0) {
                Some(d) => now += d,
                None => break,
            }
        }
        // The last retry is moved to the end of the window.
        assert_eq!(attempts, [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 60.0]);
        let c = q.counters();
        assert_eq!((c.dropped, c.retried, c.bytes), (2, 7, 0));
        assert_eq!(q.next_attempt_at(), None);
        assert_balanced(&q);
    }

    #[test]
    fn zero_retry_window_means_one_attempt() {
        let mut q = Queue::new(Framing::Ndjson, 10, 1 << 20);
        q.push(&rec(0));
        let (id, _, _) = taken(&mut q, 5.0);
        assert_eq!(q.fail(id, 5.0, 0.0), None);
        assert_eq!(q.counters().dropped, 1);
    }

    #[test]
    fn backoff_carries_over_to_the_next_batch_until_an_ack() {
        let mut q = Queue::new(Framing::Ndjson, 1, 1 << 20);
        q.push(&rec(0));
        q.push(&rec(1));
        let (id, _, _) = taken(&mut q, 0.0);
        assert_eq!(q.fail(id, 0.0, 0.0), None, "dropped");
        assert_eq!(
            q.next_attempt_at(),
            Some(1.0),
            "the collector is still backed off"
        );
        assert!(q.take(0.5).is_none());
        let (id, _, _) = taken(&mut q, 1.0);
        assert!(q.ack(id));
        q.push(&rec(2));
        assert_eq!(q.next_attempt_at(), Some(0.0), "an ack resets the backoff");
    }

    #[test]
    fn clear_backoff_allows_an_immediate_attempt() {
        let mut q = Queue::new(Framing::Ndjson, 10, 1 << 20);
        q.push(&rec(0));
        let (id, _, _) = taken(&mut q, 0.0);
        q.fail(id, 0.0, 60.0);
        assert!(q.take(0.0).is_none());
        q.clear_backoff();
        assert!(q.take(0.0).is_some());
    }

    #[test]
    fn ack_or_fail_with_a_wrong_id_is_ignored() {
        let mut q = Queue::new(Framing::Ndjson, 10, 1 << 20);
        q.push(&rec(0));
        assert!(!q.ack(1), "nothing in flight");
        let (id, _, _) = taken(&mut q, 0.0);
        assert!(!q.ack(id + 1));
        assert_eq!(q.fail(id + 1, 0.0, 60.0), None);
        assert_eq!(q.counters().retried, 0);
        assert!(q.ack(id));
        assert!(!q.ack(id), "a second ack is ignored");
        assert_eq!(q.fail(id, 0.0, 60.0), None);
        let c = q.counters();
        assert_eq!((c.sent, c.dropped, c.retried), (1, 0, 0));
    }

    #[test]
    fn failed_batch_is_resent_unchanged_with_the_same_id() {
        let mut q = Queue::new(Framing::JsonArray, 10, 1 << 20);
        q.push(&rec(0));
        let (id, first, _) = taken(&mut q, 0.0);
        q.push(&rec(1));
        q.fail(id, 0.0, 60.0);
        let (again, payload, n) = taken(&mut q, 1.0);
        assert_eq!((again, payload, n), (id, first, 1));
    }

    #[test]
    fn waiting_batch_is_dropped_by_overflow_after_a_failure() {
        let mut q = Queue::new(Framing::Ndjson, 2, 32);
        q.push(&rec(0));
        q.push(&rec(1));
        let (id, _, _) = taken(&mut q, 0.0);
        q.fail(id, 0.0, 60.0);
        q.push(&rec(2));
        q.push(&rec(3));
        q.push(&rec(4));
        assert_eq!(q.counters().dropped, 2);
        assert!(!q.ack(id), "it was dropped");
        let (_, payload, _) = taken(&mut q, 1.0);
        assert_eq!(numbers(Framing::Ndjson, &payload), [2, 3]);
    }

    #[test]
    fn next_attempt_is_none_when_empty_or_in_flight() {
        let mut q = Queue::new(Framing::Ndjson, 10, 1 << 20);
        assert_eq!(q.next_attempt_at(), None);
        q.push(&rec(0));
        assert_eq!(q.next_attempt_at(), Some(0.0));
        let _ = taken(&mut q, 0.0);
        assert_eq!(q.next_attempt_at(), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(usize),
        Take,
        Ack,
        AckWrong,
        Fail(f64),
        FailWrong,
        Wait(f64),
        ClearBackoff,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0usize..120).prop_map(Op::Push),
            2 => Just(Op::Take),
            2 => Just(Op::Ack),
            1 => Just(Op::AckWrong),
            2 => (0.0f64..30.0).prop_map(Op::Fail),
            1 => Just(Op::FailWrong),
            2 => (0.0f64..20.0).prop_map(Op::Wait),
            1 => Just(Op::ClearBackoff),
        ]
    }

    fn framing() -> impl Strategy<Value = Framing> {
        prop_oneof![Just(Framing::Ndjson), Just(Framing::JsonArray)]
    }

    proptest! {
        #[test]
        fn no_record_is_lost_or_duplicated_and_the_bound_holds(
            framing in framing(),
            batch_max in 1usize..6,
            max_bytes in 0usize..600,
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let mut q = Queue::new(framing, batch_max, max_bytes);
            let mut now = 0.0;
            let mut next = 0usize;
            let mut flight: Option<(u64, Vec<u8>)> = None;
            let mut delivered: Vec<u64> = Vec::new();
            let mut apply = |q: &mut Queue, op: &Op, now: &mut f64| match op {
                Op::Push(pad) => {
                    // Unique, self-identifying records of varied size.
                    let r = format!(r#"{{"n":{next},"p":"{}"}}"#, "x".repeat(*pad));
                    next += 1;
                    q.push(r.as_bytes());
                }
                Op::Take => {
                    if let Some((id, p, n)) = q.take(*now) {
                        assert!(flight.is_none());
                        assert_eq!(numbers(framing, p).len(), n);
                        assert!(n <= batch_max);
                        flight = Some((id, p.to_vec()));
                    }
                }
                Op::Ack => {
                    if let Some((id, p)) = flight.take() {
                        assert!(q.ack(id));
                        delivered.extend(numbers(framing, &p));
                    }
                }
                Op::AckWrong => {
                    let wrong = flight.as_ref().map_or(0, |(id, _)| id + 1);
                    assert!(!q.ack(wrong));
                }
                Op::Fail(retry_max) => {
                    if let Some((id, _)) = flight.take() {
                        let before = q.counters().retried;
                        q.fail(id, *now, *retry_max);
                        assert_eq!(q.counters().retried, before + 1);
                    }
                }
                Op::FailWrong => {
                    let wrong = flight.as_ref().map_or(0, |(id, _)| id + 1);
                    let before = q.counters();
                    assert_eq!(q.fail(wrong, *now, 60.0), None);
                    assert_eq!(q.counters(), before);
                }
                Op::Wait(s) => *now += s,
                Op::ClearBackoff => q.clear_backoff(),
            };
            for op in &ops {
                apply(&mut q, op, &mut now);
                let c = q.counters();
                prop_assert_eq!(c.queued, c.sent + c.dropped + q.len_records() as u64);
                prop_assert!(q.bytes() <= max_bytes, "{} > {}", q.bytes(), max_bytes);
            }
            // Drain: deliver everything left.
            if let Some((id, p)) = flight.take() {
                prop_assert!(q.ack(id));
                delivered.extend(numbers(framing, &p));
            }
            q.clear_backoff();
            while let Some((id, p, _)) = q.take(now) {
                let p = p.to_vec();
                prop_assert!(q.ack(id));
                delivered.extend(numbers(framing, &p));
            }
            let c = q.counters();
            prop_assert_eq!((q.len_records(), q.bytes(), c.batches), (0, 0, 0));
            prop_assert_eq!(c.queued, next as u64);
            prop_assert_eq!(c.sent, delivered.len() as u64);
            prop_assert_eq!(c.queued, c.sent + c.dropped);
            // Delivered in push order, hence never twice.
            prop_assert!(delivered.windows(2).all(|w| w[0] < w[1]), "{:?}", delivered);
        }
    }
}
