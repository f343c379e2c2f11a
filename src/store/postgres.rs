//! [`PostgresStore`]: durable channel history in PostgreSQL, shared by many
//! nodes.
//!
//! Same semantics as [`SqliteStore`](super::SqliteStore) (the contract suite
//! in `tests/history_contract.rs` runs against both), with several nodes
//! appending to the same channels:
//!
//! - **Offsets** are assigned under the channel's `streams` row lock: a batch
//!   first upserts (and so locks) the row of every channel it touches, in
//!   channel order (two nodes locking the same channels never deadlock), reads
//!   their `top_offset`, then writes the publications and the new top in the
//!   same transaction. Whoever holds the lock numbers next; nobody else can.
//! - **Epochs** are created once per stream (a random string, like SQLite's)
//!   by `INSERT … ON CONFLICT`: the first node to create a stream wins and
//!   every node reads the same epoch afterwards.
//! - **Idempotency keys** live in `idempotency` (unique per channel and key,
//!   with an expiry); they are checked under the stream's lock, so a key is
//!   recognised whichever node published it first, and after restarts.
//! - **Retention** is SQLite's: each append stores its channel's `size` and
//!   `ttl` on the stream row; the newest `size` publications are kept and a
//!   publication is hidden (and deleted) `ttl` after it was published. Reads
//!   apply both, so nothing beyond them is ever returned. A maintenance pass
//!   per node deletes expired keys and publications of quiet channels.
//!
//! Writes: one writer thread per store owns a connection (and a small tokio
//! runtime to drive it). It takes every queued append (up to [`MAX_BATCH`])
//! and commits them in ONE transaction in two pipelined round trips, whatever
//! the batch size: `BEGIN` + lock/read the streams + look up the keys, then
//! insert publications + update streams + trim + remember keys + `COMMIT`.
//! Only then are the callbacks called, in queue order and outside any
//! runtime, which gives the per-channel offset order the [`History`] trait
//! requires. A failed batch is rolled back whole and every append of it is
//! told the error; a batch that certainly did not commit (the connection
//! dropped before `COMMIT` was sent, a deadlock, a serialization failure,
//! prepared statements gone stale after a newer node migrated) is retried,
//! on a fresh connection when needed.
//!
//! Reads: one statement each (one consistent snapshot) on a small pool of
//! connections driven by the caller's tokio runtime; concurrent reads share
//! connections by pipelining. A read of an unknown channel creates its stream
//! (and epoch).
//!
//! Isolation: everything lives in the first schema of the connection's
//! `search_path`; give each deployment its own database or schema (for
//! example `postgres://u@host/db?options=-c%20search_path%3Dswitchboard`,
//! the schema created beforehand).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use super::StoreError;
use crate::history::{AppendDone, BoxFuture, History, HistoryError};
use crate::stream::{
    new_epoch, now_millis, AppendOutcome, AppendRequest, ClientInfo, HistoryPage, HistoryQuery,
    Publication, RawJson, StreamPosition,
};

/// Schema migrations, applied in order; version N = the first N applied.
const MIGRATIONS: &[&str] = &[include_str!("migrations/postgres/0001_streams.sql")];
/// First key of the advisory lock that serializes migrations ("SWBD"); the
/// second is a hash of the schema, so deployments in other schemas do not wait.
const MIGRATION_LOCK: i32 = 0x5357_4244;
/// Most appends committed in one transaction.
const MAX_BATCH: usize = 1024;
/// A batch stops growing once its payloads reach this many bytes.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// How many times a batch is tried when it failed without committing
/// (connection lost before `COMMIT`, deadlock, serialization failure).
const BATCH_ATTEMPTS: usize = 3;
/// A batch (or a maintenance pass) taking longer is abandoned: its
/// connection is dropped (PostgreSQL rolls back) and its appends fail.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed connection attempt, batches fail at once for this long
/// instead of each waiting for another attempt.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);
/// Connection timeout when the connection string sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often expired publications and idempotency keys are swept.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per maintenance statement (short statements, short locks).
const MAINTENANCE_CHUNK: i64 = 5000;
/// Maintenance statements per table and pass; the rest waits for the next.
const MAINTENANCE_CHUNKS: usize = 200;
/// Read connections per store.
const MAX_READERS: usize = 4;
/// Longest channel name stored: index entries are limited to about 2.7 kB.
const MAX_CHANNEL_BYTES: usize = 2000;
/// Longer idempotency keys are stored as a digest (see [`key_column`]).
const MAX_RAW_KEY_BYTES: usize = 200;
/// Starts a key stored as a digest (raw keys starting with it are digested too).
const DIGEST_MARK: char = '\u{1}';

/// A PostgreSQL error shown with its cause (tokio-postgres alone prints only
/// "db error"): the server's message and SQLSTATE, or the I/O error.
#[derive(Debug)]
pub struct PgError(pub tokio_postgres::Error);

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(db) = self.0.as_db_error() {
            write!(f, "{} (SQLSTATE {})", db.message(), db.code().code())?;
            if let Some(detail) = db.detail() {
                write!(f, "; {detail}")?;
            }
            return Ok(());
        }
        write!(f, "{}", self.0)?;
        let mut source = std::error::Error::source(&self.0);
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

// The cause is part of the message already; no `source` to print it twice.
impl std::error::Error for PgError {}

/// Durable [`History`] in PostgreSQL. Cheap to share behind an `Arc`; any
/// number of stores (on any number of nodes) may use one database.
///
/// Dropping it lets the writer finish every queued append, then joins it.
pub struct PostgresStore {
    jobs: mpsc::UnboundedSender<Job>,
    writer: Option<JoinHandle<()>>,
    readers: ReadPool,
}

/// Work for the writer thread.
enum Job {
    Append(AppendRequest, AppendDone),
    /// Answer once everything queued before is committed.
    Flush(oneshot::Sender<Result<(), HistoryError>>),
    /// Finish what is queued, then stop.
    Shutdown,
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL or libpq
    /// `key=value` string; no TLS), migrates its schema (safe when several
    /// nodes start at once) and starts the writer thread.
    ///
    /// Read connections are driven by the tokio runtime this is called on.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let config = parse_config(url)?;
        let target = describe(&config);
        let connect_error = |source| StoreError::PostgresConnect {
            target: target.clone(),
            source: PgError(source),
        };
        let (mut client, connection) = config.connect(NoTls).await.map_err(connect_error)?;
        tokio::spawn(drive(connection, target.clone()));
        migrate(&mut client).await?;
        let first_reader =
            Reader::prepare(client)
                .await
                .map_err(|source| StoreError::PostgresBackend {
                    context: "preparing the read statements",
                    source: PgError(source),
                })?;

