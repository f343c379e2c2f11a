//! The publishing connection: a saturating publisher that keeps a window of
//! publishes in flight (and never runs more than a bounded number of
//! publications ahead of its slowest probe subscriber, so server queues stay
//! bounded and the figure is a sustainable rate), and a fixed-rate one for
//! the latency scenario. Acknowledgements (Switchboard's `published`,
//! Socket.IO's `43N[…]`) are recognised by their first bytes, not parsed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use switchboard::ws::{self, Message};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use super::conn::Conn;
use super::protocol::{Endpoint, Kind};
use super::subscriber::SubStat;

/// How long the last acknowledgements may take once publishing stopped.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected publisher on one channel.
pub struct Publisher {
    conn: Conn,
    channel: String,
    /// Publishes sent.
    pub sent: u64,
    /// Publishes acknowledged.
    pub acked: u64,
    text: String,
    wbuf: Vec<u8>,
    rbuf: Box<[u8]>,
}

/// Parameters of [`Publisher::saturate`].
pub struct Saturation {
    /// Publishes in flight (sent, not yet acknowledged).
    pub window: u64,
    /// Most publications sent ahead of the slowest probe subscriber.
    pub max_lag: u64,
    /// The subscribers whose progress gates the publisher.
    pub probes: Vec<Arc<SubStat>>,
    /// Notified when subscribers make progress.
    pub progress: Arc<Notify>,
    /// Set by the caller to stop publishing.
    pub stop: Arc<AtomicBool>,
    /// Acknowledged publishes, published for the caller's snapshots.
    pub acked: Arc<AtomicU64>,
}

impl Publisher {
    /// Opens and logs in a publisher connection for `channel`.
    pub async fn open(
        endpoint: &Endpoint,
        token: &str,
        channel: &str,
    ) -> anyhow::Result<Publisher> {
        let mut conn = Conn::open(endpoint).await?;
        conn.login(token).await?;
        Ok(Publisher {
            conn,
            channel: channel.to_owned(),
            sent: 0,
            acked: 0,
            text: String::new(),
            wbuf: Vec::new(),
            rbuf: vec![0; 64 * 1024].into_boxed_slice(),
        })
    }

    /// Appends one `publish` frame with `data` (raw JSON) to the write buffer.
    fn queue(&mut self, data: &str) {
        self.sent += 1;
        let protocol = self.conn.protocol;
        protocol.publish(self.sent, &self.channel, data, &mut self.text);
        ws::encode_client_text(self.text.as_bytes(), &mut self.wbuf);
    }

    /// Appends one `publish` frame with `data` (raw JSON) to `channel`
    /// (not the publisher's own) to the write buffer; [`flush`](Self::flush)
    /// sends it.
    pub fn queue_to(&mut self, channel: &str, data: &str) {
        self.sent += 1;
        let protocol = self.conn.protocol;
        protocol.publish(self.sent, channel, data, &mut self.text);
        ws::encode_client_text(self.text.as_bytes(), &mut self.wbuf);
    }

