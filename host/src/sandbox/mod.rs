//! The sandbox: one wasmtime [`Engine`], pool and epoch ticker for the process (`engine.rs`),
//! one compiled component per module and one `InstancePre` per handler, and a fresh [`Store`] per
//! invocation with fuel, an epoch deadline and a memory cap.
//!
//! Reading order: [`Sandbox::load`] (or [`Sandbox::load_bytes`]) turns a component into a
//! [`Handler`];
//! [`Handler::on_event`] runs one event in a new instance and returns an [`Invocation`];
//! `status.rs` turns whatever went wrong into a [`Status`]. Invocations run on the sandbox's own
//! threads (`runner.rs`), and what a guest can make the host hold or do per call is bounded in
//! `state.rs`, `output.rs` and `http.rs`.

mod cache;
mod engine;
mod http;
mod http_refused;
mod limits;
mod output;
mod pool;
mod runner;
mod smtp;
mod state;
mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store, UpdateDeadline};

use crate::address::AllowedHost;
use crate::config::{HandlerSpec, Mode, SmtpGrant};
use crate::event::Event;
use crate::limits::Limits;
use crate::wit;
use state::StoreState;

pub use cache::user_cache_dir;
pub use engine::Allocator;
pub use limits::{FUEL_PER_EVENT_BYTE, max_event_bytes};
pub use pool::PoolSize;
pub use runner::handle as runtime;
pub use status::Status;

/// How long after its deadline a guest blocked in a host call is cut off.
const HOST_CALL_GRACE: Duration = Duration::from_millis(20);

/// How long after that a caller stops waiting for an invocation whose thread is still held
/// (by a neighbour's host call, say): the answer is a timeout, on time.
const CALLER_GRACE: Duration = Duration::from_millis(30);

/// The world every handler must implement, for error messages. Components built against 0.1.0
/// load too (see [`crate::wit`]).
pub const WORLD: &str = "hookwasm:handler/event-handler@0.2.0";

/// Loads handlers into the process's engine. Cheap to make and to clone: every sandbox of a
/// process with the same [`Tuning`] shares one engine, pool, epoch ticker and set of linkers
/// (see `engine.rs`); only the compile cache folder is its own.
#[derive(Clone)]
pub struct Sandbox {
    shared: Arc<engine::Shared>,
    cache: Option<cache::CompileCache>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

/// Why a sandbox could not be made: wasmtime refused the engine or a host interface. Each
/// variant keeps wasmtime's error as its source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// Wasmtime could not start an engine with this configuration.
    #[error("cannot start wasmtime: {source}")]
    Engine {
        /// Wasmtime's reason.
        source: wasmtime::Error,
    },
    /// An interface could not be added to the linker.
    #[error("cannot link {interface}: {source}")]
    Link {
        /// The interface, in words ("WASI", "the host interface").
        interface: &'static str,
        /// Wasmtime's reason.
        source: wasmtime::Error,
    },
}

