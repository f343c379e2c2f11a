//! Subscriber connections: a [`Fleet`] of them, one task each, on the
//! benchmark's single thread, over a WebSocket (this file's read loop), an
//! SSE stream ([`super::sse`]) or long-polling ([`super::poll`]).
//!
//! The read loop is built to be cheap so the client core is not what is
//! measured: every task reads into one shared 64 KiB buffer (the runtime is
//! single-threaded, so a thread-local is enough), [`FrameReader`] decodes in
//! place, and a publication is recognised by its first bytes
//! (`{"type":"publication"` or Socket.IO's `42["publication"`, see
//! [`super::protocol`]), never parsed as JSON. Counts go to an atomic
//! once per read, not per frame. Only the latency scenario looks inside a
//! frame, and only for its `"t":` timestamp (see [`super::latency`]).
//!
//! [`FrameReader`]: switchboard::ws::FrameReader

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use switchboard::ws::{self, Message};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;

use super::conn::{open_subscriber, Conn};
use super::latency::Recorder;
use super::poll::{poll_loop, PollConn};
use super::protocol::{Endpoint, Kind, Protocol};
use super::sse::{SendPool, SseConn};

thread_local! {
    /// The read buffer shared by every connection task of this thread.
    pub(super) static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; 64 * 1024].into_boxed_slice());
}

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct SubStat {
    /// Publications received.
    pub count: AtomicU64,
    /// Reads that returned data (publications per read shows how much the
    /// server coalesced its writes).
    pub reads: AtomicU64,
    /// Why the connection ended, once it has (a `disconnect` push, a close
    /// frame, EOF or an error).
    pub ended: Mutex<Option<String>>,
}

impl SubStat {
    pub(super) fn end(&self, why: String) {
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        ended.get_or_insert(why);
    }

    /// Why the connection ended, or `None` while it is open.
    pub fn ended(&self) -> Option<String> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Which channel the i-th connection subscribes to.
#[derive(Clone, Debug)]
pub enum Channels {
    /// Everyone on this channel.
    Shared(String),
    /// `<prefix><i>`: a channel of its own.
    PerConnection(String),
}

/// How a subscriber talks to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A WebSocket (either protocol).
    WebSocket,
    /// Server-Sent Events, commands by `POST /connection/send` (Switchboard).
    Sse,
    /// Long-polling, one `GET` pending at a time (Switchboard).
    LongPoll,
}

impl Transport {
    /// Display name, as in figure names.
    pub fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "WebSocket",
            Transport::Sse => "SSE",
            Transport::LongPoll => "long-poll",
        }
    }
}

/// What to do with publications.
#[derive(Clone)]
pub enum Mode {
    /// Count them.
    Count,
    /// Count them and record their latency.
    Latency(Arc<Recorder>),
}

/// How a fleet's connections are opened.
#[derive(Clone)]
pub struct FleetSpec {
    /// The server and its protocol.
    pub endpoint: Endpoint,
    /// The transport every connection of the fleet uses.
    pub transport: Transport,
    /// Connection token (all subscribers share one user; empty for a
    /// server without authentication).
    pub token: Arc<str>,
    /// Channel plan.
    pub channels: Channels,
    /// What the read loop records.
    pub mode: Mode,
    /// Connections being set up at once.
    pub concurrency: usize,
    /// Notified after every read that counted a publication (the saturating
    /// publisher waits on it when it is too far ahead of its probes).
    pub progress: Option<Arc<Notify>>,
}

