//! Wakes the writers of a large fan-out a few per scheduler turn.
//!
//! Waking a thousand writers at once queues a thousand tasks on the
//! runtime; whatever I/O arrives next waits behind all of them. On a node
//! with the Redis broker that I/O is the critical path of publishing — the
//! reply to the append (which the publisher's acknowledgement, and so its
//! next publish, waits for) and the next pub/sub messages — so a fan-out
//! stretched every publish round trip by a whole fan-out's writes (1–2 ms
//! for 1,000 subscribers on one core), each publication reached the
//! writers alone, and every frame cost a write of its own.
//!
//! The [`Pacer`] (one task per hub, started on first use) wakes one writer
//! per runtime worker, then yields; the runtime polls its I/O and runs
//! what it woke before the pacer's next turn. The frames are already
//! queued: pacing only orders the wake-ups, never holds a frame back from
//! a writer that is awake anyway, and adds no delay when there is nothing
//! else to run. Writers still waiting for their turn when more frames
//! arrive take those too, in the same write.
//!
//! A batch in which no event reached more than [`INLINE`] writers per
//! worker is woken at once, however many writers it has: messages of many
//! channels with a subscriber or two each (a node receiving other nodes'
//! publications) gain nothing from pacing and would only pay its turns —
//! at 20,000 publications/s over 1,000 channels, paced turns fell behind
//! until [`MAX_WAIT`] woke them, which set the p50 near 50 ms. A small
//! batch (at most [`INLINE`] writers per worker) while nothing waits for a
//! turn is woken at once too; when writers are waiting, a small batch of
//! a wide event queues behind them, so the writers that just wrote do not
//! go first again.
//!
//! A runtime busy with other tasks gives the pacer a turn less often (at
//! least every 61 polls, when tokio checks for I/O); so that a writer is
//! never kept waiting for long, whatever has waited [`MAX_WAIT`] is woken
//! in the next turn at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Outbound;

/// Writers woken per turn, per runtime worker. Measured with
/// `bench --scenario cluster` (1,000 subscribers, one core): 1 per turn
/// reached 89–96 % of the memory broker's deliveries/s, 2: 77–93 %,
/// 4: 77 %, 8: 42–57 %, all at once (no pacing): 12–18 %.
const PER_WORKER: usize = 1;

/// Writers per worker woken at once when no writer waits for a turn.
/// Measured with `bench --scenario cluster`: pacing every batch of more
/// than one writer cost nodes B and C (1,000 channels, one subscriber
/// each) ~0.2 ms of p50 and ~1.5 points of CPU at 10,000/s; waking small
/// batches at once even while writers wait for their turn cut the local
/// fan-out to 52–74 % (the writers that had just written went first
/// again). With this bound and the backlog check, B and C are as before
/// and the local fan-out stays at 80–90 %.
pub const INLINE: usize = 64;

/// The longest a writer waits for its turn. A whole turn of 1,000
/// writers takes ~30 ms when each write carries ~150 frames (the cluster
/// bench), so this rarely cuts a turn short there.
pub const MAX_WAIT: Duration = Duration::from_millis(50);

/// See the module doc.
#[derive(Debug)]
pub struct Pacer {
    /// To the pacing task; started on first use, in the runtime of the
    /// caller.
    task: OnceLock<Task>,
    max_wait: Duration,
    /// Writers handed to the task and not woken yet.
    backlog: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct Task {
    sender: mpsc::UnboundedSender<Vec<Arc<Outbound>>>,
    /// Woken per turn.
    per_turn: usize,
    /// Woken at once when the backlog is empty.
    inline: usize,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer::with_max_wait(MAX_WAIT)
    }
}

impl Pacer {
    /// A pacer that wakes whatever waited `max_wait` at once.
    pub fn with_max_wait(max_wait: Duration) -> Self {
        Pacer {
            task: OnceLock::new(),
            max_wait,
            backlog: Arc::default(),
        }
    }

    /// Wakes `queues`' writers: at once if they are few and no writer
    /// waits for a turn, or if no event of the batch reached more than a
    /// few of them (`widest`), or if there is no runtime to pace in; else
    /// in turns after those waiting.
    pub fn wake(&self, queues: Vec<Arc<Outbound>>, widest: usize) {
        let Some(task) = self.task() else {
            return wake_all(queues);
        };
        let count = queues.len();
        if count <= task.per_turn
            || widest <= task.inline
            || (count <= task.inline && self.backlog.load(Ordering::Relaxed) == 0)
        {
            return wake_all(queues);
        }
        self.backlog.fetch_add(count, Ordering::Relaxed);
        if let Err(mpsc::error::SendError(queues)) = task.sender.send(queues) {
            // The runtime that ran the pacer is gone.
            self.backlog.fetch_sub(count, Ordering::Relaxed);
            wake_all(queues);
        }
    }