/// Why a module could not become a handler. Each message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read. The message carries the cause's text and a hint.
    #[error("cannot read module {path}: {why}")]
    Read {
        /// The module file.
        path: PathBuf,
        /// What went wrong, and what to do when we can tell.
        why: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file's digest is not the pinned one.
    #[error(
        "module {path} has sha256 {actual}, but the config pins {expected}; rebuild it or update `sha256`"
    )]
    DigestMismatch {
        /// The module file.
        path: PathBuf,
        /// The pinned digest.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// The file is not WebAssembly at all.
    #[error(
        "{path} is not a WebAssembly file; point `module` at a .wasm component built for wasm32-wasip2"
    )]
    NotWasm {
        /// The module file.
        path: PathBuf,
    },
    /// The file is a core module, not a component.
    #[error(
        "{path} is a core WebAssembly module, not a component (built for wasm32-wasip1 or wasm32-unknown-unknown?); build it for wasm32-wasip2: `cargo build --release --target wasm32-wasip2` (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule {
        /// The module file.
        path: PathBuf,
    },
    /// Wasmtime could not compile the component.
    #[error("{path} does not compile: {source}")]
    Compile {
        /// The module file.
        path: PathBuf,
        /// Wasmtime's reason.
        source: wasmtime::Error,
    },
    /// The thread compiling the component failed (it panicked or was cancelled).
    #[error("{path} does not compile: the compiler thread failed: {source}")]
    CompilerThread {
        /// The module file.
        path: PathBuf,
        /// Why the thread did not finish.
        source: tokio::task::JoinError,
    },
    /// The component is not an event handler of this host's world.
    #[error(
        "{path} is not a hookwasm event handler: {message}; build it with hookwasm-sdk against {WORLD}"
    )]
    WrongWorld {
        /// The module file.
        path: PathBuf,
        /// What does not fit.
        message: String,
        /// Wasmtime's reason, when it was wasmtime that found the misfit.
        #[source]
        source: Option<wasmtime::Error>,
    },
    /// The handler's `init` refused its config, or failed.
    #[error(
        "init failed ({status}): {message}; fix the entry's `config` (or the module) and reload"
    )]
    Init {
        /// How `init` ended.
        status: Status,
        /// The handler's error or the failure's cause.
        message: String,
    },
}

/// How the engine runs instances. [`Tuning::default`] is what `serve` uses; the other settings
/// exist so the benchmarks can show what each choice costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Fuel and epoch deadlines. Off only in benchmarks: handlers would run unbounded in time.
    pub metering: bool,
    /// The pooling allocator: instances, memories, tables and fiber stacks come from slots
    /// reserved once, instead of an `mmap`/`munmap` pair of each per event.
    pub pooling: bool,
    /// Pooling only: when a memory slot is freed, reset the pages the guest dirtied in place
    /// (found with Linux's `PAGEMAP_SCAN`, else the slot's first bytes) instead of dropping
    /// them, so the next instance of that module does not take a page fault on each page.
    pub keep_resident: bool,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            metering: true,
            pooling: true,
            keep_resident: true,
        }
    }
}

impl Sandbox {
    /// A sandbox with the default [`Tuning`] (fuel and deadlines on, pooling allocator) on the
    /// process's engine; the first one builds it with the default [`PoolSize`].
    pub fn new() -> Result<Sandbox, SandboxError> {
        Sandbox::with_pool(Tuning::default(), PoolSize::default())
    }

    /// Like [`Sandbox::new`], for `handlers` loaded handlers: if this is the process's first
    /// sandbox, its pool is sized for them (see [`PoolSize::for_handlers`]).
    pub fn for_handlers(handlers: usize) -> Result<Sandbox, SandboxError> {
        Sandbox::with_pool(Tuning::default(), PoolSize::for_handlers(handlers))
    }

    /// A sandbox with explicit settings (see [`Tuning`]) and the default [`PoolSize`].
    pub fn with_tuning(tuning: Tuning) -> Result<Sandbox, SandboxError> {
        Sandbox::with_pool(tuning, PoolSize::default())
    }

    /// A sandbox on the process's engine for `tuning`. Only the first sandbox of a tuning builds
    /// the engine, with a pool of `pool`; the others share it (a live pool cannot grow).
    pub fn with_pool(tuning: Tuning, pool: PoolSize) -> Result<Sandbox, SandboxError> {
        Ok(Sandbox {
            shared: engine::shared(tuning, pool)?,
            cache: None,
        })
    }

    /// Which allocator this sandbox's instances come from: the pool, unless the tuning turned it
    /// off or the process could not reserve it.
    pub fn allocator(&self) -> Allocator {
        self.shared.allocator
    }

    /// The wasmtime engine, shared with every other sandbox of the same tuning in this process.
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// Keeps compiled components in `dir`, so unchanged modules are not compiled again. A folder
    /// that cannot be used is logged and skipped: the cache only saves time.
    pub fn with_cache(mut self, dir: &std::path::Path) -> Sandbox {
        match cache::CompileCache::open(dir, &self.shared.engine) {
            Ok(cache) => self.cache = Some(cache),
            Err(e) => tracing::warn!(dir = %dir.display(), "compile cache disabled: {e}"),
        }
        self
    }

