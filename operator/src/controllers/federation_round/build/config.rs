//! The node-agent configs (`config.json`) of a round's parties, rendered
//! from the spec with the same types the node-agent reads
//! (`modelpub-agent-config`). Every default the spec leaves out is the
//! node-agent's own, so a round trains as `modelpub simulate` does.

use std::path::PathBuf;

use modelpub_agent_config::pod::{
    CONFIG_FILE, FEDERATION_PORT, METRICS_PORT, PARTY_DIR, SECRETS_DIR, VAULT_KEY, VAULT_KEY_DIR,
    VAULT_VOLUME_DIR,
};
use modelpub_agent_config::{
    AggregatorConfig, BYTE_VOCAB, DataShape, ModelConfig, ParticipantConfig, PrivacySettings,
    SecureSettings, StrategyConfig, TrainingSettings, VaultRef,
};
use modelpub_crds::federation_round::{
    Architecture, DatasetKind, FederationRoundSpec, MaskPrgChoice, StrategyType, VaultSpec,
};
use modelpub_protocol::secagg::MaskPrg;

use super::{AggregatorAt, Identities, Round, names};
use crate::error::{Error, FieldError, SpecErrors};

/// Where the aggregator's held-out evaluation vault is sealed (emptyDir).
pub const EVALUATION_SUBDIR: &str = "evaluation";

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::InvalidSpec(SpecErrors(vec![FieldError::new(field, message)]))
}

/// The shape of a built-in data set; `csv` has no shape the operator can
/// know before reading the files.
pub fn data_shape(dataset: DatasetKind) -> Result<DataShape, Error> {
    match dataset {
        DatasetKind::Digits => Ok(DataShape::DIGITS),
        DatasetKind::Shakespeare => Ok(DataShape::Text),
        DatasetKind::Csv => Err(invalid(
            "spec.data.dataset",
            "csv is not supported by the operator yet: the model's input and class counts \
             come from the files, which only the participants can read; use digits or shakespeare",
        )),
    }
}

/// The model every party builds, from `spec.model` and the data set.
pub fn model(spec: &FederationRoundSpec) -> Result<ModelConfig, Error> {
    let shape = data_shape(spec.data.dataset)?;
    let m = &spec.model;
    let config = match (m.architecture, shape) {
        (Architecture::Mlp, DataShape::Tabular { features, classes }) => ModelConfig::Mlp {
            inputs: features,
            hidden: m.hidden_sizes.clone(),
            classes,
        },
        (Architecture::CharTransformer, DataShape::Text) => ModelConfig::CharTransformer {
            vocab: BYTE_VOCAB,
            context: m.transformer.context,
            embed: m.transformer.embed,
            heads: m.transformer.heads,
            layers: m.transformer.layers,
        },
        (architecture, _) => {
            return Err(invalid(
                "spec.model.architecture",
                format!(
                    "{} does not fit the {:?} data set: use mlp for tables (digits, csv) and \
                     char-transformer for text (shakespeare)",
                    architecture.family(),
                    spec.data.dataset
                ),
            ));
        }
    };
    config
        .validate()
        .map_err(|e| invalid("spec.model", e.to_string()))?;
    Ok(config)
}

/// Local training settings: the spec's, or the node-agent's defaults for
/// the data set. The seed is the model's init seed.
pub fn training(spec: &FederationRoundSpec) -> Result<TrainingSettings, Error> {
    let seed = init_seed(spec)?;
    let d = TrainingSettings::defaults_for(data_shape(spec.data.dataset)?, seed);
    Ok(TrainingSettings {
        local_epochs: spec.local_epochs.unwrap_or(d.local_epochs),
        batch_size: spec.batch_size.unwrap_or(d.batch_size),
        learning_rate: spec.learning_rate.unwrap_or(d.learning_rate),
        max_batches_per_epoch: spec
            .max_batches_per_epoch
            .unwrap_or(d.max_batches_per_epoch),
        seed,
    })
}

