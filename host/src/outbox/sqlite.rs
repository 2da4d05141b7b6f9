//! The outbox in SQLite: one file, written by one thread per process with group commit.
//!
//! Every [`Store`] call becomes a job sent to a writer thread that owns the connection. The thread
//! waits for a job, takes whatever else is already queued (up to [`MAX_BATCH`]), and runs them all
//! in one transaction; one failing job is rolled back alone (see `run_batch`).
//! The callers hear back once the transaction has committed. So a thousand concurrent `accept`s
//! cost a few commits (and fsyncs), not a thousand, and no tokio worker ever waits on the disk.
//!
//! Several processes may share the file (`hookwasm serve`, a `git-hook` process, the
//! `hookwasm dead-letters` CLI): WAL lets readers run beside the writer, and a writer that finds
//! the file locked waits up to [`BUSY_TIMEOUT`] for it.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::{oneshot, watch};

use super::{
    Accepted, Counts, DeadLetter, Delivery, EventRecord, Feed, FeedFilter, FeedItem, FsyncPolicy,
    Gauge, HistoryFilter, Millis, NewEvent, OnDuplicate, Outcome, Selector, Settled, Settlement,
    Store, StoreError, StoreFuture,
};

/// The schema this code reads and writes, kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 2;

/// How long a write waits for another process to release the file before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most jobs one transaction takes: bounds how long a batch holds the write lock.
const MAX_BATCH: usize = 512;

/// The tables and indexes; every statement is idempotent, so running it on an existing database
/// changes nothing.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    json TEXT NOT NULL,
    accepted_at INTEGER NOT NULL,
    subject TEXT,
    -- 1 once a request routed to observers accepted it: only then is a repeat a duplicate.
    observed INTEGER NOT NULL DEFAULT 1,
    UNIQUE (source, id)
);
-- The history and its feed: a row when an event is first accepted (no handler), then one per
-- handler outcome (one per observer attempt). `id` never repeats, so it orders the live stream.
CREATE TABLE IF NOT EXISTS outcomes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq INTEGER NOT NULL REFERENCES events (seq),
    handler TEXT,
    json TEXT
);
-- Small facts about the file: `pruned_through`, the highest feed id deleted.
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS outcomes_event ON outcomes (event_seq);
CREATE INDEX IF NOT EXISTS outcomes_handler ON outcomes (handler, event_seq);
-- History listings by subject and type, newest first; pruning by age.
CREATE INDEX IF NOT EXISTS events_subject ON events (subject, seq) WHERE subject IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_type ON events (type, seq);
CREATE INDEX IF NOT EXISTS events_accepted ON events (accepted_at);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    event_seq INTEGER NOT NULL REFERENCES events (seq),
    handler TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'claimed', 'done', 'dead')),
    attempts INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    last_error TEXT,
    updated_at INTEGER NOT NULL
);
-- claim: a handler's open deliveries in id order, due_at checked without reading the row.
CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries (handler, id, due_at)
    WHERE state IN ('pending', 'claimed');
-- claim: whether a handler has a delivery under a live lease.
CREATE INDEX IF NOT EXISTS deliveries_claimed ON deliveries (handler, due_at)
    WHERE state = 'claimed';
-- dead-letter selectors by event id.
CREATE INDEX IF NOT EXISTS events_id ON events (id);
-- prune: done deliveries by age.
CREATE INDEX IF NOT EXISTS deliveries_done ON deliveries (updated_at) WHERE state = 'done';
-- dead_letters, retry_dead, discard_dead: only the (few) dead rows.
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (id) WHERE state = 'dead';
-- Finding an event's deliveries: orphan events after prune and discard, foreign key checks.
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_seq);
-- History listings by handler: the events an observer has deliveries of.
CREATE INDEX IF NOT EXISTS deliveries_handler_event ON deliveries (handler, event_seq);
";

/// Brings a version 1 file (before the event history) to version 2; [`SCHEMA`] then adds the
/// new table and indexes.
const MIGRATE_FROM_1: &str = "
ALTER TABLE events ADD COLUMN subject TEXT;
ALTER TABLE events ADD COLUMN observed INTEGER NOT NULL DEFAULT 1;
";

/// A handler's next due deliveries; served by the `deliveries_open` index without sorting.
/// Claimed only when no lease but the claimant's own is live ([`LEASED`]): one delivery per
/// observer at a time, across processes.
const NEXT_DUE: &str = "SELECT id FROM deliveries
    WHERE handler = ?1 AND state IN ('pending', 'claimed') AND due_at <= ?2
    ORDER BY id LIMIT ?3";

/// A handler's deliveries under a live lease (`deliveries_claimed`).
const LEASED: &str = "SELECT id FROM deliveries
    WHERE handler = ?1 AND state = 'claimed' AND due_at > ?2";

/// The dead deliveries a [`Selector`] picks: `?1` id, `?2` handler, `?3` event id, each NULL
/// when unset.
const DEAD_MATCHING: &str = "state = 'dead'
    AND (?1 IS NULL OR id = ?1)
    AND (?2 IS NULL OR handler = ?2)
    AND (?3 IS NULL OR event_seq IN (SELECT seq FROM events WHERE id = ?3))";

/// The `PRAGMA synchronous` value of a policy.
fn pragma(policy: FsyncPolicy) -> &'static str {
    match policy {
        FsyncPolicy::Normal => "NORMAL",
        FsyncPolicy::Full => "FULL",
    }
}

/// The outbox in a SQLite file or in memory. Dropping it finishes the queued calls and closes
/// the database (it waits for the batch being written).
#[derive(Debug)]
pub struct SqliteStore {
    /// The writer thread's queue; `None` only while dropping.
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    /// The writer thread; `None` only while dropping.
    writer: Option<JoinHandle<()>>,
    /// The file (or `:memory:`), for error messages.
    label: Arc<str>,
    /// A second connection for reports (`counts`, `dead_letters`), so a scan of a large outbox
    /// never holds up the writer: WAL lets it read the last commit while the writer goes on.
    /// `None` in memory, where reports go through the writer.
    reader: Option<Arc<std::sync::Mutex<Connection>>>,
    /// Stops the checkpointer thread when dropped (file stores only).
    checkpointer: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    /// Counts the writer's commits, so the live stream wakes when this process writes.
    changed: watch::Sender<u64>,
}

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// WAL pages after which the writer checkpoints by itself: a safety net far above what the
/// checkpointer leaves (SQLite's default is 1,000).
const WRITER_CHECKPOINT_PAGES: i64 = 20_000;

impl SqliteStore {
    /// Opens the outbox file at `path`, creating it (and its folders) if missing.
    pub fn open(path: &Path, sync: FsyncPolicy) -> Result<SqliteStore, StoreError> {
        let label = path.display().to_string();
        let cannot_open = |e: &dyn std::fmt::Display| {
            format!(
                "{label} cannot be opened: {e}; check the path and permissions of \
                 `eventDelivery.path`"
            )
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::io(cannot_open(&e), e))?;
        }
        refuse_empty_file(path, &label)?;
        let conn = Connection::open(path).map_err(|e| StoreError::sqlite(cannot_open(&e), e))?;
        configure(&conn, sync).map_err(|e| StoreError::sqlite(cannot_open(&e), e))?;
        require_wal(&conn, &label)?;
        create_schema(&conn, &label)?;
        check_usable(&conn, &label)?;
        let reader = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|reader| reader.busy_timeout(BUSY_TIMEOUT).map(|()| reader))
            .map_err(|e| StoreError::sqlite(cannot_open(&e), e))?;
        // The writer leaves checkpoints (copying the WAL into the file, with an fsync under
        // `sync: full`) to a thread of their own, so a producer never waits behind one.
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)
            .map_err(|e| StoreError::sqlite(cannot_open(&e), e))?;
        let checkpointing = Connection::open(path)
            .and_then(|c| c.busy_timeout(BUSY_TIMEOUT).map(|()| c))
            .map_err(|e| StoreError::sqlite(cannot_open(&e), e))?;
        let mut store = Self::start(conn, label, sync);
        store.reader = Some(Arc::new(std::sync::Mutex::new(reader)));
        store.checkpointer = Some(start_checkpointer(checkpointing));
        Ok(store)
    }

    /// An outbox in memory: the same code, and nothing survives the process.
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let label = ":memory:".to_string();
        let conn = Connection::open_in_memory()
            .and_then(|conn| configure(&conn, FsyncPolicy::Normal).map(|()| conn))
            .map_err(|e| StoreError::sqlite(format!("{label} cannot be created: {e}"), e))?;
        create_schema(&conn, &label)?;
        Ok(Self::start(conn, label, FsyncPolicy::Normal))
    }

    /// Hands the connection to a new writer thread.
    fn start(conn: Connection, label: String, sync: FsyncPolicy) -> SqliteStore {
        let (jobs, queue) = mpsc::channel();
        let thread_label = label.clone();
        let changed = watch::Sender::new(0);
        let commits = changed.clone();
        let writer = std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || write_loop(&conn, &queue, &thread_label, sync, &commits))
            .expect("the OS refused to start the outbox writer thread");
        SqliteStore {
            jobs: Some(jobs),
            writer: Some(writer),
            label: label.into(),
            reader: None,
            checkpointer: None,
            changed,
        }
    }

    /// Runs a report on the reader connection, off the async executor; in memory, on the writer.
    fn report<T, F>(&self, what: &'static str, op: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let Some(reader) = self.reader.clone() else {
            return self.submit(what, Durability::Bookkeeping, op);
        };
        let label = Arc::clone(&self.label);
        Box::pin(async move {
            let failed = |e: &dyn std::fmt::Display| format!("{label}: {what} failed: {e}");
            tokio::task::spawn_blocking(move || {
                let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
                op(&conn)
            })
            .await
            .map_err(|e| StoreError::io(failed(&e), e.into()))?
            .map_err(|e| StoreError::sqlite(failed(&e), e))
        })
    }

    /// Runs `op` on the writer thread in the next batch; resolves once the batch has committed.
    /// `what` names the operation in error messages. A `Durability::Promise` call's commit is
    /// fsynced under `sync: full`; the worker's bookkeeping is not (see [`Durability`]).
    fn submit<T, F>(&self, what: &'static str, durability: Durability, op: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Call {
            what,
            durability,
            op,
            result: None,
            reply,
        });
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        let label = Arc::clone(&self.label);
        let stopped = move || {
            StoreError::refused(format!(
                "{label}: the writer thread has stopped (see the earlier error); restart hookwasm"
            ))
        };
        Box::pin(async move {
            if !sent {
                return Err(stopped());
            }
            answer.await.map_err(|_| stopped())?
        })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and return.
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        if let Some((stop, checkpointer)) = self.checkpointer.take() {
            drop(stop);
            let _ = checkpointer.join();
        }
    }
}

