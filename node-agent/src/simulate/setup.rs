//! Lays out a simulated federation on disk: the federation CA, one directory
//! per party with its identity, certificate and sealed vault, and the
//! configuration each process reads. This is what the operator does with
//! Secrets and ConfigMaps in a cluster.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use modelpub_protocol::identity::{Identity, PublicIdentity};
use modelpub_protocol::tls::FederationCa;
use serde::{Deserialize, Serialize};

use crate::config::{
    AggregatorConfig, Fault, ParticipantConfig, PrivacySettings, SecureSettings, StrategyConfig,
    TrainingSettings, VaultRef, write_json,
};
use crate::data::{Dataset, encode_dataset};
use crate::model::ModelConfig;
use crate::party::PartyDir;
use crate::vault::{Vault, VaultKey};

/// Marks a folder as one `modelpub simulate` made, so a later run may
/// replace it; any other non-empty folder is left alone.
const MARKER: &str = ".modelpub-simulate";
pub const FEDERATION: &str = "modelpub-simulate";

pub struct Layout {
    pub out: PathBuf,
    pub aggregator: PartyDir,
    pub institutions: Vec<PartyDir>,
    pub testset: VaultRef,
    pub rounds_file: PathBuf,
    pub address_file: PathBuf,
}

/// What each institution trains on its own, for the local-only baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalOnlyConfig {
    pub vault: VaultRef,
    pub testset: VaultRef,
    pub model: ModelConfig,
    pub model_seed: u64,
    pub training: TrainingSettings,
    /// Evaluate after each of this many blocks of `local_epochs` epochs:
    /// the same training budget per round as in the federation.
    pub evaluations: u32,
    pub out: PathBuf,
    pub prefer_cuda: bool,
}

pub struct Plan<'a> {
    /// One per training part.
    pub names: &'a [String],
    pub train_parts: &'a [Dataset],
    pub test: &'a Dataset,
    pub model: &'a ModelConfig,
    pub training: &'a TrainingSettings,
    pub strategy: &'a StrategyConfig,
    pub rounds: u32,
    pub min_participants: u32,
    pub round_timeout_secs: u64,
    pub seed: u64,
    pub prefer_cuda: bool,
    pub secure: Option<SecureSettings>,
    pub privacy: Option<PrivacySettings>,
    pub compression: String,
    /// Injected failures, by institution index.
    pub faults: Vec<Vec<Fault>>,
}

