//! The `History` contract: behaviour every implementation must share, since
//! clients' recovery depends on it (offsets, epochs, idempotency, trimming,
//! recovery, ordering).
//!
//! The cases in [`cases`] take an `Arc<dyn History>`; [`contract_tests!`]
//! turns each into a `#[tokio::test]` for one implementation: the SQLite
//! store, the memory history and the PostgreSQL store run all of them; a new
//! implementation adds one `contract_tests!` line (`async` when its fixture
//! is built by an async fn).
//!
//! PostgreSQL: `postgres://postgres@127.0.0.1:5432/test`, or the URL in
//! `SWITCHBOARD_TEST_POSTGRES`. Each fixture gets a schema of its own (via
//! `search_path`), dropped afterwards. An unreachable server fails the tests.

use std::sync::Arc;

use switchboard::history::History;
use switchboard::store::{PostgresStore, SqliteStore};
use switchboard::stream::{
    AppendOutcome, AppendRequest, HistoryLimits, HistoryPage, HistoryQuery, Publication, RawJson,
    StreamPosition,
};

/// A history under test, plus whatever must live as long as it (a tempdir, a
/// schema); dropped after the history.
pub struct Fixture {
    pub history: Arc<dyn History>,
    _keep: Option<Box<dyn std::any::Any + Send>>,
}

impl Fixture {
    pub fn new(history: Arc<dyn History>) -> Fixture {
        Fixture {
            history,
            _keep: None,
        }
    }
}

fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("history.db")).unwrap();
    Fixture {
        history: Arc::new(store),
        _keep: Some(Box::new(dir)),
    }
}

async fn postgres() -> Fixture {
    let schema = pg::Schema::create().await;
    let store = pg::connect(&schema.url()).await;
    Fixture {
        history: Arc::new(store),
        _keep: Some(Box::new(schema)),
    }
}

/// PostgreSQL test support: the server, and a schema per test.
mod pg {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use switchboard::store::postgres::PgError;
    use switchboard::store::PostgresStore;
    use tokio_postgres::NoTls;

    const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    pub fn base_url() -> String {
        std::env::var("SWITCHBOARD_TEST_POSTGRES")
            .ok()
            .filter(|url| !url.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_URL.to_owned())
    }

    /// `url` without its password, for messages.
    fn redact(url: &str) -> String {
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &url[scheme + 3..at];
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{}{user}{}", &url[..scheme + 3], &url[at..])
            }
            _ if url.contains("password") => "(a key=value string with a password)".into(),
            _ => url.to_owned(),
        }
    }

    /// `base` (a URL or a key=value string) with the parameter `key` added.
    pub fn with_param(base: &str, key: &str, value: &str) -> String {
        if base.contains("://") {
            let encoded = value
                .replace('%', "%25")
                .replace(' ', "%20")
                .replace('=', "%3D")
                .replace('&', "%26");
            let separator = if base.contains('?') { '&' } else { '?' };
            format!("{base}{separator}{key}={encoded}")
        } else {
            format!("{base} {key}='{value}'")
        }
    }

    /// A client on the server itself; panics, naming the server, if it is not
    /// reachable: the PostgreSQL tests must fail, not skip.
    pub async fn admin(url: &str) -> tokio_postgres::Client {
        match tokio_postgres::connect(url, NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client
            }
            Err(error) => panic!(
                "PostgreSQL is not reachable at {}: {}. The PostgreSQL history tests need a \
                 server: start one there or set SWITCHBOARD_TEST_POSTGRES to its URL.",
                redact(url),
                PgError(error)
            ),
        }
    }

    /// Opens a store, panicking with the store's own message.
    pub async fn connect(url: &str) -> PostgresStore {
        PostgresStore::connect(url)
            .await
            .unwrap_or_else(|error| panic!("PostgresStore::connect failed: {error}"))
    }

    /// A schema of its own for one test, dropped (with everything in it) on drop.
    pub struct Schema {
        pub name: String,
        base: String,
    }

    impl Schema {
        pub async fn create() -> Schema {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let name = format!(
                "sb_test_{}_{}_{nonce:x}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let base = base_url();
            admin(&base)
                .await
                .batch_execute(&format!("CREATE SCHEMA {name}"))
                .await
                .unwrap_or_else(|e| panic!("cannot create schema {name}: {}", PgError(e)));
            Schema { name, base }
        }

        /// The server's URL with this schema as `search_path`.
        pub fn url(&self) -> String {
            with_param(
                &self.base,
                "options",
                &format!("-c search_path={}", self.name),
            )
        }

        /// A client whose `search_path` is this schema.
        pub async fn client(&self) -> tokio_postgres::Client {
            admin(&self.url()).await
        }
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            // Drop may run inside or outside a runtime: use a thread of its own.
            let (base, name) = (self.base.clone(), self.name.clone());
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(async {
                    let (client, connection) = tokio_postgres::connect(&base, NoTls)
                        .await
                        .map_err(|e| PgError(e).to_string())?;
                    tokio::spawn(connection);
                    client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await
                        .map_err(|e| PgError(e).to_string())
                })
            })
            .join();
            match dropped {
                Ok(Ok(())) => {}
                Ok(Err(error)) => eprintln!("cannot drop test schema {}: {error}", self.name),
                Err(_) => eprintln!("dropping test schema {} panicked", self.name),
            }
        }
    }
}

