//! Audit logs read back from disk: `audit verify` over the whole file, and
//! resuming the log (which parses its last line) as a restarted party does.

use modelpub_protocol::audit::{self, AuditEvent, AuditLog, Direction, LOG_FILE};
use modelpub_protocol::identity::Identity;

use crate::Target;

pub struct AuditLogLines {
    dir: tempfile::TempDir,
    identity: Identity,
    seed: Vec<u8>,
}

impl AuditLogLines {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let identity = Identity::from_secret_bytes("inst-0", [21; 32]);
        let log = AuditLog::open(dir.path(), identity.clone())?;
        for (round, kind) in [
            (0, "modelpub.v1.JoinRequest"),
            (1, "modelpub.v1.UpdateHeader"),
        ] {
            log.record(AuditEvent {
                direction: Direction::Sent,
                kind: kind.into(),
                peer: "aggregator".into(),
                round,
                sha256: "ab".repeat(32),
                note: "fuzz seed \"quoted\"".into(),
            })?;
        }
        drop(log);
        let seed = std::fs::read(dir.path().join(LOG_FILE))?;
        Ok(Self {
            dir,
            identity,
            seed,
        })
    }
}

impl Target for AuditLogLines {
    fn name(&self) -> &'static str {
        "audit-log"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![self.seed.clone()]
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        std::fs::write(self.dir.path().join(LOG_FILE), input).map_err(|e| e.to_string())?;
        let verified = audit::verify(self.dir.path(), Some(&self.identity.public()));
        let resumed = AuditLog::open(self.dir.path(), self.identity.clone());
        verified.map_err(|e| e.to_string())?;
        resumed.map(|_| ()).map_err(|e| e.to_string())
    }
}
