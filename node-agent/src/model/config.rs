//! Model architectures as data: what participants must agree on so their
//! weights line up tensor for tensor. The types live in
//! `modelpub-agent-config` (shared with the operator); this module ties
//! them to the node-agent's loaded data sets.

pub use modelpub_agent_config::model::{
    BYTE_VOCAB, DataShape, MAX_PARAMETERS, ModelConfig, ModelConfigError,
};

use crate::data::Dataset;

impl From<&Dataset> for DataShape {
    fn from(ds: &Dataset) -> Self {
        match ds {
            Dataset::Tabular(t) => DataShape::Tabular {
                features: t.num_features as i64,
                classes: t.num_classes as i64,
            },
            Dataset::Text(_) => DataShape::Text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{self, Dataset};
    use modelpub_agent_config::TrainingSettings;

    /// The operator renders training defaults from `modelpub-agent-config`;
    /// they must be the trainer's own, or a round would train differently
    /// from `simulate`.
    #[test]
    fn shared_defaults_match_the_trainer() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
        let digits = Dataset::Tabular(data::load_digits(&dir).unwrap());
        let text = Dataset::Text(data::load_shakespeare(&dir.join("tinyshakespeare.txt")).unwrap());
        for ds in [&digits, &text] {
            let t = crate::train::default_train_config(ds);
            let shared = TrainingSettings::defaults_for(DataShape::from(ds), 7);
            assert_eq!(shared.local_epochs, t.local_epochs);
            assert_eq!(shared.batch_size as usize, t.batch_size);
            assert_eq!(shared.learning_rate, t.learning_rate);
            assert_eq!(
                shared.max_batches_per_epoch as usize,
                t.max_batches_per_epoch
            );
        }
        assert_eq!(DataShape::from(&digits), DataShape::DIGITS);
        assert_eq!(ModelConfig::default_for(&digits).family(), "mlp");
    }
}
