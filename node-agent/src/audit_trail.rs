//! What the roles write into their audit log: one entry per protocol message
//! sent or received, with the digest of its payload — never the payload.

use modelpub_protocol::audit::{AuditEvent, AuditLog, Direction};
use modelpub_protocol::pb;
use sha2::{Digest, Sha256};

pub fn envelope(log: &AuditLog, direction: Direction, peer: &str, env: &pb::SignedEnvelope) {
    event(
        log,
        direction,
        &env.kind,
        peer,
        env.round,
        &hex::encode(Sha256::digest(&env.payload)),
        "",
    );
}

/// Records an event; a log that cannot be written is reported, not fatal to
/// the round, because losing the log must not lose the training run.
pub fn event(
    log: &AuditLog,
    direction: Direction,
    kind: &str,
    peer: &str,
    round: u32,
    sha256: &str,
    note: &str,
) {
    let result = log.record(AuditEvent {
        direction,
        kind: kind.to_string(),
        peer: peer.to_string(),
        round,
        sha256: sha256.to_string(),
        note: note.to_string(),
    });
    if let Err(e) = result {
        tracing::error!("audit log: {e}");
    }
}