    /// Reads `spec.module`, then loads it as [`Sandbox::load_bytes`] does. CPU-heavy
    /// (Cranelift) unless the module is compiled already: call it off the async executor.
    pub fn load(&self, spec: &HandlerSpec) -> Result<Handler, LoadError> {
        let path = spec.module.as_path();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            why: read_failure(path, &source),
            source,
        })?;
        self.load_bytes(spec, &bytes)
    }

    /// Verifies and compiles a component held in memory and checks that it is a handler of our
    /// world; `spec.module` only names it in messages. A module already loaded in this process
    /// (same SHA-256) is not compiled again, and the compile cache, if any, is keyed by the same
    /// digest. CPU-heavy (Cranelift) on a miss: call it off the async executor.
    pub fn load_bytes(&self, spec: &HandlerSpec, bytes: &[u8]) -> Result<Handler, LoadError> {
        let path = spec.module.as_path();
        let digest = hex::encode(Sha256::digest(bytes));
        if let Some(expected) = spec.sha256.as_deref()
            && expected != digest
        {
            return Err(LoadError::DigestMismatch {
                path: path.to_owned(),
                expected: expected.to_owned(),
                actual: digest,
            });
        }
        // `\0asm`, then a version: 1 for core modules, 0x0d with layer 1 for components.
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => {}
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
                return Err(LoadError::CoreModule {
                    path: path.to_owned(),
                });
            }
            _ => {
                return Err(LoadError::NotWasm {
                    path: path.to_owned(),
                });
            }
        }
        let compiled = self.compiled(path, &digest, bytes)?;
        let component = &compiled.0;
        let wrong_world = |message: String| LoadError::WrongWorld {
            path: path.to_owned(),
            message,
            source: None,
        };
        let wasmtime_refused = |message: String, source: wasmtime::Error| LoadError::WrongWorld {
            path: path.to_owned(),
            message,
            source: Some(source),
        };
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.shared.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        if !exports.iter().any(|e| e == "on-event") {
            return Err(wrong_world(if exports.is_empty() {
                "it exports nothing, so no handler was exported: call `hookwasm_sdk::export_handler!(YourHandler);` once at the crate root (in JavaScript, export `init` and `onEvent`)".to_owned()
            } else {
                format!(
                    "it exports {}, not `init` and `on-event`",
                    exports.join(", ")
                )
            }));
        }
        // Exactly a version the host knows: wasmtime would let an import of a later patch
        // (0.2.1) bind to 0.2.0, and that guest may rely on what 0.2.0 does not have.
        for (import, _) in component.component_type().imports(&self.shared.engine) {
            let Some(rest) = import.strip_prefix("hookwasm:handler/") else {
                continue;
            };
            let version = rest.split_once('@').map(|(_, v)| v);
            if !version.is_some_and(|v| wit::SUPPORTED_VERSIONS.contains(&v)) {
                return Err(wrong_world(format!(
                    "it was built against hookwasm:handler@{}, which this host does not know \
                     (it runs {}); rebuild it with an SDK for one of those, or upgrade hookwasm",
                    version.unwrap_or("(no version)"),
                    wit::SUPPORTED_VERSIONS.join(" and ")
                )));
            }
        }
        // Each capability is linked for real only for a handler granted it; the others get
        // an interface that refuses and holds nothing in the host.
        let linker = self.shared.linkers.get(Grants {
            http: !spec.capabilities.allowed_hosts.is_empty(),
            smtp: spec.capabilities.smtp.is_some(),
        });
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| wasmtime_refused(format!("its imports cannot be satisfied ({e})"), e))?;
        let pre = wit::EventHandlerPre::new(pre).map_err(|e| wasmtime_refused(e.to_string(), e))?;
        Ok(Handler(Arc::new(HandlerInner {
            name: spec.name.as_str().into(),
            mode: spec.mode,
            digest,
            config_json: spec.config.to_string().into(),
            limits: spec.limits,
            allowed_hosts: spec.capabilities.allowed_hosts.clone().into(),
            smtp: spec.capabilities.smtp.clone().map(Arc::new),
            shared: self.shared.clone(),
            _compiled: compiled.clone(),
            pre,
        })))
    }

    /// The compiled component for a module: the copy already loaded in this process, else the
    /// compile cache's, else Cranelift's.
    fn compiled(
        &self,
        path: &std::path::Path,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Arc<Compiled>, LoadError> {
        let mut loaded = self
            .shared
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loaded.retain(|_, weak| weak.strong_count() > 0);
        if let Some(compiled) = loaded.get(digest).and_then(std::sync::Weak::upgrade) {
            tracing::debug!(module = %path.display(), "already compiled in this process");
            return Ok(compiled);
        }
        // Held while compiling: two entries of one module are compiled once, not side by side.
        let engine = &self.shared.engine;
        let component = match self.cache.as_ref().and_then(|c| c.get(engine, digest)) {
            Some(component) => {
                tracing::debug!(module = %path.display(), "loaded from the compile cache");
                component
            }
            None => {
                let started = Instant::now();
                let component =
                    Component::new(engine, bytes).map_err(|source| LoadError::Compile {
                        path: path.to_owned(),
                        source,
                    })?;
                tracing::debug!(module = %path.display(), ms = started.elapsed().as_millis(), "compiled");
                if let Some(cache) = &self.cache {
                    cache.put(digest, &component);
                }
                component
            }
        };
        let compiled = Arc::new(Compiled(component));
        loaded.insert(digest.to_owned(), Arc::downgrade(&compiled));
        Ok(compiled)
    }
}

