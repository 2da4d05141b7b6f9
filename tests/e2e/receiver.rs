//! A small HTTP/1.1 server on 127.0.0.1 for handlers to call: it records every connection and
//! request (with when it arrived and how it was answered) and answers as the test says, possibly
//! after holding the request until the test releases it.
//!
//! Each connection is served on its own thread, so a held request blocks nobody else. The server
//! stops when the [`Receiver`] is dropped; a held request is released by then at the latest.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::support::{POLL_DEADLINE, dechunk};

/// Largest request head or body the receiver reads.
const MAX_REQUEST_BYTES: usize = 4 << 20;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When its head and body had been read.
    pub arrived: Instant,
    /// The status it was answered with, and when; `None` while it is held.
    pub answered: Option<(u16, Instant)>,
}

impl Received {
    /// A header's value (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// `status` with a short text body.
    pub fn status(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }
}

/// What the server has seen so far.
#[derive(Debug, Default)]
struct Seen {
    connections: usize,
    requests: Vec<Received>,
}

#[derive(Debug, Default)]
struct Shared {
    seen: Mutex<Seen>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Respond = dyn Fn(&Received) -> Reply + Send + Sync;

/// The server; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// A server answering every request with `status` and a short body.
    pub fn answering(status: u16) -> Receiver {
        Receiver::start(move |_| Reply::status(status, "receiver says hi"))
    }

    /// A server answering each request as `respond` says. `respond` runs on the connection's
    /// own thread after the request was recorded, so it may block to hold the request.
    pub fn start(respond: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot listen on 127.0.0.1");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let respond: Arc<Respond> = Arc::new(respond);
        let acceptor = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    shared.lock().connections += 1;
                    shared.changed.notify_all();
                    let (shared, respond) = (shared.clone(), respond.clone());
                    std::thread::spawn(move || serve(stream, &shared, &*respond));
                }
            })
        };
        Receiver {
            addr,
            shared,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, as `allowedHosts` lists it.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// TCP connections accepted so far, whether or not they sent a request.
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// Every request so far, in the order they arrived.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.lock().requests.clone()
    }

    /// Waits until `condition` holds for the requests seen so far; fails after
    /// [`POLL_DEADLINE`], saying `what`.
    pub fn wait_until(&self, what: &str, condition: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        self.wait_until_within(POLL_DEADLINE, what, condition)
    }

    /// Like [`Receiver::wait_until`], with its own deadline: for waits that scale with the
    /// machine's speed, such as thousands of deliveries by a debug build.
    pub fn wait_until_within(
        &self,
        deadline: std::time::Duration,
        what: &str,
        condition: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let until = Instant::now() + deadline;
        let mut seen = self.shared.lock();
        loop {
            if condition(&seen.requests) {
                return seen.requests.clone();
            }
            let now = Instant::now();
            assert!(
                now < until,
                "timed out after {deadline:?} waiting until {what}; the receiver saw: {:#?}",
                seen.requests
            );
            seen = self
                .shared
                .changed
                .wait_timeout(seen, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits until `n` requests have been answered, and returns them all.
    pub fn wait_for_answered(&self, n: usize) -> Vec<Received> {
        self.wait_until(&format!("{n} requests were answered"), |requests| {
            requests.iter().filter(|r| r.answered.is_some()).count() >= n
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Reads one request, records it, answers it, closes the connection.
fn serve(mut stream: TcpStream, shared: &Shared, respond: &Respond) {
    let _ = stream.set_read_timeout(Some(POLL_DEADLINE));
    let Some(mut request) = read_request(&mut stream) else {
        return;
    };
    let index = {
        let mut seen = shared.lock();
        seen.requests.push(request.clone());
        seen.requests.len() - 1
    };
    shared.changed.notify_all();
    let reply = respond(&request);
    let mut head = format!("HTTP/1.1 {} Whatever\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    ));
    request.answered = Some((reply.status, Instant::now()));
    shared.lock().requests[index].answered = request.answered;
    shared.changed.notify_all();
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&reply.body);
    let _ = stream.flush();
}

fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut raw = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if raw.len() > MAX_REQUEST_BYTES {
            return None;
        }
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buffer[..n]);
    };
    let head = std::str::from_utf8(&raw[..head_end]).ok()?.to_owned();
    let mut body = raw[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if let Some(length) = header("content-length") {
        let length: usize = length.parse().ok()?;
        if length > MAX_REQUEST_BYTES {
            return None;
        }
        while body.len() < length {
            let n = stream.read(&mut buffer).ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&buffer[..n]);
        }
        body.truncate(length);
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            if let Some(decoded) = dechunk(&body) {
                body = decoded;
                break;
            }
            if body.len() > MAX_REQUEST_BYTES {
                return None;
            }
            let n = stream.read(&mut buffer).ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&buffer[..n]);
        }
    }
    Some(Received {
        method,
        path,
        headers,
        body,
        arrived: Instant::now(),
        answered: None,
    })
}

/// A gate a held request waits at until the test opens it (or [`POLL_DEADLINE`] passes, so a
/// failing test never leaves a thread behind for long).
#[derive(Debug, Default)]
pub struct Latch {
    open: Mutex<bool>,
    changed: Condvar,
}

impl Latch {
    pub fn new() -> Arc<Latch> {
        Arc::new(Latch::default())
    }

    /// Lets every waiter through, now and later.
    pub fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.changed.notify_all();
    }

    /// Blocks until the latch is open or the deadline passes.
    pub fn wait(&self) {
        let until = Instant::now() + POLL_DEADLINE;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            let now = Instant::now();
            if now >= until {
                return;
            }
            open = self
                .changed
                .wait_timeout(open, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A loopback port where nothing listens (it was bound, then released).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot listen on 127.0.0.1");
    listener.local_addr().expect("bound").port()
}
