//! A Server-Sent Events client: a streaming reqwest response read with
//! `chunk()` and parsed as `text/event-stream` (HTML Living Standard,
//! "Interpreting an event stream"): lines end with CRLF, LF or CR; a blank
//! line dispatches the block; `:` starts a comment; `data` lines of one
//! event are joined with `\n`; one space after the colon is dropped.

use std::collections::VecDeque;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::WAIT;

/// The lines of one block, up to the blank line that ends it.
#[derive(Debug, Default, Clone)]
pub struct Block {
    /// Comment lines (without the leading `:`).
    pub comments: Vec<String>,
    /// The `id:` field, if the block set one.
    pub id: Option<String>,
    /// Every `data:` line, in order.
    pub data: Vec<String>,
    /// The `retry:` field, if any.
    pub retry: Option<String>,
    /// The `event:` field, if any.
    pub event: Option<String>,
}

impl Block {
    /// Whether a browser would dispatch this block as an event.
    pub fn is_event(&self) -> bool {
        !self.data.is_empty()
    }
}

/// A dispatched event whose data is one JSON frame.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<String>,
    pub frame: Value,
    /// How many `data:` lines carried the frame.
    pub data_lines: usize,
}

impl Event {
    /// The seq of an `id: <session>.<seq>` for `session`; panics on any
    /// other shape.
    pub fn seq(&self, session: &str) -> Option<u64> {
        let id = self.id.as_deref()?;
        let (s, n) = id
            .rsplit_once('.')
            .unwrap_or_else(|| panic!("event id {id:?} is not <session>.<seq>"));
        assert_eq!(s, session, "event id {id:?} names another session");
        Some(n.parse().unwrap_or_else(|_| panic!("event id {id:?}: seq")))
    }
}

/// An open event stream.
pub struct Sse {
    response: reqwest::Response,
    headers: HeaderMap,
    buf: Vec<u8>,
    block: Block,
    blocks: VecDeque<Block>,
    ended: bool,
}

impl Sse {
    /// Sends `request`; a 200 answer becomes a stream, anything else is
    /// returned as (status, JSON body).
    pub async fn open(request: reqwest::RequestBuilder) -> Result<Sse, (u16, Value)> {
        let response = request.send().await.expect("SSE request");
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.json::<Value>().await.unwrap_or(Value::Null);
            return Err((status, body));
        }
        Ok(Sse {
            headers: response.headers().clone(),
            response,
            buf: Vec::new(),
            block: Block::default(),
            blocks: VecDeque::new(),
            ended: false,
        })
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The next block (events, comments, `retry`), or `None` once the
    /// server ended the stream; `Err(())` if nothing came within `wait`.
    pub async fn try_block(&mut self, wait: Duration) -> Result<Option<Block>, ()> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.parse();
            if let Some(block) = self.blocks.pop_front() {
                return Ok(Some(block));
            }
            if self.ended {
                return Ok(None);
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return Err(()),
                Ok(Ok(Some(bytes))) => self.buf.extend_from_slice(&bytes),
                // End of body, or the connection went away.
                Ok(Ok(None)) | Ok(Err(_)) => self.ended = true,
            }
        }
    }

    /// The next block; panics if none comes within [`WAIT`].
    pub async fn block(&mut self) -> Option<Block> {
        self.try_block(WAIT)
            .await
            .expect("an SSE block within the wait")
    }

    /// The next event (comment-only blocks are skipped), or `None` at the
    /// end of the stream; `Err(())` if none came within `wait`.
    pub async fn try_event(&mut self, wait: Duration) -> Result<Option<Event>, ()> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(block) = self.try_block(left).await? else {
                return Ok(None);
            };
            if block.is_event() {
                let text = block.data.join("\n");
                let frame = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {text:?}"));
                return Ok(Some(Event {
                    id: block.id,
                    frame,
                    data_lines: block.data.len(),
                }));
            }
        }
    }

    /// The next event; panics if the stream ends or nothing comes within
    /// [`WAIT`].
    pub async fn event(&mut self) -> Event {
        self.try_event(WAIT)
            .await
            .expect("an SSE event within the wait")
            .expect("the SSE stream is open")
    }

    /// Asserts the server ends the stream within [`WAIT`] with no further
    /// event.
    pub async fn ends(&mut self) {
        match self.try_event(WAIT).await {
            Ok(None) => {}
            Ok(Some(e)) => panic!("expected the stream to end, got {e:?}"),
            Err(()) => panic!("the SSE stream did not end within the wait"),
        }
    }

    /// Asserts no event arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some(e)) = self.try_event(wait).await {
            panic!("expected silence, got {e:?}");
        }
    }

    /// Moves complete lines from the buffer into blocks.
    fn parse(&mut self) {
        while let Some(line) = self.line() {
            if line.is_empty() {
                let block = std::mem::take(&mut self.block);
                if block.is_event()
                    || !block.comments.is_empty()
                    || block.retry.is_some()
                    || block.id.is_some()
                {
                    self.blocks.push_back(block);
                }
                continue;
            }
            if let Some(comment) = line.strip_prefix(':') {
                self.block.comments.push(comment.to_string());
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            let value = value.to_string();
            match field {
                "data" => self.block.data.push(value),
                "id" => self.block.id = Some(value),
                "retry" => self.block.retry = Some(value),
                "event" => self.block.event = Some(value),
                _ => {}
            }
        }
    }

    /// The next complete line (CRLF, LF or CR), if the buffer holds one.
    fn line(&mut self) -> Option<String> {
        let end = self.buf.iter().position(|&b| b == b'\n' || b == b'\r')?;
        let mut consumed = end + 1;
        if self.buf[end] == b'\r' {
            match self.buf.get(end + 1) {
                Some(b'\n') => consumed += 1,
                // A CR at the end of what arrived may be half of a CRLF.
                None if !self.ended => return None,
                _ => {}
            }
        }
        let line = String::from_utf8(self.buf[..end].to_vec()).expect("the stream is UTF-8");
        self.buf.drain(..consumed);
        Some(line)
    }
}