mod support {
    use super::*;
    use std::time::Duration;

    pub fn limits(size: usize) -> HistoryLimits {
        HistoryLimits {
            size,
            ttl: Duration::from_secs(300),
            idempotency_window: Duration::from_secs(300),
        }
    }

    pub fn request(
        channel: &str,
        data: &str,
        key: Option<&str>,
        limits: HistoryLimits,
    ) -> AppendRequest {
        AppendRequest {
            channel: channel.into(),
            data: RawJson::from_string(data.to_owned()).unwrap(),
            info: None,
            idempotency_key: key.map(str::to_owned),
            limits,
        }
    }

    /// Appends and waits for the callback.
    pub async fn append(h: &dyn History, request: AppendRequest) -> AppendOutcome {
        let (tx, rx) = tokio::sync::oneshot::channel();
        h.append(
            request,
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        );
        rx.await
            .expect("append callback dropped")
            .expect("append failed")
    }

    /// Appends `n` publications `{"n":1..}` with default limits; returns the last position.
    pub async fn fill(
        h: &dyn History,
        channel: &str,
        n: u64,
        limits: HistoryLimits,
    ) -> StreamPosition {
        let mut last = None;
        for i in 1..=n {
            let data = format!("{{\"n\":{i}}}");
            last = Some(
                append(h, request(channel, &data, None, limits))
                    .await
                    .position(),
            );
        }
        last.expect("fill at least one")
    }

    pub async fn read(
        h: &dyn History,
        channel: &str,
        since: Option<StreamPosition>,
        limit: usize,
        reverse: bool,
    ) -> HistoryPage {
        let query = HistoryQuery {
            since,
            limit,
            reverse,
        };
        h.read(channel, query).await.expect("read failed")
    }

    pub fn offsets(publications: &[Publication]) -> Vec<u64> {
        publications.iter().map(|p| p.offset).collect()
    }

    pub fn appended_offset(outcome: &AppendOutcome) -> u64 {
        match outcome {
            AppendOutcome::Appended { publication, .. } => publication.offset,
            AppendOutcome::Duplicate(position) => panic!("unexpected duplicate at {position:?}"),
        }
    }
}

/// The contract, one function per case.
pub mod cases {
    use super::support::*;
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    pub async fn offsets_start_at_one_and_increase(h: Arc<dyn History>) {
        for expected in 1..=5 {
            let outcome = append(&*h, request("a", "{\"x\":1}", None, limits(10))).await;
            assert_eq!(appended_offset(&outcome), expected);
            if let AppendOutcome::Appended { publication, .. } = outcome {
                assert_eq!(publication.data.get(), "{\"x\":1}");
                assert!(publication.time > 0);
            }
        }
        let page = read(&*h, "a", None, 100, false).await;
        assert_eq!(page.position.offset, 5);
        assert_eq!(offsets(&page.publications), vec![1, 2, 3, 4, 5]);
        assert!(!page.recovered);
    }

    pub async fn epoch_is_stable(h: Arc<dyn History>) {
        let unknown = read(&*h, "fresh", None, 10, false).await;
        assert_eq!(unknown.position.offset, 0);
        assert!(!unknown.position.epoch.is_empty());
        assert!(unknown.publications.is_empty());
        let again = read(&*h, "fresh", None, 10, false).await;
        assert_eq!(again.position, unknown.position);
        for _ in 0..3 {
            let outcome = append(&*h, request("fresh", "1", None, limits(10))).await;
            assert_eq!(outcome.position().epoch, unknown.position.epoch);
        }
        let after = read(&*h, "fresh", None, 10, false).await;
        assert_eq!(after.position.epoch, unknown.position.epoch);
        assert_eq!(after.position.offset, 3);
    }

