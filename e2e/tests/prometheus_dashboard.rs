//! The Grafana dashboard against a real Prometheus: Prometheus (the Debian
//! package) scrapes a `modelpub simulate` aggregator (`--metrics-addr`), its
//! participants (`--participant-metrics-from`) and the operator's metrics
//! server every second, and every query on every
//! dashboard panel must return data over the run's time window.
//!
//! The operator side is `modelpub_operator::telemetry` served in-process,
//! recording reconciles through its API while the run goes on (the operator
//! binary's reconcilers are exercised by their own suites).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use modelpub_e2e::prometheus::{Job, Prometheus, finite_values, free_port};
use modelpub_e2e::{modelpub_bin, read_json};
use modelpub_operator::telemetry::{Metrics, Readiness, TelemetryServer};

const FEDERATION: &str = "modelpub-simulate";
const ROUNDS: u32 = 6;
/// Grafana's `$__rate_interval` for a 1 s scrape interval: 4 x the interval.
const RATE_INTERVAL: &str = "4s";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Every (panel title, expression) on the dashboard, rows included.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/modelpub-dashboard.json"
    );
    let dashboard = read_json(std::path::Path::new(path));
    let mut panels: Vec<&serde_json::Value> = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        panels.push(p);
        if let Some(nested) = p["panels"].as_array() {
            panels.extend(nested);
        }
    }
    let queries: Vec<(String, String)> = panels
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("(untitled)").to_string();
            p["targets"].as_array().into_iter().flatten().map(move |t| {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel `{title}` has a target without an expr: {t}"));
                (title.clone(), expr.to_string())
            })
        })
        .collect();
    assert!(queries.len() >= 10, "the dashboard has too few queries");
    queries
}

/// Grafana's variables as it would fill them for this run.
fn substitute(expr: &str, range_secs: u64) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__range", &format!("{range_secs}s"))
        .replace("${federation}", FEDERATION)
        .replace("$federation", FEDERATION)
        // "All", as Grafana's allValue: simulate's metrics carry no
        // namespace label, which `=~".*"` matches.
        .replace("${namespace}", ".*")
        .replace("$namespace", ".*")
}

/// `n` consecutive free loopback ports, the first returned.
fn free_ports(n: u16) -> u16 {
    for _ in 0..100 {
        let first = free_port();
        if first.checked_add(n).is_none() {
            continue;
        }
        let held: Vec<_> = (first..first + n)
            .map_while(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return first;
        }
    }
    panic!("no {n} consecutive free loopback ports")
}

/// Rounds of one name in two namespaces must not merge: every query on a
/// round's or participant's metrics filters by the dashboard's namespace,
/// and an aggregation by federation or party keeps the namespace.
#[test]
fn federation_and_participant_queries_keep_namespaces_apart() {
    for (title, expr) in dashboard_queries() {
        if expr.contains("modelpub_reconcile_") {
            continue;
        }
        assert!(
            expr.contains(r#"namespace=~"$namespace""#),
            "panel `{title}`: `{expr}` does not filter by $namespace"
        );
        for by in expr.split("by (").skip(1) {
            let labels = by.split(')').next().unwrap_or("");
            if labels.contains("federation") || labels.contains("party") {
                assert!(
                    labels.contains("namespace"),
                    "panel `{title}`: `by ({labels})` merges namespaces"
                );
            }
        }
    }
}

/// The operator's metrics server, in-process, with reconciles recorded
/// every few milliseconds (a quarter of them failing) until `stop`.
fn operator_metrics(stop: Arc<AtomicBool>) -> (String, std::thread::JoinHandle<()>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::new(&mut registry);
    let readiness = Readiness::default();
    let addr = runtime
        .block_on(TelemetryServer::new(registry, readiness.clone()).spawn("127.0.0.1:0"))
        .expect("operator metrics server");
    readiness.set_ready();
    let recorder = std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for controller in ["trustdomain", "computeoffer", "federationround"] {
                let run = metrics.reconcile_started(controller);
                std::thread::sleep(Duration::from_millis(3));
                if n.is_multiple_of(4) {
                    run.failed("apply");
                }
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        // The server lives as long as its runtime.
        drop(runtime);
    });
    (addr.to_string(), recorder)
}

