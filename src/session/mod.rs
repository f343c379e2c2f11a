//! Sessions: a client's protocol state that outlives the transport carrying
//! it.
//!
//! A [`Session`] owns the [`Client`] (identity, subscriptions), its
//! [`Outbound`] queue and a retransmit [`Log`]. A transport *attaches* to a
//! session (getting a generation number), hands it commands, and takes the
//! numbered frames to write. When the transport is lost the session is
//! *detached* and waits `client.session_grace` for a resume on any
//! transport; a newer attachment replaces an older one (which then sees
//! [`Take::Replaced`] and ends quietly). A session ends for good when its
//! queue closes (a `disconnect` was sent), when the client closes
//! deliberately, or when the grace period passes.

mod log;
mod registry;

pub use self::log::{CursorError, Log, Numbered};
pub use registry::SessionRegistry;

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::client::{Client, Flow, PendingReply, Refusal};
use crate::codes::{CommandError, Disconnect, ErrorCode};
use crate::hub::{Drained, Outbound};
use crate::node::Node;
use crate::protocol::frames;
use crate::stream::now_millis;

/// What became of one command frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Continue,
    /// The session's queue is closing with this disconnect (already queued).
    Close(Disconnect),
    /// The frame asked to resume another session: see [`SessionRegistry::resume`].
    Resume {
        id: u64,
        token: String,
        session: String,
        seq: u64,
    },
}

/// Publishes of one session waiting for their replies at most.
pub const MAX_PUBLISHES_IN_FLIGHT: usize = 32;

/// A publish started by [`Session::start_publish`]: await `reply`, push
/// it, then drop this.
pub struct Publishing {
    pub reply: PendingReply,
    _started: Started,
}

/// Counts a publish in [`InFlight`] until dropped.
struct Started(Arc<InFlight>);

impl Drop for Started {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, AcqRel) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

/// A session's publishes waiting for their replies.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    /// Notified when `count` drops to zero.
    settled: tokio::sync::Notify,
}

/// What a transport gets from [`Session::take`].
#[derive(Debug)]
pub enum Take {
    /// Write these (maybe none) and carry on.
    Frames(Vec<Numbered>),
    /// Write these, the last ones; the session has ended.
    Closing(Vec<Numbered>, Disconnect),
    /// Another transport took the session over: stop without a word.
    Replaced,
}

/// See the module doc.
pub struct Session {
    node: Arc<Node>,
    client: tokio::sync::Mutex<Client>,
    outbound: Arc<Outbound>,
    state: Mutex<State>,
    /// The resume token and user, once connected.
    id: OnceLock<Arc<str>>,
    user: OnceLock<Arc<str>>,
    /// Token expiry (Unix seconds, 0 = none), readable without the client lock.
    expires: AtomicU64,
    ended: AtomicBool,
    /// Subscriptions, presence and the hub entry are gone.
    released: AtomicBool,
}

struct State {
    log: Log,
    /// Publishes started and not answered yet, by any transport (created
    /// with the session's first publish).
    publishing: Option<Arc<InFlight>>,
    /// The generation of the transport holding the session, if any.
    attached: Option<u64>,
    /// Generations handed out so far.
    generations: u64,
    /// When the last transport let go.
    detached_at: Option<Instant>,
}

impl Session {
    /// A new session for a transport that is opening; it is not in the
    /// registry until `connect` succeeds. The opener holds generation 1.
    pub fn new(node: &Arc<Node>) -> Arc<Session> {
        let outbound = Arc::new(Outbound::new(node.config.client.queue_max_size));
        Arc::new(Session {
            node: node.clone(),
            client: tokio::sync::Mutex::new(Client::new(node.clone(), outbound.clone())),
            outbound,
            state: Mutex::new(State {
                log: Log::new(),
                publishing: None,
                attached: Some(1),
                generations: 1,
                detached_at: None,
            }),
            id: OnceLock::new(),
            user: OnceLock::new(),
            expires: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            released: AtomicBool::new(false),
        })
    }

    /// The resume token, once connected.
    pub fn id(&self) -> Option<&Arc<str>> {
        self.id.get()
    }

    /// The session's user, once connected.
    pub fn user(&self) -> Option<&Arc<str>> {
        self.user.get()
    }

    /// Whether `connect` succeeded.
    pub fn is_connected(&self) -> bool {
        self.id.get().is_some()
    }

    /// The token's expiry (Unix seconds), if it has one.
    pub fn expires_at(&self) -> Option<u64> {
        match self.expires.load(Relaxed) {
            0 => None,
            exp => Some(exp),
        }
    }

    /// The queue the hub and commands push to.
    pub fn outbound(&self) -> &Arc<Outbound> {
        &self.outbound
    }

