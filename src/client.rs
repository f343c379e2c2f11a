//! One client connection's protocol state, independent of the transport.
//!
//! A transport feeds text frames to [`Client::handle_text`] (or parses a
//! `publish` with [`Client::parse_publish`], starts it with
//! [`Client::start_publish`] and pushes its reply itself, once the replies
//! before it are out) and writes whatever appears in the
//! client's [`Outbound`] queue; replies, pushes and the final `disconnect`
//! all go through that queue. The client owns its
//! subscriptions and undoes them (hub, presence, leave pushes) in
//! [`Client::close`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::auth::TokenError;
use crate::channel::{pattern_matches, ChannelName};
use crate::codes::{CommandError, Disconnect, DisconnectCode, ErrorCode};
use crate::config::NamespaceConfig;
use crate::hub::{ClientId, Connection, Outbound, Subscriber};
use crate::node::{Node, Published};
use crate::protocol::command::{parse, Command, Incoming};
use crate::protocol::frames;
use crate::stream::{ClientInfo, HistoryQuery, RawJson, StreamPosition};

/// A started command's reply frame, once it is known.
pub type PendingReply = Pin<Box<dyn Future<Output = Bytes> + Send>>;

/// A parsed `publish` command (see [`Client::parse_publish`]).
pub struct PublishCommand {
    id: u64,
    channel: String,
    data: RawJson,
    idempotency_key: Option<String>,
}

/// Most publications a recovery returns, whatever the history size.
const MAX_RECOVERY: usize = 10_000;

/// What the transport should do after a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Write what is queued, then close with this disconnect.
    Close(Disconnect),
    /// A `connect` asking to resume a session: the session layer answers it.
    Resume {
        id: u64,
        token: String,
        session: String,
        seq: u64,
    },
}

/// A refused `connect` (or resume): the error to answer, and the disconnect
/// that follows when the connection must end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: CommandError,
    pub disconnect: Option<DisconnectCode>,
}

impl From<Failure> for Refusal {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Error(error) => Refusal {
                error,
                disconnect: None,
            },
            Failure::Fatal(error, code) => Refusal {
                error,
                disconnect: Some(code),
            },
            // Only `handle` resumes; the callers of this conversion connect.
            Failure::Resume { .. } => Refusal {
                error: CommandError::with(ErrorCode::BadRequest, "cannot resume here"),
                disconnect: None,
            },
        }
    }
}

/// A command's failure: answer with an error, and maybe end the connection.
/// (`Resume` is not a failure of the client: the session layer answers it.)
enum Failure {
    Error(CommandError),
    Fatal(CommandError, DisconnectCode),
    Resume {
        id: u64,
        token: String,
        session: String,
        seq: u64,
    },
}

impl From<CommandError> for Failure {
    fn from(e: CommandError) -> Self {
        Failure::Error(e)
    }
}

impl From<ErrorCode> for Failure {
    fn from(code: ErrorCode) -> Self {
        Failure::Error(CommandError::new(code))
    }
}

/// Who the connection is, once `connect` succeeded.
struct Identity {
    user: Arc<str>,
    /// The token's `info` claim, shown in presence and join/leave.
    info: Option<RawJson>,
    /// The token's `channels` patterns.
    channels: Vec<String>,
    /// Token expiry, seconds since the Unix epoch.
    expires: Option<u64>,
    /// The session's resume token.
    session: Arc<str>,
}

/// What a subscription needs to be undone.
struct Subscription {
    presence: bool,
    join_leave: bool,
}

/// One client connection.
pub struct Client {
    node: Arc<Node>,
    id: ClientId,
    /// The id as clients see it.
    id_str: Arc<str>,
    outbound: Arc<Outbound>,
    identity: Option<Identity>,
    subscriptions: HashMap<Arc<str>, Subscription>,
}

impl Client {
    /// A new, not yet authenticated client writing to `outbound`.
    pub fn new(node: Arc<Node>, outbound: Arc<Outbound>) -> Client {
        let id = node.new_client_id();
        Client {
            node,
            id,
            id_str: format!("{id:016x}").into(),
            outbound,
            identity: None,
            subscriptions: HashMap::new(),
        }
    }

    /// Whether `connect` succeeded.
    pub fn is_connected(&self) -> bool {
        self.identity.is_some()
    }

