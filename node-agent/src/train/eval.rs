//! Scoring a model on held-out data: class accuracy and cross-entropy for
//! tabular data, next-byte accuracy and cross-entropy for text.

use tch::{Kind, Reduction, Tensor};

use super::{Evaluation, PreparedData, TrainError};
use crate::data::Dataset;
use crate::model::Model;

/// Bounds the cost of scoring a text: about this many predicted bytes, so
/// evaluating a large test corpus each round stays fast.
pub const MAX_EVAL_TOKENS: i64 = 20_000;

const TABULAR_EVAL_BATCH: i64 = 1024;
/// Activations one tabular evaluation batch may hold (2^20 floats, 4 MiB):
/// a wide model is scored in smaller batches, so scoring costs a bounded
/// amount of memory beside the model rather than rows × width.
const TABULAR_EVAL_ACTIVATIONS: i64 = 1 << 20;

/// Rows per tabular evaluation batch for this model.
fn tabular_eval_batch(model: &Model) -> i64 {
    let widest = match model.config() {
        crate::model::ModelConfig::Mlp {
            inputs,
            hidden,
            classes,
        } => hidden
            .iter()
            .chain([inputs, classes])
            .copied()
            .max()
            .unwrap_or(1),
        _ => 1,
    };
    (TABULAR_EVAL_ACTIVATIONS / widest.max(1)).clamp(1, TABULAR_EVAL_BATCH)
}
const TEXT_EVAL_BATCH: i64 = 64;

pub fn evaluate(model: &Model, data: &Dataset) -> Result<Evaluation, TrainError> {
    evaluate_prepared(model, &PreparedData::new(model, data)?)
}

/// Text is scored over non-overlapping windows; when there are more than
/// [`MAX_EVAL_TOKENS`] worth, evenly spaced ones are taken, so the score is
/// deterministic and covers the whole corpus.
pub fn evaluate_prepared(model: &Model, data: &PreparedData) -> Result<Evaluation, TrainError> {
    tch::no_grad(|| {
        let device = model.device();
        let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
        let mut correct = Tensor::zeros([], (Kind::Int64, device));
        let mut score = |logits: Tensor, ys: &Tensor| {
            let classes = logits.size().last().copied().unwrap_or(1);
            let logits = logits.view([-1, classes]);
            let ys = ys.reshape([-1]);
            loss_sum += logits
                .cross_entropy_loss::<Tensor>(&ys, None, Reduction::Sum, -100, 0.0)
                .to_kind(Kind::Double);
            correct += logits.argmax(-1, false).eq_tensor(&ys).sum(Kind::Int64);
        };
        let examples = match data {
            PreparedData::Tabular { x, y, rows } => {
                let batch = tabular_eval_batch(model);
                let mut start = 0;
                while start < *rows {
                    let n = (rows - start).min(batch);
                    score(
                        model.forward(&x.narrow(0, start, n)),
                        &y.narrow(0, start, n),
                    );
                    start += n;
                }
                *rows
            }
            PreparedData::Text { bytes, len, window } => {
                let available = (len - 1) / window;
                let wanted = (MAX_EVAL_TOKENS + window - 1) / window;
                let count = available.min(wanted);
                let starts: Vec<i64> = (0..count).map(|i| i * available / count * window).collect();
                let starts = Tensor::from_slice(&starts).to_device(device);
                let offsets = Tensor::arange(window + 1, (Kind::Int64, device));
                let mut b = 0;
                while b < count {
                    let n = (count - b).min(TEXT_EVAL_BATCH);
                    let pos = starts.narrow(0, b, n).unsqueeze(1) + offsets.unsqueeze(0);
                    let chunk = bytes.index_select(0, &pos.view([-1])).view([n, window + 1]);
                    score(
                        model.forward(&chunk.narrow(1, 0, *window)),
                        &chunk.narrow(1, 1, *window),
                    );
                    b += n;
                }
                count * window
            }
        };
        if examples == 0 {
            return Err(TrainError::NoExamples);
        }
        Ok(Evaluation {
            accuracy: correct.int64_value(&[]) as f64 / examples as f64,
            loss: loss_sum.double_value(&[]) / examples as f64,
            examples: examples as u64,
        })
    })
}
