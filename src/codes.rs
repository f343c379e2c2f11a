//! The one table of error and disconnect codes (documented in docs/protocol.md).
//!
//! Errors (100–199) answer one command; the connection stays up. Disconnects
//! (3000–3999) end a connection: 3000–3499 tell the client to reconnect,
//! 3500–3999 tell it not to (until something changes, such as a new token).
//! The server API answers with the same error codes.

use std::fmt;

/// An error answering one command or one API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 100: the server failed (a backend is down); retry later.
    Internal,
    /// 101: no valid connection token yet (command before `connect`, bad token).
    Unauthorized,
    /// 102: the channel's namespace is not configured.
    UnknownChannel,
    /// 103: the user may not do this on this channel.
    PermissionDenied,
    /// 104: the `type` is not a command (or an unknown API method).
    UnknownCommand,
    /// 105: the connection is already subscribed to the channel.
    AlreadySubscribed,
    /// 106: a configured limit was reached (subscriptions per connection).
    LimitExceeded,
    /// 107: the command is malformed: bad JSON, a missing or wrong-typed field.
    BadRequest,
    /// 108: the feature is off for this namespace (presence, history).
    NotAvailable,
    /// 109: the token has expired.
    TokenExpired,
    /// 110: the channel name is too long or has forbidden characters.
    BadChannelName,
    /// 111: the publication data is over the configured limit.
    MessageTooLarge,
    /// 112: the connection is not subscribed to the channel.
    NotSubscribed,
    /// 113: `connect` was sent twice.
    AlreadyConnected,
    /// 114: the session to resume, send to or poll is unknown, expired or ended.
    SessionNotFound,
    /// 115: a resume `seq` or poll `cursor` the session cannot serve.
    BadCursor,
}

impl ErrorCode {
    /// The code with this number, if there is one.
    pub fn from_code(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }

    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::Internal,
        ErrorCode::Unauthorized,
        ErrorCode::UnknownChannel,
        ErrorCode::PermissionDenied,
        ErrorCode::UnknownCommand,
        ErrorCode::AlreadySubscribed,
        ErrorCode::LimitExceeded,
        ErrorCode::BadRequest,
        ErrorCode::NotAvailable,
        ErrorCode::TokenExpired,
        ErrorCode::BadChannelName,
        ErrorCode::MessageTooLarge,
        ErrorCode::NotSubscribed,
        ErrorCode::AlreadyConnected,
        ErrorCode::SessionNotFound,
        ErrorCode::BadCursor,
    ];

    /// The number on the wire.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::Internal => 100,
            ErrorCode::Unauthorized => 101,
            ErrorCode::UnknownChannel => 102,
            ErrorCode::PermissionDenied => 103,
            ErrorCode::UnknownCommand => 104,
            ErrorCode::AlreadySubscribed => 105,
            ErrorCode::LimitExceeded => 106,
            ErrorCode::BadRequest => 107,
            ErrorCode::NotAvailable => 108,
            ErrorCode::TokenExpired => 109,
            ErrorCode::BadChannelName => 110,
            ErrorCode::MessageTooLarge => 111,
            ErrorCode::NotSubscribed => 112,
            ErrorCode::AlreadyConnected => 113,
            ErrorCode::SessionNotFound => 114,
            ErrorCode::BadCursor => 115,
        }
    }

    /// The default message.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::Internal => "internal server error",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownChannel => "unknown channel",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::UnknownCommand => "unknown command",
            ErrorCode::AlreadySubscribed => "already subscribed",
            ErrorCode::LimitExceeded => "limit exceeded",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::NotAvailable => "not available",
            ErrorCode::TokenExpired => "token expired",
            ErrorCode::BadChannelName => "bad channel name",
            ErrorCode::MessageTooLarge => "message too large",
            ErrorCode::NotSubscribed => "not subscribed",
            ErrorCode::AlreadyConnected => "already connected",
            ErrorCode::SessionNotFound => "session not found",
            ErrorCode::BadCursor => "bad cursor",
        }
    }

    /// The HTTP status the server API answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Internal => 500,
            ErrorCode::Unauthorized | ErrorCode::TokenExpired => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::UnknownCommand | ErrorCode::SessionNotFound => 404,
            ErrorCode::MessageTooLarge => 413,
            ErrorCode::NotAvailable => 409,
            _ => 400,
        }
    }
}

/// A command's failure: a code and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: String,
}

impl CommandError {
    /// The code with its default message.
    pub fn new(code: ErrorCode) -> Self {
        CommandError {
            code,
            message: code.message().to_string(),
        }
    }

