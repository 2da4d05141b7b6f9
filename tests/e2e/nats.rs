//! The JetStream outbox (`"eventDelivery": {"store": "nats"}`), against real `nats-server`
//! processes this module starts on free loopback ports, each with its own store folder, and
//! kills when the test ends: several `hookwasm serve` processes share one queue and survive one
//! of them being killed; a three-node cluster with R3 streams survives one node and refuses
//! (503) while all are down; dead letters go through NATS; a bad `eventDelivery` is one line.
//!
//! `nats-server` comes from Debian (`cargo xtask test` installs it when missing); set
//! `NATS_SERVER` to use another binary.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::receiver::{Latch, Receiver, Reply};
use crate::support::Hookwasm;
use crate::support::{Host, Workdir, custom, hookwasm, http, webhook_module};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

// ---------------------------------------------------------------------------------------------
// nats-server processes
// ---------------------------------------------------------------------------------------------

/// The `nats-server` binary: `$NATS_SERVER`, else on PATH or in Debian's /usr/sbin.
fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(bin);
    }
    for candidate in [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ] {
        if Command::new(candidate).arg("--version").output().is_ok() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "nats-server is not installed: `cargo xtask test` installs it (apt-get install nats-server), or set NATS_SERVER"
    );
}

/// `n` distinct free loopback ports (held together while chosen, so none repeats).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect()
}

/// One `nats-server` process, killed on drop; [`Nats::stop`] and [`Nats::start`] restart it
/// with the same ports and store.
struct Nats {
    child: Option<Child>,
    port: u16,
    monitor: u16,
    args: Vec<String>,
}

impl Nats {
    /// A lone server with JetStream (unless `jetstream` is false) storing under `dir`.
    fn single(dir: &Path, jetstream: bool, extra: &[&str]) -> Nats {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if jetstream {
            args.extend([
                "-js".into(),
                "-sd".into(),
                dir.join("nats").display().to_string(),
            ]);
        }
        Nats::launch(args)
    }

    fn launch(mut args: Vec<String>) -> Nats {
        let ports = free_ports(2);
        let (port, monitor) = (ports[0], ports[1]);
        args.extend([
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            monitor.to_string(),
        ]);
        let mut nats = Nats {
            child: None,
            port,
            monitor,
            args,
        };
        nats.start();
        nats
    }

