//! The store: everything Switchboard must not forget across restarts.
//!
//! The broker's history is ephemeral (memory on one node, Redis for many):
//! losing it on a restart is announced to clients by a new stream epoch, and
//! they reload. Namespaces with `persist = true` need more: an acknowledged
//! publication must still be there after a crash, a `kill -9` or a restart,
//! with the same offsets and the same epoch, so a client resumes with a
//! gap-free recovery.
//!
//! Today the store holds durable channel history (streams, publications and
//! idempotency keys) behind the [`History`](crate::history::History) trait.
//! Later it will also hold rooms, read positions and notifications.
//!
//! Backends (issue 4): [`SqliteStore`] for a single node (one file, WAL,
//! `synchronous = FULL`, one group-committing writer thread);
//! [`PostgresStore`] for many nodes sharing one database, behind the same
//! trait and with the same semantics (offsets assigned under a row lock per
//! channel, so any number of nodes may append to one channel).
//!
//! Schema changes are numbered SQL files in `src/store/migrations/` (SQLite)
//! and `src/store/migrations/postgres/`, embedded in the binary and applied
//! in order on open (tracked by `PRAGMA user_version` for SQLite, by the
//! `switchboard_migrations` table under an advisory lock for PostgreSQL).

use std::path::PathBuf;

use crate::history::HistoryError;

pub mod postgres;
pub mod sqlite;
mod writer;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Why the store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database's directory could not be created.
    #[error("cannot create store directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database file could not be opened or configured.
    #[error("cannot open store {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// A schema migration failed (the database is left at the previous version).
    #[error("store migration {version} failed: {source}")]
    Migrate {
        version: usize,
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer Switchboard.
    #[error("store schema version {found} is newer than this binary supports ({supported})")]
    TooNew { found: i64, supported: usize },
    /// The writer thread could not be started.
    #[error("cannot start store writer thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The backend failed while doing `context`.
    #[error("store backend failed while {context}: {source}")]
    Backend {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// The writer thread is gone (it stopped or panicked).
    #[error("store writer is not running")]
    WriterGone,
    /// The PostgreSQL connection string could not be parsed (the reason
    /// never quotes the string: it may hold a password).
    #[error("invalid PostgreSQL connection string: {0}")]
    PostgresUrl(String),
    /// PostgreSQL could not be reached or refused the connection; `target` is
    /// `postgres://user@host:port/dbname`, without the password.
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    PostgresConnect {
        target: String,
        #[source]
        source: postgres::PgError,
    },
    /// A PostgreSQL schema migration failed (rolled back: the database is left
    /// at the previous version).
    #[error("PostgreSQL store migration {version} failed: {source}")]
    PostgresMigrate {
        version: usize,
        #[source]
        source: postgres::PgError,
    },
    /// PostgreSQL failed while doing `context`.
    #[error("PostgreSQL store failed while {context}: {source}")]
    PostgresBackend {
        context: &'static str,
        #[source]
        source: postgres::PgError,
    },
}

impl From<StoreError> for HistoryError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::WriterGone | StoreError::PostgresConnect { .. } => {
                HistoryError::Unavailable(error.to_string())
            }
            other => HistoryError::Backend(other.to_string()),
        }
    }
}
