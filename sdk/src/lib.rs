//! Write hookwasm event handlers in Rust.
//!
//! A handler is a type that implements [`Handler`] and is exported with [`export_handler!`];
//! built for `wasm32-wasip2`, the crate becomes a WebAssembly component of the
//! `hookwasm:handler/event-handler` world that the hookwasm host loads.
//!
//! ```
//! use hookwasm_sdk::{Event, Handler, Outcome, RefChange, RefUpdate, Result};
//!
//! /// The handler's type is its config: the operator's `config` JSON deserialises into it.
//! #[derive(serde::Deserialize)]
//! struct Protect {
//!     protected: Vec<String>,
//! }
//!
//! impl Handler for Protect {
//!     /// Runs once at load; an `Err` refuses the load.
//!     fn init(&self) -> Result<()> {
//!         if self.protected.is_empty() {
//!             return Err("`protected` lists no branch".into());
//!         }
//!         Ok(())
//!     }
//!
//!     /// Every other kind of event is allowed by the trait's defaults.
//!     fn on_ref_update(&self, event: &Event, update: &RefUpdate) -> Result<Outcome> {
//!         let protected = self.protected.iter().any(|name| *name == update.ref_name);
//!         if protected && update.change == RefChange::ForcePushed {
//!             hookwasm_sdk::info!("refusing event {}", event.id);
//!             return Ok(Outcome::deny(format!("force-push to {}", update.ref_name))
//!                 .annotate("rule", "protected"));
//!         }
//!         Ok(Outcome::allow())
//!     }
//! }
//!
//! hookwasm_sdk::export_handler!(Protect);
//! ```
//!
//! # What the SDK provides
//!
//! - [`Handler`]: one method per kind of payload, each allowing by default.
//! - [`export_handler!`]: wires the type to the component's `init` and `on-event` exports.
//! - [`Outcome::allow`], [`Outcome::deny`] and [`Outcome::annotate`] to answer;
//!   [`Event::ref_name`], [`Event::repository`], [`Event::user`] and [`Event::data`] to read.
//! - [`Result`] and [`Error`]: `?` works on any `std::error::Error` and on `&str`/`String`
//!   messages; `Error` implements `Display`.
//! - [`log`] and the [`info!`]-style macros: the host's log, tagged with the handler's name.
//! - [`http`]: blocking outbound requests, to the hosts the operator granted.
//! - [`mail`]: e-mail through the SMTP relay the operator granted.
//! - [`testing`] (native only): event builders, loading a handler as the host does, captured
//!   log lines and mocked HTTP for unit tests.
//! - The WIT types under short names ([`Event`], [`Payload`], [`RefUpdate`], ...).
//!
//! # Config and serde
//!
//! The handler type must implement `serde::Deserialize`. Either depend on `serde` (with its
//! `derive` feature) and write `#[derive(serde::Deserialize)]`, as above, or use the copy this
//! crate re-exports and tell the derive where it is:
//!
//! ```
//! #[derive(hookwasm_sdk::serde::Deserialize)]
//! #[serde(crate = "hookwasm_sdk::serde")]
//! struct Observer;
//!
//! impl hookwasm_sdk::Handler for Observer {}
//!
//! hookwasm_sdk::export_handler!(Observer);
//! ```
//!
//! A missing config (`null`) and an empty one (`{}`) are interchangeable, so unit structs and
//! structs whose fields all have `#[serde(default)]` load either way. A config that does not fit
//! refuses the load with `invalid handler config: <what serde says>`.
//!
//! # Lifecycle
//!
//! The host calls `init` once per load (in an instance of its own) and `on-event` once per event,
//! each in a fresh instance: the config is deserialised again every time, and no state survives
//! from one event to the next. A panic traps the instance; the host records it as a failure of
//! that one event.

#![deny(missing_docs)]

// Other wasm targets build "successfully" into core modules the host then refuses: say so now.
#[cfg(all(
    target_arch = "wasm32",
    not(all(target_os = "wasi", target_env = "p2"))
))]
compile_error!(
    "hookwasm handlers are WebAssembly components: build for wasm32-wasip2 (`cargo build --release --target wasm32-wasip2`, or set `build.target = \"wasm32-wasip2\"` in .cargo/config.toml), not wasm32-wasip1 or wasm32-unknown-unknown"
);

#[doc(hidden)]
#[allow(unsafe_code, unused_qualifications, missing_docs)]
pub mod bindings;
mod config;
mod error;
mod event;
#[doc(hidden)]
pub mod export;
mod handler;
pub mod http;
pub mod log;
pub mod mail;
mod outcome;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use serde;

pub use crate::bindings::hookwasm::handler::types::{
    Event, Operation, Outcome, Payload, Phase, ProxyAction, PushRejected, RefChange, RefKind,
    RefUpdate, Repository, Step, User, Verdict,
};
pub use crate::error::{Error, Result};
pub use crate::handler::Handler;

/// The handler's `config` exactly as the host holds it: JSON text, `null` when there is none.
///
/// Rarely needed: the config is already deserialised into the handler's type. Useful to log or
/// fingerprint it.
///
/// Natively (unit tests), a live [`testing::TestHost`] answers with the config it last loaded.
///
/// # Panics
///
/// Natively, when no [`testing::TestHost`] is alive on this thread.
pub fn raw_config() -> String {
    #[cfg(target_arch = "wasm32")]
    return bindings::hookwasm::handler::host::config();
    #[cfg(not(target_arch = "wasm32"))]
    testing::config().unwrap_or_else(|| {
        panic!(
            "hookwasm_sdk::raw_config() asks the hookwasm host: in a unit test, create a hookwasm_sdk::testing::TestHost first"
        )
    })
}

/// Exports a [`Handler`] type as the component's `init` and `on-event`. Invoke it once, at the
/// crate root of a `cdylib` crate.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct AllowAll;
///
/// impl hookwasm_sdk::Handler for AllowAll {}
///
/// hookwasm_sdk::export_handler!(AllowAll);
/// ```
#[macro_export]
macro_rules! export_handler {
    ($handler:ty $(,)?) => {
        const _: () = {
            struct HookwasmExport;

            impl $crate::export::Guest for HookwasmExport {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::export::init::<$handler>(config)
                }

                fn on_event(
                    event: $crate::Event,
                ) -> ::std::result::Result<$crate::Outcome, ::std::string::String> {
                    $crate::export::on_event::<$handler>(event)
                }
            }

            $crate::bindings::__export_world! {
                HookwasmExport with_types_in $crate::bindings
            }
        };
    };
}
