//! The trait a handler implements.

use serde::de::DeserializeOwned;

use crate::{Event, Outcome, Payload, ProxyAction, PushRejected, RefUpdate, Result};

/// An event handler. Its type is its config: the host's `config` JSON is deserialised into it
/// (`null` and `{}` both count as "no config"), so a handler with no settings is a unit struct
/// and one with settings is a struct of them.
///
/// Every method has a default, so a handler implements only what it cares about:
/// [`on_event`](Handler::on_event) dispatches on the payload to the `on_*` method for its kind,
/// and each of those allows by default.
///
/// The host runs every event in a fresh instance: the handler is deserialised again for each
/// event, and nothing a method stores survives to the next one.
///
/// ```
/// use hookwasm_sdk::{Event, Handler, Outcome, RefChange, RefUpdate, Result};
///
/// #[derive(serde::Deserialize)]
/// struct NoDeletes;
///
/// impl Handler for NoDeletes {
///     fn on_ref_update(&self, _event: &Event, update: &RefUpdate) -> Result<Outcome> {
///         if update.change == RefChange::Deleted {
///             return Ok(Outcome::deny(format!("{} may not be deleted", update.ref_name)));
///         }
///         Ok(Outcome::allow())
///     }
/// }
///
/// hookwasm_sdk::export_handler!(NoDeletes);
/// ```
pub trait Handler: DeserializeOwned {
    /// Checks the config once, when the host loads (or reloads) the handler. An `Err` refuses
    /// the load with its message, so report bad settings here rather than on every event.
    fn init(&self) -> Result<()> {
        Ok(())
    }

    /// Handles one event. Override this to see every event in one place; by default it calls the
    /// `on_*` method matching the payload.
    fn on_event(&self, event: &Event) -> Result<Outcome> {
        match &event.payload {
            Payload::ProxyAction(action) => self.on_proxy_action(event, action),
            Payload::RefUpdate(update) => self.on_ref_update(event, update),
            Payload::PushRejected(rejected) => self.on_push_rejected(event, rejected),
            Payload::Custom(data) => self.on_custom(event, data),
        }
    }

    /// `push.*` and `pull.*` events: a git proxy's action at one phase.
    fn on_proxy_action(&self, event: &Event, action: &ProxyAction) -> Result<Outcome> {
        let _ = (event, action);
        Ok(Outcome::allow())
    }

    /// `git.branch.*`, `git.tag.*` and `git.ref.*` events: one ref update of a push.
    fn on_ref_update(&self, event: &Event, update: &RefUpdate) -> Result<Outcome> {
        let _ = (event, update);
        Ok(Outcome::allow())
    }

    /// `git.push.rejected`: a push that a gate (or git) refused.
    fn on_push_rejected(&self, event: &Event, rejected: &PushRejected) -> Result<Outcome> {
        let _ = (event, rejected);
        Ok(Outcome::allow())
    }

    /// Any other event type; `data_json` is the event's `data` as JSON text
    /// ([`Event::data`] deserialises it).
    fn on_custom(&self, event: &Event, data_json: &str) -> Result<Outcome> {
        let _ = (event, data_json);
        Ok(Outcome::allow())
    }
}