pub fn prepare_out_dir(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_none();
        if !empty {
            if !out.join(MARKER).is_file() {
                bail!(
                    "{} exists and was not made by `modelpub simulate`; choose another --out",
                    out.display()
                );
            }
            std::fs::remove_dir_all(out)
                .with_context(|| format!("cannot replace the previous run in {}", out.display()))?;
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(
        out.join(MARKER),
        "made by modelpub simulate; safe to delete\n",
    )?;
    Ok(())
}

pub fn lay_out(out: &Path, plan: &Plan) -> anyhow::Result<Layout> {
    let out = std::fs::canonicalize(out)?;
    let ca = FederationCa::generate(FEDERATION)?;
    ca.save(&out.join("federation-ca"))?;

    let aggregator = PartyDir::new(out.join("aggregator"));
    let aggregator_id = new_party(&ca, &aggregator, "aggregator", &["localhost", "aggregator"])?;

    let testset = seal_dataset(&out.join("testset"), plan.test)?;
    let mut institutions = Vec::new();
    let mut roster = Vec::new();
    for (name, part) in plan.names.iter().zip(plan.train_parts) {
        let party = PartyDir::new(out.join(name));
        roster.push(new_party(&ca, &party, name, &[name.as_str()])?);
        seal_dataset(party.root(), part)?;
        institutions.push(party);
    }

    let rounds_file = aggregator.root().join("rounds.jsonl");
    let address_file = aggregator.root().join("address");
    let agg_config = AggregatorConfig {
        federation: FEDERATION.into(),
        listen: "127.0.0.1:0".into(),
        address_file: address_file.clone(),
        rounds_file: rounds_file.clone(),
        roster,
        min_participants: plan.min_participants,
        rounds: plan.rounds,
        round_timeout_secs: plan.round_timeout_secs,
        join_timeout_secs: 60,
        // --dropout restarts every killed institution for the next round;
        // that round waits for it as long as a stage would.
        rejoin_grace_secs: plan.secure.as_ref().map_or(10, |s| s.stage_timeout_secs),
        keepalive_secs: modelpub_agent_config::DEFAULT_KEEPALIVE_SECS,
        strategy: plan.strategy.clone(),
        training: plan.training.clone(),
        model: plan.model.clone(),
        model_seed: plan.seed,
        evaluation: Some(testset.clone()),
        secure_aggregation: plan.secure.clone(),
        privacy: plan.privacy.clone(),
        compression: plan.compression.clone(),
        metrics_listen: None,
        linger_after_run: false,
        peer_client_cas: Vec::new(),
    };
    write_json(&aggregator.config(), &agg_config)?;

    let roster = agg_config.roster.clone();
    for (i, party) in institutions.iter().enumerate() {
        let vault = VaultRef {
            dir: party.vault(),
            key_file: party.vault_key(),
        };
        let config = ParticipantConfig {
            federation: FEDERATION.into(),
            // Filled in once the aggregator has bound its port.
            aggregator_url: String::new(),
            aggregator_server_name: "localhost".into(),
            aggregator_ca: None,
            aggregator_identity: aggregator_id.clone(),
            vault: vault.clone(),
            connect_timeout_secs: 30,
            prefer_cuda: plan.prefer_cuda,
            roster: roster.clone(),
            faults: plan.faults.get(i).cloned().unwrap_or_default(),
            // Several participants share this machine: one fixed port
            // cannot serve them all (--participant-metrics-from gives
            // each its own).
            metrics_listen: None,
        };
        write_json(&party.config(), &config)?;
        let local = LocalOnlyConfig {
            vault,
            testset: testset.clone(),
            model: plan.model.clone(),
            model_seed: plan.seed,
            training: plan.training.clone(),
            evaluations: plan.rounds,
            out: party.root().join("local-only.json"),
            prefer_cuda: plan.prefer_cuda,
        };
        write_json(&party.root().join("local-only-config.json"), &local)?;
    }
    Ok(Layout {
        out,
        aggregator,
        institutions,
        testset,
        rounds_file,
        address_file,
    })
}

/// Points every participant at the aggregator's bound address.
pub fn set_aggregator_address(layout: &Layout, address: &str) -> anyhow::Result<()> {
    for party in &layout.institutions {
        let mut config: ParticipantConfig = crate::config::read_json(&party.config())?;
        config.aggregator_url = format!("https://{address}");
        write_json(&party.config(), &config)?;
    }
    Ok(())
}

/// Has the aggregator serve its metrics and /status on `addr`.
pub fn set_metrics_listen(layout: &Layout, addr: &str) -> anyhow::Result<()> {
    let mut config: AggregatorConfig = crate::config::read_json(&layout.aggregator.config())?;
    config.metrics_listen = Some(addr.to_string());
    write_json(&layout.aggregator.config(), &config)
}

/// Has participant i serve its metrics on `addrs[i]`.
pub fn set_participant_metrics_listen(layout: &Layout, addrs: &[String]) -> anyhow::Result<()> {
    for (party, addr) in layout.institutions.iter().zip(addrs) {
        let mut config: ParticipantConfig = crate::config::read_json(&party.config())?;
        config.metrics_listen = Some(addr.clone());
        write_json(&party.config(), &config)?;
    }
    Ok(())
}

fn new_party(
    ca: &FederationCa,
    party: &PartyDir,
    name: &str,
    dns: &[&str],
) -> anyhow::Result<PublicIdentity> {
    std::fs::create_dir_all(party.root())?;
    let identity = Identity::generate(name)?;
    identity.save(party.root())?;
    let tls = ca.issue(name, dns, &[IpAddr::V4(Ipv4Addr::LOCALHOST)])?;
    tls.save(&party.tls())?;
    Ok(identity.public())
}

fn seal_dataset(root: &Path, data: &Dataset) -> anyhow::Result<VaultRef> {
    let party = PartyDir::new(root);
    std::fs::create_dir_all(party.root())?;
    let key = VaultKey::generate()?;
    key.save(&party.vault_key())?;
    let vault = Vault::create(&party.vault(), key)?;
    vault.put("dataset", &encode_dataset(data))?;
    Ok(VaultRef {
        dir: party.vault(),
        key_file: party.vault_key(),
    })
}