        let (jobs, queue) = mpsc::unbounded_channel();
        let (ready, started) = oneshot::channel();
        let writer = Writer {
            config: config.clone(),
            target: target.clone(),
            conn: None,
            queue,
            last_maintenance: Instant::now(),
            retry_connect_at: None,
        };
        let handle = thread::Builder::new()
            .name("switchboard-pg-writer".into())
            .spawn(move || writer.run(ready))
            .map_err(StoreError::Spawn)?;
        let started = started.await.unwrap_or(Err(StoreError::WriterGone));
        if let Err(error) = started {
            let _ = handle.join(); // it has returned already
            return Err(error);
        }
        tracing::info!(%target, "PostgreSQL store connected");
        Ok(PostgresStore {
            jobs,
            writer: Some(handle),
            readers: ReadPool {
                config,
                target,
                readers: Mutex::new(vec![Arc::new(first_reader)]),
            },
        })
    }

    /// Where the store connects: `postgres://user@host:port/dbname`.
    pub fn target(&self) -> &str {
        &self.readers.target
    }
}

impl History for PostgresStore {
    fn append(&self, request: AppendRequest, done: AppendDone) {
        if let Err(mpsc::error::SendError(Job::Append(_, done))) =
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
            check_channel(channel)?;
            let mut attempt = 1;
            loop {
                let reader = self.readers.lease().await?;
                match read_page(&reader, channel, &query).await {
                    Ok(page) => return Ok(page),
                    // The connection dropped: reads are safe to repeat.
                    Err(error) if reader.client.is_closed() && attempt < 2 => {
                        tracing::warn!(%error, "PostgreSQL read connection lost, retrying");
                        attempt += 1;
                    }
                    Err(error) => return Err(error),
                }
            }
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), HistoryError>> {
        // Queued now, so it covers every append made before this call.
        let (reply, answer) = oneshot::channel();
        let queued = self.jobs.send(Job::Flush(reply)).is_ok();
        super::writer::flushed(queued, answer)
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Jobs are FIFO: everything queued before this is committed first.
        let _ = self.jobs.send(Job::Shutdown);
        super::writer::join(self.writer.take(), "PostgreSQL store");
    }
}

/// The SQL, in one place. Every parameter is cast, so statements prepare
/// without type guesses; arrays carry a whole batch in one statement.
mod sql {
    /// Creates the migrations table (under the migration lock).
    pub const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS switchboard_migrations (\
         version INTEGER NOT NULL PRIMARY KEY, \
         applied_at TIMESTAMPTZ NOT NULL DEFAULT now())";
    pub const MIGRATION_LOCK: &str =
        "SELECT pg_advisory_xact_lock($1::int4, hashtext(coalesce(current_schema(), '')))";
    pub const SCHEMA_VERSION: &str =
        "SELECT coalesce(max(version), 0)::int8 FROM switchboard_migrations";
    pub const RECORD_VERSION: &str =
        "INSERT INTO switchboard_migrations (version) VALUES ($1::int4)";

    /// Creates the batch's streams and locks their rows, in channel order
    /// (so two batches never wait on each other in a cycle).
    pub const LOCK_STREAMS: &str = "INSERT INTO streams AS s (channel, epoch) \
         SELECT channel, epoch FROM unnest($1::text[], $2::text[]) AS t (channel, epoch) \
         ORDER BY channel \
         ON CONFLICT (channel) DO UPDATE SET top_offset = s.top_offset \
         RETURNING channel, epoch, top_offset";
    /// The batch's keys still within their window.
    pub const FIND_KEYS: &str = "SELECT i.channel, i.key, i.\"offset\", i.expires_at \
         FROM idempotency i \
         JOIN unnest($1::text[], $2::text[]) AS k (channel, key) \
           ON i.channel = k.channel AND i.key = k.key \
         WHERE i.expires_at > $3::int8";
    pub const INSERT_PUBLICATIONS: &str =
        "INSERT INTO publications (channel, \"offset\", data, info, time) \
         SELECT channel, \"offset\", data, info, $5::int8 \
         FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[]) \
           AS t (channel, \"offset\", data, info)";
    pub const UPDATE_STREAMS: &str = "UPDATE streams s SET top_offset = u.top, size = u.size, ttl_ms = u.ttl \
         FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[]) AS u (channel, top, size, ttl) \
         WHERE s.channel = u.channel";
    /// Keeps the newest `size` (two deletes: an `OR` would scan the channel).
    pub const TRIM_OFFSETS: &str = "DELETE FROM publications p \
         USING unnest($1::text[], $2::int8[]) AS d (channel, upto) \
         WHERE p.channel = d.channel AND p.\"offset\" <= d.upto";
    pub const TRIM_TIMES: &str = "DELETE FROM publications p \
         USING unnest($1::text[], $2::int8[]) AS d (channel, before) \
         WHERE p.channel = d.channel AND p.time < d.before";
    pub const REMEMBER_KEYS: &str =
        "INSERT INTO idempotency (channel, key, \"offset\", expires_at) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) \
         ON CONFLICT (channel, key) DO UPDATE \
         SET \"offset\" = excluded.\"offset\", expires_at = excluded.expires_at";

    /// Maintenance never waits for a lock (`SKIP LOCKED`), so it cannot take
    /// part in a deadlock with appends; what it skips, the next pass takes.
    pub const EXPIRE_KEYS: &str = "DELETE FROM idempotency WHERE (channel, key) IN (\
         SELECT channel, key FROM idempotency WHERE expires_at <= $1::int8 \
         LIMIT $2::int8 FOR UPDATE SKIP LOCKED)";
    pub const EXPIRE_PUBLICATIONS: &str =
        "DELETE FROM publications WHERE (channel, \"offset\") IN (\
         SELECT p.channel, p.\"offset\" FROM streams s \
         JOIN publications p ON p.channel = s.channel AND p.time < $1::int8 - s.ttl_ms \
         WHERE s.ttl_ms IS NOT NULL \
         LIMIT $2::int8 FOR UPDATE OF p SKIP LOCKED)";

    /// A page in one statement (one snapshot): the stream row, whether this
    /// is a recovery (same epoch, `since` not past the top), then the visible
    /// publications after `since` (oldest first) or the newest ones. Only one
    /// branch runs (the other's condition is a one-time filter). No row: the
    /// stream does not exist.
    ///
    /// $1 channel, $2 since epoch, $3 since offset, $4 limit, $5 now (ms).
    pub const READ: &str = "WITH s AS (\
           SELECT epoch, top_offset, \
                  CASE WHEN size IS NULL THEN 0 ELSE greatest(top_offset - size, 0) END AS floor_offset, \
                  $5::int8 - ttl_ms AS min_time, \
                  coalesce($2::text = epoch AND $3::int8 <= top_offset, false) AS recovery \
           FROM streams WHERE channel = $1::text) \
         SELECT s.epoch, s.top_offset, s.recovery, p.\"offset\", p.data, p.info, p.time \
         FROM s LEFT JOIN LATERAL (\
           (SELECT \"offset\", data, info, time FROM publications \
            WHERE s.recovery AND channel = $1::text \
              AND \"offset\" > greatest($3::int8, s.floor_offset) \
              AND (s.min_time IS NULL OR time >= s.min_time) \
            ORDER BY \"offset\" ASC LIMIT $4::int8) \
           UNION ALL \
           (SELECT \"offset\", data, info, time FROM publications \
            WHERE NOT s.recovery AND channel = $1::text AND \"offset\" > s.floor_offset \
              AND (s.min_time IS NULL OR time >= s.min_time) \
            ORDER BY \"offset\" DESC LIMIT $4::int8)\
         ) p ON true";
    /// Creates a stream for a read; whoever comes first picks the epoch.
    pub const ENSURE_STREAM: &str =
        "INSERT INTO streams (channel, epoch) VALUES ($1::text, $2::text) \
         ON CONFLICT (channel) DO NOTHING";
}