/// Every [`CHECKPOINT_INTERVAL`], copies what it can of the WAL into the database file without
/// waiting for anyone (`PASSIVE`); every [`TRUNCATE_EVERY`] ticks, and once more when `stop`'s
/// sender is dropped (at exit, after the writer has stopped), also truncates the WAL to zero
/// bytes, so the WAL never keeps the space a burst (or a disk-full episode) gave it, and the
/// database file alone is a complete copy once the host has stopped.
fn start_checkpointer(conn: Connection) -> (mpsc::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("outbox-checkpoint".into())
        .spawn(move || {
            let mut ticks: u32 = 0;
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_INTERVAL)
            {
                ticks = ticks.wrapping_add(1);
                let mode = if ticks.is_multiple_of(TRUNCATE_EVERY) {
                    "TRUNCATE"
                } else {
                    "PASSIVE"
                };
                // A busy or failed checkpoint is retried next time; the writer's own
                // checkpoint bounds the WAL meanwhile.
                let _ = checkpoint(&conn, mode);
            }
            if let Err(e) = checkpoint(&conn, "TRUNCATE") {
                tracing::warn!("the outbox's WAL was not folded into the database at exit: {e}");
            }
        })
        .expect("the OS refused to start the outbox checkpoint thread");
    (stop, thread)
}

/// Checkpoints after this many [`CHECKPOINT_INTERVAL`]s truncate the WAL too.
const TRUNCATE_EVERY: u32 = 30;

/// One `wal_checkpoint` in `mode`; an error when it failed or could not finish (busy).
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<()> {
    let busy: i64 = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        row.get(0)
    })?;
    if busy != 0 {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("another connection was busy".into()),
        ));
    }
    Ok(())
}

impl Store for SqliteStore {
    fn ready(&self) -> StoreFuture<()> {
        // A real write through the writer: a full disk, a read-only file or a stopped writer
        // all fail it. Rewriting `user_version` dirties one page and changes nothing.
        self.submit("readiness probe", Durability::Bookkeeping, |conn| {
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        })
    }

    fn accept(
        &self,
        events: Vec<NewEvent>,
        on_duplicate: OnDuplicate,
        lease: Option<Duration>,
        now: Millis,
    ) -> StoreFuture<Vec<Accepted>> {
        // Events without deliveries are only history: nothing is promised about them.
        let durability = if lease.is_some() || events.iter().any(|e| !e.handlers.is_empty()) {
            Durability::Promise
        } else {
            Durability::Bookkeeping
        };
        self.submit("accept events", durability, move |conn| {
            events
                .iter()
                .map(|event| accept_one(conn, event, &event.event_type, on_duplicate, lease, now))
                .collect()
        })
    }

    fn claim(
        &self,
        handler: String,
        limit: usize,
        lease: Duration,
        now: Millis,
    ) -> StoreFuture<Vec<Delivery>> {
        self.claim_ahead(handler, Vec::new(), limit, lease, now)
    }

    fn claim_ahead(
        &self,
        handler: String,
        holding: Vec<i64>,
        limit: usize,
        lease: Duration,
        now: Millis,
    ) -> StoreFuture<Vec<Delivery>> {
        self.submit("claim deliveries", Durability::Bookkeeping, move |conn| {
            claim(conn, &handler, &holding, limit, lease, now)
        })
    }

    fn release(&self, deliveries: Vec<i64>, now: Millis) -> StoreFuture<()> {
        self.submit("release deliveries", Durability::Bookkeeping, move |conn| {
            let sql = "UPDATE deliveries
                SET state = 'pending', due_at = ?2, attempts = attempts - 1, updated_at = ?2
                WHERE id = ?1 AND state = 'claimed'";
            let mut statement = conn.prepare_cached(sql)?;
            for id in &deliveries {
                statement.execute(params![id, now])?;
            }
            Ok(())
        })
    }

    fn complete(&self, delivery: i64, now: Millis) -> StoreFuture<()> {
        self.submit(
            "complete a delivery",
            Durability::Bookkeeping,
            move |conn| {
                let sql = "UPDATE deliveries SET state = 'done', updated_at = ?2
                WHERE id = ?1 AND state = 'claimed'";
                conn.prepare_cached(sql)?.execute(params![delivery, now])?;
                Ok(())
            },
        )
    }

    fn retry_later(
        &self,
        delivery: i64,
        cause: String,
        retry_at: Millis,
        now: Millis,
    ) -> StoreFuture<()> {
        self.submit("schedule a retry", Durability::Bookkeeping, move |conn| {
            let sql = "UPDATE deliveries
                SET state = 'pending', due_at = ?3, last_error = ?2, updated_at = ?4
                WHERE id = ?1 AND state = 'claimed'";
            conn.prepare_cached(sql)?
                .execute(params![delivery, cause, retry_at, now])?;
            Ok(())
        })
    }

    fn dead_letter(&self, delivery: i64, cause: String, now: Millis) -> StoreFuture<()> {
        self.submit(
            "dead-letter a delivery",
            Durability::Bookkeeping,
            move |conn| {
                let sql = "UPDATE deliveries SET state = 'dead', last_error = ?2, updated_at = ?3
                WHERE id = ?1 AND state = 'claimed'";
                conn.prepare_cached(sql)?
                    .execute(params![delivery, cause, now])?;
                Ok(())
            },
        )
    }

    fn settle(&self, settlements: Vec<Settlement>) -> StoreFuture<()> {
        self.submit("record attempts", Durability::Bookkeeping, move |conn| {
            let mut record = conn.prepare_cached(
                "INSERT INTO outcomes (event_seq, handler, json)
                 SELECT event_seq, ?2, ?3 FROM deliveries WHERE id = ?1",
            )?;
            let mut done = conn.prepare_cached(
                "UPDATE deliveries SET state = 'done', updated_at = ?2
                 WHERE id = ?1 AND state = 'claimed'",
            )?;
            let mut retry = conn.prepare_cached(
                "UPDATE deliveries
                 SET state = 'pending', due_at = ?3, last_error = ?2, updated_at = ?4
                 WHERE id = ?1 AND state = 'claimed'",
            )?;
            let mut dead = conn.prepare_cached(
                "UPDATE deliveries SET state = 'dead', last_error = ?2, updated_at = ?3
                 WHERE id = ?1 AND state = 'claimed'",
            )?;
            for s in &settlements {
                let outcome = outcome_json(&s.outcome);
                record.execute(params![s.delivery, s.outcome.handler, outcome])?;
                match &s.settled {
                    Settled::Done => done.execute(params![s.delivery, s.now])?,
                    Settled::Retry { cause, at } => {
                        retry.execute(params![s.delivery, cause, at, s.now])?
                    }
                    Settled::Dead { cause } => dead.execute(params![s.delivery, cause, s.now])?,
                };
            }
            Ok(())
        })
    }

    fn durable(&self) -> bool {
        // Only a file store has a reader connection.
        self.reader.is_some()
    }

