//! Accepting connections so that no client can lock producers out: the number of open
//! connections is bounded below the process's file-descriptor limit, a request's head must
//! arrive within [`DEFAULT_CLIENT_TIMEOUT`] (idle keep-alive connections included) and its body
//! within the same time again, and when the bound is reached the connection that has been idle
//! longest (one that never sent a request first) is closed to make room, so a health check or a
//! producer that sends its request at once still gets in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service as _, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// Connections kept open at most, unless the file-descriptor limit asks for fewer
/// (`HOOKWASM_MAX_CONNECTIONS` overrides it).
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// How long a client may take to send a request's head, and then its body
/// (`HOOKWASM_CLIENT_TIMEOUT_SECS` overrides it).
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Time for a request's head, and again for its body.
    pub client_timeout: Duration,
}

impl ConnectionLimits {
    /// The defaults, the environment's overrides, and at most half the file-descriptor limit
    /// (the rest is for the outbox, handlers' outbound requests and the listener itself).
    pub fn from_env() -> ConnectionLimits {
        let number = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|&n| n > 0)
        };
        let wanted = number("HOOKWASM_MAX_CONNECTIONS")
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        let max_connections = match open_files_limit() {
            Some(limit) => wanted.min((limit / 2).max(1)),
            None => wanted,
        };
        let client_timeout = number("HOOKWASM_CLIENT_TIMEOUT_SECS")
            .map_or(DEFAULT_CLIENT_TIMEOUT, Duration::from_secs);
        ConnectionLimits {
            max_connections,
            client_timeout,
        }
    }
}

/// The soft `RLIMIT_NOFILE`, read from `/proc/self/limits` (Linux); `None` elsewhere.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One open connection, as the table sees it.
#[derive(Debug)]
struct Open {
    accepted: Instant,
    /// When its last request started; `None` until it sends one.
    last_request: Option<Instant>,
    /// Requests being answered now: a busy connection is never closed to make room.
    busy: usize,
    /// Wakes the connection's task to close it.
    close: Arc<Notify>,
}

/// Every open connection.
#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Open>,
    /// Connections closed to make room, and refused, since the last warning.
    evicted: u64,
    refused: u64,
    last_warning: Option<Instant>,
}

impl Table {
    /// Closes the idle connection least likely to be a real client: one that never sent a
    /// request, oldest first; else the one idle longest. `false` when every one is busy.
    fn evict_one(&mut self) -> bool {
        let victim = self
            .open
            .iter()
            .filter(|(_, c)| c.busy == 0)
            .min_by_key(|(_, c)| {
                (
                    c.last_request.is_some(),
                    c.last_request.unwrap_or(c.accepted),
                )
            })
            .map(|(&id, _)| id);
        match victim.and_then(|id| self.open.remove(&id)) {
            Some(open) => {
                open.close.notify_one();
                self.evicted += 1;
                true
            }
            None => false,
        }
    }

    /// At most one warning every 10 s about what the bound did.
    fn warn(&mut self, limit: usize) {
        let due = self
            .last_warning
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(10));
        if due && (self.evicted > 0 || self.refused > 0) {
            tracing::warn!(
                "{limit} connections open (the bound): closed {} idle ones to make room and \
                 refused {} new ones; a client may be holding connections open",
                self.evicted,
                self.refused
            );
            self.evicted = 0;
            self.refused = 0;
            self.last_warning = Some(Instant::now());
        }
    }
}

/// A shared [`Table`].
#[derive(Debug, Clone, Default)]
struct Connections(Arc<Mutex<Table>>);

impl Connections {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut Open)) {
        if let Some(open) = self.lock().open.get_mut(&id) {
            change(open);
        }
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` resolves, then lets open requests
/// finish and returns once every connection has closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Connections::default();
    let (stop, stopping) = watch::channel(());
    let (done, all_done) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (mut tcp, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, mostly: wait for some to close.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        super::tune_connection(&mut tcp);
        let close = Arc::new(Notify::new());
        let id = {
            let mut table = connections.lock();
            if table.open.len() >= limits.max_connections && !table.evict_one() {
                table.refused += 1;
                table.warn(limits.max_connections);
                continue; // drops `tcp`: every open connection is answering a request
            }
            table.warn(limits.max_connections);
            let id = table.next_id;
            table.next_id += 1;
            table.open.insert(
                id,
                Open {
                    accepted: Instant::now(),
                    last_request: None,
                    busy: 0,
                    close: close.clone(),
                },
            );
            id
        };
        let task = Connection {
            remote,
            id,
            app: app.clone(),
            connections: connections.clone(),
            limits,
            close,
            stopping: stopping.clone(),
            _done: all_done.clone(),
        };
        tokio::spawn(task.run(tcp));
    }
    drop(stop);
    drop(all_done);
    done.closed().await;
}

/// One accepted connection and what its task needs.
struct Connection {
    remote: SocketAddr,
    id: u64,
    app: Router,
    connections: Connections,
    limits: ConnectionLimits,
    close: Arc<Notify>,
    stopping: watch::Receiver<()>,
    /// Dropped when the task ends: `serve` waits for every one at shutdown.
    _done: watch::Receiver<()>,
}

impl Connection {
    /// Serves the connection until it ends, is closed to make room, or shutdown finishes it.
    async fn run(mut self, tcp: TcpStream) {
        let tower = TowerToHyperService::new(self.app.clone());
        let (table, id, remote, timeout) = (
            self.connections.clone(),
            self.id,
            self.remote,
            self.limits.client_timeout,
        );
        let service = service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            let request = request.map(|body| DeadlineBody::new(body, timeout));
            table.update(id, |c| {
                c.busy += 1;
                c.last_request = Some(Instant::now());
            });
            let answer = tower.call(request);
            let table = table.clone();
            async move {
                let response = answer.await;
                table.update(id, |c| c.busy = c.busy.saturating_sub(1));
                response
            }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(timeout);
        let conn = builder.serve_connection(TokioIo::new(tcp), service);
        let mut conn = std::pin::pin!(conn);
        let mut shutting_down = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!("connection from {remote} ended: {e}");
                    }
                    break;
                }
                () = self.close.notified() => break,
                _ = self.stopping.changed(), if !shutting_down => {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
        self.connections.lock().open.remove(&self.id);
    }
}

/// A request body that fails once its deadline has passed, so a client trickling a body
/// cannot hold a connection and a request's memory for ever.
#[derive(Debug)]
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }
}

/// The body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0} s")]
struct BodyTimedOut(u64);

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let secs = self.timeout.as_secs();
                Poll::Ready(Some(Err(BodyTimedOut(secs).into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
