//! A handler built against the frozen 0.1.0 contract (`wit/0.1.0/handler.wit`), as any handler
//! compiled before the 0.2.0 bump was: the host must keep loading and running it. It uses both
//! 0.1.0 imports (`log`, `config`) and answers with what it saw.

// wit-bindgen's export glue expands at the crate root (the SDK hides it behind its own macro).
#![allow(unsafe_code)]

#[allow(missing_docs, unused_qualifications)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/0.1.0",
        world: "event-handler",
    });
}

use bindings::hookwasm::handler::host::{self, Level};
use bindings::hookwasm::handler::types::{Event, Outcome, Payload, Verdict};

struct WitZeroOne;

impl bindings::Guest for WitZeroOne {
    fn init(config: String) -> Result<(), String> {
        if config.contains("\"refuse\"") {
            return Err("wit-0-1: init refused, as asked".into());
        }
        Ok(())
    }

    fn on_event(event: Event) -> Result<Outcome, String> {
        host::log(Level::Info, &format!("wit-0-1 saw {}", event.id));
        let payload = match &event.payload {
            Payload::ProxyAction(_) => "proxy-action",
            Payload::RefUpdate(_) => "ref-update",
            Payload::PushRejected(_) => "push-rejected",
            Payload::Custom(_) => "custom",
        };
        Ok(Outcome {
            verdict: Verdict::Allow,
            annotations: vec![
                ("wit".into(), "0.1.0".into()),
                ("seen".into(), event.id),
                ("payload".into(), payload.into()),
                ("config".into(), host::config()),
            ],
        })
    }
}

bindings::export!(WitZeroOne with_types_in bindings);