    pub async fn callbacks_follow_queue_order(h: Arc<dyn History>) {
        // Queued from one task: per channel, callbacks come in queue order.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (all_done, wait) = tokio::sync::oneshot::channel();
        let all_done = Arc::new(Mutex::new(Some(all_done)));
        for seq in 0..1000usize {
            let channel = format!("q{}", seq % 10);
            let seen = seen.clone();
            let all_done = all_done.clone();
            h.append(
                request(&channel, "1", None, limits(1000)),
                Box::new(move |outcome| {
                    let offset = outcome.expect("append failed").position().offset;
                    let mut seen = seen.lock().unwrap();
                    seen.push((seq % 10, seq, offset));
                    if seen.len() == 1000 {
                        if let Some(tx) = all_done.lock().unwrap().take() {
                            let _ = tx.send(());
                        }
                    }
                }),
            );
        }
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap()
            .unwrap();
        let seen = seen.lock().unwrap();
        let mut last: HashMap<usize, (usize, u64)> = HashMap::new();
        for &(channel, seq, offset) in seen.iter() {
            let (last_seq, last_offset) = last.get(&channel).copied().unwrap_or((0, 0));
            assert!(
                last_offset == 0 || seq > last_seq,
                "queue order broken on q{channel}"
            );
            assert_eq!(
                offset,
                last_offset + 1,
                "offsets out of order on q{channel}"
            );
            last.insert(channel, (seq, offset));
        }
        assert!(last.values().all(|&(_, offset)| offset == 100));
    }

