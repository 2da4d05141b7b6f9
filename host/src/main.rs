//! The `hookwasm` command: parses arguments and calls the library. Exit codes: 0 success, 1 a
//! handler failed or denied, 2 bad usage or bad input.

use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use hookwasm::app::{self, App, CallSpec, ServeOptions};
use hookwasm::config::{Config, Mode};
use hookwasm::dispatch::Report;
use hookwasm::event::Event;
use hookwasm::git;
use hookwasm::limits::Limits;
use hookwasm::outbox::{self, Selector};
use hookwasm::rebuild::Rebuild;

/// Runs lifecycle event handlers compiled to WebAssembly components, each in its own sandbox.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API: POST /v1/events, GET /v1/handlers, /healthz, /metrics.
    Serve {
        /// The config file listing `eventHandlers`.
        #[arg(long, default_value = "proxy.config.json")]
        config: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: SocketAddr,
        /// On shutdown, how long observers may go on delivering what is due (seconds); the
        /// rest stays in the outbox.
        #[arg(long, default_value_t = 10)]
        drain_secs: u64,
        /// Reload the config and modules when they change (SIGHUP reloads in any case).
        #[arg(long)]
        watch: bool,
        /// Listen on a non-loopback address without API tokens (anyone who can reach it may
        /// post events and retry dead letters): warned about on every start.
        #[arg(long)]
        insecure: bool,
        /// With --watch: when a source file changes, run this shell command in the config's
        /// folder (e.g. "cargo build --release"), then reload. A failed build is logged and the
        /// running version keeps serving.
        #[arg(long, value_name = "COMMAND", requires = "watch")]
        build: Option<String>,
        /// With --build: the folders whose edits start a build (repeatable) [default: the
        /// config's folder].
        #[arg(long = "sources", value_name = "DIR", requires = "build")]
        sources: Vec<PathBuf>,
        /// Once listening, write the bound address (e.g. `127.0.0.1:43117`) and a newline to
        /// this file: how a script that passed `--listen 127.0.0.1:0` learns the port.
        #[arg(long, value_name = "PATH")]
        addr_file: Option<PathBuf>,
    },
    /// Validate the config and load every handler; report every problem at once.
    Check {
        /// The config file listing `eventHandlers`.
        #[arg(long, default_value = "proxy.config.json")]
        config: PathBuf,
    },
    /// Run one module on one event and print its result as a JSON line.
    Call {
        /// The handler component (.wasm).
        module: PathBuf,
        /// The CloudEvent as a JSON file, or `-` for standard input.
        #[arg(long)]
        event: PathBuf,
        /// The handler's config, as JSON.
        #[arg(long, default_value = "null")]
        handler_config: String,
        /// Fuel budget.
        #[arg(long, default_value_t = Limits::DEFAULT.fuel)]
        fuel: u64,
        /// Wall-clock deadline in milliseconds.
        #[arg(long, default_value_t = Limits::DEFAULT.timeout_ms)]
        timeout_ms: u64,
        /// Memory cap in MiB.
        #[arg(long, default_value_t = Limits::DEFAULT.memory_mib)]
        memory_mib: u64,
        /// Grant outbound HTTP to `scheme://host[:port]` (repeatable), as `allowedHosts` does.
        #[arg(long = "allow-host", value_name = "URL")]
        allow_hosts: Vec<String>,
    },
    /// Run every subscribed handler on each event of an NDJSON file (or `-`), printing a JSON
    /// line per invocation.
    Replay {
        /// The config file listing `eventHandlers`.
        #[arg(long, default_value = "proxy.config.json")]
        config: PathBuf,
        /// One CloudEvent per line, or `-` for standard input.
        events: PathBuf,
    },
    /// Print the event types (built-in and declared in `eventTypes`) with the JSON Schema of
    /// each payload, one type's entry, or a valid example event of it.
    Events {
        /// Only this type.
        #[arg(value_name = "TYPE")]
        event_type: Option<String>,
        /// Print a valid example CloudEvent of TYPE instead of its entry.
        #[arg(long, requires = "event_type")]
        example: bool,
        /// The config declaring `eventTypes` [default: proxy.config.json, when it exists].
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Create a handler project: the handler, a test, a sample event.json and a
    /// proxy.config.json that loads it. It builds and runs without edits.
    New {
        /// The project's name (its folder, package and handler name).
        name: String,
        /// A gate: answers allow/deny (refuses force-pushes to protected branches) [default].
        #[arg(long, conflicts_with = "observer")]
        gate: bool,
        /// An observer: watches every event (logs one line per event).
        #[arg(long)]
        observer: bool,
        /// The language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: NewLang,
        /// Rust: depend on hookwasm-sdk at this local path (a checkout's `sdk/`) instead of
        /// this release's git tag.
        #[arg(long, value_name = "DIR")]
        sdk_path: Option<PathBuf>,
        /// Create the project in this folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Show the outbox: observers' deliveries by state, and the age of the oldest open one.
    Deliveries {
        /// The config file (its `eventDelivery` names the outbox).
        #[arg(long, default_value = "proxy.config.json")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List, retry or discard deliveries whose attempts ran out.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
    /// Run as git's pre-receive or post-receive hook: read the push's ref updates on stdin, ask
    /// the gates before the refs move (pre-receive) or tell the observers after (post-receive).
    /// Forwards to a running `hookwasm serve` when HOOKWASM_URL is set.
    GitHook {
        /// Which hook git is running.
        hook: Hook,
        /// The config file listing `eventHandlers` [default: $HOOKWASM_CONFIG].
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Install pre-receive and post-receive hooks running hookwasm into a repository (bare or
    /// not), keeping the hooks already there; run again to update, --uninstall to remove.
    InstallGitHooks {
        /// The repository.
        repo: PathBuf,
        /// The config file the hooks use [default: $HOOKWASM_CONFIG, else proxy.config.json].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Make the hooks forward to the `hookwasm serve` at this http:// URL (they set
        /// HOOKWASM_URL).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Remove hookwasm's hooks and put back the hooks they chained.
        #[arg(long, conflicts_with_all = ["config", "url"])]
        uninstall: bool,
    },
}

/// What to do with dead letters.
#[derive(Subcommand)]
enum DeadLetterAction {
    /// Print dead letters, oldest first.
    List {
        #[command(flatten)]
        select: DeadLetterFilter,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make dead letters pending again, with a fresh set of attempts; a running `serve`
    /// delivers them within a second.
    Retry {
        #[command(flatten)]
        select: DeadLetterFilter,
    },
    /// Delete dead letters for good.
    Discard {
        #[command(flatten)]
        select: DeadLetterFilter,
    },
}

/// Which dead letters a command applies to; retry and discard need a filter or `--all`.
#[derive(clap::Args)]
struct DeadLetterFilter {
    /// The config file (its `eventDelivery` names the outbox).
    #[arg(long, default_value = "proxy.config.json")]
    config: PathBuf,
    /// One dead letter, by the id `list` shows.
    #[arg(long)]
    id: Option<i64>,
    /// One observer's.
    #[arg(long)]
    handler: Option<String>,
    /// One event's (its CloudEvents id).
    #[arg(long)]
    event: Option<String>,
    /// Every dead letter (retry and discard refuse to act on all of them without it).
    #[arg(long, conflicts_with_all = ["id", "handler", "event"])]
    all: bool,
}

/// The languages `hookwasm new` writes.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum NewLang {
    /// A Rust crate on hookwasm-sdk.
    Rust,
    /// A JavaScript module, built with componentize-js.
    Js,
}

/// The git hooks hookwasm implements.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Hook {
    /// Before refs move: gates decide.
    PreReceive,
    /// After refs moved: observers hear.
    PostReceive,
}

/// How a command ended.
enum Exit {
    /// Everything ran and allowed.
    Success,
    /// A handler failed or denied.
    HandlerFailed,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Whatever a git hook writes reaches the pusher as `remote:` lines: warnings only.
    let default_level = match cli.command {
        Command::GitHook { .. } => "warn",
        _ => "info",
    };
    init_logging(default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(cli.command)) {
        Ok(Exit::Success) => ExitCode::SUCCESS,
        Ok(Exit::HandlerFailed) => ExitCode::from(1),
        Err(e) => fail(&e),
    }
}

/// Bad usage or bad input: one readable sentence on stderr, exit 2.
///
/// Only the outermost message is printed, not the chain (`{:#}`): a library error's message is
/// the whole sentence (it names its cause, often with a hint after it), and its cause is kept as
/// `source()` for programs, not for printing twice. Words added here go into a new message
/// (`anyhow!("…: {e}")`), never `.context()`, which this would not print.
fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(2)
}

/// Logs go to stderr: human-readable by default, JSON with `HOOKWASM_LOG_FORMAT=json`; the level
/// comes from `RUST_LOG` (default `default_level`).
fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var("HOOKWASM_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(command: Command) -> anyhow::Result<Exit> {
    match command {
        Command::Serve {
            config,
            listen,
            drain_secs,
            watch,
            insecure,
            build,
            sources,
            addr_file,
        } => {
            let options = ServeOptions {
                listen,
                drain: Duration::from_secs(drain_secs),
                watch,
                insecure,
                rebuild: build.map(|command| rebuild_for(&config, command, sources)),
                addr_file,
            };
            let app = App::open(&config).await?;
            app.serve(options, app::shutdown_signal()).await?;
            Ok(Exit::Success)
        }
        Command::Check { config } => check(&config).await,
        Command::Call {
            module,
            event,
            handler_config,
            fuel,
            timeout_ms,
            memory_mib,
            allow_hosts,
        } => {
            let handler_config = serde_json::from_str(&handler_config)
                .map_err(|e| anyhow::anyhow!("--handler-config is not valid JSON: {e}"))?;
            let spec = CallSpec {
                module,
                handler_config,
                limits: Limits {
                    fuel,
                    timeout_ms,
                    memory_mib,
                },
                allow_hosts,
            };
            call(spec, &event).await
        }
        Command::Replay { config, events } => replay(&config, &events).await,
        Command::Events {
            event_type,
            example,
            config,
        } => events(event_type.as_deref(), example, config),
        Command::New {
            name,
            gate: _,
            observer,
            lang,
            sdk_path,
            dir,
        } => new_project(&dir, name, observer, lang, sdk_path),
        Command::Deliveries { config, json } => deliveries(&config, json).await,
        Command::DeadLetters { action } => dead_letters(action).await,
        Command::GitHook { hook, config } => git_hook(hook, config).await,
        Command::InstallGitHooks {
            repo,
            config,
            url,
            uninstall,
        } => install_git_hooks(&repo, config, url, uninstall),
    }
}

/// `hookwasm events`: the catalogue, one entry, or an example event, as JSON.
fn events(
    event_type: Option<&str>,
    example: bool,
    config: Option<PathBuf>,
) -> anyhow::Result<Exit> {
    let default = PathBuf::from("proxy.config.json");
    let registry = match config {
        Some(path) => Config::load(&path)?.registry,
        None if default.is_file() => Config::load(&default)?.registry,
        None => Arc::new(
            hookwasm::event::registry::Registry::from_sources(None, None, Path::new(".")).map_err(
                |e| anyhow::anyhow!("{}: {e}", hookwasm::event::registry::EVENT_TYPES_ENV),
            )?,
        ),
    };
    let output = match (event_type, example) {
        (None, _) => serde_json::Value::from(registry.catalogue()),
        (Some(event_type), false) => registry.entry(event_type).ok_or_else(|| {
            anyhow::anyhow!("unknown event type {event_type:?}; run `hookwasm events` for the list")
        })?,
        (Some(event_type), true) => registry.example(event_type).map_err(anyhow::Error::msg)?,
    };
    let text = serde_json::to_string_pretty(&output)?;
    write_stdout(format!("{text}\n").as_bytes())?;
    Ok(Exit::Success)
}

/// `hookwasm new`: writes a handler project that builds and runs without edits.
fn new_project(
    dir: &Path,
    name: String,
    observer: bool,
    lang: NewLang,
    sdk_path: Option<PathBuf>,
) -> anyhow::Result<Exit> {
    use hookwasm::scaffold::{self, Kind, Lang, NewProject};
    if sdk_path.is_some() && matches!(lang, NewLang::Js) {
        anyhow::bail!(
            "--sdk-path is for Rust projects; a JavaScript project carries its SDK in hookwasm-sdk/"
        );
    }
    let sdk_path = match sdk_path {
        Some(path) => Some(
            std::path::absolute(&path)
                .map_err(|e| anyhow::anyhow!("--sdk-path {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let project = NewProject {
        name,
        kind: if observer { Kind::Observer } else { Kind::Gate },
        lang: match lang {
            NewLang::Rust => Lang::Rust,
            NewLang::Js => Lang::Js,
        },
        sdk_path,
    };
    let files = scaffold::generate(dir, &project)?;
    let folder = dir.join(&project.name);
    for file in &files {
        println!("created {}", folder.join(file).display());
    }
    let next = match project.lang {
        Lang::Rust => "cargo build --release && cargo test-native",
        Lang::Js => "npm install && npm run build && npm test",
    };
    println!(
        "next: cd {} && {next}; then see README.md",
        folder.display()
    );
    Ok(Exit::Success)
}

/// What `--build` runs, where, and what it watches.
fn rebuild_for(config: &Path, command: String, sources: Vec<PathBuf>) -> Rebuild {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let dir = absolute(config)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let sources = if sources.is_empty() {
        vec![dir.clone()]
    } else {
        sources.iter().map(|s| absolute(s)).collect()
    };
    Rebuild {
        command,
        dir,
        sources,
    }
}

async fn check(config_path: &Path) -> anyhow::Result<Exit> {
    // Broken entries and modules that fail to load are reported together, in entry order.
    let app::CheckReport {
        config,
        loaded,
        errors,
        nats,
    } = app::check(config_path).await?;
    if let Some((url, host)) = nats {
        println!("ok        eventDelivery: NATS JetStream at {url} (host {host})");
    }
    for warning in &config.warnings {
        println!("warning   {warning}");
    }
    for entry in &config.left_to_proxy {
        println!(
            "proxy     eventHandlers[{}] {} (not a .wasm component or {} manifest: left to GitProxy)",
            entry.index,
            entry.target,
            hookwasm::config::MANIFEST_SUFFIX
        );
    }
    for spec in config.handlers.iter().filter(|s| !s.enabled) {
        println!("disabled  {}", spec.name);
    }
    for (spec, handler) in &loaded {
        let mode = match spec.mode {
            Mode::Observe => "observer",
            Mode::Gate => "gate",
        };
        println!(
            "ok        {} ({mode}, sha256:{})",
            spec.name,
            &handler.digest()[..12]
        );
    }
    if errors.is_empty() {
        return Ok(Exit::Success);
    }
    let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
    anyhow::bail!(
        "{}: {} of {} enabled handlers could not be loaded:\n{}",
        config_path.display(),
        errors.len(),
        errors.len() + loaded.len(),
        lines.join("\n")
    )
}

async fn call(spec: CallSpec, event_path: &Path) -> anyhow::Result<Exit> {
    let text = read_input(event_path)?;
    let event = Event::from_slice(text.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: {e}", event_path.display()))?;
    let report = app::call(spec, &event).await?;
    print_line(&report)?;
    Ok(if report.failed_or_denied() {
        Exit::HandlerFailed
    } else {
        Exit::Success
    })
}

/// How long `replay` lets observers' workers finish what they are delivering before it exits.
const REPLAY_GRACE: Duration = Duration::from_secs(5);

async fn replay(config: &Path, events_path: &Path) -> anyhow::Result<Exit> {
    let app = App::open(config).await?;
    app.start_delivering();
    let dispatcher = app.dispatcher();
    let text = read_input(events_path)?;
    // Validate every line first, so a typo on line 900 does not leave 899 events half-replayed.
    let mut events = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", events_path.display(), number + 1);
        let event =
            Event::from_slice(line.as_bytes()).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        // Declared types are checked as ingest checks them.
        dispatcher
            .registry()
            .check(&event)
            .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        events.push(event);
    }
    let mut exit = Exit::Success;
    for event in &events {
        for report in app.replay(std::slice::from_ref(event)).await? {
            if report.failed_or_denied() {
                exit = Exit::HandlerFailed;
            }
            print_line(&report)?;
        }
    }
    // Failed deliveries stay in the outbox for their retries; nothing more is due now.
    app.shutdown(REPLAY_GRACE).await;
    Ok(exit)
}

async fn deliveries(config: &Path, json: bool) -> anyhow::Result<Exit> {
    let counts = app::open_deliveries(config).await?.counts().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&counts)?);
        return Ok(Exit::Success);
    }
    let now = outbox::now();
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "HANDLER", "PENDING", "RETRYING", "CLAIMED", "DONE", "DEAD", "OLDEST OPEN"
    );
    for c in &counts {
        let oldest = c.oldest_open_at.map_or("-".to_owned(), |at| {
            format!("{:.1} s", (now - at) as f64 / 1e3)
        });
        println!(
            "{:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}",
            c.handler, c.pending, c.retrying, c.claimed, c.done, c.dead, oldest
        );
    }
    Ok(Exit::Success)
}

async fn dead_letters(action: DeadLetterAction) -> anyhow::Result<Exit> {
    let selector = |filter: &DeadLetterFilter| Selector {
        id: filter.id,
        handler: filter.handler.clone(),
        event_id: filter.event.clone(),
    };
    let chosen = |filter: &DeadLetterFilter| -> anyhow::Result<Selector> {
        let selector = selector(filter);
        if selector == Selector::default() && !filter.all {
            anyhow::bail!("say which dead letters: --id, --handler, --event, or --all");
        }
        Ok(selector)
    };
    match action {
        DeadLetterAction::List {
            select,
            limit,
            json,
        } => {
            let deliveries = app::open_deliveries(&select.config).await?;
            let letters = deliveries.dead_letters(selector(&select), limit).await?;
            if json {
                for letter in &letters {
                    println!("{}", serde_json::to_string(letter)?);
                }
            } else {
                println!(
                    "{:>8} {:<20} {:<28} {:>8}  CAUSE",
                    "ID", "HANDLER", "EVENT", "ATTEMPTS"
                );
                for l in &letters {
                    println!(
                        "{:>8} {:<20} {:<28} {:>8}  {}",
                        l.id, l.handler, l.event_id, l.attempts, l.cause
                    );
                }
            }
        }
        DeadLetterAction::Retry { select } => {
            let deliveries = app::open_deliveries(&select.config).await?;
            let count = deliveries.retry(chosen(&select)?).await?;
            println!("{count} dead letters are pending again");
        }
        DeadLetterAction::Discard { select } => {
            let deliveries = app::open_deliveries(&select.config).await?;
            let count = deliveries.discard(chosen(&select)?).await?;
            println!("{count} dead letters discarded");
        }
    }
    Ok(Exit::Success)
}

fn read_input(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .lock()
            .read_to_string(&mut text)
            .map_err(|e| anyhow::anyhow!("cannot read standard input: {e}"))?;
        Ok(text)
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
    }
}

