//! `proxy.config.json`: the `eventHandlers` list and its validation.
//!
//! The file is shared with the proxy, so unknown top-level keys are ignored; inside
//! `eventHandlers` every field is ours and an unknown one is an error. Loading never stops at the
//! first mistake: it collects one [`EntryError`] per broken entry so `hookwasm check` can report
//! them all at once.

use std::fmt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobMatcher};
use serde::Deserialize;
use serde_json::Value;

use crate::address::AllowedHost;
use crate::auth::{AUTH_FILE_ENV, AuthConfig, AuthError};
use crate::limits::Limits;
pub mod lint;
mod smtp;
pub use smtp::{RecipientPattern, SmtpCredentials, SmtpGrant, SmtpTls};

/// Defaults of an entry's fields; documented in the README's config reference. Those of
/// `limits` are [`Limits::DEFAULT`].
pub mod defaults {
    /// Deliveries an observer may have open in the outbox before producers are pushed back.
    pub const QUEUE_CAPACITY: usize = 100_000;
    /// Consecutive failures that quarantine a handler.
    pub const QUARANTINE_AFTER_FAILURES: u32 = 5;
    /// First quarantine backoff; it doubles after each failed probe.
    pub const QUARANTINE_BACKOFF_MS: u64 = 1_000;
    /// Longest quarantine backoff.
    pub const QUARANTINE_MAX_BACKOFF_MS: u64 = 300_000;
    /// Attempts per delivery before it is dead-lettered (Standard Webhooks makes 8).
    pub const RETRY_MAX_ATTEMPTS: u32 = 8;
    /// Wait before the first retry; each further retry waits 5× longer, up to the cap. With
    /// these defaults: 5 s, 25 s, 2 min, 10 min, 52 min, 4.3 h, 10 h.
    pub const RETRY_BACKOFF_MS: u64 = 5_000;
    /// Longest wait between attempts: 10 hours.
    pub const RETRY_MAX_BACKOFF_MS: u64 = 36_000_000;
    /// Where the outbox lives, relative to the config file's folder.
    pub const OUTBOX_PATH: &str = ".hookwasm/outbox.db";
    /// How long delivered rows (and the event ids that make repeats duplicates) are kept.
    pub const RETENTION_HOURS: u64 = 168;
}

/// The parsed, validated configuration: every enabled and disabled handler, in file order.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    /// The handlers, in the order they are listed.
    pub handlers: Vec<HandlerSpec>,
    /// Where and how observers' deliveries are stored (`eventDelivery`).
    pub delivery: DeliveryConfig,
    /// API tokens (`auth`, or the file `HOOKWASM_AUTH_FILE` names); `None` runs without.
    pub auth: Option<AuthConfig>,
    /// `eventHandlers` entries that are Node modules, not hookwasm's: in a file shared with
    /// GitProxy, its own event handlers (such as the hookwasm bridge). Listed by `check`.
    pub left_to_proxy: Vec<ProxyEntry>,
    /// Mistakes that do not stop the host but most likely are not what the operator meant
    /// (see `config::lint`): `check` prints them, `serve` logs them.
    pub warnings: Vec<String>,
    /// Declared event types (`eventTypes`, `strictTypes`, or the file `HOOKWASM_EVENT_TYPES`
    /// names).
    pub registry: std::sync::Arc<crate::event::registry::Registry>,
}

/// An `eventHandlers` entry that hookwasm leaves to GitProxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyEntry {
    /// Its place in `eventHandlers`, from 0.
    pub index: usize,
    /// The module name or path, as written.
    pub target: String,
}

/// The file name ending that marks a handler manifest: a JavaScript module GitProxy can import
/// (it finds no plugin in it) whose `export default` is a hookwasm entry object.
pub const MANIFEST_SUFFIX: &str = ".hookwasm.mjs";

/// `eventDelivery`: the outbox that observers' deliveries go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// A SQLite file (durable) or memory (lost when the process ends).
    pub store: StoreKind,
    /// The SQLite file, absolute.
    pub path: PathBuf,
    /// When a commit reaches the disk.
    pub sync: crate::outbox::FsyncPolicy,
    /// How long delivered rows are kept; a repeated event id within it is a duplicate.
    pub retention: std::time::Duration,
    /// The JetStream connection and layout, for `"store": "nats"`.
    pub nats: Option<crate::outbox::nats::NatsConfig>,
}

/// Which outbox store to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A SQLite file: accepted events survive crashes and restarts.
    #[default]
    Sqlite,
    /// The same store in memory: faster, and lost when the process ends.
    Memory,
    /// NATS JetStream, shared by every host that names the same servers.
    Nats,
}

/// One `eventHandlers` entry after validation; module paths are absolute.
#[derive(Debug, Clone)]
pub struct HandlerSpec {
    /// Unique name: given, or the module's file stem.
    pub name: String,
    /// Position in `eventHandlers`, for error messages.
    pub index: usize,
    /// Absolute path of the component file.
    pub module: PathBuf,
    /// Expected SHA-256 of the module file, lower-case hex.
    pub sha256: Option<String>,
    /// Disabled handlers are validated but not loaded.
    pub enabled: bool,
    /// Observer (fire-and-forget) or gate (answers allow/deny).
    pub mode: Mode,
    /// Which events reach this handler.
    pub filter: Filter,
    /// The handler's own configuration, passed to `init` and readable through `host.config`.
    pub config: Value,
    /// Per-event resource limits.
    pub limits: Limits,
    /// What a failed gate counts as.
    pub failure_policy: FailurePolicy,
    /// Capacity of an observer's queue.
    pub queue_capacity: usize,
    /// When repeated failures take the handler out of service.
    pub quarantine: QuarantinePolicy,
    /// How an observer's failed deliveries are retried.
    pub retry: RetryPolicy,
    /// What the handler may reach beyond logging and its config.
    pub capabilities: Capabilities,
    /// The entry as written (a bare path as `{"module": path}`): a reload compares these to
    /// tell a changed entry from an unchanged one.
    pub source: Value,
}

