//! Hot reload (`serve --watch`, SIGHUP) and the compile cache: modules and the config change
//! while events flow, and nothing is lost, duplicated, reordered or run by a broken version.
//!
//! The reload tests read the host's JSON log at debug level, where every invocation is a
//! `handled` line naming the handler, the version that ran (the first 12 hex digits of the
//! module's digest), the event and the status. A client thread posts events with increasing ids
//! the whole time, so every swap happens with events in flight and queued.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    Guest, Hookwasm, Host, LOG_HANDLED, Log, LogLine, POLL_DEADLINE, Workdir, custom, http,
    ref_update, sha256_hex, shared_cache_dir, with_custom_section, write_by_rename, write_in_place,
};

// ---------------------------------------------------------------------------------------------
// Plumbing
// ---------------------------------------------------------------------------------------------

/// How long a reload that compiles a module may take: seconds in a debug build, and the tests
/// run in parallel on small machines. (Modules seen before come from the shared compile cache.)
const COMPILE_DEADLINE: Duration = Duration::from_secs(120);

/// `hookwasm serve` (with `extra` arguments) logging every invocation, compiling into the cache
/// shared by the e2e tests.
fn serve(config: &Path, extra: &[&str]) -> Host {
    let cache = shared_cache_dir();
    let cache = cache.to_string_lossy();
    Hookwasm::new()
        .args(extra)
        .envs(&[("RUST_LOG", LOG_HANDLED), ("HOOKWASM_CACHE_DIR", &cache)])
        .serve(config)
}

/// `hookwasm serve --watch`, as [`serve`], once its watcher is live.
fn serve_watch(config: &Path) -> Host {
    let host = serve(config, &["--watch"]);
    wait_watching(&host, config);
    host
}

/// Waits until the host's watcher sees changes: the host says "watching" before its watcher
/// has registered the folders, and a change made in between would go unseen. Writes the config
/// again, unchanged, until a reload follows.
fn wait_watching(host: &Host, config: &Path) {
    let text = read(config);
    let start = Instant::now();
    loop {
        write_in_place(config, &text);
        let probe = Instant::now();
        while probe.elapsed() < Duration::from_secs(1) {
            if !host.log().with_message("reload done").is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            start.elapsed() < POLL_DEADLINE,
            "the watcher never reloaded after {POLL_DEADLINE:?} of writes to {}\n{}",
            config.display(),
            host.log()
        );
    }
}

/// A `proxy.config.json` text with these `eventHandlers`.
fn config_text(handlers: &[Value]) -> String {
    serde_json::to_string_pretty(&json!({
        "proxyUrl": "https://github.com",
        "eventHandlers": handlers,
    }))
    .expect("JSON values serialise")
}

/// The test's `modules/` folder (created), next to its config.
fn modules(work: &Workdir) -> PathBuf {
    let dir = work.path().join("modules");
    std::fs::create_dir_all(&dir).expect("cannot create modules/");
    dir
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// How the host names a version in its log: the first 12 hex digits of the digest.
fn short(digest: &str) -> String {
    digest[..12].to_owned()
}

/// The id of the stream's `n`th event.
fn event_id(n: usize) -> String {
    format!("ev-{n:06}")
}

/// The number in an id made by [`event_id`].
fn event_number(id: &str) -> usize {
    id.strip_prefix("ev-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a stream event id: {id}"))
}

/// The stream's `n`th event: a custom `user.created`, a `git.branch.updated` or a
/// `git.tag.created`, so filters have something to choose from.
fn stream_event(n: usize) -> Value {
    let id = event_id(n);
    match n % 4 {
        1 => ref_update(&id, "git.branch.updated", "refs/heads/main"),
        3 => ref_update(&id, "git.tag.created", "refs/tags/v1"),
        _ => custom(&id),
    }
}

fn is_user(n: usize) -> bool {
    n.is_multiple_of(2)
}

fn is_branch(n: usize) -> bool {
    n % 4 == 1
}

fn is_tag(n: usize) -> bool {
    n % 4 == 3
}

/// One event the stream posted and how the host answered.
#[derive(Debug, Clone)]
struct Posted {
    n: usize,
    status: u16,
    body: String,
}

impl Posted {
    fn accepted(&self) -> bool {
        matches!(self.status, 200 | 202)
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("answer to {} is not JSON ({e}): {}", self.n, self.body))
    }
}

/// A client thread posting [`stream_event`]s one at a time, with increasing ids, until stopped.
struct Stream {
    stop: Arc<AtomicBool>,
    posted: Arc<Mutex<Vec<Posted>>>,
    thread: Option<JoinHandle<()>>,
}

impl Stream {
    /// Pause between two posts: a steady stream, not a flood that only measures 503s.
    const PACE: Duration = Duration::from_millis(10);

