//! The sandbox: one wasmtime [`Engine`] for the process, one compiled component and
//! `InstancePre` per handler, and a fresh [`Store`] per invocation with fuel, an epoch deadline
//! and a memory cap.
//!
//! Reading order: [`Sandbox::load`] turns a `.wasm` file into a [`Handler`];
//! [`Handler::on_event`] runs one event in a new instance and returns an [`Invocation`];
//! `status.rs` turns whatever went wrong into a [`Status`].

mod cache;
mod http;
mod limits;
mod output;
mod state;
mod status;
pub mod wit;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config as EngineConfig, Engine, Store, UpdateDeadline};

use crate::config::{AllowedHost, HandlerSpec, Limits};
use crate::event::Event;
use state::StoreState;
use status::Budget;

pub use http::MAX_RESPONSE_BYTES;
pub use limits::{MAX_ANNOTATIONS, MAX_MESSAGE_BYTES, MAX_WASM_STACK_BYTES};
pub use output::{MAX_LINE_BYTES, MAX_LINES};
pub use status::Status;

/// How often the engine's epoch advances: the granularity of deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How long after its deadline a guest blocked in a host call is cut off.
const HOST_CALL_GRACE: Duration = Duration::from_millis(20);

/// The world every handler must implement, for error messages.
pub const WORLD: &str = "hookwasm:handler/event-handler@0.1.0";

/// The process-wide engine and linker, plus the thread that drives epoch deadlines.
#[derive(Clone)]
pub struct Sandbox {
    engine: Engine,
    linker: Arc<Linker<StoreState>>,
    cache: Option<cache::CompileCache>,
    _ticker: Arc<EpochTicker>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

/// Why a module could not become a handler. Each message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read module {path}: {source}")]
    Read {
        /// The module file.
        path: PathBuf,
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
        "{path} is a core WebAssembly module, not a component; build it with `--target wasm32-wasip2` (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule {
        /// The module file.
        path: PathBuf,
    },
    /// Wasmtime could not compile the component.
    #[error("{path} does not compile: {message}")]
    Compile {
        /// The module file.
        path: PathBuf,
        /// Wasmtime's reason.
        message: String,
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

impl Sandbox {
    /// Builds the engine (fuel and epoch interruption on) and the linker (WASI with nothing
    /// behind it, plus the `host` interface).
    pub fn new() -> anyhow::Result<Sandbox> {
        Sandbox::with_metering(true)
    }

    /// Like [`Sandbox::new`]; `metering: false` turns fuel and deadlines off so benchmarks can
    /// show what they cost. Handlers then run unbounded in time: never do this in production.
    pub fn with_metering(metering: bool) -> anyhow::Result<Sandbox> {
        let mut config = EngineConfig::new();
        config
            .consume_fuel(metering)
            .epoch_interruption(metering)
            .max_wasm_stack(MAX_WASM_STACK_BYTES);
        let engine =
            Engine::new(&config).map_err(|e| anyhow::anyhow!("cannot start wasmtime: {e}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link WASI: {e}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link wasi:http: {e}"))?;
        wit::EventHandler::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("cannot link the host interface: {e}"))?;
        Ok(Sandbox {
            _ticker: Arc::new(EpochTicker::start(engine.clone())),
            engine,
            linker: Arc::new(linker),
            cache: None,
        })
    }

    /// Keeps compiled components in `dir`, so unchanged modules are not compiled again. A folder
    /// that cannot be used is logged and skipped: the cache only saves time.
    pub fn with_cache(mut self, dir: &std::path::Path) -> Sandbox {
        match cache::CompileCache::open(dir, &self.engine) {
            Ok(cache) => self.cache = Some(cache),
            Err(e) => tracing::warn!(dir = %dir.display(), "compile cache disabled: {e}"),
        }
        self
    }

    /// Reads, verifies and compiles a module and checks that it is a handler of our world. This
    /// is CPU-heavy (Cranelift): call it off the async executor.
    pub fn load(&self, spec: &HandlerSpec) -> Result<Handler, LoadError> {
        let path = spec.module.as_path();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let digest = hex::encode(Sha256::digest(&bytes));
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
        let component = match self
            .cache
            .as_ref()
            .and_then(|c| c.get(&self.engine, &digest))
        {
            Some(component) => component,
            None => {
                let component =
                    Component::new(&self.engine, &bytes).map_err(|e| LoadError::Compile {
                        path: path.to_owned(),
                        message: e.to_string(),
                    })?;
                if let Some(cache) = &self.cache {
                    cache.put(&digest, &component);
                }
                component
            }
        };
        let wrong_world = |message: String| LoadError::WrongWorld {
            path: path.to_owned(),
            message,
        };
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        if !exports.iter().any(|e| e == "on-event") {
            let found = if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports.join(", ")
            };
            return Err(wrong_world(format!(
                "it exports {found}, not `init` and `on-event`"
            )));
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| wrong_world(format!("its imports cannot be satisfied ({e})")))?;
        let pre = wit::EventHandlerPre::new(pre).map_err(|e| wrong_world(e.to_string()))?;
        Ok(Handler(Arc::new(HandlerInner {
            name: spec.name.as_str().into(),
            digest,
            config_json: spec.config.to_string().into(),
            limits: spec.limits,
            allowed_hosts: spec.capabilities.allowed_hosts.clone().into(),
            _ticker: self._ticker.clone(),
            engine: self.engine.clone(),
            pre,
        })))
    }
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
    digest: String,
    config_json: Arc<str>,
    limits: Limits,
    allowed_hosts: Arc<[AllowedHost]>,
    engine: Engine,
    pre: wit::EventHandlerPre<StoreState>,
    /// Deadlines need the ticker running for as long as any handler can run.
    _ticker: Arc<EpochTicker>,
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
    /// The handler's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// SHA-256 of the module file, lower-case hex: identifies the version.
    pub fn digest(&self) -> &str {
        &self.0.digest
    }

