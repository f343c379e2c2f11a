//! Starting and stopping a node's HTTP server.
//!
//! [`start`] binds, builds the [`Node`] and serves in a background task;
//! [`Running::shutdown`] stops accepting, tells every client to reconnect
//! elsewhere, waits (bounded) for connections to close and flushes the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::node::{Node, StartError};

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Start(#[from] StartError),
}

/// A node serving HTTP and WebSocket.
pub struct Running {
    pub node: Arc<Node>,
    addr: SocketAddr,
    stop: Arc<Notify>,
    task: JoinHandle<std::io::Result<()>>,
    maintenance: JoinHandle<()>,
    sweeper: JoinHandle<()>,
}

/// Binds `config.listen` and starts serving.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let listen = config.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: listen,
        source,
    })?;
    let node = Node::start(config).await?;
    let app = crate::http::router(node.clone());
    let stop = Arc::new(Notify::new());
    let stopped = stop.clone();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        // One router for every connection (not a clone per connection).
        axum::serve(listener, app.into_make_service())
            .with_graceful_shutdown(async move { stopped.notified().await })
            .await
    });
    let maintained = node.clone();
    let maintenance = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            maintained.broker.maintain();
        }
    });
    let swept = node.clone();
    let sweeper = tokio::spawn(async move {
        // Sessions past their grace period end within a quarter of it.
        let grace = swept.config.client.session_grace;
        let period = (grace / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            swept.sessions.sweep(grace).await;
        }
    });
    Ok(Running {
        node,
        addr,
        stop,
        task,
        maintenance,
        sweeper,
    })
}

impl Running {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Graceful stop: see the module doc.
    pub async fn shutdown(self) {
        self.stop.notify_one();
        let timeout = self.node.config.shutdown_timeout;
        self.node.shutdown(timeout).await;
        self.maintenance.abort();
        self.sweeper.abort();
        match tokio::time::timeout(timeout, self.task).await {
            Ok(Ok(Err(e))) => tracing::error!("server stopped with an error: {e}"),
            Ok(_) => {}
            Err(_) => {
                tracing::warn!("HTTP connections still open after {timeout:?}; dropping them")
            }
        }
    }
}
