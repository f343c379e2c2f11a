//! The wire protocols the benchmark's clients speak, so that every scenario
//! runs unchanged against Switchboard and against a peer server:
//!
//! - **Switchboard**: JSON commands with an `id` (`connect` with a JWT,
//!   `subscribe`, `publish`), replies with the same `id`, pushes such as
//!   `{"type":"publication",…}`, heartbeat `{"type":"ping"}` → `{"type":"pong"}`.
//! - **Socket.IO 4** (Engine.IO 4, WebSocket transport only): the server
//!   opens with `0{"sid":…}`, the client joins the main namespace with `40`
//!   and gets `40{"sid":…}`; an event with ack id N is `42N["event",arg]`,
//!   its ack `43N[…]`; a broadcast is `42["publication",data]`; the server
//!   pings with `2`, the client answers `3`.
//!
//! Every server frame is classified by its first bytes ([`Protocol::classify`]),
//! never parsed as JSON on the hot path. The publication's `data` is embedded
//! verbatim in both protocols, so the latency scenario finds its `"t"` and
//! `"i"` the same way in either.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

/// A wire protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Switchboard's native JSON protocol.
    Switchboard,
    /// Socket.IO 4 over a WebSocket.
    SocketIo,
}

/// What a server text frame is.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// A publication pushed to a subscriber.
    Publication,
    /// The reply to a command or the ack of an event; `ok` is false for an
    /// error reply.
    Reply { ok: bool },
    /// The server's heartbeat: answer with [`Protocol::pong`].
    Ping,
    /// The server is ending the session (a `disconnect` push, Socket.IO's
    /// namespace disconnect or Engine.IO close).
    Disconnect,
    /// Anything else (ignored).
    Other,
}

const SB_PUBLICATION: &[u8] = br#"{"type":"publication""#;
const SB_PING: &[u8] = br#"{"type":"ping"}"#;
const SB_DISCONNECT: &[u8] = br#"{"type":"disconnect""#;
const SIO_PUBLICATION: &[u8] = br#"42["publication""#;

impl Protocol {
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Switchboard => "Switchboard",
            Protocol::SocketIo => "Socket.IO",
        }
    }

    /// The WebSocket endpoint's path and query.
    pub fn path(self) -> &'static str {
        match self {
            Protocol::Switchboard => "/connection/websocket",
            Protocol::SocketIo => "/socket.io/?EIO=4&transport=websocket",
        }
    }

    /// What `text` is, from its first bytes.
    pub fn classify(self, text: &[u8]) -> Kind {
        match self {
            Protocol::Switchboard => {
                if text.starts_with(SB_PUBLICATION) {
                    Kind::Publication
                } else if text.starts_with(b"{\"id\":") {
                    Kind::Reply {
                        ok: !contains(text, br#""type":"error""#),
                    }
                } else if text == SB_PING {
                    Kind::Ping
                } else if text.starts_with(SB_DISCONNECT) {
                    Kind::Disconnect
                } else {
                    Kind::Other
                }
            }
            Protocol::SocketIo => {
                if text.starts_with(SIO_PUBLICATION) {
                    Kind::Publication
                } else if text.starts_with(b"43") {
                    Kind::Reply { ok: true }
                } else if text == b"2" {
                    Kind::Ping
                } else if text == b"1" || text.starts_with(b"41") || text.starts_with(b"44") {
                    Kind::Disconnect
                } else {
                    Kind::Other
                }
            }
        }
    }

    /// The id of a reply frame, if `text` is one.
    pub fn reply_id(self, text: &[u8]) -> Option<u64> {
        match self {
            Protocol::Switchboard => number_after(text, b"{\"id\":"),
            Protocol::SocketIo => number_after(text, b"43"),
        }
    }

    /// The answer to the server's heartbeat.
    pub fn pong(self) -> &'static [u8] {
        match self {
            Protocol::Switchboard => br#"{"type":"pong"}"#,
            Protocol::SocketIo => b"3",
        }
    }

    /// A subscribe command for `channel` (a name without characters
    /// needing escapes) with id `id`.
    pub fn subscribe(self, id: u64, channel: &str) -> String {
        match self {
            Protocol::Switchboard => {
                format!(r#"{{"id":{id},"type":"subscribe","channel":"{channel}"}}"#)
            }
            Protocol::SocketIo => format!(r#"42{id}["subscribe","{channel}"]"#),
        }
    }

    /// Writes into `out` (cleared first) a publish of `data` (raw JSON) to
    /// `channel` with id `id`.
    pub fn publish(self, id: u64, channel: &str, data: &str, out: &mut String) {
        out.clear();
        // Writing into a String cannot fail.
        let _ = match self {
            Protocol::Switchboard => write!(
                out,
                r#"{{"id":{id},"type":"publish","channel":"{channel}","data":{data}}}"#
            ),
            Protocol::SocketIo => {
                write!(
                    out,
                    r#"42{id}["publish",{{"room":"{channel}","data":{data}}}]"#
                )
            }
        };
    }
}

/// Where the clients connect and how they authenticate.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The server's address.
    pub addr: SocketAddr,
    /// Its protocol.
    pub protocol: Protocol,
    /// The HMAC secret for connection tokens (Switchboard only; the
    /// Socket.IO peer has no authentication).
    pub secret: Option<Arc<str>>,
}

