//! The one place the WIT world is turned into Rust (`wit_bindgen::generate!`).
//!
//! Everything here is generated; the rest of the crate re-exports the types with short names and
//! adds helpers. The generated code is the only `unsafe` in the SDK (the canonical ABI glue).
//!
//! Because `generate!` runs in this crate rather than in each handler's, the generated code finds
//! `wit_bindgen` through this crate's own dependency: no `runtime_path` is needed, and handlers
//! need no wit-bindgen dependency. What expands in a handler's crate (`export_handler!`) only
//! names paths under `$crate`.

wit_bindgen::generate!({
    world: "event-handler",
    // Relative to this crate's Cargo.toml: `sdk/wit` links to the workspace's `wit/`, the WIT
    // package the host is built against, so guest and host can never disagree about the
    // contract (and the published crate carries it).
    path: "wit",
    // `export_handler!` expands in the handler's crate and calls this macro from there, so it
    // must be `#[macro_export]`ed; the name is hidden because authors never call it directly.
    pub_export_macro: true,
    export_macro_name: "__export_world",
    default_bindings_module: "::hookwasm_sdk::bindings",
    // Lets handlers and their tests compare events and outcomes with `==`.
    additional_derives: [PartialEq, Eq],
});
