//! The `exitnet.v1` protocol. This crate alone runs the code generator; every
//! other crate uses the re-exported [`pb`] module.

mod generated {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("exitnet.v1");
}

/// Generated messages and service stubs of `exitnet.v1`.
pub mod pb {
    pub use super::generated::*;
}

/// Encoded `FileDescriptorSet` of the protocol, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("exitnet_descriptor");

/// The federation protocol version this code speaks.
pub const PROTOCOL_VERSION: u32 = 1;

pub use prost_types::Timestamp;
