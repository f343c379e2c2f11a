//! Long-polling subscribers (Switchboard only, docs/protocol.md,
//! "Long-polling"): `POST /connection/poll {"token":…}` answers the
//! `connected` reply (seq 1) with the session id; commands go in with
//! `POST /connection/send`; `GET /connection/poll?session=…&cursor=<n>`
//! answers `{"cursor":<next>,"messages":[…]}` as soon as anything after `n`
//! is queued, else empty after `client.poll_hold`. Everything goes over one
//! keep-alive connection per client, as a browser would.
//!
//! The loop re-polls at once after each answer with the cursor it got (a
//! real client does the same), so an idle client always has one `GET`
//! pending on the server. An answer is parsed as JSON only down to its
//! message list (`serde_json` borrowing raw frames); each frame is then
//! recognised by its first bytes like on the other transports.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::Notify;

use super::http::HttpConn;
use super::protocol::{contains, Endpoint, Kind, Protocol};
use super::sse::string_field;
use super::subscriber::{Mode, SubStat};

/// How long one setup step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// An open long-polling session and its connection.
pub struct PollConn {
    http: HttpConn,
    /// The session id.
    pub session: String,
    /// The seq of the last frame received.
    pub cursor: u64,
    token: String,
    next_id: u64,
    /// The poll request for the current cursor (rebuilt when it moves).
    target: String,
}

/// A poll's answer: the next cursor and the frames, unparsed.
#[derive(Deserialize)]
pub struct Answer<'a> {
    /// The seq of the last frame in `messages` (or the cursor asked with).
    pub cursor: u64,
    /// The frames, as the server wrote them.
    #[serde(borrow)]
    pub messages: Vec<&'a RawValue>,
}