    pub async fn concurrent_appends_keep_per_channel_order(h: Arc<dyn History>) {
        // 1000 appends from 20 tasks onto 10 channels.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for task in 0..20usize {
            let h = h.clone();
            let seen = seen.clone();
            tasks.push(tokio::spawn(async move {
                let mut waits = Vec::new();
                for i in 0..50usize {
                    let channel = (task + i) % 10;
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let seen = seen.clone();
                    h.append(
                        request(&format!("c{channel}"), "{}", None, limits(1000)),
                        Box::new(move |outcome| {
                            let offset = outcome.expect("append failed").position().offset;
                            seen.lock().unwrap().push((channel, offset));
                            let _ = tx.send(());
                        }),
                    );
                    waits.push(rx);
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                for rx in waits {
                    rx.await.unwrap();
                }
            }));
        }
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .unwrap()
                .unwrap();
        }
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        assert_eq!(seen.len(), 1000);
        let mut last: HashMap<usize, u64> = HashMap::new();
        for &(channel, offset) in seen.iter() {
            let previous = last.insert(channel, offset).unwrap_or(0);
            assert_eq!(
                offset,
                previous + 1,
                "c{channel}: {offset} after {previous}"
            );
        }
        for channel in 0..10 {
            let page = read(&*h, &format!("c{channel}"), None, 1000, false).await;
            assert_eq!(page.position.offset, 100);
            assert_eq!(offsets(&page.publications), (1..=100).collect::<Vec<_>>());
        }
    }

    pub async fn idempotent_key_returns_first_position(h: Arc<dyn History>) {
        fill(&*h, "i", 2, limits(10)).await;
        let first = append(&*h, request("i", "\"once\"", Some("k1"), limits(10))).await;
        assert_eq!(appended_offset(&first), 3);
        let again = append(&*h, request("i", "\"twice\"", Some("k1"), limits(10))).await;
        assert_eq!(again, AppendOutcome::Duplicate(first.position()));
        let page = read(&*h, "i", None, 10, false).await;
        assert_eq!(page.position.offset, 3);
        assert_eq!(page.publications.len(), 3);
        assert_eq!(page.publications[2].data.get(), "\"once\"");
        // A later append still gets the next offset.
        let next = append(&*h, request("i", "1", Some("k2"), limits(10))).await;
        assert_eq!(appended_offset(&next), 4);
    }

    pub async fn idempotency_is_per_channel(h: Arc<dyn History>) {
        let a = append(&*h, request("ka", "1", Some("same"), limits(10))).await;
        let b = append(&*h, request("kb", "1", Some("same"), limits(10))).await;
        assert_eq!(appended_offset(&a), 1);
        assert_eq!(appended_offset(&b), 1);
        let a2 = append(&*h, request("ka", "2", Some("same"), limits(10))).await;
        assert_eq!(a2, AppendOutcome::Duplicate(a.position()));
    }

    pub async fn expired_key_appends_again(h: Arc<dyn History>) {
        let short = HistoryLimits {
            idempotency_window: Duration::from_millis(50),
            ..limits(10)
        };
        let first = append(&*h, request("x", "1", Some("k"), short)).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        // The second publish remembers the key for longer (no timing race below).
        let second = append(&*h, request("x", "1", Some("k"), limits(10))).await;
        assert_eq!(appended_offset(&first), 1);
        assert_eq!(appended_offset(&second), 2);
        // The renewed key now points at the second publish.
        let third = append(&*h, request("x", "1", Some("k"), short)).await;
        assert_eq!(third, AppendOutcome::Duplicate(second.position()));
    }

    pub async fn size_trims_oldest(h: Arc<dyn History>) {
        let top = fill(&*h, "s", 5, limits(3)).await;
        assert_eq!(top.offset, 5);
        let page = read(&*h, "s", None, 100, false).await;
        assert_eq!(offsets(&page.publications), vec![3, 4, 5]);
        assert_eq!(page.publications[0].data.get(), "{\"n\":3}");
        let since_1 = StreamPosition {
            offset: 1,
            ..top.clone()
        };
        let lost = read(&*h, "s", Some(since_1), 100, false).await;
        assert!(!lost.recovered);
        assert_eq!(offsets(&lost.publications), vec![3, 4, 5]);
        let since_2 = StreamPosition {
            offset: 2,
            ..top.clone()
        };
        let ok = read(&*h, "s", Some(since_2), 100, false).await;
        assert!(ok.recovered);
        assert_eq!(offsets(&ok.publications), vec![3, 4, 5]);
        assert_eq!(ok.position, top);
    }

    pub async fn size_zero_keeps_nothing_but_counts(h: Arc<dyn History>) {
        let top = fill(&*h, "z", 3, limits(0)).await;
        assert_eq!(top.offset, 3);
        let page = read(&*h, "z", None, 100, false).await;
        assert!(page.publications.is_empty());
        assert_eq!(page.position, top);
        let since = StreamPosition {
            offset: 2,
            ..top.clone()
        };
        assert!(!read(&*h, "z", Some(since), 100, false).await.recovered);
    }

    pub async fn ttl_hides_old_publications(h: Arc<dyn History>) {
        let short = HistoryLimits {
            ttl: Duration::from_millis(300),
            ..limits(10)
        };
        fill(&*h, "t", 2, short).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let empty = read(&*h, "t", None, 10, false).await;
        assert!(empty.publications.is_empty());
        assert_eq!(empty.position.offset, 2);
        let top = append(&*h, request("t", "3", None, short)).await.position();
        let page = read(&*h, "t", None, 10, false).await;
        assert_eq!(offsets(&page.publications), vec![3]);
        let since_0 = StreamPosition {
            offset: 0,
            ..top.clone()
        };
        let lost = read(&*h, "t", Some(since_0), 10, false).await;
        assert!(!lost.recovered);
        let since_2 = StreamPosition { offset: 2, ..top };
        let ok = read(&*h, "t", Some(since_2), 10, false).await;
        assert!(ok.recovered);
        assert_eq!(offsets(&ok.publications), vec![3]);
    }

    pub async fn recovery_at_top_is_empty_and_recovered(h: Arc<dyn History>) {
        let top = fill(&*h, "r", 4, limits(10)).await;
        let page = read(&*h, "r", Some(top.clone()), 100, false).await;
        assert!(page.recovered);
        assert!(page.publications.is_empty());
        assert_eq!(page.position, top);
        // Limit 0 is "position only": still recovered at the top.
        assert!(read(&*h, "r", Some(top.clone()), 0, false).await.recovered);
        let behind = StreamPosition { offset: 3, ..top };
        let page = read(&*h, "r", Some(behind), 0, false).await;
        assert!(!page.recovered);
        assert!(page.publications.is_empty());
    }

    pub async fn wrong_epoch_is_not_recovered(h: Arc<dyn History>) {
        let top = fill(&*h, "e", 4, limits(10)).await;
        let stale = StreamPosition {
            offset: 2,
            epoch: format!("{}-old", top.epoch),
        };
        let page = read(&*h, "e", Some(stale), 3, false).await;
        assert!(!page.recovered);
        assert_eq!(page.position, top);
        assert_eq!(offsets(&page.publications), vec![2, 3, 4]);
    }

    pub async fn offset_beyond_top_is_not_recovered(h: Arc<dyn History>) {
        let top = fill(&*h, "b", 3, limits(10)).await;
        let ahead = StreamPosition {
            offset: 7,
            ..top.clone()
        };
        let page = read(&*h, "b", Some(ahead), 100, false).await;
        assert!(!page.recovered);
        assert_eq!(page.position, top);
        assert_eq!(offsets(&page.publications), vec![1, 2, 3]);
    }

    pub async fn limit_cut_is_not_recovered(h: Arc<dyn History>) {
        let top = fill(&*h, "l", 6, limits(10)).await;
        let since = StreamPosition {
            offset: 1,
            ..top.clone()
        };
        let cut = read(&*h, "l", Some(since.clone()), 3, false).await;
        assert!(!cut.recovered);
        assert_eq!(offsets(&cut.publications), vec![2, 3, 4]);
        let exact = read(&*h, "l", Some(since), 5, false).await;
        assert!(exact.recovered);
        assert_eq!(offsets(&exact.publications), vec![2, 3, 4, 5, 6]);
        let latest = read(&*h, "l", None, 2, false).await;
        assert_eq!(offsets(&latest.publications), vec![5, 6]);
    }

    pub async fn reverse_is_newest_first(h: Arc<dyn History>) {
        let top = fill(&*h, "v", 5, limits(10)).await;
        let page = read(&*h, "v", None, 3, true).await;
        assert_eq!(offsets(&page.publications), vec![5, 4, 3]);
        assert_eq!(page.position, top);
        // `reverse` is ignored with `since`.
        let since = StreamPosition { offset: 3, ..top };
        let page = read(&*h, "v", Some(since), 10, true).await;
        assert_eq!(offsets(&page.publications), vec![4, 5]);
        assert!(page.recovered);
    }

    pub async fn flush_waits_for_pending_appends(h: Arc<dyn History>) {
        let done = Arc::new(Mutex::new(0usize));
        for _ in 0..200 {
            let done = done.clone();
            h.append(
                request("f", "1", None, limits(1000)),
                Box::new(move |outcome| {
                    outcome.expect("append failed");
                    *done.lock().unwrap() += 1;
                }),
            );
        }
        h.flush().await.expect("flush failed");
        assert_eq!(*done.lock().unwrap(), 200);
        assert_eq!(read(&*h, "f", None, 0, false).await.position.offset, 200);
    }

    pub async fn publisher_info_round_trips(h: Arc<dyn History>) {
        let info = switchboard::stream::ClientInfo {
            user: "u1".into(),
            client: "c1".into(),
            data: Some(RawJson::from_string("{\"name\":\"Ann\"}".into()).unwrap()),
        };
        let mut with_info = request("p", "[1,2]", None, limits(10));
        with_info.info = Some(info.clone());
        let outcome = append(&*h, with_info).await;
        let page = read(&*h, "p", None, 10, false).await;
        match outcome {
            AppendOutcome::Appended { publication, .. } => {
                assert_eq!(page.publications, vec![publication])
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(page.publications[0].info, Some(info));
    }
}

/// One `#[tokio::test]` per contract case for the implementation `$make`
/// builds (a `fn() -> Fixture`, or with `async`, an `async fn() -> Fixture`).
macro_rules! contract_tests {
    ($name:ident, async $make:expr) => {
        contract_tests!(@module $name { ($make)().await });
    };
    ($name:ident, $make:expr) => {
        contract_tests!(@module $name { ($make)() });
    };
    (@module $name:ident $fixture:block) => {
        mod $name {
            use super::*;
            contract_tests!(@cases $fixture;
                offsets_start_at_one_and_increase,
                epoch_is_stable,
                callbacks_follow_queue_order,
                concurrent_appends_keep_per_channel_order,
                idempotent_key_returns_first_position,
                idempotency_is_per_channel,
                expired_key_appends_again,
                size_trims_oldest,
                size_zero_keeps_nothing_but_counts,
                ttl_hides_old_publications,
                recovery_at_top_is_empty_and_recovered,
                wrong_epoch_is_not_recovered,
                offset_beyond_top_is_not_recovered,
                limit_cut_is_not_recovered,
                reverse_is_newest_first,
                flush_waits_for_pending_appends,
                publisher_info_round_trips,
            );
        }
    };
    (@cases $fixture:block; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture: Fixture = $fixture;
                cases::$case(fixture.history.clone()).await;
            }
        )*
    };
}