/// One module's compiled component, shared by every handler loaded from it.
pub(crate) struct Compiled(Component);

/// Which capabilities a handler's linker has for real.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Grants {
    /// `wasi:http` behind the policy in `http.rs`; else the refusing one in `http_refused.rs`.
    http: bool,
    /// The `smtp` interface's real `send`; else one that refuses.
    smtp: bool,
}

/// The four linkers of an engine, one per combination of grants (built once per engine, see
/// `engine.rs`).
pub(crate) struct Linkers([Linker<StoreState>; 4]);

impl Linkers {
    fn build(engine: &Engine) -> Result<Linkers, SandboxError> {
        let linker = |http, smtp| linker(engine, Grants { http, smtp });
        Ok(Linkers([
            linker(false, false)?,
            linker(false, true)?,
            linker(true, false)?,
            linker(true, true)?,
        ]))
    }

    fn get(&self, grants: Grants) -> &Linker<StoreState> {
        &self.0[usize::from(grants.http) * 2 + usize::from(grants.smtp)]
    }
}

/// Wraps a linker error with the interface that could not be added.
fn link(interface: &'static str) -> impl Fn(wasmtime::Error) -> SandboxError + Copy {
    move |source| SandboxError::Link { interface, source }
}

/// A linker with everything every handler gets, WASI (with nothing behind it) and the `host`
/// and `types` interfaces of every supported package version, plus `wasi:http` and `smtp`,
/// each the real one if `grants` says so and a refusing one otherwise: a module that imports a
/// capability loads everywhere, but reaches it only where granted.
fn linker(engine: &Engine, grants: Grants) -> Result<Linker<StoreState>, SandboxError> {
    let mut linker = Linker::<StoreState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link("WASI"))?;
    let http = link("wasi:http");
    if grants.http {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(http)?;
    } else {
        http_refused::add_to_linker(&mut linker, |s| &mut s.http_refusal).map_err(http)?;
    }
    let smtp = link("the smtp interface");
    if grants.smtp {
        wit::hookwasm::handler::smtp::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| &mut s.smtp)
            .map_err(smtp)?;
    } else {
        wit::hookwasm::handler::smtp::add_to_linker::<_, smtp::RefusedView>(&mut linker, |s| {
            s.smtp.refused()
        })
        .map_err(smtp)?;
    }
    let host = link("the host interface");
    wit::hookwasm::handler::host::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
        .map_err(host)?;
    wit::hookwasm::handler::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
        .map_err(host)?;
    wit::v0_1::hookwasm::handler::host::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
        .map_err(host)?;
    wit::v0_1::hookwasm::handler::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
        .map_err(host)?;
    Ok(linker)
}

