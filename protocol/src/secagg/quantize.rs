//! Fixed-point encoding of model deltas into Z_2^32, sized so that the sum
//! over every participant cannot wrap.

use super::error::SecAggError;

/// Clip to [−clip, clip], multiply by `scale`, round to the nearest integer,
/// store as two's complement.
///
/// Rounding is round-to-nearest (ties away from zero) rather than stochastic:
/// the error is at most 0.5 / scale per coordinate — with 1 000 participants
/// and clip 1.0 the scale is 2^20, so under 5·10⁻⁷ — which is far below
/// clipping and DP noise, and a deterministic encoding lets the aggregate be
/// checked bit for bit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantizer {
    pub clip: f32,
    pub scale: f64,
}

impl Quantizer {
    /// The largest power-of-two scale with
    /// `max_participants · (clip · scale + 1) < 2^31`: every quantised
    /// coordinate is within clip·scale + ½ of zero, so the sum of all
    /// participants' coordinates stays inside i32 and never wraps.
    pub fn for_participants(clip: f32, max_participants: usize) -> Result<Self, SecAggError> {
        if !(clip.is_finite() && clip > 0.0) {
            return Err(SecAggError::InvalidParams(format!(
                "clip {clip} must be finite and positive"
            )));
        }
        if max_participants == 0 {
            return Err(SecAggError::InvalidParams("zero participants".into()));
        }
        let per_participant = f64::from(i32::MAX) / max_participants as f64 - 1.0;
        let limit = per_participant / f64::from(clip);
        if !(limit.is_finite() && limit > 0.0) {
            return Err(SecAggError::InvalidParams(format!(
                "{max_participants} participants leave no room in 31 bits"
            )));
        }
        let scale = 2f64.powi(limit.log2().floor() as i32);
        Ok(Quantizer { clip, scale })
    }

    pub fn quantize(&self, values: &[f32]) -> Result<Vec<u32>, SecAggError> {
        let mut out = vec![0; values.len()];
        self.quantize_into(values, &mut out)?;
        Ok(out)
    }

    /// Quantises into a caller buffer (of the same length), so a large
    /// vector can be quantised and masked chunk by chunk.
    pub fn quantize_into(&self, values: &[f32], out: &mut [u32]) -> Result<(), SecAggError> {
        if values.len() != out.len() {
            return Err(SecAggError::Malformed {
                what: "quantiser buffer",
                reason: format!("{} values for {} slots", values.len(), out.len()),
            });
        }
        for (index, (v, o)) in values.iter().zip(out.iter_mut()).enumerate() {
            if !v.is_finite() {
                return Err(SecAggError::NonFinite { index });
            }
            let clipped = f64::from(v.clamp(-self.clip, self.clip));
            *o = ((clipped * self.scale).round() as i32) as u32;
        }
        Ok(())
    }

    /// Decodes an aggregate: each word as i32 two's complement, over `scale`.
    pub fn dequantize_sum(&self, sum: &[u32]) -> Vec<f32> {
        sum.iter()
            .map(|&s| (f64::from(s as i32) / self.scale) as f32)
            .collect()
    }

    /// [`Quantizer::dequantize_sum`] into the sum's own allocation (u32 and
    /// f32 share size and alignment, so `collect` reuses the buffer): no
    /// second model-sized vector.
    pub fn dequantize_sum_in_place(&self, sum: Vec<u32>) -> Vec<f32> {
        let scale = self.scale;
        sum.into_iter()
            .map(|s| (f64::from(s as i32) / scale) as f32)
            .collect()
    }
}
