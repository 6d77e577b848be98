//! `modelpub simulate`: a real federation on one machine. The aggregator and
//! every institution run as separate processes of this binary, each with its
//! own identity, certificate, sealed vault and audit log under `--out`,
//! talking signed gRPC over mutual TLS on loopback.

pub mod options;
mod plot;
mod processes;
pub mod report;
pub mod setup;

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use modelpub_protocol::secagg::neighbourhood::Tolerance;

use crate::config::{
    Fault, FaultStage, PrivacySettings, SecureSettings, TrainingSettings, read_json,
};
use crate::data::{self, Dataset, Partition};
use crate::model::ModelConfig;
use crate::participant::FAULT_EXIT_CODE;
use crate::round_record::RoundRecord;
use crate::train;
use options::{DataSource, SimulateOptions, find_data_dir};
use processes::{Party, await_address};
use report::{CurvePoint, Final, InstitutionSummary, LocalOnly, Report};
use setup::{Layout, LocalOnlyConfig, Plan};

pub async fn run(opts: SimulateOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    let source = DataSource::parse(&opts.data)?;
    if opts.institutions == 0 {
        bail!("--institutions must be at least 1");
    }
    if opts.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let names = opts.institution_names()?;
    let partition: Partition = match &opts.partition {
        Some(p) => p.parse()?,
        None => source.default_partition(),
    };
    let strategy = opts.strategy_config()?;
    let data_dir = match source {
        DataSource::Digits | DataSource::Shakespeare => find_data_dir(opts.data_dir.as_deref())?,
        _ => std::path::PathBuf::new(),
    };
    let whole = source.load(&data_dir)?;
    let test_fraction = opts.test_fraction.unwrap_or(match whole {
        Dataset::Tabular(_) => 0.2,
        Dataset::Text(_) => 0.1,
    });
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        bail!("--test-fraction must be between 0 and 1, got {test_fraction}");
    }
    let (train_set, test_set) = data::split_train_test(&whole, test_fraction, opts.seed)?;
    let parts = data::partition(&train_set, opts.institutions, &partition, opts.seed)?;
    let mut model = ModelConfig::default_for(&whole);
    if let Some(sizes) = &opts.hidden_sizes {
        match &mut model {
            ModelConfig::Mlp { hidden, .. } if sizes.iter().all(|&h| h > 0) => {
                hidden.clone_from(sizes)
            }
            ModelConfig::Mlp { .. } => bail!("--hidden-sizes must all be positive, got {sizes:?}"),
            _ => bail!(
                "--hidden-sizes applies to tabular data (the MLP), not {}",
                opts.data
            ),
        }
    }
    let training = training_settings(&opts, &whole);
    let compression =
        crate::compression::parse(opts.compression.as_str()).map_err(anyhow::Error::msg)?;
    if opts.secure() && compression != modelpub_protocol::pb::Compression::None {
        bail!("--compression applies to plain aggregation; add --secure-aggregation off");
    }
    if !(0.0..1.0).contains(&opts.dropout) {
        bail!(
            "--dropout must be at least 0 and below 1, got {}",
            opts.dropout
        );
    }
    let secure = opts.secure().then_some(SecureSettings {
        clip: opts.secagg_clip,
        neighbours: None,
        threshold: opts.secagg_threshold,
        // Generous for loopback, so a participant restarted after a crash
        // (libtorch takes a moment to load) is back before keys close.
        stage_timeout_secs: 10,
        mask_prg: opts.mask_prg.prg(),
        // k and t must carry the dropout this run inflicts.
        tolerated_dropout: Some(opts.dropout.max(Tolerance::DEFAULT.dropout)),
        tolerated_corruption: None,
    });
    let privacy = privacy_settings(&opts)?;
    let faults = plan_faults(&opts);
    let n = opts.institutions as u32;
    let min_participants = opts
        .min_participants
        .unwrap_or_else(|| n - (opts.dropout * f64::from(n)).round() as u32)
        .max(1);
    if min_participants > n {
        bail!("--min-participants {min_participants} is more than the {n} institutions");
    }

    say(&format!(
        "modelpub simulate: {} ({}), {} institutions partitioned by {}, {} rounds of {} with {} local epoch(s)",
        opts.data,
        whole.describe(),
        opts.institutions,
        opts.partition.as_deref().unwrap_or(match partition {
            Partition::Label => "label",
            _ => "role",
        }),
        opts.rounds,
        strategy.name(),
        training.local_epochs,
    ));
    setup::prepare_out_dir(&opts.out)?;
    let layout = setup::lay_out(
        &opts.out,
        &Plan {
            names: &names,
            train_parts: &parts,
            test: &test_set,
            model: &model,
            training: &training,
            strategy: &strategy,
            rounds: opts.rounds,
            min_participants,
            round_timeout_secs: opts.round_timeout,
            seed: opts.seed,
            prefer_cuda: opts.cuda,
            secure: secure.clone(),
            privacy: privacy.clone(),
            compression: opts.compression.as_str().into(),
            faults: faults.clone(),
        },
    )?;
    let participant_metrics = opts.participant_metrics_addrs()?;
    if !participant_metrics.is_empty() {
        setup::set_participant_metrics_listen(&layout, &participant_metrics)?;
        say(&format!(
            "  participant metrics on http://{}/metrics to http://{}/metrics",
            participant_metrics[0],
            participant_metrics[participant_metrics.len() - 1]
        ));
    }
    if let Some(addr) = &opts.metrics_addr {
        setup::set_metrics_listen(&layout, addr)?;
        say(&format!(
            "  aggregator metrics on http://{addr}/metrics, status on http://{addr}/status"
        ));
    }
    let institutions: Vec<InstitutionSummary> = layout
        .institutions
        .iter()
        .zip(&parts)
        .map(|(p, d)| InstitutionSummary {
            institution: party_name(p),
            examples: d.len(),
            holds: d.describe(),
        })
        .collect();
    for i in &institutions {
        say(&format!(
            "  {}: {} ({})",
            i.institution, i.examples, i.holds
        ));
    }
    say(&format!(
        "  federation CA, identities, certificates and sealed vaults in {}",
        layout.out.display()
    ));

    if let Some(p) = &privacy {
        say(&format!(
            "  differential privacy: clip {} , noise multiplier {:.4}, budget ε = {} at δ = {}",
            p.clip_norm, p.noise_multiplier, p.epsilon, p.delta
        ));
    }
    if opts.secure() {
        say("  secure aggregation (SecAgg+) on: the aggregator sees only the sum of the updates");
    }
    let rounds = federate(&layout, &opts, &faults).await?;
    let local_only = if opts.skip_local_only {
        Vec::new()
    } else {
        baselines(&layout).await?
    };
    let last_ok = rounds.iter().rev().find(|r| r.succeeded);
    let final_ = Final {
        accuracy: rounds.last().and_then(|r| r.accuracy),
        loss: rounds.last().and_then(|r| r.loss),
        model_sha256: rounds
            .last()
            .map(|r| r.model_sha256.clone())
            .unwrap_or_default(),
        rounds_completed: rounds.iter().filter(|r| r.succeeded).count(),
    };
    if last_ok.is_none() {
        say("no round completed; the global model is the initial one");
    }
    let report = Report {
        config: serde_json::json!({
            "options": opts,
            "partition": format!("{partition:?}"),
            "strategy": strategy,
            "secure_aggregation": secure,
            "privacy": privacy,
            "model": model,
            "training": training,
            "test_examples": test_set.len(),
            "train_examples": train_set.len(),
        }),
        rounds,
        local_only,
        final_,
        institutions,
        seconds: started.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(layout.out.join("report.json"), json)?;
    plot::write_svg(&report, &layout.out.join("report.svg"))?;
    Ok(report)
}

