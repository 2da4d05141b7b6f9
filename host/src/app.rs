//! The composition root: [`App`] opens everything a config describes (the outbox, the compile
//! cache, the sandbox, every handler, the dispatcher and its reloader) in one place, and
//! [`App::serve`] adds the HTTP server, pruning, file watching, signals, traces and shutdown.
//! The CLI, the benches and the git hooks start the host through it, so there is one way to
//! start it, and an embedder can start it without the CLI.
//!
//! [`operations`] holds what operators ask of a running host (dead letters, counts, readiness);
//! [`snapshot`] is the one picture of the handlers every status view is drawn from.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::address::AllowedHost;
use crate::auth::Auth;
use crate::config::{
    Capabilities, Config, ConfigError, DeliveryConfig, EntryError, HandlerSpec, StoreKind,
};
use crate::dispatch::{self, Dispatcher, Drained, Refused, Report};
use crate::event::Event;
use crate::limits::Limits;
use crate::outbox::{self, Store, StoreError, nats::NatsStore, sqlite::SqliteStore};
use crate::rebuild::Rebuild;
use crate::reload::Reloader;
use crate::sandbox::{Handler, LoadError, Sandbox};
use crate::server::{Console, listen::ConnectionLimits};

pub use crate::dispatch::{Deliveries, HandlerSnapshot, NotReady, RetriedLetter, Snapshot};

/// Where compiled modules are cached unless `HOOKWASM_CACHE_DIR` says otherwise: this folder
/// beside the config file.
pub const CACHE_DIR: &str = ".hookwasm/cache";

