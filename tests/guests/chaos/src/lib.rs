//! A handler that misbehaves on request, so the host's tests can check every failure mode with
//! one component. The config picks the behavior: `{"behavior": "<name>", ...}`.
//!
//! | behavior | what it does |
//! |---|---|
//! | `ok` | allows, annotated `seen=<event id>` |
//! | `deny` | denies with the config's `reason` (default `chaos: asked to deny`) |
//! | `error` | returns `Err("chaos: asked to fail")` |
//! | `panic` | panics with `chaos: asked to panic` (a trap) |
//! | `loop` | spins forever in `on-event` (fuel or the deadline must stop it) |
//! | `init-error` | `init` returns `Err("chaos: init refused")` |
//! | `init-loop` | `init` spins forever |
//! | `alloc` | allocates 1 MiB chunks, touching every page, until the allocator fails and aborts (a trap) |
//! | `recurse` | recurses without bound (a stack overflow) |
//! | `big-string` | returns `Err` holding a 100 MiB string |
//! | `log-flood` | calls the host's `log` 1,000,000 times, then allows, annotated `logged=1000000` |
//! | `stdout-flood` | prints 1,000,000 lines, then allows, annotated `printed=1000000` |
//! | `mutate` | rewrites every field of its copy of the event, then allows, annotated `mutated=true` |
//! | `echo` | allows, annotated with what it saw (see [`echo`]) |
//! | `wasi-probe` | tries files, environment, arguments, sockets, clock and randomness, and annotates each result (see [`wasi_probe`]); never panics |
//! | `config` | allows, annotated `config=<the raw config JSON>` |
//! | `sleep` | sleeps in a host call for the config's `ms` (default 60000), then allows, annotated `slept=<ms>` (the deadline must cut it) |
//! | `forge` | writes the config's `reason` to stdout, stderr and `log`, then returns it as `Err` (the host must escape it) |
//! | `init-forge` | `init` returns the config's `reason` as `Err` |
//! | `exit` | calls `std::process::exit` with the config's `status` (default 1) |
//! | `http` | sends a request with the SDK's `http` module (see [`HttpCall`]); allows, annotated `status` and `body`, or returns the SDK's error |
//!
//! Behaviors other than `init-error` and `init-loop` pass `init`. An unknown behavior fails
//! `init` with serde's message, which lists the valid names.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookwasm_sdk::serde::Deserialize;
use hookwasm_sdk::{Error, Event, Handler, Outcome, Payload, Repository, Result, User, http};

/// The config: which behavior, plus the settings some behaviors read (`reason` for `deny`, `ms`
/// for `sleep`, the [`HttpCall`] fields for `http`). Other keys are ignored, so a test can add
/// any it wants to see echoed by `config`.
#[derive(Debug, Deserialize)]
#[serde(crate = "hookwasm_sdk::serde")]
pub struct Chaos {
    behavior: Behavior,
    #[serde(default)]
    reason: Option<String>,
    /// How long `sleep` sleeps.
    #[serde(default = "default_sleep_ms")]
    ms: u64,
    /// The status `exit` exits with.
    #[serde(default = "default_exit_status")]
    status: i32,
    #[serde(flatten)]
    http: HttpCall,
}

/// Long enough that only the host's deadline can end a `sleep` under any sane limits.
fn default_sleep_ms() -> u64 {
    60_000
}

fn default_exit_status() -> i32 {
    1
}

/// What `http` sends: `{"behavior": "http", "url": "...", "method": "POST", "body": "...",
/// "timeoutMs": 500}`. Only `url` is required; `method` is `GET` (default) or `POST`; a POST's
/// body is `body` when given, else the event's `json`, sent as `application/json`; `timeoutMs`
/// sets the SDK's request timeout (the event's deadline applies either way).
#[derive(Debug, Default, Deserialize)]
#[serde(crate = "hookwasm_sdk::serde", rename_all = "camelCase")]
pub struct HttpCall {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    method: HttpMethod,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// The methods `http` sends.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(crate = "hookwasm_sdk::serde")]
enum HttpMethod {
    #[default]
    #[serde(rename = "GET", alias = "get")]
    Get,
    #[serde(rename = "POST", alias = "post")]
    Post,
}

/// One misbehavior; see the crate docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(crate = "hookwasm_sdk::serde", rename_all = "kebab-case")]
enum Behavior {
    Ok,
    Deny,
    Error,
    Panic,
    Loop,
    InitError,
    InitLoop,
    Alloc,
    Recurse,
    BigString,
    LogFlood,
    StdoutFlood,
    Mutate,
    Echo,
    WasiProbe,
    Config,
    Sleep,
    Http,
    Forge,
    InitForge,
    Exit,
}

/// How many log calls and stdout lines the floods make.
const FLOOD_LINES: u32 = 1_000_000;

impl Handler for Chaos {
    fn init(&self) -> Result<()> {
        match self.behavior {
            Behavior::InitError => Err("chaos: init refused".into()),
            Behavior::InitLoop => spin(),
            Behavior::InitForge => Err(self.reason.clone().unwrap_or_default().into()),
            Behavior::Http if self.http.url.is_none() => {
                Err("chaos: `http` needs a `url` in its config".into())
            }
            _ => Ok(()),
        }
    }