impl HandlerSpec {
    /// A spec for running one module directly (`hookwasm call`): an observer subscribed to
    /// everything, with the given config, limits and capabilities.
    pub fn for_module(
        module: &Path,
        config: Value,
        limits: Limits,
        capabilities: Capabilities,
    ) -> HandlerSpec {
        let name = module
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "handler".into());
        HandlerSpec {
            name,
            index: 0,
            module: module.to_owned(),
            sha256: None,
            enabled: true,
            mode: Mode::Observe,
            filter: Filter::default(),
            config,
            limits,
            failure_policy: FailurePolicy::Open,
            queue_capacity: defaults::QUEUE_CAPACITY,
            quarantine: QuarantinePolicy::default(),
            retry: RetryPolicy::default(),
            capabilities,
            source: Value::Null,
        }
    }
}

/// Capabilities granted to a handler. The default grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Where outbound HTTP may go; empty means no outbound HTTP at all.
    pub allowed_hosts: Vec<AllowedHost>,
    /// The SMTP relay the handler may send e-mail through; `None`: no e-mail at all.
    pub smtp: Option<SmtpGrant>,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Observe => "observe",
            Mode::Gate => "gate",
        })
    }
}

/// How the producer relates to a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Fire-and-forget: queued, never waited for, failures never reach the producer.
    #[default]
    Observe,
    /// Synchronous: its verdict decides whether the action goes on.
    Gate,
}

impl Mode {
    /// `observe` or `gate`, as in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Observe => "observe",
            Mode::Gate => "gate",
        }
    }
}

/// What a gate that fails (error, trap, out of fuel, timeout) counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// A failure denies (the default for gates): safe when the gate enforces a rule.
    Closed,
    /// A failure allows: for advisory gates that must never block work.
    Open,
}

/// When repeated failures quarantine a handler, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct QuarantinePolicy {
    /// Consecutive failures that open the breaker.
    pub after_failures: u32,
    /// First backoff in milliseconds; doubled after each failed probe.
    pub backoff_ms: u64,
    /// Cap on the backoff in milliseconds.
    pub max_backoff_ms: u64,
}

impl Default for QuarantinePolicy {
    fn default() -> Self {
        QuarantinePolicy {
            after_failures: defaults::QUARANTINE_AFTER_FAILURES,
            backoff_ms: defaults::QUARANTINE_BACKOFF_MS,
            max_backoff_ms: defaults::QUARANTINE_MAX_BACKOFF_MS,
        }
    }
}

impl QuarantinePolicy {
    /// The first backoff.
    pub fn backoff(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.backoff_ms)
    }

    /// The longest backoff.
    pub fn max_backoff(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.max_backoff_ms)
    }
}

/// How an observer's failed deliveries are retried: exponential backoff (×5 per attempt, capped)
/// with ±20% jitter, then dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; then the delivery is dead-lettered.
    pub max_attempts: u32,
    /// Wait before the first retry, in milliseconds.
    pub backoff_ms: u64,
    /// Cap on the wait, in milliseconds.
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: defaults::RETRY_MAX_ATTEMPTS,
            backoff_ms: defaults::RETRY_BACKOFF_MS,
            max_backoff_ms: defaults::RETRY_MAX_BACKOFF_MS,
        }
    }
}

impl RetryPolicy {
    /// How long to wait after failed attempt number `attempt` (from 1), before jitter.
    pub fn backoff(&self, attempt: u32) -> std::time::Duration {
        let factor = 5u64.saturating_pow(attempt.saturating_sub(1));
        let millis = self
            .backoff_ms
            .saturating_mul(factor)
            .min(self.max_backoff_ms);
        std::time::Duration::from_millis(millis)
    }

    /// [`RetryPolicy::backoff`] spread by ±20%, so a burst of failures does not retry in step.
    pub fn backoff_with_jitter(&self, attempt: u32) -> std::time::Duration {
        self.backoff(attempt).mul_f64(0.8 + 0.4 * fastrand::f64())
    }
}

/// Which events a handler subscribes to: event-type globs and ref globs.
///
/// `*` matches within one `/`-separated segment and `**` across segments, so `push.*` matches
/// every push phase and `refs/heads/release/*` matches `refs/heads/release/1.0`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    events: Vec<(String, GlobMatcher)>,
    refs: Vec<(String, GlobMatcher)>,
}

impl Filter {
    /// Builds a filter from glob patterns; an empty list matches everything.
    pub fn new(events: &[String], refs: &[String]) -> Result<Filter, PatternError> {
        Ok(Filter {
            events: compile_globs(events, "events")?,
            refs: compile_globs(refs, "refs")?,
        })
    }