contract_tests!(sqlite_store, sqlite);
contract_tests!(memory_history, || Fixture::new(Arc::new(
    switchboard::broker::MemoryHistory::new()
)));
contract_tests!(postgres_store, async postgres);
contract_tests!(redis_history, async redis);

/// The Redis at `SWITCHBOARD_TEST_REDIS` (default `redis://127.0.0.1:6379`),
/// under a random key prefix per fixture. Fails when Redis is unreachable.
async fn redis() -> Fixture {
    let url = std::env::var("SWITCHBOARD_TEST_REDIS")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("sbtest:{}:", switchboard::random::token(9));
    let mut options = switchboard::broker::RedisOptions::new(&url).with_prefix(prefix);
    // Test streams vanish a minute after their last append.
    options.stream_idle = std::time::Duration::from_secs(60);
    let history = switchboard::broker::RedisHistory::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} (SWITCHBOARD_TEST_REDIS) is unreachable: {e}"));
    Fixture::new(Arc::new(history))
}

/// SQLite only: everything survives dropping the store and reopening it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_reopen() {
    use support::*;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/history.db");
    let short = limits(3);
    let (top, keyed) = {
        let store = SqliteStore::open(&path).unwrap();
        let top = fill(&store, "keep", 4, short).await;
        let keyed = append(&store, request("keep", "\"k\"", Some("key"), short)).await;
        // Fire-and-forget appends: Drop must still commit them.
        for _ in 0..50 {
            store.append(
                request("late", "1", None, limits(100)),
                Box::new(|r| assert!(r.is_ok())),
            );
        }
        (top, keyed.position())
    };
    assert_eq!(top.offset, 4);
    assert_eq!(keyed.offset, 5);

    let store = SqliteStore::open(&path).unwrap();
    let page = read(&store, "keep", None, 100, false).await;
    assert_eq!(page.position, keyed);
    assert_eq!(offsets(&page.publications), vec![3, 4, 5]);
    assert_eq!(page.publications[2].data.get(), "\"k\"");
    let recovered = read(&store, "keep", Some(top.clone()), 100, false).await;
    assert!(recovered.recovered);
    assert_eq!(offsets(&recovered.publications), vec![5]);
    let duplicate = append(&store, request("keep", "\"k\"", Some("key"), short)).await;
    assert_eq!(duplicate, AppendOutcome::Duplicate(keyed.clone()));
    let next = append(&store, request("keep", "6", None, short))
        .await
        .position();
    assert_eq!(next, StreamPosition { offset: 6, ..keyed });
    assert_eq!(
        read(&store, "late", None, 0, false).await.position.offset,
        50
    );
}

