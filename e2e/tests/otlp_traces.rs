//! Traces over OTLP from the built binary: `modelpub simulate` with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a small OTLP/gRPC collector
//! this test runs on loopback. Every process of the federation (the
//! aggregator and each institution) exports its round spans there.

use std::collections::BTreeSet;

use modelpub_e2e::{modelpub_bin, text};
use modelpub_telemetry::test_collector::{Collector, attribute};
use opentelemetry_proto::tonic::trace::v1::Span;

#[test]
fn every_party_exports_its_round_spans() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (collector, addr) = Collector::start(&runtime).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(modelpub_bin())
        .args(["simulate", "--rounds", "2", "--skip-local-only", "--out"])
        .arg(tmp.path().join("run"))
        .env("RUST_LOG", "info")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
        .output()
        .expect("run modelpub simulate");
    assert!(run.status.success(), "simulate failed:\n{}", text(&run));

    let spans: Vec<Span> = collector.spans().into_iter().map(|r| r.span).collect();
    let rounds: Vec<&Span> = spans.iter().filter(|s| s.name == "round").collect();
    let aggregator: BTreeSet<String> = rounds
        .iter()
        .filter(|s| attribute(s, "participant").is_none())
        .filter_map(|s| attribute(s, "round"))
        .collect();
    assert_eq!(
        aggregator,
        BTreeSet::from(["1".to_string(), "2".to_string()]),
        "the aggregator's round spans; all spans: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let institutions: BTreeSet<String> = rounds
        .iter()
        .filter_map(|s| attribute(s, "participant"))
        .collect();
    assert_eq!(
        institutions,
        BTreeSet::from(["inst-0".into(), "inst-1".into(), "inst-2".into()]),
        "every institution's round spans"
    );
    assert!(
        rounds
            .iter()
            .all(|s| attribute(s, "federation").as_deref() == Some("modelpub-simulate")),
        "round spans name their federation"
    );
}
