//! The process's engine: one wasmtime [`Engine`], one pooling allocator and one epoch ticker
//! for every [`Sandbox`](super::Sandbox) of a process with the same [`Tuning`].
//!
//! A pool reserves its address space up front (see `pool.rs`): about 4 GiB per memory slot,
//! ~8 TiB for the default pool. An engine per sandbox would reserve that again for each one, and
//! after about fifteen the address space is gone and the next falls back to the slower
//! on-demand allocator. So a sandbox asks this registry for the engine of its tuning: the first
//! one builds it, sized by its [`PoolSize`]; the others share it while any sandbox or handler
//! still holds it; when the last is dropped, the pool's reservation and the ticker thread go.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use wasmtime::{Config as EngineConfig, Engine};

use super::limits::MAX_WASM_STACK_BYTES;
use super::pool::{self, PoolSize};
use super::{Linkers, SandboxError, Tuning};

/// How often the engine's epoch advances: the granularity of deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Which allocator an engine gives instances, memories, tables and stacks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// Slots reserved once; no `mmap`/`munmap` per event.
    Pooling(PoolSize),
    /// An `mmap`/`munmap` per event: the tuning asked for it, or the pool could not be reserved
    /// (the host log said why).
    OnDemand,
}

/// What every sandbox of one tuning shares.
pub(super) struct Shared {
    pub engine: Engine,
    pub allocator: Allocator,
    /// One linker per combination of granted capabilities.
    pub linkers: Linkers,
    /// Compiled components by module digest, so entries sharing a module share one compiled copy
    /// (and one memory image) for as long as any handler of it is loaded.
    pub compiled: Mutex<std::collections::HashMap<String, Weak<super::Compiled>>>,
    _ticker: EpochTicker,
}

/// The live engines of this process, one per tuning.
static ENGINES: Mutex<Vec<(Tuning, Weak<Shared>)>> = Mutex::new(Vec::new());

/// The engine for `tuning`: the live one if any sandbox of this tuning still holds it, else a new
/// one with a pool of `size`. A live pool smaller than `size` keeps its size (a pool cannot
/// grow), and the log says so.
pub(super) fn shared(tuning: Tuning, size: PoolSize) -> Result<Arc<Shared>, SandboxError> {
    let mut engines = ENGINES.lock().unwrap_or_else(|e| e.into_inner());
    engines.retain(|(_, weak)| weak.strong_count() > 0);
    if let Some(live) = engines
        .iter()
        .find(|(t, _)| *t == tuning)
        .and_then(|(_, weak)| weak.upgrade())
    {
        if let Allocator::Pooling(live_size) = live.allocator
            && live_size.instances < size.instances
        {
            tracing::warn!(
                "the process's sandbox pool holds {} instances and cannot grow to the {} asked for; set HOOKWASM_SANDBOX_INSTANCES before the first sandbox is made",
                live_size.instances,
                size.instances
            );
        }
        return Ok(live);
    }
    let shared = Arc::new(build(tuning, size)?);
    engines.push((tuning, Arc::downgrade(&shared)));
    Ok(shared)
}

/// A new engine (pooled when the tuning says so and the pool can be reserved), its linkers and
/// its ticker.
fn build(tuning: Tuning, size: PoolSize) -> Result<Shared, SandboxError> {
    let mut config = EngineConfig::new();
    config
        .consume_fuel(tuning.metering)
        .epoch_interruption(tuning.metering)
        .max_wasm_stack(MAX_WASM_STACK_BYTES);
    let mut pooled = None;
    if tuning.pooling {
        config.allocation_strategy(pool::config(
            size,
            tuning.keep_resident,
            super::state::MAX_TABLE_ELEMENTS,
        ));
        // Where a limit such as `ulimit -v` forbids the reservation, run with the on-demand
        // allocator rather than not at all; `Sandbox::allocator` reports which one runs.
        match Engine::new(&config) {
            Ok(engine) => pooled = Some(engine),
            Err(e) => {
                tracing::warn!(
                    "cannot reserve the sandbox pool of {} instances ({e}); using the on-demand allocator, which is slower per event (HOOKWASM_SANDBOX_INSTANCES sets a smaller pool)",
                    size.instances
                );
                config.allocation_strategy(wasmtime::InstanceAllocationStrategy::OnDemand);
            }
        }
    }
    let (engine, allocator) = match pooled {
        Some(engine) => (engine, Allocator::Pooling(size)),
        None => (
            Engine::new(&config).map_err(|source| SandboxError::Engine { source })?,
            Allocator::OnDemand,
        ),
    };
    let linkers = Linkers::build(&engine)?;
    Ok(Shared {
        _ticker: EpochTicker::start(engine.clone()),
        engine,
        allocator,
        linkers,
        compiled: Mutex::default(),
    })
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