    /// The connection token's expiry (seconds since the Unix epoch).
    pub fn expires_at(&self) -> Option<u64> {
        self.identity.as_ref().and_then(|i| i.expires)
    }

    /// The session's resume token, once connected.
    pub fn session_id(&self) -> Option<&Arc<str>> {
        self.identity.as_ref().map(|i| &i.session)
    }

    /// The connected user.
    pub fn user(&self) -> Option<&Arc<str>> {
        self.identity.as_ref().map(|i| &i.user)
    }

    /// Connects with `token` outside a command (the SSE and long-poll
    /// transports connect with their opening request): the `connected`
    /// reply, with id 0, goes to the outbound queue.
    pub fn connect_with(&mut self, token: &str) -> Result<(), Refusal> {
        let reply = self.connect(0, token)?;
        let _ = self.outbound.push(reply);
        Ok(())
    }

    /// Takes `token` for a session being resumed: it must verify and be for
    /// the same user; its expiry and `channels` replace the old ones.
    /// Returns the unnumbered `connected` reply with `resumed: true`.
    pub fn resume_with(&mut self, id: u64, token: &str) -> Result<Bytes, Refusal> {
        let claims = self.node.verifier.connection(token).map_err(fatal_token)?;
        let identity = self.identity.as_mut().ok_or(Refusal {
            error: ErrorCode::SessionNotFound.into(),
            disconnect: None,
        })?;
        if *identity.user != *claims.sub {
            return Err(Refusal {
                error: CommandError::with(
                    ErrorCode::PermissionDenied,
                    "the session belongs to another user",
                ),
                disconnect: None,
            });
        }
        identity.expires = claims.exp;
        identity.channels = claims.channels.unwrap_or_default();
        Ok(self.connected_reply(id, true))
    }

    fn connected_reply(&self, id: u64, resumed: bool) -> Bytes {
        let identity = self.identity.as_ref().expect("connected");
        frames::connected(
            id,
            &frames::Connected {
                client: &self.id_str,
                user: &identity.user,
                session: &identity.session,
                ping: self.node.config.client.ping_interval.as_secs().max(1),
                expires: identity.expires,
                resumed,
            },
        )
    }

    /// Handles one text frame.
    pub async fn handle_text(&mut self, text: &str) -> Flow {
        let (id, command) = match parse(text) {
            Ok(Incoming::Pong) => return Flow::Continue,
            Ok(Incoming::Command { id, command }) => (id, command),
            Err(rejected) => {
                self.send_error(rejected.id, &rejected.error);
                return Flow::Continue;
            }
        };
        if command == Command::Disconnect {
            return Flow::Close(DisconnectCode::Normal.into());
        }
        let kind = command.kind();
        let started = Instant::now();
        let result = self.handle(id, command).await;
        self.node.metrics.command(kind, started.elapsed());
        match result {
            Ok(Some(reply)) => {
                let _ = self.outbound.push(reply);
                Flow::Continue
            }
            Ok(None) => Flow::Continue,
            Err(Failure::Error(e)) => {
                self.send_error(Some(id), &e);
                Flow::Continue
            }
            Err(Failure::Fatal(e, code)) => {
                self.send_error(Some(id), &e);
                Flow::Close(code.into())
            }
            Err(Failure::Resume {
                id,
                token,
                session,
                seq,
            }) => Flow::Resume {
                id,
                token,
                session,
                seq,
            },
        }
    }

    /// `text` as a `publish` of a connected client, for
    /// [`Client::start_publish`]; `None` for anything else (handle it with
    /// [`Client::handle_text`]).
    pub fn parse_publish(&self, text: &str) -> Option<PublishCommand> {
        // Not connected yet: `handle_text` answers.
        self.identity.as_ref()?;
        match parse(text) {
            Ok(Incoming::Command {
                id,
                command:
                    Command::Publish {
                        channel,
                        data,
                        idempotency_key,
                    },
            }) => Some(PublishCommand {
                id,
                channel,
                data,
                idempotency_key,
            }),
            _ => None,
        }
    }