/// Parses the connection string; defaults a connect timeout and the
/// application name (so the store's sessions are recognisable).
fn parse_config(url: &str) -> Result<Config, StoreError> {
    let mut config = url.parse::<Config>().map_err(|error| {
        let mut reason = PgError(error).to_string();
        // A syntax error quotes the offending character; it may belong to
        // the password.
        if let Some(at) = reason.find(" but got `") {
            reason.truncate(at);
        }
        StoreError::PostgresUrl(reason)
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("switchboard");
    }
    Ok(config)
}

/// `postgres://user@host:port/dbname`, never the password.
fn describe(config: &Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let port = ports.get(index).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost".to_owned()
    } else {
        hosts.join(",")
    };
    let user = config.get_user().map(|user| format!("{user}@"));
    format!(
        "postgres://{}{hosts}/{}",
        user.unwrap_or_default(),
        config.get_dbname().unwrap_or("")
    )
}

/// Drives a connection until it closes (the client was dropped, or it broke).
async fn drive<F>(connection: F, target: String)
where
    F: Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(error) = connection.await {
        tracing::warn!(%target, error = %PgError(error), "PostgreSQL connection lost");
    }
}

/// Applies the migrations the database has not seen, each in its own
/// transaction holding the migration lock (nodes starting together take
/// turns; the second finds the work done).
async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        let version = index + 1;
        let fail = |source| StoreError::PostgresMigrate {
            version,
            source: PgError(source),
        };
        let tx = client.transaction().await.map_err(fail)?;
        tx.execute(sql::MIGRATION_LOCK, &[&MIGRATION_LOCK])
            .await
            .map_err(fail)?;
        tx.batch_execute(sql::MIGRATIONS_TABLE)
            .await
            .map_err(fail)?;
        let found: i64 = tx
            .query_one(sql::SCHEMA_VERSION, &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(fail)?;
        if usize::try_from(found).map_or(true, |found| found > MIGRATIONS.len()) {
            return Err(StoreError::TooNew {
                found,
                supported: MIGRATIONS.len(),
            });
        }
        if found >= version as i64 {
            continue; // dropping `tx` rolls back (and unlocks)
        }
        tx.batch_execute(migration).await.map_err(fail)?;
        tx.execute(sql::RECORD_VERSION, &[&(version as i32)])
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(version, "PostgreSQL store schema migrated");
    }
    Ok(())
}

/// Refuses what PostgreSQL cannot store or index (SQLite would take it; no
/// valid channel name comes near either limit).
fn check_channel(channel: &str) -> Result<(), HistoryError> {
    if channel.contains('\0') {
        return Err(HistoryError::Backend(
            "channel name contains a NUL character, which PostgreSQL cannot store".into(),
        ));
    }
    if channel.len() > MAX_CHANNEL_BYTES {
        return Err(HistoryError::Backend(format!(
            "channel name is longer than {MAX_CHANNEL_BYTES} bytes, which the PostgreSQL store cannot index"
        )));
    }
    Ok(())
}

/// The idempotency key as stored: itself, or (when long, containing NUL,
/// which PostgreSQL text cannot hold, or starting with the mark) the mark
/// followed by its hex SHA-256. Distinct keys stay distinct: raw stored keys
/// never start with the mark.
fn key_column(key: &str) -> Cow<'_, str> {
    if key.len() <= MAX_RAW_KEY_BYTES && !key.starts_with(DIGEST_MARK) && !key.contains('\0') {
        return Cow::Borrowed(key);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut stored = String::with_capacity(1 + 64);
    stored.push(DIGEST_MARK);
    for byte in digest.as_ref() {
        let _ = write!(stored, "{byte:02x}");
    }
    Cow::Owned(stored)
}

/// Clamps to PostgreSQL's BIGINT ("unlimited" sizes and TTLs stay huge).
fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A copy of a batch-wide error for each of its appends.
fn copy_error(error: &HistoryError) -> HistoryError {
    match error {
        HistoryError::Unavailable(message) => HistoryError::Unavailable(message.clone()),
        HistoryError::Backend(message) => HistoryError::Backend(message.clone()),
    }
}

// ---------------------------------------------------------------- planning

/// One append of a batch, checked and encoded before the database sees it.
struct Item<'a> {
    request: &'a AppendRequest,
    /// The idempotency key as stored (see [`key_column`]).
    key: Option<Cow<'a, str>>,
    /// The publisher info's JSON, or why it could not be encoded.
    info: Result<Option<String>, String>,
}

impl<'a> Item<'a> {
    fn check(request: &'a AppendRequest) -> Result<Item<'a>, HistoryError> {
        check_channel(&request.channel)?;
        let info = request
            .info
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|error| format!("cannot encode publisher info: {error}"));
        Ok(Item {
            request,
            key: request.idempotency_key.as_deref().map(key_column),
            info,
        })
    }
}

/// A locked stream as the batch found it.
#[derive(Debug, Clone)]
struct Locked {
    epoch: String,
    top: i64,
}

/// An idempotency key's first offset and when it expires (ms).
type KeyEntry = (i64, i64);

/// What a batch writes: columns of the statements' array parameters.
#[derive(Debug, Default)]
struct Writes<'a> {
    pub_channels: Vec<&'a str>,
    pub_offsets: Vec<i64>,
    pub_data: Vec<&'a str>,
    pub_info: Vec<Option<&'a str>>,
    /// Channels that got appends, with their new top and (last) limits.
    channels: Vec<&'a str>,
    tops: Vec<i64>,
    sizes: Vec<i64>,
    ttls: Vec<i64>,
    /// Delete offsets up to this (keep the newest `size`).
    trim_upto: Vec<i64>,
    /// Delete publications older than this (ms).
    trim_before: Vec<i64>,
    key_channels: Vec<&'a str>,
    keys: Vec<&'a str>,
    key_offsets: Vec<i64>,
    key_expiries: Vec<i64>,
}

/// Per-channel state while a batch is planned.
struct Planned {
    epoch: String,
    top: i64,
    size: i64,
    ttl: i64,
    /// Highest `offset - size` of the batch's appends.
    upto: i64,
    /// Smallest TTL of the batch's appends.
    min_ttl: i64,
    appended: bool,
}