/// Why the host could not be started or served. Messages name what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The config file is missing or wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The outbox could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The WebAssembly engine could not be set up.
    #[error("cannot set up the WebAssembly engine")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Handlers of the config failed to load: every failure, in entry order.
    #[error("{}: {} handler{} could not be loaded:\n{}", .path.display(), .errors.len(),
        if .errors.len() == 1 { "" } else { "s" }, indented(.errors))]
    Handlers {
        /// The config file.
        path: PathBuf,
        /// Every failure.
        errors: Vec<EntryError>,
    },
    /// `eventDelivery` names NATS without a URL.
    #[error("eventDelivery: \"store\": \"nats\" needs `url`")]
    NatsWithoutUrl,
    /// An operator command asked an in-memory outbox, which only the running host holds.
    #[error(
        "{}: eventDelivery.store is \"memory\", so only the running `hookwasm serve` holds its deliveries; ask it over HTTP (GET /v1/deliveries, /v1/dead-letters)",
        .path.display()
    )]
    MemoryOutbox {
        /// The config file.
        path: PathBuf,
    },
    /// A non-loopback address without API tokens, and no `--insecure`.
    #[error(
        "refusing to listen on {addr} without API tokens: anyone who can reach it could post events, read them and retry dead letters; configure `auth` (or {}), listen on 127.0.0.1, or pass --insecure",
        crate::auth::AUTH_FILE_ENV
    )]
    Unprotected {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file `--addr-file` names could not be written.
    #[error("cannot write the listening address to {}", .path.display())]
    AddrFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A watcher, signal handler or exporter that `serve` needs could not be started.
    #[error("{what}")]
    Start {
        /// What could not be started.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A submission was refused.
    #[error(transparent)]
    Refused(#[from] Refused),
}

fn indented(errors: &[EntryError]) -> String {
    let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
    lines.join("\n")
}

/// How [`App::serve`] listens, rebuilds and stops.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The address to listen on (port 0: any free port; see `addr_file`).
    pub listen: SocketAddr,
    /// On shutdown, how long observers may go on delivering what is due.
    pub drain: Duration,
    /// Reload when the config or a module changes.
    pub watch: bool,
    /// Allow a non-loopback address without API tokens.
    pub insecure: bool,
    /// Rebuild from sources (with `watch`).
    pub rebuild: Option<Rebuild>,
    /// Once listening, write the bound address (`127.0.0.1:43117` and a newline) to this file,
    /// so a script or test started with port 0 learns the port without reading the log.
    pub addr_file: Option<PathBuf>,
}

impl ServeOptions {
    /// Listen on `listen` with the CLI's defaults: a 10 s drain, no watching.
    pub fn new(listen: SocketAddr) -> ServeOptions {
        ServeOptions {
            listen,
            drain: Duration::from_secs(10),
            watch: false,
            insecure: false,
            rebuild: None,
            addr_file: None,
        }
    }
}

/// A started host: the config, the sandbox with its cache, every handler in service in the
/// dispatcher (observers not yet delivering: see [`App::start_delivering`]), and the reloader.
#[derive(Debug)]
pub struct App {
    config: Config,
    dispatcher: Arc<Dispatcher>,
    reloader: Arc<Reloader>,
}

/// Opens an [`App`] from a parsed config, with what the defaults would not give: another
/// outbox (a bench's), another cache folder, another sandbox.
#[derive(Debug)]
pub struct AppBuilder {
    config: Config,
    store: Option<Arc<dyn Store>>,
    sandbox: Option<Sandbox>,
    cache: Option<PathBuf>,
}

impl AppBuilder {
    /// Use this outbox instead of the one `eventDelivery` names.
    pub fn store(mut self, store: Arc<dyn Store>) -> AppBuilder {
        self.store = Some(store);
        self
    }

    /// Use this sandbox (its tuning, its cache) instead of a new one caching beside the config.
    pub fn sandbox(mut self, sandbox: Sandbox) -> AppBuilder {
        self.sandbox = Some(sandbox);
        self
    }

    /// Cache compiled modules in `dir` instead of [`cache_dir`]'s folder.
    pub fn cache_dir(mut self, dir: &Path) -> AppBuilder {
        self.cache = Some(dir.to_owned());
        self
    }

    /// Opens the outbox, loads every enabled handler and puts them in service. Any handler
    /// that fails to load makes it an error listing all of them.
    pub async fn open(self) -> Result<App, AppError> {
        let AppBuilder {
            config,
            store,
            sandbox,
            cache,
        } = self;
        for warning in &config.warnings {
            tracing::warn!("{}: {warning}", config.path.display());
        }
        let outbox = match store {
            Some(store) => store,
            None => open_outbox(&config.delivery).await?,
        };
        let sandbox = match sandbox {
            Some(sandbox) => sandbox,
            None => new_sandbox(config.handlers.len())?
                .with_cache(&cache.unwrap_or_else(|| cache_dir(&config.path))),
        };
        let (loaded, errors) = dispatch::load_handlers(&sandbox, &config).await;
        if !errors.is_empty() {
            return Err(AppError::Handlers {
                path: config.path.clone(),
                errors,
            });
        }
        for (spec, handler) in &loaded {
            tracing::info!(
                handler = %spec.name,
                version = %&handler.digest()[..12],
                mode = %spec.mode,
                events = ?spec.filter.event_patterns(),
                "loaded"
            );
        }
        let dispatcher = Arc::new(Dispatcher::start(loaded, outbox).await);
        dispatcher.set_registry(config.registry.clone());
        config.warn_undeclared_types();
        let reloader = Arc::new(Reloader::new(&config.path, sandbox, dispatcher.clone()));
        Ok(App {
            config,
            dispatcher,
            reloader,
        })
    }
}

impl App {
    /// Loads the config at `path` and opens everything it describes (see [`AppBuilder::open`]).
    pub async fn open(path: &Path) -> Result<App, AppError> {
        App::builder(Config::load(path)?).open().await
    }

    /// Opens from a parsed config, with overrides.
    pub fn builder(config: Config) -> AppBuilder {
        AppBuilder {
            config,
            store: None,
            sandbox: None,
            cache: None,
        }
    }

    /// The config the host was started with (a reload does not change it).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The dispatcher: submit events, replay, read the snapshot.
    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }

    /// Applies config and module changes to the running dispatcher.
    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// Starts the observers' delivery workers (off until then, so a command that only asks
    /// gates never makes deliveries).
    pub fn start_delivering(&self) {
        self.dispatcher.start_delivering();
    }

    /// Serves the HTTP API until `shutdown` completes, then drains (see
    /// [`App::shutdown`]). Observers deliver, old deliveries are pruned every hour, SIGHUP
    /// reloads, and traces are exported when `OTEL_EXPORTER_OTLP_*` is set.
    pub async fn serve(
        &self,
        options: ServeOptions,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Drained, AppError> {
        let ServeOptions {
            listen,
            drain,
            watch,
            insecure,
            rebuild,
            addr_file,
        } = options;
        let telemetry = crate::trace::Telemetry::from_env().map_err(|e| AppError::Start {
            what: "cannot export traces",
            source: Box::new(e),
        })?;
        if telemetry.is_some() {
            tracing::info!("exporting traces over OTLP (OTEL_EXPORTER_OTLP_* is set)");
        }
        let auth = Auth::new(self.config.auth.clone());
        if !auth.enabled() && !listen.ip().is_loopback() {
            if !insecure {
                return Err(AppError::Unprotected { addr: listen });
            }
            tracing::warn!(
                "--insecure: listening on {listen} without API tokens; anyone who can reach it may \
                 post events, read them and retry dead letters"
            );
        }
        self.start_delivering();
        prune_every_hour(self.dispatcher.deliveries(), self.config.delivery.retention);
        if watch {
            let watching = self.reloader.clone().watch().map_err(|e| AppError::Start {
                what: "cannot watch the config and modules",
                source: e.into(),
            })?;
            tokio::spawn(watching);
            tracing::info!(
                "watching {} and its modules for changes",
                self.config.path.display()
            );
        }
        if let Some(rebuild) = rebuild {
            let (command, sources) = (rebuild.command.clone(), rebuild.sources.clone());
            let building = rebuild
                .watch(self.reloader.clone())
                .map_err(|e| AppError::Start {
                    what: "cannot watch the sources",
                    source: e.into(),
                })?;
            tokio::spawn(building);
            tracing::info!(?sources, "rebuilding with `{command}` when sources change");
        }
        reload_on_sighup(self.reloader.clone())?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| AppError::Listen {
                addr: listen,
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| AppError::Listen {
            addr: listen,
            source,
        })?;
        tracing::info!("listening on http://{bound}");
        if let Some(path) = addr_file {
            write_addr_file(&path, bound)?;
        }
        let console = Console {
            dispatcher: self.dispatcher.clone(),
            auth,
            reloader: Some(self.reloader.clone()),
        };
        let router = crate::server::app(console);
        let limits = ConnectionLimits::from_env();
        tracing::info!(
            "accepting up to {} connections; request heads and bodies within {} s each",
            limits.max_connections,
            limits.client_timeout.as_secs()
        );
        crate::server::listen::serve(listener, router, limits, shutdown).await;
        tracing::info!(
            "shutting down: observers deliver what is due for up to {} s",
            drain.as_secs()
        );
        let drained = self.shutdown(drain).await;
        if let Some(telemetry) = telemetry {
            let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        }
        Ok(drained)
    }

    /// Stops the observers' workers, letting them deliver what is due for up to `grace`, and
    /// says in the log what is left in the outbox and whether it survives.
    pub async fn shutdown(&self, grace: Duration) -> Drained {
        let drained = self.dispatcher.shutdown(grace).await;
        report_left(drained.left, &self.config.delivery);
        drained
    }

    /// Runs every subscribed handler on each event, in order, through the outbox as `serve`
    /// would; returns the reports of each event's invocations. Every event is checked against
    /// the declared types first, so a bad one leaves nothing half-replayed.
    pub async fn replay(&self, events: &[Event]) -> Result<Vec<Report>, AppError> {
        let mut reports = Vec::new();
        for event in events {
            reports.extend(self.dispatcher.replay(event).await?);
        }
        Ok(reports)
    }
}

/// Writes `addr` to `path` atomically (a reader polling for the file never sees half of it).
fn write_addr_file(path: &Path, addr: SocketAddr) -> Result<(), AppError> {
    let error = |source| AppError::AddrFile {
        path: path.to_owned(),
        source,
    };
    let partial = path.with_extension("partial");
    std::fs::write(&partial, format!("{addr}\n")).map_err(error)?;
    std::fs::rename(&partial, path).map_err(error)
}

/// What `hookwasm check` found: every handler loaded, every problem, and the shared outbox.
#[derive(Debug)]
pub struct CheckReport {
    /// The config, as far as it parsed.
    pub config: Config,
    /// Handlers that loaded, in entry order.
    pub loaded: Vec<(HandlerSpec, Handler)>,
    /// Broken entries and modules that failed to load, in entry order.
    pub errors: Vec<EntryError>,
    /// A NATS outbox that answered: its redacted URL and this host's id there.
    pub nats: Option<(String, String)>,
}

/// Validates the config and loads every handler, reporting every problem at once; a shared
/// outbox must answer now, as `serve` would need it to.
pub async fn check(config_path: &Path) -> Result<CheckReport, AppError> {
    let (config, mut errors) = Config::load_partial(config_path)?;
    let sandbox = new_sandbox(config.handlers.len())?.with_cache(&cache_dir(config_path));
    let (loaded, load_errors) = dispatch::load_handlers(&sandbox, &config).await;
    errors.extend(load_errors);
    errors.sort_by_key(|e| e.index);
    let nats = match (config.delivery.store, &config.delivery.nats) {
        (StoreKind::Nats, Some(nats)) => {
            let store = NatsStore::connect(nats, config.delivery.retention).await?;
            Some((outbox::nats::redacted(&nats.url), store.host().to_owned()))
        }
        _ => None,
    };
    Ok(CheckReport {
        config,
        loaded,
        errors,
        nats,
    })
}

/// One module on one event, as `hookwasm call` runs it: limits and grants from its flags.
#[derive(Debug, Clone)]
pub struct CallSpec {
    /// The component.
    pub module: PathBuf,
    /// The handler's config.
    pub handler_config: serde_json::Value,
    /// Fuel, deadline and memory.
    pub limits: Limits,
    /// Outbound HTTP grants, as `scheme://host[:port]`.
    pub allow_hosts: Vec<String>,
}

/// Why `call` could not run the module. The flags to fix are named.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// A limit is zero.
    #[error("--fuel, --timeout-ms and --memory-mib must be greater than zero")]
    ZeroLimit,
    /// An `--allow-host` is not a URL.
    #[error("--allow-host: {0}")]
    AllowHost(String),
    /// The engine could not be set up.
    #[error(transparent)]
    Engine(#[from] AppError),
    /// The module did not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// `init` refused the handler config.
    #[error(
        "init refused the handler config ({status}): {message}; pass the config it expects with --handler-config '<json>'"
    )]
    Init {
        /// The status `init` returned.
        status: String,
        /// Its message.
        message: String,
    },
}