    /// Handles one command frame from whichever transport carries it,
    /// once the publishes started before it are answered.
    pub async fn handle_text(self: &Arc<Self>, text: &str) -> Handled {
        if self.publishing() {
            // Boxed: the wait is rare, and every command's future (a
            // `connect` included) would otherwise carry its room.
            Box::pin(self.settled()).await;
        }
        let mut client = self.client.lock().await;
        let was_connected = client.is_connected();
        let flow = client.handle_text(text).await;
        if !was_connected && client.is_connected() {
            self.connected(&client);
        }
        self.expires
            .store(client.expires_at().unwrap_or(0), Relaxed);
        drop(client);
        match flow {
            Flow::Continue => Handled::Continue,
            Flow::Close(d) => {
                self.close(d.clone());
                Handled::Close(d)
            }
            Flow::Resume {
                id,
                token,
                session,
                seq,
            } => Handled::Resume {
                id,
                token,
                session,
                seq,
            },
        }
    }

    /// Starts `text` if it is a `publish` (see [`Client::start_publish`]).
    /// `None` for anything else; while another command holds the client;
    /// when [`MAX_PUBLISHES_IN_FLIGHT`] of the session's publishes wait for
    /// their replies; or, given the transport's `generation`, when another
    /// transport has taken the session over. Hand such a frame to
    /// [`Session::handle_text`] once the replies already pending are pushed.
    ///
    /// Push the reply, then drop the [`Publishing`]: until every publish
    /// started is dropped, [`Session::handle_text`] and resumes wait, so
    /// no other command's reply overtakes a publish's.
    pub fn start_publish(&self, text: &str, generation: Option<u64>) -> Option<Publishing> {
        let mut client = self.client.try_lock().ok()?;
        let command = client.parse_publish(text)?;
        // Counted under the state lock before it is submitted, so that an
        // `attach` either comes first (and this transport starts nothing)
        // or sees it counted.
        let started = {
            let mut state = self.lock();
            if generation.is_some_and(|g| state.attached != Some(g)) {
                return None;
            }
            let in_flight = state.publishing.get_or_insert_with(Arc::default);
            if in_flight.count.load(Acquire) >= MAX_PUBLISHES_IN_FLIGHT {
                return None;
            }
            in_flight.count.fetch_add(1, AcqRel);
            Started(in_flight.clone())
        };
        Some(Publishing {
            reply: client.start_publish(command),
            _started: started,
        })
    }

    /// Whether publishes started on this session wait for their replies.
    fn publishing(&self) -> bool {
        self.lock()
            .publishing
            .as_ref()
            .is_some_and(|p| p.count.load(Acquire) > 0)
    }

    /// Resolves once every publish started on this session is answered
    /// (its [`Publishing`] dropped).
    pub(crate) async fn settled(&self) {
        loop {
            let Some(in_flight) = self.lock().publishing.clone() else {
                return;
            };
            // Registered before the check: a drop to zero after it wakes us.
            let answered = in_flight.settled.notified();
            if in_flight.count.load(Acquire) == 0 {
                return;
            }
            answered.await;
        }
    }

    /// Connects outside a command (SSE and long-poll open with a token).
    pub async fn connect_with(self: &Arc<Self>, token: &str) -> Result<(), Refusal> {
        let mut client = self.client.lock().await;
        client.connect_with(token)?;
        self.connected(&client);
        self.expires
            .store(client.expires_at().unwrap_or(0), Relaxed);
        Ok(())
    }

    /// Numbering starts with the `connected` reply just queued; the session
    /// becomes resumable.
    fn connected(self: &Arc<Self>, client: &Client) {
        let (Some(id), Some(user)) = (client.session_id(), client.user()) else {
            return;
        };
        let _ = self.id.set(id.clone());
        let _ = self.user.set(user.clone());
        let queued = self.outbound.queued_frames();
        self.lock().log.begin(queued);
        self.node.sessions.insert(self.clone());
    }

    /// Closes the session's queue: what is queued, then `disconnect`, is
    /// the last the client gets.
    pub fn close(&self, d: Disconnect) {
        let last = frames::disconnect(&d);
        self.outbound.close(d, Some(last));
    }

    /// Takes the session over for a resuming transport: the client has every
    /// frame up to `cursor`. Returns the new generation. A cursor the log
    /// cannot serve is refused with 115 and ends the session.
    pub async fn attach(self: &Arc<Self>, cursor: u64) -> Result<u64, CommandError> {
        let resumed = {
            let mut state = self.lock();
            state.log.resume(cursor).map(|()| {
                state.generations += 1;
                let generation = state.generations;
                state.attached = Some(generation);
                state.detached_at = None;
                generation
            })
        };
        match resumed {
            Ok(generation) => {
                // Wake the new transport, and any old one still waiting so
                // it notices the takeover.
                self.outbound.wake();
                Ok(generation)
            }
            Err(e) => {
                self.end().await;
                Err(CommandError::with(ErrorCode::BadCursor, e.to_string()))
            }
        }
    }