    /// Whether an event of `event_type` about `refs` reaches the handler. With a `refs` filter,
    /// an event about no ref (a custom event, say) does not match.
    pub fn matches<'a>(&self, event_type: &str, mut refs: impl Iterator<Item = &'a str>) -> bool {
        let type_ok =
            self.events.is_empty() || self.events.iter().any(|(_, g)| g.is_match(event_type));
        let ref_ok =
            self.refs.is_empty() || refs.any(|r| self.refs.iter().any(|(_, g)| g.is_match(r)));
        type_ok && ref_ok
    }

    /// The event-type patterns as written (empty: all events).
    pub fn event_patterns(&self) -> Vec<&str> {
        self.events.iter().map(|(p, _)| p.as_str()).collect()
    }

    /// The ref patterns as written (empty: any ref or none).
    pub fn ref_patterns(&self) -> Vec<&str> {
        self.refs.iter().map(|(p, _)| p.as_str()).collect()
    }
}

/// A filter pattern that is not a valid glob.
#[derive(Debug, thiserror::Error)]
#[error("`{field}` has an invalid pattern {pattern:?}: {}", .source.kind())]
pub struct PatternError {
    /// `events` or `refs`.
    pub field: &'static str,
    /// The pattern as written.
    pub pattern: String,
    /// globset's error.
    pub source: globset::Error,
}

fn compile_globs(
    patterns: &[String],
    field: &'static str,
) -> Result<Vec<(String, GlobMatcher)>, PatternError> {
    patterns
        .iter()
        .map(|p| {
            let glob: Glob = GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|source| PatternError {
                    field,
                    pattern: p.clone(),
                    source,
                })?;
            Ok((p.clone(), glob.compile_matcher()))
        })
        .collect()
}

/// Why the configuration as a whole could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid JSON, or `eventHandlers` is not a list.
    #[error("{path}: {message}")]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// What is wrong, with line and column where known (serde_json's text included).
        message: String,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// `eventDelivery` is invalid.
    #[error("{path}: `eventDelivery` {error}")]
    Delivery {
        /// The config file.
        path: PathBuf,
        /// What is wrong and what to do (its cause is the source).
        #[source]
        error: DeliveryError,
    },
    /// `auth` (in the file or from `HOOKWASM_AUTH_FILE`) is invalid.
    #[error("{path}: {error}")]
    Auth {
        /// The config file.
        path: PathBuf,
        /// What is wrong and what to do (its cause is the source).
        #[source]
        error: AuthError,
    },
    /// `eventTypes` or `strictTypes` is invalid.
    #[error("{path}: {error}")]
    EventTypes {
        /// The config file.
        path: PathBuf,
        /// What is wrong and what to do (its cause is the source).
        #[source]
        error: crate::event::registry::RegistryError,
    },
    /// One or more entries are invalid; each is reported.
    #[error("{path}: {} invalid event handler entr{}:\n{}", .errors.len(), if .errors.len() == 1 { "y" } else { "ies" }, EntryErrors(.errors))]
    Entries {
        /// The config file.
        path: PathBuf,
        /// One error per broken entry.
        errors: Vec<EntryError>,
    },
}

/// One broken `eventHandlers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    /// Position in `eventHandlers`.
    pub index: usize,
    /// The entry's name, when it got far enough to have one.
    pub name: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(
                f,
                "eventHandlers[{}] ({name}): {}",
                self.index, self.message
            ),
            None => write!(f, "eventHandlers[{}]: {}", self.index, self.message),
        }
    }
}

struct EntryErrors<'a>(&'a [EntryError]);

impl fmt::Display for EntryErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// The top level of `proxy.config.json`: only `eventHandlers` is ours.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    #[serde(default)]
    event_handlers: Vec<Value>,
    event_delivery: Option<Value>,
    auth: Option<Value>,
    /// hookwasm's own keys; see `event::registry` for sharing the file with GitProxy.
    event_types: Option<Value>,
    strict_types: Option<Value>,
}

/// `eventDelivery` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeliveryEntry {
    #[serde(default)]
    store: StoreKind,
    path: Option<String>,
    #[serde(default)]
    sync: crate::outbox::FsyncPolicy,
    retention_hours: Option<u64>,
    // `"store": "nats"` only; see outbox::nats::NatsConfig.
    url: Option<String>,
    creds_file: Option<String>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    tls_ca_file: Option<String>,
    replicas: Option<usize>,
    ack_wait_ms: Option<u64>,
    dedupe_window_secs: Option<u64>,
    host_id: Option<String>,
}

/// An object entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Entry {
    name: Option<String>,
    module: String,
    sha256: Option<String>,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    refs: Vec<String>,
    #[serde(default)]
    config: Value,
    #[serde(default)]
    limits: Limits,
    failure_policy: Option<FailurePolicy>,
    queue_capacity: Option<usize>,
    #[serde(default)]
    quarantine: QuarantinePolicy,
    retry: Option<RetryPolicy>,
    #[serde(default)]
    capabilities: CapabilitiesEntry,
}

/// `capabilities` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CapabilitiesEntry {
    #[serde(default)]
    allowed_hosts: Vec<String>,
    smtp: Option<smtp::SmtpEntry>,
}

fn enabled_by_default() -> bool {
    true
}

impl Config {
    /// Warns, once per handler and type, about each literal type a handler subscribes to that
    /// is neither built in nor declared under `eventTypes` (see [`lint::warn_undeclared`]).
    pub fn warn_undeclared_types(&self) {
        lint::warn_undeclared(&self.handlers, &self.registry);
    }

    /// Reads and validates a config file. Module files are not opened here: that is the loader's
    /// job, so `check` can report syntax and module problems together.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Like [`Config::load`], but keeps the valid entries when some are broken and returns the
    /// broken ones beside them, so `check` can also load the valid ones and report everything
    /// in one run. An unreadable file or invalid JSON is still an error.
    pub fn load_partial(path: &Path) -> Result<(Config, Vec<EntryError>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse_partial(&text, path)
    }

