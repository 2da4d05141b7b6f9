//! What the config says about NATS, apart from the store's code: its connection settings.
//! `config` reads these, so it builds without the `nats` feature; `nats.rs` re-exports them.

use std::path::PathBuf;
use std::time::Duration;

/// Defaults for [`NatsConfig`]; documented in the README's `nats` section.
pub mod defaults {
    /// The lease: how long a delivery stays with a host that stopped answering (its progress
    /// acks stopped) before another host gets it. Bounds the takeover after a `kill -9`.
    pub const ACK_WAIT_MS: u64 = 3_000;
    /// How long JetStream remembers a message id: a producer's retry of a request that was only
    /// partly stored (the host died between its writes) completes it without a duplicate
    /// delivery if it comes within this window. A fully stored event stays a duplicate for
    /// `retentionHours` regardless.
    pub const DEDUPE_WINDOW_SECS: u64 = 600;
}

/// A password or token: never printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// `eventDelivery` with `"store": "nats"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// One or more servers, comma-separated: `nats://host:port` or `tls://host:port` (may carry
    /// `user:password@`).
    pub url: String,
    /// A `.creds` file (JWT and NKey seed), absolute.
    pub creds_file: Option<PathBuf>,
    /// User name, with `password`.
    pub user: Option<String>,
    /// Password, with `user`.
    pub password: Option<Secret>,
    /// Token authentication.
    pub token: Option<Secret>,
    /// A PEM file of CA certificates to trust for `tls://`, absolute.
    pub tls_ca_file: Option<PathBuf>,
    /// Replicas of each stream and bucket; `None`: three when the cluster has three servers,
    /// else one.
    pub replicas: Option<usize>,
    /// The delivery lease (consumers' `ack_wait`).
    pub ack_wait: Duration,
    /// JetStream's duplicate window on the streams (see [`defaults::DEDUPE_WINDOW_SECS`]).
    pub dedupe_window: Duration,
    /// This host's name in `/v1/handlers`, the metrics and the NATS connection.
    pub host_id: Option<String>,
}

/// This host's default name: the machine's name and the process id.
pub fn default_host_id() -> String {
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".to_owned());
    format!("{machine}:{}", std::process::id())
}
