//! Shared helpers: find the guests, write configs, run the real `hookwasm` binary (as a server or
//! a one-shot command), talk HTTP to it, and read its JSON log.
//!
//! Every test gets its own temporary folder and its own host process listening on
//! `127.0.0.1:0` (it tells its port through `serve --addr-file`); the host is killed when the
//! test's [`Host`] is dropped, even on a panic. Waits are polls with a bounded deadline, never
//! sleeps standing in for an assertion.
//!
//! One builder runs the binary: `Hookwasm::new().args(&[..]).env(k, v).stdin(text)
//! .shared_cache()` then `.run()` (a one-shot command) or `.serve(config)` (a [`Host`]);
//! [`hookwasm`] and [`Host::serve`] are the one-line shorthands.

#![allow(dead_code)] // each test module uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// How long a host may take to compile its handlers and start listening. A debug build compiles
/// each module with Cranelift in seconds, and tests run in parallel on small machines.
const STARTUP_DEADLINE: Duration = Duration::from_secs(120);
/// How long a polled condition may take to become true.
pub const POLL_DEADLINE: Duration = Duration::from_secs(30);
/// How long a process may take to exit after SIGTERM (the default drain is 10 s), or a one-shot
/// command to finish.
const EXIT_DEADLINE: Duration = Duration::from_secs(60);
/// Pause between two polls.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------
// Guests
// ---------------------------------------------------------------------------------------------

/// The components `cargo xtask build-guests` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guest {
    /// `plugins/console-logger.wasm`: an observer printing one JSON line per event.
    ConsoleLogger,
    /// `plugins/branch-protection.wasm`: a gate refusing force-pushes and deletions.
    BranchProtection,
    /// `tests/guests/chaos.wasm`: misbehaves as its config's `behavior` says.
    Chaos,
    /// `tests/guests/other-world.wasm`: a `wasi:cli/command`, not an event handler.
    OtherWorld,
}

impl Guest {
    /// The built component; panics with what to do when it has not been built.
    pub fn path(self) -> PathBuf {
        let relative = match self {
            Guest::ConsoleLogger => "plugins/console-logger.wasm",
            Guest::BranchProtection => "plugins/branch-protection.wasm",
            Guest::Chaos => "tests/guests/chaos.wasm",
            Guest::OtherWorld => "tests/guests/other-world.wasm",
        };
        let path = workspace_root().join(relative);
        assert!(
            path.is_file(),
            "{} is missing: run `cargo xtask build-guests` first",
            path.display()
        );
        path
    }

    /// The path as a JSON string, for configs.
    pub fn module(self) -> String {
        self.path().to_string_lossy().into_owned()
    }

    /// SHA-256 of the component file, lower-case hex: the digest the host reports.
    pub fn sha256(self) -> String {
        let bytes = std::fs::read(self.path()).expect("the guest was just found");
        hex::encode(Sha256::digest(&bytes))
    }
}

/// The cargo workspace this test belongs to.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is inside the workspace")
        .to_path_buf()
}

/// A config entry running the chaos guest under `name` with `behavior`, as an observer.
pub fn chaos(name: &str, behavior: &str) -> Value {
    json!({
        "name": name,
        "module": Guest::Chaos.module(),
        "config": { "behavior": behavior },
    })
}

/// A config entry running the chaos guest under `name` with `behavior`, as a gate.
pub fn chaos_gate(name: &str, behavior: &str) -> Value {
    let mut entry = chaos(name, behavior);
    entry["mode"] = json!("gate");
    entry
}

/// The console logger as an observer of every event.
pub fn console_logger() -> Value {
    json!({ "name": "console-logger", "module": Guest::ConsoleLogger.module() })
}

/// Branch protection as a gate on every `git.branch.*` event, protecting `main`.
pub fn protect_main() -> Value {
    json!({
        "name": "protect-main",
        "module": Guest::BranchProtection.module(),
        "mode": "gate",
        "events": ["git.branch.*"],
        "config": { "protected": ["main"] },
    })
}

