//! Dispatch benchmark: events/s and latency percentiles for a trivial handler (the `chaos` test
//! guest with `behavior: ok`): invoked directly with and without fuel and deadlines (what the
//! limits cost), as one gate and one observer through the library, and through
//! `POST /v1/events` on loopback.
//!
//! Run: `cargo xtask build-guests && cargo bench -p hookwasm --bench dispatch`. It prints a table;
//! it asserts nothing about speed (figures go to BENCHMARKS.md).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookwasm::config::Config;
use hookwasm::dispatch::{self, Backpressure, Dispatcher};
use hookwasm::event::Event;
use hookwasm::sandbox::Sandbox;

const WARMUP: usize = 200;
const SAMPLES: usize = 5_000;
const HTTP_CLIENTS: usize = 4;

fn main() -> anyhow::Result<()> {
    let chaos = workspace().join("tests/guests/chaos.wasm");
    anyhow::ensure!(
        chaos.exists(),
        "{} is missing: run `cargo xtask build-guests` first",
        chaos.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "hookwasm dispatch benchmark: trivial handler, fresh store per event, fuel + deadline on"
    );
    println!(
        "{:<34} {:>12} {:>10} {:>10} {:>10}",
        "case", "events/s", "p50 µs", "p99 µs", "max µs"
    );

    for metering in [true, false] {
        let latencies = runtime.block_on(direct(&chaos, metering))?;
        let name = if metering {
            "sandbox, fuel + deadline"
        } else {
            "sandbox, no fuel, no deadline"
        };
        row(name, SAMPLES, latencies.iter().sum(), latencies);
    }

    let gate = runtime.block_on(dispatcher(&chaos, "gate"))?;
    let latencies = runtime.block_on(async {
        let mut latencies = Vec::with_capacity(SAMPLES);
        for i in 0..WARMUP + SAMPLES {
            let event = event(i);
            let started = Instant::now();
            gate.submit(&[event], Backpressure::Wait)
                .await
                .map_err(anyhow::Error::msg)?;
            if i >= WARMUP {
                latencies.push(started.elapsed());
            }
        }
        anyhow::Ok(latencies)
    })?;
    row(
        "gate, library, sequential",
        SAMPLES,
        latencies.iter().sum(),
        latencies,
    );

    let observer = Arc::new(runtime.block_on(dispatcher(&chaos, "observe"))?);
    let elapsed = runtime.block_on(async {
        let events: Vec<Event> = (0..SAMPLES).map(event).collect();
        let started = Instant::now();
        for chunk in events.chunks(64) {
            observer
                .submit(chunk, Backpressure::Wait)
                .await
                .map_err(anyhow::Error::msg)?;
        }
        while invoked(&observer) < SAMPLES as u64 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        anyhow::Ok(started.elapsed())
    })?;
    row("observer, library, queued", SAMPLES, elapsed, Vec::new());

    for mode in ["gate", "observe"] {
        let dispatcher = Arc::new(runtime.block_on(dispatcher(&chaos, mode))?);
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let address = listener.local_addr()?;
        let app = hookwasm::server::router(dispatcher.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        let started = Instant::now();
        let per_client = SAMPLES / HTTP_CLIENTS;
        let clients: Vec<_> = (0..HTTP_CLIENTS)
            .map(|c| {
                std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                    let mut connection = HttpClient::connect(address)?;
                    let mut latencies = Vec::with_capacity(per_client);
                    for i in 0..per_client {
                        let body = event(c * per_client + i).json().to_string();
                        let sent = Instant::now();
                        let status = connection.post("/v1/events", &body)?;
                        anyhow::ensure!(status == 200 || status == 202, "HTTP {status}");
                        latencies.push(sent.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for client in clients {
            latencies.extend(
                client
                    .join()
                    .map_err(|_| anyhow::anyhow!("client thread panicked"))??,
            );
        }
        if mode == "observe" {
            while invoked(&dispatcher) < (per_client * HTTP_CLIENTS) as u64 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let name = format!("{mode}, HTTP, {HTTP_CLIENTS} clients");
        row(
            &name,
            per_client * HTTP_CLIENTS,
            started.elapsed(),
            latencies,
        );
    }
    Ok(())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn dispatcher(chaos: &Path, mode: &str) -> anyhow::Result<Dispatcher> {
    let text = serde_json::json!({ "eventHandlers": [{
        "name": "trivial", "module": chaos, "mode": mode,
        "config": { "behavior": "ok" }, "queueCapacity": 10_000
    }]})
    .to_string();
    let config = Config::parse(&text, &workspace().join("bench.config.json"))?;
    let (loaded, errors) = dispatch::load_handlers(&Sandbox::new()?, &config).await;
    anyhow::ensure!(
        errors.is_empty(),
        "cannot load the benchmark handler: {errors:?}"
    );
    let outbox = Arc::new(hookwasm::outbox::sqlite::SqliteStore::in_memory()?);
    let dispatcher = Dispatcher::start(loaded, outbox).await;
    dispatcher.start_delivering();
    Ok(dispatcher)
}

/// One handler invoked directly, one event at a time: the cost of a fresh, limited sandbox.
async fn direct(chaos: &Path, metering: bool) -> anyhow::Result<Vec<Duration>> {
    let spec = hookwasm::config::HandlerSpec::for_module(
        chaos,
        serde_json::json!({ "behavior": "ok" }),
        hookwasm::config::Limits::default(),
        hookwasm::config::Capabilities::default(),
    );
    let handler = Sandbox::with_metering(metering)?.load(&spec)?;
    let mut latencies = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let event = event(i);
        let started = Instant::now();
        let invocation = handler.on_event(&event).await;
        anyhow::ensure!(
            invocation.status == hookwasm::sandbox::Status::Ok,
            "{:?}",
            invocation.error
        );
        if i >= WARMUP {
            latencies.push(started.elapsed());
        }
    }
    Ok(latencies)
}

fn invoked(dispatcher: &Dispatcher) -> u64 {
    dispatcher
        .slots()
        .iter()
        .map(|s| s.stats.counts().invocations.values().sum::<u64>())
        .sum()
}

fn event(i: usize) -> Event {
    let json = serde_json::json!({
        "specversion": "1.0", "id": format!("bench-{i}"), "source": "bench", "type": "git.branch.updated",
        "data": {
            "pushId": "p1", "ref": "refs/heads/main", "before": "a1", "after": "b2",
            "repository": { "url": "https://git.example/acme/widgets.git", "project": "acme", "name": "widgets" },
            "pusher": { "username": "ada", "email": "ada@example.com" }
        }
    });
    Event::from_json(json).expect("the benchmark event is valid")
}

fn row(name: &str, events: usize, elapsed: Duration, mut latencies: Vec<Duration>) {
    let rate = events as f64 / elapsed.as_secs_f64();
    latencies.sort();
    let at = |q: f64| -> String {
        if latencies.is_empty() {
            return "-".into();
        }
        let index = ((latencies.len() - 1) as f64 * q).round() as usize;
        format!("{:.1}", latencies[index].as_secs_f64() * 1e6)
    };
    println!(
        "{name:<34} {rate:>12.0} {:>10} {:>10} {:>10}",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

/// A minimal HTTP/1.1 keep-alive client: enough to post JSON to our own server on loopback
/// without pulling a client stack into the measurement.
struct HttpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
}

impl HttpClient {
    fn connect(address: std::net::SocketAddr) -> anyhow::Result<HttpClient> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        Ok(HttpClient {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            host: address.to_string(),
        })
    }

    fn post(&mut self, path: &str, body: &str) -> anyhow::Result<u16> {
        write!(
            self.writer,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        )?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("bad status line {line:?}"))?;
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(status)
    }
}