/// Informal throughput: `cargo test --release --test history_contract -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn sqlite_append_throughput() {
    use support::*;
    let fixture = sqlite();
    let h = fixture.history;
    let n = 100_000u64;
    let started = std::time::Instant::now();
    for i in 0..n {
        h.append(
            request(&format!("t{}", i % 100), "{\"x\":1}", None, limits(100)),
            Box::new(|r| {
                r.expect("append failed");
            }),
        );
    }
    h.flush().await.unwrap();
    let elapsed = started.elapsed();
    println!(
        "{n} appends in {elapsed:?}: {:.0}/s",
        n as f64 / elapsed.as_secs_f64()
    );
}

/// SQLite only: what was acknowledged survives `kill -9` of the process.
/// Re-runs this test binary as a child that appends until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acknowledged_appends_survive_kill() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sqlite_kill_child", "--ignored", "--nocapture"])
        .env("SWITCHBOARD_KILL_TEST_DB", &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = 0u64;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(offset) = line.unwrap().strip_prefix("ack ") {
            acked = offset.trim().parse().unwrap();
            if acked >= 300 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no flush
    child.wait().unwrap();
    assert!(acked >= 300, "child acknowledged only {acked}");
    let store = SqliteStore::open(&path).unwrap();
    let page = support::read(&store, "k", None, 1_000_000, false).await;
    assert!(page.position.offset >= acked);
    let expected: Vec<u64> = (1..=page.position.offset).collect();
    assert_eq!(support::offsets(&page.publications), expected);
}

/// The child of [`sqlite_acknowledged_appends_survive_kill`] (does nothing alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn sqlite_kill_child() {
    use std::io::Write;
    let Some(path) = std::env::var_os("SWITCHBOARD_KILL_TEST_DB") else {
        return;
    };
    let store = Arc::new(SqliteStore::open(std::path::Path::new(&path)).unwrap());
    loop {
        // Several appends in flight, so batches hold more than one.
        for _ in 0..8 {
            store.append(
                support::request("k", "{}", None, support::limits(1_000_000)),
                Box::new(|outcome| {
                    let offset = outcome.unwrap().position().offset;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "ack {offset}");
                    let _ = out.flush();
                }),
            );
        }
        store.flush().await.unwrap();
    }
}

/// PostgreSQL only: everything survives dropping the store and connecting
/// again to the same schema (a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_reopen() {
    use support::*;
    let schema = pg::Schema::create().await;
    let short = limits(3);
    let (top, keyed) = {
        let store = pg::connect(&schema.url()).await;
        let top = fill(&store, "keep", 4, short).await;
        let keyed = append(&store, request("keep", "\"k\"", Some("key"), short)).await;
        // Fire-and-forget appends: Drop must still commit them.
        for _ in 0..50 {
            store.append(
                request("late", "1", None, limits(100)),
                Box::new(|r| assert!(r.is_ok())),
            );
        }
        (top, keyed.position())
    };
    assert_eq!(top.offset, 4);
    assert_eq!(keyed.offset, 5);

    let store = pg::connect(&schema.url()).await;
    let page = read(&store, "keep", None, 100, false).await;
    assert_eq!(page.position, keyed);
    assert_eq!(offsets(&page.publications), vec![3, 4, 5]);
    assert_eq!(page.publications[2].data.get(), "\"k\"");
    let recovered = read(&store, "keep", Some(top.clone()), 100, false).await;
    assert!(recovered.recovered);
    assert_eq!(offsets(&recovered.publications), vec![5]);
    let duplicate = append(&store, request("keep", "\"k\"", Some("key"), short)).await;
    assert_eq!(duplicate, AppendOutcome::Duplicate(keyed.clone()));
    let next = append(&store, request("keep", "6", None, short))
        .await
        .position();
    assert_eq!(next, StreamPosition { offset: 6, ..keyed });
    assert_eq!(
        read(&store, "late", None, 0, false).await.position.offset,
        50
    );
}