// ---------------------------------------------------------------------------------------------
// A test's own folder
// ---------------------------------------------------------------------------------------------

/// A temporary folder for one test: its config, events and odd files.
#[derive(Debug)]
pub struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        Workdir {
            dir: tempfile::Builder::new()
                .prefix("hookwasm-e2e-")
                .tempdir()
                .expect("cannot create a temporary folder"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `name` inside the folder and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("cannot write {name}: {e}"));
        path
    }

    /// Writes `proxy.config.json` with these `eventHandlers` (plus a GitProxy key the host must
    /// ignore) and returns its path.
    pub fn config(&self, handlers: &[Value]) -> PathBuf {
        let config = json!({
            "proxyUrl": "https://github.com",
            "eventHandlers": handlers,
        });
        self.write(
            "proxy.config.json",
            serde_json::to_string_pretty(&config).expect("JSON values serialise"),
        )
    }

    /// Writes events as NDJSON (one per line) and returns the file's path.
    pub fn ndjson(&self, name: &str, events: &[Value]) -> PathBuf {
        let lines: Vec<String> = events.iter().map(Value::to_string).collect();
        self.write(name, lines.join("\n") + "\n")
    }
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// The time every test event carries, so two runs of one event are the same event.
pub const EVENT_TIME: &str = "2026-11-22T10:00:00Z";

/// A `git.branch.*` / `git.tag.*` / `git.ref.*` event about one ref.
pub fn ref_update(id: &str, event_type: &str, ref_name: &str) -> Value {
    let (before, after) = match event_type.rsplit('.').next() {
        Some("created") => ("0".repeat(40), "b".repeat(40)),
        Some("deleted") => ("a".repeat(40), "0".repeat(40)),
        _ => ("a".repeat(40), "b".repeat(40)),
    };
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "https://git.example.com/e2e",
        "type": event_type,
        "time": EVENT_TIME,
        "subject": ref_name,
        "data": {
            "pushId": format!("push-{id}"),
            "repository": {
                "url": "https://git.example.com/acme/widgets.git",
                "project": "acme",
                "name": "widgets",
            },
            "pusher": { "username": "ada", "email": "ada@example.com" },
            "ref": ref_name,
            "before": before,
            "after": after,
            "pushOptions": ["ci.skip"],
        },
    })
}

/// A `push.*` / `pull.*` event from a git proxy.
pub fn proxy_action(id: &str, event_type: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "https://proxy.example.com",
        "type": event_type,
        "time": EVENT_TIME,
        "data": {
            "actionId": format!("action-{id}"),
            "repository": {
                "url": "https://github.com/acme/widgets.git",
                "project": "acme",
                "name": "widgets",
            },
            "user": { "username": "grace" },
            "branch": "refs/heads/feature",
            "commitFrom": "a".repeat(40),
            "commitTo": "b".repeat(40),
            "steps": [{ "name": "checkAuthorEmails", "passed": true }],
        },
    })
}

/// A custom event (outside the `push.`, `pull.` and `git.` namespaces).
pub fn custom(id: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "https://idp.example.com",
        "type": "user.created",
        "time": EVENT_TIME,
        "data": { "login": "ada", "n": id },
    })
}

// ---------------------------------------------------------------------------------------------
// One-shot commands (`call`, `replay`, `check`, `events`, and `serve` when it must not start)
// ---------------------------------------------------------------------------------------------