fn init_seed(spec: &FederationRoundSpec) -> Result<u64, Error> {
    u64::try_from(spec.model.init_seed).map_err(|_| {
        invalid(
            "spec.model.initSeed",
            format!("must be at least 0, got {}", spec.model.init_seed),
        )
    })
}

/// The strategy with the spec's knobs, node-agent defaults for the rest.
pub fn strategy(spec: &FederationRoundSpec) -> StrategyConfig {
    let s = &spec.strategy;
    match s.type_ {
        StrategyType::FedAvg => StrategyConfig::FedAvg,
        StrategyType::FedProx => StrategyConfig::FedProx {
            mu: s.mu.unwrap_or(StrategyConfig::DEFAULT_MU),
        },
        StrategyType::FedAdam => {
            let (lr, b1, b2, tau) = StrategyConfig::DEFAULT_FEDADAM;
            StrategyConfig::FedAdam {
                server_learning_rate: s.server_learning_rate.unwrap_or(lr),
                beta1: s.beta1.unwrap_or(b1),
                beta2: s.beta2.unwrap_or(b2),
                tau: s.tau.unwrap_or(tau),
            }
        }
    }
}

/// SecAgg+ settings when `spec.secureAggregation.enabled`.
pub fn secure(spec: &FederationRoundSpec) -> Option<SecureSettings> {
    let s = &spec.secure_aggregation;
    s.enabled.then(|| SecureSettings {
        clip: s.clip as f32,
        neighbours: s.neighbours,
        threshold: s.threshold,
        stage_timeout_secs: u64::from(s.stage_timeout_seconds),
        mask_prg: match s.mask_prg {
            MaskPrgChoice::Auto => None,
            MaskPrgChoice::Aes128Ctr => Some(MaskPrg::Aes128Ctr),
            MaskPrgChoice::ChaCha20 => Some(MaskPrg::ChaCha20),
        },
        tolerated_dropout: s.tolerated_dropout,
        tolerated_corruption: s.tolerated_corruption,
    })
}

/// DP settings when `spec.differentialPrivacy.enabled`; without a noise
/// multiplier, the smallest that keeps every round within the budget
/// (every vault takes part in every round: sampling rate 1).
pub fn privacy(spec: &FederationRoundSpec) -> Result<Option<PrivacySettings>, Error> {
    let dp = &spec.differential_privacy;
    if !dp.enabled {
        return Ok(None);
    }
    let epsilon = dp.epsilon.ok_or_else(|| {
        invalid(
            "spec.differentialPrivacy.epsilon",
            "required when differentialPrivacy.enabled is true",
        )
    })?;
    let noise_multiplier = match dp.noise_multiplier {
        Some(z) => z,
        None => modelpub_protocol::dp::noise_multiplier_for(
            1.0,
            u64::from(spec.rounds),
            epsilon,
            dp.delta,
        )
        .map_err(|e| invalid("spec.differentialPrivacy", e.to_string()))?,
    };
    Ok(Some(PrivacySettings {
        clip_norm: dp.clip_norm,
        noise_multiplier,
        epsilon,
        delta: dp.delta,
    }))
}

/// The aggregator's config: serves mutual-TLS gRPC on 7443 and metrics and
/// `/status` on 9464, evaluates on the held-out split sealed into its
/// party directory.
pub fn aggregator(round: &Round, ids: &Identities) -> Result<AggregatorConfig, Error> {
    let spec = &round.fr.spec;
    let party = PathBuf::from(PARTY_DIR);
    Ok(AggregatorConfig {
        federation: round.name.clone(),
        listen: format!("0.0.0.0:{FEDERATION_PORT}"),
        address_file: party.join("address"),
        rounds_file: party.join("rounds.jsonl"),
        roster: ids.agents.clone(),
        min_participants: spec.participants.min,
        rounds: spec.rounds,
        round_timeout_secs: u64::from(spec.participants.round_timeout_seconds),
        join_timeout_secs: u64::from(spec.participants.join_timeout_seconds),
        // A killed participant pod sits out the rounds until its
        // replacement connects; rounds do not wait for it.
        rejoin_grace_secs: 0,
        keepalive_secs: modelpub_agent_config::DEFAULT_KEEPALIVE_SECS,
        strategy: strategy(spec),
        training: training(spec)?,
        model: model(spec)?,
        model_seed: init_seed(spec)?,
        evaluation: Some(evaluation_vault()),
        secure_aggregation: secure(spec),
        privacy: privacy(spec)?,
        compression: spec.compression.name().to_string(),
        metrics_listen: Some(format!("0.0.0.0:{METRICS_PORT}")),
        linger_after_run: true,
        peer_client_cas: Vec::new(),
    })
}