fn training_settings(opts: &SimulateOptions, data: &Dataset) -> TrainingSettings {
    let d = train::default_train_config(data);
    TrainingSettings {
        local_epochs: opts.local_epochs.unwrap_or(d.local_epochs),
        batch_size: opts.batch_size.unwrap_or(d.batch_size as u32),
        learning_rate: opts.learning_rate.unwrap_or(d.learning_rate),
        max_batches_per_epoch: opts
            .max_batches_per_epoch
            .unwrap_or(d.max_batches_per_epoch as u32),
        seed: opts.seed,
    }
}

fn privacy_settings(opts: &SimulateOptions) -> anyhow::Result<Option<PrivacySettings>> {
    let Some(epsilon) = opts.dp_epsilon else {
        if opts.dp_noise_multiplier.is_some() {
            bail!("--dp-noise-multiplier needs a budget: add --dp-epsilon");
        }
        return Ok(None);
    };
    if !(opts.dp_clip.is_finite() && opts.dp_clip > 0.0) {
        bail!("--dp-clip must be positive, got {}", opts.dp_clip);
    }
    // Every institution takes part in every round: sampling rate 1.
    let noise_multiplier = match opts.dp_noise_multiplier {
        Some(z) => z,
        None => modelpub_protocol::dp::noise_multiplier_for(
            1.0,
            u64::from(opts.rounds),
            epsilon,
            opts.dp_delta,
        )?,
    };
    Ok(Some(PrivacySettings {
        clip_norm: opts.dp_clip,
        noise_multiplier,
        epsilon,
        delta: opts.dp_delta,
    }))
}