fn print_line(report: &Report) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(report)?;
    line.push(b'\n');
    write_stdout(&line)
}

/// Writes to stdout. A reader that went away (`hookwasm events | head`) is not an error: the
/// output is simply no longer wanted.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::anyhow!("cannot write to standard output: {e}"))
        }
        _ => Ok(()),
    }
}

/// A git hook: read and classify git's input, then dispatch in process or forward to `serve`.
/// A rejection prints each reason on stderr (the pusher sees them as `remote:` lines) and exits 1
/// so git refuses the push. Mistakes are found before any handler is loaded.
async fn git_hook(hook: Hook, config: Option<PathBuf>) -> anyhow::Result<Exit> {
    let input = read_input(Path::new("-"))?;
    let updates = git::parse_updates(&input)?;
    let forward = match std::env::var("HOOKWASM_URL")
        .ok()
        .filter(|url| !url.is_empty())
    {
        Some(url) => Some(git::Forwarder::new(&url)?),
        None => None,
    };
    let config = config.or_else(|| std::env::var_os("HOOKWASM_CONFIG").map(PathBuf::from));
    if forward.is_none() && config.is_none() {
        anyhow::bail!(
            "no config: pass --config, or set HOOKWASM_CONFIG (or HOOKWASM_URL to forward to hookwasm serve)"
        );
    }
    let repo = git::Repo::from_hook()?;
    let updates = git::classify_all(&repo, updates)?;
    let push = git::Push::new(repo.path(), |name| std::env::var(name).ok())?;
    let target = match (forward, config) {
        (Some(forwarder), _) => git::Target::Forward(Box::new(forwarder)),
        (None, Some(config)) => {
            git::Target::InProcess(App::open(&config).await?.dispatcher().clone())
        }
        (None, None) => unreachable!("checked above"),
    };
    match hook {
        Hook::PreReceive => match git::pre_receive(&target, &push, &updates).await? {
            git::Decision::Allowed => Ok(Exit::Success),
            git::Decision::Rejected(denials) => {
                for denial in denials {
                    eprintln!(
                        "hookwasm: rejected by {}: {}",
                        denial.handler, denial.reason
                    );
                }
                Ok(Exit::HandlerFailed)
            }
        },
        Hook::PostReceive => {
            git::post_receive(&target, &push, &updates).await?;
            Ok(Exit::Success)
        }
    }
}

fn install_git_hooks(
    repo: &Path,
    config: Option<PathBuf>,
    url: Option<String>,
    uninstall: bool,
) -> anyhow::Result<Exit> {
    let changes = if uninstall {
        git::install::uninstall(repo)?
    } else {
        let config = config
            .or_else(|| std::env::var_os("HOOKWASM_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("proxy.config.json"));
        // Checked now: a hook with a broken config would refuse every push.
        Config::load(&config)?;
        if let Some(url) = &url {
            git::Forwarder::new(url)?;
        }
        let command = git::install::HookCommand {
            program: std::env::current_exe()
                .map_err(|e| anyhow::anyhow!("cannot find the hookwasm binary's path: {e}"))?,
            config: std::path::absolute(&config)
                .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?,
            url,
        };
        git::install::install(repo, &command)?
    };
    for change in changes {
        println!("{change}");
    }
    Ok(Exit::Success)
}