    /// Parses config text as if it were read from `path` (relative module paths resolve against
    /// the folder of `path`).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let (config, errors) = Config::parse_partial(text, path)?;
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Entries {
                path: path.to_owned(),
                errors,
            })
        }
    }

    /// Parses config text, keeping the valid entries and returning the broken ones beside them.
    pub fn parse_partial(
        text: &str,
        path: &Path,
    ) -> Result<(Config, Vec<EntryError>), ConfigError> {
        let file: File = serde_json::from_str(text).map_err(|source| {
            let message = match source.classify() {
                serde_json::error::Category::Data => format!(
                    "`eventHandlers` must be a list of module paths or handler objects ({source})"
                ),
                _ => format!("not valid JSON: {source}"),
            };
            ConfigError::Syntax {
                path: path.to_owned(),
                message,
                source,
            }
        })?;
        // Absolute, so module paths stay right whatever the working directory is later.
        let folder = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf());
        let delivery =
            parse_delivery(file.event_delivery, &base).map_err(|error| ConfigError::Delivery {
                path: path.to_owned(),
                error,
            })?;

        let auth = parse_auth(file.auth).map_err(|error| ConfigError::Auth {
            path: path.to_owned(),
            error,
        })?;
        let registry = crate::event::registry::Registry::from_sources(
            file.event_types,
            file.strict_types,
            &base,
        )
        .map_err(|error| ConfigError::EventTypes {
            path: path.to_owned(),
            error,
        })?;

        let mut handlers = Vec::new();
        let mut errors = Vec::new();
        let mut left_to_proxy = Vec::new();
        let mut warnings = lint::top_level_warnings(text);
        for (index, value) in file.event_handlers.into_iter().enumerate() {
            let parsed = match value {
                Value::String(target) if target.ends_with(MANIFEST_SUFFIX) => {
                    read_manifest(&base.join(&target))
                        .map_err(|message| EntryError {
                            index,
                            name: None,
                            message: format!("{target}: {message}"),
                        })
                        .and_then(|(entry, folder)| parse_entry(index, entry, &folder))
                }
                Value::String(target) if !is_wasm_path(&target) => {
                    left_to_proxy.push(ProxyEntry { index, target });
                    continue;
                }
                value => parse_entry(index, value, &base),
            };
            let parsed = parsed.and_then(|spec| {
                // A gate that can never be called lets everything through: refused. An
                // observer that can never run only misses events: a warning.
                match lint::never_runs(&spec, &registry) {
                    Some(why) if spec.mode == Mode::Gate && spec.enabled => Err(EntryError {
                        index,
                        name: Some(spec.name.clone()),
                        message: format!("this gate can never be called: {why}"),
                    }),
                    Some(why) => {
                        warnings.push(format!(
                            "eventHandlers[{index}] ({}): this handler can never run: {why}",
                            spec.name
                        ));
                        Ok(spec)
                    }
                    None => Ok(spec),
                }
            });
            match parsed {
                Ok(spec) => {
                    if handlers.iter().any(|h: &HandlerSpec| h.name == spec.name) {
                        errors.push(EntryError {
                            index,
                            name: Some(spec.name.clone()),
                            message: "another entry has the same name; give each a unique `name`"
                                .into(),
                        });
                    } else {
                        handlers.push(spec);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() && !handlers.iter().any(|h| h.enabled) {
            warnings.push(
                "no enabled event handlers: events are accepted and nothing checks or sees them; \
                 add entries under `eventHandlers`"
                    .into(),
            );
        }
        let config = Config {
            warnings,
            path: path.to_owned(),
            handlers,
            delivery,
            auth,
            left_to_proxy,
            registry: std::sync::Arc::new(registry),
        };
        Ok((config, errors))
    }
}

/// `auth` from the file, or from the file `HOOKWASM_AUTH_FILE` names; not both.
fn parse_auth(value: Option<Value>) -> Result<Option<AuthConfig>, AuthError> {
    let from_env = std::env::var_os(AUTH_FILE_ENV).filter(|v| !v.is_empty());
    match (value, from_env) {
        (Some(_), Some(_)) => Err(AuthError::new(format!(
            "`auth` is set both in the config and in {AUTH_FILE_ENV}; keep one"
        ))),
        (Some(value), None) => AuthConfig::parse(value, "`auth`").map(Some),
        (None, Some(file)) => AuthConfig::from_file(Path::new(&file)).map(Some),
        (None, None) => Ok(None),
    }
}

/// Whether a path string names a `.wasm` component (any case).
fn is_wasm_path(target: &str) -> bool {
    Path::new(target)
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("wasm"))
}

/// Why a handler manifest could not be read. The message names the cause's text; the cause is
/// kept as the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read the handler manifest {path}: {source}")]
    Read {
        /// The manifest file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The exported object is not valid JSON.
    #[error("{message}")]
    Json {
        /// What shape is expected, and serde_json's text.
        message: String,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// The file does not have the manifest's shape.
    #[error("{0}")]
    Shape(String),
}

impl ManifestError {
    fn shape(message: String) -> ManifestError {
        ManifestError::Shape(message)
    }
}

/// Reads a handler manifest: `export default { … };` where `{ … }` is a JSON entry object,
/// optionally after `//` or `/* */` comments. Returns the entry and the manifest's folder, which
/// the entry's relative paths resolve against.
pub fn read_manifest(path: &Path) -> Result<(Value, PathBuf), ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_owned(),
        source,
    })?;
    let shape = "a handler manifest must be `export default { …a JSON entry object… };`";
    let rest = skip_comments(&text);
    let rest = rest.strip_prefix("export default").ok_or_else(|| {
        ManifestError::shape(format!("{shape}; it does not start with `export default`"))
    })?;
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
    let entry = match values.next() {
        Some(Ok(entry @ Value::Object(_))) => entry,
        Some(Ok(other)) => {
            return Err(ManifestError::shape(format!(
                "{shape}; it exports {}",
                json_kind(&other)
            )));
        }
        Some(Err(source)) => {
            return Err(ManifestError::Json {
                message: format!("{shape} ({source})"),
                source,
            });
        }
        None => {
            return Err(ManifestError::shape(format!(
                "{shape}; nothing follows `export default`"
            )));
        }
    };
    let tail = skip_comments(&rest[values.byte_offset()..]);
    let tail = skip_comments(tail.strip_prefix(';').unwrap_or(tail));
    if !tail.is_empty() {
        return Err(ManifestError::shape(format!(
            "{shape}; it goes on after the object with {:?}",
            tail.chars().take(20).collect::<String>()
        )));
    }
    let folder = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    Ok((entry, folder))
}