    fn task(&self) -> Option<&Task> {
        if let Some(task) = self.task.get() {
            return Some(task);
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(self.task.get_or_init(|| {
            let workers = runtime.metrics().num_workers().max(1);
            let (sender, receiver) = mpsc::unbounded_channel();
            let per_turn = PER_WORKER * workers;
            runtime.spawn(run(receiver, per_turn, self.max_wait, self.backlog.clone()));
            Task {
                sender,
                per_turn,
                inline: INLINE * workers,
            }
        }))
    }
}

fn wake_all(queues: Vec<Arc<Outbound>>) {
    for queue in queues {
        queue.wake();
    }
}

/// Wakes what it is handed, `per_turn` at a time, oldest first (and
/// whatever waited `max_wait`); ends once the hub is gone and everything
/// is woken.
async fn run(
    mut receiver: mpsc::UnboundedReceiver<Vec<Arc<Outbound>>>,
    per_turn: usize,
    max_wait: Duration,
    backlog: Arc<AtomicUsize>,
) {
    let mut pending: VecDeque<(Instant, Arc<Outbound>)> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match receiver.recv().await {
                Some(queues) => {
                    let now = Instant::now();
                    pending.extend(queues.into_iter().map(|q| (now, q)));
                }
                None => return,
            }
        }
        let now = Instant::now();
        while let Ok(queues) = receiver.try_recv() {
            pending.extend(queues.into_iter().map(|q| (now, q)));
        }
        let overdue = pending
            .iter()
            .take_while(|(since, _)| now.duration_since(*since) >= max_wait)
            .count();
        let turn = per_turn.max(overdue).min(pending.len());
        for (_, queue) in pending.drain(..turn) {
            queue.wake();
        }
        backlog.fetch_sub(turn, Ordering::Relaxed);
        if !pending.is_empty() {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::FutureExt;

    fn queues(n: usize) -> Vec<Arc<Outbound>> {
        (0..n)
            .map(|_| {
                let q = Arc::new(Outbound::new(1024));
                assert_eq!(q.push_quiet(Bytes::from_static(b"x")), Ok(true));
                q
            })
            .collect()
    }

    fn woken(queues: &[Arc<Outbound>]) -> usize {
        queues
            .iter()
            .filter(|q| q.ready().now_or_never().is_some())
            .count()
    }

    #[test]
    fn without_a_runtime_everything_is_woken_at_once() {
        let all = queues(100);
        Pacer::default().wake(all.clone(), 100);
        assert_eq!(woken(&all), 100);
    }

    #[tokio::test]
    async fn a_large_batch_is_woken_in_turns_and_completely() {
        let pacer = Pacer::default();
        let small = queues(INLINE);
        pacer.wake(small.clone(), INLINE);
        assert_eq!(woken(&small), INLINE, "a small batch: at once");

        let all = queues(INLINE + 1);
        pacer.wake(all.clone(), INLINE + 1);
        // Nothing yet: the pacer runs when this task lets it.
        assert_eq!(woken(&all), 0);
        tokio::task::yield_now().await;
        let mut seen = woken(&all);
        assert!(seen < all.len(), "not all in one turn: {seen}");
        for _ in 0..100 {
            tokio::task::yield_now().await;
            seen += woken(&all);
            if seen == all.len() {
                break;
            }
        }
        assert_eq!(seen, all.len());
        assert_eq!(pacer.backlog.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_small_batch_waits_behind_writers_waiting_for_their_turn() {
        let pacer = Pacer::default();
        let big = queues(INLINE + 1);
        pacer.wake(big.clone(), INLINE + 1);
        // The writers of a wide event that had just written, say.
        let small = queues(2);
        pacer.wake(small.clone(), INLINE + 1);
        assert_eq!(woken(&small), 0, "queued behind the big batch");
        let (mut big_seen, mut small_seen) = (0, 0);
        for _ in 0..100 {
            tokio::task::yield_now().await;
            big_seen += woken(&big);
            let before = small_seen;
            small_seen += woken(&small);
            if before == 0 && small_seen > 0 {
                assert_eq!(big_seen, big.len(), "the earlier batch first");
            }
            if small_seen == small.len() {
                break;
            }
        }
        assert_eq!((big_seen, small_seen), (big.len(), small.len()));
    }

    #[tokio::test]
    async fn a_batch_of_narrow_events_is_woken_at_once_even_behind_a_backlog() {
        let pacer = Pacer::default();
        let big = queues(INLINE + 1);
        pacer.wake(big.clone(), INLINE + 1);
        // Publications of many channels with a subscriber or two each (what
        // a node gets from the others): nothing to gain from waiting.
        let narrow = queues(4 * INLINE);
        pacer.wake(narrow.clone(), 2);
        assert_eq!(woken(&narrow), narrow.len());
        assert_eq!(woken(&big), 0, "the wide batch is still paced");
    }

    #[tokio::test]
    async fn whatever_waited_too_long_is_woken_at_once() {
        let max_wait = Duration::from_millis(5);
        let pacer = Pacer::with_max_wait(max_wait);
        let all = queues(100);
        pacer.wake(all.clone(), 100);
        tokio::task::yield_now().await;
        let first = woken(&all);
        assert!(first < 100, "the first turn wakes a few: {first}");
        // The runtime is busy elsewhere for longer than `max_wait`.
        std::thread::sleep(max_wait);
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(first + woken(&all), 100);
    }
}
