//! The pooling allocator: how big the pool is, and what an invocation does when it is full.
//!
//! With the pooling allocator, every instance, linear memory, table and fiber stack comes from
//! slots reserved once at startup, so a fresh instance per event costs no `mmap`/`munmap`. A slot
//! freed by a module is reused by the same module, with the module's copy-on-write memory image
//! still mapped; with `keep_resident`, the pages the guest dirtied are reset in place rather
//! than dropped, so the next event takes no page faults on them.
//!
//! One pool serves the whole process (see `engine.rs`). It is sized by [`PoolSize`]: at least
//! [`MIN_INSTANCES`] instances, or two per loaded handler when there are more (each handler keeps
//! a warm slot, and during a reload its old and new versions run side by side), at most
//! [`MAX_INSTANCES`]; `HOOKWASM_SANDBOX_INSTANCES` overrides it. Its cost is address space, not
//! memory: a memory slot reserves 4 GiB plus a guard so compiled code needs no bounds checks, and
//! only the pages a guest touches become resident. Should it still be full, an invocation waits
//! for a free slot until its deadline, and the host log says so: it never fails silently.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::{Enabled, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The smallest pool: room for the gates of every connection the server admits by default
/// (512), observers, `init`s and a reload.
pub const MIN_INSTANCES: u32 = 1_000;
/// The largest pool: its memory slots reserve ~64 TiB, half of x86-64's user address space.
pub const MAX_INSTANCES: u32 = 8_000;
/// Instances per loaded handler: a warm slot for it, and one for its next version during a reload.
const INSTANCES_PER_HANDLER: u32 = 2;
/// The environment variable that sets the pool's size by hand.
pub const INSTANCES_VAR: &str = "HOOKWASM_SANDBOX_INSTANCES";
/// Core instances per component instance, on average over the pool: a Rust handler has a few.
const CORE_INSTANCES_PER_COMPONENT: u32 = 10;
/// Linear memories per component instance, on average (a Rust handler has one).
const MEMORIES_PER_COMPONENT: u32 = 2;
/// Tables per component instance, on average (the main module and wit-component's shims).
const TABLES_PER_COMPONENT: u32 = 4;
/// Tables one core module may define.
const TABLES_PER_MODULE: u32 = 4;
/// Memories one core module may define.
const MEMORIES_PER_MODULE: u32 = 2;
/// Dirty linear-memory bytes reset in place (and kept resident) when a memory slot is freed;
/// the rest of a slot is returned to the kernel. A trivial Rust handler dirties ~100 KiB.
const MEMORY_KEEP_RESIDENT: usize = 1 << 20;
/// The same for tables. A Rust handler's tables fit in a page each, which is reset with one
/// `memset` and no scan.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;
/// How long an invocation sleeps before asking a full pool again.
const RETRY_EVERY: Duration = Duration::from_millis(1);

/// How many component instances the process's pool holds at once; memories, tables, core
/// instances and stacks follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    /// Component instances alive at once, across every sandbox and handler of the process.
    pub instances: u32,
}

impl Default for PoolSize {
    /// The pool for a few handlers: [`MIN_INSTANCES`], or `HOOKWASM_SANDBOX_INSTANCES`.
    fn default() -> PoolSize {
        PoolSize::for_handlers(0)
    }
}

impl PoolSize {
    /// The pool for `handlers` loaded handlers: two instances each, within
    /// [`MIN_INSTANCES`]..=[`MAX_INSTANCES`]. `HOOKWASM_SANDBOX_INSTANCES`, when set to a number,
    /// wins; anything else there is logged and ignored.
    pub fn for_handlers(handlers: usize) -> PoolSize {
        match std::env::var(INSTANCES_VAR) {
            Ok(text) => match PoolSize::parse(&text) {
                Ok(size) => return size,
                Err(why) => tracing::warn!("{why}; sizing the sandbox pool from the handler count"),
            },
            Err(std::env::VarError::NotUnicode(_)) => {
                tracing::warn!(
                    "{INSTANCES_VAR} is not UTF-8; sizing the sandbox pool from the handler count"
                );
            }
            Err(std::env::VarError::NotPresent) => {}
        }
        let wanted = u32::try_from(handlers)
            .unwrap_or(u32::MAX)
            .saturating_mul(INSTANCES_PER_HANDLER);
        PoolSize {
            instances: wanted.clamp(MIN_INSTANCES, MAX_INSTANCES),
        }
    }