    fn on_event(&self, event: &Event) -> Result<Outcome> {
        match self.behavior {
            Behavior::Ok => Ok(Outcome::allow().annotate("seen", &event.id)),
            Behavior::Deny => Ok(Outcome::deny(
                self.reason.as_deref().unwrap_or("chaos: asked to deny"),
            )),
            Behavior::Error => Err("chaos: asked to fail".into()),
            Behavior::Panic => panic!("chaos: asked to panic"),
            Behavior::Loop => spin(),
            // Only reached if a host calls `on-event` despite a failed or endless `init`.
            Behavior::InitError | Behavior::InitLoop | Behavior::InitForge => Ok(Outcome::allow()),
            Behavior::Alloc => alloc_until_failure(),
            Behavior::Recurse => Ok(Outcome::allow().annotate("depth", recurse(0))),
            Behavior::BigString => Err(Error::new("x".repeat(100 << 20))),
            Behavior::LogFlood => {
                for i in 0..FLOOD_LINES {
                    hookwasm_sdk::info!("chaos: log flood {i}");
                }
                Ok(Outcome::allow().annotate("logged", FLOOD_LINES))
            }
            Behavior::StdoutFlood => {
                for i in 0..FLOOD_LINES {
                    println!("chaos: stdout flood {i}");
                }
                Ok(Outcome::allow().annotate("printed", FLOOD_LINES))
            }
            Behavior::Mutate => {
                let mut copy = event.clone();
                mutate(&mut copy);
                black_box(&copy);
                Ok(Outcome::allow().annotate("mutated", true))
            }
            Behavior::Echo => Ok(echo(event)),
            Behavior::WasiProbe => Ok(wasi_probe()),
            Behavior::Config => Ok(Outcome::allow().annotate("config", hookwasm_sdk::raw_config())),
            Behavior::Sleep => {
                // A host call (wasi:clocks), not a busy loop: no fuel burns while it waits.
                std::thread::sleep(Duration::from_millis(self.ms));
                Ok(Outcome::allow().annotate("slept", self.ms))
            }
            Behavior::Http => self.http.send(event),
            Behavior::Forge => {
                let text = self.reason.clone().unwrap_or_default();
                println!("{text}");
                eprintln!("{text}");
                hookwasm_sdk::warn!("{text}");
                Err(text.into())
            }
            Behavior::Exit => std::process::exit(self.status),
        }
    }
}

hookwasm_sdk::export_handler!(Chaos);

impl HttpCall {
    /// Sends the request; any answer allows, annotated `status` and `body` (its first
    /// [`BODY_PREVIEW`] bytes, lossy UTF-8). A failure returns the SDK's error as it is.
    fn send(&self, event: &Event) -> Result<Outcome> {
        let url = self
            .url
            .as_deref()
            .ok_or("chaos: `http` needs a `url` in its config")?;
        let mut request = match self.method {
            HttpMethod::Get => http::Request::get(url),
            HttpMethod::Post => http::Request::post(url)
                .header("content-type", "application/json")
                .body(self.body.as_deref().unwrap_or(&event.json)),
        };
        if let Some(ms) = self.timeout_ms {
            request = request.timeout(Duration::from_millis(ms));
        }
        let response = request.send()?;
        Ok(Outcome::allow()
            .annotate("status", response.status)
            .annotate("body", preview(&response.body)))
    }
}

/// How much of a response body `http` annotates.
const BODY_PREVIEW: usize = 200;

/// The first [`BODY_PREVIEW`] bytes as text; a character cut in half becomes `U+FFFD`.
fn preview(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(BODY_PREVIEW)]).into_owned()
}

