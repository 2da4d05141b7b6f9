//! The generated bindings for `wit/handler.wit`: the host's `bindgen!`s, all here. The types
//! are documented in the WIT file.
//!
//! Version rule: the host links the current package (0.2.0) and every older one it still
//! supports (0.1.0, from the frozen copy in `wit/0.1.0/`), so a component imports whichever
//! version it was built against. Exports (`init`, `on-event`) carry no version and their types
//! are compared by structure, so one set of call bindings ([`EventHandler`]) runs both; a
//! package version whose exports change would need bindings of its own. Wasmtime treats 0.1.x
//! and 0.2.x as incompatible, so each is linked by its own name; any other version, a later
//! patch included, is refused at load ([`SUPPORTED_VERSIONS`]).
#![allow(missing_docs)]

/// The `hookwasm:handler` package versions the host links. A component must import exactly one
/// of them: a later patch or minor version is refused at load, even where wasmtime would bind it
/// to an earlier one, since the guest may use what that version does not have.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["0.1.0", "0.2.0"];

wasmtime::component::bindgen!({
    path: "wit",
    world: "event-handler",
    // Exports are called with `call_async` so fuel, epoch deadlines and timeouts can interrupt
    // a guest without blocking a tokio worker; `log` and `config` never block; `smtp.send`
    // waits on the network, so it is async and bounded by the event's deadline. `log` ends
    // the invocation once its deadline has passed (see `output.rs`), so it can trap.
    imports: {
        "hookwasm:handler/smtp.send": async,
        "hookwasm:handler/host.log": trappable,
    },
    exports: { default: async },
});

pub use self::hookwasm::handler::host::Level;
pub use self::hookwasm::handler::smtp::Message as MailMessage;
pub use self::hookwasm::handler::types::*;

/// The 0.1.0 package: only its imports are used (see the module's doc).
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "event-handler",
        imports: { "hookwasm:handler/host.log": trappable },
        exports: { default: async },
    });
}
