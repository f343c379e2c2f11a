//! Starting and stopping a node's HTTP server.
//!
//! [`start`] binds, builds the [`Node`] and serves in a background task;
//! [`Running::shutdown`] stops accepting, tells every client to reconnect
//! elsewhere, waits (bounded) for connections to close and flushes the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
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
    stop: watch::Sender<bool>,
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
    let body_limit = crate::transport::http_session::body_limit(&node);
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept(listener, app, body_limit, stopped));
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

/// Accepts connections until `stop`, then waits for them to finish.
async fn accept(
    listener: TcpListener,
    app: axum::Router,
    body_limit: usize,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // Each connection holds a receiver; all dropped means all closed.
    let (open, _) = watch::channel(());
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: wait, don't spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::http::direct::stopping(&mut stop) => break,
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let stop = stop.clone();
        let held = open.subscribe();
        tokio::spawn(async move {
            crate::http::direct::serve(tcp, app, body_limit, stop).await;
            drop(held);
        });
    }
    drop(listener);
    open.closed().await;
    Ok(())
}

impl Running {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Graceful stop: see the module doc.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
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