/// Busy-loops forever; `black_box` keeps the optimiser from proving the loop does nothing.
fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Allocates 1 MiB chunks, writing one byte in every 4 KiB page of each, and keeps them all.
/// The chunks are written through their spare capacity: a zero-fill of every byte would spend
/// the fuel budget long before memory runs out. When the allocator can grow no further, Rust's
/// allocation-failure handler aborts: the instance traps, as a runaway handler would.
fn alloc_until_failure() -> ! {
    const CHUNK: usize = 1 << 20;
    const PAGE: usize = 4 << 10;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = Vec::<u8>::with_capacity(CHUNK);
        for byte in chunk.spare_capacity_mut().iter_mut().step_by(PAGE) {
            byte.write(0xA5);
        }
        chunks.push(black_box(chunk));
    }
}

/// Recurses until the stack runs out. The result is used after each call (so it is not a tail
/// call) and the stop condition depends on an opaque value, so the optimiser can turn it into
/// neither a loop nor a constant. Locals stay in wasm locals, so the wasm stack overflows
/// rather than the shadow stack in linear memory.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return depth;
    }
    let here = black_box(depth.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    recurse(depth + 1) ^ here
}

/// Rewrites every string and option of the event that it can.
fn mutate(event: &mut Event) {
    event.id = format!("mutated-{}", event.id);
    event.source = "chaos".into();
    event.type_ = "chaos.mutated".into();
    event.time = "1970-01-01T00:00:00Z".into();
    event.subject = Some("mutated".into());
    let mutate_repository = |repository: &mut Repository| {
        repository.url = "https://mutated.invalid/mutated.git".into();
        repository.project = "mutated".into();
        repository.name = "mutated".into();
    };
    let mutate_user = |user: &mut User| {
        user.username = "mutated".into();
        user.email = Some("mutated@mutated.invalid".into());
    };
    match &mut event.payload {
        Payload::ProxyAction(action) => {
            action.action_id = "mutated".into();
            mutate_repository(&mut action.repository);
            match &mut action.user {
                Some(user) => mutate_user(user),
                None => {
                    action.user = Some(User {
                        username: "mutated".into(),
                        email: None,
                    })
                }
            }
            action.branch = Some("refs/heads/mutated".into());
            action.commit_from = Some("0".repeat(40));
            action.commit_to = Some("f".repeat(40));
            action.error = Some("mutated".into());
            for step in &mut action.steps {
                step.name = "mutated".into();
                step.passed = !step.passed;
                step.message = Some("mutated".into());
            }
        }
        Payload::RefUpdate(update) => {
            update.push_id = "mutated".into();
            mutate_repository(&mut update.repository);
            mutate_user(&mut update.pusher);
            update.ref_name = "refs/heads/mutated".into();
            update.before = "0".repeat(40);
            update.after = "f".repeat(40);
            update.push_options.push("mutated".into());
        }
        Payload::PushRejected(rejected) => {
            rejected.push_id = "mutated".into();
            mutate_repository(&mut rejected.repository);
            mutate_user(&mut rejected.pusher);
            rejected.refs = vec!["refs/heads/mutated".into()];
            rejected.reason = "mutated".into();
        }
        Payload::Custom(data) => *data = r#"{"mutated":true}"#.into(),
    }
}

/// Annotates what the handler saw: `id`, `type`, `time`, `source`, `subject` (when set),
/// `payload` (its kind: `proxy-action`, `ref-update`, `push-rejected`, `custom`), `ref` (when
/// the event is about one) and `digest`, an FNV-1a hash of [`canonical`] as 16 hex digits, so
/// a test can check that two handlers saw the same event.
pub fn echo(event: &Event) -> Outcome {
    let mut outcome = Outcome::allow()
        .annotate("id", &event.id)
        .annotate("type", &event.type_)
        .annotate("time", &event.time)
        .annotate("source", &event.source);
    if let Some(subject) = &event.subject {
        outcome = outcome.annotate("subject", subject);
    }
    outcome = outcome.annotate("payload", event.payload.kind());
    if let Some(ref_name) = event.ref_name() {
        outcome = outcome.annotate("ref", ref_name);
    }
    outcome.annotate(
        "digest",
        format!("{:016x}", fnv1a(canonical(event).as_bytes())),
    )
}