/// PostgreSQL only: two stores on one database (two nodes) append to the
/// same channels at once: offsets are unique and gap-free, each node's
/// callbacks come in offset order, and epochs and idempotency keys are shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_share_one_history() {
    use std::collections::{BTreeSet, HashMap};
    use std::sync::Mutex;
    use support::*;
    let schema = pg::Schema::create().await;
    let nodes: Vec<Arc<dyn History>> = vec![
        Arc::new(pg::connect(&schema.url()).await),
        Arc::new(pg::connect(&schema.url()).await),
    ];

    // Whoever reads first creates the epoch; the other node sees the same.
    let first = read(&*nodes[1], "n0", None, 0, false).await.position;
    assert_eq!(read(&*nodes[0], "n0", None, 0, false).await.position, first);

    let per_channel = 300usize;
    let channels = 4usize;
    // (node, channel) -> offsets in callback order.
    type Seen = HashMap<(usize, usize), Vec<u64>>;
    let seen: Arc<Mutex<Seen>> = Default::default();
    let mut tasks = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let node = node.clone();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let mut waits = Vec::new();
            for i in 0..per_channel * channels / 2 {
                let channel = i % channels;
                let (tx, rx) = tokio::sync::oneshot::channel();
                let seen = seen.clone();
                node.append(
                    request(&format!("n{channel}"), "{}", None, limits(10_000)),
                    Box::new(move |outcome| {
                        let offset = outcome.expect("append failed").position().offset;
                        let mut seen = seen.lock().unwrap();
                        seen.entry((index, channel)).or_default().push(offset);
                        let _ = tx.send(());
                    }),
                );
                waits.push(rx);
                if i % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            for rx in waits {
                rx.await.unwrap();
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(std::time::Duration::from_secs(60), task)
            .await
            .unwrap()
            .unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    for channel in 0..channels {
        let mut all = BTreeSet::new();
        for node in 0..nodes.len() {
            let offsets = &seen[&(node, channel)];
            assert!(
                offsets.windows(2).all(|w| w[0] < w[1]),
                "node {node} saw n{channel} out of order"
            );
            for &offset in offsets {
                assert!(
                    all.insert(offset),
                    "offset {offset} of n{channel} given twice"
                );
            }
        }
        let expected: BTreeSet<u64> = (1..=per_channel as u64).collect();
        assert_eq!(all, expected, "n{channel} has gaps");
        let page = read(
            &*nodes[channel % 2],
            &format!("n{channel}"),
            None,
            10_000,
            false,
        )
        .await;
        assert_eq!(page.position.offset, per_channel as u64);
        assert_eq!(page.publications.len(), per_channel);
        if channel == 0 {
            assert_eq!(page.position.epoch, first.epoch);
        }
    }

    // A key published on one node is a duplicate on the other.
    let once = append(&*nodes[0], request("k", "1", Some("key"), limits(10))).await;
    let again = append(&*nodes[1], request("k", "2", Some("key"), limits(10))).await;
    assert_eq!(again, AppendOutcome::Duplicate(once.position()));
}

/// PostgreSQL only: nodes starting together migrate once, without errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_starts_migrate_once() {
    let schema = pg::Schema::create().await;
    let url = schema.url();
    let starts = (0..6).map(|_| PostgresStore::connect(&url));
    let stores = futures_util::future::join_all(starts).await;
    for store in &stores {
        if let Err(error) = store {
            panic!("a concurrent start failed: {error}");
        }
    }
    drop(stores);
    let client = schema.client().await;
    let versions = client
        .query("SELECT version FROM switchboard_migrations", &[])
        .await
        .unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].get::<_, i32>(0), 1);
}

/// PostgreSQL only: a schema from a newer Switchboard is refused, by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_newer_schema() {
    let schema = pg::Schema::create().await;
    drop(pg::connect(&schema.url()).await);
    let client = schema.client().await;
    client
        .batch_execute("INSERT INTO switchboard_migrations (version) VALUES (99)")
        .await
        .unwrap();
    match PostgresStore::connect(&schema.url()).await {
        Err(switchboard::store::StoreError::TooNew { found: 99, .. }) => {}
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

/// PostgreSQL only: when the server ends the store's sessions (a restart, a
/// failover), appends and reads go on over new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reconnects_after_losing_its_connections() {
    use support::*;
    let schema = pg::Schema::create().await;
    let name = format!("sbtest-{}", schema.name);
    let url = pg::with_param(&schema.url(), "application_name", &name);
    let store = pg::connect(&url).await;
    fill(&store, "r", 3, limits(10)).await;
    assert_eq!(read(&store, "r", None, 10, false).await.position.offset, 3);

    let admin = schema.client().await;
    let ended = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .await
        .unwrap();
    assert!(ended.len() >= 2, "expected a writer and a reader session");

    let next = append(&store, request("r", "4", None, limits(10))).await;
    assert_eq!(appended_offset(&next), 4);
    let page = read(&store, "r", None, 10, false).await;
    assert_eq!(offsets(&page.publications), vec![1, 2, 3, 4]);
}

