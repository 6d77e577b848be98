//! Data moved into tensors once, on the model's device, so the training
//! loop only slices them (`index_select`) and never copies from Rust.

use tch::{Device, Kind, Tensor};

use super::TrainError;
use crate::data::{Dataset, Tabular, TextCorpus};
use crate::model::{Model, ModelConfig};

/// A data set checked against a model and held as tensors.
#[derive(Debug)]
pub enum PreparedData {
    /// `x`: `[rows, features]` f32, already divided by the feature scale;
    /// `y`: `[rows]` int64 class ids.
    Tabular { x: Tensor, y: Tensor, rows: i64 },
    /// `bytes`: the documents joined by `\n`, as int64 token ids;
    /// `window`: the sequence length used (the model's context, or less
    /// for a text shorter than one context).
    Text {
        bytes: Tensor,
        len: i64,
        window: i64,
    },
}

impl PreparedData {
    pub fn new(model: &Model, data: &Dataset) -> Result<Self, TrainError> {
        let device = model.device();
        match (model.config(), data) {
            (
                ModelConfig::Mlp {
                    inputs, classes, ..
                },
                Dataset::Tabular(t),
            ) => tabular(t, *inputs, *classes, device),
            (ModelConfig::CharTransformer { .. }, Dataset::Text(c)) => {
                text(c, model.context().unwrap_or(1), device)
            }
            (config, data) => Err(TrainError::Mismatch {
                model: config.family(),
                data: data.kind(),
            }),
        }
    }

    /// Rows, or bytes of text.
    pub fn len(&self) -> i64 {
        match self {
            PreparedData::Tabular { rows, .. } => *rows,
            PreparedData::Text { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn tabular(
    t: &Tabular,
    inputs: i64,
    classes: i64,
    device: Device,
) -> Result<PreparedData, TrainError> {
    if t.is_empty() {
        return Err(TrainError::NoExamples);
    }
    if t.num_features as i64 != inputs {
        return Err(TrainError::FeatureCount {
            model: inputs,
            data: t.num_features,
        });
    }
    if let Some(l) = t.labels.iter().find(|l| !(0..classes).contains(*l)) {
        return Err(TrainError::LabelOutOfRange { label: *l, classes });
    }
    let rows = t.len() as i64;
    let offset = Tensor::from_slice(&t.feature_offset);
    let scale = Tensor::from_slice(&t.feature_scale);
    let x = ((Tensor::from_slice(&t.features).view([rows, inputs]) - offset) / scale)
        .to_device(device)
        .contiguous();
    let y = Tensor::from_slice(&t.labels).to_device(device);
    Ok(PreparedData::Tabular { x, y, rows })
}

fn text(c: &TextCorpus, context: i64, device: Device) -> Result<PreparedData, TrainError> {
    let mut joined = Vec::with_capacity(c.total_bytes() + c.docs.len());
    for (i, d) in c.docs.iter().enumerate() {
        if i > 0 {
            joined.push(b'\n');
        }
        joined.extend_from_slice(&d.text);
    }
    // One window needs an input byte and the byte after it.
    if joined.len() < 2 {
        return Err(TrainError::NoExamples);
    }
    let len = joined.len() as i64;
    let bytes = Tensor::from_slice(&joined)
        .to_kind(Kind::Int64)
        .to_device(device);
    Ok(PreparedData::Text {
        bytes,
        len,
        window: context.min(len - 1),
    })
}
