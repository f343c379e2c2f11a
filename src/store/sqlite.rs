//! [`SqliteStore`]: durable channel history in one SQLite file (single node).
//!
//! Durability: the file is in WAL mode with `synchronous = FULL`, so a
//! transaction that committed survives a crash, a `kill -9` or a power loss.
//! An append's `done` callback runs only after its transaction committed:
//! whatever a publisher was told, and whatever subscribers were sent, is on
//! disk.
//!
//! Writes: one dedicated writer thread owns the only write connection. It
//! takes every queued job (up to `MAX_BATCH`), applies them in ONE
//! transaction (group commit: one fsync for the whole batch), then calls the
//! callbacks in queue order, which gives the per-channel offset order the
//! [`History`] trait requires. If the transaction fails, every append of the
//! batch is told [`HistoryError::Backend`] and nothing of it is visible.
//!
//! Reads: run on `spawn_blocking` with a small pool of read-only connections;
//! WAL lets them read the last committed state while the writer writes.
//!
//! Retention: each append stores its channel's `size` and `ttl` on the stream
//! row, so reads (also after a restart) hide what is beyond them. Trimming is
//! done on append (per channel) and by a periodic maintenance pass (channels
//! that went quiet, expired idempotency keys).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rusqlite::types::Type;
use rusqlite::TransactionBehavior;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, Transaction};
use tokio::sync::oneshot;

use super::StoreError;
use crate::history::{AppendDone, BoxFuture, History, HistoryError};
use crate::stream::{
    new_epoch, now_millis, AppendOutcome, AppendRequest, ClientInfo, HistoryPage, HistoryQuery,
    Publication, RawJson, StreamPosition,
};

/// Schema migrations, applied in order; version N = the first N applied.
const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_streams.sql")];
/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 1024;
/// How long a connection waits for a lock held by another one.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often expired publications and idempotency keys are swept.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);
/// Read connections kept open between reads.
const MAX_IDLE_READERS: usize = 8;

/// Durable [`History`] in a SQLite file. Cheap to share behind an `Arc`.
///
/// Dropping it lets the writer finish every queued job, then joins it.
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    writer: Option<JoinHandle<()>>,
    readers: Arc<ReadPool>,
}

/// Work for the writer thread.
enum Job {
    Append(AppendRequest, AppendDone),
    /// Create the channel's stream (with a fresh epoch) if it does not exist.
    Ensure(String, oneshot::Sender<Result<(), HistoryError>>),
    /// Answer once everything queued before is committed.
    Flush(oneshot::Sender<Result<(), HistoryError>>),
    /// Finish what is queued, then stop.
    Shutdown,
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) the store at `path`,
    /// migrates its schema and starts the writer thread.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut conn = open_writer(path)?;
        migrate(&mut conn)?;
        if let Err(error) = maintain(&mut conn, now_millis()) {
            tracing::warn!(%error, "store maintenance failed");
        }
        let readers = Arc::new(ReadPool {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        });
        // Open one reader now so a bad path fails here, not on the first read.
        readers.put(open_reader(path)?);

        let (jobs, queue) = mpsc::channel();
        let writer = Writer {
            conn,
            queue,
            last_maintenance: Instant::now(),
        };
        let handle = thread::Builder::new()
            .name("switchboard-store-writer".into())
            .spawn(move || writer.run())
            .map_err(StoreError::Spawn)?;
        tracing::info!(path = %path.display(), "store opened");
        Ok(SqliteStore {
            jobs,
            writer: Some(handle),
            readers,
        })
    }

    /// One read on a pooled connection; `None` if the stream does not exist.
    async fn read_once(
        &self,
        channel: &str,
        query: &HistoryQuery,
    ) -> Result<Option<HistoryPage>, HistoryError> {
        let pool = self.readers.clone();
        let channel = channel.to_owned();
        let query = query.clone();
        tokio::task::spawn_blocking(move || pool.read(&channel, &query))
            .await
            .map_err(|error| HistoryError::Backend(format!("store read task failed: {error}")))?
    }

    /// Creates the channel's stream through the writer (one writer, so the
    /// epoch it picks is the one every later append and read sees).
    async fn ensure_stream(&self, channel: &str) -> Result<(), HistoryError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Ensure(channel.to_owned(), reply))
            .map_err(|_| HistoryError::from(StoreError::WriterGone))?;
        answer
            .await
            .map_err(|_| HistoryError::from(StoreError::WriterGone))?
    }
}

