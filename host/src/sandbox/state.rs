//! What one store holds: everything a single invocation of a handler can reach.
//!
//! A fresh [`StoreState`] is built for every event, so nothing survives from one event to the
//! next, and nothing in it is shared with another handler.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::http::HttpPolicy;
use super::http_refused::HttpRefusal;
use super::output::GuestOutput;
use super::smtp::SmtpState;
use crate::wit;

/// Host-side objects one invocation may hold at once (streams, pollables, `wasi:http` fields,
/// requests, bodies, ...): the resource table's capacity. The SDK uses about a dozen per
/// request; a guest asking for more traps (`resource table has no free space`) instead of
/// making the host hold memory its `memoryMiB` does not count.
pub const MAX_RESOURCES: usize = 256;
/// Most bytes of names and values one `wasi:http` `fields` object may hold. With
/// [`MAX_RESOURCES`], what header objects can make the host hold is bounded by
/// `MAX_RESOURCES × MAX_FIELDS_BYTES` (4 MiB) per invocation.
pub const MAX_FIELDS_BYTES: usize = 16 << 10;
/// Most bytes one `wasi:random` call may ask for; a larger request traps. Generating them is
/// work done in a host call, where the deadline cannot interrupt it.
pub const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// The per-invocation store data.
///
/// The WASI context is built on the guest's first call into WASI: most events of most handlers
/// never make one, and building it (clocks, two seeded random generators, boxed streams) is a
/// measurable part of a fresh store. The `wasi:http` context, its policy and the refusal state
/// are a few words and reference counts, so they are built with the store; which of them the
/// guest reaches depends on the linker its handler was given (see `Sandbox::load_bytes`).
pub struct StoreState {
    wasi: Option<WasiCtx>,
    http: WasiHttpCtx,
    http_policy: HttpPolicy,
    /// What an ungranted handler's `wasi:http` sees (see `http_refused.rs`).
    pub http_refusal: HttpRefusal,
    table: ResourceTable,
    config_json: Arc<str>,
    /// The guest's output, forwarded to the host's log.
    pub output: GuestOutput,
    /// The linear-memory cap and whether the guest hit it.
    pub memory: MemoryCap,
    /// The `smtp` interface's grant, deadline and send count for this invocation.
    pub smtp: SmtpState,
}

impl StoreState {
    /// State for one invocation of a handler whose config is `config_json`.
    pub fn new(
        config_json: Arc<str>,
        output: GuestOutput,
        memory_bytes: usize,
        http_policy: HttpPolicy,
        http_refusal: HttpRefusal,
        smtp: SmtpState,
    ) -> StoreState {
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_FIELDS_BYTES);
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        StoreState {
            wasi: None,
            http,
            http_policy,
            http_refusal,
            table,
            config_json,
            output,
            memory: MemoryCap {
                max_bytes: memory_bytes,
                hit: false,
            },
            smtp,
        }
    }
}

/// WASI is linked because every wasm32-wasip2 program imports it, but nothing real is behind
/// it: no preopened folders, no environment, no arguments, no stdin, no network. Stdout and
/// stderr go to the host's log. Randomness is bounded per call ([`MAX_RANDOM_BYTES`]).
fn wasi_context(output: &GuestOutput) -> WasiCtx {
    WasiCtx::builder()
        .stdout(output.stdout())
        .stderr(output.stderr())
        .max_random_size(MAX_RANDOM_BYTES)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

impl std::fmt::Debug for StoreState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreState")
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let output = &self.output;
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| wasi_context(output)),
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        // Outbound HTTP goes through the policy: see `http.rs`.
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_policy,
        }
    }
}

impl wit::hookwasm::handler::host::Host for StoreState {
    fn log(&mut self, level: wit::Level, message: String) -> wasmtime::Result<()> {
        self.output.log(level, &message)
    }

    fn config(&mut self) -> String {
        self.config_json.to_string()
    }
}

impl wit::hookwasm::handler::types::Host for StoreState {}

/// Components built against 0.1.0 import the same `host` interface under its old version.
impl wit::v0_1::hookwasm::handler::host::Host for StoreState {
    fn log(
        &mut self,
        level: wit::v0_1::hookwasm::handler::host::Level,
        message: String,
    ) -> wasmtime::Result<()> {
        use wit::v0_1::hookwasm::handler::host::Level as Old;
        let level = match level {
            Old::Trace => wit::Level::Trace,
            Old::Debug => wit::Level::Debug,
            Old::Info => wit::Level::Info,
            Old::Warn => wit::Level::Warn,
            Old::Error => wit::Level::Error,
        };
        self.output.log(level, &message)
    }

    fn config(&mut self) -> String {
        self.config_json.to_string()
    }
}

impl wit::v0_1::hookwasm::handler::types::Host for StoreState {}

/// A cap on linear memory and tables. Refusing a `memory.grow` is not a trap by itself: the
/// guest sees the failure (Rust aborts on it), and `hit` tells the host why it died.
#[derive(Debug)]
pub struct MemoryCap {
    max_bytes: usize,
    /// Whether a growth was refused during this invocation.
    pub hit: bool,
}

/// Table elements a handler may have; far beyond what a Rust guest uses.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_bytes;
        self.hit |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= MAX_TABLE_ELEMENTS;
        self.hit |= !allowed;
        Ok(allowed)
    }
}
