//! The generated bindings for `wit/handler.wit`: the only `bindgen!` in the host. The types
//! are documented in the WIT file.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "wit",
    world: "event-handler",
    // Exports are called with `call_async` so fuel, epoch deadlines and timeouts can interrupt
    // a guest without blocking a tokio worker; imports (`log`, `config`) never block.
    exports: { default: async },
});

pub use self::hookwasm::handler::host::Level;
pub use self::hookwasm::handler::types::*;