impl History for SqliteStore {
    fn append(&self, request: AppendRequest, done: AppendDone) {
        if let Err(mpsc::SendError(Job::Append(_, done))) =
            self.jobs.send(Job::Append(request, done))
        {
            done(Err(StoreError::WriterGone.into()));
        }
    }

    fn read<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, HistoryError>> {
        Box::pin(async move {
            if let Some(page) = self.read_once(channel, &query).await? {
                return Ok(page);
            }
            self.ensure_stream(channel).await?;
            self.read_once(channel, &query).await?.ok_or_else(|| {
                HistoryError::Backend(format!("stream {channel} missing after creation"))
            })
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), HistoryError>> {
        // Queued now, so it covers every append made before this call.
        let (reply, answer) = oneshot::channel();
        let queued = self.jobs.send(Job::Flush(reply)).is_ok();
        super::writer::flushed(queued, answer)
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Jobs are FIFO: everything queued before this is committed first.
        let _ = self.jobs.send(Job::Shutdown);
        super::writer::join(self.writer.take(), "SQLite store");
    }
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    queue: mpsc::Receiver<Job>,
    last_maintenance: Instant,
}

impl Writer {
    fn run(mut self) {
        loop {
            let first = match self.queue.recv_timeout(MAINTENANCE_EVERY) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    self.maybe_maintain();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut stop = matches!(first, Job::Shutdown);
            let mut batch = vec![first];
            while !stop && batch.len() < MAX_BATCH {
                match self.queue.try_recv() {
                    Ok(Job::Shutdown) => stop = true,
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.commit(batch);
            if stop {
                break;
            }
            self.maybe_maintain();
        }
        tracing::debug!("store writer stopped");
    }

    /// Applies `batch` in one transaction, then answers every job in order.
    fn commit(&mut self, batch: Vec<Job>) {
        let mut outcomes = match apply(&mut self.conn, &batch, now_millis()) {
            Ok(outcomes) => Ok(outcomes.into_iter()),
            Err(error) => {
                tracing::error!(%error, jobs = batch.len(), "store batch failed, rolled back");
                Err(format!("store write failed: {error}"))
            }
        };
        for job in batch {
            match (job, &mut outcomes) {
                (Job::Append(_, done), Ok(outcomes)) => call(
                    done,
                    outcomes.next().unwrap_or_else(|| {
                        Err(HistoryError::Backend("append outcome missing".into()))
                    }),
                ),
                (Job::Append(_, done), Err(message)) => {
                    call(done, Err(HistoryError::Backend(message.clone())))
                }
                (Job::Ensure(_, reply) | Job::Flush(reply), outcomes) => {
                    let answer = match outcomes {
                        Ok(_) => Ok(()),
                        Err(message) => Err(HistoryError::Backend(message.clone())),
                    };
                    let _ = reply.send(answer);
                }
                (Job::Shutdown, _) => {}
            }
        }
    }

    fn maybe_maintain(&mut self) {
        if self.last_maintenance.elapsed() < MAINTENANCE_EVERY {
            return;
        }
        self.last_maintenance = Instant::now();
        if let Err(error) = maintain(&mut self.conn, now_millis()) {
            tracing::warn!(%error, "store maintenance failed");
        }
    }
}

/// Calls an append's callback; a panicking callback must not kill the writer.
fn call(done: AppendDone, outcome: Result<AppendOutcome, HistoryError>) {
    if catch_unwind(AssertUnwindSafe(move || done(outcome))).is_err() {
        tracing::error!("history append callback panicked");
    }
}

/// Applies a batch in one transaction; one outcome per `Job::Append`.
fn apply(
    conn: &mut Connection,
    batch: &[Job],
    now: u64,
) -> rusqlite::Result<Vec<Result<AppendOutcome, HistoryError>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        match job {
            Job::Append(request, _) => outcomes.push(append_one(&tx, request, now)?),
            Job::Ensure(channel, _) => {
                stream_or_create(&tx, channel)?;
            }
            Job::Flush(_) | Job::Shutdown => {}
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

/// One append inside the batch's transaction. The outer error aborts the
/// batch; the inner one concerns this append only.
fn append_one(
    tx: &Transaction<'_>,
    request: &AppendRequest,
    now: u64,
) -> rusqlite::Result<Result<AppendOutcome, HistoryError>> {
    let channel: &str = &request.channel;
    let now_ms = clamp_i64(now);
    if let Some(key) = &request.idempotency_key {
        let first: Option<u64> = tx
            .prepare_cached(
                "SELECT \"offset\" FROM idempotency \
                 WHERE channel = ?1 AND key = ?2 AND expires_at > ?3",
            )?
            .query_row(params![channel, key, now_ms], |row| row.get(0))
            .optional()?;
        if let Some(offset) = first {
            let (epoch, _) = stream_or_create(tx, channel)?;
            return Ok(Ok(AppendOutcome::Duplicate(StreamPosition {
                offset,
                epoch,
            })));
        }
    }
    let info = match request.info.as_ref().map(serde_json::to_string).transpose() {
        Ok(info) => info,
        Err(error) => {
            let message = format!("cannot encode publisher info: {error}");
            return Ok(Err(HistoryError::Backend(message)));
        }
    };
    let limits = request.limits;
    let size = clamp_i64(limits.size as u64);
    let ttl_ms = clamp_i64(limits.ttl.as_millis().try_into().unwrap_or(u64::MAX));
    let (epoch, top) = stream_or_create(tx, channel)?;
    let offset = top + 1;
    let offset_sql = clamp_i64(offset);
    tx.prepare_cached(
        "UPDATE streams SET top_offset = ?2, size = ?3, ttl_ms = ?4 WHERE channel = ?1",
    )?
    .execute(params![channel, offset_sql, size, ttl_ms])?;
    if size > 0 {
        tx.prepare_cached(
            "INSERT INTO publications (channel, \"offset\", data, info, time) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            channel,
            offset_sql,
            request.data.get(),
            info,
            now_ms
        ])?;
    }
    // Keep the newest `size`, drop what is older than `ttl`.
    tx.prepare_cached("DELETE FROM publications WHERE channel = ?1 AND \"offset\" <= ?2")?
        .execute(params![channel, offset_sql - size])?;
    tx.prepare_cached("DELETE FROM publications WHERE channel = ?1 AND time < ?2")?
        .execute(params![channel, now_ms.saturating_sub(ttl_ms)])?;
    if let Some(key) = &request.idempotency_key {
        let window = limits.idempotency_window.as_millis();
        let expires_at = now_ms.saturating_add(window.try_into().unwrap_or(i64::MAX));
        tx.prepare_cached(
            "INSERT OR REPLACE INTO idempotency (channel, key, \"offset\", expires_at) \
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![channel, key, offset_sql, expires_at])?;
    }
    let publication = Publication {
        offset,
        data: request.data.clone(),
        info: request.info.clone(),
        time: now,
    };
    Ok(Ok(AppendOutcome::Appended { publication, epoch }))
}

/// The stream's `(epoch, top_offset)`, creating it with a fresh epoch.
fn stream_or_create(tx: &Transaction<'_>, channel: &str) -> rusqlite::Result<(String, u64)> {
    let existing = tx
        .prepare_cached("SELECT epoch, top_offset FROM streams WHERE channel = ?1")?
        .query_row([channel], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    if let Some(stream) = existing {
        return Ok(stream);
    }
    let epoch = new_epoch();
    tx.prepare_cached("INSERT INTO streams (channel, epoch, top_offset) VALUES (?1, ?2, 0)")?
        .execute(params![channel, epoch])?;
    Ok((epoch, 0))
}

/// Deletes expired idempotency keys and publications beyond their TTL (for
/// channels that stopped receiving appends, which trim themselves).
fn maintain(conn: &mut Connection, now: u64) -> rusqlite::Result<()> {
    let now_ms = clamp_i64(now);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let keys = tx.execute("DELETE FROM idempotency WHERE expires_at <= ?1", [now_ms])?;
    let streams: Vec<(String, i64)> = tx
        .prepare("SELECT channel, ttl_ms FROM streams WHERE ttl_ms IS NOT NULL")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut publications = 0;
    for (channel, ttl_ms) in streams {
        publications += tx
            .prepare_cached("DELETE FROM publications WHERE channel = ?1 AND time < ?2")?
            .execute(params![channel, now_ms.saturating_sub(ttl_ms)])?;
    }
    tx.commit()?;
    tracing::debug!(keys, publications, "store maintenance done");
    Ok(())
}

/// Idle read-only connections.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn take(&self) -> Result<Connection, StoreError> {
        // A poisoned pool still holds valid connections.
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => open_reader(&self.path),
        }
    }

    fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }

    /// Blocking read; `None` if the stream does not exist yet.
    fn read(
        &self,
        channel: &str,
        query: &HistoryQuery,
    ) -> Result<Option<HistoryPage>, HistoryError> {
        let mut conn = self.take()?;
        let page = read_page(&mut conn, channel, query, now_millis());
        self.put(conn);
        page.map_err(|error| HistoryError::Backend(format!("store read failed: {error}")))
    }
}

/// Reads a page from one consistent snapshot (see [`HistoryQuery`]).
fn read_page(
    conn: &mut Connection,
    channel: &str,
    query: &HistoryQuery,
    now: u64,
) -> rusqlite::Result<Option<HistoryPage>> {
    let tx = conn.transaction()?;
    let stream: Option<(String, u64, Option<u64>, Option<i64>)> = tx
        .prepare_cached("SELECT epoch, top_offset, size, ttl_ms FROM streams WHERE channel = ?1")?
        .query_row([channel], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()?;
    let Some((epoch, top, size, ttl_ms)) = stream else {
        return Ok(None);
    };
    // Visible: within the newest `size` offsets and not older than `ttl`.
    let min_offset = size.map_or(1, |size| top.saturating_sub(size) + 1);
    let min_time = ttl_ms.map_or(i64::MIN, |ttl| clamp_i64(now).saturating_sub(ttl));
    let limit = u64::try_from(query.limit).unwrap_or(u64::MAX);
    let position = StreamPosition { offset: top, epoch };

    let recovery = query
        .since
        .as_ref()
        .filter(|since| since.epoch == position.epoch && since.offset <= top);
    // A recovery reads forward from `since`; anything else reads the newest.
    let (after, ascending) = match recovery {
        Some(since) => (since.offset.max(min_offset - 1), true),
        None => (min_offset - 1, false),
    };
    let mut publications = Vec::new();
    if limit > 0 {
        let sql = if ascending {
            "SELECT \"offset\", data, info, time FROM publications \
             WHERE channel = ?1 AND \"offset\" > ?2 AND time >= ?3 ORDER BY \"offset\" ASC LIMIT ?4"
        } else {
            "SELECT \"offset\", data, info, time FROM publications \
             WHERE channel = ?1 AND \"offset\" > ?2 AND time >= ?3 ORDER BY \"offset\" DESC LIMIT ?4"
        };
        let args = params![channel, clamp_i64(after), min_time, clamp_i64(limit)];
        publications = tx
            .prepare_cached(sql)?
            .query_map(args, publication)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
    }
    // Read newest first; `reverse` (only without `since`) keeps that order.
    let newest_first = query.reverse && query.since.is_none();
    if !(ascending || newest_first) {
        publications.reverse();
    }
    // Offsets are unique in (since, top]: as many rows as missed = none lost.
    let recovered = recovery.is_some_and(|since| {
        let missed = top - since.offset;
        missed <= limit && publications.len() as u64 == missed
    });
    Ok(Some(HistoryPage {
        position,
        publications,
        recovered,
    }))
}

/// Decodes a `publications` row (`offset, data, info, time`).
fn publication(row: &Row<'_>) -> rusqlite::Result<Publication> {
    let data = RawJson::from_string(row.get(1)?)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, Type::Text, Box::new(e)))?;
    let info = row
        .get::<_, Option<String>>(2)?
        .map(|text| serde_json::from_str::<ClientInfo>(&text))
        .transpose()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, Type::Text, Box::new(e)))?;
    Ok(Publication {
        offset: row.get(0)?,
        data,
        info,
        time: row.get::<_, i64>(3)?.max(0) as u64,
    })
}