    fn open_count(&self, handler: String) -> StoreFuture<u64> {
        self.report("count open deliveries", move |conn| {
            let sql = "SELECT COUNT(*) FROM deliveries
                WHERE handler = ?1 AND state IN ('pending', 'claimed')";
            let count: i64 = conn
                .prepare_cached(sql)?
                .query_row([&handler], |row| row.get(0))?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }

    fn gauges(&self) -> StoreFuture<Vec<Gauge>> {
        self.report("read gauges", gauges)
    }

    fn counts(&self) -> StoreFuture<Vec<Counts>> {
        self.report("count deliveries", counts)
    }

    fn dead_letters(&self, selector: Selector, limit: usize) -> StoreFuture<Vec<DeadLetter>> {
        self.report("list dead letters", move |conn| {
            dead_letters(conn, &selector, limit)
        })
    }

    fn retry_dead(&self, selector: Selector, now: Millis) -> StoreFuture<u64> {
        self.submit("retry dead letters", Durability::Promise, move |conn| {
            let sql = format!(
                "UPDATE deliveries SET state = 'pending', attempts = 0, due_at = ?4,
                    updated_at = ?4
                 WHERE {DEAD_MATCHING}"
            );
            let (id, handler, event_id) = selector_params(&selector);
            let changed = conn
                .prepare_cached(&sql)?
                .execute(params![id, handler, event_id, now])?;
            Ok(changed as u64)
        })
    }

    fn discard_dead(&self, selector: Selector) -> StoreFuture<u64> {
        self.submit("discard dead letters", Durability::Promise, move |conn| {
            let sql = format!("DELETE FROM deliveries WHERE {DEAD_MATCHING} RETURNING event_seq");
            let (id, handler, event_id) = selector_params(&selector);
            let events = conn
                .prepare_cached(&sql)?
                .query_map(params![id, handler, event_id], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?;
            delete_orphans(conn, &events)?;
            Ok(events.len() as u64)
        })
    }

    fn prune(&self, before: Millis) -> StoreFuture<u64> {
        self.submit(
            "prune delivered events",
            Durability::Bookkeeping,
            move |conn| {
                let pruned = conn
                    .prepare_cached(
                        "DELETE FROM deliveries WHERE state = 'done' AND updated_at < ?1",
                    )?
                    .execute(params![before])?;
                let expired = conn
                    .prepare_cached(
                        "SELECT seq FROM events WHERE accepted_at < ?1
                         AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_seq = seq)",
                    )?
                    .query_map(params![before], |row| row.get(0))?
                    .collect::<rusqlite::Result<Vec<i64>>>()?;
                delete_orphans(conn, &expired)?;
                Ok(pruned as u64)
            },
        )
    }

    fn record_outcomes(&self, seq: i64, outcomes: Vec<Outcome>) -> StoreFuture<()> {
        self.submit("record outcomes", Durability::Bookkeeping, move |conn| {
            let mut insert = conn.prepare_cached(
                "INSERT INTO outcomes (event_seq, handler, json) VALUES (?1, ?2, ?3)",
            )?;
            for outcome in &outcomes {
                insert.execute(params![seq, outcome.handler, outcome_json(outcome)])?;
            }
            Ok(())
        })
    }

    fn record_delivery_outcome(&self, delivery: i64, outcome: Outcome) -> StoreFuture<()> {
        self.submit("record an outcome", Durability::Bookkeeping, move |conn| {
            conn.prepare_cached(
                "INSERT INTO outcomes (event_seq, handler, json)
                 SELECT event_seq, ?2, ?3 FROM deliveries WHERE id = ?1",
            )?
            .execute(params![delivery, outcome.handler, outcome_json(&outcome)])?;
            Ok(())
        })
    }

    fn event(&self, id: String, source: Option<String>) -> StoreFuture<Option<EventRecord>> {
        self.report("read an event", move |conn| {
            let seq: Option<i64> = conn
                .prepare_cached(
                    "SELECT seq FROM events WHERE id = ?1 AND (?2 IS NULL OR source = ?2)
                     ORDER BY seq DESC LIMIT 1",
                )?
                .query_row(params![id, source], |row| row.get(0))
                .optional()?;
            match seq {
                Some(seq) => Ok(history(conn, &[seq])?.pop()),
                None => Ok(None),
            }
        })
    }

    fn feed(&self, after: i64, filter: FeedFilter, limit: usize) -> StoreFuture<Feed> {
        self.report("read the feed", move |conn| {
            feed(conn, after, &filter, limit)
        })
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn events(&self, filter: HistoryFilter, limit: usize) -> StoreFuture<Vec<EventRecord>> {
        self.report("list events", move |conn| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let seqs = conn
                .prepare_cached(
                    "SELECT seq FROM events
                     WHERE (?1 IS NULL OR subject = ?1)
                       AND (?2 IS NULL OR type = ?2)
                       AND (?3 IS NULL
                            OR EXISTS (SELECT 1 FROM outcomes
                                       WHERE outcomes.handler = ?3 AND event_seq = seq)
                            OR EXISTS (SELECT 1 FROM deliveries
                                       WHERE deliveries.handler = ?3 AND event_seq = seq))
                       AND (?4 IS NULL OR seq < ?4)
                     ORDER BY seq DESC LIMIT ?5",
                )?
                .query_map(
                    params![
                        filter.subject,
                        filter.event_type,
                        filter.handler,
                        filter.before,
                        limit
                    ],
                    |row| row.get(0),
                )?
                .collect::<rusqlite::Result<Vec<i64>>>()?;
            history(conn, &seqs)
        })
    }
}

/// The feed rows after `after` that match `filter`, oldest first.
fn feed(
    conn: &Connection,
    after: i64,
    filter: &FeedFilter,
    limit: usize,
) -> rusqlite::Result<Feed> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let items = conn
        .prepare_cached(
            "SELECT o.id, o.handler, o.json, e.seq, e.id, e.source, e.type, e.subject,
                    e.accepted_at, CASE WHEN o.handler IS NULL THEN e.json END
             FROM outcomes o JOIN events e ON e.seq = o.event_seq
             WHERE o.id > ?1
               AND (?2 IS NULL OR e.type = ?2)
               AND (?3 IS NULL OR e.subject = ?3)
               AND (?4 IS NULL OR o.handler = ?4)
             ORDER BY o.id LIMIT ?5",
        )?
        .query_map(
            params![
                after,
                filter.event_type,
                filter.subject,
                filter.handler,
                limit
            ],
            |row| {
                let outcome: Option<String> = row.get(2)?;
                let event: Option<String> = row.get(9)?;
                Ok(FeedItem {
                    id: row.get(0)?,
                    seq: row.get(3)?,
                    event_id: row.get(4)?,
                    source: row.get(5)?,
                    event_type: row.get(6)?,
                    subject: row.get(7)?,
                    accepted_at: row.get(8)?,
                    event: event.and_then(|json| serde_json::from_str(&json).ok()),
                    outcome: outcome.and_then(|json| serde_json::from_str(&json).ok()),
                })
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let head: i64 = conn.query_row("SELECT coalesce(max(id), 0) FROM outcomes", [], |row| {
        row.get(0)
    })?;
    let pruned_through: i64 = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'pruned_through'",
            [],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or(0);
    Ok(Feed {
        items,
        head,
        pruned_through,
    })
}

/// An outcome as stored: its JSON (the handler is also a column, for listings by handler).
fn outcome_json(outcome: &Outcome) -> String {
    serde_json::to_string(outcome).unwrap_or_else(|_| "{}".into())
}

/// The events stored as `seqs`, in that order, each with its outcomes.
fn history(conn: &Connection, seqs: &[i64]) -> rusqlite::Result<Vec<EventRecord>> {
    let mut event = conn.prepare_cached(
        "SELECT id, source, type, subject, accepted_at, json FROM events WHERE seq = ?1",
    )?;
    let mut outcomes = conn.prepare_cached(
        "SELECT json FROM outcomes WHERE event_seq = ?1 AND handler IS NOT NULL ORDER BY id",
    )?;
    let mut records = Vec::with_capacity(seqs.len());
    for &seq in seqs {
        let Some(mut record) = event
            .query_row(params![seq], |row| {
                let json: String = row.get(5)?;
                Ok(EventRecord {
                    id: row.get(0)?,
                    source: row.get(1)?,
                    event_type: row.get(2)?,
                    subject: row.get(3)?,
                    accepted_at: row.get(4)?,
                    seq,
                    event: serde_json::from_str(&json).unwrap_or(serde_json::Value::String(json)),
                    outcomes: Vec::new(),
                })
            })
            .optional()?
        else {
            continue;
        };
        record.outcomes = outcomes
            .query_map(params![seq], |row| row.get::<_, String>(0))?
            .filter_map(|json| match json {
                Ok(json) => serde_json::from_str(&json).ok().map(Ok),
                Err(e) => Some(Err(e)),
            })
            .collect::<rusqlite::Result<_>>()?;
        records.push(record);
    }
    Ok(records)
}

/// Connection settings: wait for other processes, WAL, durability, foreign keys.
fn configure(conn: &Connection, sync: FsyncPolicy) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Every statement the writer runs stays parsed: the store's ~30 plus transaction control.
    conn.set_prepared_statement_cache_capacity(64);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", pragma(sync))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Every job runs in its own savepoint, and a savepoint journals each page it first changes
    // into a sub-journal, a temporary file once it passes 64 KiB: under load the writer thread
    // spent ~20% of its time writing that file. In memory it costs a copy. Commits are unchanged
    // (the WAL is the durable journal; a sub-journal only serves `ROLLBACK TO`).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Refuses a file that stayed in another journal mode (a file system without the shared memory
/// WAL needs, or a database another program keeps in rollback mode).
fn require_wal(conn: &Connection, label: &str) -> Result<(), StoreError> {
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .map_err(|e| StoreError::sqlite(format!("{label} cannot be read: {e}"), e))?;
    if mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    Err(StoreError::refused(format!(
        "{label} cannot be switched to WAL (it is in {mode} mode); put `eventDelivery.path` on a \
         local file system"
    )))
}

/// Refuses an existing zero-length file: SQLite would take it as a new, empty outbox and every
/// event it should hold would be silently gone (a truncated copy, a failed restore).
fn refuse_empty_file(path: &Path, label: &str) -> Result<(), StoreError> {
    let empty = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() == 0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_holds_data = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
    if empty(path) && !wal_holds_data {
        return Err(StoreError::refused(format!(
            "{label} is an empty file (0 bytes), not an outbox; restore it from a backup, or \
             delete it to start a new, empty outbox"
        )));
    }
    Ok(())
}

/// Refuses a file the host could not do its job with: damaged pages, or opened read-only (a
/// read-only file or mount), found now rather than by every producer's first write.
fn check_usable(conn: &Connection, label: &str) -> Result<(), StoreError> {
    let verdict: String = conn
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .map_err(|e| {
            StoreError::sqlite(
                format!(
                    "{label} failed its integrity check: {e}; restore it from a backup or move \
                     it aside"
                ),
                e,
            )
        })?;
    if verdict != "ok" {
        let first = crate::escape::escape(verdict.lines().next().unwrap_or_default()).into_owned();
        return Err(StoreError::refused(format!(
            "{label} failed its integrity check ({first}); restore it from a backup or move it \
             aside"
        )));
    }
    let write = conn
        .execute_batch("BEGIN IMMEDIATE")
        .and_then(|()| conn.pragma_update(None, "user_version", SCHEMA_VERSION))
        .and_then(|()| conn.execute_batch("COMMIT"));
    if let Err(e) = write {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(StoreError::sqlite(
            format!(
                "{label} cannot be written: {e}; check the file's and its folder's permissions, \
                 the mount and the free space"
            ),
            e,
        ));
    }
    Ok(())
}

/// Creates the tables on a new database; refuses one written by a newer schema.
fn create_schema(conn: &Connection, label: &str) -> Result<(), StoreError> {
    let failed = |e: rusqlite::Error| {
        StoreError::sqlite(
            format!(
                "{label} cannot be set up: {e}; check that `eventDelivery.path` names an outbox \
                 file (or a new one) on a disk with free space"
            ),
            e,
        )
    };
    // IMMEDIATE: two processes creating the same new file do it one after the other.
    conn.execute_batch("BEGIN IMMEDIATE").map_err(failed)?;
    let result = read_version(conn, label).and_then(|version| {
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        if version == 1 {
            conn.execute_batch(MIGRATE_FROM_1).map_err(failed)?;
        }
        conn.execute_batch(SCHEMA).map_err(failed)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(failed)
    });
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    conn.execute_batch(end).map_err(failed)?;
    result
}

/// The file's schema version; an error if it is newer than this code knows.
fn read_version(conn: &Connection, label: &str) -> Result<i64, StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| {
            StoreError::sqlite(
                format!(
                    "{label} cannot be read: {e}; check that `eventDelivery.path` names an \
                     outbox file (or a new one)"
                ),
                e,
            )
        })?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::refused(format!(
            "{label} was written by a newer hookwasm (schema version {version}, this one knows \
             up to {SCHEMA_VERSION}); upgrade hookwasm or point `eventDelivery.path` elsewhere"
        )));
    }
    Ok(version)
}

/// The writer thread: one batch per turn until every handle is dropped and the queue is empty.
fn write_loop(
    conn: &Connection,
    queue: &mpsc::Receiver<Box<dyn Job>>,
    label: &str,
    sync: FsyncPolicy,
    changed: &watch::Sender<u64>,
) {
    // The level the connection is at now; `configure` set `sync`.
    let mut level = sync;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let promised = batch.iter().any(|j| j.durability() == Durability::Promise);
        let wanted = if promised { sync } else { FsyncPolicy::Normal };
        // Outside a transaction, as SQLite requires. If the level cannot be set, the batch is
        // not run: its callers hear why, and nothing promised goes unsynced.
        let ready = if wanted == level {
            Ok(())
        } else {
            conn.pragma_update(None, "synchronous", pragma(wanted))
                .map(|()| level = wanted)
                .map_err(|e| write_failed(label, e))
        };
        let outcome = ready.and_then(|()| run_batch(conn, &mut batch, label));
        for job in batch {
            job.reply(outcome.clone().err());
        }
        if outcome.is_ok() {
            changed.send_modify(|commits| *commits += 1);
        }
    }
}

