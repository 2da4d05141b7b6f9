//! Nothing to link: this crate only holds the peer benchmark (`benches/peers.rs`); see the README.