/// Numbers a batch exactly as SQLite's one-append-at-a-time loop would:
/// `streams` are the locked rows, `known` the keys still within their window.
///
/// The writes are the net effect of the loop: an append's trim only deletes
/// offsets below its own and publications older than `now - ttl`, so the
/// batch's trims amount to one delete per channel (up to the highest
/// `offset - size`, before `now - smallest ttl`) after the inserts, and a
/// publication that delete would remove is not inserted at all.
fn plan<'a>(
    items: &'a [Item<'a>],
    streams: HashMap<String, Locked>,
    mut known: HashMap<(String, String), KeyEntry>,
    now: u64,
) -> (Vec<Result<AppendOutcome, HistoryError>>, Writes<'a>) {
    let now_ms = clamp_i64(now);
    let mut state: BTreeMap<&'a str, Planned> = BTreeMap::new();
    let mut outcomes = Vec::with_capacity(items.len());
    let mut publications: Vec<(&'a str, i64, &'a str, Option<&'a str>)> = Vec::new();
    let mut remembered: BTreeMap<(&'a str, &'a str), KeyEntry> = BTreeMap::new();
    for item in items {
        let channel: &'a str = &item.request.channel;
        if !state.contains_key(channel) {
            let Some(locked) = streams.get(channel) else {
                let message = format!("stream {channel} was not locked by its batch");
                outcomes.push(Err(HistoryError::Backend(message)));
                continue;
            };
            let planned = Planned {
                epoch: locked.epoch.clone(),
                top: locked.top,
                size: 0,
                ttl: 0,
                upto: i64::MIN,
                min_ttl: i64::MAX,
                appended: false,
            };
            state.insert(channel, planned);
        }
        let Some(stream) = state.get_mut(channel) else {
            continue; // inserted above
        };
        if let Some(key) = &item.key {
            let seen = known.get(&(channel.to_owned(), key.to_string()));
            if let Some(&(offset, _)) = seen.filter(|(_, expires_at)| *expires_at > now_ms) {
                outcomes.push(Ok(AppendOutcome::Duplicate(StreamPosition {
                    offset: offset.max(0) as u64,
                    epoch: stream.epoch.clone(),
                })));
                continue;
            }
        }
        let info = match &item.info {
            Ok(info) => info.as_deref(),
            Err(message) => {
                outcomes.push(Err(HistoryError::Backend(message.clone())));
                continue;
            }
        };
        let limits = item.request.limits;
        let size = clamp_i64(limits.size as u64);
        let ttl = millis(limits.ttl);
        stream.top += 1;
        let offset = stream.top;
        stream.size = size;
        stream.ttl = ttl;
        stream.upto = stream.upto.max(offset - size);
        stream.min_ttl = stream.min_ttl.min(ttl);
        stream.appended = true;
        if size > 0 {
            publications.push((channel, offset, item.request.data.get(), info));
        }
        if let Some(key) = &item.key {
            let expires_at = now_ms.saturating_add(millis(limits.idempotency_window));
            known.insert((channel.to_owned(), key.to_string()), (offset, expires_at));
            remembered.insert((channel, key.as_ref()), (offset, expires_at));
        }
        outcomes.push(Ok(AppendOutcome::Appended {
            publication: Publication {
                offset: offset as u64,
                data: item.request.data.clone(),
                info: item.request.info.clone(),
                time: now,
            },
            epoch: stream.epoch.clone(),
        }));
    }

    let mut writes = Writes::default();
    for (channel, offset, data, info) in publications {
        if state.get(channel).is_some_and(|s| offset <= s.upto) {
            continue; // a later append of the batch trims it away
        }
        writes.pub_channels.push(channel);
        writes.pub_offsets.push(offset);
        writes.pub_data.push(data);
        writes.pub_info.push(info);
    }
    for (channel, stream) in state.iter().filter(|(_, s)| s.appended) {
        writes.channels.push(channel);
        writes.tops.push(stream.top);
        writes.sizes.push(stream.size);
        writes.ttls.push(stream.ttl);
        writes.trim_upto.push(stream.upto);
        writes
            .trim_before
            .push(now_ms.saturating_sub(stream.min_ttl));
    }
    for ((channel, key), (offset, expires_at)) in remembered {
        writes.key_channels.push(channel);
        writes.keys.push(key);
        writes.key_offsets.push(offset);
        writes.key_expiries.push(expires_at);
    }
    (outcomes, writes)
}

// ------------------------------------------------------------------ writer

/// The writer's prepared statements (per connection).
struct WriterConn {
    client: Client,
    lock_streams: Statement,
    find_keys: Statement,
    insert_publications: Statement,
    update_streams: Statement,
    trim_offsets: Statement,
    trim_times: Statement,
    remember_keys: Statement,
    expire_keys: Statement,
    expire_publications: Statement,
}

impl WriterConn {
    /// Connects (the connection is driven by the current runtime) and prepares.
    async fn open(config: &Config, target: &str) -> Result<WriterConn, tokio_postgres::Error> {
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(drive(connection, target.to_owned()));
        Ok(WriterConn {
            lock_streams: client.prepare(sql::LOCK_STREAMS).await?,
            find_keys: client.prepare(sql::FIND_KEYS).await?,
            insert_publications: client.prepare(sql::INSERT_PUBLICATIONS).await?,
            update_streams: client.prepare(sql::UPDATE_STREAMS).await?,
            trim_offsets: client.prepare(sql::TRIM_OFFSETS).await?,
            trim_times: client.prepare(sql::TRIM_TIMES).await?,
            remember_keys: client.prepare(sql::REMEMBER_KEYS).await?,
            expire_keys: client.prepare(sql::EXPIRE_KEYS).await?,
            expire_publications: client.prepare(sql::EXPIRE_PUBLICATIONS).await?,
            client,
        })
    }
}

/// A request sent on the connection; its rows (none for simple queries).
type Pending<'a> = Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + 'a>>;
type Params<'a> = [&'a (dyn ToSql + Sync)];

fn query<'a>(client: &'a Client, statement: &'a Statement, params: &'a Params<'a>) -> Pending<'a> {
    Box::pin(client.query(statement, params))
}

fn simple<'a>(client: &'a Client, sql: &'a str) -> Pending<'a> {
    Box::pin(async move { client.batch_execute(sql).await.map(|()| Vec::new()) })
}

/// Sends every request before waiting for any answer (one round trip).
/// `join_all` polls in order, and a request is written on its first poll,
/// so the server receives them in order.
async fn pipeline(requests: Vec<Pending<'_>>) -> Result<Vec<Vec<Row>>, tokio_postgres::Error> {
    futures_util::future::join_all(requests)
        .await
        .into_iter()
        .collect()
}

/// Why a batch's transaction failed.
struct Failure {
    error: tokio_postgres::Error,
    /// `COMMIT` had been sent: if the connection broke, the outcome is unknown.
    committing: bool,
}