/// Runs the batch in one transaction. `Err` when the batch did not commit: then every job's
/// writes are gone and each caller hears this error.
///
/// The jobs first run side by side with no savepoint: a savepoint copies every page a job first
/// changes (an accepted event touches about fifteen: tables and indexes) into its sub-journal,
/// and that copying was most of the writer's time per job. If a job fails, the transaction is
/// rolled back and the batch runs again with a savepoint around each job, so the failing job is
/// rolled back alone and the others commit, as if the first run never happened (a job reads
/// only what it captured and the database, so it does the same again).
fn run_batch(conn: &Connection, batch: &mut [Box<dyn Job>], label: &str) -> Result<(), StoreError> {
    let result = match run_jobs(conn, batch, label, Isolation::Together) {
        Ok(true) => Ok(()),
        Ok(false) => control(conn, "ROLLBACK", label)
            .and_then(|()| run_jobs(conn, batch, label, Isolation::EachAlone))
            .map(drop),
        Err(e) => Err(e),
    }
    .and_then(|()| control(conn, "COMMIT", label));
    if result.is_err() && !conn.is_autocommit() {
        // Leave no transaction open for the next batch; its writes are lost either way.
        let _ = control(conn, "ROLLBACK", label);
    }
    result
}

/// How [`run_jobs`] keeps one job's failure from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// No savepoints; the run stops at the first failing job.
    Together,
    /// Each job in its own savepoint, rolled back alone if it fails.
    EachAlone,
}

/// Opens the batch's transaction and runs its jobs in it: `Ok(false)` when a job failed
/// (`Together` then stops there, leaving the transaction open for the caller to roll back).
fn run_jobs(
    conn: &Connection,
    batch: &mut [Box<dyn Job>],
    label: &str,
    isolation: Isolation,
) -> Result<bool, StoreError> {
    let alone = isolation == Isolation::EachAlone;
    control(conn, "BEGIN IMMEDIATE", label)?;
    let mut all_ok = true;
    for job in batch.iter_mut() {
        if alone {
            control(conn, "SAVEPOINT job", label)?;
        }
        let ok = job.run(conn, label);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (disk full, I/O error): the jobs before
            // this one lost their writes too.
            return Err(StoreError::refused(format!(
                "{label}: SQLite rolled the transaction back (see the error before this one); \
                 check free disk space"
            )));
        }
        all_ok &= ok;
        if !alone {
            if !ok {
                return Ok(false);
            }
            continue;
        }
        if !ok {
            control(conn, "ROLLBACK TO job", label)?;
        }
        control(conn, "RELEASE job", label)?;
    }
    Ok(all_ok)
}

/// Runs one transaction-control statement from the connection's statement cache: parsed once
/// per connection, not once per job (parsing them was 14% of the writer thread's time).
fn control(conn: &Connection, sql: &str, label: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(drop)
        .map_err(|e| write_failed(label, e))
}

/// A write that failed as a whole, with what to check.
fn write_failed(label: &str, e: rusqlite::Error) -> StoreError {
    StoreError::sqlite(
        format!(
            "{label}: writing failed: {e}; check free disk space and that no other process keeps \
             the file locked"
        ),
        e,
    )
}

/// Whether a call's commit must reach the disk before the caller hears back.
///
/// Only what hookwasm promises someone needs it: an accepted event (the producer is told it is
/// safe) and an operator's retry or discard. The worker's bookkeeping (claims, outcomes) may be
/// lost in a power cut at no cost but a repeated attempt, so it skips the fsync; a later
/// fsynced commit makes it durable too (the WAL is written in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Fsynced under `sync: full`.
    Promise,
    /// Never waits for an fsync.
    Bookkeeping,
}

/// A queued store call, run by the writer thread.
trait Job: Send {
    /// Whether the batch holding it must be fsynced.
    fn durability(&self) -> Durability;

    /// Runs inside the batch's transaction; `false` when it failed (its savepoint is then
    /// rolled back).
    fn run(&mut self, conn: &Connection, label: &str) -> bool;

    /// Answers the caller: its own result, or `batch_error` if the batch did not commit.
    fn reply(self: Box<Self>, batch_error: Option<StoreError>);
}

