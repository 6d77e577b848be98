//! Two clusters peer the way the README's "Two clusters: peering" section
//! says, word for word, with the real kubectl against two local clusters
//! (each the test API server and the process kubelet, the chart installed
//! with the real helm, the operator running as its ServiceAccount); a
//! third cluster supplies the tokens that must be refused: one altered,
//! one expired, one for another federation.
//!
//! Always on local clusters: the suite needs three at once, and a real
//! cluster given by `MODELPUB_E2E_KUBECONFIG` is one (`docs/e2e.md`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use modelpub_crds::TrustDomain;
use modelpub_crds::trust_domain::MemberStatus;
use modelpub_e2e::cluster::{Cluster, Failure, Tools, eventually};
use modelpub_e2e::helm::repo_root;
use modelpub_operator::controllers::trust_domain::join_token::{JoinToken, TokenFacts};
use serde_json::{Value, json};

const NS: &str = "modelpub";
const FEDERATION: &str = "cardio-research";
const OPERATOR_PODS: &str = "app.kubernetes.io/name=modelpub,app.kubernetes.io/component=operator";
/// The contexts of the merged kubeconfig the README's commands use.
const CONTEXTS: [&str; 3] = ["hospital-a", "hospital-b", "rogue"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_clusters_peer_by_join_token_and_refuse_bad_tokens() -> Result<(), Failure> {
    let started = Instant::now();
    let work = tempfile::tempdir().expect("work dir");
    let mut clusters = Vec::new();
    for name in CONTEXTS {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir).expect("cluster dir");
        clusters.push(Cluster::start_local(&dir).await.expect("start a cluster"));
    }
    let outcome = steps(&clusters, work.path(), started).await;
    if let Err(e) = &outcome {
        for (name, cluster) in CONTEXTS.iter().zip(&clusters) {
            eprintln!("\n########## cluster {name}");
            eprintln!("{}", cluster.diagnostics(NS, OPERATOR_PODS).await);
        }
        eprintln!(
            "\n===== peering failed after {:?}: {e:#}",
            started.elapsed()
        );
    }
    for token in ["hospital-a.token", "hospital-b.token"] {
        let _ = std::fs::remove_file(repo_root().join(token));
    }
    for cluster in clusters {
        cluster.shutdown().await;
    }
    outcome.map_err(|e| Failure(format!("{e:#}")))
}

