//! What `export_handler!` wires the WIT exports to. Public only so the macro can reach it.

use crate::bindings::hookwasm::handler::host;
use crate::{Event, Handler, Outcome, config};

pub use crate::bindings::Guest;

/// The `init` export: deserialise the handler from its config, then let it check itself.
pub fn init<H: Handler>(config: String) -> Result<(), String> {
    let handler: H = config::parse(&config)?;
    Ok(handler.init()?)
}

/// The `on-event` export. Each event runs in a fresh instance, so the config is read again from
/// the host (`init` ran in another instance).
pub fn on_event<H: Handler>(event: Event) -> Result<Outcome, String> {
    let handler: H = config::parse(&host::config())?;
    Ok(handler.on_event(&event)?)
}
