//! Errors of the protocol layer. Every message says why something was
//! refused, because these texts travel to the peer inside a `tonic::Status`
//! and end up in operators' logs.

use std::path::PathBuf;

/// Why a protocol operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("expected a {expected}, got a {got}")]
    WrongKind { expected: String, got: String },

    #[error("message belongs to federation {got:?}, but this is federation {expected:?}")]
    WrongFederation { expected: String, got: String },

    #[error("sender {0:?} is not in the federation roster")]
    UnknownSender(String),

    #[error(
        "signature from {sender:?} does not verify under its registered key: the message was tampered or forged"
    )]
    BadSignature { sender: String },

    #[error("message from {sender:?} is out of round: expected round {expected}, got round {got}")]
    OutOfRound {
        sender: String,
        expected: u32,
        got: u32,
    },

    #[error(
        "message from {sender:?} replayed or re-ordered: sequence {sequence} is not greater than the last accepted {last}"
    )]
    Replayed {
        sender: String,
        sequence: u64,
        last: u64,
    },

    #[error("replay journal {path}, line {line}: {reason}")]
    ReplayJournal {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error("malformed: {0}")]
    Malformed(String),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("tls: {0}")]
    Tls(String),

    #[error("audit log: {0}")]
    Audit(String),

    #[error("no secure randomness available: {0}")]
    Randomness(String),
}

impl ProtocolError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<ProtocolError> for tonic::Status {
    fn from(e: ProtocolError) -> Self {
        let msg = e.to_string();
        // Exhaustive on purpose: a new variant must make its author decide
        // which gRPC code a peer sees.
        match e {
            ProtocolError::BadSignature { .. } => tonic::Status::unauthenticated(msg),
            ProtocolError::UnknownSender(_) => tonic::Status::permission_denied(msg),
            ProtocolError::Replayed { .. } => tonic::Status::already_exists(msg),
            ProtocolError::OutOfRound { .. } => tonic::Status::failed_precondition(msg),
            ProtocolError::WrongKind { .. }
            | ProtocolError::WrongFederation { .. }
            | ProtocolError::Malformed(_) => tonic::Status::invalid_argument(msg),
            ProtocolError::Io { .. }
            | ProtocolError::ReplayJournal { .. }
            | ProtocolError::Tls(_)
            | ProtocolError::Audit(_)
            | ProtocolError::Randomness(_) => tonic::Status::internal(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_keep_the_reason() {
        let s: tonic::Status = ProtocolError::BadSignature { sender: "a".into() }.into();
        assert_eq!(s.code(), tonic::Code::Unauthenticated);
        assert!(s.message().contains("tampered or forged"));
        let s: tonic::Status = ProtocolError::Replayed {
            sender: "a".into(),
            sequence: 1,
            last: 2,
        }
        .into();
        assert_eq!(s.code(), tonic::Code::AlreadyExists);
        assert!(s.message().contains("replayed or re-ordered"));
        let s: tonic::Status = ProtocolError::OutOfRound {
            sender: "a".into(),
            expected: 4,
            got: 3,
        }
        .into();
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert!(s.message().contains("out of round"));
    }
}