async fn steps(
    clusters: &[Cluster],
    work: &std::path::Path,
    started: Instant,
) -> anyhow::Result<()> {
    let step = |n: u32, what: &str| {
        eprintln!("\n== step {n} ({:.0?} in): {what}", started.elapsed());
    };
    let [a, b, rogue] = clusters else {
        anyhow::bail!("expected three clusters");
    };
    step(1, "the README's helm install in each cluster");
    let install = modelpub_e2e::readme::shell_blocks("On a cluster")?
        .into_iter()
        .next()
        .context("README `On a cluster` has no helm install block")?;
    for cluster in clusters {
        run_block(&cluster.tools, &install)?;
    }
    for cluster in clusters {
        cluster.one_ready_pod(NS, OPERATOR_PODS).await?;
    }

    step(2, "the README's two-cluster walk-through, word for word");
    let merged = merged_kubeconfig(clusters, work)?;
    let tools = Tools::new(&merged);
    let blocks = modelpub_e2e::readme::shell_blocks("Two clusters: peering")?;
    ensure!(
        blocks.len() == 3,
        "README `Two clusters: peering`: expected 3 blocks (each side's TrustDomain, then the exchange), found {}",
        blocks.len()
    );
    let mut printed = String::new();
    for block in &blocks {
        printed = run_block(&tools, block)?;
    }

    step(3, "each side pins the other's key, CA and endpoint");
    let a_td = domain(&a.client).await?;
    let b_td = domain(&b.client).await?;
    for (td, peer, peer_td) in [(&a_td, "hospital-b", &b_td), (&b_td, "hospital-a", &a_td)] {
        let m = eventually(
            &format!("{peer} trusted by its join token"),
            Duration::from_secs(60),
            || async {
                let td = domain_of(td, a, b).await?;
                let m = member(&td, peer);
                Ok(match m {
                    Some(m) if m.trusted && m.reason.as_deref() == Some("JoinTokenAccepted") => {
                        Ok(m)
                    }
                    other => Err(format!("{other:?}")),
                })
            },
        )
        .await?;
        let want = peer_td
            .status
            .as_ref()
            .and_then(|s| s.identity_fingerprint.clone());
        ensure!(
            m.fingerprint == want && want.is_some(),
            "{peer} is pinned to {:?}, its own status shows {want:?}",
            m.fingerprint
        );
    }
    let b_fingerprint = b_td
        .status
        .as_ref()
        .and_then(|s| s.identity_fingerprint.clone())
        .unwrap_or_default();
    ensure!(
        printed.contains(&format!(
            "hospital-b trusted=true JoinTokenAccepted {b_fingerprint}"
        )),
        "the README's last command printed:\n{printed}"
    );
    expect_event(&a.client, "Normal", "JoinTokenAccepted", "hospital-b").await?;
    expect_event(&b.client, "Normal", "JoinTokenAccepted", "hospital-a").await?;

    step(
        5,
        "the README's round across the two clusters, word for word",
    );
    let round_blocks = modelpub_e2e::readme::shell_blocks("Two clusters: a round")?;
    ensure!(
        round_blocks.len() == 1,
        "README `Two clusters: a round`: expected 1 block, found {}",
        round_blocks.len()
    );
    // Meanwhile a rogue participant (a certificate from a CA hospital-a
    // never pinned) keeps knocking at the aggregator's external address.
    let rogue_knocks = tokio::spawn(knock_at_the_aggregator(
        a.client.clone(),
        work.join("hospital-a"),
    ));
    let printed = run_block(&tools, &round_blocks[0])?;
    round_matches_simulate(a, b, &printed).await?;
    let (knocks, audit) = rogue_knocks
        .await
        .context("the rogue participant's task")??;
    ensure!(
        knocks > 0,
        "the rogue participant never reached the aggregator's address"
    );
    ensure!(
        audit
            .lines()
            .any(|l| l.contains("tls-handshake-refused") && l.contains("rogue-participant")),
        "the aggregator's audit log does not name the refused participant:\n{audit}"
    );
    let fr = Api::<modelpub_crds::FederationRound>::namespaced(a.client.clone(), NS)
        .get(ROUND)
        .await?;
    let refused = fr.status.map(|s| s.refused_peers).unwrap_or_default();
    ensure!(
        refused
            .iter()
            .any(|r| r.name == "rogue-participant" && r.reason == "TlsHandshakeRefused"),
        "hospital-a's round status does not name the refused participant: {refused:?}"
    );

    for (cluster, peer) in [(a, "hospital-b"), (b, "hospital-a")] {
        eventually(
            &format!("a signed handshake with {peer}"),
            Duration::from_secs(90),
            || async {
                let td = domain(&cluster.client).await?;
                Ok(match member(&td, peer) {
                    Some(m) if m.reachable && m.last_handshake_time.is_some() => Ok(()),
                    other => Err(format!("{other:?}")),
                })
            },
        )
        .await?;
    }

    step(
        6,
        "a never-peered and a re-keyed cluster are refused by hospital-a's endpoint",
    );
    let a_token = a_td
        .status
        .as_ref()
        .and_then(|s| s.join_token.clone())
        .context("hospital-a has no join token")?;
    // Both trust hospital-a; hospital-a trusts neither: `rogue-e` it never
    // peered, the other claims to be hospital-b with new keys and CA.
    for (td_name, self_name) in [("unpeered", "rogue-e"), ("rekeyed", "hospital-b")] {
        let td: TrustDomain = serde_json::from_value(json!({
            "apiVersion": "modelpub.io/v1alpha1", "kind": "TrustDomain",
            "metadata": {"name": td_name, "namespace": NS},
            "spec": {"federation": FEDERATION,
                     "self": {"name": self_name, "endpoint": "https://rogue.example:7450"},
                     "members": [{"name": "hospital-a", "joinToken": a_token}]}
        }))?;
        Api::<TrustDomain>::namespaced(rogue.client.clone(), NS)
            .create(&Default::default(), &td)
            .await
            .with_context(|| format!("create TrustDomain {td_name} in the rogue cluster"))?;
    }
    let refused = eventually(
        "hospital-a's status names both refused clusters",
        Duration::from_secs(90),
        || async {
            let td = domain(&a.client).await?;
            let refused = td.status.map(|s| s.refused_peers).unwrap_or_default();
            let names: Vec<&str> = refused.iter().map(|r| r.name.as_str()).collect();
            Ok(
                if names.contains(&"rogue-e") && names.contains(&"hospital-b") {
                    Ok(refused.clone())
                } else {
                    Err(format!("{refused:?}"))
                },
            )
        },
    )
    .await?;
    // (An early "(unknown)" entry may be there too: hospital-b's first
    // handshake raced hospital-a pasting its token.)
    for r in refused
        .iter()
        .filter(|r| r.name == "rogue-e" || r.name == "hospital-b")
    {
        ensure!(
            r.reason == "UnknownCertificateAuthority" && r.certificate_sha256.is_some(),
            "{r:?}"
        );
    }
    for name in ["rogue-e", "hospital-b"] {
        expect_event(&a.client, "Warning", "UnknownCertificateAuthority", name).await?;
    }
    // The real hospital-b is still trusted and still shakes hands.
    let b_member = member(&domain(&a.client).await?, "hospital-b").context("hospital-b")?;
    ensure!(b_member.trusted, "{b_member:?}");

    step(
        4,
        "an altered, an expired and a foreign token are refused, each with its reason and a Warning Event",
    );
    let tampered = alter(&a_token, |t| {
        t["endpoint"] = json!("https://evil.example:7443");
    })?;
    let expired = expired_token(rogue).await?;
    let foreign = foreign_token(rogue).await?;
    let refused = [
        ("hospital-a", tampered, "JoinTokenTampered"),
        ("rogue-c", expired, "JoinTokenExpired"),
        ("rogue-d", foreign, "JoinTokenForeignFederation"),
    ];
    // Into hospital-b's TrustDomain, replacing its good hospital-a entry
    // with the altered token: trust follows the token, not the name.
    let members: Vec<Value> = refused
        .iter()
        .map(|(name, token, _)| json!({"name": name, "joinToken": token}))
        .collect();
    let tds: Api<TrustDomain> = Api::namespaced(b.client.clone(), NS);
    tds.patch(
        FEDERATION,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"members": members}})),
    )
    .await?;
    for (name, _, reason) in &refused {
        eventually(
            &format!("{name} refused with {reason}"),
            Duration::from_secs(60),
            || async {
                let td = tds.get(FEDERATION).await?;
                Ok(match member(&td, name) {
                    Some(m) if !m.trusted && m.reason.as_deref() == Some(*reason) => Ok(()),
                    other => Err(format!("{other:?}")),
                })
            },
        )
        .await?;
        expect_event(&b.client, "Warning", reason, name).await?;
    }
    let td = tds.get(FEDERATION).await?;
    let ready = td
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .context("no Ready condition")?;
    ensure!(
        ready.status == "False" && ready.reason == "MemberRefused",
        "Ready is {} ({}): {}",
        ready.status,
        ready.reason,
        ready.message
    );
    let described = tools
        .kubectl(&[
            "--context",
            "hospital-b",
            "describe",
            "td",
            FEDERATION,
            "-n",
            NS,
        ])
        .ok()?;
    ensure!(
        described.contains("JoinTokenTampered") && described.contains("refused member hospital-a"),
        "kubectl describe td does not show the refusal:\n{described}"
    );
    eprintln!("== peering passed in {:.0?}", started.elapsed());
    Ok(())
}

