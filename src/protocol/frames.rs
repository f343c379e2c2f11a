//! Encoding replies and pushes. Each function returns the finished JSON
//! text as `Bytes`, which is what every transport queues and shares.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;

use crate::broker::FrameTemplate;
use crate::codes::{CommandError, Disconnect};
use crate::presence::PresenceStats;
use crate::stream::{ClientInfo, HistoryPage, Publication, RawJson, StreamPosition};

/// The server's heartbeat.
pub const PING: &[u8] = br#"{"type":"ping"}"#;

fn encode(value: &impl Serialize) -> Bytes {
    // Serializing these plain structs into a Vec cannot fail: every field
    // is a string, number, bool, or already-valid raw JSON.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

#[derive(Serialize)]
struct Reply<'a, T: Serialize> {
    id: u64,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    body: T,
}

#[derive(Serialize)]
struct Empty {}

/// What the `connected` reply says about the session.
#[derive(Serialize)]
pub struct Connected<'a> {
    pub client: &'a str,
    pub user: &'a str,
    pub session: &'a str,
    pub ping: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// True when this `connect` resumed an existing session.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
}

/// `{"id":…,"type":"connected",…}`.
pub fn connected(id: u64, body: &Connected) -> Bytes {
    encode(&Reply {
        id,
        kind: "connected",
        body,
    })
}

/// `{"id":…,"type":"subscribed",…}` with the recovered publications.
pub fn subscribed(id: u64, channel: &str, page: &HistoryPage) -> Bytes {
    #[derive(Serialize)]
    struct Body<'a> {
        channel: &'a str,
        position: &'a StreamPosition,
        recovered: bool,
        publications: &'a [Publication],
    }
    encode(&Reply {
        id,
        kind: "subscribed",
        body: Body {
            channel,
            position: &page.position,
            recovered: page.recovered,
            publications: &page.publications,
        },
    })
}

/// `{"id":…,"type":"unsubscribed","channel":…}`.
pub fn unsubscribed(id: u64, channel: &str) -> Bytes {
    #[derive(Serialize)]
    struct Body<'a> {
        channel: &'a str,
    }
    encode(&Reply {
        id,
        kind: "unsubscribed",
        body: Body { channel },
    })
}

/// `{"id":…,"type":"published","position":…}`.
pub fn published(id: u64, position: &StreamPosition) -> Bytes {
    #[derive(Serialize)]
    struct Body<'a> {
        position: &'a StreamPosition,
    }
    encode(&Reply {
        id,
        kind: "published",
        body: Body { position },
    })
}

/// `{"id":…,"type":"presence","clients":{client id: info}}`.
pub fn presence(id: u64, clients: &[ClientInfo]) -> Bytes {
    #[derive(Serialize)]
    struct Body<'a> {
        clients: BTreeMap<&'a str, &'a ClientInfo>,
    }
    let clients = clients.iter().map(|c| (c.client.as_str(), c)).collect();
    encode(&Reply {
        id,
        kind: "presence",
        body: Body { clients },
    })
}

/// `{"id":…,"type":"presence_stats","num_clients":…,"num_users":…}`.
pub fn presence_stats(id: u64, stats: &PresenceStats) -> Bytes {
    encode(&Reply {
        id,
        kind: "presence_stats",
        body: stats,
    })
}

/// `{"id":…,"type":"history","position":…,"publications":[…]}`, with
/// `recovered` when the query had `since`.
pub fn history(id: u64, page: &HistoryPage, with_since: bool) -> Bytes {
    #[derive(Serialize)]
    struct Body<'a> {
        position: &'a StreamPosition,
        publications: &'a [Publication],
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    }
    encode(&Reply {
        id,
        kind: "history",
        body: Body {
            position: &page.position,
            publications: &page.publications,
            recovered: with_since.then_some(page.recovered),
        },
    })
}

/// `{"id":…,"type":"refreshed","expires":…}`.
pub fn refreshed(id: u64, expires: Option<u64>) -> Bytes {
    #[derive(Serialize)]
    struct Body {
        #[serde(skip_serializing_if = "Option::is_none")]
        expires: Option<u64>,
    }
    encode(&Reply {
        id,
        kind: "refreshed",
        body: Body { expires },
    })
}

/// `{"id":…,"type":"pong"}`: the answer to a client `ping`.
pub fn pong(id: u64) -> Bytes {
    encode(&Reply {
        id,
        kind: "pong",
        body: Empty {},
    })
}

/// `{"id":…,"type":"error","code":…,"message":…}` (no `id` when unknown).
pub fn error(id: Option<u64>, error: &CommandError) -> Bytes {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        #[serde(rename = "type")]
        kind: &'a str,
        code: u16,
        message: &'a str,
    }
    encode(&Body {
        id,
        kind: "error",
        code: error.code.code(),
        message: &error.message,
    })
}