/// 64-bit FNV-1a: tiny, stable across builds and platforms, and enough to tell events apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// Every field of the event, in WIT order, one `name=value` per line. Strings are written as
/// `<byte length>:<text>` so no value can pass for a field boundary; absent options are `-`.
pub fn canonical(event: &Event) -> String {
    let mut out = Canonical::default();
    out.str("id", &event.id);
    out.str("source", &event.source);
    out.str("type", &event.type_);
    out.str("time", &event.time);
    out.opt("subject", event.subject.as_deref());
    out.raw("payload", event.payload.kind());
    match &event.payload {
        Payload::ProxyAction(action) => {
            out.raw("operation", action.operation.as_str());
            out.raw("phase", action.phase.as_str());
            out.str("action-id", &action.action_id);
            out.repository(&action.repository);
            match &action.user {
                Some(user) => out.user("user", user),
                None => out.raw("user", "-"),
            }
            out.opt("branch", action.branch.as_deref());
            out.opt("commit-from", action.commit_from.as_deref());
            out.opt("commit-to", action.commit_to.as_deref());
            out.opt("error", action.error.as_deref());
            out.raw("steps", &action.steps.len().to_string());
            for step in &action.steps {
                out.str("step.name", &step.name);
                out.raw("step.passed", if step.passed { "true" } else { "false" });
                out.opt("step.message", step.message.as_deref());
            }
        }
        Payload::RefUpdate(update) => {
            out.raw("kind", update.kind.as_str());
            out.raw("change", update.change.as_str());
            out.str("push-id", &update.push_id);
            out.repository(&update.repository);
            out.user("pusher", &update.pusher);
            out.str("ref-name", &update.ref_name);
            out.str("before", &update.before);
            out.str("after", &update.after);
            out.list("push-options", &update.push_options);
        }
        Payload::PushRejected(rejected) => {
            out.str("push-id", &rejected.push_id);
            out.repository(&rejected.repository);
            out.user("pusher", &rejected.pusher);
            out.list("refs", &rejected.refs);
            out.str("reason", &rejected.reason);
        }
        Payload::Custom(data) => out.str("data", data),
    }
    out.0
}

/// Builds [`canonical`]'s text.
#[derive(Default)]
struct Canonical(String);

impl Canonical {
    fn raw(&mut self, name: &str, value: &str) {
        self.0.push_str(name);
        self.0.push('=');
        self.0.push_str(value);
        self.0.push('\n');
    }

    fn str(&mut self, name: &str, value: &str) {
        self.raw(name, &format!("{}:{value}", value.len()));
    }

    fn opt(&mut self, name: &str, value: Option<&str>) {
        match value {
            Some(value) => self.str(name, value),
            None => self.raw(name, "-"),
        }
    }

    fn list(&mut self, name: &str, values: &[String]) {
        self.raw(name, &values.len().to_string());
        for value in values {
            self.str(name, value);
        }
    }

    fn repository(&mut self, repository: &Repository) {
        self.str("repository.url", &repository.url);
        self.str("repository.project", &repository.project);
        self.str("repository.name", &repository.name);
    }

    fn user(&mut self, name: &str, user: &User) {
        self.str(&format!("{name}.username"), &user.username);
        self.opt(&format!("{name}.email"), user.email.as_deref());
    }
}

/// Tries what a sandboxed handler should not be able to do, and annotates each result as
/// `allowed: <what it got>` or `denied: <the error>`:
/// `fs` (open and read `/etc/passwd`), `env` (the `HOME` variable), `env-count` (how many
/// variables it sees), `args` (its command-line arguments), `net-connect` (TCP to
/// 127.0.0.1:80), `net-bind` (listen on 127.0.0.1, any port), `clock` (seconds since the epoch)
/// and `random` (a hash seeded from the system's randomness). It never panics.
pub fn wasi_probe() -> Outcome {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    let fs = std::fs::File::open("/etc/passwd").and_then(|mut file| {
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map(|bytes| format!("read {bytes} bytes"))
    });
    let env = std::env::var("HOME").map(|home| format!("HOME={home}"));
    let args: Vec<String> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let connect =
        TcpStream::connect("127.0.0.1:80").map(|_| "connected to 127.0.0.1:80".to_owned());
    let bind = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| format!("listening on {addr}"));
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| format!("{}s since the epoch", since.as_secs()));
    let random = format!("{:016x}", RandomState::new().hash_one(0u8));

    Outcome::allow()
        .annotate("fs", verdict(fs))
        .annotate("env", verdict(env))
        .annotate("env-count", std::env::vars_os().count())
        .annotate("args", format!("{} {args:?}", args.len()))
        .annotate("net-connect", verdict(connect))
        .annotate("net-bind", verdict(bind))
        .annotate("clock", verdict(clock))
        .annotate("random", format!("allowed: {random}"))
}

