//! Connections between nodes, below the protocol: mutual-TLS channels to
//! peers kept between delivery rounds (`client`), and connections in both
//! directions that can be closed by the key that authenticated them
//! (`closer`). Knows keys and addresses, not peers' states or messages.

pub mod client;
pub mod closer;
pub mod status;

/// Largest message a peer may send or receive.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Most notices in one `NotifyBatch`.
pub const MAX_BATCH: usize = 64;
