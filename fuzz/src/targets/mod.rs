//! One target per decoder of outside bytes.

mod audit_log;
mod datasets;
mod envelope;
mod join_token;
mod restart_state;
mod secagg;
mod tensor_chunks;
mod vault;
mod weights_file;

use crate::Target;

/// Every target, in the order a run visits them.
pub fn all() -> anyhow::Result<Vec<Box<dyn Target>>> {
    Ok(vec![
        Box::new(envelope::Envelopes::new()),
        Box::new(tensor_chunks::TensorChunks::new()?),
        Box::new(secagg::SecAggMessages::new()?),
        Box::new(join_token::JoinTokens::new()?),
        Box::new(audit_log::AuditLogLines::new()?),
        Box::new(vault::VaultFiles::new()?),
        Box::new(datasets::CsvFiles::new()?),
        Box::new(datasets::TextFiles::new()?),
        Box::new(datasets::SealedDatasets::new()?),
        Box::new(weights_file::WeightsFiles::new()?),
        Box::new(restart_state::ReplayJournal::new()?),
        Box::new(restart_state::Checkpoints::new()?),
    ])
}

/// The names `--target` accepts.
pub fn names() -> anyhow::Result<Vec<&'static str>> {
    Ok(all()?.iter().map(|t| t.name()).collect())
}
