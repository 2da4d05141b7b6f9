//! The pooling allocator: how big the pool is, and what an invocation does when it is full.
//!
//! With the pooling allocator, every instance, linear memory, table and fiber stack comes from
//! slots reserved once at startup, so a fresh instance per event costs no `mmap`/`munmap`. A slot
//! freed by a module is reused by the same module, with the module's copy-on-write memory image
//! still mapped; with `keep_resident`, the pages the guest dirtied are reset in place rather
//! than dropped, so the next event takes no page faults on them.
//!
//! The pool is sized for far more instances than the host runs at once (each event in flight
//! per handler, `init`s, and old versions finishing during a reload). Its cost is address space,
//! not memory: a memory slot reserves 4 GiB plus a guard so compiled code needs no bounds checks,
//! and only the pages a guest touches become resident. Should it still be full, an invocation
//! waits for a free slot until its deadline, and the host log says so: it never fails silently.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::{Enabled, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Component instances alive at once.
pub const INSTANCES: u32 = 1_000;
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

/// The pooling allocator's settings. Tables may grow to `max_table_elements`, the limit the
/// store's limiter enforces; memories keep the pool's default 4 GiB maximum, since `memoryMiB`
/// is enforced per handler by the limiter, which reports a refusal as `memory-limit`.
pub fn config(keep_resident: bool, max_table_elements: usize) -> InstanceAllocationStrategy {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(INSTANCES)
        .total_core_instances(INSTANCES * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(INSTANCES * MEMORIES_PER_COMPONENT)
        .total_tables(INSTANCES * TABLES_PER_COMPONENT)
        .total_stacks(INSTANCES)
        .max_memories_per_module(MEMORIES_PER_MODULE)
        .max_tables_per_module(TABLES_PER_MODULE)
        .table_elements(max_table_elements)
        // Keep every handler's slots affine to it: a slot taken over by another module must map
        // that module's image again.
        .max_unused_warm_slots(INSTANCES * MEMORIES_PER_COMPONENT);
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