/// Subscriber connections and their counters.
pub struct Fleet {
    /// One entry per connection, in opening order.
    pub stats: Vec<Arc<SubStat>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// An empty fleet.
    pub fn new() -> Fleet {
        Fleet {
            stats: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// Opens `n` more connections (connect + subscribe each) and returns
    /// once all of them are subscribed; their read loops keep running.
    pub async fn add(&mut self, spec: &FleetSpec, n: usize) -> anyhow::Result<()> {
        let gate = Arc::new(Semaphore::new(spec.concurrency.max(1)));
        // SSE commands go over a few keep-alive connections of their own,
        // closed once the last new stream is subscribed.
        let pool = (spec.transport == Transport::Sse).then(|| SendPool::new(spec.endpoint.addr));
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<(), String>>();
        let first = self.stats.len();
        for i in first..first + n {
            let stat = Arc::new(SubStat::default());
            self.stats.push(stat.clone());
            let channel = match &spec.channels {
                Channels::Shared(c) => c.clone(),
                Channels::PerConnection(prefix) => format!("{prefix}{i}"),
            };
            let (spec, gate, ready) = (spec.clone(), gate.clone(), ready_tx.clone());
            let pool = pool.clone();
            self.tasks.push(tokio::spawn(async move {
                let opened = {
                    // The semaphore is never closed, so acquire cannot fail.
                    let _permit = gate.acquire().await;
                    open(&spec, &channel, pool.as_deref()).await
                };
                drop(pool);
                match opened {
                    Ok(conn) => {
                        let _ = ready.send(Ok(()));
                        let (mode, progress) = (&spec.mode, spec.progress.as_deref());
                        match conn {
                            Opened::WebSocket(c) => read_loop(c, &stat, mode, progress).await,
                            Opened::Sse(c) => super::sse::read_loop(c, &stat, mode, progress).await,
                            Opened::LongPoll(c) => poll_loop(c, &stat, mode, progress).await,
                        }
                    }
                    Err(e) => {
                        let _ = ready.send(Err(format!("connection {i}: {e:#}")));
                    }
                }
            }));
        }
        drop(ready_tx);
        drop(pool);
        for done in 0..n {
            match ready_rx.recv().await {
                Some(Ok(())) => {}
                Some(Err(e)) => bail!("opening subscribers ({done} of {n} ready): {e}"),
                None => bail!("subscriber tasks ended before reporting ({done} of {n} ready)"),
            }
        }
        Ok(())
    }

    /// Publications received by all subscribers so far.
    pub fn total(&self) -> u64 {
        self.stats.iter().map(|s| s.count.load(Relaxed)).sum()
    }

    /// Reads that returned data, all subscribers together.
    pub fn reads(&self) -> u64 {
        self.stats.iter().map(|s| s.reads.load(Relaxed)).sum()
    }

    /// The ended connections and why (at most `limit` reasons).
    pub fn ended(&self, limit: usize) -> (usize, Vec<String>) {
        let ended: Vec<String> = self.stats.iter().filter_map(|s| s.ended()).collect();
        let n = ended.len();
        (n, ended.into_iter().take(limit).collect())
    }

    /// Ends the fleet's sessions on the server, then closes the sockets.
    ///
    /// On Switchboard a dropped socket (or event stream, or poll) only
    /// detaches its session, which then stays subscribed for
    /// `client.session_grace` and is still fed by the next run's
    /// publisher; so the server is asked to disconnect `user` (every
    /// connection of a fleet shares one user), which ends each session at
    /// once and makes each read loop finish. Other servers close with the
    /// socket.
    pub async fn end(self, server: &super::server::Server, user: &str) {
        if server.peer == super::peer::Peer::Switchboard {
            match server.disconnect_user(user) {
                Ok(_) => {
                    let deadline = Instant::now() + std::time::Duration::from_secs(5);
                    while self.tasks.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }
                Err(e) => eprintln!("bench: warning: cannot disconnect {user}: {e:#}"),
            }
        }
        self.close().await;
    }

    /// Closes every connection (drops the sockets) and waits for the tasks.
    pub async fn close(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A subscribed connection, before its read loop starts.
enum Opened {
    WebSocket(Conn),
    Sse(SseConn),
    LongPoll(PollConn),
}

/// Opens one connection of `spec`'s transport and subscribes it to `channel`.
async fn open(spec: &FleetSpec, channel: &str, pool: Option<&SendPool>) -> anyhow::Result<Opened> {
    let (endpoint, token) = (&spec.endpoint, &spec.token);
    Ok(match spec.transport {
        Transport::WebSocket => Opened::WebSocket(open_subscriber(endpoint, token, channel).await?),
        Transport::Sse => {
            let pool = pool.context("no send pool for SSE")?;
            let mut conn = SseConn::open(endpoint, token).await?;
            conn.subscribe(pool, token, channel).await?;
            Opened::Sse(conn)
        }
        Transport::LongPoll => {
            let mut conn = PollConn::open(endpoint, token).await?;
            conn.subscribe(channel).await?;
            Opened::LongPoll(conn)
        }
    })
}

/// Reads until the connection ends, counting publications into `stat`.
async fn read_loop(mut conn: Conn, stat: &SubStat, mode: &Mode, progress: Option<&Notify>) {
    let mut state = LoopState {
        protocol: conn.protocol,
        publications: 0,
        disconnect: None,
        done: None,
    };
    let mut outgoing = Vec::new();
    while let Some(m) = conn.early.pop_front() {
        state.on_message(m, mode, 0, &mut outgoing);
    }
    loop {
        if state.publications > 0 {
            stat.count.fetch_add(state.publications, Relaxed);
            stat.reads.fetch_add(1, Relaxed);
            state.publications = 0;
            if let Some(p) = progress {
                p.notify_one();
            }
        }
        if !outgoing.is_empty() {
            if let Err(e) = conn.stream.write_all(&outgoing).await {
                return stat.end(format!("write error: {e}"));
            }
            outgoing.clear();
        }
        if let Some(why) = state.done.take() {
            return stat.end(state.disconnect.take().unwrap_or(why));
        }
        if let Err(e) = conn.stream.readable().await {
            return stat.end(format!("read error: {e}"));
        }
        let read = READ_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let n = match conn.stream.try_read(&mut buf[..]) {
                Ok(0) => return Err("server closed the TCP connection".to_owned()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(format!("read error: {e}")),
            };
            let now_ns = match mode {
                Mode::Latency(rec) => rec.now_ns(),
                Mode::Count => 0,
            };
            conn.reader
                .feed(&buf[..n], &mut |m| {
                    state.on_message(m, mode, now_ns, &mut outgoing);
                    true
                })
                .map_err(|e| format!("server broke WebSocket framing: {e}"))
        });
        if let Err(why) = read {
            state.done = Some(why);
        }
    }
}

/// Per-connection state of [`read_loop`].
struct LoopState {
    /// How frames are recognised.
    protocol: Protocol,
    /// Publications counted since the last flush to the shared counter.
    publications: u64,
    /// The `disconnect` push, if one came.
    disconnect: Option<String>,
    /// Set when the loop must end.
    done: Option<String>,
}

impl LoopState {
    fn on_message(&mut self, m: Message, mode: &Mode, now_ns: u64, outgoing: &mut Vec<u8>) {
        match m {
            Message::Text(t) => match self.protocol.classify(&t) {
                Kind::Publication => {
                    self.publications += 1;
                    if let Mode::Latency(rec) = mode {
                        rec.record(&t, now_ns);
                    }
                }
                Kind::Ping => ws::encode_client_text(self.protocol.pong(), outgoing),
                Kind::Disconnect => {
                    self.disconnect = Some(String::from_utf8_lossy(&t).into_owned());
                }
                Kind::Reply { .. } | Kind::Other => {}
            },
            Message::Binary(_) | Message::Pong(_) => {}
            Message::Ping(p) => ws::encode_client_pong(&p, outgoing),
            Message::Close(c) => self.done = Some(format!("close frame {c:?}")),
        }
    }
}

/// Waits until every subscriber has `expected` publications or `timeout`
/// passes with no progress; returns (min, max) per-subscriber counts.
pub async fn wait_all_received(
    fleet: &Fleet,
    expected: u64,
    timeout: std::time::Duration,
) -> (u64, u64) {
    let mut last_total = fleet.total();
    let mut last_progress = Instant::now();
    loop {
        let counts = fleet.stats.iter().map(|s| s.count.load(Relaxed));
        let (min, max) = counts.fold((u64::MAX, 0), |(lo, hi), c| (lo.min(c), hi.max(c)));
        if min >= expected || fleet.stats.is_empty() {
            return (min.min(max), max);
        }
        let total = fleet.total();
        if total != last_total {
            last_total = total;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > timeout {
            return (min, max);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The publication count of a spread of subscribers, including the last
/// one opened (usually last in the server's fan-out order).
pub fn probes(fleet: &Fleet, n: usize) -> anyhow::Result<Vec<Arc<SubStat>>> {
    let len = fleet.stats.len();
    if len == 0 {
        bail!("no subscribers to probe");
    }
    let step = (len / n.max(1)).max(1);
    let mut picked: Vec<Arc<SubStat>> = (1..=n.min(len))
        .map(|k| fleet.stats[(k * step).min(len) - 1].clone())
        .collect();
    picked.push(fleet.stats.last().context("no subscribers")?.clone());
    Ok(picked)
}
