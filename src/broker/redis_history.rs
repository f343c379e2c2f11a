//! Ephemeral channel history in Redis, shared by every node (issue 4).
//!
//! # Keys (prefix `P`, `sb:` by default)
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P{<channel>}:m` | hash | `e` epoch, `o` top offset, `t` ttl (ms) of the last append |
//! | `P{<channel>}:s` | stream | retained publications: id `<offset>-0`, fields `d` data, `t` time (ms), `i` publisher info (JSON) |
//! | `P{<channel>}:i:<key>` | string | `<offset>:<epoch>` of an idempotency key, expiring with its window |
//!
//! The stream is trimmed to the history size (`XADD MAXLEN`) and expires
//! `ttl` after the last append; reads drop publications older than the
//! ttl first. The meta hash (epoch and top) outlives the last append by
//! the longest of ttl, idempotency window and `stream_idle` (an hour), like
//! `MemoryHistory`'s idle streams; when it is gone the next append or read
//! starts a new epoch. A history size of 0 keeps no publication but still
//! counts offsets, as in `MemoryHistory`.
//!
//! # Order
//!
//! Appends, `PUBLISH`es and control messages go through one queue to one
//! writer task, which sends whatever queued up as one pipeline on the
//! multiplexed connection (one pipeline in flight at a time) and calls the
//! callbacks in queue order as the replies come back. So Redis runs them in
//! call order, and `done` is called in offset order per channel. `append`
//! is one `EVALSHA` of `lua/append.lua`; the script is loaded at every
//! connect, and a `NOSCRIPT` reply (someone ran `SCRIPT FLUSH`) loads it
//! and retries the affected appends, in order. (Were the script flushed
//! *and* reloaded by another node in the middle of one pipeline, appends
//! of that pipeline could get offsets out of queue order; nothing else
//! reorders.)
//!
//! # Failure
//!
//! Without a connection, queued work fails at once with
//! [`HistoryError::Unavailable`] (and `PUBLISH`es are dropped); so does an
//! append past a backlog of `RedisOptions::max_queued` commands. A pipeline
//! whose connection breaks (or that gets no answer within the response
//! timeout) fails as a whole with `Unavailable`: its appends may or may not
//! have happened (an idempotency key makes retrying safe).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ::redis::Value;
use tokio::sync::{mpsc, oneshot};

use super::redis::{is_noscript, millis, Link, RedisOptions, APPEND, APPEND_SOURCE, READ};
use super::FrameTemplate;
use crate::history::{AppendDone, BoxFuture, History, HistoryError};
use crate::hub::ClientId;
use crate::stream::{
    new_epoch, now_millis, AppendOutcome, AppendRequest, ClientInfo, HistoryPage, HistoryQuery,
    Publication, RawJson, StreamPosition,
};

/// At most this many commands per pipeline.
const MAX_BATCH: usize = 1024;

/// Reads ask for at most this many publications (keeps Lua numbers exact).
const MAX_READ: usize = 1 << 30;

/// Channel history in Redis (see the module doc).
pub struct RedisHistory {
    link: Arc<Link>,
    queue: Queue,
}

/// Where a publication is published once appended: the pub/sub channel,
/// the frame template, the excluded client.
pub(crate) type Publishing = (String, FrameTemplate, Option<ClientId>);

impl RedisHistory {
    /// Connects to the Redis at `url`, naming keys with `prefix` (`sb:` in
    /// production; a random one isolates a test).
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisHistory, HistoryError> {
        RedisHistory::connect_with(&RedisOptions::new(url).with_prefix(prefix)).await
    }

    /// [`RedisHistory::connect`] with every option.
    pub async fn connect_with(options: &RedisOptions) -> Result<RedisHistory, HistoryError> {
        let link = Link::open(options)
            .await
            .map_err(|e| HistoryError::Unavailable(format!("redis: {e}")))?;
        Ok(RedisHistory::with_link(link))
    }

    /// A history over an existing connection (the broker's).
    pub(crate) fn with_link(link: Arc<Link>) -> RedisHistory {
        let (sender, receiver) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        link.runtime()
            .spawn(run_writer(link.clone(), receiver, backlog.clone()));
        RedisHistory {
            queue: Queue {
                sender,
                backlog,
                max: link.options().max_queued,
            },
            link,
        }
    }

    /// Whether the command connection is up.
    pub fn healthy(&self) -> bool {
        self.link.healthy()
    }

    /// Queues a `PUBLISH` (dropped when Redis is unreachable).
    pub(crate) fn publish(&self, channel: String, payload: Vec<u8>) {
        self.queue.submit(Job::Publish { channel, payload });
    }

    /// Queues an append, publishing the rendered frame if `publishing`.
    pub(crate) fn append_publishing(
        &self,
        request: AppendRequest,
        publishing: Option<Publishing>,
        done: AppendDone,
    ) {
        let time = publishing
            .as_ref()
            .and_then(|(_, template, _)| super::redis::template_time(template))
            .unwrap_or_else(now_millis);
        let info = match request.info.as_ref().map(serde_json::to_string).transpose() {
            Ok(info) => info,
            Err(e) => {
                done(Err(HistoryError::Backend(format!("encoding info: {e}"))));
                return;
            }
        };
        self.queue.submit(Job::Append(Box::new(AppendJob {
            request,
            time,
            info,
            publishing,
            done,
        })));
    }

    async fn read_page(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<HistoryPage, HistoryError> {
        let (generation, mut conn) = self.link.get()?;
        let options = self.link.options();
        let limit = query.limit.min(MAX_READ);
        let mut invocation = READ.prepare_invoke();
        invocation
            .key(meta_key(options, channel))
            .key(stream_key(options, channel))
            .arg(new_epoch())
            .arg(millis(options.stream_idle))
            .arg(limit);
        match &query.since {
            Some(since) => invocation.arg(since.offset).arg(since.epoch.as_str()),
            None => invocation.arg("").arg(""),
        };
        let reply: Value = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.link.error(generation, e))?;
        page(reply, &query, limit)
    }
}

impl History for RedisHistory {
    fn append(&self, request: AppendRequest, done: AppendDone) {
        self.append_publishing(request, None, done);
    }

    fn read<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, HistoryError>> {
        Box::pin(self.read_page(channel, query))
    }

    /// Waits until every append queued before has been answered (Redis
    /// here runs without persistence: nothing more to wait for).
    fn flush(&self) -> BoxFuture<'_, Result<(), HistoryError>> {
        let (tx, rx) = oneshot::channel();
        self.queue.submit(Job::Flush(tx));
        Box::pin(async move {
            let _ = rx.await;
            Ok(())
        })
    }
}

fn meta_key(options: &RedisOptions, channel: &str) -> String {
    format!("{}{{{channel}}}:m", options.prefix)
}

fn stream_key(options: &RedisOptions, channel: &str) -> String {
    format!("{}{{{channel}}}:s", options.prefix)
}

fn idempotency_key(options: &RedisOptions, channel: &str, key: &str) -> String {
    format!("{}{{{channel}}}:i:{key}", options.prefix)
}

// ---------------------------------------------------------------------------
// The ordered command queue

struct Queue {
    sender: mpsc::UnboundedSender<Job>,
    /// Jobs queued and not yet taken by the writer.
    backlog: Arc<AtomicUsize>,
    max: usize,
}

enum Job {
    Append(Box<AppendJob>),
    Publish { channel: String, payload: Vec<u8> },
    Flush(oneshot::Sender<()>),
}

struct AppendJob {
    request: AppendRequest,
    time: u64,
    /// The publisher info as JSON.
    info: Option<String>,
    publishing: Option<Publishing>,
    done: AppendDone,
}

impl Queue {
    fn submit(&self, job: Job) {
        if !matches!(job, Job::Flush(_)) && self.backlog.load(Ordering::Relaxed) >= self.max {
            job.fail(HistoryError::Unavailable(
                "too many redis commands queued".into(),
            ));
            return;
        }
        self.backlog.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::error::SendError(job)) = self.sender.send(job) {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            job.fail(HistoryError::Unavailable("redis writer stopped".into()));
        }
    }
}

impl Job {
    fn fail(self, error: HistoryError) {
        match self {
            Job::Append(job) => (job.done)(Err(error)),
            Job::Publish { channel, .. } => {
                tracing::debug!("dropped a publish on {channel}: {error}");
            }
            Job::Flush(tx) => {
                let _ = tx.send(());
            }
        }
    }

    /// The command this job sends, if any.
    fn command(&self, options: &RedisOptions, epoch: &str) -> Option<::redis::Cmd> {
        match self {
            Job::Append(job) => Some(job.command(options, epoch)),
            Job::Publish { channel, payload } => {
                let mut cmd = ::redis::cmd("PUBLISH");
                cmd.arg(channel).arg(payload.as_slice());
                Some(cmd)
            }
            Job::Flush(_) => None,
        }
    }

    /// Completes the job with its reply.
    fn finish(self, reply: Result<Value, HistoryError>) {
        match self {
            Job::Append(job) => {
                let outcome = reply.and_then(parse_append);
                let AppendJob {
                    request,
                    time,
                    done,
                    ..
                } = *job;
                done(outcome.map(|(appended, offset, epoch)| {
                    if appended {
                        AppendOutcome::Appended {
                            publication: Publication {
                                offset,
                                data: request.data,
                                info: request.info,
                                time,
                            },
                            epoch,
                        }
                    } else {
                        AppendOutcome::Duplicate(StreamPosition { offset, epoch })
                    }
                }))
            }
            Job::Publish { channel, .. } => match reply {
                Ok(Value::ServerError(e)) => {
                    tracing::warn!("PUBLISH on {channel} failed: {e:?}")
                }
                Err(e) => tracing::debug!("dropped a publish on {channel}: {e}"),
                Ok(_) => {}
            },
            Job::Flush(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

impl AppendJob {
    fn command(&self, options: &RedisOptions, epoch: &str) -> ::redis::Cmd {
        let request = &self.request;
        let channel = &*request.channel;
        let limits = &request.limits;
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(APPEND.get_hash());
        match &request.idempotency_key {
            Some(key) => cmd
                .arg(3)
                .arg(meta_key(options, channel))
                .arg(stream_key(options, channel))
                .arg(idempotency_key(options, channel, key)),
            None => cmd
                .arg(2)
                .arg(meta_key(options, channel))
                .arg(stream_key(options, channel)),
        };
        cmd.arg(epoch)
            .arg(self.time)
            .arg(limits.size.min(i64::MAX as usize))
            .arg(millis(limits.ttl))
            .arg(millis(limits.idempotency_window))
            .arg(millis(options.stream_idle))
            .arg(request.data.get())
            .arg(self.info.as_deref().unwrap_or(""));
        match &self.publishing {
            Some((pubsub, template, exclude)) => cmd
                .arg(pubsub)
                .arg(&template.head[..])
                .arg(&template.tail[..])
                .arg(exclude.map(|c| c.to_string()).unwrap_or_default()),
            None => cmd.arg("").arg("").arg("").arg(""),
        };
        cmd
    }
}

/// Sends whatever queued up as one pipeline, in order, and completes it.
async fn run_writer(
    link: Arc<Link>,
    mut receiver: mpsc::UnboundedReceiver<Job>,
    backlog: Arc<AtomicUsize>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        backlog.fetch_sub(jobs.len(), Ordering::Relaxed);
        let epoch = new_epoch();
        let mut pipe = ::redis::pipe();
        for command in jobs
            .iter()
            .filter_map(|job| job.command(link.options(), &epoch))
        {
            pipe.add_command(command);
        }
        let replies = send(&link, pipe).await;
        let mut replies = replies.into_iter();
        for job in jobs.drain(..) {
            let reply = match job {
                Job::Flush(_) => Ok(Value::Nil),
                _ => replies.next().unwrap_or_else(|| {
                    Err(HistoryError::Backend("redis sent too few replies".into()))
                }),
            };
            job.finish(reply);
        }
    }
}

/// Sends `pipe` (one command per job that has one); one reply per command.
async fn send(link: &Arc<Link>, pipe: ::redis::Pipeline) -> Vec<Result<Value, HistoryError>> {
    let count = pipe.len();
    if count == 0 {
        return Vec::new();
    }
    let failed = |error: HistoryError| (0..count).map(|_| Err(clone_error(&error))).collect();
    let (generation, mut conn) = match link.get() {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    let mut replies: Vec<Result<Value, HistoryError>> =
        match conn.send_packed_commands(&pipe, 0, count).await {
            Ok(values) => values.into_iter().map(Ok).collect(),
            Err(e) => return failed(link.error(generation, e)),
        };
    // NOSCRIPT: load the script and run those commands again, in order.
    let missing: Vec<usize> = (0..replies.len())
        .filter(|&i| matches!(&replies[i], Ok(v) if is_noscript(v)))
        .collect();
    if !missing.is_empty() {
        tracing::warn!("redis lost the append script; loading it again");
        let mut retry = ::redis::pipe();
        retry.cmd("SCRIPT").arg("LOAD").arg(APPEND_SOURCE);
        for (i, command) in pipe.cmd_iter().enumerate() {
            if missing.binary_search(&i).is_ok() {
                retry.add_command(command.clone());
            }
        }
        match conn.send_packed_commands(&retry, 1, missing.len()).await {
            Ok(values) => {
                for (&i, value) in missing.iter().zip(values) {
                    replies[i] = Ok(value);
                }
            }
            Err(e) => {
                let error = link.error(generation, e);
                for &i in &missing {
                    replies[i] = Err(clone_error(&error));
                }
            }
        }
    }
    replies.resize_with(count, || {
        Err(HistoryError::Backend("redis sent too few replies".into()))
    });
    replies
}

fn clone_error(e: &HistoryError) -> HistoryError {
    match e {
        HistoryError::Unavailable(m) => HistoryError::Unavailable(m.clone()),
        HistoryError::Backend(m) => HistoryError::Backend(m.clone()),
    }
}

// ---------------------------------------------------------------------------
// Replies

fn server_error(value: &Value) -> Option<HistoryError> {
    match value {
        Value::ServerError(e) => Some(HistoryError::Backend(format!(
            "redis: {} {}",
            e.code(),
            e.details().unwrap_or("")
        ))),
        _ => None,
    }
}

fn bad_reply(what: &str) -> HistoryError {
    HistoryError::Backend(format!("unexpected redis reply: {what}"))
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// `{1|0, offset, epoch}` → (appended, offset, epoch).
fn parse_append(value: Value) -> Result<(bool, u64, String), HistoryError> {
    if let Some(e) = server_error(&value) {
        return Err(e);
    }
    match &value {
        Value::Array(items) if items.len() == 3 => {
            let appended = number(&items[0]).ok_or_else(|| bad_reply("append flag"))? == 1;
            let offset = number(&items[1]).ok_or_else(|| bad_reply("append offset"))?;
            let epoch = text(&items[2]).ok_or_else(|| bad_reply("append epoch"))?;
            Ok((appended, offset, epoch.to_string()))
        }
        _ => Err(bad_reply("append")),
    }
}

/// Builds the page of `query` from `lua/read.lua`'s `{epoch, top, entries}`.
fn page(reply: Value, query: &HistoryQuery, limit: usize) -> Result<HistoryPage, HistoryError> {
    let Value::Array(mut items) = reply else {
        return Err(bad_reply("read"));
    };
    if items.len() != 3 {
        return Err(bad_reply("read"));
    }
    let entries = match items.pop() {
        Some(Value::Array(entries)) => entries,
        _ => return Err(bad_reply("read entries")),
    };
    let top = number(&items[1]).ok_or_else(|| bad_reply("read top"))?;
    let epoch = text(&items[0])
        .ok_or_else(|| bad_reply("read epoch"))?
        .to_string();
    let mut publications = entries
        .into_iter()
        .map(publication)
        .collect::<Result<Vec<_>, _>>()?;
    let position = StreamPosition { offset: top, epoch };
    match &query.since {
        Some(since) if since.epoch == position.epoch && since.offset <= top => {
            // Oldest first, up to limit + 1.
            let complete = since.offset == top
                || publications
                    .first()
                    .is_some_and(|p| p.offset == since.offset + 1);
            let cut = publications.len() > limit;
            publications.truncate(limit);
            Ok(HistoryPage {
                position,
                publications,
                recovered: complete && !cut,
            })
        }
        _ => {
            // Newest first.
            if !query.reverse || query.since.is_some() {
                publications.reverse();
            }
            Ok(HistoryPage {
                position,
                publications,
                recovered: false,
            })
        }
    }
}

/// One XRANGE entry: `[id, [field, value, …]]`.
fn publication(entry: Value) -> Result<Publication, HistoryError> {
    let Value::Array(mut parts) = entry else {
        return Err(bad_reply("stream entry"));
    };
    let fields = match parts.pop() {
        Some(Value::Array(fields)) => fields,
        _ => return Err(bad_reply("stream entry fields")),
    };
    let offset = parts
        .first()
        .and_then(text)
        .and_then(|id| id.split_once('-'))
        .and_then(|(offset, _)| offset.parse().ok())
        .ok_or_else(|| bad_reply("stream entry id"))?;
    let (mut data, mut time, mut info) = (None, 0, None);
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let Value::BulkString(value) = value else {
            continue;
        };
        match text(&name) {
            Some("d") => data = Some(value),
            Some("t") => {
                time = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0)
            }
            Some("i") => info = Some(value),
            _ => {}
        }
    }
    let data = data
        .and_then(|d| String::from_utf8(d).ok())
        .and_then(|d| RawJson::from_string(d).ok())
        .ok_or_else(|| bad_reply("publication data"))?;
    let info = match info {
        Some(info) => Some(
            serde_json::from_slice::<ClientInfo>(&info)
                .map_err(|_| bad_reply("publication info"))?,
        ),
        None => None,
    };
    Ok(Publication {
        offset,
        data,
        info,
        time,
    })
}