/// Loads `spec`'s module (caching it in the user's cache folder: `call` has no config folder)
/// and runs it on `event`.
pub async fn call(spec: CallSpec, event: &Event) -> Result<Report, CallError> {
    let limits = spec.limits;
    if limits.fuel == 0 || limits.timeout_ms == 0 || limits.memory_mib == 0 {
        return Err(CallError::ZeroLimit);
    }
    let allowed_hosts = spec
        .allow_hosts
        .iter()
        .map(|h| AllowedHost::parse(h).map_err(|e| CallError::AllowHost(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let spec = HandlerSpec::for_module(
        &spec.module,
        spec.handler_config,
        limits,
        Capabilities {
            allowed_hosts,
            smtp: None,
        },
    );
    // A large module (a JavaScript handler is ~12 MB) is not compiled again on the next try.
    let mut sandbox = new_sandbox(1)?;
    if let Some(dir) = crate::sandbox::user_cache_dir() {
        sandbox = sandbox.with_cache(&dir);
    }
    let handler = dispatch::load_handler(&sandbox, &spec)
        .await
        .map_err(|e| match e {
            // The config came from the command line, not from an entry: say which flag to fix.
            LoadError::Init { status, message } => CallError::Init {
                status: status.to_string(),
                message,
            },
            other => CallError::Load(other),
        })?;
    let invocation = handler.on_event(event).await;
    Ok(Report::new(
        &spec.name,
        handler.digest(),
        None,
        event.id(),
        invocation,
    ))
}

/// The process's sandbox, its pool sized for `handlers` if it is the first (see
/// [`Sandbox::for_handlers`]).
fn new_sandbox(handlers: usize) -> Result<Sandbox, AppError> {
    Sandbox::for_handlers(handlers).map_err(|e| AppError::Engine(e.into()))
}

/// Where compiled modules are cached: `HOOKWASM_CACHE_DIR`, or [`CACHE_DIR`] beside the
/// config file.
pub fn cache_dir(config_path: &Path) -> PathBuf {
    match std::env::var_os("HOOKWASM_CACHE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => config_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(CACHE_DIR),
    }
}

/// Opens the outbox `eventDelivery` describes.
pub async fn open_outbox(delivery: &DeliveryConfig) -> Result<Arc<dyn Store>, AppError> {
    Ok(match (delivery.store, &delivery.nats) {
        (StoreKind::Sqlite, _) => Arc::new(SqliteStore::open(&delivery.path, delivery.sync)?),
        (StoreKind::Memory, _) => Arc::new(SqliteStore::in_memory()?),
        (StoreKind::Nats, Some(nats)) => {
            Arc::new(NatsStore::connect(nats, delivery.retention).await?)
        }
        (StoreKind::Nats, None) => return Err(AppError::NatsWithoutUrl),
    })
}

/// Says what shutdown left in the outbox, and whether it survives.
fn report_left(left: u64, delivery: &DeliveryConfig) {
    match (left, delivery.store) {
        (0, _) => tracing::info!("no delivery left open"),
        (left, StoreKind::Sqlite) => tracing::info!(
            "{left} deliveries stay in {} and are made after the next start",
            delivery.path.display()
        ),
        (left, StoreKind::Memory) => tracing::warn!(
            "{left} deliveries were not made and are lost: eventDelivery.store is \"memory\""
        ),
        (left, StoreKind::Nats) => {
            tracing::info!("{left} deliveries stay in NATS JetStream, for any host sharing it")
        }
    }
}

/// Every hour (and now), deletes delivered rows older than the retention period.
fn prune_every_hour(deliveries: Deliveries, retention: Duration) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            every.tick().await;
            match deliveries.prune_older_than(retention).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "old deliveries pruned from the outbox"),
                Err(e) => tracing::warn!("cannot prune the outbox: {e}"),
            }
        }
    });
}

/// `kill -HUP` reloads the config and modules, with or without `--watch`. The handler is in
/// place when this returns (before it, SIGHUP would end the process).
fn reload_on_sighup(reloader: Arc<Reloader>) -> Result<(), AppError> {
    #[cfg(unix)]
    {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| AppError::Start {
                what: "cannot handle SIGHUP",
                source: Box::new(e),
            })?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading");
                reloader.reload().await;
            }
        });
    }
    #[cfg(not(unix))]
    let _ = reloader;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM: what `serve` stops on.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// The outbox `config_path`'s `eventDelivery` names, for an operator command run beside a
/// `serve` (or without one). An in-memory outbox is refused: only the running host has it.
pub async fn open_deliveries(config_path: &Path) -> Result<Deliveries, AppError> {
    let config = Config::load(config_path)?;
    if config.delivery.store == StoreKind::Memory {
        return Err(AppError::MemoryOutbox { path: config.path });
    }
    Ok(Deliveries::new(open_outbox(&config.delivery).await?))
}