/// SQLite integers are i64; everything here is far below `i64::MAX`, and
/// clamping keeps "unlimited" values (huge limits, TTLs) meaningful.
fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(open_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "store is not in WAL mode; reads may wait for writes");
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    Ok(conn)
}

/// Applies the migrations the file has not seen, each in its own transaction.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version = |conn: &Connection| -> rusqlite::Result<i64> {
        conn.query_row("PRAGMA user_version", [], |row| row.get(0))
    };
    let found = version(conn).map_err(|source| StoreError::Backend {
        context: "reading the schema version",
        source,
    })?;
    if usize::try_from(found).map_or(true, |found| found > MIGRATIONS.len()) {
        return Err(StoreError::TooNew {
            found,
            supported: MIGRATIONS.len(),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let target = index + 1;
        let step = |conn: &mut Connection| -> rusqlite::Result<bool> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Re-read under the write lock: another process may have migrated.
            if version(&tx)? >= target as i64 {
                return Ok(false);
            }
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", target as i64)?;
            tx.commit()?;
            Ok(true)
        };
        let applied = step(conn).map_err(|source| StoreError::Migrate {
            version: target,
            source,
        })?;
        if applied {
            tracing::info!(version = target, "store schema migrated");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pragma(conn: &Connection, name: &str) -> String {
        conn.query_row(&format!("PRAGMA {name}"), [], |row| {
            row.get::<_, rusqlite::types::Value>(0)
        })
        .map(|value| format!("{value:?}"))
        .unwrap()
    }

    #[test]
    fn writer_is_wal_full_and_migrated_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/store.db");
        drop(SqliteStore::open(&path).unwrap());
        drop(SqliteStore::open(&path).unwrap()); // migrations are not re-run
        let mut conn = open_writer(&path).unwrap();
        assert_eq!(pragma(&conn, "journal_mode"), "Text(\"wal\")");
        assert_eq!(pragma(&conn, "synchronous"), "Integer(2)"); // FULL
        assert_eq!(
            pragma(&conn, "user_version"),
            format!("Integer({})", MIGRATIONS.len())
        );
        migrate(&mut conn).unwrap();
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn maintenance_sweeps_expired_keys_and_publications() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut conn = open_writer(&path).unwrap();
        migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO streams VALUES ('a', 'e', 2, 10, 1000);
             INSERT INTO publications VALUES ('a', 1, '1', NULL, 100), ('a', 2, '2', NULL, 5000);
             INSERT INTO idempotency VALUES ('a', 'old', 1, 100), ('a', 'new', 2, 9000);",
        )
        .unwrap();
        maintain(&mut conn, 5500).unwrap();
        let count = |sql: &str| conn.query_row(sql, [], |row| row.get::<_, i64>(0)).unwrap();
        assert_eq!(count("SELECT MAX(\"offset\") FROM publications"), 2);
        assert_eq!(count("SELECT COUNT(*) FROM publications"), 1);
        assert_eq!(count("SELECT COUNT(*) FROM idempotency"), 1);
    }

    #[test]
    fn dropping_the_last_handle_inside_a_callback_does_not_deadlock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
        let slot = Mutex::new(Some(store.clone()));
        let (go, wait) = mpsc::channel::<()>();
        let (finished, check) = mpsc::channel::<()>();
        let limits = crate::stream::HistoryLimits {
            size: 10,
            ttl: Duration::from_secs(60),
            idempotency_window: Duration::from_secs(60),
        };
        let data = RawJson::from_string("1".into()).unwrap();
        let (channel, info, idempotency_key) = ("c".into(), None, None);
        let request = AppendRequest {
            channel,
            data,
            info,
            idempotency_key,
            limits,
        };
        let callback = move |outcome: Result<AppendOutcome, HistoryError>| {
            assert!(outcome.is_ok());
            wait.recv().unwrap();
            drop(slot.lock().unwrap().take()); // the last handle: Drop runs on the writer
            finished.send(()).unwrap();
        };
        store.append(request, Box::new(callback));
        drop(store);
        go.send(()).unwrap();
        check.recv_timeout(Duration::from_secs(10)).unwrap();
    }
}