    fn start(host: &Host) -> Stream {
        let addr = host.addr();
        let stop = Arc::new(AtomicBool::new(false));
        let posted = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, posted) = (stop.clone(), posted.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = stream_event(n).to_string();
                    let response = http(addr, "POST", "/v1/events", Some(&body));
                    posted
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Posted {
                            n,
                            status: response.status,
                            body: response.body,
                        });
                    n += 1;
                    std::thread::sleep(Stream::PACE);
                }
            })
        };
        Stream {
            stop,
            posted,
            thread: Some(thread),
        }
    }

    /// How many events have been posted (and answered) so far.
    fn count(&self) -> usize {
        self.posted.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The number of the first event certain to be posted after this call: the post numbered
    /// [`Stream::count`] may already be on its way.
    fn posted_from_now(&self) -> usize {
        self.count() + 1
    }

    /// Stops posting; returns every post, in order. Every answer must be an acceptance or a
    /// 503 (a full queue refuses the whole event, which then does not count as accepted).
    fn stop(mut self) -> Vec<Posted> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && let Err(panic) = thread.join()
        {
            std::panic::resume_unwind(panic);
        }
        let posted = std::mem::take(&mut *self.posted.lock().unwrap_or_else(|p| p.into_inner()));
        for post in &posted {
            assert!(
                post.accepted() || post.status == 503,
                "event {} was answered {}: {}",
                post.n,
                post.status,
                post.body
            );
        }
        posted
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One `handled` line: an invocation that ended `ok` (or `quarantined`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Handled {
    handler: String,
    version: String,
    n: usize,
    status: String,
}

fn as_handled(line: &LogLine) -> Option<Handled> {
    if line.message() != Some("handled") {
        return None;
    }
    Some(Handled {
        handler: line.field("handler")?.to_owned(),
        version: line.field("version")?.to_owned(),
        n: event_number(line.field("event")?),
        status: line.field("status")?.to_owned(),
    })
}

/// Every `handled` line of the log, in order.
fn handled(log: &Log) -> Vec<Handled> {
    log.lines().filter_map(|l| as_handled(&l)).collect()
}

/// The `handled` lines of one handler, in order.
fn handled_by(log: &Log, handler: &str) -> Vec<Handled> {
    handled(log)
        .into_iter()
        .filter(|h| h.handler == handler)
        .collect()
}

/// Waits until `handler` has handled an event numbered `from` or later; returns that line.
fn wait_handled_from(host: &Host, handler: &str, from: usize) -> Handled {
    host.wait_for_log(&format!("{handler} handles event {from} or later"), |l| {
        as_handled(l).filter(|h| h.handler == handler && h.n >= from)
    })
}

/// Waits until `handler` has handled an event with `version`; returns that line.
fn wait_handled_by_version(host: &Host, handler: &str, version: &str) -> Handled {
    host.wait_for_log(&format!("{handler} runs version {version}"), |l| {
        as_handled(l).filter(|h| h.handler == handler && h.version == version)
    })
}

/// Polls `condition` until it holds, for up to [`COMPILE_DEADLINE`]: for waits that include a
/// compile.
fn wait_compiled(host: &Host, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < COMPILE_DEADLINE,
            "timed out after {COMPILE_DEADLINE:?} waiting until {what}\n--- host log:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `handler`'s entry of `GET /v1/handlers`, if it is in service.
fn find_handler(host: &Host, name: &str) -> Option<Value> {
    host.handlers().into_iter().find(|h| h["name"] == name)
}

/// Consecutive repeats removed: the versions an observer went through, in order.
fn runs(versions: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut runs: Vec<String> = Vec::new();
    for version in versions {
        if runs.last() != Some(&version) {
            runs.push(version);
        }
    }
    runs
}

/// The first `s` for which `handled` is exactly the accepted events before `s` that `before`
/// selects, then those from `s` on that `after` selects: what a handler whose subscription
/// changed once (added, removed, filter edited) must have seen, if nothing was lost,
/// duplicated or reordered.
fn switch_point(
    accepted: &[usize],
    handled: &[usize],
    before: impl Fn(usize) -> bool,
    after: impl Fn(usize) -> bool,
) -> Option<usize> {
    (0..=accepted.len()).find(|&s| {
        let expected = accepted[..s]
            .iter()
            .copied()
            .filter(|&n| before(n))
            .chain(accepted[s..].iter().copied().filter(|&n| after(n)));
        expected.eq(handled.iter().copied())
    })
}

fn reloads(host: &Host, result: &str) -> f64 {
    host.metrics()
        .expect(&format!("hookwasm_reloads_total{{result=\"{result}\"}}"))
}

/// Log lines whose message contains `text` and whose `handler` field is `handler`.
fn messages_about(log: &Log, handler: &str, text: &str) -> Vec<String> {
    log.with_message(text)
        .iter()
        .filter(|l| l.field("handler") == Some(handler))
        .filter_map(|l| l.message().map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Module swaps
// ---------------------------------------------------------------------------------------------

/// How a test writes a file.
#[derive(Debug, Clone, Copy)]
enum Write {
    InPlace,
    ByRename,
}

impl Write {
    fn apply(self, path: &Path, bytes: &[u8]) {
        match self {
            Write::InPlace => write_in_place(path, bytes),
            Write::ByRename => write_by_rename(path, bytes),
        }
    }
}

/// One step of the module-swap test: a new file, and what the host must make of it.
struct Step {
    what: &'static str,
    bytes: Vec<u8>,
    write: Write,
    /// `None`: the new version goes into service. `Some(text)`: the attempt fails with an error
    /// containing `text`, and the running version stays.
    fails_with: Option<&'static str>,
}

#[test]
fn module_swaps_under_a_steady_stream_lose_nothing_and_broken_versions_never_run() {
    // An observer's module is replaced seven times while events flow: three valid versions
    // (the last one the same file as the first) and four broken ones (not wasm, a truncated
    // component, an `init` that fails, a component of another world), written in place and by
    // rename. Every accepted event must be handled exactly once, in order, by exactly one
    // version; the version changes only at the swaps; the broken digests never run; every swap
    // and failed attempt shows in `GET /v1/handlers`, the log and `/metrics`. A second observer
    // whose module is left alone keeps its one version throughout.
    let work = Workdir::new();
    let dir = modules(&work);
    let logger = dir.join("logger.wasm");
    let steady = dir.join("steady.wasm");
    let original = read(&Guest::ConsoleLogger.path());
    std::fs::write(&logger, &original).expect("write logger.wasm");
    std::fs::write(&steady, &original).expect("write steady.wasm");
    let config = work.write(
        "proxy.config.json",
        config_text(&[
            json!({ "name": "logger", "module": "modules/logger.wasm" }),
            json!({ "name": "steady", "module": "modules/steady.wasm" }),
        ]),
    );

    let steps = [
        Step {
            what: "version b (a custom section appended)",
            bytes: with_custom_section(&original, "hookwasm-e2e", b"version b"),
            write: Write::ByRename,
            fails_with: None,
        },
        Step {
            what: "garbage bytes",
            bytes: b"garbage, not a component\n".repeat(64),
            write: Write::InPlace,
            fails_with: Some("is not a WebAssembly file"),
        },
        Step {
            what: "a component cut in half (a build caught mid-write)",
            bytes: original[..original.len() / 2].to_vec(),
            write: Write::ByRename,
            fails_with: Some("does not compile"),
        },
        Step {
            what: "version c",
            bytes: with_custom_section(&original, "hookwasm-e2e", b"version c"),
            write: Write::InPlace,
            fails_with: None,
        },
        Step {
            what: "chaos, whose init refuses a config without `behavior`",
            bytes: read(&Guest::Chaos.path()),
            write: Write::ByRename,
            fails_with: Some("invalid handler config: missing field `behavior`"),
        },
        Step {
            what: "a component of another world",
            bytes: read(&Guest::OtherWorld.path()),
            write: Write::InPlace,
            fails_with: Some("is not a hookwasm event handler"),
        },
        Step {
            what: "version a again (the original file)",
            bytes: original.clone(),
            write: Write::ByRename,
            fails_with: None,
        },
    ];

    let host = serve_watch(&config);
    let first = sha256_hex(&original);
    assert_eq!(host.handler("logger")["digest"], first.as_str());
    let stream = Stream::start(&host);
    wait_handled_by_version(&host, "logger", &short(&first));

    let mut running = first.clone();
    let mut versions = vec![short(&first)];
    let mut swaps = Vec::new();
    let mut broken = Vec::new();
    for step in &steps {
        let digest = sha256_hex(&step.bytes);
        step.write.apply(&logger, &step.bytes);
        match step.fails_with {
            None => {
                wait_compiled(&host, &format!("{} is in service", step.what), || {
                    let entry = host.handler("logger");
                    entry["digest"] == digest.as_str()
                        && entry["lastReload"]["result"] == "ok"
                        && entry["lastReload"]["digest"] == digest.as_str()
                });
                // An event posted once the swap shows must run the new version.
                let after = wait_handled_from(&host, "logger", stream.posted_from_now());
                assert_eq!(
                    after.version,
                    short(&digest),
                    "events accepted after the swap to {} run it",
                    step.what
                );
                swaps.push((short(&running), short(&digest)));
                versions.push(short(&digest));
                running = digest;
            }
            Some(error) => {
                wait_compiled(
                    &host,
                    &format!("the attempt with {} has failed", step.what),
                    || {
                        let last = &host.handler("logger")["lastReload"];
                        last["result"] == "failed" && last["digest"] == digest.as_str()
                    },
                );
                let entry = host.handler("logger");
                assert_eq!(
                    entry["digest"],
                    running.as_str(),
                    "after {} the running version stays in service: {entry:#}",
                    step.what
                );
                let reason = entry["lastReload"]["error"].as_str().unwrap_or_default();
                assert!(
                    reason.contains(error),
                    "{}: lastReload.error {reason:?} should contain {error:?}",
                    step.what
                );
                assert!(entry["lastReload"]["at"].is_string(), "{entry:#}");
                // Events keep flowing, on the running version.
                let after = wait_handled_from(&host, "logger", stream.posted_from_now());
                assert_eq!(
                    after.version,
                    short(&running),
                    "after {} events run the version in service",
                    step.what
                );
                broken.push((short(&digest), error));
            }
        }
    }
    // `lastReload` is set just before the counter moves: wait for the last swap's count.
    host.wait_until("/metrics counts every swap", || {
        reloads(&host, "ok") == swaps.len() as f64
    });
    let metrics = host.metrics();
    let posted = stream.stop();
    let accepted: Vec<usize> = posted
        .iter()
        .filter(|p| p.accepted())
        .map(|p| p.n)
        .collect();
    assert!(!accepted.is_empty());
    host.wait_until("both observers have handled every accepted event", || {
        host.all_invocations("logger") >= accepted.len() as u64
            && host.all_invocations("steady") >= accepted.len() as u64
    });
    let stopped = host.terminate();
    assert!(stopped.status.success(), "exit: {:?}", stopped.status);
    let log = &stopped.log;

    let by_logger = handled_by(log, "logger");
    let ids: Vec<usize> = by_logger.iter().map(|h| h.n).collect();
    assert_eq!(
        ids, accepted,
        "every accepted event handled exactly once, in the order accepted"
    );
    assert!(by_logger.iter().all(|h| h.status == "ok"), "{log}");
    assert_eq!(
        runs(by_logger.iter().map(|h| h.version.clone())),
        versions,
        "the version changes only at the swaps, once per swap, and never goes back"
    );
    for (digest, why) in &broken {
        assert!(
            !handled(log).iter().any(|h| &h.version == digest),
            "the broken version {digest} ({why}) must never run"
        );
    }
    let by_steady = handled_by(log, "steady");
    assert_eq!(by_steady.iter().map(|h| h.n).collect::<Vec<_>>(), accepted);
    assert_eq!(
        runs(by_steady.iter().map(|h| h.version.clone())),
        [short(&first)],
        "an unchanged handler keeps its version"
    );
    assert!(log.failures_of("logger").is_empty(), "{log}");
    assert!(log.failures_of("steady").is_empty(), "{log}");

    // The log tells each swap (old -> new) and each failure with its reason.
    let reloaded = messages_about(log, "logger", "reloaded: ");
    assert_eq!(reloaded.len(), swaps.len(), "{reloaded:#?}");
    for ((old, new), line) in swaps.iter().zip(&reloaded) {
        assert!(line.contains(&format!("{old} -> {new}")), "{line}");
    }
    let failed = messages_about(log, "logger", "reload failed");
    for (_, why) in &broken {
        assert!(
            failed.iter().any(|line| line.contains(why)),
            "no `reload failed` line says {why:?}: {failed:#?}"
        );
    }
    assert!(failed.len() >= broken.len());
    assert_eq!(
        metrics.expect("hookwasm_reloads_total{result=\"failed\"}"),
        failed.len() as f64,
        "one failed reload counted per failed attempt logged"
    );
}

#[test]
fn a_module_that_does_not_match_its_pinned_sha256_is_refused_until_the_pin_changes() {
    // An entry pins its module's sha256: a rebuilt module with another digest must not run
    // (the running version stays, and the mismatch is shown), until the config pins the new
    // digest.
    let work = Workdir::new();
    let dir = modules(&work);
    let logger = dir.join("logger.wasm");
    let original = read(&Guest::ConsoleLogger.path());
    std::fs::write(&logger, &original).expect("write logger.wasm");
    let pinned = |digest: &str| json!({ "name": "pinned", "module": "modules/logger.wasm", "sha256": digest });
    let first = sha256_hex(&original);
    let config = work.write("proxy.config.json", config_text(&[pinned(&first)]));
    let host = serve_watch(&config);

    let next = with_custom_section(&original, "hookwasm-e2e", b"pinned");
    let digest = sha256_hex(&next);
    write_by_rename(&logger, &next);
    wait_compiled(&host, "the unpinned module is refused", || {
        host.handler("pinned")["lastReload"]["result"] == "failed"
    });
    let entry = host.handler("pinned");
    assert_eq!(
        entry["digest"],
        first.as_str(),
        "the pinned version keeps running"
    );
    assert_eq!(entry["lastReload"]["digest"], digest.as_str());
    let error = entry["lastReload"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("has sha256 {digest}")) && error.contains("but the config pins"),
        "{error}"
    );
    let response = host.post_events(&custom(&event_id(0)));
    assert_eq!(response.status, 202, "{response}");
    assert_eq!(
        wait_handled_from(&host, "pinned", 0).version,
        short(&first),
        "events run the pinned version"
    );

    write_by_rename(&config, config_text(&[pinned(&digest)]).as_bytes());
    wait_compiled(&host, "the newly pinned module is in service", || {
        let entry = host.handler("pinned");
        entry["digest"] == digest.as_str() && entry["lastReload"]["result"] == "ok"
    });
    let response = host.post_events(&custom(&event_id(1)));
    assert_eq!(response.status, 202, "{response}");
    assert_eq!(
        wait_handled_from(&host, "pinned", 1).version,
        short(&digest)
    );
}

// ---------------------------------------------------------------------------------------------
// Config edits
// ---------------------------------------------------------------------------------------------

/// The gate's `config` annotation (chaos `config` behavior) in one accepted answer: its `v`.
fn gate_config_version(post: &Posted) -> u64 {
    let answer = post.json();
    let gates = answer["gates"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        gates.len(),
        1,
        "one gate ran for event {}: {answer}",
        post.n
    );
    assert_eq!(gates[0]["handler"], "g");
    assert_eq!(gates[0]["status"], "ok", "{answer}");
    let config: Value = gates[0]["annotations"]["config"]
        .as_str()
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or_else(|| panic!("no `config` annotation: {answer}"));
    config["v"]
        .as_u64()
        .unwrap_or_else(|| panic!("no v: {config}"))
}

#[test]
fn config_edits_add_remove_and_change_handlers_live_without_losing_events() {
    // Under a steady stream: observer `c` is added; observer `b`'s filter and gate `g`'s config
    // change (one write); slow observer `d` is removed with events still queued; then a config
    // with a syntax error is written, and the good one again. Observer `a` is never touched.
    // Every observer must see exactly the accepted events its subscription selected, once and
    // in order, with its subscription changing once at most (nothing queued for `d` is
    // dropped); every answer carries `g`'s verdict from one config or the other, switching
    // once; the broken config changes nothing and is reported.
    let work = Workdir::new();
    let dir = modules(&work);
    std::fs::write(dir.join("logger.wasm"), read(&Guest::ConsoleLogger.path()))
        .expect("write logger.wasm");
    std::fs::write(dir.join("chaos.wasm"), read(&Guest::Chaos.path())).expect("write chaos.wasm");
    let a = json!({ "name": "a", "module": "modules/logger.wasm" });
    let b =
        |events: &str| json!({ "name": "b", "module": "modules/logger.wasm", "events": [events] });
    let c = json!({ "name": "c", "module": "modules/logger.wasm" });
    // 200 ms per tag event, room for 16: it falls behind the stream, so it has a backlog when
    // it is removed (and a full queue refuses tag events meanwhile, which is fine: refused
    // events are not accepted).
    let d = json!({
        "name": "d",
        "module": "modules/chaos.wasm",
        "events": ["git.tag.*"],
        "config": { "behavior": "sleep", "ms": 200 },
        "queueCapacity": 16,
    });
    let g = |v: u64| {
        json!({
            "name": "g",
            "module": "modules/chaos.wasm",
            "mode": "gate",
            "config": { "behavior": "config", "v": v },
        })
    };
    let config = work.write(
        "proxy.config.json",
        config_text(&[a.clone(), b("user.*"), d.clone(), g(1)]),
    );
    let host = serve_watch(&config);
    let stream = Stream::start(&host);
    for name in ["a", "b", "d"] {
        wait_handled_from(&host, name, 0);
    }

    // Add `c`.
    write_by_rename(
        &config,
        config_text(&[a.clone(), b("user.*"), d.clone(), g(1), c.clone()]).as_bytes(),
    );
    host.wait_until("c is in service", || {
        find_handler(&host, "c").is_some_and(|c| c["lastReload"]["result"] == "ok")
    });
    wait_handled_from(&host, "c", 0);

    // Change `b`'s filter and `g`'s config in one write.
    write_in_place(
        &config,
        config_text(&[a.clone(), b("git.branch.*"), d.clone(), g(2), c.clone()]).as_bytes(),
    );
    host.wait_until("b and g are swapped", || {
        let b_entry = host.handler("b");
        let g_entry = host.handler("g");
        b_entry["events"] == json!(["git.branch.*"])
            && b_entry["lastReload"]["result"] == "ok"
            && g_entry["lastReload"]["result"] == "ok"
    });
    let from = stream.posted_from_now();
    let branch_event = host.wait_for_log("b handles a git.branch event", |l| {
        as_handled(l).filter(|h| h.handler == "b" && h.n >= from && is_branch(h.n))
    });
    assert_eq!(branch_event.status, "ok");

    // Remove `d` while it has a backlog.
    host.wait_until("d has a backlog", || {
        host.handler("d")["queueDepth"].as_u64().unwrap_or(0) >= 3
    });
    let without_d = config_text(&[a.clone(), b("git.branch.*"), g(2), c.clone()]);
    write_by_rename(&config, without_d.as_bytes());
    host.wait_until("d is out of service", || find_handler(&host, "d").is_none());
    let removed = host.wait_for_log("d's removal is logged", |l| {
        (l.field("handler") == Some("d"))
            .then(|| l.message().map(str::to_owned))
            .flatten()
            .filter(|m| m.starts_with("handler removed"))
    });
    let backlog: usize = removed
        .split("of its ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the removal says how many events are queued: {removed}"));
    assert!(backlog >= 1, "{removed}");

    // A config with a syntax error: everything keeps running, the failure is reported.
    let digests: Vec<(Value, Value)> = host
        .handlers()
        .iter()
        .map(|h| (h["name"].clone(), h["digest"].clone()))
        .collect();
    host.wait_until("/metrics counts c's addition and b's and g's swaps", || {
        reloads(&host, "ok") == 3.0
    });
    write_in_place(&config, &without_d.as_bytes()[..without_d.len() / 2]);
    let reported = host.wait_for_log("the broken config is logged", |l| {
        l.message()
            .filter(|m| m.starts_with("config not reloaded"))
            .map(str::to_owned)
    });
    assert!(reported.contains("not valid JSON"), "{reported}");
    host.wait_for_log("the reload of the broken config is over", |l| {
        (l.message() == Some("reload done"))
            .then(|| l.field("summary").filter(|s| s.contains("not valid JSON")))
            .flatten()
            .map(|_| ())
    });
    assert_eq!(reloads(&host, "failed"), 1.0, "reported in /metrics");
    assert_eq!(
        host.handlers()
            .iter()
            .map(|h| (h["name"].clone(), h["digest"].clone()))
            .collect::<Vec<_>>(),
        digests,
        "a broken config changes nothing"
    );
    let from = stream.posted_from_now();
    wait_handled_from(&host, "a", from);

    // The good config again: nothing to do.
    let idle_reloads = || {
        host.log()
            .with_message("reload done")
            .iter()
            .filter(|l| {
                l.field("summary")
                    == Some("Summary { added: [], removed: [], swapped: [], failed: [] }")
            })
            .count()
    };
    let idle_before = idle_reloads();
    write_by_rename(&config, without_d.as_bytes());
    host.wait_until("the repaired config is reloaded, changing nothing", || {
        idle_reloads() > idle_before
    });
    assert_eq!(reloads(&host, "ok"), 3.0, "nothing changed");

    let posted = stream.stop();
    let accepted: Vec<&Posted> = posted.iter().filter(|p| p.accepted()).collect();
    let queued: u64 = accepted
        .iter()
        .map(|p| {
            p.json()["observersQueued"]
                .as_u64()
                .expect("observersQueued")
        })
        .sum();
    let observers = ["a", "b", "c", "d"];
    host.wait_until("the observers have handled every queued event", || {
        let log = host.log();
        let handled = handled(&log);
        handled
            .iter()
            .filter(|h| observers.contains(&h.handler.as_str()))
            .count() as u64
            >= queued
    });
    let metrics = host.metrics();
    let stopped = host.terminate();
    assert!(stopped.status.success(), "exit: {:?}", stopped.status);
    let log = &stopped.log;

    let all = handled(log);
    let of_observers = all
        .iter()
        .filter(|h| observers.contains(&h.handler.as_str()))
        .count() as u64;
    assert_eq!(
        of_observers, queued,
        "each (event, observer) pair queued is handled once: nothing dropped, nothing twice"
    );
    let numbers: Vec<usize> = accepted.iter().map(|p| p.n).collect();
    let seen = |name: &str| -> Vec<usize> {
        let lines = handled_by(log, name);
        assert!(lines.iter().all(|h| h.status == "ok"), "{name}: {lines:?}");
        lines.iter().map(|h| h.n).collect()
    };
    assert_eq!(
        seen("a"),
        numbers,
        "a, untouched, sees every event in order"
    );
    let b_switch = switch_point(&numbers, &seen("b"), is_user, is_branch);
    assert!(
        b_switch.is_some(),
        "b sees user events, then git.branch events, each accepted one once and in order: {:?}",
        seen("b")
    );
    let c_from = switch_point(&numbers, &seen("c"), |_| false, |_| true);
    assert!(
        c_from.is_some_and(|s| s > 0),
        "c sees every event from its addition on, in order: {:?}",
        seen("c")
    );
    let d_until = switch_point(&numbers, &seen("d"), is_tag, |_| false);
    assert!(
        d_until.is_some(),
        "d sees every tag event until its removal, its backlog included: {:?}",
        seen("d")
    );
    let gate: Vec<u64> = accepted.iter().map(|p| gate_config_version(p)).collect();
    assert_eq!(
        runs(gate.iter().map(u64::to_string)),
        ["1", "2"],
        "g's config switches once, at the swap"
    );
    for name in observers {
        assert!(log.failures_of(name).is_empty(), "{log}");
    }
    assert_eq!(
        metrics.expect("hookwasm_reloads_total{result=\"ok\"}"),
        3.0,
        "c added, b and g swapped"
    );
    assert_eq!(
        metrics.expect("hookwasm_reloads_total{result=\"failed\"}"),
        1.0
    );
}

#[test]
fn changing_an_observers_queue_capacity_loses_nothing_and_keeps_order() {
    // A new `queueCapacity` replaces the observer (a queue cannot be resized). Under a steady
    // stream, with a backlog in the old queue, the observer must still see every accepted event
    // once and in the order accepted: the replacement must not start on new events while the
    // old queue still drains.
    //
    // Regression: the reloader used to remove the old slot and only then load the new version,
    // so events accepted meanwhile reached no observer, and the old queue drained alongside the
    // new one, out of order (fixed by `Dispatcher::replace`).
    let work = Workdir::new();
    let dir = modules(&work);
    std::fs::write(dir.join("chaos.wasm"), read(&Guest::Chaos.path())).expect("write chaos.wasm");
    let slow = |capacity: usize| {
        json!({
            "name": "slow",
            "module": "modules/chaos.wasm",
            "config": { "behavior": "sleep", "ms": 50 },
            "queueCapacity": capacity,
        })
    };
    let config = work.write("proxy.config.json", config_text(&[slow(64)]));
    let host = serve_watch(&config);
    let stream = Stream::start(&host);
    host.wait_until("slow has a backlog", || {
        host.handler("slow")["queueDepth"].as_u64().unwrap_or(0) >= 10
    });
    write_by_rename(&config, config_text(&[slow(32)]).as_bytes());
    host.wait_until("slow is replaced", || {
        find_handler(&host, "slow").is_some_and(|h| h["lastReload"]["result"] == "ok")
    });
    let from = stream.posted_from_now();
    wait_handled_from(&host, "slow", from);
    let posted = stream.stop();
    let accepted: Vec<usize> = posted
        .iter()
        .filter(|p| p.accepted())
        .map(|p| p.n)
        .collect();
    let queued = posted
        .iter()
        .filter(|p| p.accepted())
        .filter_map(|p| p.json()["observersQueued"].as_u64())
        .sum::<u64>() as usize;
    host.wait_until("slow has handled every event queued for it", || {
        handled_by(&host.log(), "slow").len() >= queued
    });
    let stopped = host.terminate();
    let not_queued: Vec<usize> = posted
        .iter()
        .filter(|p| p.accepted() && p.json()["observersQueued"] != 1)
        .map(|p| p.n)
        .collect();
    assert!(
        not_queued.is_empty(),
        "events accepted while slow was being replaced reached no observer: {not_queued:?}"
    );
    let seen: Vec<usize> = handled_by(&stopped.log, "slow")
        .iter()
        .map(|h| h.n)
        .collect();
    let out_of_order: Vec<(usize, usize)> = seen
        .windows(2)
        .filter(|w| w[0] > w[1])
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(
        out_of_order.is_empty(),
        "events handled out of order across the replacement (earlier, later): {out_of_order:?}"
    );
    assert_eq!(seen, accepted, "every accepted event once, in order");
}

/// Compiles `module` into the shared cache (once per cache), so that a test waiting for it to
/// serve waits for the reload only.
fn warm_shared_cache(work: &Workdir, module: &[u8]) {
    let path = work.write("warm.wasm", module);
    let config = work.write(
        "warm.config.json",
        config_text(&[json!({ "name": "warm", "module": path })]),
    );
    let cache = shared_cache_dir();
    Hookwasm::new()
        .args(&["check", "--config", &config.to_string_lossy()])
        .envs(&[("HOOKWASM_CACHE_DIR", &cache.to_string_lossy())])
        .run()
        .assert_code(0);
}

// ---------------------------------------------------------------------------------------------
// Modules that appear later
// ---------------------------------------------------------------------------------------------

#[test]
fn serve_refuses_to_start_when_a_module_is_missing_even_with_watch() {
    // A gate whose module is missing must not be silently skipped: `serve` exits 2 naming it.
    let work = Workdir::new();
    let config = work.write(
        "proxy.config.json",
        config_text(&[json!({ "name": "late", "module": "modules/late.wasm", "mode": "gate" })]),
    );
    let config = config.to_string_lossy();
    let cache = shared_cache_dir();
    let run = Hookwasm::new()
        .args(&[
            "serve",
            "--config",
            &config,
            "--listen",
            "127.0.0.1:0",
            "--watch",
        ])
        .envs(&[("HOOKWASM_CACHE_DIR", &cache.to_string_lossy())])
        .run();
    run.assert_code(2);
    let error = run.error();
    assert!(
        error.contains("late") && error.contains("cannot read module"),
        "{run}"
    );
}

/// Starts a watched host with observer `a`, then names `late` at `module` (relative to the
/// config) in the config before the file exists: the add fails and says why.
fn name_a_module_before_it_exists(work: &Workdir, module: &str) -> Host {
    let dir = modules(work);
    std::fs::write(dir.join("logger.wasm"), read(&Guest::ConsoleLogger.path()))
        .expect("write logger.wasm");
    let a = json!({ "name": "a", "module": "modules/logger.wasm" });
    let config = work.write("proxy.config.json", config_text(std::slice::from_ref(&a)));
    let host = serve_watch(&config);
    write_by_rename(
        &config,
        config_text(&[a, json!({ "name": "late", "module": module })]).as_bytes(),
    );
    let reason = host.wait_for_log("the failed add of late is logged", |l| {
        (l.field("handler") == Some("late"))
            .then(|| l.message().map(str::to_owned))
            .flatten()
            .filter(|m| m.starts_with("handler not added"))
    });
    assert!(reason.contains("cannot read module"), "{reason}");
    assert!(find_handler(&host, "late").is_none());
    host.wait_until("/metrics counts the failed add", || {
        reloads(&host, "failed") == 1.0
    });
    host
}

/// Waits until `late` is in service and handles an event. Its module is the one `a` runs, so
/// it comes from the compile cache.
fn late_is_added(host: &Host) {
    host.wait_until("late is added once its module exists", || {
        find_handler(host, "late").is_some()
    });
    let entry = host.handler("late");
    assert_eq!(entry["lastReload"]["result"], "ok", "{entry:#}");
    assert_eq!(entry["digest"], Guest::ConsoleLogger.sha256().as_str());
    let response = host.post_events(&custom(&event_id(0)));
    assert_eq!(response.status, 202, "{response}");
    assert_eq!(response.json()["observersQueued"], 2, "{response}");
    wait_handled_from(host, "late", 0);
}

#[test]
fn a_module_named_before_it_exists_is_added_when_it_appears() {
    // `--watch`, an entry added to the config before its module is built: the add fails (and
    // says so); when the build writes the module (by rename), the handler is added.
    let work = Workdir::new();
    let host = name_a_module_before_it_exists(&work, "modules/late.wasm");
    write_by_rename(
        &work.path().join("modules/late.wasm"),
        &read(&Guest::ConsoleLogger.path()),
    );
    late_is_added(&host);
}

#[test]
fn a_module_whose_folder_does_not_exist_yet_is_added_when_it_appears() {
    // As above, but the module's folder does not exist yet either, as with a first
    // `cargo build` into a fresh target folder: creating the folder and then the module must
    // add the handler.
    //
    // Regression: the watcher used to give up on a folder it could not watch, and watched no
    // ancestor, so the module was never seen.
    let work = Workdir::new();
    let host = name_a_module_before_it_exists(&work, "build/out/late.wasm");
    let out = work.path().join("build/out");
    std::fs::create_dir_all(&out).expect("create build/out");
    write_by_rename(&out.join("late.wasm"), &read(&Guest::ConsoleLogger.path()));
    late_is_added(&host);
}

#[test]
fn a_module_folder_deleted_and_rebuilt_is_still_watched() {
    // `cargo clean && cargo build` while `serve --watch` runs: the module's folder disappears,
    // then comes back with a new build of the module. The new version must go into service.
    //
    // Regression: the kernel drops the watch of a deleted folder, and the watcher used to go
    // on believing it watched it, so the rebuilt module went unseen.
    let work = Workdir::new();
    let original = read(&Guest::ConsoleLogger.path());
    let rebuilt = with_custom_section(&original, "hookwasm-e2e", b"rebuilt");
    warm_shared_cache(&work, &rebuilt);
    let out = work.path().join("out");
    std::fs::create_dir_all(&out).expect("create out/");
    std::fs::write(out.join("h.wasm"), &original).expect("write h.wasm");
    let config = work.write(
        "proxy.config.json",
        config_text(&[json!({ "name": "h", "module": "out/h.wasm" })]),
    );
    let host = serve_watch(&config);
    std::fs::remove_dir_all(&out).expect("remove out/");
    // `cargo clean` is over long before the build writes the module again: the host notices
    // the module is gone, and h keeps running meanwhile.
    host.wait_until("the host has noticed the module is gone", || {
        let entry = host.handler("h");
        entry["lastReload"]["result"] == "failed"
            && entry["lastReload"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot read module"))
    });
    assert_eq!(host.handler("h")["digest"], sha256_hex(&original).as_str());
    std::fs::create_dir_all(&out).expect("create out/ again");
    write_by_rename(&out.join("h.wasm"), &rebuilt);
    let digest = sha256_hex(&rebuilt);
    host.wait_until("the rebuilt module is in service", || {
        host.handler("h")["digest"] == digest.as_str()
    });
}

// ---------------------------------------------------------------------------------------------
// SIGHUP
// ---------------------------------------------------------------------------------------------

#[test]
fn sighup_reloads_without_watch() {
    // Without `--watch` nothing is watched; SIGHUP applies the module swap and the config edit
    // made meanwhile.
    let work = Workdir::new();
    let dir = modules(&work);
    let logger = dir.join("logger.wasm");
    let original = read(&Guest::ConsoleLogger.path());
    std::fs::write(&logger, &original).expect("write logger.wasm");
    let a = json!({ "name": "logger", "module": "modules/logger.wasm" });
    let config = work.write("proxy.config.json", config_text(std::slice::from_ref(&a)));
    let host = serve(&config, &[]);
    assert!(
        host.log().with_message("watching").is_empty(),
        "no --watch, no watcher: {}",
        host.log()
    );
    let response = host.post_events(&custom(&event_id(0)));
    assert_eq!(response.status, 202, "{response}");
    let first = wait_handled_from(&host, "logger", 0);
    assert_eq!(first.version, short(&sha256_hex(&original)));

    let next = with_custom_section(&original, "hookwasm-e2e", b"after sighup");
    write_by_rename(&logger, &next);
    write_by_rename(
        &config,
        config_text(&[
            a,
            json!({ "name": "added", "module": "modules/logger.wasm" }),
        ])
        .as_bytes(),
    );
    assert_eq!(
        host.handler("logger")["digest"],
        sha256_hex(&original).as_str(),
        "nothing changes before the signal"
    );
    host.signal("HUP");
    let digest = sha256_hex(&next);
    wait_compiled(&host, "SIGHUP swapped logger and added `added`", || {
        host.handler("logger")["digest"] == digest.as_str()
            && find_handler(&host, "added").is_some()
    });
    assert_eq!(host.log().with_message("SIGHUP: reloading").len(), 1);
    let response = host.post_events(&custom(&event_id(1)));
    assert_eq!(response.json()["observersQueued"], 2, "{response}");
    assert_eq!(
        wait_handled_from(&host, "logger", 1).version,
        short(&digest)
    );
    wait_handled_from(&host, "added", 1);
    host.wait_until("/metrics counts the swap and the addition", || {
        reloads(&host, "ok") == 2.0
    });
    assert_eq!(reloads(&host, "failed"), 0.0);
}

#[test]
fn sighup_during_a_watched_reload_does_not_add_a_handler_twice() {
    // With `--watch`, an operator edits the config and also sends SIGHUP (say, `systemctl
    // reload`). The signal's reload and the watcher's must not both add the new handler: one
    // handler, one queue, each event handled once. A fresh compile cache and a module digest
    // of its own make the add slow (a real compile), as for a newly built module.
    //
    // Regression: the two reloads used to run at once, both found no `twin` while the other
    // compiled, and both added it: two queues, every event delivered twice.
    let work = Workdir::new();
    let dir = modules(&work);
    let original = read(&Guest::ConsoleLogger.path());
    let unique = format!("{:?} {}", std::time::SystemTime::now(), std::process::id());
    std::fs::write(
        dir.join("twin.wasm"),
        with_custom_section(&original, "hookwasm-e2e", unique.as_bytes()),
    )
    .expect("write twin.wasm");
    let config = work.write("proxy.config.json", config_text(&[]));
    let cache = work.path().join("cache");
    let host = Hookwasm::new()
        .args(&["--watch"])
        .envs(&[
            ("RUST_LOG", LOG_HANDLED),
            ("HOOKWASM_CACHE_DIR", &cache.to_string_lossy()),
        ])
        .serve(&config);
    wait_watching(&host, &config);
    let idle = host.log().with_message("reload done").len();
    write_by_rename(
        &config,
        config_text(&[json!({ "name": "twin", "module": "modules/twin.wasm" })]).as_bytes(),
    );
    let sighups = || host.log().with_message("SIGHUP: reloading").len();
    host.signal("HUP");
    host.wait_until("the host took the signal", || sighups() == 1);
    wait_compiled(&host, "the watcher's reload is done", || {
        host.log().with_message("reload done").len() > idle
    });
    // The host takes the next signal only once the reload of the last one is over: a second
    // SIGHUP, once taken, shows the first one's reload is done too.
    host.signal("HUP");
    wait_compiled(&host, "the first signal's reload is done", || {
        sighups() == 2
    });
    assert!(find_handler(&host, "twin").is_some());
    let response = host.post_events(&custom(&event_id(0)));
    assert_eq!(response.status, 202, "{response}");
    let handlers = host.handlers();
    let twins = handlers.iter().filter(|h| h["name"] == "twin").count();
    let log = host.log();
    assert_eq!(
        twins,
        1,
        "one handler named twin in GET /v1/handlers; `handler added` logged {} times",
        messages_about(&log, "twin", "handler added").len()
    );
    assert_eq!(
        response.json()["observersQueued"],
        1,
        "the event is queued once: {response}"
    );
}

// ---------------------------------------------------------------------------------------------
// Compile cache
// ---------------------------------------------------------------------------------------------

/// The `.cwasm` entries of a cache folder, sorted by name.
fn cache_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("a folder entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    entries.sort();
    entries
}

/// The cache entry of the module with `digest`.
fn entry_of(entries: &[PathBuf], digest: &str) -> PathBuf {
    let mine: Vec<&PathBuf> = entries
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(digest))
        })
        .collect();
    assert_eq!(mine.len(), 1, "one entry for {digest}: {entries:?}");
    mine[0].clone()
}

/// Whether an entry ends with the SHA-256 of the rest of it, as the host writes them.
fn sound(entry: &Path) -> bool {
    use sha2::Digest as _;
    let bytes = read(entry);
    bytes.len() > 32 && {
        let (body, checksum) = bytes.split_at(bytes.len() - 32);
        sha2::Sha256::digest(body).as_slice() == checksum
    }
}

#[test]
fn the_compile_cache_holds_one_entry_per_module_and_rebuilds_broken_ones() {
    // `check` fills `.hookwasm/cache` beside the config with one entry per module (three
    // handlers, two modules). Copied to a folder named by HOOKWASM_CACHE_DIR and damaged (bytes
    // flipped in one entry; the other replaced by a well-checksummed file wasmtime refuses),
    // the entries are ignored with a warning, rebuilt, and the handlers still work.
    let work = Workdir::new();
    let dir = modules(&work);
    let logger = read(&Guest::ConsoleLogger.path());
    let chaos = read(&Guest::Chaos.path());
    std::fs::write(dir.join("logger.wasm"), &logger).expect("write logger.wasm");
    std::fs::write(dir.join("chaos.wasm"), &chaos).expect("write chaos.wasm");
    let config = work.write(
        "proxy.config.json",
        config_text(&[
            json!({ "name": "a", "module": "modules/logger.wasm" }),
            json!({ "name": "a2", "module": "modules/logger.wasm" }),
            json!({
                "name": "g",
                "module": "modules/chaos.wasm",
                "mode": "gate",
                "config": { "behavior": "ok" },
            }),
        ]),
    );
    let config_arg = config.to_string_lossy().into_owned();
    let (logger_digest, chaos_digest) = (sha256_hex(&logger), sha256_hex(&chaos));

    let run = Hookwasm::new()
        .args(&["check", "--config", &config_arg])
        .unset(&["HOOKWASM_CACHE_DIR"])
        .run();
    run.assert_code(0);
    let default_dir = work.path().join(".hookwasm/cache");
    let entries = cache_entries(&default_dir);
    assert_eq!(entries.len(), 2, "one entry per module: {entries:?}");
    entry_of(&entries, &logger_digest);
    entry_of(&entries, &chaos_digest);
    let leftovers: Vec<_> = std::fs::read_dir(&default_dir)
        .expect("list the cache")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".cwasm"))
        .collect();
    assert!(leftovers.is_empty(), "no partial files: {leftovers:?}");

    let cache = work.path().join("elsewhere");
    std::fs::create_dir_all(&cache).expect("create the cache folder");
    for entry in &entries {
        std::fs::copy(entry, cache.join(entry.file_name().expect("a name"))).expect("copy");
    }
    let entries = cache_entries(&cache);
    let logger_entry = entry_of(&entries, &logger_digest);
    let chaos_entry = entry_of(&entries, &chaos_digest);
    let mut flipped = read(&logger_entry);
    let middle = flipped.len() / 2;
    for byte in &mut flipped[middle..middle + 16] {
        *byte ^= 0xff;
    }
    std::fs::write(&logger_entry, &flipped).expect("corrupt the logger's entry");
    let mut foreign = b"not something wasmtime serialised".to_vec();
    {
        use sha2::Digest as _;
        let checksum = sha2::Sha256::digest(&foreign);
        foreign.extend_from_slice(&checksum);
    }
    std::fs::write(&chaos_entry, &foreign).expect("replace the chaos entry");

    let env = [("HOOKWASM_CACHE_DIR", cache.to_string_lossy().into_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = Hookwasm::new()
        .args(&["check", "--config", &config_arg])
        .envs(&env)
        .run();
    run.assert_code(0);
    assert!(run.stdout.contains("ok        a "), "{run}");
    assert!(run.stdout.contains("ok        g "), "{run}");
    let log = Log(run.stderr.lines().map(str::to_owned).collect());
    let warnings = log.with_message("ignoring a broken compile-cache entry");
    let about = |entry: &Path| -> Vec<String> {
        warnings
            .iter()
            .filter(|l| l.field("entry") == Some(&*entry.to_string_lossy()))
            .filter_map(|l| l.message().map(str::to_owned))
            .collect()
    };
    let logger_warnings = about(&logger_entry);
    assert_eq!(logger_warnings.len(), 1, "{run}");
    assert!(
        logger_warnings[0].contains("checksum mismatch"),
        "{logger_warnings:?}"
    );
    let chaos_warnings = about(&chaos_entry);
    assert_eq!(chaos_warnings.len(), 1, "{run}");
    assert!(
        !chaos_warnings[0].contains("checksum mismatch"),
        "wasmtime's own refusal is given: {chaos_warnings:?}"
    );
    assert!(warnings.iter().all(|l| l.level() == Some("WARN")), "{run}");
    for entry in [&logger_entry, &chaos_entry] {
        assert!(
            entry.is_file() && sound(entry),
            "{} is rebuilt",
            entry.display()
        );
    }
    assert_ne!(read(&logger_entry), flipped);
    assert_eq!(cache_entries(&cache).len(), 2);

    // The rebuilt entries are used, silently, and the handlers run.
    let events = work.ndjson("events.ndjson", &[custom("after-rebuild")]);
    let run = Hookwasm::new()
        .args(&["replay", "--config", &config_arg, &events.to_string_lossy()])
        .envs(&env)
        .run();
    run.assert_code(0);
    assert!(
        !run.stderr.contains("compile-cache"),
        "sound entries raise no warning\n{run}"
    );
    let reports = run.reports();
    let names: Vec<&str> = reports
        .iter()
        .map(|r| r["handler"].as_str().expect("handler"))
        .collect();
    assert_eq!(names, ["a", "a2", "g"], "{run}");
    assert!(reports.iter().all(|r| r["status"] == "ok"), "{run}");
}

/// The config's warnings (here an observer that can never run) are logged again when a reload
/// reads an edited config, as at start: a mistake made while the host runs is not silent. A
/// reload of the same text (a rebuilt module, a SIGHUP) does not repeat them.
#[test]
fn a_reload_logs_the_config_warnings_again() {
    let work = Workdir::new();
    let logger = json!({ "name": "logger", "module": Guest::ConsoleLogger.module() });
    let config = work.write(
        "proxy.config.json",
        config_text(std::slice::from_ref(&logger)),
    );
    let host = serve(&config, &[]);
    let never = "this handler can never run";
    assert!(host.log().with_message(never).is_empty(), "{}", host.log());

    let mut typo = logger.clone();
    typo["name"] = json!("typo");
    typo["events"] = json!(["git.branch.update"]);
    write_by_rename(&config, config_text(&[logger, typo]).as_bytes());
    host.signal("HUP");
    let warning = host.wait_for_log("the warning after the reload", |line| {
        let message = line.message()?;
        message
            .contains(never)
            .then(|| (line.level().map(str::to_owned), message.to_owned()))
    });
    assert_eq!(warning.0.as_deref(), Some("WARN"), "{warning:?}");
    assert!(warning.1.contains("(typo)"), "{warning:?}");

    let reloads = host.log().with_message("SIGHUP: reloading").len();
    host.signal("HUP");
    host.wait_until("the second reload", || {
        host.log().with_message("SIGHUP: reloading").len() > reloads
            && host.log().with_message("reload done").len() > reloads
    });
    assert_eq!(
        host.log().with_message(never).len(),
        1,
        "the same config, the same warnings: logged once\n{}",
        host.log()
    );
}