    /// Queues the unnumbered `connected` reply of a resume ahead of the replay.
    pub fn greet(&self, frame: bytes::Bytes) {
        self.lock().log.greet(frame);
    }

    /// Resumes with `token` (checked against the session's user) and
    /// returns the `connected` reply with `resumed: true`.
    pub async fn resume_with(&self, id: u64, token: &str) -> Result<bytes::Bytes, Refusal> {
        let mut client = self.client.lock().await;
        let reply = client.resume_with(id, token)?;
        self.expires
            .store(client.expires_at().unwrap_or(0), Relaxed);
        Ok(reply)
    }

    /// Everything for the transport of `generation` to write now.
    pub fn take(&self, generation: u64) -> Take {
        let mut state = self.lock();
        if state.attached != Some(generation) {
            drop(state);
            // The wake-up this transport consumed may have been meant for
            // the one that replaced it.
            self.outbound.wake();
            return Take::Replaced;
        }
        let (drained, closing) = match self.outbound.drain() {
            Drained::Frames(f) => (f, None),
            Drained::Closing(f, d) => (f, Some(d)),
        };
        state.log.extend(drained);
        let now = now_millis();
        let frames = state.log.take(now);
        let cfg = &self.node.config.client;
        state
            .log
            .trim(now, retention(cfg).as_millis() as u64, replay_bytes(cfg));
        match closing {
            Some(d) => Take::Closing(frames, d),
            None => Take::Frames(frames),
        }
    }

    /// Drops written frames past retention (transports call this on their
    /// keep-alive tick, so an idle session does not keep old frames).
    pub fn trim(&self) {
        let cfg = &self.node.config.client;
        self.lock().log.trim(
            now_millis(),
            retention(cfg).as_millis() as u64,
            replay_bytes(cfg),
        );
    }

    /// Waits until there may be something to take (or a takeover).
    pub async fn ready(&self) {
        self.outbound.ready().await
    }

    /// The transport of `generation` is gone without a deliberate close:
    /// the session waits for a resume (see [`SessionRegistry::sweep`]).
    /// A session that never connected ends at once.
    pub fn detach(self: &Arc<Self>, generation: u64) {
        if !self.is_connected() {
            self.end_soon();
            return;
        }
        let mut state = self.lock();
        if state.attached == Some(generation) {
            state.attached = None;
            state.detached_at = Some(Instant::now());
        }
    }

    /// Whether the transport of `generation` still holds the session.
    pub fn is_attached(&self, generation: u64) -> bool {
        self.lock().attached == Some(generation)
    }

    /// How long the session has been without a transport.
    pub fn detached_for(&self) -> Option<Duration> {
        self.lock().detached_at.map(|t| t.elapsed())
    }

    /// Ends the session for good (once): subscriptions, presence and the
    /// registry entry go.
    pub async fn end(&self) {
        if self.ended.swap(true, Relaxed) {
            return;
        }
        if let Some(id) = self.id.get() {
            self.node.sessions.remove(id);
        }
        if !self.outbound.is_closed() {
            self.outbound
                .close(crate::codes::DisconnectCode::Normal.into(), None);
        }
        self.release().await;
        // Free the log now; the Arc may live on in a transport for a while.
        let mut state = self.lock();
        state.log = Log::new();
        state.attached = None;
    }

    /// Undoes the client's subscriptions, presence and hub entry (once),
    /// while the session itself may still hand its last frames to a resume.
    pub async fn release(&self) {
        if !self.released.swap(true, Relaxed) {
            self.client.lock().await.close().await;
        }
    }

    /// [`Session::end`] from a place that cannot wait (a drop).
    pub fn end_soon(self: &Arc<Self>) {
        if self.ended.load(Relaxed) {
            return;
        }
        // Outside a runtime (a drop while the process exits) there is
        // nothing left to undo.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let session = self.clone();
            runtime.spawn(async move { session.end().await });
        }
    }

    /// Whether the session has ended.
    pub fn has_ended(&self) -> bool {
        self.ended.load(Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update of State is a few plain writes: a panic cannot leave
        // it half-done, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Most bytes of written frames a session keeps for a replay. The frames
/// themselves are shared with every subscriber; what this bounds is the
/// log's own entries under heavy traffic. Past it a resume falls back to
/// per-channel recovery with `since`.
pub fn replay_bytes(cfg: &crate::config::ClientConfig) -> usize {
    cfg.queue_max_size.min(64 * 1024)
}

/// How long written frames stay replayable: long enough for a client to
/// notice a connection that died silently and come back.
pub fn retention(cfg: &crate::config::ClientConfig) -> Duration {
    2 * (cfg.ping_interval + cfg.pong_timeout)
}
