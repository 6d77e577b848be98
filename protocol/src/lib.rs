//! The open ModelPub protocol.
//!
//! `proto/modelpub/v1/*.proto` is the specification; this crate is its
//! reference implementation of everything that is not transport plumbing:
//! identities, signed envelopes with replay protection, the tensor codec, the
//! hash-chained audit log and the mutual-TLS configuration. It links neither
//! Kubernetes nor libtorch.
#![forbid(unsafe_code)]

pub mod audit;
pub mod client_auth;
pub mod dp;
pub mod envelope;
pub mod error;
pub mod identity;
pub mod pb;
pub mod replay;
pub mod secagg;
pub mod tensor;
pub mod tls;