/// Until hospital-a's round is over: TLS handshakes with its aggregator's
/// external address as `rogue-participant`, holding a certificate from a
/// CA nobody pinned (and trusting hospital-a's CA, so only the aggregator
/// can refuse). Returns how many handshakes reached a listener, and the
/// aggregator's audit log as read while its pod (and so its emptyDir
/// party volume) still existed.
async fn knock_at_the_aggregator(
    a: Client,
    cluster_dir: std::path::PathBuf,
) -> anyhow::Result<(u32, String)> {
    use modelpub_crds::FederationRound;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let rounds: Api<FederationRound> = Api::namespaced(a.clone(), NS);
    let ca = modelpub_protocol::tls::FederationCa::generate("rogue")?;
    let leaf = ca.issue("rogue-participant", &["rogue-participant"], &[])?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut knocks = 0;
    let mut audit = String::new();
    let logged = |audit: &str| {
        audit
            .lines()
            .any(|l| l.contains("tls-handshake-refused") && l.contains("rogue-participant"))
    };
    while Instant::now() < deadline {
        let Ok(fr) = rounds.get(ROUND).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let status = fr.status.clone().unwrap_or_default();
        if status.phase.is_terminal() {
            break;
        }
        let Some(endpoint) = status.aggregator_endpoint.clone() else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let address = endpoint.trim_start_matches("https://").to_string();
        let secrets: Api<Secret> = Api::namespaced(a.clone(), NS);
        let Some(their_ca) = secrets
            .get_opt(&format!("{FEDERATION}-ca"))
            .await?
            .and_then(|s| s.data)
            .and_then(|d| {
                d.get("ca.crt")
                    .map(|b| String::from_utf8_lossy(&b.0).to_string())
            })
        else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(their_ca.as_bytes()) {
            roots.add(c?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())?,
        )?;
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let name = ServerName::try_from(format!("{ROUND}-aggregator.{NS}.svc"))?;
        let connect = tokio::net::TcpStream::connect(&address);
        if let Ok(Ok(tcp)) = tokio::time::timeout(Duration::from_secs(2), connect).await
            && let Ok(Ok(mut tls)) =
                tokio::time::timeout(Duration::from_secs(2), connector.connect(name, tcp)).await
        {
            knocks += 1;
            if knocks == 1 {
                eprintln!(
                    "rogue participant: first handshake with {address} while the round is {:?}",
                    status.phase
                );
            }
            // TLS 1.3: the server checks our certificate after we finish;
            // it answers with an alert, and the read fails.
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 1];
            let _ = tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf)).await;
            if !logged(&audit) {
                audit = aggregator_audit_log(&cluster_dir).unwrap_or_default();
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok((knocks, audit))
}

