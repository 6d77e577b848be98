//! A small GPT-style byte-level language model: token + position
//! embeddings, pre-LayerNorm blocks (causal multi-head self-attention, then
//! a 4x GELU MLP), a final LayerNorm and a linear head. No dropout: the
//! federated runs are short and dropout would make training depend on
//! libtorch's global generator.

use rand_chacha::ChaCha8Rng;
use tch::{Tensor, nn};

use super::init::{Init, param};
use super::mlp::Linear;

const INIT_STD: f64 = 0.02;
const LN_EPS: f64 = 1e-5;

#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    dims: [i64; 1],
}

impl LayerNorm {
    fn new(path: nn::Path<'_>, dim: i64, rng: &mut ChaCha8Rng) -> Self {
        Self {
            weight: param(&path, "weight", &[dim], Init::Const(1.0), rng),
            bias: param(&path, "bias", &[dim], Init::Const(0.0), rng),
            dims: [dim],
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.layer_norm(
            self.dims,
            Some(&self.weight),
            Some(&self.bias),
            LN_EPS,
            true,
        )
    }
}

#[derive(Debug)]
struct Block {
    ln1: LayerNorm,
    qkv: Linear,
    attn_proj: Linear,
    ln2: LayerNorm,
    fc: Linear,
    mlp_proj: Linear,
    heads: i64,
}

impl Block {
    fn new(path: nn::Path<'_>, embed: i64, heads: i64, layers: i64, rng: &mut ChaCha8Rng) -> Self {
        // GPT-2 scales the projections that write into the residual stream
        // so its variance does not grow with depth.
        let resid_std = INIT_STD / ((2 * layers) as f64).sqrt();
        Self {
            ln1: LayerNorm::new(&path / "ln1", embed, rng),
            qkv: Linear::normal(&path / "attn" / "qkv", embed, 3 * embed, INIT_STD, rng),
            attn_proj: Linear::normal(&path / "attn" / "proj", embed, embed, resid_std, rng),
            ln2: LayerNorm::new(&path / "ln2", embed, rng),
            fc: Linear::normal(&path / "mlp" / "fc", embed, 4 * embed, INIT_STD, rng),
            mlp_proj: Linear::normal(&path / "mlp" / "proj", 4 * embed, embed, resid_std, rng),
            heads,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, t, e) = x.size3().unwrap_or((0, 0, 0));
        let hd = e / self.heads;
        let qkv = self.qkv.forward(&self.ln1.forward(x));
        let split = |i: i64| {
            qkv.narrow(2, i * e, e)
                .view([b, t, self.heads, hd])
                .transpose(1, 2)
        };
        let y = Tensor::scaled_dot_product_attention(
            &split(0),
            &split(1),
            &split(2),
            None::<Tensor>,
            0.0,
            true,
            None,
            false,
        );
        let y = y.transpose(1, 2).contiguous().view([b, t, e]);
        let x = x + self.attn_proj.forward(&y);
        let h = self.fc.forward(&self.ln2.forward(&x)).gelu("none");
        &x + self.mlp_proj.forward(&h)
    }
}

#[derive(Debug)]
pub(crate) struct CharTransformer {
    tok_emb: Tensor,
    pos_emb: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Linear,
    context: i64,
}

impl CharTransformer {
    /// Variables `tok_emb.weight`, `pos_emb.weight`,
    /// `blocks.<i>.{ln1,attn.qkv,attn.proj,ln2,mlp.fc,mlp.proj}.*`,
    /// `ln_f.*` and `head.*`.
    pub(crate) fn new(
        root: &nn::Path<'_>,
        vocab: i64,
        context: i64,
        embed: i64,
        heads: i64,
        layers: i64,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        let tok_emb = param(
            &(root / "tok_emb"),
            "weight",
            &[vocab, embed],
            Init::Normal(INIT_STD),
            rng,
        );
        let pos_emb = param(
            &(root / "pos_emb"),
            "weight",
            &[context, embed],
            Init::Normal(INIT_STD),
            rng,
        );
        let blocks = (0..layers)
            .map(|i| Block::new(root / "blocks" / i, embed, heads, layers, rng))
            .collect();
        Self {
            tok_emb,
            pos_emb,
            blocks,
            ln_f: LayerNorm::new(root / "ln_f", embed, rng),
            head: Linear::normal(root / "head", embed, vocab, INIT_STD, rng),
            context,
        }
    }

    pub(crate) fn context(&self) -> i64 {
        self.context
    }

    /// `[batch, t]` byte ids (int64, t <= context) to `[batch, t, vocab]`
    /// next-byte logits.
    pub(crate) fn forward(&self, idx: &Tensor) -> Tensor {
        let t = idx.size().last().copied().unwrap_or(0);
        let mut x =
            Tensor::embedding(&self.tok_emb, idx, -1, false, false) + self.pos_emb.narrow(0, 0, t);
        for block in &self.blocks {
            x = block.forward(&x);
        }
        self.head.forward(&self.ln_f.forward(&x))
    }
}