    /// Submits a publish and returns what resolves to its reply
    /// (`published` or an error frame) without pushing it: the caller
    /// pushes replies in command order. The publication is submitted
    /// before this returns, so publications started one after the other
    /// are ordered as they were started.
    pub fn start_publish(&mut self, command: PublishCommand) -> PendingReply {
        let PublishCommand {
            id,
            channel,
            data,
            idempotency_key,
        } = command;
        let started = Instant::now();
        let node = self.node.clone();
        let submitted = self.submit_publish(&channel, data, idempotency_key);
        Box::pin(async move {
            let result = match submitted {
                Ok(published) => published.await,
                Err(e) => Err(e),
            };
            node.metrics.command("publish", started.elapsed());
            match result {
                Ok(position) => frames::published(id, &position),
                Err(e) => {
                    node.metrics.error(e.code);
                    frames::error(Some(id), &e)
                }
            }
        })
    }

    /// Checks that this client may publish to `channel` and submits the
    /// publication.
    fn submit_publish(
        &self,
        channel: &str,
        data: RawJson,
        idempotency_key: Option<String>,
    ) -> Result<Published, CommandError> {
        let (name, ns) = self.node.resolve(channel)?;
        if !ns.client_publish {
            return Err(CommandError::with(
                ErrorCode::PermissionDenied,
                "clients may not publish in this namespace",
            ));
        }
        if (ns.private || name.is_user_limited()) && !self.subscriptions.contains_key(channel) {
            return Err(CommandError::with(
                ErrorCode::PermissionDenied,
                "subscribe to this channel before publishing to it",
            ));
        }
        self.node.publish(
            channel,
            ns,
            data,
            Some(self.info()),
            idempotency_key,
            Some(self.id),
        )
    }

    fn send_error(&self, id: Option<u64>, error: &CommandError) {
        self.node.metrics.error(error.code);
        let _ = self.outbound.push(frames::error(id, error));
    }

    async fn handle(&mut self, id: u64, command: Command) -> Result<Option<Bytes>, Failure> {
        if let Command::Connect {
            token,
            session,
            seq,
        } = command
        {
            if let Some(session) = session {
                if self.identity.is_some() {
                    return Err(ErrorCode::AlreadyConnected.into());
                }
                return Err(Failure::Resume {
                    id,
                    token,
                    session,
                    seq: seq.unwrap_or(0),
                });
            }
            return self.connect(id, &token).map(Some);
        }
        if self.identity.is_none() {
            return Err(CommandError::with(
                ErrorCode::Unauthorized,
                "send `connect` with a token first",
            )
            .into());
        }
        match command {
            Command::Connect { .. } => unreachable!("handled above"),
            Command::Subscribe {
                channel,
                since,
                token,
            } => {
                self.subscribe(id, &channel, since, token.as_deref())
                    .await?;
                Ok(None)
            }
            Command::Unsubscribe { channel } => {
                if !self.subscriptions.contains_key(channel.as_str()) {
                    return Err(ErrorCode::NotSubscribed.into());
                }
                self.unsubscribe(&channel).await;
                Ok(Some(frames::unsubscribed(id, &channel)))
            }
            Command::Publish {
                channel,
                data,
                idempotency_key,
            } => {
                let position = self
                    .submit_publish(&channel, data, idempotency_key)?
                    .await?;
                Ok(Some(frames::published(id, &position)))
            }
            Command::Presence { channel } => {
                self.readable(&channel, |ns| ns.presence)?;
                let clients = self.node.presence.get(&channel).await.map_err(|e| {
                    tracing::error!("presence: {e}");
                    CommandError::new(ErrorCode::Internal)
                })?;
                Ok(Some(frames::presence(id, &clients)))
            }
            Command::PresenceStats { channel } => {
                self.readable(&channel, |ns| ns.presence)?;
                let stats = self.node.presence.stats(&channel).await.map_err(|e| {
                    tracing::error!("presence: {e}");
                    CommandError::new(ErrorCode::Internal)
                })?;
                Ok(Some(frames::presence_stats(id, &stats)))
            }
            Command::History {
                channel,
                since,
                limit,
                reverse,
            } => {
                let ns = *self.readable(&channel, |ns| ns.history_size > 0)?;
                let limit = limit.unwrap_or(ns.history_size).min(ns.history_size);
                let with_since = since.is_some();
                let page = self
                    .node
                    .history(
                        &channel,
                        &ns,
                        HistoryQuery {
                            since,
                            limit,
                            reverse,
                        },
                    )
                    .await?;
                Ok(Some(frames::history(id, &page, with_since)))
            }
            Command::Refresh { token } => self.refresh(id, &token).map(Some),
            Command::Ping => Ok(Some(frames::pong(id))),
            Command::Disconnect => unreachable!("handled in handle_text"),
        }
    }

