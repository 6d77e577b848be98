//! The operators' federation endpoint (`protocol/proto/modelpub/v1/
//! peering.proto`): what one member's operator asks of another's at the
//! endpoint its TrustDomain publishes.
//!
//! - [`domain`]: this cluster's side of one TrustDomain, loaded from its
//!   key Secrets: identity, CA and the members it trusts.
//! - [`tls`]: mutual TLS pinned both ways (server and client certificates
//!   issued in memory from the domain's CA; only CAs pinned for members
//!   admitted), recording what a refused client presented.
//! - [`server`]: the listener: picks the TrustDomain by SNI, serves
//!   `Peering`, checks every envelope against the sender's pinned key.
//! - [`rounds`]: a member joining a round this cluster coordinates.
//! - [`client`]: this cluster asking a member (`Hello`, `JoinRound`).
//! - [`refusals`]: who the endpoint turned away, for the TrustDomain
//!   status.

pub mod client;
pub mod domain;
pub mod refusals;
pub mod rounds;
pub mod server;
pub mod tls;

/// The port the chart's federation Service exposes.
pub const DEFAULT_PORT: u16 = 7450;

/// The name a member's federation endpoint certificate carries, and the
/// SNI a client sends: independent of the host or address the endpoint
/// URL names (a load balancer's IP, a DNS name), so the certificate can be
/// issued before anyone knows the address.
pub fn server_name(member: &str, federation: &str) -> String {
    format!("{member}.{federation}.federation.modelpub.io")
}