/// The `publication` push, encoded once per publication and shared.
pub fn publication(channel: &str, epoch: &str, publication: &Publication) -> Bytes {
    #[derive(Serialize)]
    struct Push<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        channel: &'a str,
        offset: u64,
        epoch: &'a str,
        data: &'a RawJson,
        #[serde(skip_serializing_if = "Option::is_none")]
        info: Option<&'a ClientInfo>,
        time: u64,
    }
    encode(&Push {
        kind: "publication",
        channel,
        offset: publication.offset,
        epoch,
        data: &publication.data,
        info: publication.info.as_ref(),
        time: publication.time,
    })
}

/// A publication push split around its offset and epoch, for a broker
/// that learns them where the history lives (see [`FrameTemplate`]).
/// `publication.offset` is ignored.
pub fn publication_template(channel: &str, publication: &Publication) -> FrameTemplate {
    #[derive(Serialize)]
    struct Rest<'a> {
        data: &'a RawJson,
        #[serde(skip_serializing_if = "Option::is_none")]
        info: Option<&'a ClientInfo>,
        time: u64,
    }
    let mut head = br#"{"type":"publication","channel":"#.to_vec();
    head.extend_from_slice(&serde_json::to_vec(channel).unwrap_or_default());
    head.extend_from_slice(br#","offset":"#);
    let rest = encode(&Rest {
        data: &publication.data,
        info: publication.info.as_ref(),
        time: publication.time,
    });
    // `{"data":…}` becomes `","data":…}`, closing the epoch string.
    let mut tail = b"\",".to_vec();
    tail.extend_from_slice(&rest[1..]);
    FrameTemplate {
        head: Bytes::from(head),
        tail: Bytes::from(tail),
    }
}

/// A `join` push.
pub fn join(channel: &str, info: &ClientInfo) -> Bytes {
    presence_event("join", channel, info)
}

/// A `leave` push.
pub fn leave(channel: &str, info: &ClientInfo) -> Bytes {
    presence_event("leave", channel, info)
}

fn presence_event(kind: &str, channel: &str, info: &ClientInfo) -> Bytes {
    #[derive(Serialize)]
    struct Push<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        channel: &'a str,
        info: &'a ClientInfo,
    }
    encode(&Push {
        kind,
        channel,
        info,
    })
}

/// The `disconnect` push.
pub fn disconnect(d: &Disconnect) -> Bytes {
    #[derive(Serialize)]
    struct Push<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        code: u16,
        reason: &'a str,
        reconnect: bool,
    }
    encode(&Push {
        kind: "disconnect",
        code: d.code,
        reason: &d.reason,
        reconnect: d.reconnect,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::{DisconnectCode, ErrorCode};

    #[test]
    fn frames_have_the_documented_shapes() {
        let e = error(Some(3), &CommandError::new(ErrorCode::PermissionDenied));
        assert_eq!(
            &e[..],
            br#"{"id":3,"type":"error","code":103,"message":"permission denied"}"#
        );
        let d = disconnect(&DisconnectCode::TokenExpired.into());
        assert_eq!(
            &d[..],
            br#"{"type":"disconnect","code":3501,"reason":"token expired","reconnect":false}"#
        );
        let p = Publication {
            offset: 21,
            data: RawJson::from_string(r#"{"text":"hi"}"#.into()).unwrap(),
            info: Some(ClientInfo {
                user: "42".into(),
                client: "c1".into(),
                data: None,
            }),
            time: 5,
        };
        assert_eq!(
            &publication("chat:o", "xk3", &p)[..],
            &br#"{"type":"publication","channel":"chat:o","offset":21,"epoch":"xk3","data":{"text":"hi"},"info":{"user":"42","client":"c1"},"time":5}"#[..]
        );
        let mut body = Connected {
            client: "c1",
            user: "42",
            session: "s",
            ping: 25,
            expires: None,
            resumed: false,
        };
        assert_eq!(
            &connected(1, &body)[..],
            br#"{"id":1,"type":"connected","client":"c1","user":"42","session":"s","ping":25}"#
        );
        body.resumed = true;
        assert_eq!(
            &connected(1, &body)[..],
            br#"{"id":1,"type":"connected","client":"c1","user":"42","session":"s","ping":25,"resumed":true}"#
        );
    }

    #[test]
    fn a_publication_template_renders_the_same_frame() {
        let p = Publication {
            offset: 0,
            data: RawJson::from_string(r#"{"text":"hi"}"#.into()).unwrap(),
            info: Some(ClientInfo {
                user: "42".into(),
                client: "c1".into(),
                data: None,
            }),
            time: 5,
        };
        let template = publication_template("chat:\"o", &p);
        let numbered = Publication { offset: 21, ..p };
        assert_eq!(
            template.render(21, "xk3"),
            publication("chat:\"o", "xk3", &numbered)
        );
    }
}