/// Why a module file could not be read, in words, with what to do when we can tell. A missing
/// `<stem>.wasm` beside a `lib<stem>.rlib` is a crate built without `crate-type = ["cdylib"]`.
fn read_failure(path: &std::path::Path, error: &std::io::Error) -> String {
    if error.kind() != std::io::ErrorKind::NotFound {
        return error.to_string();
    }
    let rlib = path
        .file_stem()
        .map(|stem| path.with_file_name(format!("lib{}.rlib", stem.to_string_lossy())));
    if rlib.is_some_and(|rlib| rlib.exists()) {
        return "no such file, but the library was built as an .rlib only: add `crate-type = [\"cdylib\"]` under `[lib]` in Cargo.toml and build again".to_owned();
    }
    "no such file; build it first, or fix the path".to_owned()
}

/// SHA-256 of a module file, lower-case hex: how a version is identified.
pub fn file_digest(path: &std::path::Path) -> std::io::Result<String> {
    Ok(hex::encode(Sha256::digest(std::fs::read(path)?)))
}

/// A compiled, ready-to-instantiate handler version. Cheap to clone.
#[derive(Clone)]
pub struct Handler(Arc<HandlerInner>);

struct HandlerInner {
    name: Arc<str>,
    /// Which sandbox runtime its invocations run on (see `runner.rs`).
    mode: Mode,
    digest: String,
    config_json: Arc<str>,
    limits: Limits,
    allowed_hosts: Arc<[AllowedHost]>,
    smtp: Option<Arc<SmtpGrant>>,
    /// The engine, and the ticker deadlines need, for as long as the handler can run.
    shared: Arc<engine::Shared>,
    /// Keeps the module's compiled copy findable by later loads of the same module.
    _compiled: Arc<Compiled>,
    pre: wit::EventHandlerPre<StoreState>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("name", &self.0.name)
            .field("digest", &self.0.digest)
            .finish_non_exhaustive()
    }
}

/// What one invocation of one handler produced.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// How it ended.
    pub status: Status,
    /// The handler's answer, when `status` is `ok`.
    pub outcome: Option<wit::Outcome>,
    /// The handler's error or the failure's cause, when `status` is not `ok`.
    pub error: Option<String>,
    /// Fuel used.
    pub fuel_consumed: u64,
    /// Wall-clock time, instantiation included.
    pub duration: Duration,
}

impl Handler {
    /// SHA-256 of the module file, lower-case hex: identifies the version.
    pub fn digest(&self) -> &str {
        &self.0.digest
    }

    /// Runs `init` with the handler's config in a fresh instance; an error refuses the load.
    pub async fn init(&self) -> Result<(), LoadError> {
        let this = self.clone();
        let deadline = Instant::now() + Duration::from_millis(self.0.limits.timeout_ms);
        let (invocation, _) = runner::run(self.0.mode, async move {
            let config = this.0.config_json.to_string();
            this.run(deadline, None, None, async |bindings, store| {
                bindings.call_init(store, &config).await
            })
            .await
        })
        .await;
        match invocation.status {
            Status::Ok => Ok(()),
            status => Err(LoadError::Init {
                status,
                message: invocation.error.unwrap_or_default(),
            }),
        }
    }