/// `text` without leading whitespace and JavaScript comments.
fn skip_comments(mut text: &str) -> &str {
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix("//") {
            text = rest.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(rest) = text.strip_prefix("/*") {
            text = rest.split_once("*/").map_or("", |(_, after)| after);
        } else {
            return text;
        }
    }
}

/// Why `eventDelivery` cannot be used: one sentence naming the field, and serde_json's error
/// behind it where there is one.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl From<String> for DeliveryError {
    fn from(message: String) -> DeliveryError {
        DeliveryError {
            message,
            source: None,
        }
    }
}

impl From<&str> for DeliveryError {
    fn from(message: &str) -> DeliveryError {
        DeliveryError::from(message.to_owned())
    }
}

fn parse_delivery(value: Option<Value>, base: &Path) -> Result<DeliveryConfig, DeliveryError> {
    let entry: DeliveryEntry = match value {
        None => DeliveryEntry::default(),
        Some(value @ Value::Object(_)) => serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let source = e.into_inner();
            DeliveryError {
                message: lint::explain(&path, &source.to_string()),
                source: Some(Box::new(source)),
            }
        })?,
        Some(other) => {
            return Err(DeliveryError::from(format!(
                "must be an object such as {{\"store\": \"sqlite\"}}, found {}",
                json_kind(&other)
            )));
        }
    };
    let nats = parse_nats(&entry, base)?;
    let path = entry
        .path
        .unwrap_or_else(|| defaults::OUTBOX_PATH.to_owned());
    if path.trim().is_empty() {
        return Err(DeliveryError::from(
            "`path` is empty; give the outbox file's path, or leave it out",
        ));
    }
    let hours = entry.retention_hours.unwrap_or(defaults::RETENTION_HOURS);
    if hours == 0 {
        return Err(DeliveryError::from("`retentionHours` must be at least 1"));
    }
    let retention = std::time::Duration::from_secs(hours.saturating_mul(3600));
    Ok(DeliveryConfig {
        store: entry.store,
        path: base.join(path),
        sync: entry.sync,
        retention,
        nats,
    })
}

/// The `"store": "nats"` fields of `eventDelivery`; refused with another store, so a typo in
/// `store` does not silently ignore them.
fn parse_nats(
    entry: &DeliveryEntry,
    base: &Path,
) -> Result<Option<crate::outbox::nats::NatsConfig>, DeliveryError> {
    use crate::outbox::nats::{NatsConfig, Secret, defaults as nats};
    let given = entry.url.is_some()
        || entry.creds_file.is_some()
        || entry.user.is_some()
        || entry.password.is_some()
        || entry.token.is_some()
        || entry.tls_ca_file.is_some()
        || entry.replicas.is_some()
        || entry.ack_wait_ms.is_some()
        || entry.dedupe_window_secs.is_some()
        || entry.host_id.is_some();
    if entry.store != StoreKind::Nats {
        if given {
            return Err(DeliveryError::from(
                "`url`, `credsFile`, `user`, `password`, `token`, `tlsCaFile`, `replicas`, `ackWaitMs`, `dedupeWindowSecs` and `hostId` belong to `\"store\": \"nats\"`; set it, or remove them",
            ));
        }
        return Ok(None);
    }
    let url = entry
        .url
        .clone()
        .ok_or("`\"store\": \"nats\"` needs `url`, such as \"nats://127.0.0.1:4222\" (several servers: comma-separated)")?;
    if entry.password.is_some() != entry.user.is_some() {
        return Err(DeliveryError::from(
            "`user` and `password` go together; give both, or neither",
        ));
    }
    let schemes = ["nats://", "tls://"];
    for server in url.split(',') {
        let server = server.trim();
        if !schemes.iter().any(|s| server.starts_with(s)) || server.len() <= 6 {
            return Err(DeliveryError::from(format!(
                "`url` has {server:?}; each server is nats://host:port or tls://host:port"
            )));
        }
    }
    if entry.replicas.is_some_and(|r| !(1..=5).contains(&r)) {
        return Err(DeliveryError::from(
            "`replicas` must be 1 to 5 (JetStream's limit)",
        ));
    }
    let ack_wait_ms = entry.ack_wait_ms.unwrap_or(nats::ACK_WAIT_MS);
    if ack_wait_ms < 500 {
        return Err(DeliveryError::from("`ackWaitMs` must be at least 500"));
    }
    let dedupe_window_secs = entry.dedupe_window_secs.unwrap_or(nats::DEDUPE_WINDOW_SECS);
    if dedupe_window_secs == 0 {
        return Err(DeliveryError::from("`dedupeWindowSecs` must be at least 1"));
    }
    Ok(Some(NatsConfig {
        url,
        creds_file: entry.creds_file.as_ref().map(|f| base.join(f)),
        user: entry.user.clone(),
        password: entry.password.clone().map(Secret),
        token: entry.token.clone().map(Secret),
        tls_ca_file: entry.tls_ca_file.as_ref().map(|f| base.join(f)),
        replicas: entry.replicas,
        ack_wait: std::time::Duration::from_millis(ack_wait_ms),
        dedupe_window: std::time::Duration::from_secs(dedupe_window_secs),
        host_id: entry.host_id.clone(),
    }))
}