impl PollConn {
    /// Connects a session with `token` (`POST /connection/poll`).
    pub async fn open(endpoint: &Endpoint, token: &str) -> anyhow::Result<PollConn> {
        if endpoint.protocol != Protocol::Switchboard {
            bail!("long-polling is a Switchboard transport");
        }
        let mut http = HttpConn::connect(endpoint.addr).await?;
        let body = format!(r#"{{"token":"{token}"}}"#);
        let (status, reply) = tokio::time::timeout(
            STEP_TIMEOUT,
            http.request("POST", "/connection/poll", "", body.as_bytes()),
        )
        .await
        .context("no answer to POST /connection/poll")??;
        if status != 200 || !contains(&reply, br#""type":"connected""#) {
            bail!(
                "POST /connection/poll answered {status}: {}",
                String::from_utf8_lossy(&reply)
            );
        }
        let session =
            string_field(&reply, "session").context("the connected reply has no session")?;
        let mut conn = PollConn {
            http,
            session,
            cursor: 1,
            token: token.to_owned(),
            next_id: 1,
            target: String::new(),
        };
        conn.set_cursor(1);
        Ok(conn)
    }

    fn set_cursor(&mut self, cursor: u64) {
        self.cursor = cursor;
        self.target = format!("/connection/poll?session={}&cursor={cursor}", self.session);
    }

    /// One `GET` poll with the current cursor: (status, body).
    pub async fn poll(&mut self) -> anyhow::Result<(u16, Vec<u8>)> {
        self.http.request("GET", &self.target, "", b"").await
    }

    /// Sends a command and polls until its reply arrives; fails on an
    /// error reply.
    pub async fn command(&mut self, build: impl FnOnce(u64) -> String) -> anyhow::Result<Vec<u8>> {
        self.next_id += 1;
        let id = self.next_id;
        let text = build(id);
        let target = format!("/connection/send?session={}", self.session);
        let auth = format!("Authorization: Bearer {}\r\n", self.token);
        let (status, reply) = self
            .http
            .request("POST", &target, &auth, text.as_bytes())
            .await?;
        if status != 202 {
            bail!(
                "POST /connection/send answered {status}: {}",
                String::from_utf8_lossy(&reply)
            );
        }
        let wait = async {
            loop {
                let (status, body) = self.poll().await?;
                if status != 200 {
                    bail!("poll answered {status}: {}", String::from_utf8_lossy(&body));
                }
                let answer: Answer = serde_json::from_slice(&body).with_context(|| {
                    format!("bad poll answer: {}", String::from_utf8_lossy(&body))
                })?;
                let mut found = None;
                for m in &answer.messages {
                    let frame = m.get().as_bytes();
                    match Protocol::Switchboard.classify(frame) {
                        Kind::Disconnect => {
                            bail!("server disconnected us: {}", m.get())
                        }
                        Kind::Reply { ok } if Protocol::Switchboard.reply_id(frame) == Some(id) => {
                            if !ok {
                                bail!("server answered with an error: {}", m.get());
                            }
                            found = Some(frame.to_vec());
                        }
                        _ => {}
                    }
                }
                let next = answer.cursor;
                self.set_cursor(next);
                if let Some(reply) = found {
                    return Ok(reply);
                }
            }
        };
        tokio::time::timeout(STEP_TIMEOUT, wait)
            .await
            .with_context(|| format!("no reply to {text} within {STEP_TIMEOUT:?}"))?
    }

    /// Subscribes to `channel` (a name without characters needing escapes).
    pub async fn subscribe(&mut self, channel: &str) -> anyhow::Result<()> {
        let reply = self
            .command(|id| Protocol::Switchboard.subscribe(id, channel))
            .await?;
        if !contains(&reply, br#""type":"subscribed""#) {
            bail!(
                "unexpected reply to subscribe: {}",
                String::from_utf8_lossy(&reply)
            );
        }
        Ok(())
    }
}

/// Polls until the session ends, re-polling at once after each answer,
/// counting publications into `stat` (`reads` counts answers that carried
/// any) and, in latency mode, recording each at the time its answer was
/// read whole.
pub async fn poll_loop(mut conn: PollConn, stat: &SubStat, mode: &Mode, progress: Option<&Notify>) {
    loop {
        let (status, body) = match conn.poll().await {
            Ok(answer) => answer,
            Err(e) => return stat.end(format!("poll failed: {e:#}")),
        };
        let now_ns = match mode {
            Mode::Latency(rec) => rec.now_ns(),
            Mode::Count => 0,
        };
        if status != 200 {
            return stat.end(format!(
                "poll answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let answer: Answer = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(e) => return stat.end(format!("bad poll answer: {e}")),
        };
        let mut publications = 0;
        let mut disconnect = None;
        for m in &answer.messages {
            let frame = m.get().as_bytes();
            match Protocol::Switchboard.classify(frame) {
                Kind::Publication => {
                    publications += 1;
                    if let Mode::Latency(rec) = mode {
                        rec.record(frame, now_ns);
                    }
                }
                Kind::Disconnect => disconnect = Some(m.get().to_owned()),
                _ => {}
            }
        }
        let next = answer.cursor;
        if publications > 0 {
            stat.count.fetch_add(publications, Relaxed);
            stat.reads.fetch_add(1, Relaxed);
            if let Some(p) = progress {
                p.notify_one();
            }
        }
        if let Some(d) = disconnect {
            return stat.end(d);
        }
        if next != conn.cursor {
            conn.set_cursor(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_down_to_raw_frames() {
        let body = br#"{"cursor":5,"messages":[{"type":"publication","channel":"c","data":{"t":1,"i":0}},{"id":2,"type":"subscribed"}]}"#;
        let a: Answer = serde_json::from_slice(body).unwrap();
        assert_eq!(a.cursor, 5);
        assert_eq!(a.messages.len(), 2);
        assert_eq!(
            Protocol::Switchboard.classify(a.messages[0].get().as_bytes()),
            Kind::Publication
        );
        let empty: Answer = serde_json::from_slice(br#"{"cursor":3,"messages":[]}"#).unwrap();
        assert!(empty.messages.is_empty());
    }
}
