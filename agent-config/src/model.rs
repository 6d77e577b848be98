//! Model architectures as data: what participants must agree on so their
//! weights line up tensor for tensor. The node-agent builds the libtorch
//! model from a [`ModelConfig`]; the operator renders one from a
//! FederationRound's `spec.model`.

use serde::{Deserialize, Serialize};

/// Why a model config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelConfigError {
    #[error("unknown model family `{0}` (known: mlp, char-transformer)")]
    UnknownFamily(String),
    #[error("invalid {family} config: {reason}")]
    InvalidConfig { family: String, reason: String },
}

/// What a default architecture depends on: the shape of the data set.
/// The node-agent converts its loaded data sets into this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataShape {
    /// Numeric features and a class label.
    Tabular { features: i64, classes: i64 },
    /// Bytes of text (next-byte prediction).
    Text,
}

impl DataShape {
    /// The built-in digits data set: 8x8 pixels, ten classes.
    pub const DIGITS: DataShape = DataShape::Tabular {
        features: 64,
        classes: 10,
    };
}

/// Byte-level vocabulary: every byte is a token, so institutions never have
/// to agree on a tokenizer or vocabulary.
pub const BYTE_VOCAB: i64 = 256;

/// A bound on parameters a config may ask for (4 GiB of f32), so a config
/// read from a file or the network cannot make us allocate without limit.
pub const MAX_PARAMETERS: i64 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ModelConfig {
    /// Linear+ReLU hidden layers, then a linear layer to class logits.
    Mlp {
        inputs: i64,
        hidden: Vec<i64>,
        classes: i64,
    },
    /// A small GPT-style decoder over bytes.
    CharTransformer {
        vocab: i64,
        context: i64,
        embed: i64,
        heads: i64,
        layers: i64,
    },
}

