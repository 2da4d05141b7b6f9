//! Per-event resource limits of one handler: one type that the config reads (`limits`),
//! `hookwasm call` takes as flags, the sandbox enforces, its failure messages quote and
//! `/v1/handlers` shows.

use serde::{Deserialize, Serialize};

/// Per-event resource limits of one handler. Missing fields take the defaults below; the README's
/// config reference documents them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Limits {
    /// CPU budget in fuel units (about one per wasm instruction).
    pub fuel: u64,
    /// Wall-clock deadline in milliseconds, including time spent in host calls.
    pub timeout_ms: u64,
    /// Linear-memory cap in MiB.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
}

impl Limits {
    /// The limits of a handler whose entry sets none: about 50 ms of CPU here, one second and
    /// 64 MiB per event.
    pub const DEFAULT: Limits = Limits {
        fuel: 50_000_000,
        timeout_ms: 1_000,
        memory_mib: 64,
    };

    /// The config name of the first limit that is zero (no handler could run under it), if any.
    pub fn zero(&self) -> Option<&'static str> {
        [
            ("fuel", self.fuel),
            ("timeoutMs", self.timeout_ms),
            ("memoryMiB", self.memory_mib),
        ]
        .into_iter()
        .find_map(|(name, value)| (value == 0).then_some(name))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_limit_is_named_by_its_config_key() {
        assert_eq!(Limits::DEFAULT.zero(), None);
        let no_memory = Limits {
            memory_mib: 0,
            ..Limits::DEFAULT
        };
        assert_eq!(no_memory.zero(), Some("memoryMiB"));
        let json = serde_json::to_value(Limits::DEFAULT).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"fuel": 50_000_000, "timeoutMs": 1_000, "memoryMiB": 64})
        );
        let parsed: Limits =
            serde_json::from_value(serde_json::json!({"fuel": 7})).expect("parses");
        assert_eq!(
            parsed,
            Limits {
                fuel: 7,
                ..Limits::DEFAULT
            }
        );
    }
}
