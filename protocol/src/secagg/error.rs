//! What can go wrong in a SecAgg+ round, named precisely enough that the
//! caller can tell a dropped peer from a cheating one.

/// Every failure of the secure-aggregation protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecAggError {
    #[error("invalid secure-aggregation parameters: {0}")]
    InvalidParams(String),

    #[error("{who:?} is not a participant of this round")]
    UnknownParticipant { who: String },

    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },

    #[error("{peer:?} advertised a low-order X25519 public key")]
    WeakKey { peer: String },

    #[error("the key list names {who:?} with keys that are not the ones it advertised")]
    KeyMismatch { who: String },

    #[error("{what} from {who:?} arrived twice")]
    Duplicate { what: &'static str, who: String },

    #[error("the share {from:?} sent to {to:?} failed authentication (tampered or wrong key)")]
    TamperedShare { from: String, to: String },

    #[error("{from:?} sent a share to {to:?}, which is not one of its neighbours in this round")]
    NotANeighbour { from: String, to: String },

    #[error("no share from {from:?} reached {to:?} although both are in U2")]
    MissingShare { from: String, to: String },

    #[error("asked to reveal both the self-mask share and the mask-key share of {peer:?}")]
    BothSharesRequested { peer: String },

    #[error(
        "{who:?} revealed a {kind} share of {owner:?}, which is not the kind the round asked for"
    )]
    WrongShareKind {
        who: String,
        owner: String,
        kind: &'static str,
    },

    #[error("{subject}: {have} available, {need} needed")]
    BelowThreshold {
        subject: String,
        have: usize,
        need: usize,
    },

    #[error("the mask key reconstructed for {who:?} does not match the key it advertised")]
    BadReconstruction { who: String },

    #[error("{who:?} is not in {set}")]
    NotInSet { who: String, set: &'static str },

    #[error("this step needs the {expected} stage, the round is at {actual}")]
    WrongStage {
        expected: &'static str,
        actual: &'static str,
    },

    #[error("chunk from {who:?} at offset {offset}: expected offset {expected}")]
    UnexpectedOffset {
        who: String,
        offset: usize,
        expected: usize,
    },

    #[error("chunk [{offset}, {offset}+{len}) is outside the vector of length {vector_len}")]
    OutOfRange {
        offset: usize,
        len: usize,
        vector_len: usize,
    },

    #[error("{who:?} uploaded {received} of {vector_len} masked coordinates and stopped")]
    IncompleteUpload {
        who: String,
        received: usize,
        vector_len: usize,
    },

    #[error("coordinate {index} is not a finite number")]
    NonFinite { index: usize },

    #[error("the operating system's random number generator failed: {0}")]
    Rng(String),

    #[error("an unmasking worker thread panicked")]
    WorkerPanicked,
}