/// One batch in one transaction; one outcome per item.
async fn transact(
    conn: &WriterConn,
    items: &[Item<'_>],
    now: u64,
) -> Result<Vec<Result<AppendOutcome, HistoryError>>, Failure> {
    let client = &conn.client;
    let result = transact_inner(conn, items, now).await;
    if result.is_err() && !client.is_closed() {
        // After an error the transaction is aborted (or, if `COMMIT` ran,
        // over): end it so the connection is clean for the next batch.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

async fn transact_inner(
    conn: &WriterConn,
    items: &[Item<'_>],
    now: u64,
) -> Result<Vec<Result<AppendOutcome, HistoryError>>, Failure> {
    let client = &conn.client;
    let now_ms = clamp_i64(now);
    let before_commit = |error| Failure {
        error,
        committing: false,
    };

    // Round trip 1: lock (creating) the streams, find the keys.
    let channels: Vec<&str> = items
        .iter()
        .map(|item| &*item.request.channel)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let epochs: Vec<String> = channels.iter().map(|_| new_epoch()).collect();
    let pairs: BTreeSet<(&str, &str)> = items
        .iter()
        .filter_map(|item| Some((&*item.request.channel, item.key.as_deref()?)))
        .collect();
    let (key_channels, keys): (Vec<&str>, Vec<&str>) = pairs.into_iter().unzip();
    let lock_params: [&(dyn ToSql + Sync); 2] = [&channels, &epochs];
    let find_params: [&(dyn ToSql + Sync); 3] = [&key_channels, &keys, &now_ms];
    let mut requests = vec![
        simple(client, "BEGIN"),
        query(client, &conn.lock_streams, &lock_params),
    ];
    if !keys.is_empty() {
        requests.push(query(client, &conn.find_keys, &find_params));
    }
    let mut answers = pipeline(requests).await.map_err(before_commit)?.into_iter();
    let _begin = answers.next();
    let mut streams = HashMap::new();
    for row in answers.next().unwrap_or_default() {
        let channel: String = row.try_get(0).map_err(before_commit)?;
        let epoch: String = row.try_get(1).map_err(before_commit)?;
        let top: i64 = row.try_get(2).map_err(before_commit)?;
        streams.insert(channel, Locked { epoch, top });
    }
    let mut known = HashMap::new();
    for row in answers.next().unwrap_or_default() {
        let channel: String = row.try_get(0).map_err(before_commit)?;
        let key: String = row.try_get(1).map_err(before_commit)?;
        let offset: i64 = row.try_get(2).map_err(before_commit)?;
        let expires_at: i64 = row.try_get(3).map_err(before_commit)?;
        known.insert((channel, key), (offset, expires_at));
    }

    let (outcomes, w) = plan(items, streams, known, now);

    // Round trip 2: write, trim, remember keys, commit.
    let insert_params: [&(dyn ToSql + Sync); 5] = [
        &w.pub_channels,
        &w.pub_offsets,
        &w.pub_data,
        &w.pub_info,
        &now_ms,
    ];
    let update_params: [&(dyn ToSql + Sync); 4] = [&w.channels, &w.tops, &w.sizes, &w.ttls];
    let trim_offsets_params: [&(dyn ToSql + Sync); 2] = [&w.channels, &w.trim_upto];
    let trim_times_params: [&(dyn ToSql + Sync); 2] = [&w.channels, &w.trim_before];
    let remember_params: [&(dyn ToSql + Sync); 4] =
        [&w.key_channels, &w.keys, &w.key_offsets, &w.key_expiries];
    let mut requests = Vec::new();
    if !w.pub_channels.is_empty() {
        requests.push(query(client, &conn.insert_publications, &insert_params));
    }
    if !w.channels.is_empty() {
        requests.push(query(client, &conn.update_streams, &update_params));
        requests.push(query(client, &conn.trim_offsets, &trim_offsets_params));
        requests.push(query(client, &conn.trim_times, &trim_times_params));
    }
    if !w.keys.is_empty() {
        requests.push(query(client, &conn.remember_keys, &remember_params));
    }
    requests.push(simple(client, "COMMIT"));
    pipeline(requests).await.map_err(|error| Failure {
        error,
        committing: true,
    })?;
    Ok(outcomes)
}

/// A callback or flush reply, delivered after its batch.
enum Answer {
    Append(AppendDone, Result<AppendOutcome, HistoryError>),
    Flush(
        oneshot::Sender<Result<(), HistoryError>>,
        Result<(), HistoryError>,
    ),
}

impl Answer {
    fn deliver(self) {
        match self {
            Answer::Append(done, outcome) => {
                // A panicking callback must not kill the writer.
                if catch_unwind(AssertUnwindSafe(move || done(outcome))).is_err() {
                    tracing::error!("history append callback panicked");
                }
            }
            Answer::Flush(reply, result) => {
                let _ = reply.send(result);
            }
        }
    }
}

/// The writer thread's state.
struct Writer {
    config: Config,
    target: String,
    conn: Option<WriterConn>,
    queue: mpsc::UnboundedReceiver<Job>,
    last_maintenance: Instant,
    retry_connect_at: Option<Instant>,
}

impl Writer {
    /// The thread: I/O in a current-thread runtime, callbacks outside it
    /// (as on SQLite's writer, they run on a plain thread).
    fn run(mut self, ready: oneshot::Sender<Result<(), StoreError>>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = ready.send(Err(StoreError::Spawn(error)));
                return;
            }
        };
        match runtime.block_on(WriterConn::open(&self.config, &self.target)) {
            Ok(conn) => self.conn = Some(conn),
            Err(source) => {
                let _ = ready.send(Err(StoreError::PostgresConnect {
                    target: self.target.clone(),
                    source: PgError(source),
                }));
                return;
            }
        }
        if ready.send(Ok(())).is_err() {
            return; // `connect` was abandoned
        }
        runtime.block_on(self.maintain());
        while let Some((batch, stop)) = runtime.block_on(self.next_batch()) {
            let answers = runtime.block_on(self.commit(batch));
            for answer in answers {
                answer.deliver();
            }
            if stop {
                break;
            }
            if self.last_maintenance.elapsed() >= MAINTENANCE_EVERY {
                runtime.block_on(self.maintain());
            }
        }
        tracing::debug!("PostgreSQL store writer stopped");
    }

    /// Waits for work (maintaining while idle), then takes what is queued;
    /// `None` once every sender is gone. The flag says `Shutdown` was seen.
    async fn next_batch(&mut self) -> Option<(Vec<Job>, bool)> {
        let first = loop {
            let idle = MAINTENANCE_EVERY.saturating_sub(self.last_maintenance.elapsed());
            match tokio::time::timeout(idle, self.queue.recv()).await {
                Ok(Some(job)) => break job,
                Ok(None) => return None,
                Err(_) => self.maintain().await,
            }
        };
        let mut stop = matches!(first, Job::Shutdown);
        let mut bytes = job_bytes(&first);
        let mut batch = vec![first];
        while !stop && batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match self.queue.try_recv() {
                Ok(Job::Shutdown) => stop = true,
                Ok(job) => {
                    bytes += job_bytes(&job);
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        Some((batch, stop))
    }

    /// Commits `batch` and returns the answers in queue order.
    async fn commit(&mut self, batch: Vec<Job>) -> Vec<Answer> {
        let now = now_millis();
        // Appends PostgreSQL cannot take fail alone, not with their batch.
        let mut items = Vec::with_capacity(batch.len());
        let mut rejected = Vec::with_capacity(batch.len());
        for job in &batch {
            if let Job::Append(request, _) = job {
                match Item::check(request) {
                    Ok(item) => {
                        items.push(item);
                        rejected.push(None);
                    }
                    Err(error) => rejected.push(Some(error)),
                }
            }
        }
        let applied = if items.is_empty() {
            Ok(Vec::new())
        } else {
            self.apply(&items, now).await
        };
        drop(items); // nothing borrows the batch past this point

        let mut rejected = rejected.into_iter();
        let (mut outcomes, failure) = match applied {
            Ok(outcomes) => (outcomes.into_iter(), None),
            Err(error) => (Vec::new().into_iter(), Some(error)),
        };
        let mut answers = Vec::with_capacity(batch.len());
        for job in batch {
            match job {
                Job::Append(_, done) => {
                    let outcome = match (rejected.next().flatten(), &failure) {
                        (Some(error), _) => Err(error),
                        (None, Some(error)) => Err(copy_error(error)),
                        (None, None) => outcomes.next().unwrap_or_else(|| {
                            Err(HistoryError::Backend("append outcome missing".into()))
                        }),
                    };
                    answers.push(Answer::Append(done, outcome));
                }
                Job::Flush(reply) => {
                    let result = failure.as_ref().map_or(Ok(()), |e| Err(copy_error(e)));
                    answers.push(Answer::Flush(reply, result));
                }
                Job::Shutdown => {}
            }
        }
        answers
    }

    /// Runs the batch's transaction, retrying what certainly did not commit.
    async fn apply(
        &mut self,
        items: &[Item<'_>],
        now: u64,
    ) -> Result<Vec<Result<AppendOutcome, HistoryError>>, HistoryError> {
        let mut attempt = 1;
        loop {
            let conn = self.connection().await?;
            let failure =
                match tokio::time::timeout(BATCH_TIMEOUT, transact(conn, items, now)).await {
                    Ok(Ok(outcomes)) => return Ok(outcomes),
                    Ok(Err(failure)) => failure,
                    Err(_) => {
                        self.conn = None; // PostgreSQL rolls back what was open
                        let message = format!(
                            "PostgreSQL store write timed out after {BATCH_TIMEOUT:?}; \
                         the appends may or may not have been stored"
                        );
                        tracing::error!(jobs = items.len(), "{message}");
                        return Err(HistoryError::Unavailable(message));
                    }
                };
            let lost = conn.client.is_closed() || failure.error.is_closed();
            let conflict = matches!(
                failure.error.code(),
                Some(&SqlState::T_R_DEADLOCK_DETECTED | &SqlState::T_R_SERIALIZATION_FAILURE)
            );
            // "cached plan must not change result type": the schema changed
            // under the prepared statements (a newer node migrated).
            let stale = failure.error.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED);
            if lost || stale {
                self.conn = None;
            }
            let error = PgError(failure.error);
            let retry = conflict || stale || (lost && !failure.committing);
            if retry && attempt < BATCH_ATTEMPTS {
                tracing::warn!(%error, attempt, "PostgreSQL store batch failed before commit, retrying");
                attempt += 1;
                continue;
            }
            tracing::error!(%error, jobs = items.len(), "PostgreSQL store batch failed, rolled back");
            return Err(if lost && failure.committing {
                HistoryError::Unavailable(format!(
                    "PostgreSQL connection lost while committing ({error}); \
                     the appends may or may not have been stored"
                ))
            } else if lost {
                HistoryError::Unavailable(format!("PostgreSQL connection lost: {error}"))
            } else {
                HistoryError::Backend(format!("store write failed: {error}"))
            });
        }
    }

    /// The open connection, reconnecting if it was lost (at most once per
    /// [`RECONNECT_BACKOFF`] while PostgreSQL stays unreachable).
    async fn connection(&mut self) -> Result<&WriterConn, HistoryError> {
        if self
            .conn
            .as_ref()
            .is_some_and(|conn| conn.client.is_closed())
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            if self.retry_connect_at.is_some_and(|at| Instant::now() < at) {
                return Err(HistoryError::Unavailable(format!(
                    "PostgreSQL at {} is unreachable",
                    self.target
                )));
            }
            match WriterConn::open(&self.config, &self.target).await {
                Ok(conn) => {
                    tracing::info!(target = %self.target, "PostgreSQL store writer connected");
                    self.retry_connect_at = None;
                    self.conn = Some(conn);
                }
                Err(error) => {
                    self.retry_connect_at = Some(Instant::now() + RECONNECT_BACKOFF);
                    let message = format!(
                        "cannot connect to PostgreSQL at {}: {}",
                        self.target,
                        PgError(error)
                    );
                    tracing::error!("{message}");
                    return Err(HistoryError::Unavailable(message));
                }
            }
        }
        self.conn
            .as_ref()
            .ok_or_else(|| HistoryError::Unavailable("PostgreSQL store not connected".into()))
    }

    /// Deletes expired idempotency keys and publications beyond their TTL
    /// (for channels that stopped receiving appends, which trim themselves).
    async fn maintain(&mut self) {
        self.last_maintenance = Instant::now();
        let Ok(conn) = self.connection().await else {
            return;
        };
        let now_ms = clamp_i64(now_millis());
        let sweep = async {
            let mut deleted = [0u64; 2];
            for (count, statement) in deleted
                .iter_mut()
                .zip([&conn.expire_keys, &conn.expire_publications])
            {
                for _ in 0..MAINTENANCE_CHUNKS {
                    let n = conn
                        .client
                        .execute(statement, &[&now_ms, &MAINTENANCE_CHUNK])
                        .await?;
                    *count += n;
                    if n < MAINTENANCE_CHUNK as u64 {
                        break;
                    }
                }
            }
            Ok::<_, tokio_postgres::Error>(deleted)
        };
        match tokio::time::timeout(BATCH_TIMEOUT, sweep).await {
            Ok(Ok([keys, publications])) => {
                tracing::debug!(keys, publications, "PostgreSQL store maintenance done")
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %PgError(error), "PostgreSQL store maintenance failed")
            }
            Err(_) => {
                tracing::warn!("PostgreSQL store maintenance timed out");
                self.conn = None;
            }
        }
    }
}

/// What a job adds to a batch's size.
fn job_bytes(job: &Job) -> usize {
    match job {
        Job::Append(request, _) => request.data.get().len(),
        _ => 0,
    }
}

// ------------------------------------------------------------------- reads

/// A read connection and its statements.
struct Reader {
    client: Client,
    read: Statement,
    ensure: Statement,
    /// Reads using it now (reads pipeline on one connection).
    in_flight: AtomicUsize,
}

impl Reader {
    async fn prepare(client: Client) -> Result<Reader, tokio_postgres::Error> {
        Ok(Reader {
            read: client.prepare(sql::READ).await?,
            ensure: client.prepare(sql::ENSURE_STREAM).await?,
            client,
            in_flight: AtomicUsize::new(0),
        })
    }
}

/// A reader in use; counted in its `in_flight`.
struct Lease(Arc<Reader>);

impl Lease {
    fn new(reader: &Arc<Reader>) -> Lease {
        reader.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease(reader.clone())
    }
}

impl std::ops::Deref for Lease {
    type Target = Reader;
    fn deref(&self) -> &Reader {
        &self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Up to [`MAX_READERS`] connections, opened when every open one is busy.
struct ReadPool {
    config: Config,
    target: String,
    readers: Mutex<Vec<Arc<Reader>>>,
}

impl ReadPool {
    async fn lease(&self) -> Result<Lease, HistoryError> {
        if let Some(lease) = self.pick(false) {
            return Ok(lease);
        }
        let opened = async {
            let (client, connection) = self.config.connect(NoTls).await?;
            tokio::spawn(drive(connection, self.target.clone()));
            Reader::prepare(client).await
        };
        match opened.await {
            Ok(reader) => {
                let reader = Arc::new(reader);
                let lease = Lease::new(&reader);
                let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
                if readers.len() < MAX_READERS {
                    readers.push(reader);
                }
                Ok(lease)
            }
            // Busy but open connections still serve (pipelined).
            Err(error) => self.pick(true).ok_or_else(|| {
                HistoryError::Unavailable(format!(
                    "cannot connect to PostgreSQL at {}: {}",
                    self.target,
                    PgError(error)
                ))
            }),
        }
    }

    /// The least busy open reader: if idle, or if `any`, or if no more may
    /// be opened; `None` means "open another".
    fn pick(&self, any: bool) -> Option<Lease> {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        readers.retain(|reader| !reader.client.is_closed());
        let full = readers.len() >= MAX_READERS;
        let best = readers
            .iter()
            .min_by_key(|reader| reader.in_flight.load(Ordering::Relaxed))?;
        (any || full || best.in_flight.load(Ordering::Relaxed) == 0).then(|| Lease::new(best))
    }
}

/// Reads a page, creating the stream first if it does not exist.
async fn read_page(
    reader: &Reader,
    channel: &str,
    query: &HistoryQuery,
) -> Result<HistoryPage, HistoryError> {
    if let Some(page) = read_once(reader, channel, query).await? {
        return Ok(page);
    }
    reader
        .client
        .execute(&reader.ensure, &[&channel, &new_epoch()])
        .await
        .map_err(read_error)?;
    read_once(reader, channel, query)
        .await?
        .ok_or_else(|| HistoryError::Backend(format!("stream {channel} missing after creation")))
}

fn read_error(error: tokio_postgres::Error) -> HistoryError {
    if error.is_closed() {
        HistoryError::Unavailable(format!("PostgreSQL connection lost: {}", PgError(error)))
    } else {
        HistoryError::Backend(format!("store read failed: {}", PgError(error)))
    }
}

/// One read statement; `None` if the stream does not exist.
async fn read_once(
    reader: &Reader,
    channel: &str,
    query: &HistoryQuery,
) -> Result<Option<HistoryPage>, HistoryError> {
    let since_epoch = query.since.as_ref().map(|since| since.epoch.as_str());
    let since_offset = query.since.as_ref().map(|since| clamp_i64(since.offset));
    let limit = clamp_i64(u64::try_from(query.limit).unwrap_or(u64::MAX));
    let now_ms = clamp_i64(now_millis());
    let rows = reader
        .client
        .query(
            &reader.read,
            &[&channel, &since_epoch, &since_offset, &limit, &now_ms],
        )
        .await
        .map_err(read_error)?;
    page_from_rows(&rows, query)
        .map_err(|message| HistoryError::Backend(format!("store read failed: {message}")))
}

/// Builds the page from the read's rows (see [`sql::READ`]).
fn page_from_rows(rows: &[Row], query: &HistoryQuery) -> Result<Option<HistoryPage>, String> {
    let column = |error| PgError(error).to_string();
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let epoch: String = first.try_get(0).map_err(column)?;
    let top = first.try_get::<_, i64>(1).map_err(column)?.max(0) as u64;
    let recovery: bool = first.try_get(2).map_err(column)?;
    let mut publications = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(offset) = row.try_get::<_, Option<i64>>(3).map_err(column)? else {
            continue; // the stream row alone: no publication
        };
        let data = RawJson::from_string(row.try_get(4).map_err(column)?)
            .map_err(|error| format!("publication {offset} has invalid data: {error}"))?;
        let info = row
            .try_get::<_, Option<String>>(5)
            .map_err(column)?
            .map(|text| serde_json::from_str::<ClientInfo>(&text))
            .transpose()
            .map_err(|error| format!("publication {offset} has invalid info: {error}"))?;
        let time: i64 = row.try_get(6).map_err(column)?;
        publications.push(Publication {
            offset: offset.max(0) as u64,
            data,
            info,
            time: time.max(0) as u64,
        });
    }
    // Whichever branch ran, the page is oldest first unless `reverse` asked
    // (and there is no `since`) for newest first.
    publications.sort_unstable_by_key(|publication| publication.offset);
    if query.reverse && query.since.is_none() {
        publications.reverse();
    }
    let position = StreamPosition { offset: top, epoch };
    // Offsets are unique in (since, top]: as many rows as missed = none lost.
    let limit = u64::try_from(query.limit).unwrap_or(u64::MAX);
    let recovered = recovery
        && query.since.as_ref().is_some_and(|since| {
            let missed = top.saturating_sub(since.offset);
            missed <= limit && publications.len() as u64 == missed
        });
    Ok(Some(HistoryPage {
        position,
        publications,
        recovered,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::HistoryLimits;

    const NOW: u64 = 1_700_000_000_000;

    fn request(channel: &str, key: Option<&str>, size: usize, window_ms: u64) -> AppendRequest {
        AppendRequest {
            channel: channel.into(),
            data: RawJson::from_string(serde_json::to_string(channel).unwrap()).unwrap(),
            info: None,
            idempotency_key: key.map(str::to_owned),
            limits: HistoryLimits {
                size,
                ttl: Duration::from_secs(300),
                idempotency_window: Duration::from_millis(window_ms),
            },
        }
    }

    fn locked(streams: &[(&str, i64)]) -> HashMap<String, Locked> {
        streams
            .iter()
            .map(|&(channel, top)| {
                let epoch = format!("e-{channel}");
                (channel.to_owned(), Locked { epoch, top })
            })
            .collect()
    }

    fn items(requests: &[AppendRequest]) -> Vec<Item<'_>> {
        requests.iter().map(|r| Item::check(r).unwrap()).collect()
    }

    /// `(duplicate, offset)` per outcome.
    fn summary(outcomes: &[Result<AppendOutcome, HistoryError>]) -> Vec<(bool, u64)> {
        outcomes
            .iter()
            .map(|outcome| match outcome.as_ref().expect("append failed") {
                AppendOutcome::Appended { publication, .. } => (false, publication.offset),
                AppendOutcome::Duplicate(position) => (true, position.offset),
            })
            .collect()
    }

    #[test]
    fn plan_numbers_per_channel_and_spots_duplicates_within_the_batch() {
        let requests = [
            request("a", Some("k"), 10, 60_000),
            request("b", None, 10, 60_000),
            request("a", Some("k"), 10, 60_000),
            request("a", None, 10, 60_000),
        ];
        let items = items(&requests);
        let (outcomes, w) = plan(&items, locked(&[("a", 5), ("b", 0)]), HashMap::new(), NOW);
        assert_eq!(
            summary(&outcomes),
            [(false, 6), (false, 1), (true, 6), (false, 7)]
        );
        match &outcomes[2] {
            Ok(AppendOutcome::Duplicate(position)) => assert_eq!(position.epoch, "e-a"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(w.pub_channels, ["a", "b", "a"]);
        assert_eq!(w.pub_offsets, [6, 1, 7]);
        assert_eq!(w.pub_data, ["\"a\"", "\"b\"", "\"a\""]);
        assert_eq!(w.channels, ["a", "b"]);
        assert_eq!(w.tops, [7, 1]);
        assert_eq!(w.key_channels, ["a"]);
        assert_eq!(w.keys, ["k"]);
        assert_eq!(w.key_offsets, [6]);
        assert_eq!(w.key_expiries, [NOW as i64 + 60_000]);
    }

    #[test]
    fn plan_treats_a_zero_window_like_sqlite() {
        // SQLite: a key matches while `expires_at > now`; with a zero window
        // it expires at once, so the same key appends again.
        let requests = [
            request("a", Some("k"), 10, 0),
            request("a", Some("k"), 10, 0),
        ];
        let items = items(&requests);
        let (outcomes, w) = plan(&items, locked(&[("a", 0)]), HashMap::new(), NOW);
        assert_eq!(summary(&outcomes), [(false, 1), (false, 2)]);
        assert_eq!(w.key_offsets, [2]); // the row is replaced: last one wins
    }

    #[test]
    fn plan_uses_the_keys_found_in_the_database() {
        let requests = [
            request("a", Some("live"), 10, 1000),
            request("a", Some("expired"), 10, 1000),
        ];
        let items = items(&requests);
        let mut known = HashMap::new();
        known.insert(("a".to_owned(), "live".to_owned()), (3, NOW as i64 + 1));
        known.insert(("a".to_owned(), "expired".to_owned()), (2, NOW as i64));
        let (outcomes, w) = plan(&items, locked(&[("a", 4)]), known, NOW);
        assert_eq!(summary(&outcomes), [(true, 3), (false, 5)]);
        assert_eq!(w.keys, ["expired"]);
        assert_eq!(w.tops, [5]);
    }

    #[test]
    fn plan_trims_like_one_append_at_a_time() {
        // Sizes 10, 10, then 1: the last append's trim removes offsets 1 and
        // 2, so they are never written; the delete covers older rows.
        let mut shrink = request("a", None, 1, 0);
        shrink.limits.ttl = Duration::from_secs(5);
        let requests = [request("a", None, 10, 0), request("a", None, 10, 0), shrink];
        let items = items(&requests);
        let (outcomes, w) = plan(&items, locked(&[("a", 0)]), HashMap::new(), NOW);
        assert_eq!(summary(&outcomes), [(false, 1), (false, 2), (false, 3)]);
        assert_eq!(w.pub_offsets, [3]);
        assert_eq!(w.tops, [3]);
        assert_eq!(w.sizes, [1]); // the last append's limits
        assert_eq!(w.ttls, [5000]);
        assert_eq!(w.trim_upto, [2]);
        assert_eq!(w.trim_before, [NOW as i64 - 5000]); // the smallest TTL
    }

    #[test]
    fn plan_size_zero_writes_no_publication_but_counts() {
        let requests = [request("z", None, 0, 0), request("z", None, 0, 0)];
        let items = items(&requests);
        let (outcomes, w) = plan(&items, locked(&[("z", 7)]), HashMap::new(), NOW);
        assert_eq!(summary(&outcomes), [(false, 8), (false, 9)]);
        assert!(w.pub_offsets.is_empty());
        assert_eq!(w.tops, [9]);
        assert_eq!(w.trim_upto, [9]);
    }

    #[test]
    fn plan_fails_only_the_append_whose_stream_was_not_locked() {
        let requests = [request("a", None, 10, 0), request("lost", None, 10, 0)];
        let items = items(&requests);
        let (outcomes, w) = plan(&items, locked(&[("a", 0)]), HashMap::new(), NOW);
        assert!(matches!(outcomes[0], Ok(AppendOutcome::Appended { .. })));
        assert!(matches!(outcomes[1], Err(HistoryError::Backend(_))));
        assert_eq!(w.channels, ["a"]);
    }

    #[test]
    fn keys_that_would_not_fit_are_stored_as_digests() {
        assert_eq!(key_column("order-42"), "order-42");
        let long = "x".repeat(MAX_RAW_KEY_BYTES + 1);
        for key in [long.as_str(), "nul\0key", "\u{1}looks-like-a-digest"] {
            let stored = key_column(key);
            assert!(stored.starts_with(DIGEST_MARK), "{key:?} kept raw");
            assert_eq!(stored.len(), 1 + 64);
            assert!(!stored.contains('\0'));
            assert_eq!(stored, key_column(key)); // stable
        }
        assert_ne!(
            key_column(&long),
            key_column(&"x".repeat(MAX_RAW_KEY_BYTES + 2))
        );
    }

    #[test]
    fn channels_postgres_cannot_store_fail_alone() {
        assert!(check_channel("chat:room-1").is_ok());
        assert!(check_channel("bad\0name").is_err());
        assert!(check_channel(&"c".repeat(MAX_CHANNEL_BYTES + 1)).is_err());
        let bad = request("bad\0name", None, 10, 0);
        assert!(Item::check(&bad).is_err());
    }

    #[test]
    fn targets_never_show_the_password() {
        let config = parse_config("postgres://sb:hunter2@db.example:6543/history").unwrap();
        assert_eq!(describe(&config), "postgres://sb@db.example:6543/history");
        assert_eq!(config.get_application_name(), Some("switchboard"));
        assert_eq!(config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        let config = parse_config("host=a,b port=5433 user=u password=hunter2 dbname=d").unwrap();
        assert_eq!(describe(&config), "postgres://u@a:5433,b:5433/d");
    }

    #[test]
    fn bad_connection_strings_do_not_quote_the_password() {
        let error = parse_config("user=u passwordhunter2!x").unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with("invalid PostgreSQL connection string"));
        assert!(!message.contains('!'), "{message}");
        let error = parse_config("postgres://u:hunter2@h:notaport/db").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_clear_error() {
        let error = match PostgresStore::connect("postgres://sb:hunter2@127.0.0.1:1/db").await {
            Err(error) => error,
            Ok(_) => panic!("connected to port 1"),
        };
        let message = error.to_string();
        assert!(
            message.starts_with("cannot connect to PostgreSQL at postgres://sb@127.0.0.1:1/db: "),
            "{message}"
        );
        assert!(message.contains("refused"), "{message}"); // the cause is shown
        assert!(!message.contains("hunter2"));
        assert!(matches!(
            HistoryError::from(error),
            HistoryError::Unavailable(_)
        ));
    }
}