    /// Runs `on-event` for one event in a fresh instance, on the sandbox's threads for the
    /// handler's mode (see `runner.rs`), so nothing it does holds the caller's thread.
    ///
    /// The deadline runs from this call: time spent waiting for a sandbox thread counts, and
    /// the caller has its answer by the deadline plus a few tens of milliseconds even when every
    /// sandbox thread is held.
    pub async fn on_event(&self, event: &Event) -> Invocation {
        let called = Instant::now();
        let deadline = called + Duration::from_millis(self.0.limits.timeout_ms);
        let (this, owned) = (self.clone(), event.clone());
        // The caller's trace context, which does not follow the task to the sandbox's runtime.
        let trace = crate::trace::outbound();
        let running = runner::run(self.0.mode, async move {
            let id = Some(owned.id().into());
            this.run(deadline, id, trace, async |bindings, store| {
                bindings.call_on_event(store, owned.wit()).await
            })
            .await
        });
        let cut_off = deadline + HOST_CALL_GRACE + CALLER_GRACE;
        let Ok((mut invocation, outcome)) = tokio::time::timeout_at(cut_off.into(), running).await
        else {
            let (status, message) = status::timeout(self.0.limits);
            return Invocation {
                status,
                outcome: None,
                error: Some(format!(
                    "{message} (it could not run in time: every sandbox thread was busy)"
                )),
                fuel_consumed: 0,
                duration: called.elapsed(),
            };
        };
        match outcome.as_ref().and_then(limits::check_outcome) {
            Some(oversize) => {
                invocation.status = Status::Oversize;
                invocation.error = Some(oversize);
            }
            None => invocation.outcome = outcome,
        }
        invocation
    }

    /// A new store for one invocation: fresh WASI state, the memory cap, the handler's fuel, and
    /// an epoch callback that yields every tick and interrupts the guest at `deadline`.
    fn new_store(
        &self,
        event_id: Option<Arc<str>>,
        trace: Option<crate::trace::TraceParent>,
        deadline: Instant,
    ) -> (Store<StoreState>, output::GuestOutput) {
        let limits = self.0.limits;
        let output =
            output::GuestOutput::new(self.0.name.clone(), event_id).with_deadline(deadline);
        let memory_bytes =
            usize::try_from(limits.memory_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let http =
            http::HttpPolicy::new(self.0.name.clone(), self.0.allowed_hosts.clone(), deadline)
                .with_trace(trace);
        let http_refusal = http_refused::HttpRefusal::new(self.0.name.clone());
        let smtp = smtp::SmtpState::new(self.0.name.clone(), self.0.smtp.clone(), deadline);
        let state = StoreState::new(
            self.0.config_json.clone(),
            output.clone(),
            memory_bytes,
            http,
            http_refusal,
            smtp,
        );
        let mut store = Store::new(&self.0.shared.engine, state);
        store.limiter(|state| &mut state.memory);
        // Out of fuel is a trap, never a panic: set_fuel only fails when fuel is off.
        let _ = store.set_fuel(limits.fuel);
        // Every tick, yield to the executor so one busy guest cannot starve other tasks, and
        // interrupt it once the deadline has passed.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        (store, output)
    }

    /// One instance kept for many events, for the benchmarks' reference figure only: state
    /// survives from one event to the next, so this is not the isolation the host gives
    /// handlers, and the host never runs handlers this way.
    #[doc(hidden)]
    pub async fn reused_instance(&self) -> wasmtime::Result<ReusedInstance> {
        let (mut store, _output) = self.new_store(None, None, Instant::now() + REUSED_DEADLINE);
        let bindings = self.0.pre.instantiate_async(&mut store).await?;
        Ok(ReusedInstance {
            store,
            bindings,
            fuel: self.0.limits.fuel,
        })
    }

    /// Instantiates the handler in a new store under its limits and calls one export.
    async fn run<T>(
        &self,
        deadline: Instant,
        event_id: Option<Arc<str>>,
        trace: Option<crate::trace::TraceParent>,
        call: impl AsyncFnOnce(
            &wit::EventHandler,
            &mut Store<StoreState>,
        ) -> wasmtime::Result<Result<T, String>>,
    ) -> (Invocation, Option<T>) {
        let limits = self.0.limits;
        let started = Instant::now();
        let (mut store, output) = self.new_store(event_id, trace, deadline);

        let pre = &self.0.pre;
        // Guest code is interrupted at the deadline by the epoch callback, which keeps the fuel
        // count exact; this outer timeout, a little later, catches a guest waiting in a host call.
        let result = tokio::time::timeout_at((deadline + HOST_CALL_GRACE).into(), async {
            let bindings = loop {
                match pre.instantiate_async(&mut store).await {
                    Err(e) if pool::is_full(&e) => {
                        if !pool::wait_for_slot(&self.0.name, &e, deadline).await {
                            return Err(e);
                        }
                    }
                    instantiated => break instantiated?,
                }
            };
            call(&bindings, &mut store).await
        })
        .await;

        let fuel_consumed = store
            .get_fuel()
            .map_or(0, |left| limits.fuel.saturating_sub(left));
        let panic = output.finish();
        let (status, error, value) = match result {
            Ok(Ok(Ok(value))) => (Status::Ok, None, Some(value)),
            Ok(Ok(Err(message))) => match limits::check_message(&message, "error message") {
                Some(oversize) => (Status::Oversize, Some(oversize), None),
                None => (Status::Error, Some(message), None),
            },
            Ok(Err(error)) if pool::is_full(&error) => (
                Status::Timeout,
                Some(format!(
                    "found no free sandbox slot within {} ms ({error})",
                    limits.timeout_ms
                )),
                None,
            ),
            Ok(Err(error)) => {
                let (status, message) = status::classify(&error, store.data(), panic, limits);
                (status, Some(message), None)
            }
            // The deadline passed while the guest was waiting in a host call.
            Err(_elapsed) => {
                let (status, message) = status::timeout(limits);
                (status, Some(message), None)
            }
        };
        // Every cause may carry guest text (its error, its panic message): escaped here, once,
        // so no log line, report or dead letter can hold a forged line.
        let error = error.map(|e| crate::escape::escape(&e).into_owned());
        let invocation = Invocation {
            status,
            outcome: None,
            error,
            fuel_consumed,
            duration: started.elapsed(),
        };
        (invocation, value)
    }
}

/// How long a [`ReusedInstance`] may live: it has no per-event deadline.
const REUSED_DEADLINE: Duration = Duration::from_secs(3600);

/// See [`Handler::reused_instance`].
#[doc(hidden)]
pub struct ReusedInstance {
    store: Store<StoreState>,
    bindings: wit::EventHandler,
    fuel: u64,
}

impl std::fmt::Debug for ReusedInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReusedInstance").finish_non_exhaustive()
    }
}