/// How a one-shot `hookwasm` command ended.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Every stdout line parsed as JSON (what `call` and `replay` print).
    pub fn reports(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}\n{self}"))
            })
            .collect()
    }

    /// The one report `call` prints.
    pub fn report(&self) -> Value {
        let mut reports = self.reports();
        assert_eq!(reports.len(), 1, "expected one report line\n{self}");
        reports.remove(0)
    }

    /// The `error: …` text of a bad-input exit (everything after the prefix, continuation lines
    /// included).
    pub fn error(&self) -> String {
        let start = self
            .stderr
            .find("error: ")
            .unwrap_or_else(|| panic!("no `error: ` in stderr\n{self}"));
        self.stderr[start + "error: ".len()..].to_owned()
    }

    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, Some(code), "wrong exit code\n{self}");
        assert_no_host_panic(&self.stderr);
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- exit code: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The `hookwasm` binary with the environment every test uses: JSON logs at `info`, no
/// backtraces asked for, and one compile cache for the whole suite, so each module is compiled
/// once rather than once per test (tests of the cache itself set their own folder).
fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookwasm"));
    command
        .args(args)
        .env("HOOKWASM_LOG_FORMAT", "json")
        .env("HOOKWASM_CACHE_DIR", shared_cache_dir())
        .env("RUST_LOG", "info")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    command
}

/// A `hookwasm` command line to run, built up: `Hookwasm::new().args(&[..]).env(k, v)
/// .stdin(text).run()` for a one-shot command, `.serve(config)` for a served [`Host`].
/// [`hookwasm`] and [`Host::serve`] are the one-line shorthands.
#[derive(Debug, Clone, Default)]
pub struct Hookwasm {
    args: Vec<String>,
    env: Vec<(String, String)>,
    unset: Vec<String>,
    stdin: String,
    shared_cache: bool,
}