/// A [`Job`] made of an operation and the channel its caller waits on.
struct Call<T, F> {
    /// Names the operation in error messages.
    what: &'static str,
    /// Whether its commit must be fsynced.
    durability: Durability,
    /// The operation: it may run twice (see [`run_batch`]), so it only reads what it captured.
    op: F,
    /// Its result, once it ran.
    result: Option<Result<T, StoreError>>,
    /// The caller.
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send,
    F: Fn(&Connection) -> rusqlite::Result<T> + Send,
{
    fn durability(&self) -> Durability {
        self.durability
    }

    fn run(&mut self, conn: &Connection, label: &str) -> bool {
        let what = self.what;
        let result = (self.op)(conn)
            .map_err(|e| StoreError::sqlite(format!("{label}: {what} failed: {e}"), e));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn reply(self: Box<Self>, batch_error: Option<StoreError>) {
        let answer = match (self.result, batch_error) {
            (Some(Err(own)), _) => Err(own),
            (_, Some(batch)) => Err(batch),
            (Some(Ok(value)), None) => Ok(value),
            (None, None) => Err(StoreError::refused(format!("{} was not run", self.what))),
        };
        // The caller may have stopped waiting; the work is done either way.
        let _ = self.reply.send(answer);
    }
}

/// Stores one event and its deliveries, or recognises it as a duplicate.
fn accept_one(
    conn: &Connection,
    event: &NewEvent,
    kind: &str,
    on_duplicate: OnDuplicate,
    lease: Option<Duration>,
    now: Millis,
) -> rusqlite::Result<Accepted> {
    let inserted: Option<i64> = conn
        .prepare_cached(
            "INSERT INTO events (source, id, type, json, accepted_at, subject, observed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (source, id) DO NOTHING RETURNING seq",
        )?
        .query_row(
            params![
                event.source,
                event.id,
                kind,
                event.json,
                now,
                event.subject,
                event.for_observers
            ],
            |row| row.get(0),
        )
        .optional()?;
    let (seq, duplicate) = match inserted {
        Some(seq) => {
            conn.prepare_cached("INSERT INTO outcomes (event_seq) VALUES (?1)")?
                .execute(params![seq])?;
            (seq, false)
        }
        None => {
            let (seq, observed): (i64, bool) = conn
                .prepare_cached("SELECT seq, observed FROM events WHERE source = ?1 AND id = ?2")?
                .query_row(params![event.source, event.id], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
            match (observed || !event.for_observers, on_duplicate) {
                // Seen by observers before (or only asking gates again): nothing new to store.
                (true, OnDuplicate::Skip) => {
                    return Ok(Accepted {
                        duplicate: event.for_observers,
                        deliveries: Vec::new(),
                        seq,
                    });
                }
                (true, OnDuplicate::Redeliver) => (refresh_event(conn, event, kind)?, true),
                // Kept for its gates' history only: this is its first acceptance for observers,
                // and what they get is what this acceptance carries (the gates' verdict, say).
                (false, _) => {
                    conn.prepare_cached(
                        "UPDATE events SET observed = 1, json = ?2 WHERE seq = ?1",
                    )?
                    .execute(params![seq, event.json])?;
                    (seq, false)
                }
            }
        }
    };
    let deliveries = event
        .handlers
        .iter()
        .map(|handler| insert_delivery(conn, seq, handler, lease, now))
        .collect::<rusqlite::Result<_>>()?;
    Ok(Accepted {
        duplicate,
        deliveries,
        seq,
    })
}

/// Replaces a stored event's JSON with the one being redelivered; returns its `seq`.
fn refresh_event(conn: &Connection, event: &NewEvent, kind: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "UPDATE events SET json = ?3, type = ?4, observed = 1 WHERE source = ?1 AND id = ?2
         RETURNING seq",
    )?
    .query_row(params![event.source, event.id, event.json, kind], |row| {
        row.get(0)
    })
}

/// One new delivery: pending and due now, or claimed by the caller as attempt 1 under `lease`.
fn insert_delivery(
    conn: &Connection,
    event_seq: i64,
    handler: &str,
    lease: Option<Duration>,
    now: Millis,
) -> rusqlite::Result<i64> {
    let (state, attempts, due_at) = match lease {
        None => ("pending", 0, now),
        Some(lease) => ("claimed", 1, lease_end(now, lease)),
    };
    conn.prepare_cached(
        "INSERT INTO deliveries (event_seq, handler, state, attempts, due_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![event_seq, handler, state, attempts, due_at, now])?;
    Ok(conn.last_insert_rowid())
}

/// When a lease taken at `now` runs out.
fn lease_end(now: Millis, lease: Duration) -> Millis {
    let lease = Millis::try_from(lease.as_millis()).unwrap_or(Millis::MAX);
    now.saturating_add(lease)
}

/// Claims `handler`'s lowest-id due delivery, if any.
fn claim(
    conn: &Connection,
    handler: &str,
    holding: &[i64],
    limit: usize,
    lease: Duration,
    now: Millis,
) -> rusqlite::Result<Vec<Delivery>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // The caller's own live claim (`holding`) does not hold the next batch back; anyone
    // else's does.
    let leased = conn
        .prepare_cached(LEASED)?
        .query_map(params![handler, now], |row| row.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    if leased.iter().any(|id| !holding.contains(id)) {
        return Ok(Vec::new());
    }
    let ids = conn
        .prepare_cached(NEXT_DUE)?
        .query_map(params![handler, now, limit], |row| row.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    let mut mark = conn.prepare_cached(
        "UPDATE deliveries
         SET state = 'claimed', due_at = ?3, attempts = attempts + 1, updated_at = ?2
         WHERE id = ?1 RETURNING event_seq, attempts",
    )?;
    let mut read =
        conn.prepare_cached("SELECT id, json, accepted_at FROM events WHERE seq = ?1")?;
    let mut claimed = Vec::with_capacity(ids.len());
    for id in ids {
        let (event_seq, attempts): (i64, u32) = mark
            .query_row(params![id, now, lease_end(now, lease)], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
        let (event_id, event_json, accepted_at) = read.query_row(params![event_seq], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
        claimed.push(Delivery {
            id,
            handler: handler.to_string(),
            event_id,
            event_json,
            attempt: attempts,
            accepted_at,
        });
    }
    Ok(claimed)
}

/// Deliveries per handler and state, by handler name. `retrying` counts the open deliveries that
/// have failed before: pending after an attempt, or claimed for a second or later attempt.
fn counts(conn: &Connection) -> rusqlite::Result<Vec<Counts>> {
    let mut counts = conn
        .prepare_cached(
            "SELECT handler,
                SUM(state = 'pending'), SUM(state = 'claimed'), SUM(state = 'done'),
                SUM(state = 'dead'),
                SUM((state = 'pending' AND attempts > 0) OR (state = 'claimed' AND attempts > 1))
             FROM deliveries GROUP BY handler ORDER BY handler",
        )?
        .query_map([], |row| {
            Ok(Counts {
                handler: row.get(0)?,
                pending: tally(row, 1)?,
                claimed: tally(row, 2)?,
                done: tally(row, 3)?,
                dead: tally(row, 4)?,
                retrying: tally(row, 5)?,
                oldest_open_at: None,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // Only open deliveries need their event's time: a join over the open rows, not all rows.
    let mut oldest = conn.prepare_cached(
        "SELECT d.handler, MIN(e.accepted_at) FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE d.state IN ('pending', 'claimed') GROUP BY d.handler",
    )?;
    let mut rows = oldest.query([])?;
    while let Some(row) = rows.next()? {
        let handler: String = row.get(0)?;
        if let Some(entry) = counts.iter_mut().find(|c| c.handler == handler) {
            entry.oldest_open_at = row.get(1)?;
        }
    }
    Ok(counts)
}

/// Open and dead deliveries per handler, from the partial indexes only; the oldest open one is
/// the lowest id (ids grow in acceptance order).
fn gauges(conn: &Connection) -> rusqlite::Result<Vec<Gauge>> {
    let mut gauges: Vec<Gauge> = Vec::new();
    let open = "SELECT handler, COUNT(*), MIN(id) FROM deliveries
        WHERE state IN ('pending', 'claimed') GROUP BY handler";
    let mut oldest_ids = Vec::new();
    let mut statement = conn.prepare_cached(open)?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let handler: String = row.get(0)?;
        oldest_ids.push((handler.clone(), row.get::<_, i64>(2)?));
        gauges.push(Gauge {
            handler,
            open: tally(row, 1)?,
            ..Gauge::default()
        });
    }
    let dead = "SELECT handler, COUNT(*) FROM deliveries WHERE state = 'dead' GROUP BY handler";
    let mut statement = conn.prepare_cached(dead)?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let handler: String = row.get(0)?;
        let count = tally(row, 1)?;
        match gauges.iter_mut().find(|g| g.handler == handler) {
            Some(gauge) => gauge.dead = count,
            None => gauges.push(Gauge {
                handler,
                dead: count,
                ..Gauge::default()
            }),
        }
    }
    let accepted = "SELECT e.accepted_at FROM deliveries d JOIN events e ON e.seq = d.event_seq
        WHERE d.id = ?1";
    let mut statement = conn.prepare_cached(accepted)?;
    for (handler, id) in oldest_ids {
        let at: Option<Millis> = statement.query_row([id], |row| row.get(0)).optional()?;
        if let Some(gauge) = gauges.iter_mut().find(|g| g.handler == handler) {
            gauge.oldest_open_at = at;
        }
    }
    gauges.sort_by(|a, b| a.handler.cmp(&b.handler));
    Ok(gauges)
}

/// A `SUM` column as a count (never negative).
fn tally(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let sum: i64 = row.get(index)?;
    Ok(u64::try_from(sum).unwrap_or(0))
}

/// Dead letters matching `selector`, lowest delivery id first.
fn dead_letters(
    conn: &Connection,
    selector: &Selector,
    limit: usize,
) -> rusqlite::Result<Vec<DeadLetter>> {
    let sql = format!(
        "SELECT d.id, d.handler, e.id, e.type, d.attempts, COALESCE(d.last_error, ''),
            e.accepted_at, d.updated_at
         FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE d.id IN (SELECT id FROM deliveries WHERE {DEAD_MATCHING})
         ORDER BY d.id LIMIT ?4"
    );
    let (id, handler, event_id) = selector_params(selector);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    conn.prepare_cached(&sql)?
        .query_map(params![id, handler, event_id, limit], |row| {
            Ok(DeadLetter {
                id: row.get(0)?,
                handler: row.get(1)?,
                event_id: row.get(2)?,
                event_type: row.get(3)?,
                attempts: row.get(4)?,
                cause: row.get(5)?,
                accepted_at: row.get(6)?,
                dead_at: row.get(7)?,
            })
        })?
        .collect()
}

/// A selector as the `?1`, `?2`, `?3` of [`DEAD_MATCHING`].
fn selector_params(selector: &Selector) -> (Option<i64>, Option<&str>, Option<&str>) {
    (
        selector.id,
        selector.handler.as_deref(),
        selector.event_id.as_deref(),
    )
}

/// Deletes those of `events` (by `seq`) that have no delivery left.
fn delete_orphans(conn: &Connection, events: &[i64]) -> rusqlite::Result<()> {
    let mut outcomes = conn.prepare_cached(
        "DELETE FROM outcomes
         WHERE event_seq = ?1 AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_seq = ?1)
         RETURNING id",
    )?;
    let mut pruned_through = conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('pruned_through', ?1)
         ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
    )?;
    let mut delete = conn.prepare_cached(
        "DELETE FROM events
         WHERE seq = ?1 AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_seq = ?1)",
    )?;
    for seq in events.iter().collect::<BTreeSet<_>>() {
        let deleted = outcomes
            .query_map(params![seq], |row| row.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        if let Some(highest) = deleted.iter().max() {
            pruned_through.execute(params![highest])?;
        }
        delete.execute(params![seq])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::*;

    #[test]
    fn store_errors_keep_their_cause_as_source() {
        use std::error::Error as _;
        let dir = TempDir::new().expect("tempdir");
        // A folder where the file should be: SQLite cannot open it.
        let err = SqliteStore::open(dir.path(), FsyncPolicy::Normal).expect_err("a folder");
        assert!(matches!(err, StoreError::Sqlite { .. }), "{err}");
        let sqlite = err
            .source()
            .and_then(|s| s.downcast_ref::<rusqlite::Error>());
        assert!(sqlite.is_some(), "{err:?}");
        // A file where a folder should be: the folder cannot be created.
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let err = SqliteStore::open(&file.join("outbox.db"), FsyncPolicy::Normal)
            .expect_err("a file as folder");
        let io = err
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>());
        assert!(io.is_some(), "{err:?}");
        // The message an operator reads is unchanged: it names the cause.
        assert!(
            err.to_string().contains(&io.expect("io").to_string()),
            "{err}"
        );
        // A refusal of its own has no cause behind it.
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").expect("write");
        let err = SqliteStore::open(&empty, FsyncPolicy::Normal).expect_err("empty file");
        assert!(matches!(err, StoreError::Refused { .. }), "{err}");
        assert!(err.source().is_none());
    }

    const T0: Millis = 1_000_000;
    const LEASE: Duration = Duration::from_secs(30);
    const TYPE: &str = "com.example.push";

    fn event(id: &str, handlers: &[&str]) -> NewEvent {
        event_with(id, handlers, "")
    }

    /// An event whose JSON carries `note`, to tell redelivered versions apart.
    fn event_with(id: &str, handlers: &[&str], note: &str) -> NewEvent {
        NewEvent {
            source: "/test".into(),
            id: id.into(),
            event_type: TYPE.into(),
            json: format!(
                r#"{{"specversion":"1.0","id":"{id}","source":"/test","type":"{TYPE}","note":"{note}"}}"#
            ),
            handlers: handlers.iter().map(|h| h.to_string()).collect(),
            subject: None,
            for_observers: true,
        }
    }

    fn db_path(dir: &TempDir) -> std::path::PathBuf {
        dir.path().join("state").join("outbox.db")
    }

    fn open(dir: &TempDir) -> SqliteStore {
        SqliteStore::open(&db_path(dir), FsyncPolicy::Full).expect("a new outbox file opens")
    }

    async fn accept(store: &SqliteStore, events: Vec<NewEvent>, now: Millis) -> Vec<Accepted> {
        store
            .accept(events, OnDuplicate::Skip, None, now)
            .await
            .expect("accept succeeds")
    }

    /// Accepts one event and returns its only delivery's id.
    async fn accept_one_delivery(store: &SqliteStore, id: &str, handler: &str, now: Millis) -> i64 {
        let accepted = accept(store, vec![event(id, &[handler])], now).await;
        accepted[0].deliveries[0]
    }

    async fn claim(store: &SqliteStore, handler: &str, now: Millis) -> Option<Delivery> {
        let mut claimed = store
            .claim(handler.into(), 1, LEASE, now)
            .await
            .expect("claim succeeds");
        assert!(claimed.len() <= 1, "a limit of one claims at most one");
        claimed.pop()
    }

    /// Accepts `id` for `handlers`, then claims and dead-letters each delivery; returns their ids.
    async fn make_dead(store: &SqliteStore, id: &str, handlers: &[&str]) -> Vec<i64> {
        let accepted = accept(store, vec![event(id, handlers)], T0).await;
        for (handler, &delivery) in handlers.iter().zip(&accepted[0].deliveries) {
            let claimed = claim(store, handler, T0)
                .await
                .expect("the new delivery is due");
            assert_eq!(claimed.id, delivery);
            store
                .dead_letter(delivery, format!("{handler} failed {id}"), T0 + 1)
                .await
                .expect("dead_letter succeeds");
        }
        accepted[0].deliveries.clone()
    }

    async fn dead_ids(store: &SqliteStore, selector: Selector) -> Vec<i64> {
        let dead = store
            .dead_letters(selector, 100)
            .await
            .expect("dead_letters succeeds");
        dead.iter().map(|d| d.id).collect()
    }

    fn by_handler(handler: &str) -> Selector {
        Selector {
            handler: Some(handler.into()),
            ..Selector::default()
        }
    }

    fn by_event(event_id: &str) -> Selector {
        Selector {
            event_id: Some(event_id.into()),
            ..Selector::default()
        }
    }

    fn by_id(id: i64) -> Selector {
        Selector {
            id: Some(id),
            ..Selector::default()
        }
    }

    fn count_events(dir: &TempDir) -> i64 {
        let conn = Connection::open(db_path(dir)).expect("the file opens");
        conn.query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
            .expect("events can be counted")
    }

    #[tokio::test]
    async fn a_claim_ahead_passes_the_callers_own_lease_and_no_one_elses() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let events = ["e1", "e2", "e3", "e4", "e5"].map(|id| event(id, &["a"]));
        let accepted = accept(&store, events.to_vec(), T0).await;
        let ids: Vec<i64> = accepted.iter().map(|a| a.deliveries[0]).collect();
        let first = store.claim("a".into(), 2, LEASE, T0).await.expect("claim");
        let holding: Vec<i64> = first.iter().map(|d| d.id).collect();
        assert_eq!(holding, ids[..2]);

        // Holding only part of the live claim: the rest is someone else's lease.
        let other = store
            .claim_ahead("a".into(), vec![ids[0]], 2, LEASE, T0)
            .await
            .expect("claim ahead");
        assert!(other.is_empty(), "another lease holds the observer back");

        let next = store
            .claim_ahead("a".into(), holding.clone(), 2, LEASE, T0)
            .await
            .expect("claim ahead");
        let claimed: Vec<(i64, u32)> = next.iter().map(|d| (d.id, d.attempt)).collect();
        assert_eq!(
            claimed,
            [(ids[2], 1), (ids[3], 1)],
            "the next ones, in order"
        );
        let none = store.claim("a".into(), 8, LEASE, T0).await.expect("claim");
        assert!(none.is_empty(), "a plain claim still waits for both leases");
    }

    #[tokio::test]
    async fn a_batch_claim_takes_the_lowest_ids_and_release_gives_them_back_unattempted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let accepted = accept(
            &store,
            vec![
                event("e1", &["a"]),
                event("e2", &["a"]),
                event("e3", &["a"]),
            ],
            T0,
        )
        .await;
        let ids: Vec<i64> = accepted.iter().map(|a| a.deliveries[0]).collect();
        let batch = store.claim("a".into(), 2, LEASE, T0).await.expect("claim");
        let claimed: Vec<(i64, u32)> = batch.iter().map(|d| (d.id, d.attempt)).collect();
        assert_eq!(claimed, [(ids[0], 1), (ids[1], 1)]);
        let none = store.claim("a".into(), 2, LEASE, T0).await.expect("claim");
        assert!(none.is_empty(), "the batch holds the observer");

        store.release(vec![ids[1]], T0).await.expect("release");
        store.complete(ids[0], T0).await.expect("complete");
        let again = store.claim("a".into(), 8, LEASE, T0).await.expect("claim");
        let claimed: Vec<(i64, u32)> = again.iter().map(|d| (d.id, d.attempt)).collect();
        assert_eq!(
            claimed,
            [(ids[1], 1), (ids[2], 1)],
            "a released delivery keeps its place and its attempt was not counted"
        );
    }

    #[tokio::test]
    async fn claims_lowest_id_first_per_handler() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let accepted = accept(
            &store,
            vec![
                event("e1", &["a", "b"]),
                event("e2", &["a"]),
                event("e3", &["b"]),
            ],
            T0,
        )
        .await;
        assert!(accepted.iter().all(|a| !a.duplicate));
        let [e1, e2, e3] = [&accepted[0], &accepted[1], &accepted[2]];

        let first = claim(&store, "a", T0).await.expect("a has e1 due");
        assert_eq!(
            (first.id, first.event_id.as_str(), first.attempt),
            (e1.deliveries[0], "e1", 1)
        );
        assert_eq!(first.handler, "a");
        assert_eq!(first.event_json, event("e1", &[]).json);
        assert_eq!(first.accepted_at, T0);
        assert!(
            claim(&store, "a", T0).await.is_none(),
            "one delivery per observer at a time"
        );
        store.complete(first.id, T0).await.expect("complete");
        let second = claim(&store, "a", T0).await.expect("a has e2 due");
        assert_eq!(second.id, e2.deliveries[0]);
        store.complete(second.id, T0).await.expect("complete");
        assert!(claim(&store, "a", T0).await.is_none());

        let b1 = claim(&store, "b", T0).await.expect("b has e1 due");
        store.complete(b1.id, T0).await.expect("complete");
        let b2 = claim(&store, "b", T0).await.expect("b has e3 due");
        assert_eq!((b1.id, b2.id), (e1.deliveries[1], e3.deliveries[0]));
        store.complete(b2.id, T0).await.expect("complete");
        assert!(claim(&store, "b", T0).await.is_none());
        assert!(claim(&store, "nobody", T0).await.is_none());
    }

    #[tokio::test]
    async fn duplicate_skip_writes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let first = accept(&store, vec![event("e1", &["a"])], T0).await;
        let again = accept(&store, vec![event_with("e1", &["a", "b"], "v2")], T0 + 1).await;
        assert_eq!(
            again,
            vec![Accepted {
                duplicate: true,
                deliveries: vec![],
                seq: first[0].seq,
            }]
        );
        // The same event twice in one call: the second is the duplicate.
        let twice = accept(&store, vec![event("e2", &["a"]), event("e2", &["a"])], T0).await;
        assert!(!twice[0].duplicate && twice[1].duplicate);
        assert!(twice[1].deliveries.is_empty());

        let delivery = claim(&store, "a", T0).await.expect("e1 is due");
        assert_eq!(delivery.id, first[0].deliveries[0]);
        assert_eq!(delivery.event_json, event("e1", &[]).json);
        store.complete(delivery.id, T0).await.expect("complete");
        let next = claim(&store, "a", T0).await.expect("e2 is due");
        assert_eq!(next.event_id, "e2");
        store.complete(next.id, T0).await.expect("complete");
        assert!(claim(&store, "a", T0).await.is_none());
        assert!(claim(&store, "b", T0).await.is_none());
    }

    #[tokio::test]
    async fn duplicate_redeliver_adds_fresh_deliveries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let old = accept_one_delivery(&store, "e1", "a", T0).await;
        let delivery = claim(&store, "a", T0).await.expect("e1 is due");
        store
            .complete(delivery.id, T0)
            .await
            .expect("complete succeeds");

        let again = store
            .accept(
                vec![event_with("e1", &["a", "b"], "v2")],
                OnDuplicate::Redeliver,
                None,
                T0 + 5,
            )
            .await
            .expect("accept succeeds");
        assert!(again[0].duplicate);
        assert_eq!(again[0].deliveries.len(), 2);
        assert!(again[0].deliveries.iter().all(|&id| id > old));

        let redelivered = claim(&store, "a", T0 + 5).await.expect("a's new delivery");
        assert_eq!(redelivered.id, again[0].deliveries[0]);
        assert_eq!(redelivered.attempt, 1);
        assert_eq!(redelivered.event_json, event_with("e1", &[], "v2").json);
        let for_b = claim(&store, "b", T0 + 5).await.expect("b's new delivery");
        assert_eq!(for_b.id, again[0].deliveries[1]);
    }

    #[tokio::test]
    async fn accept_with_lease_starts_claimed_and_empty_handlers_store_the_event() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let accepted = store
            .accept(
                vec![event("e1", &["a"])],
                OnDuplicate::Redeliver,
                Some(LEASE),
                T0,
            )
            .await
            .expect("accept succeeds");
        assert!(claim(&store, "a", T0 + 29_999).await.is_none());
        let retry = claim(&store, "a", T0 + 30_000)
            .await
            .expect("the lease ran out");
        assert_eq!((retry.id, retry.attempt), (accepted[0].deliveries[0], 2));

        let none = accept(&store, vec![event("e2", &[])], T0).await;
        assert!(!none[0].duplicate);
        assert!(none[0].deliveries.is_empty());
        assert!(accept(&store, vec![event("e2", &[])], T0).await[0].duplicate);
    }