/// The audit log of hospital-a's aggregator, found in its kubelet's pod
/// volumes under `cluster_dir`.
fn aggregator_audit_log(cluster_dir: &std::path::Path) -> anyhow::Result<String> {
    fn walk(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.file_name().is_some_and(|n| n == "audit.log")
                && path
                    .to_string_lossy()
                    .contains(&format!("{ROUND}-aggregator"))
            {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(cluster_dir, &mut found);
    let mut all = String::new();
    for path in &found {
        all.push_str(&std::fs::read_to_string(path)?);
    }
    ensure!(
        !found.is_empty(),
        "no aggregator audit.log under {}",
        cluster_dir.display()
    );
    Ok(all)
}

/// One held-out example of the digits test split (359 examples).
const ONE_HELD_OUT_EXAMPLE: f64 = 1.0 / 359.0 + 1e-9;
const ROUND: &str = "digits-two-clusters";

/// The round succeeded in hospital-a, trained as `modelpub simulate` does
/// with the same names and settings, and hospital-b's copy shows the same.
async fn round_matches_simulate(a: &Cluster, b: &Cluster, printed: &str) -> anyhow::Result<()> {
    use modelpub_crds::{FederationRound, Phase};
    let fr = Api::<FederationRound>::namespaced(a.client.clone(), NS)
        .get(ROUND)
        .await?;
    let status = fr.status.clone().context("no status in hospital-a")?;
    ensure!(status.phase == Phase::Succeeded, "hospital-a: {status:?}");
    let accuracies: Vec<f64> = status.rounds.iter().filter_map(|r| r.accuracy).collect();
    let b_fr = eventually(
        "hospital-b's copy Succeeded",
        Duration::from_secs(60),
        || async {
            let fr = Api::<FederationRound>::namespaced(b.client.clone(), NS)
                .get(ROUND)
                .await?;
            let s = fr.status.clone().unwrap_or_default();
            Ok(if s.phase == Phase::Succeeded {
                Ok(fr)
            } else {
                Err(format!("{:?} {:?}", s.phase, s.message))
            })
        },
    )
    .await?;
    let b_status = b_fr.status.clone().unwrap_or_default();
    ensure!(
        b_status.coordinator.as_deref() == Some("hospital-a")
            && b_status.accuracy == status.accuracy,
        "hospital-b mirrors {:?} accuracy {:?}, hospital-a has {:?}",
        b_status.coordinator,
        b_status.accuracy,
        status.accuracy
    );
    ensure!(
        printed.contains("Succeeded") && printed.contains("3/3"),
        "`kubectl get fr` in hospital-b printed:\n{printed}"
    );
    let s = &fr.spec;
    let out = tempfile::tempdir()?;
    let args: Vec<String> = [
        "simulate",
        "--data",
        "digits",
        "--institutions",
        "2",
        "--partition",
        "label",
        "--names",
        "hospital-a,hospital-b",
        "--skip-local-only",
        "--rounds",
        &s.rounds.to_string(),
        "--seed",
        &s.model.init_seed.to_string(),
        "--min-participants",
        &s.participants.min.to_string(),
        "--local-epochs",
        &s.local_epochs.unwrap_or(1).to_string(),
        "--learning-rate",
        &s.learning_rate.unwrap_or(0.05).to_string(),
        "--batch-size",
        &s.batch_size.unwrap_or(32).to_string(),
        "--secagg-threshold",
        &s.secure_aggregation.threshold.unwrap_or(2).to_string(),
        "--secagg-clip",
        &s.secure_aggregation.clip.to_string(),
        "--out",
        &out.path().display().to_string(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = modelpub_e2e::modelpub(&refs);
    ensure!(
        run.status.success(),
        "modelpub {}: {}",
        args.join(" "),
        modelpub_e2e::text(&run)
    );
    let sim = modelpub_e2e::read_json(&out.path().join("report.json"));
    let sim_rounds: Vec<f64> = sim["rounds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["accuracy"].as_f64())
        .collect();
    eprintln!("per-round accuracy: two clusters {accuracies:?}, simulate {sim_rounds:?}");
    ensure!(
        sim_rounds.len() == accuracies.len()
            && accuracies.len() == s.rounds as usize
            && sim_rounds
                .iter()
                .zip(&accuracies)
                .all(|(x, y)| (x - y).abs() <= ONE_HELD_OUT_EXAMPLE),
        "per-round accuracy: two clusters {accuracies:?}, simulate {sim_rounds:?}"
    );
    Ok(())
}

fn run_block(tools: &Tools, block: &str) -> anyhow::Result<String> {
    eprintln!("$ {}", block.replace('\n', "\n$ "));
    let out = tools.shell(block).ok()?;
    eprintln!("{out}");
    Ok(out)
}

/// One kubeconfig with a context per cluster, named as [`CONTEXTS`], as an
/// admin of two clusters has it.
fn merged_kubeconfig(
    clusters: &[Cluster],
    work: &std::path::Path,
) -> anyhow::Result<std::path::PathBuf> {
    let mut merged =
        json!({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []});
    for (name, cluster) in CONTEXTS.iter().zip(clusters) {
        let config = cluster
            .local_kubeconfig_json()
            .context("a local cluster's kubeconfig")?;
        for (list, key) in [("clusters", "cluster"), ("users", "user")] {
            let entry = &config[list][0][key];
            merged[list]
                .as_array_mut()
                .context("list")?
                .push(json!({"name": name, key: entry}));
        }
        merged["contexts"]
            .as_array_mut()
            .context("list")?
            .push(json!({"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}));
    }
    merged["current-context"] = json!(CONTEXTS[0]);
    let path = work.join("clusters.kubeconfig");
    std::fs::write(&path, serde_json::to_string_pretty(&merged)?)?;
    Ok(path)
}

async fn domain(client: &Client) -> anyhow::Result<TrustDomain> {
    Ok(Api::<TrustDomain>::namespaced(client.clone(), NS)
        .get(FEDERATION)
        .await?)
}

/// `td` read again from whichever of `a` and `b` holds it.
async fn domain_of(td: &TrustDomain, a: &Cluster, b: &Cluster) -> anyhow::Result<TrustDomain> {
    let client = if td.spec.self_.name == "hospital-a" {
        a
    } else {
        b
    };
    domain(&client.client).await
}

fn member(td: &TrustDomain, name: &str) -> Option<MemberStatus> {
    td.status
        .as_ref()?
        .members
        .iter()
        .find(|m| m.name == name)
        .cloned()
}

/// An Event of `type_` and `reason` in the namespace whose message names
/// `member`.
async fn expect_event(
    client: &Client,
    type_: &str,
    reason: &str,
    member: &str,
) -> anyhow::Result<()> {
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    eventually(
        &format!("a {type_} {reason} Event naming {member}"),
        Duration::from_secs(30),
        || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await?;
                let found = list.items.iter().any(|e| {
                    e.type_.as_deref() == Some(type_)
                        && e.reason.as_deref() == Some(reason)
                        && e.message.as_deref().is_some_and(|m| m.contains(member))
                });
                Ok(if found {
                    Ok(())
                } else {
                    Err(format!("{} events", list.items.len()))
                })
            }
        },
    )
    .await
}

/// `token` with its JSON changed by `change` and its signature kept.
fn alter(token: &str, change: impl FnOnce(&mut Value)) -> anyhow::Result<String> {
    let body = token.strip_prefix("mpj2.").context("not an mpj2 token")?;
    let mut json: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body)?)?;
    change(&mut json);
    Ok(format!(
        "mpj2.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json)?)
    ))
}

/// A TrustDomain of the rogue cluster, once its operator published a token.
async fn rogue_domain(
    rogue: &Cluster,
    name: &str,
    federation: &str,
    self_name: &str,
) -> anyhow::Result<TrustDomain> {
    let tds: Api<TrustDomain> = Api::namespaced(rogue.client.clone(), NS);
    let td: TrustDomain = serde_json::from_value(json!({
        "apiVersion": "modelpub.io/v1alpha1", "kind": "TrustDomain",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"federation": federation,
                 "self": {"name": self_name, "endpoint": format!("https://{self_name}.example:7443")}}
    }))?;
    tds.patch(name, &PatchParams::apply("peering-e2e"), &Patch::Apply(&td))
        .await?;
    eventually(
        &format!("TrustDomain {name} publishes a join token"),
        Duration::from_secs(60),
        || async {
            let td = tds.get(name).await?;
            Ok(
                if td
                    .status
                    .as_ref()
                    .and_then(|s| s.join_token.as_ref())
                    .is_some()
                {
                    Ok(td)
                } else {
                    Err("no token yet".to_string())
                },
            )
        },
    )
    .await
}

/// A token of the rogue cluster's `rogue-c`, for this federation and
/// properly signed with its identity key, but expired an hour ago: what a
/// token left lying around for too long looks like.
async fn expired_token(rogue: &Cluster) -> anyhow::Result<String> {
    rogue_domain(rogue, "rogue-cardio", FEDERATION, "rogue-c").await?;
    let secrets: Api<Secret> = Api::namespaced(rogue.client.clone(), NS);
    let data =
        |s: Secret| -> BTreeMap<String, k8s_openapi::ByteString> { s.data.unwrap_or_default() };
    let id = data(secrets.get("rogue-cardio-identity").await?);
    let ca = data(secrets.get("rogue-cardio-ca").await?);
    let identity = modelpub_operator::identity::identity_from_data("rogue identity", &id)?;
    let ca_pem = ca
        .get("ca.crt")
        .and_then(|b| std::str::from_utf8(&b.0).ok())
        .context("rogue CA has no ca.crt")?;
    let ca_fingerprint = modelpub_operator::identity::certificate_fingerprint("rogue CA", ca_pem)?;
    let token = JoinToken::issue(
        &identity,
        &TokenFacts {
            federation: FEDERATION,
            endpoint: "https://rogue-c.example:7443",
            ca_certificate: ca_pem,
            ca_fingerprint: &ca_fingerprint,
            expires: jiff::Timestamp::now().as_second() - 3600,
        },
    );
    Ok(token.encode())
}

/// The join token the rogue cluster's operator publishes for `rogue-d` in
/// the federation `oncology`.
async fn foreign_token(rogue: &Cluster) -> anyhow::Result<String> {
    let td = rogue_domain(rogue, "oncology", "oncology", "rogue-d").await?;
    td.status.and_then(|s| s.join_token).context("no token")
}