    fn connect(&mut self, id: u64, token: &str) -> Result<Bytes, Failure> {
        if self.identity.is_some() {
            return Err(ErrorCode::AlreadyConnected.into());
        }
        let claims = self
            .node
            .verifier
            .connection(token)
            .map_err(|e| match fatal_token(e) {
                Refusal {
                    error,
                    disconnect: Some(code),
                } => Failure::Fatal(error, code),
                Refusal { error, .. } => Failure::Error(error),
            })?;
        let user: Arc<str> = claims.sub.into();
        self.identity = Some(Identity {
            user: user.clone(),
            info: claims.info,
            channels: claims.channels.unwrap_or_default(),
            expires: claims.exp,
            // The session's resume token (see crate::session).
            session: format!("{}.{}", self.node.id, crate::random::token(16)).into(),
        });
        self.node.hub.add_connection(Connection {
            client: self.id,
            user: user.clone(),
            outbound: self.outbound.clone(),
        });
        self.node.metrics.connections_accepted.fetch_add(1, Relaxed);
        Ok(self.connected_reply(id, false))
    }

    fn refresh(&mut self, id: u64, token: &str) -> Result<Bytes, Failure> {
        let claims = self.node.verifier.connection(token).map_err(|e| match e {
            TokenError::Expired => CommandError::new(ErrorCode::TokenExpired),
            TokenError::Invalid(why) => CommandError::with(ErrorCode::Unauthorized, why),
        })?;
        let identity = self.identity.as_mut().ok_or(ErrorCode::Unauthorized)?;
        if *identity.user != *claims.sub {
            return Err(CommandError::with(
                ErrorCode::PermissionDenied,
                "the new token is for another user",
            )
            .into());
        }
        identity.expires = claims.exp;
        identity.channels = claims.channels.unwrap_or_default();
        Ok(frames::refreshed(id, claims.exp))
    }

    async fn subscribe(
        &mut self,
        id: u64,
        channel: &str,
        since: Option<StreamPosition>,
        token: Option<&str>,
    ) -> Result<(), Failure> {
        let (name, ns) = self.node.resolve(channel)?;
        let ns = *ns;
        if self.subscriptions.contains_key(channel) {
            return Err(ErrorCode::AlreadySubscribed.into());
        }
        if self.subscriptions.len() >= self.node.config.client.max_subscriptions {
            return Err(CommandError::with(
                ErrorCode::LimitExceeded,
                format!(
                    "at most {} subscriptions per connection",
                    self.node.config.client.max_subscriptions
                ),
            )
            .into());
        }
        self.may_subscribe(&name, &ns, token)?;
        let channel: Arc<str> = Arc::from(channel);
        // Gated: live publications wait until the reply and the recovered
        // publications are queued (see hub::subscriber).
        let subscriber = Subscriber::gated(self.id, self.outbound.clone());
        self.node.hub.subscribe(&channel, subscriber.clone());
        if self.node.is_clustered() {
            self.node.reorder.begin(&channel);
        }
        if let Err(e) = self.node.broker.watch(&channel).await {
            tracing::error!("broker watch {channel}: {e}");
            if self.node.hub.unsubscribe(&channel, self.id) {
                self.node.broker.unwatch(&channel);
                self.node.reorder.forget(&channel);
            }
            return Err(CommandError::with(ErrorCode::Internal, "broker unavailable").into());
        }
        let recovering = since.is_some();
        let query = HistoryQuery {
            since,
            limit: if recovering {
                ns.history_size.min(MAX_RECOVERY)
            } else {
                0
            },
            reverse: false,
        };
        let page = match self.node.history(&channel, &ns, query).await {
            Ok(page) => page,
            Err(e) => {
                if self.node.hub.unsubscribe(&channel, self.id) {
                    self.node.broker.unwatch(&channel);
                    self.node.reorder.forget(&channel);
                }
                return Err(e.into());
            }
        };
        subscriber.open(
            [frames::subscribed(id, &channel, &page)],
            page.position.offset,
        );
        if self.node.is_clustered() {
            self.node.ordering_from(&channel, page.position.offset);
        }
        self.node.metrics.subscriptions.fetch_add(1, Relaxed);
        self.subscriptions.insert(
            channel.clone(),
            Subscription {
                presence: ns.presence,
                join_leave: ns.join_leave,
            },
        );
        if ns.presence {
            if let Err(e) = self.node.presence.add(&channel, self.id, self.info()).await {
                tracing::error!("presence add: {e}");
            }
        }
        if ns.join_leave {
            self.node
                .presence_event(&channel, frames::join(&channel, &self.info()));
        }
        Ok(())
    }