impl Endpoint {
    /// A connection token for `user`, or an empty string when the server
    /// takes none.
    pub fn token(&self, user: &str) -> anyhow::Result<Arc<str>> {
        let Some(secret) = &self.secret else {
            return Ok("".into());
        };
        let claims = switchboard::auth::ConnectionClaims {
            sub: user.to_owned(),
            exp: None,
            info: None,
            channels: None,
            channel: None,
        };
        let token = switchboard::auth::mint_hs256(secret, &claims).context("minting a token")?;
        Ok(token.into())
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// Position of the first `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The decimal number right after the first `key` in `frame`.
pub fn number_after(frame: &[u8], key: &[u8]) -> Option<u64> {
    let start = find(frame, key)? + key.len();
    let digits = frame[start..].iter().take_while(|b| b.is_ascii_digit());
    let mut n: u64 = 0;
    let mut any = false;
    for d in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_switchboard_frames() {
        let p = Protocol::Switchboard;
        let publication = br#"{"type":"publication","channel":"bench:x","data":{"t":1}}"#;
        assert_eq!(p.classify(publication), Kind::Publication);
        let ack = br#"{"id":7,"type":"published","position":{}}"#;
        assert_eq!(p.classify(ack), Kind::Reply { ok: true });
        assert_eq!(p.reply_id(ack), Some(7));
        let err = br#"{"id":8,"type":"error","code":103}"#;
        assert_eq!(p.classify(err), Kind::Reply { ok: false });
        assert_eq!(p.classify(br#"{"type":"ping"}"#), Kind::Ping);
        let bye = br#"{"type":"disconnect","code":3501}"#;
        assert_eq!(p.classify(bye), Kind::Disconnect);
    }

    #[test]
    fn classifies_socketio_frames() {
        let p = Protocol::SocketIo;
        let publication = br#"42["publication",{"t":12,"i":3,"p":"x"}]"#;
        assert_eq!(p.classify(publication), Kind::Publication);
        assert_eq!(number_after(publication, b"\"t\":"), Some(12));
        assert_eq!(number_after(publication, b"\"i\":"), Some(3));
        let ack = br#"4312[{"ok":true}]"#;
        assert_eq!(p.classify(ack), Kind::Reply { ok: true });
        assert_eq!(p.reply_id(ack), Some(12));
        assert_eq!(p.classify(b"2"), Kind::Ping);
        assert_eq!(p.pong(), b"3");
        assert_eq!(p.classify(b"41"), Kind::Disconnect);
        assert_eq!(p.classify(br#"40{"sid":"a"}"#), Kind::Other);
    }

    #[test]
    fn encodes_commands() {
        let mut out = String::new();
        Protocol::SocketIo.publish(5, "bench:f", r#"{"p":"x"}"#, &mut out);
        assert_eq!(out, r#"425["publish",{"room":"bench:f","data":{"p":"x"}}]"#);
        Protocol::Switchboard.publish(5, "bench:f", "{}", &mut out);
        assert_eq!(
            out,
            r#"{"id":5,"type":"publish","channel":"bench:f","data":{}}"#
        );
        assert_eq!(
            Protocol::SocketIo.subscribe(2, "r"),
            r#"422["subscribe","r"]"#
        );
    }
}
