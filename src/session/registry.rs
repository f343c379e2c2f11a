//! Every connected session of this node, by resume token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::Session;
use crate::client::Refusal;
use crate::codes::ErrorCode;

/// See the module doc.
#[derive(Default)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
}

impl SessionRegistry {
    pub fn new() -> Self {
        SessionRegistry::default()
    }

    /// Registers a connected session.
    pub fn insert(&self, session: Arc<Session>) {
        if let Some(id) = session.id() {
            self.lock().insert(id.clone(), session);
        }
    }

    /// Forgets a session.
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The session with this resume token.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.lock().get(id).cloned()
    }

    /// How many sessions, and how many of them have no transport.
    pub fn stats(&self) -> (usize, usize) {
        let all = self.all();
        let detached = all.iter().filter(|s| s.detached_for().is_some()).count();
        (all.len(), detached)
    }

    /// Every session.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.lock().values().cloned().collect()
    }

    /// Resumes session `id` for a transport: `token` must be valid and for
    /// the session's user, and the log must still hold everything after
    /// `seq`. Returns the session and the transport's generation; the
    /// unnumbered `connected` reply (with `reply_id`) is queued first.
    pub async fn resume(
        &self,
        id: &str,
        token: &str,
        seq: u64,
        reply_id: u64,
    ) -> Result<(Arc<Session>, u64), Refusal> {
        let refuse = |error| Refusal {
            error,
            disconnect: None,
        };
        let session = self
            .get(id)
            .ok_or_else(|| refuse(ErrorCode::SessionNotFound.into()))?;
        let reply = session.resume_with(reply_id, token).await?;
        let generation = session.attach(seq).await.map_err(refuse)?;
        // Publishes the replaced transport started (it starts none now)
        // are answered before anything of the new one.
        session.settled().await;
        session.greet(reply);
        Ok((session, generation))
    }

    /// Ends every session that has been without a transport for `grace`.
    /// One without a transport whose queue was closed (`/api/disconnect`, a
    /// slow-consumer overflow) is released at once: its user leaves
    /// presence and channels now, and a resume within the grace period
    /// still gets its last frames and the `disconnect`.
    pub async fn sweep(&self, grace: Duration) -> usize {
        let mut ended = 0;
        for session in self.all() {
            match session.detached_for() {
                Some(d) if d >= grace => {
                    session.end().await;
                    ended += 1;
                }
                Some(_) if session.outbound().is_closed() => session.release().await,
                _ => {}
            }
        }
        ended
    }

    /// Ends every session without a transport (shutdown).
    pub async fn end_detached(&self) {
        self.sweep(Duration::ZERO).await;
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}