    fn may_subscribe(
        &self,
        name: &ChannelName,
        ns: &NamespaceConfig,
        token: Option<&str>,
    ) -> Result<(), CommandError> {
        let identity = self.identity.as_ref().ok_or(ErrorCode::Unauthorized)?;
        let denied = |why: &str| CommandError::with(ErrorCode::PermissionDenied, why);
        if name.is_user_limited() {
            return if name.allows_user(&identity.user) {
                Ok(())
            } else {
                Err(denied("this channel is limited to other users"))
            };
        }
        if let Some(token) = token {
            let claims = self
                .node
                .verifier
                .subscription(token)
                .map_err(|e| match e {
                    TokenError::Expired => CommandError::new(ErrorCode::TokenExpired),
                    TokenError::Invalid(why) => denied(&format!("subscription token: {why}")),
                })?;
            return if *claims.sub == *identity.user && claims.channel == name.full {
                Ok(())
            } else {
                Err(denied(
                    "the subscription token is for another user or channel",
                ))
            };
        }
        if !ns.private
            || identity
                .channels
                .iter()
                .any(|p| pattern_matches(p, name.full))
        {
            Ok(())
        } else {
            Err(denied(
                "this channel needs a `channels` claim or a subscription token",
            ))
        }
    }

    /// Checks a presence/history read: the feature must be on, and private
    /// or user-limited channels need a subscription.
    fn readable(
        &self,
        channel: &str,
        enabled: impl Fn(&NamespaceConfig) -> bool,
    ) -> Result<&NamespaceConfig, CommandError> {
        let (name, ns) = self.node.resolve(channel)?;
        if !enabled(ns) {
            return Err(CommandError::with(
                ErrorCode::NotAvailable,
                "not enabled for this namespace",
            ));
        }
        if (ns.private || name.is_user_limited()) && !self.subscriptions.contains_key(channel) {
            return Err(CommandError::with(
                ErrorCode::PermissionDenied,
                "subscribe to this channel first",
            ));
        }
        Ok(ns)
    }

    async fn unsubscribe(&mut self, channel: &str) {
        let Some((channel, sub)) = self.subscriptions.remove_entry(channel) else {
            return;
        };
        if self.node.hub.unsubscribe(&channel, self.id) {
            self.node.broker.unwatch(&channel);
            self.node.reorder.forget(&channel);
        }
        self.node.metrics.subscriptions.fetch_sub(1, Relaxed);
        if sub.presence {
            if let Err(e) = self.node.presence.remove(&channel, self.id).await {
                tracing::error!("presence remove: {e}");
            }
        }
        if sub.join_leave {
            self.node
                .presence_event(&channel, frames::leave(&channel, &self.info()));
        }
    }

    /// This connection as others see it.
    fn info(&self) -> ClientInfo {
        ClientInfo {
            user: self
                .identity
                .as_ref()
                .map_or_else(String::new, |i| i.user.to_string()),
            client: self.id_str.to_string(),
            data: self.identity.as_ref().and_then(|i| i.info.clone()),
        }
    }

    /// Undoes every subscription and forgets the connection. Call once
    /// when the transport is gone.
    pub async fn close(&mut self) {
        let channels: Vec<Arc<str>> = self.subscriptions.keys().cloned().collect();
        for channel in channels {
            self.unsubscribe(&channel).await;
        }
        if self.identity.is_some() {
            self.node.hub.remove_connection(self.id);
        }
    }
}

/// A connection token's refusal: both end the connection.
fn fatal_token(e: TokenError) -> Refusal {
    match e {
        TokenError::Expired => Refusal {
            error: ErrorCode::TokenExpired.into(),
            disconnect: Some(DisconnectCode::TokenExpired),
        },
        TokenError::Invalid(why) => Refusal {
            error: CommandError::with(ErrorCode::Unauthorized, why),
            disconnect: Some(DisconnectCode::InvalidToken),
        },
    }
}