fn verdict<E: std::fmt::Display>(result: std::result::Result<String, E>) -> String {
    match result {
        Ok(what) => format!("allowed: {what}"),
        Err(error) => format!("denied: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use hookwasm_sdk::{RefChange, RefKind, RefUpdate};

    use super::*;

    fn event(subject: Option<&str>) -> Event {
        Event {
            id: "evt-1".into(),
            source: "test".into(),
            type_: "git.branch.deleted".into(),
            time: "2025-01-02T03:04:05Z".into(),
            subject: subject.map(Into::into),
            json: String::new(),
            payload: Payload::RefUpdate(RefUpdate {
                kind: RefKind::Branch,
                change: RefChange::Deleted,
                push_id: "push-1".into(),
                repository: Repository {
                    url: "https://git.example.com/acme/widgets.git".into(),
                    project: "acme".into(),
                    name: "widgets".into(),
                },
                pusher: User {
                    username: "alice".into(),
                    email: None,
                },
                ref_name: "refs/heads/main".into(),
                before: "1".repeat(40),
                after: "0".repeat(40),
                push_options: Vec::new(),
            }),
        }
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn echo_reports_what_it_saw() {
        let outcome = echo(&event(None));
        assert_eq!(outcome.annotation("id"), Some("evt-1"));
        assert_eq!(outcome.annotation("type"), Some("git.branch.deleted"));
        assert_eq!(outcome.annotation("payload"), Some("ref-update"));
        assert_eq!(outcome.annotation("ref"), Some("refs/heads/main"));
        assert_eq!(outcome.annotation("subject"), None);
        assert_eq!(outcome.annotation("digest").map(str::len), Some(16));
    }

    #[test]
    fn the_digest_sees_every_difference() {
        let digest = |event: &Event| echo(event).annotation("digest").map(str::to_owned);
        let original = event(None);
        assert_eq!(digest(&original), digest(&original.clone()));
        assert_ne!(digest(&original), digest(&event(Some(""))));
        let mut mutated = original.clone();
        mutate(&mut mutated);
        assert_ne!(digest(&original), digest(&mutated));
        let mut email = original.clone();
        if let Payload::RefUpdate(update) = &mut email.payload {
            update.pusher.email = Some(String::new());
        }
        assert_ne!(digest(&original), digest(&email));
    }

    #[test]
    fn http_settings_are_read_from_the_config() {
        let chaos: Chaos = serde_json::from_str(
            r#"{"behavior": "http", "url": "http://127.0.0.1:9/x", "method": "POST", "timeoutMs": 50}"#,
        )
        .expect("valid config");
        assert_eq!(chaos.behavior, Behavior::Http);
        assert_eq!(chaos.http.url.as_deref(), Some("http://127.0.0.1:9/x"));
        assert_eq!(chaos.http.method, HttpMethod::Post);
        assert_eq!(chaos.http.timeout_ms, Some(50));
        assert_eq!(chaos.ms, 60_000);
        let sleep: Chaos =
            serde_json::from_str(r#"{"behavior": "sleep", "ms": 5}"#).expect("valid config");
        assert_eq!((sleep.behavior, sleep.ms), (Behavior::Sleep, 5));
        assert_eq!(sleep.http.method, HttpMethod::Get);
        let missing_url: Chaos =
            serde_json::from_str(r#"{"behavior": "http"}"#).expect("valid config");
        assert_eq!(
            missing_url.init().expect_err("no url").message(),
            "chaos: `http` needs a `url` in its config"
        );
    }

    #[test]
    fn the_body_preview_is_cut_at_200_bytes() {
        assert_eq!(preview(b"short"), "short");
        assert_eq!(preview(&[b'a'; 300]).len(), 200);
        let mut cut = vec![b'a'; 199];
        cut.extend_from_slice("é".as_bytes());
        assert_eq!(preview(&cut), format!("{}\u{fffd}", "a".repeat(199)));
    }

    #[test]
    fn strings_are_length_prefixed() {
        let text = canonical(&event(Some("a\nid=1:x")));
        assert!(text.contains("subject=8:a\nid=1:x\n"), "{text}");
    }
}