    #[tokio::test]
    async fn claim_waits_for_due_at_and_retry_later() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let id = accept_one_delivery(&store, "e1", "a", T0).await;
        assert!(claim(&store, "a", T0 - 1).await.is_none());
        let first = claim(&store, "a", T0).await.expect("due at T0");
        assert_eq!((first.id, first.attempt), (id, 1));

        store
            .retry_later(id, "timeout".into(), T0 + 5_000, T0 + 10)
            .await
            .expect("retry_later succeeds");
        assert!(claim(&store, "a", T0 + 4_999).await.is_none());
        let second = claim(&store, "a", T0 + 5_000).await.expect("due again");
        assert_eq!((second.id, second.attempt), (id, 2));
    }

    #[tokio::test]
    async fn an_expired_lease_is_claimable_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let id = accept_one_delivery(&store, "e1", "a", T0).await;
        let first = claim(&store, "a", T0).await.expect("due");
        assert_eq!(first.attempt, 1);
        assert!(claim(&store, "a", T0 + 29_999).await.is_none());
        let second = claim(&store, "a", T0 + 30_000)
            .await
            .expect("the lease ran out");
        assert_eq!((second.id, second.attempt), (id, 2));
        assert!(claim(&store, "a", T0 + 30_001).await.is_none());
    }

    #[tokio::test]
    async fn dead_letters_carry_cause_type_and_attempts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let id = accept_one_delivery(&store, "e1", "a", T0).await;
        claim(&store, "a", T0).await.expect("due");
        store
            .retry_later(id, "first".into(), T0 + 100, T0 + 1)
            .await
            .expect("retry_later succeeds");
        claim(&store, "a", T0 + 100).await.expect("due again");
        store
            .dead_letter(id, "HTTP 500 from hooks.example".into(), T0 + 150)
            .await
            .expect("dead_letter succeeds");

        let dead = store
            .dead_letters(Selector::default(), 10)
            .await
            .expect("dead_letters succeeds");
        assert_eq!(
            dead,
            vec![DeadLetter {
                id,
                handler: "a".into(),
                event_id: "e1".into(),
                event_type: TYPE.into(),
                attempts: 2,
                cause: "HTTP 500 from hooks.example".into(),
                accepted_at: T0,
                dead_at: T0 + 150,
            }]
        );
        assert!(claim(&store, "a", T0 + 1_000_000).await.is_none());
    }

    #[tokio::test]
    async fn finishing_a_delivery_that_is_not_claimed_changes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let dead = make_dead(&store, "e1", &["a"]).await[0];
        let pending = accept_one_delivery(&store, "e2", "a", T0).await;
        store
            .complete(dead, T0 + 2)
            .await
            .expect("silently ignored");
        store
            .retry_later(dead, "x".into(), T0, T0 + 2)
            .await
            .expect("silently ignored");
        store
            .complete(pending, T0 + 2)
            .await
            .expect("silently ignored");
        store
            .complete(999_999, T0 + 2)
            .await
            .expect("silently ignored");
        store
            .dead_letter(999_999, "x".into(), T0 + 2)
            .await
            .expect("silently ignored");
        assert_eq!(dead_ids(&store, Selector::default()).await, vec![dead]);
        assert_eq!(
            claim(&store, "a", T0 + 2).await.map(|d| d.id),
            Some(pending)
        );
    }

    #[tokio::test]
    async fn dead_letters_respect_selector_and_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let [a1, b1] = make_dead(&store, "e1", &["a", "b"]).await[..] else {
            panic!("two deliveries")
        };
        let a2 = make_dead(&store, "e2", &["a"]).await[0];
        assert_eq!(
            dead_ids(&store, Selector::default()).await,
            vec![a1, b1, a2]
        );
        assert_eq!(dead_ids(&store, by_handler("a")).await, vec![a1, a2]);
        assert_eq!(dead_ids(&store, by_event("e1")).await, vec![a1, b1]);
        assert_eq!(dead_ids(&store, by_id(b1)).await, vec![b1]);
        let both = Selector {
            handler: Some("a".into()),
            event_id: Some("e2".into()),
            id: None,
        };
        assert_eq!(dead_ids(&store, both).await, vec![a2]);
        let limited = store
            .dead_letters(Selector::default(), 2)
            .await
            .expect("dead_letters succeeds");
        assert_eq!(limited.len(), 2);
    }

    #[tokio::test]
    async fn retry_dead_by_handler_event_and_id() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let [a1, b1] = make_dead(&store, "e1", &["a", "b"]).await[..] else {
            panic!("two deliveries")
        };
        let a2 = make_dead(&store, "e2", &["a"]).await[0];
        let a3 = make_dead(&store, "e3", &["a"]).await[0];
        let now = T0 + 50;

        assert_eq!(store.retry_dead(by_handler("b"), now).await.ok(), Some(1));
        assert_eq!(store.retry_dead(by_event("e2"), now).await.ok(), Some(1));
        assert_eq!(store.retry_dead(by_id(a1), now).await.ok(), Some(1));
        assert_eq!(store.retry_dead(by_id(a1), now).await.ok(), Some(0));
        assert_eq!(dead_ids(&store, Selector::default()).await, vec![a3]);

        // Due at `now`, attempts counted afresh.
        assert!(claim(&store, "b", now - 1).await.is_none());
        let b = claim(&store, "b", now).await.expect("b1 is pending again");
        assert_eq!((b.id, b.attempt), (b1, 1));
        let first = claim(&store, "a", now).await.expect("a1 is pending again");
        store.complete(first.id, now).await.expect("complete");
        let second = claim(&store, "a", now).await.expect("a2 is pending again");
        store.complete(second.id, now).await.expect("complete");
        assert_eq!((first.id, second.id), (a1, a2));
        assert!(claim(&store, "a", now).await.is_none());

        assert_eq!(
            store.retry_dead(Selector::default(), now).await.ok(),
            Some(1)
        );
        assert!(dead_ids(&store, Selector::default()).await.is_empty());
    }

    #[tokio::test]
    async fn discard_dead_deletes_the_letters_and_their_events() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let b1 = make_dead(&store, "e1", &["a", "b"]).await[1];
        make_dead(&store, "e2", &["a"]).await;
        let both = Selector {
            handler: Some("a".into()),
            event_id: Some("e1".into()),
            id: None,
        };
        assert_eq!(store.discard_dead(both).await.ok(), Some(1));
        assert_eq!(count_events(&dir), 2, "e1 still has b's delivery");
        assert_eq!(store.discard_dead(by_id(b1)).await.ok(), Some(1));
        assert_eq!(count_events(&dir), 1, "e1 has no delivery left");
        assert_eq!(store.discard_dead(Selector::default()).await.ok(), Some(1));
        assert_eq!(count_events(&dir), 0);
        assert!(dead_ids(&store, Selector::default()).await.is_empty());
        // The events are gone, so they are new again.
        assert!(!accept(&store, vec![event("e1", &["a"])], T0).await[0].duplicate);
    }

    #[tokio::test]
    async fn prune_drops_old_done_deliveries_and_orphan_events_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        // e1: a done. e2: a pending. e3: a dead. e4: a done, b pending.
        let accepted = accept(
            &store,
            vec![
                event("e1", &["a"]),
                event("e2", &["a"]),
                event("e3", &["a"]),
                event("e4", &["a", "b"]),
            ],
            T0,
        )
        .await;
        // One at a time: each is settled before the next is claimed.
        let mut claimed = Vec::new();
        let next = || async { claim(&store, "a", T0).await.expect("due").id };
        claimed.push(next().await);
        store.complete(claimed[0], T0 + 1).await.expect("complete");
        claimed.push(next().await);
        store
            .retry_later(claimed[1], "later".into(), T0 + 1_000_000, T0 + 1)
            .await
            .expect("retry_later");
        claimed.push(next().await);
        store
            .dead_letter(claimed[2], "gone".into(), T0 + 1)
            .await
            .expect("dead_letter");
        claimed.push(next().await);
        store.complete(claimed[3], T0 + 1).await.expect("complete");
        assert_eq!(claimed[3], accepted[3].deliveries[0]);

        assert_eq!(
            store.prune(T0 + 1).await.ok(),
            Some(0),
            "before is exclusive"
        );
        assert_eq!(store.prune(T0 + 2).await.ok(), Some(2));
        assert_eq!(count_events(&dir), 3, "e1 is gone; e2, e3, e4 stay");
        let again = accept(&store, vec![event("e1", &["a"]), event("e4", &["a"])], T0).await;
        assert!(!again[0].duplicate, "e1 was pruned");
        assert!(again[1].duplicate, "e4 still has an open delivery");

        let counts = store.counts().await.expect("counts");
        let a = &counts[0];
        assert_eq!((a.pending, a.done, a.dead), (2, 0, 1));
        assert_eq!(counts[1].pending, 1);
    }

    fn outcome(handler: &str, attempt: u32) -> Outcome {
        let mut annotations = serde_json::Map::new();
        annotations.insert("summary".into(), format!("{handler} #{attempt}").into());
        Outcome {
            handler: handler.into(),
            mode: "observe".into(),
            digest: "d".repeat(64),
            status: "ok".into(),
            verdict: Some("allow".into()),
            reason: None,
            cause: None,
            annotations,
            fuel_consumed: 42,
            duration_ms: 0.5,
            attempt,
            at: T0,
        }
    }

    fn with_subject(mut event: NewEvent, subject: &str) -> NewEvent {
        event.subject = Some(subject.into());
        event
    }

    #[tokio::test]
    async fn the_history_keeps_gate_and_observer_outcomes_with_the_event() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let accepted = accept(&store, vec![with_subject(event("e1", &["a"]), "act-1")], T0).await;
        store
            .record_outcomes(accepted[0].seq, vec![outcome("gate", 1)])
            .await
            .expect("gates recorded");
        let delivery = claim(&store, "a", T0).await.expect("due");
        store
            .record_delivery_outcome(delivery.id, outcome("a", 1))
            .await
            .expect("observer recorded");
        store.complete(delivery.id, T0).await.expect("complete");

        let record = store
            .event("e1".into(), None)
            .await
            .expect("read")
            .expect("kept");
        assert_eq!(record.subject.as_deref(), Some("act-1"));
        assert_eq!(record.event["id"], "e1");
        let handlers: Vec<&str> = record.outcomes.iter().map(|o| o.handler.as_str()).collect();
        assert_eq!(handlers, ["gate", "a"]);
        assert_eq!(record.outcomes[1], outcome("a", 1));
        assert!(
            store
                .event("e1".into(), Some("/elsewhere".into()))
                .await
                .expect("read")
                .is_none()
        );
        assert!(
            store
                .event("nope".into(), None)
                .await
                .expect("read")
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_gates_only_acceptance_is_history_not_a_duplicate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let mut gates_only = event("e1", &[]);
        gates_only.for_observers = false;
        let first = accept(&store, vec![gates_only.clone()], T0).await;
        assert!(!first[0].duplicate);
        assert!(!accept(&store, vec![gates_only], T0).await[0].duplicate);
        let observed = accept(&store, vec![event("e1", &["a"])], T0).await;
        assert!(!observed[0].duplicate, "first acceptance for observers");
        assert_eq!(observed[0].deliveries.len(), 1);
        assert_eq!(observed[0].seq, first[0].seq, "one history row");
        assert!(accept(&store, vec![event("e1", &["a"])], T0).await[0].duplicate);
    }

    #[tokio::test]
    async fn listings_filter_and_page_newest_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let events = (0..5)
            .map(|i| {
                with_subject(
                    event(&format!("e{i}"), &["a"]),
                    if i % 2 == 0 { "even" } else { "odd" },
                )
            })
            .collect();
        accept(&store, events, T0).await;
        let ids = |records: Vec<EventRecord>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let all = store
            .events(HistoryFilter::default(), 2)
            .await
            .expect("list");
        let next = all.last().map(|r| r.seq);
        assert_eq!(ids(all), ["e4", "e3"]);
        let page = HistoryFilter {
            before: next,
            ..HistoryFilter::default()
        };
        assert_eq!(
            ids(store.events(page, 10).await.expect("list")),
            ["e2", "e1", "e0"]
        );
        let even = HistoryFilter {
            subject: Some("even".into()),
            ..HistoryFilter::default()
        };
        assert_eq!(
            ids(store.events(even, 10).await.expect("list")),
            ["e4", "e2", "e0"]
        );
        let by_handler = HistoryFilter {
            handler: Some("b".into()),
            ..HistoryFilter::default()
        };
        assert!(store.events(by_handler, 10).await.expect("list").is_empty());
        let by_type = HistoryFilter {
            event_type: Some(TYPE.into()),
            ..HistoryFilter::default()
        };
        assert_eq!(store.events(by_type, 10).await.expect("list").len(), 5);
    }

    #[tokio::test]
    async fn prune_forgets_old_history_without_open_deliveries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let mut gates_only = event("old-gate", &[]);
        gates_only.for_observers = false;
        let accepted = accept(&store, vec![gates_only, event("open", &["a"])], T0).await;
        store
            .record_outcomes(accepted[0].seq, vec![outcome("gate", 1)])
            .await
            .expect("recorded");
        store.prune(T0 + 1).await.expect("prune");
        assert!(
            store
                .event("old-gate".into(), None)
                .await
                .expect("read")
                .is_none()
        );
        assert!(
            store
                .event("open".into(), None)
                .await
                .expect("read")
                .is_some()
        );
    }

    #[test]
    fn a_version_1_file_is_migrated_in_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = db_path(&dir);
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("mkdir");
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE events (seq INTEGER PRIMARY KEY, source TEXT NOT NULL, id TEXT NOT NULL,
                     type TEXT NOT NULL, json TEXT NOT NULL, accepted_at INTEGER NOT NULL,
                     UNIQUE (source, id));
                 INSERT INTO events (source, id, type, json, accepted_at)
                     VALUES ('/test', 'v1', 't', '{}', 1);
                 PRAGMA user_version = 1;",
            )
            .expect("a version 1 file");
        }
        let store = SqliteStore::open(&path, FsyncPolicy::Full).expect("migrated");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let again = runtime.block_on(accept(&store, vec![event("v1", &["a"])], T0));
        assert!(
            again[0].duplicate,
            "old rows count as accepted for observers"
        );
    }

    #[tokio::test]
    async fn counts_by_handler_and_state() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        assert!(store.counts().await.expect("counts").is_empty());

        let done = accept_one_delivery(&store, "e1", "a", T0).await;
        claim(&store, "a", T0).await.expect("e1 due");
        store.complete(done, T0).await.expect("complete");
        make_dead(&store, "e2", &["a"]).await;
        let retrying = accept_one_delivery(&store, "e3", "a", T0 + 20).await;
        claim(&store, "a", T0 + 20).await.expect("e3 due");
        store
            .retry_later(retrying, "flaky".into(), T0 + 1_000, T0 + 20)
            .await
            .expect("retry_later");
        accept_one_delivery(&store, "e4", "a", T0 + 30).await;
        let claimed = claim(&store, "a", T0 + 30).await.expect("e4 due");
        assert_eq!(claimed.event_id, "e4");
        accept(&store, vec![event("e5", &["b", "a"])], T0 + 40).await;

        let counts = store.counts().await.expect("counts");
        assert_eq!(
            counts,
            vec![
                Counts {
                    handler: "a".into(),
                    pending: 2,
                    claimed: 1,
                    done: 1,
                    dead: 1,
                    retrying: 1,
                    oldest_open_at: Some(T0 + 20),
                },
                Counts {
                    handler: "b".into(),
                    pending: 1,
                    claimed: 0,
                    done: 0,
                    dead: 0,
                    retrying: 0,
                    oldest_open_at: Some(T0 + 40),
                },
            ]
        );

        // The gauges agree with the counts on what is open and dead, without reading done rows.
        let gauges = store.gauges().await.expect("gauges");
        let from_counts: Vec<Gauge> = counts
            .iter()
            .map(|c| Gauge {
                handler: c.handler.clone(),
                open: c.pending + c.claimed,
                dead: c.dead,
                oldest_open_at: c.oldest_open_at,
                lag: None,
            })
            .collect();
        assert_eq!(gauges, from_counts);
    }

    #[tokio::test]
    async fn accepted_events_survive_reopening_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        let id = accept_one_delivery(&store, "e1", "a", T0).await;
        drop(store);

        let reopened = SqliteStore::open(&db_path(&dir), FsyncPolicy::Normal).expect("reopens");
        let delivery = claim(&reopened, "a", T0).await.expect("e1 survived");
        assert_eq!(
            (delivery.id, delivery.event_json),
            (id, event("e1", &[]).json)
        );
        assert!(accept(&reopened, vec![event("e1", &["a"])], T0).await[0].duplicate);
    }

    #[tokio::test]
    async fn two_handles_on_one_file_see_each_others_commits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let serve = open(&dir);
        let cli = open(&dir);
        let id = accept_one_delivery(&serve, "e1", "a", T0).await;
        let delivery = claim(&cli, "a", T0)
            .await
            .expect("the other handle's event");
        assert_eq!(delivery.id, id);
        assert!(
            claim(&serve, "a", T0).await.is_none(),
            "claimed by the other handle"
        );
        cli.dead_letter(id, "boom".into(), T0)
            .await
            .expect("dead_letter");
        assert_eq!(dead_ids(&serve, Selector::default()).await, vec![id]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_accepts_all_land() {
        const TASKS: usize = 64;
        const EACH: usize = 100;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(open(&dir));
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let mut ids = Vec::with_capacity(EACH);
                    for n in 0..EACH {
                        let accepted =
                            accept(&store, vec![event(&format!("{task}-{n}"), &["a"])], T0).await;
                        assert!(!accepted[0].duplicate);
                        ids.extend(accepted[0].deliveries.iter().copied());
                    }
                    ids
                })
            })
            .collect();
        let mut ids = BTreeSet::new();
        for task in tasks {
            ids.extend(task.await.expect("the task does not panic"));
        }
        assert_eq!(ids.len(), TASKS * EACH, "every delivery id is distinct");
        let counts = store.counts().await.expect("counts");
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[0].pending, (TASKS * EACH) as u64);
    }

    #[tokio::test]
    async fn a_failing_call_is_rolled_back_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir);
        // Queued together, so they usually share a batch.
        let broken = store.submit("break on purpose", Durability::Promise, |conn| {
            conn.execute(
                "INSERT INTO events (source, id, type, json, accepted_at)
                 VALUES ('/test', 'partial', 't', '{}', 0)",
                [],
            )?;
            conn.execute("INSERT INTO no_such_table VALUES (1)", [])?;
            Ok(())
        });
        let fine = store.accept(vec![event("e1", &["a"])], OnDuplicate::Skip, None, T0);
        let error = broken.await.expect_err("the broken call fails");
        assert!(
            error.to_string().contains("break on purpose failed"),
            "{error}"
        );
        assert!(!fine.await.expect("the other call commits")[0].duplicate);
        let partial = accept(&store, vec![event("partial", &["a"])], T0).await;
        assert!(
            !partial[0].duplicate,
            "the broken call's insert was rolled back"
        );
    }

    /// A job for [`run_batch`] that inserts event `id` (then fails, if `fail`), and its answer.
    fn insert_job(
        id: &'static str,
        fail: bool,
    ) -> (Box<dyn Job>, oneshot::Receiver<Result<(), StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let op = move |conn: &Connection| {
            conn.execute(
                "INSERT INTO events (source, id, type, json, accepted_at)
                 VALUES ('/test', ?1, 't', '{}', 0)",
                [id],
            )?;
            if fail {
                conn.execute("INSERT INTO no_such_table VALUES (1)", [])?;
            }
            Ok(())
        };
        let job = Call {
            what: "insert",
            durability: Durability::Promise,
            op,
            result: None,
            reply,
        };
        (Box::new(job), answer)
    }

    #[test]
    fn a_failing_job_is_rolled_back_alone_wherever_it_is_in_the_batch() {
        // The first run has no savepoints; a failure anywhere sends the batch round again with
        // one per job. Either way the others commit and the failing one leaves nothing.
        for broken_at in 0..3 {
            let conn = Connection::open_in_memory().expect("memory");
            configure(&conn, FsyncPolicy::Normal).expect("configure");
            create_schema(&conn, ":memory:").expect("schema");
            let ids = ["j0", "j1", "j2"];
            let (mut batch, answers): (Vec<_>, Vec<_>) = ids
                .iter()
                .enumerate()
                .map(|(at, id)| insert_job(id, at == broken_at))
                .unzip();
            run_batch(&conn, &mut batch, "test").expect("the batch commits");
            for job in batch {
                job.reply(None);
            }
            for (at, mut answer) in answers.into_iter().enumerate() {
                let answer = answer.try_recv().expect("answered");
                assert_eq!(answer.is_ok(), at != broken_at, "job {at}: {answer:?}");
            }
            let mut stored = conn
                .prepare("SELECT id FROM events ORDER BY id")
                .expect("prepare")
                .query_map([], |row| row.get::<_, String>(0))
                .expect("query")
                .collect::<rusqlite::Result<Vec<_>>>()
                .expect("rows");
            stored.sort();
            let expected: Vec<String> = ids
                .iter()
                .enumerate()
                .filter(|(at, _)| *at != broken_at)
                .map(|(_, id)| id.to_string())
                .collect();
            assert_eq!(stored, expected, "broken at {broken_at}");
        }
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = db_path(&dir);
        drop(open(&dir));
        let conn = Connection::open(&path).expect("the file opens");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("user_version can be set");
        drop(conn);

        let error =
            SqliteStore::open(&path, FsyncPolicy::Full).expect_err("a newer schema is refused");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("outbox {}", path.display())),
            "{message}"
        );
        assert!(
            message.contains(&format!(
                "newer hookwasm (schema version {}",
                SCHEMA_VERSION + 1
            )),
            "{message}"
        );
        assert!(message.contains("`eventDelivery.path`"), "{message}");
        assert!(!message.contains('\n'));
    }

    #[tokio::test]
    async fn a_file_that_is_not_an_outbox_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("proxy.config.json");
        std::fs::write(&path, "{\"eventHandlers\": []}\n".repeat(100)).expect("write");
        let error = SqliteStore::open(&path, FsyncPolicy::Full).expect_err("not a database");
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("`eventDelivery.path`"), "{message}");
    }

    #[tokio::test]
    async fn in_memory_works_the_same() {
        let store = SqliteStore::in_memory().expect("in memory");
        let id = accept(&store, vec![event("e1", &["a"])], T0).await[0].deliveries[0];
        assert_eq!(claim(&store, "a", T0).await.map(|d| d.id), Some(id));
    }

    #[test]
    fn claim_finds_the_next_delivery_through_the_index() {
        let dir = tempfile::tempdir().expect("temp dir");
        drop(open(&dir));
        let conn = Connection::open(db_path(&dir)).expect("the file opens");
        let mut plan = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {NEXT_DUE}"))
            .expect("the query plans");
        let steps = plan
            .query_map(params!["a", T0, 8], |row| row.get::<_, String>(3))
            .expect("the plan runs")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("the plan reads");
        let plan = steps.join("; ");
        assert!(plan.contains("INDEX deliveries_open (handler=?)"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "no sort: {plan}");
    }

    #[test]
    fn sync_reads_lowercase_names_and_defaults_to_full() {
        let normal: FsyncPolicy = serde_json::from_str("\"normal\"").expect("normal parses");
        let full: FsyncPolicy = serde_json::from_str("\"full\"").expect("full parses");
        assert_eq!(
            (normal, full, FsyncPolicy::default()),
            (FsyncPolicy::Normal, FsyncPolicy::Full, FsyncPolicy::Full)
        );
        assert!(serde_json::from_str::<FsyncPolicy>("\"Full\"").is_err());
    }
}