impl ReusedInstance {
    /// Runs `on-event` in the same instance as every earlier event, with the fuel refilled.
    pub async fn on_event(
        &mut self,
        event: &Event,
    ) -> wasmtime::Result<Result<wit::Outcome, String>> {
        let _ = self.store.set_fuel(self.fuel);
        self.bindings
            .call_on_event(&mut self.store, event.wit())
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::config::{Capabilities, HandlerSpec};
    use crate::limits::Limits;

    fn spec(module: &str) -> HandlerSpec {
        HandlerSpec::for_module(
            std::path::Path::new(module),
            serde_json::Value::Null,
            Limits::default(),
            Capabilities::default(),
        )
    }

    /// A component header followed by a section that cannot be parsed.
    const BROKEN_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00\x01\x05\xff\xff\xff\xff\xff";

    #[test]
    fn a_compile_error_keeps_wasmtimes_error_as_its_source() {
        let sandbox = Sandbox::new().expect("sandbox");
        let err = sandbox
            .load_bytes(&spec("broken.wasm"), BROKEN_COMPONENT)
            .expect_err("does not compile");
        assert!(matches!(err, LoadError::Compile { .. }), "{err}");
        let source = err.source().expect("the wasmtime error is kept");
        // The message names the cause (logs print it alone), and the cause is the same error.
        assert!(err.to_string().ends_with(&source.to_string()), "{err}");
    }

    #[test]
    fn a_read_error_keeps_the_io_error_as_its_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.wasm");
        let err = Sandbox::new()
            .expect("sandbox")
            .load(&spec(missing.to_str().expect("utf-8")))
            .expect_err("no such file");
        let io = err
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .expect("the io error is kept");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }
}
