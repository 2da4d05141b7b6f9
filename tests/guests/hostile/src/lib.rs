//! A handler that attacks the host through its host calls rather than its own code: it makes
//! the host hold memory outside the guest's linear memory, or keeps a host thread busy inside
//! one call. The config picks the attack: `{"behavior": "<name>", "count": N, "bytes": B}`.
//!
//! | behavior | what it does |
//! |---|---|
//! | `fields` | creates up to `count` `wasi:http` `fields` objects, each filled with up to `bytes` of header values, and keeps every one alive; then allows, annotated `created=<objects>` and `refused=<the first refusal, if any>` |
//! | `pollables` | creates up to `count` `wasi:clocks` pollables and keeps them; allows, annotated `created=<n>` |
//! | `host-calls` | until the deadline: asks for `bytes` random bytes, logs a `bytes` message of short lines and writes `bytes` to stdout in one call each; never returns under sane limits |
//!
//! A refusal the guest can see (a `header-error`) ends the loop; one it cannot (a trap, such as
//! the resource table being full) ends the event.

use std::hint::black_box;

use hookwasm_sdk::serde::Deserialize;
use hookwasm_sdk::{Event, Handler, Outcome, Result};

/// The config: which attack and how big.
#[derive(Debug, Deserialize)]
#[serde(crate = "hookwasm_sdk::serde")]
pub struct Hostile {
    behavior: Behavior,
    /// How many objects `fields` and `pollables` create.
    #[serde(default = "default_count")]
    count: u32,
    /// Bytes per `fields` object, and per host call for `host-calls`.
    #[serde(default = "default_bytes")]
    bytes: u32,
}

fn default_count() -> u32 {
    16_384
}

fn default_bytes() -> u32 {
    128 << 10
}

/// One attack; see the crate docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(crate = "hookwasm_sdk::serde", rename_all = "kebab-case")]
enum Behavior {
    Fields,
    Pollables,
    HostCalls,
}

/// Largest header value the attack appends at once (one value per `append`).
const VALUE_BYTES: usize = 56 << 10;

impl Handler for Hostile {
    fn on_event(&self, _event: &Event) -> Result<Outcome> {
        match self.behavior {
            Behavior::Fields => Ok(self.fields()),
            Behavior::Pollables => {
                let duration = 3_600_000_000_000;
                for _ in 0..self.count {
                    std::mem::forget(wasi::clocks::monotonic_clock::subscribe_duration(duration));
                }
                Ok(Outcome::allow().annotate("created", self.count))
            }
            Behavior::HostCalls => self.host_calls(),
        }
    }
}

hookwasm_sdk::export_handler!(Hostile);

impl Hostile {
    /// Header objects live in the host's resource table; only the handle is in the guest.
    fn fields(&self) -> Outcome {
        let value = vec![b'v'; (self.bytes as usize).clamp(1, VALUE_BYTES)];
        let per_object = self.bytes as usize / value.len();
        let mut created = 0u32;
        let mut refused = String::new();
        'objects: for _ in 0..self.count {
            let fields = wasi::http::types::Fields::new();
            for i in 0..per_object.max(1) {
                if let Err(e) = fields.append(&format!("x-{i}"), &value) {
                    refused = format!("{e:?}");
                    std::mem::forget(fields);
                    break 'objects;
                }
            }
            std::mem::forget(fields);
            created += 1;
        }
        Outcome::allow()
            .annotate("created", created)
            .annotate("refused", refused)
    }

    /// Each call asks the host for `bytes` of work at once.
    fn host_calls(&self) -> ! {
        let bytes = self.bytes as usize;
        let message = "hostile line\n".repeat(bytes / 13 + 1);
        let stdout = wasi::cli::stdout::get_stdout();
        let chunk = vec![b'o'; bytes];
        loop {
            black_box(wasi::random::random::get_random_bytes(bytes as u64));
            hookwasm_sdk::log::info(&message);
            // Ignores `check-write` on purpose, as a hostile module would.
            let _ = black_box(stdout.write(&chunk));
        }
    }
}