impl Hookwasm {
    /// No arguments, the environment every test uses (see [`command`]), empty stdin.
    pub fn new() -> Hookwasm {
        Hookwasm::default()
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<str>) -> Hookwasm {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args(mut self, args: &[&str]) -> Hookwasm {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Sets a variable (it overrides the defaults of every test, `RUST_LOG` included).
    pub fn env(mut self, name: &str, value: impl AsRef<str>) -> Hookwasm {
        self.env.push((name.to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets variables, as [`Hookwasm::env`] does.
    pub fn envs(mut self, vars: &[(&str, &str)]) -> Hookwasm {
        for (name, value) in vars {
            self.env.push(((*name).to_owned(), (*value).to_owned()));
        }
        self
    }

    /// Removes variables from the environment every test uses (say, `HOOKWASM_CACHE_DIR`, to
    /// see where the cache goes by default).
    pub fn unset(mut self, names: &[&str]) -> Hookwasm {
        self.unset.extend(names.iter().map(|n| (*n).to_owned()));
        self
    }

    /// The command's standard input (empty by default).
    pub fn stdin(mut self, text: &str) -> Hookwasm {
        self.stdin = text.to_owned();
        self
    }

    /// Fills the shared compile cache with every guest the sandbox tests run first (once per
    /// test run), so hosts started at the same time do not all compile the same modules.
    pub fn shared_cache(mut self) -> Hookwasm {
        self.shared_cache = true;
        self
    }

    fn command(&self) -> Command {
        if self.shared_cache {
            warm_shared_cache();
        }
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut command = command(&args);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        for name in &self.unset {
            command.env_remove(name);
        }
        command
    }

    /// Runs the command to completion (or to [`EXIT_DEADLINE`]).
    pub fn run(self) -> Run {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        run_to_completion(self.command(), &args, &self.stdin)
    }

    /// Starts `hookwasm serve --config CONFIG --listen 127.0.0.1:0 --addr-file F ARGS` and
    /// waits until it listens: it writes the address it bound to F.
    pub fn serve(self, config: &Path) -> Host {
        let addr_dir = tempfile::Builder::new()
            .prefix("hookwasm-e2e-addr-")
            .tempdir()
            .expect("cannot create a temporary folder");
        let addr_file = addr_dir.path().join("addr");
        let mut serve = Hookwasm {
            args: Vec::new(),
            ..self.clone()
        }
        .args(&[
            "serve",
            "--config",
            &config.to_string_lossy(),
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--addr-file")
        .arg(addr_file.to_string_lossy());
        serve.args.extend(self.args);
        let mut child = serve
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start `hookwasm serve`");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(LogBuffer::default());
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    match line {
                        Ok(line) => log.push(line),
                        Err(_) => break,
                    }
                }
                log.close();
            })
        };
        let mut host = Host {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            reader: Some(reader),
            _addr_dir: addr_dir,
        };
        let start = Instant::now();
        loop {
            let written = std::fs::read_to_string(&addr_file).ok();
            if let Some(addr) = written.and_then(|text| text.trim().parse().ok()) {
                host.addr = addr;
                return host;
            }
            assert!(
                host.is_running() && start.elapsed() < STARTUP_DEADLINE,
                "`hookwasm serve` did not start listening within {STARTUP_DEADLINE:?}:\n{}",
                host.log.snapshot().join("\n")
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

/// Runs `hookwasm ARGS` to completion.
pub fn hookwasm(args: &[&str]) -> Run {
    Hookwasm::new().args(args).run()
}

/// Runs a prepared `hookwasm` command to the end (or to [`EXIT_DEADLINE`]) with `stdin` as its
/// input, collecting its output.
fn run_to_completion(mut command: Command, args: &[&str], stdin: &str) -> Run {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the hookwasm binary");
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_owned();
    // Written from a thread so a command that does not read its input cannot block the test.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let guard = ChildGuard(child);
    let status = wait_with_deadline(guard, EXIT_DEADLINE, args);
    let _ = writer.join();
    Run {
        code: status.code(),
        stdout: stdout.join().expect("the stdout reader does not panic"),
        stderr: stderr.join().expect("the stderr reader does not panic"),
    }
}

fn drain(mut stream: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Kills the child when dropped, so a failing test leaves no process behind.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_with_deadline(mut guard: ChildGuard, deadline: Duration, what: &[&str]) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = guard.0.try_wait().expect("cannot wait for hookwasm") {
            return status;
        }
        assert!(
            start.elapsed() < deadline,
            "`hookwasm {}` did not finish within {deadline:?}",
            what.join(" ")
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Fails if stderr holds a panic or backtrace of the host itself. Guest output is forwarded
/// inside JSON log lines (a guest that panics on purpose prints `panicked at` there); the host's
/// own panic hook writes plain text.
pub fn assert_no_host_panic(stderr: &str) {
    for line in stderr.lines() {
        if line.starts_with('{') {
            continue;
        }
        assert!(
            !line.contains("panicked at") && !line.contains("RUST_BACKTRACE"),
            "the host panicked:\n{stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A served host
// ---------------------------------------------------------------------------------------------

/// Lines of a host's stderr, collected as they arrive.
#[derive(Debug, Default)]
struct LogBuffer {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl LogBuffer {
    fn push(&self, line: String) {
        let mut guard = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.push(line);
        self.changed.notify_all();
    }

    fn close(&self) {
        let mut guard = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        guard.1 = true;
        self.changed.notify_all();
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Waits until `find` returns something for a line, or the stream ends, or the deadline.
    fn wait_for<T>(&self, deadline: Duration, find: impl Fn(&str) -> Option<T>) -> Option<T> {
        let until = Instant::now() + deadline;
        let mut guard = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = 0;
        loop {
            for line in &guard.0[seen..] {
                if let Some(found) = find(line) {
                    return Some(found);
                }
            }
            seen = guard.0.len();
            let now = Instant::now();
            if guard.1 || now >= until {
                return None;
            }
            guard = self
                .changed
                .wait_timeout(guard, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A `hookwasm serve` process, killed on drop.
#[derive(Debug)]
pub struct Host {
    child: Option<Child>,
    addr: SocketAddr,
    log: Arc<LogBuffer>,
    reader: Option<JoinHandle<()>>,
    /// Holds the file `serve --addr-file` writes; removed with the host.
    _addr_dir: tempfile::TempDir,
}

/// How a served host ended after SIGTERM.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    pub log: Log,
}

impl Host {
    /// Starts `hookwasm serve --config CONFIG` on a free port and waits until it listens; see
    /// [`Hookwasm::serve`] for arguments and variables.
    pub fn serve(config: &Path) -> Host {
        Hookwasm::new().serve(config)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn get(&self, path: &str) -> Response {
        http(self.addr, "GET", path, None)
    }

    pub fn post(&self, path: &str, body: &str) -> Response {
        http(self.addr, "POST", path, Some(body))
    }

    /// `POST /v1/events` with one event or a batch (a JSON array).
    pub fn post_events(&self, body: &Value) -> Response {
        self.post("/v1/events", &body.to_string())
    }

    /// `GET /v1/handlers`, answered 200.
    pub fn handlers(&self) -> Vec<Value> {
        let response = self.get("/v1/handlers");
        assert_eq!(response.status, 200, "GET /v1/handlers: {response}");
        match response.json()["handlers"].take() {
            Value::Array(handlers) => handlers,
            other => panic!("`handlers` is not a list: {other}"),
        }
    }

    /// One handler's entry of `GET /v1/handlers`.
    pub fn handler(&self, name: &str) -> Value {
        self.handlers()
            .into_iter()
            .find(|h| h["name"] == name)
            .unwrap_or_else(|| panic!("no handler {name} in GET /v1/handlers"))
    }

    /// How many invocations of `handler` ended with `status` (`ok`, `error`, `trap`, …).
    pub fn invocations(&self, handler: &str, status: &str) -> u64 {
        self.handler(handler)["counters"]["invocations"][status]
            .as_u64()
            .unwrap_or(0)
    }

    /// All invocations of `handler`, whatever their status.
    pub fn all_invocations(&self, handler: &str) -> u64 {
        let entry = self.handler(handler);
        entry["counters"]["invocations"]
            .as_object()
            .map(|by_status| by_status.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0)
    }

    /// `GET /metrics`, answered 200, as text.
    pub fn metrics(&self) -> Metrics {
        let response = self.get("/metrics");
        assert_eq!(response.status, 200, "GET /metrics: {response}");
        Metrics(response.body)
    }

    /// Polls `condition` until it holds; fails with `what` and the log after [`POLL_DEADLINE`].
    pub fn wait_until(&self, what: &str, mut condition: impl FnMut() -> bool) {
        let start = Instant::now();
        while !condition() {
            assert!(
                start.elapsed() < POLL_DEADLINE,
                "timed out after {POLL_DEADLINE:?} waiting until {what}\n--- host log:\n{}",
                self.log.snapshot().join("\n")
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The log so far.
    pub fn log(&self) -> Log {
        Log(self.log.snapshot())
    }

    /// Sends SIGTERM and waits for the process to exit; returns its status and whole log.
    pub fn terminate(mut self) -> Stopped {
        let child = self.child.take().expect("the host is running");
        let pid = child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("cannot run `kill`");
        assert!(sent.success(), "`kill -TERM {pid}` failed");
        let status = wait_with_deadline(ChildGuard(child), EXIT_DEADLINE, &["serve"]);
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the log reader does not panic");
        }
        let log = Log(self.log.snapshot());
        assert_no_host_panic(&log.0.join("\n"));
        Stopped { status, log }
    }

    /// Kills the process with SIGKILL: no drain, no cleanup, as a crash would. Returns its log.
    pub fn kill(mut self) -> Log {
        let mut child = self.child.take().expect("the host is running");
        child.kill().expect("cannot send SIGKILL");
        child.wait().expect("the killed host can be reaped");
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the log reader does not panic");
        }
        Log(self.log.snapshot())
    }

    /// Sends `signal` (`HUP`, `TERM`, …) to the host process.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the host is running");
        let pid = child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("cannot run `kill`");
        assert!(sent.success(), "`kill -{signal} {pid}` failed");
    }

    /// Waits until a log line makes `find` return something, and returns it; fails with `what`
    /// and the log after [`POLL_DEADLINE`].
    pub fn wait_for_log<T>(&self, what: &str, find: impl Fn(&LogLine) -> Option<T>) -> T {
        self.log
            .wait_for(POLL_DEADLINE, |line| find(&LogLine::parse(line)))
            .unwrap_or_else(|| {
                panic!(
                    "timed out after {POLL_DEADLINE:?} waiting for a log line: {what}\n--- host log:\n{}",
                    self.log.snapshot().join("\n")
                )
            })
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the host is running").id()
    }

    /// The host's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// Whether the process is still running (it has not exited or crashed).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Like [`Host::wait_until`], with a deadline of its own, for slow work (floods).
    pub fn wait_until_within(
        &self,
        deadline: Duration,
        what: &str,
        mut condition: impl FnMut() -> bool,
    ) {
        let start = Instant::now();
        while !condition() {
            assert!(
                start.elapsed() < deadline,
                "timed out after {deadline:?} waiting until {what}\n--- host log:\n{}",
                self.log.snapshot().join("\n")
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The JSON log
// ---------------------------------------------------------------------------------------------

/// One line of the host's stderr with `HOOKWASM_LOG_FORMAT=json`.
#[derive(Debug)]
pub struct LogLine(Value);

impl LogLine {
    pub fn parse(line: &str) -> LogLine {
        LogLine(serde_json::from_str(line).unwrap_or(Value::Null))
    }

    pub fn level(&self) -> Option<&str> {
        self.0["level"].as_str()
    }

    pub fn message(&self) -> Option<&str> {
        self.field("message")
    }

    /// A field of the event (`handler`, `event`, `stream`, `cause`, …) as text.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.0["fields"][name].as_str()
    }
}

/// A host's stderr, line by line.
#[derive(Debug, Clone)]
pub struct Log(pub Vec<String>);

impl Log {
    pub fn lines(&self) -> impl Iterator<Item = LogLine> + '_ {
        self.0.iter().map(|line| LogLine::parse(line))
    }

    /// What `handler` printed on stdout, line by line, in order.
    pub fn guest_stdout(&self, handler: &str) -> Vec<String> {
        self.lines()
            .filter(|l| l.field("handler") == Some(handler) && l.field("stream") == Some("stdout"))
            .filter_map(|l| l.message().map(str::to_owned))
            .collect()
    }

    /// Lines whose message contains `text`.
    pub fn with_message(&self, text: &str) -> Vec<LogLine> {
        self.lines()
            .filter(|l| l.message().is_some_and(|m| m.contains(text)))
            .collect()
    }

    /// The `handler failed` warnings about `handler`.
    pub fn failures_of(&self, handler: &str) -> Vec<LogLine> {
        self.with_message("handler failed")
            .into_iter()
            .filter(|l| l.field("handler") == Some(handler))
            .collect()
    }
}

impl std::fmt::Display for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------------------------

/// A series' name and its labels sorted: the exposition may write labels in any order.
fn series_key(series: &str) -> (String, Vec<String>) {
    match series.split_once('{') {
        Some((name, labels)) => {
            let mut labels: Vec<String> = labels
                .trim_end_matches('}')
                .split(',')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            labels.sort();
            (name.to_owned(), labels)
        }
        None => (series.to_owned(), Vec::new()),
    }
}

/// The text `GET /metrics` returns.
#[derive(Debug)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the series `series` (name and labels, in any order), if present.
    pub fn value(&self, series: &str) -> Option<f64> {
        let wanted = series_key(series);
        self.0.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (series_key(name) == wanted)
                .then(|| value.parse().ok())
                .flatten()
        })
    }

    /// Like [`Metrics::value`], failing when the series is absent.
    pub fn expect(&self, series: &str) -> f64 {
        self.value(series)
            .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{}", self.0))
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

/// An HTTP answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The body as JSON; fails if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {self}"))
    }

    /// A header's value (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.body)
    }
}

/// One request on its own connection (`Connection: close`), so every test request is
/// independent. Small on purpose: the tests need status, headers and a JSON or text body.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Response {
    http_with(addr, method, path, &[], body)
}

/// Like [`http`], with extra request headers (`Authorization`, `Cookie`, `Content-Type`, …);
/// `Content-Type` defaults to JSON.
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(POLL_DEADLINE))
        .expect("a read timeout can be set");
    let body = body.unwrap_or("");
    let mut extra = String::new();
    for (name, value) in headers {
        extra.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        extra.push_str("Content-Type: application/json\r\n");
    }
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: cannot send: {e}"));
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path}: cannot read the answer: {e}"));
    parse_response(&raw).unwrap_or_else(|| {
        panic!(
            "{method} {path}: not an HTTP answer: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Response {
        status,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

/// A whole chunked HTTP body decoded, or `None` while it is incomplete.
pub fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Hot reload: hosts with their own environment, signals, files written the way tools write them
// ---------------------------------------------------------------------------------------------

/// A compile cache shared by every host of the tests that are not about the cache itself, so a
/// module is compiled once per test run instead of once per test (Cranelift in a debug build
/// takes seconds per module).
pub fn shared_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-compile-cache")
}

/// `RUST_LOG` that adds the per-invocation `handled` lines (debug) to the usual info level.
pub const LOG_HANDLED: &str = "info,hookwasm=debug";

/// Writes `bytes` over `path` in place (truncate, then write), as `cp` or a plain editor save
/// does.
pub fn write_in_place(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Replaces `path` by rename, as editors and build tools do: the new contents go to a temporary
/// file in the same folder, which is then renamed over `path`.
pub fn write_by_rename(path: &Path, bytes: &[u8]) {
    let name = path
        .file_name()
        .expect("a file path")
        .to_string_lossy()
        .into_owned();
    let partial = path.with_file_name(format!(".{name}.partial"));
    std::fs::write(&partial, bytes)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", partial.display()));
    std::fs::rename(&partial, path)
        .unwrap_or_else(|e| panic!("cannot rename onto {}: {e}", path.display()));
}

/// `component` with a custom section `name` holding `payload` appended: the same program, but
/// another file, so another digest (and another compile-cache entry).
pub fn with_custom_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut contents = Vec::new();
    leb128(name.len(), &mut contents);
    contents.extend_from_slice(name.as_bytes());
    contents.extend_from_slice(payload);
    let mut out = component.to_vec();
    out.push(0x00);
    leb128(contents.len(), &mut out);
    out.extend_from_slice(&contents);
    out
}

/// SHA-256 of bytes, lower-case hex: the digest the host reports for a module file.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------------------------
// Sandbox tests: hosts on the shared compile cache, the webhook plugin, process facts
// ---------------------------------------------------------------------------------------------

/// `plugins/webhook.wasm`: an observer POSTing each event, signed (Standard Webhooks).
pub fn webhook_module() -> String {
    let path = workspace_root().join("plugins/webhook.wasm");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask build-guests` first",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// Fills [`shared_cache_dir`] with every guest the sandbox tests run, once per test run: the
/// first caller compiles them all in one `hookwasm check` while the others wait, instead of
/// every host compiling the same modules at the same time.
fn warm_shared_cache() {
    static WARM: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    WARM.get_or_init(|| {
        let work = Workdir::new();
        let config = work.config(&[
            console_logger(),
            protect_main(),
            chaos("chaos", "ok"),
            json!({
                "name": "webhook",
                "module": webhook_module(),
                "config": {
                    "url": "http://127.0.0.1:9/",
                    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                },
            }),
        ]);
        let dir = shared_cache_dir().to_string_lossy().into_owned();
        let config = config.to_string_lossy();
        Hookwasm::new()
            .args(&["check", "--config", &config])
            .envs(&[("HOOKWASM_CACHE_DIR", &dir)])
            .run()
            .assert_code(0);
    });
}

/// The resident memory of process `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}