/// The aggregator's held-out set: sealed by its init container into the
/// party directory with the `vault.key` of its Secret.
pub fn evaluation_vault() -> VaultRef {
    VaultRef {
        dir: PathBuf::from(PARTY_DIR).join(EVALUATION_SUBDIR),
        key_file: PathBuf::from(SECRETS_DIR).join(VAULT_KEY),
    }
}

/// Where the participant on `vault` finds its vault: the claim (at
/// `spec.path` inside it) or the demo vault its init container seals.
pub fn participant_vault(vault: &VaultSpec) -> VaultRef {
    let dir = match &vault.volume_claim_name {
        Some(_) => {
            let inside = vault.path.as_deref().unwrap_or("").trim_start_matches('/');
            PathBuf::from(VAULT_VOLUME_DIR).join(inside)
        }
        None => PathBuf::from(modelpub_agent_config::pod::demo_vault_dir()),
    };
    VaultRef {
        dir,
        key_file: PathBuf::from(VAULT_KEY_DIR).join(VAULT_KEY),
    }
}

/// The config of the participant on `vault`, whose aggregator is `at`.
pub fn participant(
    round: &Round,
    ids: &Identities,
    vault: &VaultSpec,
    at: &AggregatorAt,
) -> Result<ParticipantConfig, Error> {
    let spec = &round.fr.spec;
    let (aggregator_url, aggregator_server_name, aggregator_ca) = match at {
        AggregatorAt::Here => (
            round.aggregator_url(),
            names::aggregator_host(&round.name, &round.namespace),
            None,
        ),
        AggregatorAt::Remote {
            url,
            server_name,
            ca_pem,
        } => (url.clone(), server_name.clone(), Some(ca_pem.clone())),
    };
    Ok(ParticipantConfig {
        federation: round.name.clone(),
        aggregator_url,
        aggregator_server_name,
        aggregator_ca,
        aggregator_identity: ids.aggregator.clone(),
        vault: participant_vault(vault),
        // The aggregator may start after its participants: wait as long as
        // it waits for them.
        connect_timeout_secs: u64::from(spec.participants.join_timeout_seconds),
        prefer_cuda: spec.resources.gpus > 0,
        roster: ids.agents.clone(),
        faults: Vec::new(),
        metrics_listen: Some(format!("0.0.0.0:{METRICS_PORT}")),
    })
}