    /// The limits every invocation runs under.
    pub fn limits(&self) -> Limits {
        self.0.limits
    }

    /// Runs `init` with the handler's config in a fresh instance; an error refuses the load.
    pub async fn init(&self) -> Result<(), LoadError> {
        let config = self.0.config_json.to_string();
        let (invocation, _) = self
            .run(None, async |bindings, store| {
                bindings.call_init(store, &config).await
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

    /// Runs `on-event` for one event in a fresh instance.
    pub async fn on_event(&self, event: &Event) -> Invocation {
        let (mut invocation, outcome) = self
            .run(Some(event.id().into()), async |bindings, store| {
                bindings.call_on_event(store, event.wit()).await
            })
            .await;
        match outcome.as_ref().and_then(limits::check_outcome) {
            Some(oversize) => {
                invocation.status = Status::Oversize;
                invocation.error = Some(oversize);
            }
            None => invocation.outcome = outcome,
        }
        invocation
    }

    /// Instantiates the handler in a new store under its limits and calls one export.
    async fn run<T>(
        &self,
        event_id: Option<Arc<str>>,
        call: impl AsyncFnOnce(
            &wit::EventHandler,
            &mut Store<StoreState>,
        ) -> wasmtime::Result<Result<T, String>>,
    ) -> (Invocation, Option<T>) {
        let limits = self.0.limits;
        let budget = Budget {
            fuel: limits.fuel,
            timeout_ms: limits.timeout_ms,
            memory_mib: limits.memory_mib,
        };
        let started = Instant::now();
        let deadline = started + Duration::from_millis(limits.timeout_ms);
        let output = output::GuestOutput::new(self.0.name.clone(), event_id);
        let memory_bytes =
            usize::try_from(limits.memory_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let http =
            http::HttpPolicy::new(self.0.name.clone(), self.0.allowed_hosts.clone(), deadline);
        let state = StoreState::new(
            self.0.config_json.clone(),
            output.clone(),
            memory_bytes,
            http,
        );
        let mut store = Store::new(&self.0.engine, state);
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

        let pre = &self.0.pre;
        // Guest code is interrupted at the deadline by the epoch callback, which keeps the fuel
        // count exact; this outer timeout, a little later, catches a guest waiting in a host call.
        let result = tokio::time::timeout_at((deadline + HOST_CALL_GRACE).into(), async {
            let bindings = pre.instantiate_async(&mut store).await?;
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
            Ok(Err(error)) => {
                let (status, message) = status::classify(&error, store.data(), panic, budget);
                (status, Some(message), None)
            }
            // The deadline passed while the guest was waiting in a host call.
            Err(_elapsed) => {
                let (status, message) = status::timeout(budget);
                (status, Some(message), None)
            }
        };
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

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("hookwasm-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("the OS refused to start the epoch thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
