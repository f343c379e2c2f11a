//! Parsing client frames into commands.
//!
//! Every field is read as raw JSON first and then decoded on its own, so a
//! wrong type gets an error naming the field, and `data` is kept exactly as
//! the client wrote it. Unknown fields are ignored (forward compatibility).

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::codes::{CommandError, ErrorCode};
use crate::stream::{RawJson, StreamPosition};

/// A client command (everything but `pong` carries an `id`).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Connect {
        token: String,
        /// Resume this session instead of starting one.
        session: Option<String>,
        /// With `session`: the last numbered frame the client processed.
        seq: Option<u64>,
    },
    Subscribe {
        channel: String,
        since: Option<StreamPosition>,
        /// A subscription token for private channels.
        token: Option<String>,
    },
    Unsubscribe {
        channel: String,
    },
    Publish {
        channel: String,
        data: RawJson,
        idempotency_key: Option<String>,
    },
    Presence {
        channel: String,
    },
    PresenceStats {
        channel: String,
    },
    History {
        channel: String,
        since: Option<StreamPosition>,
        limit: Option<usize>,
        reverse: bool,
    },
    Refresh {
        token: String,
    },
    /// A client-initiated ping (answered with `pong` carrying the id).
    Ping,
    /// The client ends its session on purpose (what a WebSocket close frame
    /// does; SSE and long-poll clients send this through `/connection/send`).
    Disconnect,
}

impl Command {
    /// The command's `type`, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Connect { .. } => "connect",
            Command::Subscribe { .. } => "subscribe",
            Command::Unsubscribe { .. } => "unsubscribe",
            Command::Publish { .. } => "publish",
            Command::Presence { .. } => "presence",
            Command::PresenceStats { .. } => "presence_stats",
            Command::History { .. } => "history",
            Command::Refresh { .. } => "refresh",
            Command::Ping => "ping",
            Command::Disconnect => "disconnect",
        }
    }

    /// Every command type, for metrics labels.
    pub const KINDS: [&'static str; 10] = [
        "connect",
        "subscribe",
        "unsubscribe",
        "publish",
        "presence",
        "presence_stats",
        "history",
        "refresh",
        "ping",
        "disconnect",
    ];
}

/// One parsed frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Command {
        id: u64,
        command: Command,
    },
    /// The answer to a server `ping`.
    Pong,
}

/// A frame that could not be parsed; answered with an error (with the id
/// when it could be read) and the connection stays up.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub id: Option<u64>,
    pub error: CommandError,
}

#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    channel: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    token: Option<&'a RawValue>,
    #[serde(borrow, default)]
    since: Option<&'a RawValue>,
    #[serde(borrow, default)]
    limit: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reverse: Option<&'a RawValue>,
    #[serde(borrow, default)]
    idempotency_key: Option<&'a RawValue>,
    #[serde(borrow, default)]
    session: Option<&'a RawValue>,
    #[serde(borrow, default)]
    seq: Option<&'a RawValue>,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Incoming, Rejected> {
    // A derived struct would also accept an array, filling fields by
    // position: only an object is a frame.
    if !text.trim_start().starts_with('{') {
        return Err(reject(None, "a frame must be a JSON object"));
    }
    let raw: RawFrame = serde_json::from_str(text).map_err(|e| Rejected {
        id: None,
        error: CommandError::with(ErrorCode::BadRequest, format!("malformed JSON frame: {e}")),
    })?;
    let id = match raw.id {
        Some(v) => Some(
            serde_json::from_str::<u64>(v.get())
                .map_err(|_| reject(None, "field `id` must be a non-negative integer"))?,
        ),
        None => None,
    };
    let kind: String = required(raw.kind, "type").map_err(|e| Rejected { id, error: e })?;
    if kind == "pong" {
        return Ok(Incoming::Pong);
    }
    let Some(id) = id else {
        return Err(reject(None, "field `id` is required for commands"));
    };
    let fail = |error: CommandError| Rejected {
        id: Some(id),
        error,
    };
    let command = match kind.as_str() {
        "connect" => {
            let session: Option<String> = optional(raw.session, "session").map_err(fail)?;
            let seq: Option<u64> = optional(raw.seq, "seq").map_err(fail)?;
            if session.is_some() && seq.is_none() {
                return Err(fail(CommandError::with(
                    ErrorCode::BadRequest,
                    "field `seq` is required with `session`",
                )));
            }
            Command::Connect {
                token: required(raw.token, "token").map_err(fail)?,
                session,
                seq,
            }
        }
        "subscribe" => Command::Subscribe {
            channel: required(raw.channel, "channel").map_err(fail)?,
            since: optional(raw.since, "since").map_err(fail)?,
            token: optional(raw.token, "token").map_err(fail)?,
        },
        "unsubscribe" => Command::Unsubscribe {
            channel: required(raw.channel, "channel").map_err(fail)?,
        },
        "publish" => Command::Publish {
            channel: required(raw.channel, "channel").map_err(fail)?,
            data: match raw.data {
                Some(d) => RawJson(d.to_owned().into()),
                None => return Err(fail(missing("data"))),
            },
            idempotency_key: optional(raw.idempotency_key, "idempotency_key").map_err(fail)?,
        },
        "presence" => Command::Presence {
            channel: required(raw.channel, "channel").map_err(fail)?,
        },
        "presence_stats" => Command::PresenceStats {
            channel: required(raw.channel, "channel").map_err(fail)?,
        },
        "history" => Command::History {
            channel: required(raw.channel, "channel").map_err(fail)?,
            since: optional(raw.since, "since").map_err(fail)?,
            limit: optional(raw.limit, "limit").map_err(fail)?,
            reverse: optional(raw.reverse, "reverse")
                .map_err(fail)?
                .unwrap_or(false),
        },
        "refresh" => Command::Refresh {
            token: required(raw.token, "token").map_err(fail)?,
        },
        "ping" => Command::Ping,
        "disconnect" => Command::Disconnect,
        other => {
            return Err(fail(CommandError::with(
                ErrorCode::UnknownCommand,
                format!("unknown command type `{other}`"),
            )))
        }
    };
    Ok(Incoming::Command { id, command })
}