/// The mounted config file a role reads.
pub fn config_path() -> String {
    format!("{}/{CONFIG_FILE}", modelpub_agent_config::pod::CONFIG_DIR)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{identities, round_fixture};
    use super::*;

    #[test]
    fn aggregator_config_follows_the_spec() {
        let fr = round_fixture();
        let round = Round::new(&fr).unwrap();
        let ids = identities(&fr);
        let c = aggregator(&round, &ids).unwrap();
        assert_eq!(c.federation, "mnist");
        assert_eq!(c.listen, "0.0.0.0:7443");
        assert_eq!(c.metrics_listen.as_deref(), Some("0.0.0.0:9464"));
        assert_eq!(c.roster, ids.agents);
        assert_eq!(c.min_participants, 2);
        assert_eq!(c.rounds, 5);
        assert_eq!(c.round_timeout_secs, 120);
        assert_eq!(c.join_timeout_secs, 300);
        assert_eq!(c.strategy, StrategyConfig::FedAvg);
        assert_eq!(
            c.model,
            ModelConfig::Mlp {
                inputs: 64,
                hidden: vec![32],
                classes: 10
            }
        );
        assert_eq!(c.model_seed, 42);
        assert_eq!(
            c.training,
            TrainingSettings::defaults_for(DataShape::DIGITS, 42)
        );
        assert_eq!(c.secure_aggregation.as_ref().unwrap().clip, 4.0);
        assert_eq!(c.privacy, None);
        assert_eq!(c.compression, "none");
        assert_eq!(
            c.evaluation.unwrap(),
            VaultRef {
                dir: "/var/lib/modelpub/evaluation".into(),
                key_file: "/etc/modelpub/secrets/vault.key".into()
            }
        );
        assert_eq!(c.address_file, PathBuf::from("/var/lib/modelpub/address"));
    }

    #[test]
    fn participant_config_points_at_the_aggregator_service() {
        let fr = round_fixture();
        let round = Round::new(&fr).unwrap();
        let ids = identities(&fr);
        let a = participant(&round, &ids, &fr.spec.data.vaults[0], &AggregatorAt::Here).unwrap();
        assert_eq!(a.aggregator_url, "https://mnist-aggregator.lab.svc:7443");
        assert_eq!(a.aggregator_server_name, "mnist-aggregator.lab.svc");
        assert_eq!(a.aggregator_identity, ids.aggregator);
        assert_eq!(a.roster, ids.agents);
        assert!(a.prefer_cuda, "one GPU asked for");
        assert_eq!(a.vault.dir, PathBuf::from("/var/lib/modelpub/vault"));
        assert_eq!(
            a.vault.key_file,
            PathBuf::from("/etc/modelpub/vault-key/vault.key")
        );
        let c = participant(&round, &ids, &fr.spec.data.vaults[2], &AggregatorAt::Here).unwrap();
        assert_eq!(c.vault.dir, PathBuf::from("/mnt/vault/vault"));
    }

    #[test]
    fn a_participant_of_a_round_coordinated_elsewhere_trusts_only_the_coordinators_ca() {
        let fr = round_fixture();
        let round = Round::new(&fr).unwrap();
        let ids = identities(&fr);
        let at = AggregatorAt::Remote {
            url: "https://203.0.113.7:7443".into(),
            server_name: "mnist-aggregator.lab.svc".into(),
            ca_pem: "PEM".into(),
        };
        let b = participant(&round, &ids, &fr.spec.data.vaults[1], &at).unwrap();
        assert_eq!(b.aggregator_url, "https://203.0.113.7:7443");
        assert_eq!(b.aggregator_server_name, "mnist-aggregator.lab.svc");
        assert_eq!(b.aggregator_ca.as_deref(), Some("PEM"));
        let here = participant(&round, &ids, &fr.spec.data.vaults[1], &AggregatorAt::Here).unwrap();
        assert_eq!(here.aggregator_ca, None);
    }

    #[test]
    fn each_cluster_builds_only_its_own_vaults_and_the_aggregator_where_it_coordinates() {
        let mut fr = round_fixture();
        // A vault without `member` is local wherever the round is applied:
        // a round across clusters names every vault's member.
        fr.spec.data.vaults[0].member = Some("hospital-hq".into());
        fr.spec.data.vaults[1].member = Some("clinic".into());
        fr.spec.data.vaults[2].member = Some("hospital-hq".into());
        fr.spec.coordinator = Some("clinic".into());
        let at_hq = Round::new(&fr).unwrap().at("hospital-hq");
        let local: Vec<_> = at_hq.local_vaults().map(|v| v.name.as_str()).collect();
        assert_eq!(local, ["hospital-a", "hospital-c"]);
        assert_eq!(at_hq.remote_coordinator(), Some("clinic"));
        assert!(at_hq.spans_clusters());
        let planned: Vec<_> = super::super::secrets::planned(&at_hq)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(
            planned,
            ["mnist-agent-hospital-a", "mnist-agent-hospital-c"]
        );
        let at_clinic = Round::new(&fr).unwrap().at("clinic");
        assert_eq!(at_clinic.remote_coordinator(), None);
        let planned: Vec<_> = super::super::secrets::planned(&at_clinic)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(planned, ["mnist-aggregator", "mnist-agent-hospital-b"]);
        let (maps, jobs) =
            super::super::participants(&at_clinic, &ids_of(&fr), &AggregatorAt::Here, "img")
                .unwrap();
        assert_eq!(maps.len(), 1);
        assert_eq!(
            jobs[0].metadata.name.as_deref(),
            Some("mnist-agent-hospital-b")
        );
        let children =
            super::super::children(&at_clinic, &ids_of(&fr), "img", false, &["CA".into()], &[])
                .unwrap();
        assert!(children.external_service.is_some());
        let config: AggregatorConfig =
            serde_json::from_str(&children.config_maps[0].data.as_ref().unwrap()[CONFIG_FILE])
                .unwrap();
        assert_eq!(config.peer_client_cas, ["CA"]);
        assert_eq!(
            config.roster.len(),
            3,
            "every vault's participant, wherever it runs"
        );
    }

    fn ids_of(fr: &modelpub_crds::FederationRound) -> Identities {
        identities(fr)
    }

    #[test]
    fn optional_settings_fall_back_to_node_agent_defaults() {
        let mut fr = round_fixture();
        fr.spec.strategy.type_ = StrategyType::FedAdam;
        fr.spec.strategy.beta1 = Some(0.5);
        fr.spec.learning_rate = Some(0.1);
        fr.spec.local_epochs = Some(3);
        fr.spec.secure_aggregation.enabled = false;
        fr.spec.differential_privacy.enabled = true;
        fr.spec.differential_privacy.epsilon = Some(8.0);
        let s = strategy(&fr.spec);
        assert_eq!(
            s,
            StrategyConfig::FedAdam {
                server_learning_rate: 0.03,
                beta1: 0.5,
                beta2: 0.99,
                tau: 1e-3
            }
        );
        let t = training(&fr.spec).unwrap();
        assert_eq!(
            (t.local_epochs, t.learning_rate, t.batch_size),
            (3, 0.1, 32)
        );
        assert_eq!(secure(&fr.spec), None);
        let p = privacy(&fr.spec).unwrap().unwrap();
        assert_eq!((p.epsilon, p.delta, p.clip_norm), (8.0, 1e-5, 1.0));
        assert!(p.noise_multiplier > 0.0);
        fr.spec.differential_privacy.noise_multiplier = Some(1.5);
        assert_eq!(privacy(&fr.spec).unwrap().unwrap().noise_multiplier, 1.5);
    }

    #[test]
    fn text_rounds_build_a_char_transformer() {
        let mut fr = round_fixture();
        fr.spec.data.dataset = DatasetKind::Shakespeare;
        fr.spec.model.architecture = Architecture::CharTransformer;
        let m = model(&fr.spec).unwrap();
        assert_eq!(m.family(), "char-transformer");
        assert_eq!(training(&fr.spec).unwrap().max_batches_per_epoch, 30);
    }

    #[test]
    fn unbuildable_models_name_the_field() {
        let mut fr = round_fixture();
        fr.spec.model.architecture = Architecture::CharTransformer;
        let err = model(&fr.spec).unwrap_err().to_string();
        assert!(
            err.contains("spec.model.architecture: char-transformer does not fit"),
            "{err}"
        );
        fr.spec.data.dataset = DatasetKind::Csv;
        let err = model(&fr.spec).unwrap_err().to_string();
        assert!(
            err.contains("spec.data.dataset: csv is not supported"),
            "{err}"
        );
        let mut fr = round_fixture();
        fr.spec.model.init_seed = -1;
        let err = training(&fr.spec).unwrap_err().to_string();
        assert!(err.contains("spec.model.initSeed"), "{err}");
    }
}
