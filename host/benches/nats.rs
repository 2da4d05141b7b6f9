//! Shared-outbox benchmark: accepted/s and delivered/s through real `hookwasm serve` processes
//! over HTTP, with the outbox on NATS JetStream (one `nats-server -js` on loopback) for 1, 2 and 3
//! hosts, against one host with the SQLite outbox (`sync: full`), on the same machine.
//!
//! Each case posts [`EVENTS`] events in batches of [`BATCH`] from [`PRODUCERS`] threads, spread
//! round-robin over the hosts; "accepted/s" is events over the time until the last batch was
//! answered, "delivered/s" events over the time until every observer's queue is empty. The
//! observers run the chaos guest (`behavior: ok`), so the figures are the outbox's, not a
//! handler's. Cases with 1 and with 4 observers: one observer's deliveries are made one at a time
//! across the whole cluster (that is how order is kept), so more hosts can only help when there
//! are several observers.
//!
//! Run: `cargo xtask build-guests && cargo bench -p hookwasm --bench nats` (needs `nats-server`;
//! `cargo xtask test` installs it). It prints a table and asserts nothing about speed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const EVENTS: usize = 10_000;
const BATCH: usize = 100;
const PRODUCERS: usize = 4;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let chaos = root.join("tests/guests/chaos.wasm");
    anyhow::ensure!(
        chaos.exists(),
        "{} is missing: run `cargo xtask build-guests` first",
        chaos.display()
    );
    let nats_bin = [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ]
    .into_iter()
    .find(|bin| Command::new(bin).arg("--version").output().is_ok())
    .ok_or_else(|| anyhow::anyhow!("nats-server is missing (apt-get install nats-server)"))?;
    println!(
        "hookwasm shared-outbox benchmark: {EVENTS} events per case in batches of {BATCH} from {PRODUCERS} producers, over HTTP"
    );
    println!(
        "{:<28} {:>9} {:>6} {:>12} {:>12}",
        "outbox", "observers", "hosts", "accepted/s", "delivered/s"
    );
    for observers in [1, 4] {
        let dir = tempfile::tempdir()?;
        let (accepted, delivered) = run_case(&chaos, dir.path(), observers, 1, None)?;
        println!(
            "{:<28} {observers:>9} {:>6} {accepted:>12.0} {delivered:>12.0}",
            "sqlite sync=full", 1
        );
        for hosts in 1..=3 {
            let dir = tempfile::tempdir()?;
            let nats = Spawned::nats(nats_bin, dir.path())?;
            let (accepted, delivered) =
                run_case(&chaos, dir.path(), observers, hosts, Some(&nats.url))?;
            println!(
                "{:<28} {observers:>9} {hosts:>6} {accepted:>12.0} {delivered:>12.0}",
                "nats (1 node, R1)"
            );
        }
    }
    Ok(())
}

/// A child process killed on drop.
struct Spawned {
    child: Child,
    url: String,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Spawned {
    fn nats(bin: &str, dir: &Path) -> anyhow::Result<Spawned> {
        let port = free_port()?;
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("nats"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < until, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Spawned {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        })
    }

    /// `hookwasm serve` on a free port; returns it once it listens.
    fn host(config: &Path) -> anyhow::Result<(Spawned, SocketAddr)> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookwasm"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn,hookwasm=info")
            .env("HOOKWASM_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let rest = &line[at + "listening on http://".len()..];
                    let addr: String = rest.chars().take_while(|c| *c != '"').collect();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(120))?.parse()?;
        Ok((
            Spawned {
                child,
                url: String::new(),
            },
            addr,
        ))
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs one case; returns (accepted/s, delivered/s).
fn run_case(
    chaos: &Path,
    dir: &Path,
    observers: usize,
    hosts: usize,
    nats: Option<&str>,
) -> anyhow::Result<(f64, f64)> {
    let handlers: Vec<Value> = (0..observers)
        .map(|i| {
            json!({
                "name": format!("observer-{i}"),
                "module": chaos,
                "config": { "behavior": "ok" },
            })
        })
        .collect();
    let delivery = match nats {
        Some(url) => json!({ "store": "nats", "url": url }),
        None => json!({ "store": "sqlite", "sync": "full" }),
    };
    let config = dir.join("proxy.config.json");
    std::fs::write(
        &config,
        json!({ "eventDelivery": delivery, "eventHandlers": handlers }).to_string(),
    )?;
    let started: Vec<(Spawned, SocketAddr)> = (0..hosts)
        .map(|_| Spawned::host(&config))
        .collect::<anyhow::Result<_>>()?;
    let addrs: Vec<SocketAddr> = started.iter().map(|(_, a)| *a).collect();

    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (next, addrs) = (next.clone(), addrs.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let tag = uuid_like(p);
                loop {
                    let batch = next.fetch_add(1, Ordering::SeqCst);
                    if batch * BATCH >= EVENTS {
                        return Ok(());
                    }
                    let events: Vec<Value> = (0..BATCH)
                        .map(|i| {
                            json!({
                                "specversion": "1.0",
                                "id": format!("{tag}-{batch}-{i}"),
                                "source": "bench",
                                "type": "user.created",
                                "data": { "n": i },
                            })
                        })
                        .collect();
                    let body = Value::Array(events).to_string();
                    let addr = addrs[batch % addrs.len()];
                    loop {
                        match post(addr, &body)? {
                            200 | 202 => break,
                            503 => std::thread::sleep(Duration::from_millis(20)),
                            other => anyhow::bail!("POST answered {other}"),
                        }
                    }
                }
            })
        })
        .collect();
    for producer in producers {
        producer.join().expect("producer")?;
    }
    let accepted = start.elapsed();
    let until = Instant::now() + Duration::from_secs(600);
    while open(addrs[0])? > 0 {
        anyhow::ensure!(Instant::now() < until, "deliveries did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let delivered = start.elapsed();
    drop(started);
    Ok((
        EVENTS as f64 / accepted.as_secs_f64(),
        (EVENTS * observers) as f64 / delivered.as_secs_f64(),
    ))
}

fn uuid_like(p: usize) -> String {
    format!(
        "{p}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

/// Deliveries still open for every observer, from `GET /v1/handlers`.
fn open(addr: SocketAddr) -> anyhow::Result<u64> {
    let (_, body) = request(addr, "GET", "/v1/handlers", "")?;
    let handlers: Value = serde_json::from_str(&body)?;
    Ok(handlers["handlers"]
        .as_array()
        .map(|all| all.iter().filter_map(|h| h["queueDepth"].as_u64()).sum())
        .unwrap_or(0))
}

fn post(addr: SocketAddr, body: &str) -> anyhow::Result<u16> {
    Ok(request(addr, "POST", "/v1/events", body)?.0)
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP answer"))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
