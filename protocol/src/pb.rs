//! Rust types generated from `proto/modelpub/v1/*.proto`, the wire
//! specification. Nothing here is written by hand.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("modelpub.v1");