/// PostgreSQL only: the last handle dropped inside an append callback (on
/// the writer thread) must not deadlock the writer joining itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dropping_the_last_handle_inside_a_callback() {
    use std::sync::Mutex;
    let schema = pg::Schema::create().await;
    let store = Arc::new(pg::connect(&schema.url()).await);
    let slot = Mutex::new(Some(store.clone()));
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (finished, check) = tokio::sync::oneshot::channel::<()>();
    let callback = move |outcome: Result<AppendOutcome, _>| {
        assert!(outcome.is_ok());
        wait.recv().unwrap();
        drop(slot.lock().unwrap().take()); // the last handle: Drop runs on the writer
        let _ = finished.send(());
    };
    store.append(
        support::request("c", "1", None, support::limits(10)),
        Box::new(callback),
    );
    drop(store);
    go.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), check)
        .await
        .expect("the writer deadlocked")
        .unwrap();
}

/// PostgreSQL only: the same random operations (bursts of appends with
/// changing limits and repeated keys, then reads of every kind) give the same
/// answers as SQLite, offsets, duplicates and recovery included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_answers_like_sqlite() {
    use std::time::Duration;
    use support::*;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("same.db")).unwrap();
    let schema = pg::Schema::create().await;
    let postgres = pg::connect(&schema.url()).await;
    let stores: [&dyn History; 2] = [&sqlite, &postgres];

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let channels = ["a", "b", "c"];
    for _round in 0..40 {
        // A burst queued at once, so batches mix channels, limits and keys.
        let burst: Vec<AppendRequest> = (0..1 + next(12))
            .map(|i| {
                let key = match next(4) {
                    0 => Some(format!("k{}", next(5))),
                    _ => None,
                };
                let limits = HistoryLimits {
                    size: [0, 1, 3, 10][next(4) as usize],
                    ttl: Duration::from_secs(300),
                    idempotency_window: [Duration::ZERO, Duration::from_secs(300)]
                        [next(2) as usize],
                };
                request(
                    channels[next(3) as usize],
                    &format!("{i}"),
                    key.as_deref(),
                    limits,
                )
            })
            .collect();
        let mut answers = Vec::new();
        for store in stores {
            let waits: Vec<_> = burst
                .iter()
                .map(|request| {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    store.append(
                        request.clone(),
                        Box::new(move |outcome| {
                            let _ = tx.send(outcome.expect("append failed"));
                        }),
                    );
                    rx
                })
                .collect();
            let mut outcomes = Vec::new();
            for rx in waits {
                outcomes.push(match rx.await.unwrap() {
                    AppendOutcome::Appended { publication, .. } => (false, publication.offset),
                    AppendOutcome::Duplicate(position) => (true, position.offset),
                });
            }
            answers.push(outcomes);
        }
        assert_eq!(answers[0], answers[1], "append outcomes differ");

        for channel in channels {
            let mut pages = Vec::new();
            for store in stores {
                let top = read(store, channel, None, 0, false).await.position;
                let since = |offset: u64, same_epoch: bool| StreamPosition {
                    offset,
                    epoch: if same_epoch {
                        top.epoch.clone()
                    } else {
                        "other".into()
                    },
                };
                let queries = [
                    (None, 100, false),
                    (None, 2, false),
                    (None, 3, true),
                    (Some(since(top.offset.saturating_sub(2), true)), 100, false),
                    (Some(since(top.offset.saturating_sub(4), true)), 2, true),
                    (Some(since(0, true)), 100, false),
                    (Some(since(top.offset, true)), 0, false),
                    (Some(since(top.offset + 1, true)), 5, false),
                    (Some(since(1, false)), 3, false),
                ];
                let mut answers = Vec::new();
                for (since, limit, reverse) in queries {
                    let page = read(store, channel, since, limit, reverse).await;
                    let data: Vec<String> = page
                        .publications
                        .iter()
                        .map(|p| p.data.get().to_owned())
                        .collect();
                    answers.push((
                        page.position.offset,
                        offsets(&page.publications),
                        data,
                        page.recovered,
                    ));
                }
                pages.push(answers);
            }
            assert_eq!(pages[0], pages[1], "reads of {channel} differ");
        }
    }
}

/// Informal throughput: `cargo test --release --test history_contract -- --ignored --nocapture postgres_append_throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn postgres_append_throughput() {
    use support::*;
    let fixture = postgres().await;
    let h = fixture.history.clone();
    let n = 100_000u64;
    let started = std::time::Instant::now();
    for i in 0..n {
        h.append(
            request(&format!("t{}", i % 100), "{\"x\":1}", None, limits(100)),
            Box::new(|r| {
                r.expect("append failed");
            }),
        );
    }
    h.flush().await.unwrap();
    let elapsed = started.elapsed();
    println!(
        "postgres: {n} appends in {elapsed:?}: {:.0}/s",
        n as f64 / elapsed.as_secs_f64()
    );
}