/// Which institutions fail, when: `round(dropout x n)` of them each round,
/// each at a random stage, chosen from the seed so a run can be repeated.
fn plan_faults(opts: &SimulateOptions) -> Vec<Vec<Fault>> {
    use rand::SeedableRng;
    use rand::seq::{IndexedRandom, SliceRandom};
    let n = opts.institutions;
    let mut faults = vec![Vec::new(); n];
    let per_round = (opts.dropout * n as f64).round() as usize;
    if per_round == 0 {
        return faults;
    }
    let stages: &[FaultStage] = if opts.secure() {
        &FaultStage::SECURE
    } else {
        &FaultStage::PLAIN
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed ^ 0xd20b_0a7e);
    let mut who: Vec<usize> = (0..n).collect();
    for round in 1..=opts.rounds {
        who.shuffle(&mut rng);
        for &i in who.iter().take(per_round.min(n)) {
            if let Some(&stage) = stages.choose(&mut rng) {
                faults[i].push(Fault { round, stage });
            }
        }
    }
    faults
}

fn party_name(p: &crate::party::PartyDir) -> String {
    p.root()
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

fn say(line: &str) {
    eprintln!("{line}");
}

/// Runs the federation to its end and returns the aggregator's round records.
async fn federate(
    layout: &Layout,
    opts: &SimulateOptions,
    faults: &[Vec<Fault>],
) -> anyhow::Result<Vec<RoundRecord>> {
    let mut aggregator = Party::role("aggregator", &layout.aggregator, "aggregator")?;
    let address = await_address(
        &mut aggregator,
        &layout.address_file,
        Duration::from_secs(60),
    )
    .await?;
    say(&format!("  aggregator listening on {address} (mutual TLS)"));
    setup::set_aggregator_address(layout, &address)?;
    let mut participants = layout
        .institutions
        .iter()
        .map(|p| Party::role("participant", p, &party_name(p)))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let bar = progress_bar(opts.rounds as u64);
    bar.set_message("waiting for institutions to join");
    let limit = Duration::from_secs(60 + opts.round_timeout * u64::from(opts.rounds) + 60);
    let started = Instant::now();
    let mut seen = 0;
    let mut reported_exits = BTreeSet::new();
    // A participant killed in round r comes back (a new process, the same
    // identity and vault) once round r is over.
    let mut killed_in: Vec<Option<u32>> = vec![None; participants.len()];
    let mut back_after: Vec<u32> = vec![0; participants.len()];
    let outcome = loop {
        let records = RoundRecord::read_all(&layout.rounds_file)?;
        for r in &records[seen.min(records.len())..] {
            let line = round_line(r, opts.rounds);
            if bar.is_hidden() {
                say(&line);
            } else {
                bar.println(line);
            }
            bar.set_position(u64::from(r.round));
        }
        if records.len() > seen {
            bar.set_message("training");
        }
        seen = records.len();
        for (i, p) in participants.iter_mut().enumerate() {
            let Some(status) = p.poll()? else { continue };
            if status.code() == Some(FAULT_EXIT_CODE) {
                if killed_in[i].is_none() {
                    killed_in[i] = faults[i]
                        .iter()
                        .map(|f| f.round)
                        .filter(|r| *r > back_after[i])
                        .min();
                }
                if let Some(r) = killed_in[i]
                    && seen >= r as usize
                    && r < opts.rounds
                {
                    *p = Party::role("participant", &layout.institutions[i], &p.name)?;
                    back_after[i] = r;
                    killed_in[i] = None;
                }
            } else if !status.success() && reported_exits.insert(p.name.clone()) {
                bar.println(format!(
                    "  {} exited ({status}); it will count as dropped. Its log ends:\n{}",
                    p.name,
                    indent(&p.log_tail(8))
                ));
            }
        }
        if let Some(status) = aggregator.poll()? {
            break if status.success() {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "the aggregator failed ({status}). Its log ends:\n{}",
                    indent(&aggregator.log_tail(15))
                ))
            };
        }
        if started.elapsed() > limit {
            break Err(anyhow::anyhow!(
                "the federation did not finish within {} s",
                limit.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bar.finish_and_clear();
    if let Err(e) = outcome {
        aggregator.kill().await;
        for p in participants.iter_mut() {
            p.kill().await;
        }
        return Err(e);
    }
    for p in participants.iter_mut() {
        let status = p.wait(Duration::from_secs(30)).await?;
        let killed = status.code() == Some(FAULT_EXIT_CODE);
        if !status.success() && !killed && !reported_exits.contains(&p.name) {
            say(&format!(
                "  {} exited ({status}). Its log ends:\n{}",
                p.name,
                indent(&p.log_tail(8))
            ));
        }
    }
    let records = RoundRecord::read_all(&layout.rounds_file)?;
    if records.is_empty() {
        bail!("the aggregator finished without completing any round");
    }
    Ok(records)
}

fn round_line(r: &RoundRecord, rounds: u32) -> String {
    let metrics = match (r.accuracy, r.loss) {
        (Some(a), Some(l)) => format!("accuracy {a:.4}  loss {l:.4}"),
        _ => String::new(),
    };
    let status = if r.succeeded {
        String::new()
    } else {
        format!("  FAILED: {}", r.reason)
    };
    let dropped = if r.dropped_names.is_empty() {
        String::new()
    } else {
        format!("  dropped: {}", r.dropped_names.join(", "))
    };
    format!(
        "  round {:>2}/{rounds}  {metrics}  {} participant(s)  {:.2} s{dropped}{status}",
        r.round, r.participants, r.seconds
    )
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn progress_bar(rounds: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(rounds), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("  [{elapsed_precise}] {bar:30} round {pos}/{len} {msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Each institution trains alone, as its own process on its own vault.
async fn baselines(layout: &Layout) -> anyhow::Result<Vec<LocalOnly>> {
    say("  training each institution alone for comparison (local only)");
    let mut running = Vec::new();
    for party in &layout.institutions {
        let config = party.root().join("local-only-config.json");
        let log = party.root().join("local-only.log");
        let config_arg = config.to_string_lossy().to_string();
        running.push((
            party.clone(),
            Party::spawn(
                &format!("{} (local only)", party_name(party)),
                &["train-local", "--config", &config_arg],
                &log,
                party.root(),
            )?,
        ));
    }
    let mut results = Vec::new();
    for (party, mut proc) in running {
        let status = proc.wait(Duration::from_secs(3600)).await?;
        if !status.success() {
            bail!(
                "{} failed ({status}). Its log ends:\n{}",
                proc.name,
                indent(&proc.log_tail(10))
            );
        }
        let config: LocalOnlyConfig = read_json(&party.root().join("local-only-config.json"))?;
        let curve: Vec<CurvePoint> = read_json(&config.out)?;
        let last = curve
            .last()
            .with_context(|| format!("{} produced no evaluation", proc.name))?
            .clone();
        results.push(LocalOnly {
            institution: party_name(&party),
            accuracy: last.accuracy,
            loss: last.loss,
            curve,
        });
    }
    Ok(results)
}

/// `modelpub train-local`: the local-only baseline of one institution.
pub fn train_local(config_path: &std::path::Path) -> anyhow::Result<()> {
    use crate::vault::{Vault, VaultKey};
    let config: LocalOnlyConfig = read_json(config_path)?;
    let open = |v: &crate::config::VaultRef| -> anyhow::Result<Dataset> {
        let vault = Vault::open(&v.dir, VaultKey::load(&v.key_file)?)?;
        Ok(data::decode_dataset(&vault.get("dataset")?)?)
    };
    let data = open(&config.vault)?;
    let test = open(&config.testset)?;
    let t = &config.training;
    let cfg = train::TrainConfig {
        local_epochs: t.local_epochs,
        batch_size: t.batch_size.max(1) as usize,
        learning_rate: t.learning_rate,
        proximal_mu: 0.0,
        max_batches_per_epoch: t.max_batches_per_epoch as usize,
        seed: t.seed,
    };
    let scores = crate::participant::train_local_only(
        &data,
        &test,
        &config.model,
        &cfg,
        config.evaluations,
        config.model_seed,
        config.prefer_cuda,
    )?;
    let curve: Vec<CurvePoint> = scores
        .iter()
        .enumerate()
        .map(|(i, e)| CurvePoint {
            round: i as u32 + 1,
            accuracy: e.accuracy,
            loss: e.loss,
        })
        .collect();
    crate::config::write_json(&config.out, &curve)?;
    Ok(())
}