    /// The code with a specific message (say which field was wrong).
    pub fn with(code: ErrorCode, message: impl Into<String>) -> Self {
        CommandError {
            code,
            message: message.into(),
        }
    }
}

impl From<ErrorCode> for CommandError {
    fn from(code: ErrorCode) -> Self {
        CommandError::new(code)
    }
}

/// Why the server ends a connection. The code is also the WebSocket close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectCode {
    /// 3000: closed normally by the server.
    Normal,
    /// 3001: the node is shutting down; reconnect (to another node).
    Shutdown,
    /// 3002: the server failed; reconnect.
    ServerError,
    /// 3003: the client did not send `connect` in time.
    ConnectTimeout,
    /// 3008: the client read too slowly and its outbound queue overflowed.
    SlowConsumer,
    /// 3010: the node may have missed publications of a channel (its broker
    /// connection dropped): reconnect and recover with `since`.
    InsufficientState,
    /// 3012: no `pong` (or any frame) within the heartbeat timeout.
    NoPong,
    /// 3500: the connection token is invalid (forged, wrong algorithm, malformed).
    InvalidToken,
    /// 3501: the connection token expired and was not refreshed.
    TokenExpired,
    /// 3502: the client broke the protocol in a way that cannot be answered
    /// (a binary frame, invalid UTF-8, a bad WebSocket frame).
    ProtocolError,
    /// 3503: the application's backend disconnected this user.
    ForceDisconnect,
    /// 3504: an incoming frame was over the size limit (not retried: the
    /// same frame would be refused again).
    FrameTooLarge,
}

impl DisconnectCode {
    pub const ALL: [DisconnectCode; 12] = [
        DisconnectCode::Normal,
        DisconnectCode::Shutdown,
        DisconnectCode::ServerError,
        DisconnectCode::ConnectTimeout,
        DisconnectCode::SlowConsumer,
        DisconnectCode::InsufficientState,
        DisconnectCode::NoPong,
        DisconnectCode::InvalidToken,
        DisconnectCode::TokenExpired,
        DisconnectCode::ProtocolError,
        DisconnectCode::ForceDisconnect,
        DisconnectCode::FrameTooLarge,
    ];

    /// The number on the wire (and the WebSocket close code).
    pub fn code(self) -> u16 {
        match self {
            DisconnectCode::Normal => 3000,
            DisconnectCode::Shutdown => 3001,
            DisconnectCode::ServerError => 3002,
            DisconnectCode::ConnectTimeout => 3003,
            DisconnectCode::SlowConsumer => 3008,
            DisconnectCode::InsufficientState => 3010,
            DisconnectCode::NoPong => 3012,
            DisconnectCode::InvalidToken => 3500,
            DisconnectCode::TokenExpired => 3501,
            DisconnectCode::ProtocolError => 3502,
            DisconnectCode::ForceDisconnect => 3503,
            DisconnectCode::FrameTooLarge => 3504,
        }
    }

    /// Whether the client should reconnect (codes below 3500).
    pub fn reconnect(self) -> bool {
        self.code() < 3500
    }

    /// The default reason.
    pub fn reason(self) -> &'static str {
        match self {
            DisconnectCode::Normal => "connection closed",
            DisconnectCode::Shutdown => "server shutting down",
            DisconnectCode::ServerError => "internal server error",
            DisconnectCode::ConnectTimeout => "connect timeout",
            DisconnectCode::SlowConsumer => "slow consumer",
            DisconnectCode::InsufficientState => "missed publications: recover with since",
            DisconnectCode::FrameTooLarge => "frame too large",
            DisconnectCode::NoPong => "no pong",
            DisconnectCode::InvalidToken => "invalid token",
            DisconnectCode::TokenExpired => "token expired",
            DisconnectCode::ProtocolError => "protocol error",
            DisconnectCode::ForceDisconnect => "disconnected by server",
        }
    }

    /// Looks a wire code up (for the API's `code` field).
    pub fn from_code(code: u16) -> Option<DisconnectCode> {
        DisconnectCode::ALL.into_iter().find(|d| d.code() == code)
    }
}

/// A disconnect as sent to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub code: u16,
    pub reason: String,
    pub reconnect: bool,
}

impl From<DisconnectCode> for Disconnect {
    fn from(code: DisconnectCode) -> Self {
        Disconnect {
            code: code.code(),
            reason: code.reason().to_string(),
            reconnect: code.reconnect(),
        }
    }
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}