    /// Starts the process (again) and waits until it is ready.
    fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(nats_server_bin())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start nats-server");
        self.child = Some(child);
        self.wait_healthy(Duration::from_secs(30));
    }

    /// Waits until `/healthz` says ok (JetStream included, where it is on).
    fn wait_healthy(&self, deadline: Duration) {
        let until = Instant::now() + deadline;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.monitor));
        loop {
            if TcpStream::connect(addr).is_ok() && http(addr, "GET", "/healthz", None).status == 200
            {
                return;
            }
            assert!(
                Instant::now() < until,
                "nats-server {:?} is not healthy",
                self.args
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the process (SIGKILL: no goodbye to its peers).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three servers routed into one JetStream cluster, each with its own store.
fn cluster(dir: &Path) -> Vec<Nats> {
    let ports = free_ports(9);
    let routes: Vec<u16> = ports[..3].to_vec();
    let all = routes
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let args = vec![
            "-js".to_owned(),
            "-sd".to_owned(),
            dir.join(format!("node{i}")).display().to_string(),
            "-n".to_owned(),
            format!("node{i}"),
            "--cluster_name".to_owned(),
            "hookwasm-test".to_owned(),
            "--cluster".to_owned(),
            format!("nats://127.0.0.1:{route}"),
            "--routes".to_owned(),
            all.clone(),
        ];
        // A node's /healthz waits for JetStream's quorum: launch them all, then wait.
        let (port, monitor) = (ports[3 + 2 * i], ports[4 + 2 * i]);
        let mut args = args;
        args.extend([
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            monitor.to_string(),
        ]);
        let child = Command::new(nats_server_bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start nats-server");
        nodes.push(Nats {
            child: Some(child),
            port,
            monitor,
            args,
        });
    }
    for node in &nodes {
        node.wait_healthy(Duration::from_secs(60));
    }
    nodes
}

// ---------------------------------------------------------------------------------------------
// Configs, producers, receivers
// ---------------------------------------------------------------------------------------------

/// `proxy.config.json` with the webhook plugin as observer `recorder`, posting to `url`, and
/// the outbox on NATS at `nats_url` (plus `delivery`'s extra fields).
fn config(
    work: &Workdir,
    file: &str,
    url: &str,
    origin: &str,
    nats_url: &str,
    delivery: Value,
) -> PathBuf {
    let mut event_delivery = json!({ "store": "nats", "url": nats_url, "ackWaitMs": 2000 });
    if let (Some(target), Value::Object(extra)) = (event_delivery.as_object_mut(), delivery) {
        target.extend(extra);
    }
    let config = json!({
        "eventDelivery": event_delivery,
        "eventHandlers": [{
            "name": "recorder",
            "module": webhook_module(),
            "config": { "url": url, "secret": SECRET },
            "capabilities": { "allowedHosts": [origin] },
            "limits": { "timeoutMs": 10_000 },
            "retry": { "maxAttempts": 2, "backoffMs": 50, "maxBackoffMs": 100 },
            "quarantine": { "afterFailures": 1_000 },
        }],
    });
    work.write(file, serde_json::to_string_pretty(&config).expect("JSON"))
}

/// `POST /v1/events` that reports a refused or broken connection instead of panicking: a
/// producer's view of a host that may be dead. Returns the status and `Retry-After`.
fn try_post(addr: SocketAddr, body: &str) -> Option<(u16, Option<String>)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let request = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let head = String::from_utf8_lossy(&raw);
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let retry_after = head
        .split("\r\n")
        .find_map(|l| {
            l.strip_prefix("retry-after: ")
                .or(l.strip_prefix("Retry-After: "))
        })
        .map(str::to_owned);
    Some((status, retry_after))
}

fn event_id(n: usize) -> String {
    format!("ev-{n:05}")
}

fn batch_body(from: usize, to: usize) -> String {
    Value::Array((from..to).map(|n| custom(&event_id(n))).collect()).to_string()
}

/// The event ids the receiver got, in arrival order, and the order check: each id seen for the
/// first time must be the next one (`ev-00000`, `ev-00001`, …).
fn first_arrivals_in_order(ids: &[String]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for id in ids {
        if seen.insert(id.clone()) {
            let expected = event_id(seen.len() - 1);
            if *id != expected {
                return Err(format!("{id} arrived for the first time before {expected}"));
            }
        }
    }
    Ok(())
}

fn received_ids(receiver: &Receiver) -> Vec<String> {
    receiver
        .requests()
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Events of the three-host test, and the one whose delivery is held while its host is killed.
const EVENTS: usize = 10_000;
const BATCH: usize = 50;
const HELD: usize = 1_500;

#[test]
fn nats_three_hosts_share_the_work_and_a_killed_host_loses_nothing() {
    // Three `serve` processes on one JetStream, one recording observer (the webhook plugin,
    // posting to this test's receiver at /h0, /h1 or /h2 by host). 10,000 events posted in
    // batches round-robin. The receiver holds the delivery of ev-01500 and the host making it
    // is killed with SIGKILL; another host must make it within 5 s, and every accepted event
    // must arrive, first arrivals in accepted order.
    let work = Workdir::new();
    let nats = Nats::single(work.path(), true, &[]);
    let latch = Latch::new();
    let receiver = {
        let latch = latch.clone();
        let held_once = AtomicBool::new(false);
        Receiver::start(move |request| {
            if request.header("webhook-id") == Some(event_id(HELD).as_str())
                && !held_once.swap(true, Ordering::SeqCst)
            {
                latch.wait();
                return Reply::status(500, "the host was killed meanwhile");
            }
            Reply::status(200, "ok")
        })
    };
    let hosts: Vec<Host> = (0..3)
        .map(|i| {
            let file = format!("h{i}.config.json");
            let url = receiver.url(&format!("/h{i}"));
            Hookwasm::new().shared_cache().serve(&config(
                &work,
                &file,
                &url,
                &receiver.origin(),
                &nats.url(),
                json!({}),
            ))
        })
        .collect();
    let addrs: Vec<SocketAddr> = hosts.iter().map(Host::addr).collect();
    let backend = http(addrs[0], "GET", "/v1/handlers", None).json()["backend"].clone();
    assert_eq!(backend["store"], "nats", "{backend}");
    assert!(
        backend["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{backend}"
    );

    // The producer: batches round-robin over the live hosts; a batch a dead host did not
    // answer is posted again to the next one (a producer's retry: stored once).
    let live: Arc<Mutex<Vec<bool>>> = Arc::new(Mutex::new(vec![true; 3]));
    let retried = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let producer = {
        let (live, retried) = (live.clone(), retried.clone());
        std::thread::spawn(move || {
            let mut next = 0;
            for from in (0..EVENTS).step_by(BATCH) {
                // Paced (about 500 events/s, slower than delivery's pace), so ingest is still
                // going on when a host is killed.
                std::thread::sleep(Duration::from_millis(100));
                let body = batch_body(from, from + BATCH);
                loop {
                    next = (next + 1) % 3;
                    if !live.lock().expect("not poisoned")[next] {
                        continue;
                    }
                    match try_post(addrs[next], &body) {
                        Some((200 | 202, _)) => break,
                        _ => {
                            retried.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            }
            started.elapsed()
        })
    };

    let held_path = receiver
        .wait_until_within(
            Duration::from_secs(300),
            "the held event arrives",
            |requests| {
                requests
                    .iter()
                    .any(|r| r.header("webhook-id") == Some(event_id(HELD).as_str()))
            },
        )
        .iter()
        .find(|r| r.header("webhook-id") == Some(event_id(HELD).as_str()))
        .map(|r| r.path.clone())
        .expect("seen");
    let victim: usize = held_path.trim_start_matches("/h").parse().expect("/hN");
    let before_kill = receiver.requests().len();
    live.lock().expect("not poisoned")[victim] = false;
    let mut hosts: Vec<Option<Host>> = hosts.into_iter().map(Some).collect();
    let killed_at = Instant::now();
    hosts[victim].take().expect("running").kill();
    latch.open();
    let after =
        receiver.wait_until_within(Duration::from_secs(30), "another host takes over", |r| {
            r.len() > before_kill
        });
    let takeover = after[before_kill].arrived.duration_since(killed_at);

    let ingest = producer.join().expect("the producer finishes");
    // With deliveries behind ingest, any host's metrics show the shared queue's lag and age.
    let survivor = hosts.iter().flatten().next().expect("a host is running");
    let metrics = survivor.metrics();
    let lag = metrics.expect("hookwasm_observer_consumer_lag{handler=\"recorder\"}");
    let age = metrics.value("hookwasm_observer_oldest_pending_age_seconds{handler=\"recorder\"}");
    println!("nats three hosts: at the end of ingest, consumer lag {lag}, oldest open {age:?} s");
    let all = receiver.wait_until_within(
        Duration::from_secs(900),
        "every accepted event has arrived",
        |requests| {
            requests
                .iter()
                .filter_map(|r| r.header("webhook-id"))
                .collect::<BTreeSet<_>>()
                .len()
                >= EVENTS
        },
    );
    let delivered = started.elapsed();
    let ids = received_ids(&receiver);
    let unique: BTreeSet<&String> = ids.iter().collect();
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for id in &ids {
        *counts.entry(id).or_default() += 1;
    }
    let duplicates = ids.len() - unique.len();
    let by_host: Vec<usize> = (0..3)
        .map(|i| all.iter().filter(|r| r.path == format!("/h{i}")).count())
        .collect();
    println!(
        "nats three hosts: {EVENTS} events, ingest {ingest:.1?}, all delivered after {delivered:.1?}; \
         host h{victim} killed holding {}: takeover {takeover:.2?}; deliveries by host {by_host:?}; \
         {duplicates} duplicates ({:?}); {} batches re-posted",
        event_id(HELD),
        counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, n)| format!("{id}×{n}"))
            .collect::<Vec<_>>(),
        retried.load(Ordering::SeqCst),
    );
    assert_eq!(unique.len(), EVENTS, "0 accepted events lost");
    assert!(
        unique.iter().all(|id| id.starts_with("ev-")),
        "only the posted events arrive"
    );
    if let Err(e) = first_arrivals_in_order(&ids) {
        panic!("per-observer order broken: {e}");
    }
    assert!(
        takeover < Duration::from_secs(5),
        "the killed host's delivery was taken over after {takeover:?}"
    );
    assert!(
        by_host.iter().filter(|n| **n > 0).count() >= 2,
        "the hosts share the work: {by_host:?}"
    );
    drop(hosts);
}

#[test]
fn nats_cluster_r3_keeps_going_without_a_node_and_refuses_while_all_are_down() {
    // Three NATS nodes, streams with three replicas. Stopping one node under load: ingest and
    // delivery go on. Stopping all three: producers get 503 with Retry-After, and nothing is
    // acknowledged that is not stored. Restarted: delivery resumes and everything accepted
    // arrives.
    let work = Workdir::new();
    let mut nodes = cluster(work.path());
    let urls = nodes.iter().map(Nats::url).collect::<Vec<_>>().join(",");
    let receiver = Receiver::answering(200);
    let file = config(
        &work,
        "proxy.config.json",
        &receiver.url("/r"),
        &receiver.origin(),
        &urls,
        json!({}),
    );
    let host = Hookwasm::new().shared_cache().serve(&file);
    let replicas = host
        .log()
        .0
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["fields"]["message"] == "outbox on NATS JetStream")
        .map(|line| line["fields"]["replicas"].clone());
    assert_eq!(replicas, Some(json!(3)), "R3 on a three-node cluster");

    let accepted: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let post = |from: usize, to: usize| -> Option<(u16, Option<String>)> {
        let answer = try_post(host.addr(), &batch_body(from, to));
        if let Some((200 | 202, _)) = answer {
            accepted
                .lock()
                .expect("not poisoned")
                .extend((from..to).map(event_id));
        }
        answer
    };
    // Load, with node 0 stopped a third of the way in: every batch is accepted, at worst after
    // a few 503s while JetStream elects new leaders.
    let started = Instant::now();
    for (n, from) in (0..600).step_by(20).enumerate() {
        if n == 10 {
            nodes[0].stop();
        }
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            match post(from, from + 20) {
                Some((200 | 202, _)) => break,
                other => {
                    assert!(
                        Instant::now() < until,
                        "ingest stopped with one node down: {other:?}"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
    receiver.wait_until_within(
        Duration::from_secs(120),
        "600 events arrive with a node down",
        |r| {
            r.iter()
                .filter_map(|r| r.header("webhook-id"))
                .collect::<BTreeSet<_>>()
                .len()
                >= 600
        },
    );
    println!(
        "nats cluster: 600 events through with node0 killed after 200, in {:.1?}",
        started.elapsed()
    );

    // All down: refused with Retry-After; no 2xx.
    nodes[1].stop();
    nodes[2].stop();
    let mut refused = 0;
    for from in (600..700).step_by(20) {
        match post(from, from + 20) {
            Some((503, retry_after)) => {
                assert!(retry_after.is_some(), "503 carries Retry-After");
                refused += 1;
            }
            other => panic!("with every NATS node down the answer is 503, not {other:?}"),
        }
    }
    assert_eq!(refused, 5);

    // Back: the refused batches are posted again and everything accepted arrives.
    for node in &mut nodes {
        node.child = None;
    }
    let restarted = Instant::now();
    for node in &mut nodes {
        let child = Command::new(nats_server_bin())
            .args(&node.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot restart nats-server");
        node.child = Some(child);
    }
    for node in &nodes {
        node.wait_healthy(Duration::from_secs(60));
    }
    for from in (600..700).step_by(20) {
        let until = Instant::now() + Duration::from_secs(60);
        while !matches!(post(from, from + 20), Some((200 | 202, _))) {
            assert!(
                Instant::now() < until,
                "ingest did not resume after the cluster came back"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let accepted = accepted.lock().expect("not poisoned").clone();
    assert_eq!(accepted.len(), 700);
    receiver.wait_until_within(
        Duration::from_secs(120),
        "every accepted event arrives",
        |r| {
            let got: BTreeSet<&str> = r.iter().filter_map(|r| r.header("webhook-id")).collect();
            accepted.iter().all(|id| got.contains(id.as_str()))
        },
    );
    println!(
        "nats cluster: all 700 accepted events delivered {:.1?} after the restart",
        restarted.elapsed()
    );
    let ids = received_ids(&receiver);
    if let Err(e) = first_arrivals_in_order(&ids) {
        panic!("order broken: {e}");
    }
}

#[test]
fn nats_dead_letters_are_listed_retried_and_discarded_through_jetstream() {
    // A receiver that is down: two attempts each, then three dead letters in the NATS bucket,
    // listed by the CLI and over HTTP from another host sharing the server; retried by the CLI
    // and over HTTP once the receiver is back; one discarded.
    let work = Workdir::new();
    let nats = Nats::single(work.path(), true, &[]);
    let failing = Arc::new(AtomicBool::new(true));
    let receiver = {
        let failing = failing.clone();
        Receiver::start(move |_| {
            if failing.load(Ordering::SeqCst) {
                Reply::status(500, "receiver down")
            } else {
                Reply::status(200, "ok")
            }
        })
    };
    let file = config(
        &work,
        "proxy.config.json",
        &receiver.url("/r"),
        &receiver.origin(),
        &nats.url(),
        json!({}),
    );
    let file_arg = file.to_string_lossy().into_owned();
    let host = Hookwasm::new().shared_cache().serve(&file);
    for id in ["dead-1", "dead-2", "dead-3"] {
        assert_eq!(host.post_events(&custom(id)).status, 202);
    }
    let letters = || {
        let listed = hookwasm(&["dead-letters", "list", "--config", &file_arg, "--json"]);
        listed.assert_code(0);
        listed.reports()
    };
    host.wait_until("three dead letters in NATS", || letters().len() == 3);
    // One delivery of an observer at a time across the cluster: a delivery waiting for its
    // retry holds the ones behind it.
    let attempts = received_ids(&receiver);
    assert_eq!(
        attempts,
        ["dead-1", "dead-1", "dead-2", "dead-2", "dead-3", "dead-3"],
        "strict order, retries included"
    );
    let listed = letters();
    let ids: Vec<&str> = listed
        .iter()
        .filter_map(|l| l["eventId"].as_str())
        .collect();
    assert_eq!(ids, ["dead-1", "dead-2", "dead-3"]);
    for letter in &listed {
        assert_eq!(letter["attempts"], 2, "{letter}");
        assert!(
            letter["cause"].as_str().unwrap_or_default().contains("500"),
            "{letter}"
        );
    }
    // A second host sees the same dead letters: they live in NATS, not in a process.
    let other = Hookwasm::new().shared_cache().serve(&file);
    // A producer's retry to another host is a duplicate: stored and delivered once.
    let again = other.post_events(&custom("dead-1"));
    assert_eq!(again.json()["duplicate"], true, "{again}");
    let over_http = other.get("/v1/dead-letters?handler=recorder");
    assert_eq!(
        over_http.json()["deadLetters"].as_array().map(Vec::len),
        Some(3),
        "{over_http}"
    );
    assert_eq!(
        other
            .metrics()
            .expect("hookwasm_observer_dead_letters{handler=\"recorder\"}"),
        3.0
    );
    let metrics = other.metrics();
    assert!(
        metrics.0.contains("hookwasm_backend_info{store=\"nats\""),
        "{}",
        metrics.0
    );
    assert!(
        metrics
            .0
            .contains("hookwasm_observer_consumer_lag{handler=\"recorder\"} 0"),
        "{}",
        metrics.0
    );

    failing.store(false, Ordering::SeqCst);
    let retried = hookwasm(&[
        "dead-letters",
        "retry",
        "--config",
        &file_arg,
        "--event",
        "dead-1",
    ]);
    retried.assert_code(0);
    assert!(retried.stdout.starts_with("1 "), "{retried}");
    let id_of = |event: &str| {
        listed
            .iter()
            .find(|l| l["eventId"] == event)
            .and_then(|l| l["id"].as_i64())
            .expect("listed")
    };
    let over_http = other.post(&format!("/v1/dead-letters/{}/retry", id_of("dead-2")), "");
    assert_eq!(over_http.status, 200, "{over_http}");
    receiver.wait_until("dead-1 and dead-2 are delivered", |requests| {
        ["dead-1", "dead-2"].iter().all(|id| {
            requests
                .iter()
                .any(|r| r.header("webhook-id") == Some(id) && r.answered.map(|a| a.0) == Some(200))
        })
    });
    let discarded = hookwasm(&[
        "dead-letters",
        "discard",
        "--config",
        &file_arg,
        "--id",
        &id_of("dead-3").to_string(),
    ]);
    discarded.assert_code(0);
    assert!(letters().is_empty(), "nothing is dead any more");
    // The history in NATS has every attempt's outcome.
    let history = host.get("/v1/events/dead-1");
    assert_eq!(history.status, 200, "{history}");
    let outcomes = history.json()["outcomes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let statuses: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| o["status"].as_str())
        .collect();
    assert_eq!(statuses, ["error", "error", "ok"], "{history}");
    let table = hookwasm(&["deliveries", "--config", &file_arg]);
    table.assert_code(0);
    assert!(table.stdout.contains("recorder"), "{table}");
}

#[test]
fn nats_a_bad_event_delivery_is_one_clear_line_before_anything_is_accepted() {
    // Nothing listening, a server without JetStream, and wrong credentials: `check` and `serve`
    // each fail with one line naming the problem, and `serve` never listens.
    let work = Workdir::new();
    let plain = Nats::single(work.path(), false, &[]);
    let guarded = Nats::single(
        &work.path().join("guarded"),
        true,
        &["--user", "hookwasm", "--pass", "right-one"],
    );
    let closed = format!("nats://127.0.0.1:{}", crate::receiver::closed_port());
    let cases = [
        (closed.clone(), json!({}), "cannot connect"),
        (plain.url(), json!({}), "JetStream is disabled"),
        (
            guarded.url(),
            json!({ "user": "hookwasm", "password": "wrong-one" }),
            "refused hookwasm's credentials",
        ),
    ];
    for (url, extra, expected) in cases {
        let file = config(
            &work,
            "proxy.config.json",
            "http://127.0.0.1:9/r",
            "http://127.0.0.1:9",
            &url,
            extra,
        );
        let file_arg = file.to_string_lossy().into_owned();
        for command in [
            vec!["check", "--config", &file_arg],
            vec!["serve", "--config", &file_arg, "--listen", "127.0.0.1:0"],
        ] {
            let run = hookwasm(&command);
            assert_ne!(run.code, Some(0), "{command:?} on {url}: {run}");
            // One `error:` line; the client's own log lines (JSON) may follow it.
            let errors: Vec<&str> = run
                .stderr
                .lines()
                .filter(|l| l.starts_with("error:"))
                .collect();
            assert_eq!(errors.len(), 1, "one error line: {run}");
            let error = errors[0];
            assert!(error.contains(expected), "{command:?} on {url}: {error}");
            assert!(
                !error.contains("wrong-one"),
                "the password stays out: {error}"
            );
            assert!(!run.stderr.contains("listening on"), "{run}");
        }
    }
    // And the right credentials work.
    let file = config(
        &work,
        "proxy.config.json",
        "http://127.0.0.1:9/r",
        "http://127.0.0.1:9",
        &guarded.url(),
        json!({ "user": "hookwasm", "password": "right-one" }),
    );
    let run = hookwasm(&["check", "--config", &file.to_string_lossy()]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("eventDelivery: NATS JetStream at"),
        "{run}"
    );
}

#[test]
fn nats_a_slow_delivery_keeps_its_lease_while_the_handler_runs() {
    // `ackWaitMs` 1 s, a receiver that takes 4 s to answer, and a second host waiting for work:
    // the holding host's progress acks keep the delivery, so it is made once, not handed over.
    let work = Workdir::new();
    let nats = Nats::single(work.path(), true, &[]);
    let receiver = Receiver::start(|_| {
        std::thread::sleep(Duration::from_secs(4));
        Reply::status(200, "ok")
    });
    let file = config(
        &work,
        "proxy.config.json",
        &receiver.url("/r"),
        &receiver.origin(),
        &nats.url(),
        json!({ "ackWaitMs": 1000 }),
    );
    let first = Hookwasm::new().shared_cache().serve(&file);
    let second = Hookwasm::new().shared_cache().serve(&file);
    assert_eq!(first.post_events(&custom("slow-1")).status, 202);
    receiver.wait_for_answered(1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        received_ids(&receiver),
        ["slow-1"],
        "made once: the lease was kept for 4 s with ackWaitMs 1000"
    );
    drop(second);
}

#[test]
fn nats_a_retry_of_a_partly_stored_request_completes_it_without_a_second_delivery() {
    // A host that died between publishing an event's delivery and its record leaves the
    // delivery behind (published here by hand, with the message id hookwasm gives it). The
    // producer's retry stores the record; JetStream drops the repeated delivery by its id, so
    // the observer gets the event once, and the answer is not a duplicate (the event was never
    // acknowledged).
    let work = Workdir::new();
    let nats = Nats::single(work.path(), true, &[]);
    let receiver = Receiver::answering(200);
    let file = config(
        &work,
        "proxy.config.json",
        &receiver.url("/r"),
        &receiver.origin(),
        &nats.url(),
        json!({}),
    );
    let host = Hookwasm::new().shared_cache().serve(&file);
    let event = custom("half-1");
    let source = event["source"].as_str().expect("source").to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(nats.url()).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let key = hookwasm::outbox::nats::event_key(&source, "half-1");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{key}.recorder").as_str());
        headers.insert("Hookwasm-Event-Id", "half-1");
        headers.insert("Hookwasm-Key", key.as_str());
        js.publish_with_headers(
            "hookwasm.deliveries.recorder",
            headers,
            event.to_string().into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    });
    let answer = host.post_events(&event);
    assert_eq!(answer.status, 202, "{answer}");
    assert_ne!(answer.json()["duplicate"], true, "{answer}");
    assert_eq!(answer.json()["observersQueued"], 1, "{answer}");
    receiver.wait_for_answered(1);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(received_ids(&receiver), ["half-1"], "delivered once");
    let again = host.post_events(&event);
    assert_eq!(again.json()["duplicate"], true, "now it is stored: {again}");
}