fn reject(id: Option<u64>, message: &str) -> Rejected {
    Rejected {
        id,
        error: CommandError::with(ErrorCode::BadRequest, message),
    }
}

fn missing(field: &str) -> CommandError {
    CommandError::with(
        ErrorCode::BadRequest,
        format!("field `{field}` is required"),
    )
}

fn required<T: serde::de::DeserializeOwned + Expected>(
    raw: Option<&RawValue>,
    field: &str,
) -> Result<T, CommandError> {
    optional(raw, field)?.ok_or_else(|| missing(field))
}

fn optional<T: serde::de::DeserializeOwned + Expected>(
    raw: Option<&RawValue>,
    field: &str,
) -> Result<Option<T>, CommandError> {
    match raw {
        None => Ok(None),
        Some(v) => serde_json::from_str(v.get()).map(Some).map_err(|_| {
            CommandError::with(
                ErrorCode::BadRequest,
                format!("field `{field}` must be {}", T::EXPECTED),
            )
        }),
    }
}

/// What a field's type is called in error messages.
trait Expected {
    const EXPECTED: &'static str;
}
impl Expected for String {
    const EXPECTED: &'static str = "a string";
}
impl Expected for u64 {
    const EXPECTED: &'static str = "a non-negative integer";
}
impl Expected for usize {
    const EXPECTED: &'static str = "a non-negative integer";
}
impl Expected for bool {
    const EXPECTED: &'static str = "a boolean";
}
impl Expected for StreamPosition {
    const EXPECTED: &'static str = r#"an object {"offset": <integer>, "epoch": <string>}"#;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> (Option<u64>, u16) {
        let r = parse(text).unwrap_err();
        (r.id, r.error.code.code())
    }

    #[test]
    fn parses_the_documented_commands() {
        let c = parse(
            r#"{"id":2,"type":"subscribe","channel":"chat:1","since":{"offset":17,"epoch":"xk3"}}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            Incoming::Command {
                id: 2,
                command: Command::Subscribe {
                    channel: "chat:1".into(),
                    since: Some(StreamPosition {
                        offset: 17,
                        epoch: "xk3".into()
                    }),
                    token: None
                }
            }
        );
        let c = parse(r#"{"id":3,"type":"publish","channel":"c","data":{"b":1, "a":[2]},"idempotency_key":"k1"}"#).unwrap();
        match c {
            Incoming::Command {
                command:
                    Command::Publish {
                        data,
                        idempotency_key,
                        ..
                    },
                ..
            } => {
                assert_eq!(data.get(), r#"{"b":1, "a":[2]}"#);
                assert_eq!(idempotency_key.as_deref(), Some("k1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(r#"{"type":"pong"}"#).unwrap(), Incoming::Pong);
    }

    #[test]
    fn bad_frames_get_bad_request_with_the_id_when_known() {
        assert_eq!(code("{nope"), (None, 107));
        assert_eq!(code(r#"[1,2]"#), (None, 107));
        assert_eq!(code(r#"{"id":-1,"type":"ping"}"#), (None, 107));
        assert_eq!(code(r#"{"type":"ping"}"#), (None, 107));
        assert_eq!(code(r#"{"id":4}"#), (Some(4), 107));
        assert_eq!(code(r#"{"id":5,"type":"subscribe"}"#), (Some(5), 107));
        assert_eq!(
            code(r#"{"id":6,"type":"subscribe","channel":7}"#),
            (Some(6), 107)
        );
        assert_eq!(
            code(r#"{"id":7,"type":"publish","channel":"c"}"#),
            (Some(7), 107)
        );
        assert_eq!(
            code(r#"{"id":8,"type":"history","channel":"c","limit":"x"}"#),
            (Some(8), 107)
        );
        assert_eq!(
            code(r#"{"id":9,"type":"subscribe","channel":"c","since":{"offset":1}}"#),
            (Some(9), 107)
        );
        assert_eq!(code(r#"{"id":10,"type":"dance"}"#), (Some(10), 104));
    }

    #[test]
    fn wrong_type_message_names_the_field() {
        let r = parse(r#"{"id":6,"type":"subscribe","channel":7}"#).unwrap_err();
        assert!(r.error.message.contains("`channel`"), "{}", r.error.message);
    }
}