fn get_status(agent: &ureq::Agent, addr: &str) -> Option<serde_json::Value> {
    let mut r = agent.get(format!("http://{addr}/status")).call().ok()?;
    serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let queries = dashboard_queries();
    let tmp = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (operator_addr, recorder) = operator_metrics(stop.clone());
    let aggregator_addr = format!("127.0.0.1:{}", free_port());
    let institutions: u16 = 3;
    let first_participant = free_ports(institutions);
    let participant_addrs: Vec<String> = (0..institutions)
        .map(|i| format!("127.0.0.1:{}", first_participant + i))
        .collect();
    let prometheus = Prometheus::start(
        tmp.path(),
        &[
            Job {
                name: "modelpub-aggregator".into(),
                targets: vec![aggregator_addr.clone()],
            },
            Job {
                name: "modelpub-operator".into(),
                targets: vec![operator_addr.clone()],
            },
            Job {
                name: "modelpub-participants".into(),
                targets: participant_addrs.clone(),
            },
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Prometheus applies discovered targets at most every 5 s, so its
    // first scrape comes seconds after it is ready; a run started before
    // that could be over before the aggregator is scraped twice, and every
    // rate()/increase() panel would be empty (seen: 1 run in 3 on an idle
    // machine). Start the run once the operator target, already serving,
    // has been scraped.
    let waiting_since = now();
    loop {
        let t = now();
        let scraped = prometheus
            .query_range(r#"up{job="modelpub-operator"} == 1"#, waiting_since, t, 1.0)
            .unwrap_or_else(|e| panic!("{e}"));
        if !finite_values(&scraped).is_empty() {
            break;
        }
        assert!(
            t - waiting_since < 30.0,
            "Prometheus scraped nothing within 30 s; its log:\n{}",
            prometheus.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let start = now();
    let out = tmp.path().join("run");
    let rounds = ROUNDS.to_string();
    let mut simulate = std::process::Command::new(modelpub_bin())
        .args([
            "simulate",
            "--rounds",
            &rounds,
            "--skip-local-only",
            // ε is on the dashboard: spend some.
            "--dp-epsilon",
            "50",
            "--metrics-addr",
            &aggregator_addr,
            "--institutions",
            &institutions.to_string(),
            "--participant-metrics-from",
            &participant_addrs[0],
            "--out",
        ])
        .arg(&out)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start modelpub simulate");
    // The operator's view: /status while the run goes on.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let mut statuses = Vec::new();
    while simulate.try_wait().expect("poll simulate").is_none() {
        if let Some(s) = get_status(&agent, &aggregator_addr) {
            statuses.push(s);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let output = simulate.wait_with_output().expect("simulate output");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "simulate failed:\n{log}");
    // One more scrape of the operator after the run, then stop recording.
    std::thread::sleep(Duration::from_secs(2));
    let end = now();
    stop.store(true, Ordering::Relaxed);
    recorder.join().expect("reconcile recorder");

    let running = statuses
        .iter()
        .find(|s| s["phase"] == "Running")
        .unwrap_or_else(|| panic!("/status never said Running; it said: {statuses:?}"));
    assert_eq!(running["federation"], FEDERATION);
    assert_eq!(running["total_rounds"], ROUNDS);
    let last = statuses.last().expect("a status");
    assert!(
        !last["rounds"].as_array().expect("rounds").is_empty(),
        "/status listed no round: {last}"
    );

    let up = prometheus
        .query_range(r#"up{job="modelpub-aggregator"} == 1"#, start, end, 1.0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !finite_values(&up).is_empty(),
        "Prometheus never scraped the aggregator at {aggregator_addr}; its log:\n{}",
        prometheus.log_text()
    );

    let range_secs = (end - start).ceil() as u64;
    let mut failures = Vec::new();
    for (title, expr) in &queries {
        let query = substitute(expr, range_secs);
        match prometheus.query_range(&query, start, end, 1.0) {
            Ok(result) if finite_values(&result).is_empty() => failures.push(format!(
                "panel `{title}`: no data for `{query}` (result: {})",
                serde_json::Value::Array(result)
            )),
            Ok(_) => {}
            Err(e) => failures.push(format!("panel `{title}`: `{query}` failed: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries returned no data over the run ({range_secs} s):\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
}

#[test]
fn substitution_leaves_no_grafana_variable_behind() {
    for (title, expr) in dashboard_queries() {
        let query = substitute(&expr, 60);
        assert!(
            !query.contains('$'),
            "panel `{title}`: `{query}` still has a variable this suite does not fill"
        );
    }
}