fn parse_entry(index: usize, value: Value, base: &Path) -> Result<HandlerSpec, EntryError> {
    let name_hint = value.get("name").and_then(Value::as_str).map(str::to_owned);
    let fail = |message: String| EntryError {
        index,
        name: name_hint.clone(),
        message,
    };
    // A bare path is shorthand for `{"module": path}` with every default.
    let source = match value {
        Value::String(module) => serde_json::json!({ "module": module }),
        other => other,
    };
    let entry: Entry = match &source {
        Value::Object(_) => serde_path_to_error::deserialize(source.clone()).map_err(|e| {
            let path = e.path().to_string();
            fail(lint::explain(&path, &e.into_inner().to_string()))
        })?,
        other => {
            return Err(fail(format!(
                "expected a module path or an object with a `module` field, found {}",
                json_kind(other)
            )));
        }
    };

    if entry.module.trim().is_empty() {
        return Err(fail(
            "`module` is empty; give the path of a .wasm component".into(),
        ));
    }
    let module = base.join(&entry.module);
    let name = match entry.name {
        Some(name) => name,
        None => module
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .ok_or_else(|| fail("cannot derive a name from `module`; add a `name`".into()))?,
    };
    let fail = |message: String| EntryError {
        index,
        name: Some(name.clone()),
        message,
    };
    if !valid_name(&name) {
        return Err(fail(
            "`name` may only hold letters, digits, `-`, `_` and `.` (it appears in logs, metrics and URLs)".into(),
        ));
    }
    let sha256 = match entry.sha256 {
        Some(digest) => {
            let digest = digest.to_ascii_lowercase();
            let digest = digest.strip_prefix("sha256:").unwrap_or(&digest).to_owned();
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(fail(format!(
                    "`sha256` must be 64 hex digits, got {:?}; run `sha256sum {}`",
                    digest, entry.module
                )));
            }
            Some(digest)
        }
        None => None,
    };
    let filter = Filter::new(&entry.events, &entry.refs).map_err(|e| fail(e.to_string()))?;
    let limits = entry.limits;
    if let Some(zero) = limits.zero() {
        return Err(fail(format!(
            "`limits.{zero}` is 0; every limit must be greater than zero (or left out for its default)"
        )));
    }
    let queue_capacity = entry.queue_capacity.unwrap_or(defaults::QUEUE_CAPACITY);
    if queue_capacity == 0 {
        return Err(fail("`queueCapacity` must be greater than zero".into()));
    }
    let quarantine = entry.quarantine;
    if quarantine.after_failures == 0 || quarantine.max_backoff_ms < quarantine.backoff_ms {
        return Err(fail(
            "`quarantine.afterFailures` must be at least 1 and `maxBackoffMs` at least `backoffMs`"
                .into(),
        ));
    }
    let retry = match (entry.retry, entry.mode) {
        (Some(_), Mode::Gate) => {
            return Err(fail(
                "`retry` applies to observers only; a gate answers once, so remove it".into(),
            ));
        }
        (Some(retry), Mode::Observe) => retry,
        (None, _) => RetryPolicy::default(),
    };
    if retry.max_attempts == 0 || retry.backoff_ms == 0 || retry.max_backoff_ms < retry.backoff_ms {
        return Err(fail(
            "`retry.maxAttempts` and `backoffMs` must be at least 1 and `maxBackoffMs` at least `backoffMs`"
                .into(),
        ));
    }
    let allowed_hosts = entry
        .capabilities
        .allowed_hosts
        .iter()
        .map(|h| AllowedHost::parse(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    let smtp = entry
        .capabilities
        .smtp
        .map(smtp::parse)
        .transpose()
        .map_err(|e| fail(e.to_string()))?;
    let failure_policy = match (entry.mode, entry.failure_policy) {
        (_, Some(policy)) => policy,
        (Mode::Gate, None) => FailurePolicy::Closed,
        // Observers never answer, so the policy only matters if the entry becomes a gate.
        (Mode::Observe, None) => FailurePolicy::Open,
    };
    Ok(HandlerSpec {
        name,
        index,
        module,
        sha256,
        enabled: entry.enabled,
        mode: entry.mode,
        filter,
        config: entry.config,
        limits,
        failure_policy,
        queue_capacity,
        quarantine,
        retry,
        capabilities: Capabilities {
            allowed_hosts,
            smtp,
        },
        source,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_errors_keep_their_cause_as_source() {
        use std::error::Error as _;
        let err = Config::parse("{", Path::new("proxy.config.json")).expect_err("not JSON");
        let json = err
            .source()
            .and_then(|s| s.downcast_ref::<serde_json::Error>());
        assert!(json.is_some(), "{err:?}");
        assert!(
            err.to_string().ends_with(&json.expect("json").to_string()),
            "{err}"
        );

        let text = r#"{"eventDelivery": {"retentionHours": "soon"}}"#;
        let err = Config::parse(text, Path::new("proxy.config.json")).expect_err("a string");
        assert!(matches!(err, ConfigError::Delivery { .. }), "{err}");
        let json = err.source().and_then(|s| s.source());
        let json = json.and_then(|s| s.downcast_ref::<serde_json::Error>());
        assert!(json.is_some(), "{err:?}");

        let err = Config::load(Path::new("/nonexistent/proxy.config.json")).expect_err("missing");
        let io = err
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(std::io::Error::kind),
            Some(std::io::ErrorKind::NotFound)
        );
    }

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/hookwasm/proxy.config.json"))
    }

    #[test]
    fn event_delivery_on_nats_takes_its_connection_and_hides_its_secrets() {
        let config = parse(
            r#"{"eventDelivery": {"store": "nats", "url": "tls://a:4222,nats://b:4222",
                "credsFile": "hookwasm.creds", "user": "hw", "password": "s3cret",
                "replicas": 3, "ackWaitMs": 2000, "hostId": "web-1"}}"#,
        )
        .expect("valid config");
        assert_eq!(config.delivery.store, StoreKind::Nats);
        let nats = config.delivery.nats.as_ref().expect("nats settings");
        assert_eq!(nats.url, "tls://a:4222,nats://b:4222");
        assert_eq!(
            nats.creds_file,
            Some(PathBuf::from("/etc/hookwasm/hookwasm.creds"))
        );
        assert_eq!(nats.replicas, Some(3));
        assert_eq!(nats.ack_wait, std::time::Duration::from_millis(2000));
        assert_eq!(nats.host_id.as_deref(), Some("web-1"));
        let shown = format!("{:?}", config.delivery);
        assert!(!shown.contains("s3cret"), "{shown}");

        for (text, expected) in [
            (r#"{"store": "nats"}"#, "needs `url`"),
            (
                r#"{"store": "nats", "url": "http://a:4222"}"#,
                "nats://host:port",
            ),
            (
                r#"{"store": "nats", "url": "nats://a", "user": "x"}"#,
                "go together",
            ),
            (
                r#"{"store": "nats", "url": "nats://a", "replicas": 7}"#,
                "1 to 5",
            ),
            (r#"{"url": "nats://a"}"#, "belong to `\"store\": \"nats\"`"),
        ] {
            let error = parse(&format!(r#"{{"eventDelivery": {text}}}"#))
                .expect_err(text)
                .to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn event_delivery_defaults_to_a_durable_file_beside_the_config() {
        let config = parse(r#"{"eventHandlers": []}"#).expect("valid config");
        assert_eq!(
            config.delivery,
            DeliveryConfig {
                store: StoreKind::Sqlite,
                path: PathBuf::from("/etc/hookwasm/.hookwasm/outbox.db"),
                sync: crate::outbox::FsyncPolicy::Full,
                retention: std::time::Duration::from_secs(168 * 3600),
                nats: None,
            }
        );
        let config = parse(
            r#"{"eventDelivery": {"store": "memory", "path": "/var/lib/hookwasm/o.db",
                "sync": "normal", "retentionHours": 2}}"#,
        )
        .expect("valid config");
        assert_eq!(config.delivery.store, StoreKind::Memory);
        assert_eq!(config.delivery.path, Path::new("/var/lib/hookwasm/o.db"));
        assert_eq!(config.delivery.sync, crate::outbox::FsyncPolicy::Normal);
        assert_eq!(config.delivery.retention.as_secs(), 7200);
    }

    #[test]
    fn a_broken_event_delivery_is_named() {
        for (text, expected) in [
            (
                r#"{"eventDelivery": {"store": "postgres"}}"#,
                "`store` is \"postgres\"; write one of `sqlite`, `memory`, `nats`",
            ),
            (
                r#"{"eventDelivery": {"stor": "sqlite"}}"#,
                "unknown field `stor`; did you mean `store`?",
            ),
            (
                r#"{"eventDelivery": {"retentionHours": 0}}"#,
                "`retentionHours` must be at least 1",
            ),
            (r#"{"eventDelivery": "sqlite"}"#, "must be an object"),
        ] {
            let error = parse(text).expect_err(text).to_string();
            assert!(error.contains("`eventDelivery`"), "{error}");
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn retries_follow_the_schedule_and_belong_to_observers() {
        let retry = RetryPolicy::default();
        let waits: Vec<u64> = (1..8).map(|n| retry.backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 25, 125, 625, 3125, 15625, 36000]);
        for _ in 0..100 {
            let jittered = retry.backoff_with_jitter(2).as_millis();
            assert!((20_000..=30_000).contains(&jittered), "{jittered}");
        }
        let gate = parse(
            r#"{"eventHandlers": [{"module": "g.wasm", "mode": "gate", "retry": {"maxAttempts": 2}}]}"#,
        )
        .expect_err("a gate has no retries")
        .to_string();
        assert!(gate.contains("`retry` applies to observers only"), "{gate}");
        let zero =
            parse(r#"{"eventHandlers": [{"module": "o.wasm", "retry": {"maxAttempts": 0}}]}"#)
                .expect_err("at least one attempt")
                .to_string();
        assert!(zero.contains("`retry.maxAttempts`"), "{zero}");
    }

    #[test]
    fn path_entries_and_objects_resolve_against_the_config_folder() {
        let config = parse(
            r#"{"proxyUrl": "https://example.com", "eventHandlers": [
                "plugins/console-logger.wasm",
                {"name": "protect", "module": "/opt/bp.wasm", "mode": "gate", "events": ["git.branch.*"]}
            ]}"#,
        )
        .expect("valid config");
        assert_eq!(config.handlers.len(), 2);
        let logger = &config.handlers[0];
        assert_eq!(logger.name, "console-logger");
        assert_eq!(
            logger.module,
            Path::new("/etc/hookwasm/plugins/console-logger.wasm")
        );
        assert_eq!(logger.mode, Mode::Observe);
        assert_eq!(logger.limits, Limits::default());
        let gate = &config.handlers[1];
        assert_eq!(gate.module, Path::new("/opt/bp.wasm"));
        assert_eq!(gate.failure_policy, FailurePolicy::Closed);
        assert!(
            gate.filter
                .matches("git.branch.deleted", std::iter::empty())
        );
        assert!(!gate.filter.matches("push.started", std::iter::empty()));
    }

    #[test]
    fn manifests_are_read_and_node_modules_are_left_to_the_proxy() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("handlers")).expect("mkdir");
        std::fs::write(
            dir.path().join("handlers/gate.hookwasm.mjs"),
            "// a comment\n/* and another */ export default {\"name\": \"g\", \"module\": \"../bp.wasm\", \"mode\": \"gate\"};\n",
        )
        .expect("write");
        let config = Config::parse(
            r#"{"eventHandlers": ["@hookwasm/git-proxy", "./handlers/gate.hookwasm.mjs", "x.WASM"]}"#,
            &dir.path().join("proxy.config.json"),
        )
        .expect("valid");
        assert_eq!(
            config.left_to_proxy,
            [ProxyEntry {
                index: 0,
                target: "@hookwasm/git-proxy".into()
            }]
        );
        let gate = &config.handlers[0];
        assert_eq!(
            (gate.name.as_str(), gate.index, gate.mode),
            ("g", 1, Mode::Gate)
        );
        assert!(
            gate.module.ends_with("handlers/../bp.wasm"),
            "{:?}",
            gate.module
        );
        assert_eq!(config.handlers[1].name, "x");
    }

    #[test]
    fn a_broken_manifest_is_an_entry_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cases = [
            ("missing", None, "cannot read the handler manifest"),
            (
                "cjs",
                Some("module.exports = {};"),
                "does not start with `export default`",
            ),
            ("array", Some("export default [];"), "it exports a list"),
            (
                "trailing",
                Some("export default {\"module\": \"a.wasm\"}; foo()"),
                "goes on after the object",
            ),
            (
                "js",
                Some("export default { module: 'a.wasm' };"),
                "key must be a string",
            ),
        ];
        for (name, text, expected) in cases {
            let file = format!("{name}.hookwasm.mjs");
            if let Some(text) = text {
                std::fs::write(dir.path().join(&file), text).expect("write");
            }
            let config = format!(r#"{{"eventHandlers": [{file:?}]}}"#);
            let error = Config::parse(&config, &dir.path().join("proxy.config.json"))
                .expect_err(name)
                .to_string();
            assert!(
                error.contains(expected) && error.contains(&file),
                "{name}: {error}"
            );
        }
    }

    #[test]
    fn every_broken_entry_is_reported_with_its_index_and_name() {
        let err = parse(
            r#"{"eventHandlers": [
                {"name": "a", "module": "a.wasm", "colour": "red"},
                "ok.wasm",
                {"name": "b", "module": "b.wasm", "sha256": "xyz"},
                42,
                {"name": "c", "module": "c.wasm", "events": ["push.[*"]}
            ]}"#,
        )
        .expect_err("invalid");
        let ConfigError::Entries { errors, .. } = err else {
            panic!("wrong error: {err}")
        };
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(
            lines[0].starts_with("eventHandlers[0] (a): unknown field `colour`"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("eventHandlers[2] (b): `sha256` must be 64 hex digits"),
            "{}",
            lines[1]
        );
        assert_eq!(
            lines[2],
            "eventHandlers[3]: expected a module path or an object with a `module` field, found a number"
        );
        assert!(
            lines[3].starts_with("eventHandlers[4] (c): `events` has an invalid pattern"),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let err = parse(r#"{"eventHandlers": ["x/a.wasm", "y/a.wasm"]}"#).expect_err("duplicate");
        assert!(
            err.to_string()
                .contains("eventHandlers[1] (a): another entry has the same name"),
            "{err}"
        );
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let err = parse("{\"eventHandlers\": [\n  \"a.wasm\",\n]}").expect_err("bad json");
        assert!(
            err.to_string().contains("not valid JSON") && err.to_string().contains("line 3"),
            "{err}"
        );
    }

    #[test]
    fn ref_globs_keep_segments_apart() {
        let filter = Filter::new(&[], &["refs/heads/release/*".into()]).expect("globs");
        assert!(filter.matches("git.branch.deleted", ["refs/heads/release/1.0"].into_iter()));
        assert!(!filter.matches(
            "git.branch.deleted",
            ["refs/heads/release/1.0/hotfix"].into_iter()
        ));
        assert!(!filter.matches("user.created", std::iter::empty()));
    }
}