    /// Writes what was queued.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.wbuf.is_empty() {
            self.conn
                .stream
                .write_all(&self.wbuf)
                .await
                .context("publisher write")?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Waits for the socket, reads once and counts acknowledgements.
    pub async fn read_acks(&mut self) -> anyhow::Result<()> {
        self.conn
            .stream
            .readable()
            .await
            .context("publisher read")?;
        let n = match self.conn.stream.try_read(&mut self.rbuf) {
            Ok(0) => bail!("the server closed the publisher's connection"),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e).context("publisher read"),
        };
        let mut acks = 0;
        let mut failure = None;
        let mut pong = Vec::new();
        let mut early = std::mem::take(&mut self.conn.early);
        let fed = self.conn.reader.feed(&self.rbuf[..n], &mut |m| {
            early.push_back(m);
            true
        });
        fed.context("server broke WebSocket framing")?;
        let protocol = self.conn.protocol;
        for m in early.drain(..) {
            match m {
                Message::Text(t) => match protocol.classify(&t) {
                    Kind::Reply { ok: true } => acks += 1,
                    Kind::Reply { ok: false } | Kind::Disconnect => {
                        failure.get_or_insert_with(|| String::from_utf8_lossy(&t).into_owned());
                    }
                    Kind::Ping => ws::encode_client_text(protocol.pong(), &mut pong),
                    Kind::Publication | Kind::Other => {}
                },
                Message::Ping(p) => ws::encode_client_pong(&p, &mut pong),
                Message::Close(c) => bail!("the server closed the publisher: {c:?}"),
                _ => {}
            }
        }
        self.conn.early = early;
        if let Some(f) = failure {
            bail!("publish failed: {f}");
        }
        self.acked += acks;
        if !pong.is_empty() {
            self.conn
                .stream
                .write_all(&pong)
                .await
                .context("publisher write")?;
        }
        Ok(())
    }

    /// Publishes `data` as fast as the window and the lag bound allow until
    /// `cfg.stop` is set, then waits for the last acknowledgements.
    pub async fn saturate(&mut self, data: &str, cfg: &Saturation) -> anyhow::Result<()> {
        loop {
            let stopping = cfg.stop.load(Relaxed);
            if !stopping {
                let slowest = cfg.probes.iter().map(|p| p.count.load(Relaxed)).min();
                let allowed = slowest.unwrap_or(0) + cfg.max_lag;
                while self.sent - self.acked < cfg.window && self.sent < allowed {
                    self.queue(data);
                }
                self.flush().await?;
            }
            if self.sent == self.acked {
                if stopping {
                    return Ok(());
                }
                // Held back by the lag bound: wait for subscribers to catch
                // up (the timeout covers a notification that raced the check).
                let _ =
                    tokio::time::timeout(Duration::from_millis(5), cfg.progress.notified()).await;
                continue;
            }
            let read = self.read_acks();
            if stopping {
                tokio::time::timeout(ACK_TIMEOUT, read)
                    .await
                    .context("acknowledgements stopped coming")??;
            } else {
                read.await?;
            }
            cfg.acked.store(self.acked, Relaxed);
        }
    }

    /// Closes the WebSocket deliberately (a close frame), so that the server
    /// ends the session at once instead of keeping it for a resume, and
    /// waits (briefly) for the server's close.
    pub async fn close(mut self) {
        let mut frame = Vec::new();
        ws::encode_client_close(1000, "", &mut frame);
        if self.conn.stream.write_all(&frame).await.is_err() {
            return;
        }
        let drain = async { while self.read_acks().await.is_ok() {} };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }

    /// Publishes `count` messages at `rate` per second; `data(i)` builds the
    /// i-th message's data just before it is sent. Returns once every
    /// publish is acknowledged.
    pub async fn fixed_rate(
        &mut self,
        rate: f64,
        count: u64,
        mut data: impl FnMut(u64) -> String,
    ) -> anyhow::Result<()> {
        let period = Duration::from_secs_f64(1.0 / rate.max(1e-3));
        let mut ticks = tokio::time::interval(period);
        while self.sent < count {
            tokio::select! {
                _ = ticks.tick() => {
                    let d = data(self.sent);
                    self.queue(&d);
                    self.flush().await?;
                }
                read = self.read_acks(), if self.acked < self.sent => read?,
            }
        }
        while self.acked < self.sent {
            tokio::time::timeout(ACK_TIMEOUT, self.read_acks())
                .await
                .context("acknowledgements stopped coming")??;
        }
        Ok(())
    }
}

/// Runs a saturating publisher on a thread of its own (with its own
/// single-threaded runtime, on the same CPU as the rest of the benchmark).
///
/// On the subscribers' runtime the publisher would wait behind thousands of
/// ready subscriber tasks each time it is woken, and the server would sit
/// idle meanwhile; as a thread, the kernel schedules it as soon as it is
/// woken. Returns the number of publications once `cfg.stop` is set and all
/// are acknowledged.
pub fn spawn_saturating(
    endpoint: Endpoint,
    token: String,
    channel: String,
    data: String,
    cfg: Saturation,
) -> tokio::sync::oneshot::Receiver<anyhow::Result<u64>> {
    let (done, result) = tokio::sync::oneshot::channel();
    let run = move || -> anyhow::Result<u64> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the publisher's runtime")?;
        runtime.block_on(async {
            let mut publisher = Publisher::open(&endpoint, &token, &channel).await?;
            publisher.saturate(&data, &cfg).await?;
            let sent = publisher.sent;
            publisher.close().await;
            Ok(sent)
        })
    };
    let spawned = std::thread::Builder::new()
        .name("bench-publisher".into())
        .spawn(move || {
            let _ = done.send(run());
        });
    if let Err(e) = spawned {
        // The sender went down with the closure: the receiver sees the
        // channel closed, which the caller reports.
        eprintln!("bench: cannot start the publisher thread: {e}");
    }
    result
}

/// A JSON object of about `bytes` bytes: `{"p":"xxxx…"}`.
pub fn padding_data(bytes: usize) -> String {
    format!("{{\"p\":\"{}\"}}", "x".repeat(bytes.saturating_sub(8)))
}