    /// `HOOKWASM_SANDBOX_INSTANCES`'s value: a whole number from 1 to [`MAX_INSTANCES`].
    fn parse(text: &str) -> Result<PoolSize, String> {
        match text.trim().parse::<u32>() {
            Ok(instances @ 1..=MAX_INSTANCES) => Ok(PoolSize { instances }),
            _ => Err(format!(
                "{INSTANCES_VAR}={text:?} is not a number of sandbox instances from 1 to {MAX_INSTANCES}"
            )),
        }
    }

    /// Linear memories the pool reserves (about 4 GiB of address space each).
    pub fn memories(self) -> u32 {
        self.instances * MEMORIES_PER_COMPONENT
    }
}

/// The pooling allocator's settings. Tables may grow to `max_table_elements`, the limit the
/// store's limiter enforces; memories keep the pool's default 4 GiB maximum, since `memoryMiB`
/// is enforced per handler by the limiter, which reports a refusal as `memory-limit`.
pub fn config(
    size: PoolSize,
    keep_resident: bool,
    max_table_elements: usize,
) -> InstanceAllocationStrategy {
    let instances = size.instances;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .total_core_instances(instances * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(size.memories())
        .total_tables(instances * TABLES_PER_COMPONENT)
        .total_stacks(instances)
        .max_memories_per_module(MEMORIES_PER_MODULE)
        .max_tables_per_module(TABLES_PER_MODULE)
        .table_elements(max_table_elements)
        // Keep every handler's slots affine to it: a slot taken over by another module must map
        // that module's image again.
        .max_unused_warm_slots(size.memories());
    // Without PAGEMAP_SCAN (Linux < 6.7), "keep resident" means memset-ing a slot's first bytes,
    // which for a Rust guest are its mostly untouched stack: slower than page faults.
    if keep_resident {
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
                .table_keep_resident(TABLE_KEEP_RESIDENT)
                .pagemap_scan(Enabled::Yes);
        } else {
            tracing::info!(
                "PAGEMAP_SCAN is not available (it needs Linux 6.7): freed sandbox memory goes back to the kernel, and each event pays page faults"
            );
        }
    }
    InstanceAllocationStrategy::Pooling(pool)
}

/// Whether an instantiation failed only because every slot of some kind is in use.
pub fn is_full(error: &wasmtime::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.is::<wasmtime::PoolConcurrencyLimitError>())
}

/// Waits a little before the next attempt on a full pool; `false` once `deadline` has passed.
/// The first wait in each second is logged, so an undersized pool shows in the log.
pub async fn wait_for_slot(handler: &str, error: &wasmtime::Error, deadline: Instant) -> bool {
    static LAST_LOGGED_SECOND: AtomicU64 = AtomicU64::new(0);
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST_LOGGED_SECOND.swap(second, Ordering::Relaxed) != second {
        tracing::warn!(
            handler,
            "the sandbox pool is full ({error}); invocations wait for a free slot until their deadline"
        );
    }
    if Instant::now() + RETRY_EVERY >= deadline {
        return false;
    }
    tokio::time::sleep(RETRY_EVERY).await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_grows_with_the_handler_count_within_its_bounds() {
        // The variable would override every size below.
        if std::env::var_os(INSTANCES_VAR).is_some() {
            return;
        }
        assert_eq!(PoolSize::for_handlers(0).instances, MIN_INSTANCES);
        assert_eq!(PoolSize::for_handlers(100).instances, MIN_INSTANCES);
        assert_eq!(PoolSize::for_handlers(1_000).instances, 2_000);
        assert_eq!(PoolSize::for_handlers(1_000).memories(), 4_000);
        assert_eq!(PoolSize::for_handlers(100_000).instances, MAX_INSTANCES);
        assert_eq!(PoolSize::for_handlers(usize::MAX).instances, MAX_INSTANCES);
    }

    #[test]
    fn the_override_is_a_number_in_range_and_says_what_is_wrong_otherwise() {
        assert_eq!(PoolSize::parse(" 64 "), Ok(PoolSize { instances: 64 }));
        for bad in ["0", "-1", "lots", "", "8001"] {
            let why = PoolSize::parse(bad).expect_err(bad);
            assert_eq!(
                why,
                format!(
                    "HOOKWASM_SANDBOX_INSTANCES={bad:?} is not a number of sandbox instances from 1 to 8000"
                )
            );
        }
    }
}