impl ModelConfig {
    pub fn family(&self) -> &'static str {
        match self {
            ModelConfig::Mlp { .. } => "mlp",
            ModelConfig::CharTransformer { .. } => "char-transformer",
        }
    }

    /// The config as JSON, with its `family` tag.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the JSON of a config of `family`. The JSON may carry the
    /// `family` tag itself (as [`to_json`](Self::to_json) writes it) or
    /// leave it out; if present it must agree.
    pub fn from_json(family: &str, json: &str) -> Result<Self, ModelConfigError> {
        if !["mlp", "char-transformer"].contains(&family) {
            return Err(ModelConfigError::UnknownFamily(family.to_string()));
        }
        let bad = |reason: String| ModelConfigError::InvalidConfig {
            family: family.to_string(),
            reason,
        };
        let mut value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| bad(format!("not JSON: {e}")))?;
        let obj = value
            .as_object_mut()
            .ok_or_else(|| bad("expected a JSON object".into()))?;
        match obj.get("family") {
            None => {
                obj.insert("family".into(), family.into());
            }
            Some(f) if f == family => {}
            Some(f) => return Err(bad(format!("the JSON says family {f}"))),
        }
        let config: ModelConfig = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The default architecture for a data set (sizes tuned so federated
    /// training on the demo data sets works in seconds on two CPU cores).
    pub fn default_for(data: impl Into<DataShape>) -> Self {
        match data.into() {
            DataShape::Tabular { features, classes } => ModelConfig::Mlp {
                inputs: features,
                hidden: vec![64],
                classes,
            },
            DataShape::Text => ModelConfig::CharTransformer {
                vocab: BYTE_VOCAB,
                context: 64,
                embed: 64,
                heads: 4,
                layers: 2,
            },
        }
    }

    /// Checks sizes are positive, consistent and bounded.
    pub fn validate(&self) -> Result<(), ModelConfigError> {
        let bad = |reason: String| ModelConfigError::InvalidConfig {
            family: self.family().to_string(),
            reason,
        };
        let positive = |name: &str, v: i64| {
            if v > 0 {
                Ok(())
            } else {
                Err(bad(format!("`{name}` must be > 0, got {v}")))
            }
        };
        match self {
            ModelConfig::Mlp {
                inputs,
                hidden,
                classes,
            } => {
                positive("inputs", *inputs)?;
                positive("classes", *classes)?;
                for h in hidden {
                    positive("hidden", *h)?;
                }
            }
            ModelConfig::CharTransformer {
                vocab,
                context,
                embed,
                heads,
                layers,
            } => {
                if *vocab != BYTE_VOCAB {
                    return Err(bad(format!(
                        "`vocab` must be {BYTE_VOCAB} (byte-level), got {vocab}"
                    )));
                }
                positive("context", *context)?;
                positive("embed", *embed)?;
                positive("heads", *heads)?;
                positive("layers", *layers)?;
                if embed % heads != 0 {
                    return Err(bad(format!(
                        "`embed` ({embed}) must be a multiple of `heads` ({heads})"
                    )));
                }
            }
        }
        match self.parameter_count() {
            Some(n) if n <= MAX_PARAMETERS => Ok(()),
            _ => Err(bad(format!("more than {MAX_PARAMETERS} parameters"))),
        }
    }

    /// Number of trainable parameters, `None` on overflow.
    pub fn parameter_count(&self) -> Option<i64> {
        match self {
            ModelConfig::Mlp {
                inputs,
                hidden,
                classes,
            } => {
                let mut total: i64 = 0;
                let mut prev = *inputs;
                for &h in hidden.iter().chain(std::iter::once(classes)) {
                    total = total.checked_add(prev.checked_mul(h)?.checked_add(h)?)?;
                    prev = h;
                }
                Some(total)
            }
            ModelConfig::CharTransformer {
                vocab,
                context,
                embed,
                layers,
                ..
            } => {
                let e = *embed;
                let e2 = e.checked_mul(e)?;
                // Per block: 2 layer norms, qkv, attention out, 4x MLP.
                let block = e2.checked_mul(12)?.checked_add(e.checked_mul(13)?)?;
                let embeds = vocab.checked_add(*context)?.checked_mul(e)?;
                let head = e.checked_mul(*vocab)?.checked_add(*vocab)?;
                block
                    .checked_mul(*layers)?
                    .checked_add(embeds)?
                    .checked_add(head)?
                    .checked_add(2 * e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_tag() {
        let c = ModelConfig::CharTransformer {
            vocab: 256,
            context: 8,
            embed: 16,
            heads: 2,
            layers: 1,
        };
        let json = c.to_json();
        assert!(json.contains("\"family\":\"char-transformer\""), "{json}");
        assert_eq!(
            ModelConfig::from_json("char-transformer", &json).unwrap(),
            c
        );
        let m = ModelConfig::from_json("mlp", r#"{"inputs":4,"hidden":[8],"classes":3}"#).unwrap();
        assert_eq!(m.family(), "mlp");
        assert_eq!(m.parameter_count(), Some(4 * 8 + 8 + 8 * 3 + 3));
    }

    #[test]
    fn defaults_follow_the_data_shape() {
        assert_eq!(
            ModelConfig::default_for(DataShape::DIGITS),
            ModelConfig::Mlp {
                inputs: 64,
                hidden: vec![64],
                classes: 10
            }
        );
        let text = ModelConfig::default_for(DataShape::Text);
        assert_eq!(text.family(), "char-transformer");
        text.validate().unwrap();
    }

    #[test]
    fn bad_configs_are_named() {
        let e = ModelConfig::from_json("cnn", "{}").unwrap_err().to_string();
        assert!(e.contains("cnn"), "{e}");
        let e = ModelConfig::from_json("mlp", r#"{"inputs":4,"hidden":[0],"classes":3}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`hidden` must be > 0"), "{e}");
        let e = ModelConfig::from_json(
            "char-transformer",
            r#"{"vocab":256,"context":8,"embed":10,"heads":3,"layers":1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("multiple of `heads`"), "{e}");
        let e = ModelConfig::from_json("mlp", r#"{"family":"char-transformer"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("family"), "{e}");
        let e = ModelConfig::from_json(
            "mlp",
            r#"{"inputs":4000000,"hidden":[4000000],"classes":3}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("parameters"), "{e}");
        assert!(ModelConfig::from_json("mlp", "[1]").is_err());
        assert!(ModelConfig::from_json("mlp", "not json").is_err());
    }
}
