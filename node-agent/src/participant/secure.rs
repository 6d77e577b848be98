//! A participant's side of SecAgg+: keys before training, the masked
//! upload, and answering the unmasking request — never revealing both of a
//! peer's secrets, whatever the aggregator asks.

use std::collections::BTreeMap;

use anyhow::Context;
use modelpub_protocol::envelope::{Expectation, RoundRule, open};
use modelpub_protocol::pb;
use modelpub_protocol::replay::ReplayGuard;
use modelpub_protocol::secagg::{self, AdvertisedKeys, Client, EncryptedShare, Quantizer};
use modelpub_protocol::tensor::{NamedTensor, TensorSet};

use super::RoundContext;
use crate::aggregator::accumulator::MASKED_TENSOR;
use crate::config::FaultStage;

/// Stages 1 and 2: advertise keys, check every peer's advertisement against
/// its owner's signature, and deal our secrets among our neighbours.
pub async fn key_stages(
    ctx: &mut RoundContext<'_>,
    s: &pb::SecureAggregation,
) -> anyhow::Result<Client> {
    let plan = ctx.plan;
    let round = plan.round;
    let params = crate::aggregator::secagg_params(&ctx.session.federation, plan, s)?;
    if params.prg == secagg::MaskPrg::Aes128Ctr && !secagg::hardware_aes() {
        tracing::warn!(
            round,
            "the round masks with AES-128-CTR but this CPU has no AES instructions: \
             masking runs in constant-time software, several times slower; \
             set the aggregator's mask PRG to chacha20 if this machine takes part often"
        );
    }
    let mut client = Client::new(params, ctx.name)?;
    let mine = ctx.session.seal(
        round,
        &pb::SecAggKeys {
            keys: client.advertise().to_bytes(),
        },
    );
    let book = ctx
        .session
        .client
        .advertise_keys(mine)
        .await
        .context("advertising secure-aggregation keys")?
        .into_inner();
    let book: pb::KeyBook = ctx.session.open(&book, RoundRule::Exactly(round))?;
    let keys = verify_key_book(ctx, &book)?;
    ctx.fault(FaultStage::AfterAdvertise);

    let shares = client.share_keys(&keys)?;
    let sent = ctx.session.seal(
        round,
        &pb::SharedKeys {
            shares: shares.iter().map(EncryptedShare::to_bytes).collect(),
        },
    );
    let reply = ctx
        .session
        .client
        .share_keys(sent)
        .await
        .context("sharing secure-aggregation keys")?
        .into_inner();
    let mine: pb::SharesForYou = ctx.session.open(&reply, RoundRule::Exactly(round))?;
    let received = mine
        .shares
        .iter()
        .map(|b| EncryptedShare::from_bytes(b))
        .collect::<Result<Vec<_>, _>>()?;
    client.receive_shares(&mine.u2, &received)?;
    ctx.fault(FaultStage::AfterShare);
    Ok(client)
}

/// Every advertisement must be signed by the participant it names, for
/// this federation and round: the aggregator relays keys, it cannot forge
/// them.
fn verify_key_book(
    ctx: &RoundContext<'_>,
    book: &pb::KeyBook,
) -> anyhow::Result<BTreeMap<String, AdvertisedKeys>> {
    let expect = Expectation {
        federation: &ctx.session.federation,
        round: RoundRule::Exactly(ctx.plan.round),
    };
    let replay = ReplayGuard::new();
    let mut keys = BTreeMap::new();
    for env in &book.advertisements {
        let opened = open::<pb::SecAggKeys>(env, ctx.roster, &expect, &replay)
            .with_context(|| format!("key advertisement of {}", env.sender))?;
        if !ctx.plan.participants.contains(&opened.sender) {
            anyhow::bail!("{} is not a participant of this round", opened.sender);
        }
        keys.insert(
            opened.sender,
            AdvertisedKeys::from_bytes(&opened.message.keys)?,
        );
    }
    Ok(keys)
}

/// The update as a masked vector: each coordinate weighted and quantised,
/// the weight appended (so the aggregator learns only the sums of both),
/// then masked.
pub fn mask(
    client: &Client,
    s: &pb::SecureAggregation,
    update: &TensorSet,
    num_examples: u64,
) -> anyhow::Result<TensorSet> {
    let weight = (num_examples as f64 * s.example_scale).min(1.0) as f32;
    let mut flat: Vec<f32> = Vec::with_capacity(s.vector_len as usize);
    for t in &update.tensors {
        flat.extend(t.to_f32()?.iter().map(|v| v * weight));
    }
    flat.push(weight);
    if flat.len() as u64 != s.vector_len {
        anyhow::bail!(
            "the update has {} values, the round expects {}",
            flat.len(),
            s.vector_len
        );
    }
    let quantizer = Quantizer {
        clip: s.clip,
        scale: s.scale,
    };
    let mut words = quantizer.quantize(&flat)?;
    client.mask_chunk(&mut words, 0)?;
    Ok(TensorSet::new(vec![NamedTensor {
        name: MASKED_TENSOR.into(),
        dtype: pb::Dtype::U32,
        shape: vec![words.len() as u64],
        data: words.iter().flat_map(|w| w.to_le_bytes()).collect(),
    }])?)
}

/// Stage 4: reveal what the aggregator needs to remove the masks. The
/// client library refuses a request that would expose any one input.
pub async fn unmask(ctx: &mut RoundContext<'_>, client: &mut Client) -> anyhow::Result<()> {
    let round = ctx.plan.round;
    let poll = ctx.session.seal(round, &pb::UnmaskPoll {});
    let reply = ctx
        .session
        .client
        .await_unmask(poll)
        .await
        .context("waiting for the unmasking request")?
        .into_inner();
    let ask: pb::UnmaskRequest = ctx.session.open(&reply, RoundRule::Exactly(round))?;
    ctx.fault(FaultStage::DuringUnmask);
    let shares = client
        .unmask(&ask.survivors, &ask.dropped)
        .map_err(|e: secagg::SecAggError| anyhow::anyhow!("refusing to unmask: {e}"))?;
    let reveal = ctx.session.seal(
        round,
        &pb::Reveal {
            shares: shares.iter().map(secagg::RevealedShare::to_bytes).collect(),
        },
    );
    let reply = ctx
        .session
        .client
        .reveal(reveal)
        .await
        .context("revealing shares")?
        .into_inner();
    let _: pb::RevealAccepted = ctx.session.open(&reply, RoundRule::Exactly(round))?;
    Ok(())
}
