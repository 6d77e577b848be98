//! Reconcile metrics, one series per controller:
//! `modelpub_reconcile_runs_total{controller}`,
//! `modelpub_reconcile_errors_total{controller,reason}` and
//! `modelpub_reconcile_duration_seconds{controller}`.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: String,
    reason: String,
}

/// A reconcile takes milliseconds (nothing to change) to tens of seconds
/// (slow API server): 1 ms .. ~33 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The operator's reconcile metrics. Cheap to clone: every clone records
/// into the same families.
#[derive(Clone)]
pub struct Metrics {
    runs: Family<ControllerLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            runs: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
        };
        registry.register(
            "modelpub_reconcile_runs",
            "Reconciles started, by controller",
            m.runs.clone(),
        );
        registry.register(
            "modelpub_reconcile_errors",
            "Reconciles that ended in an error, by controller and reason",
            m.errors.clone(),
        );
        registry.register_with_unit(
            "modelpub_reconcile_duration",
            "Wall time of one reconcile, by controller",
            Unit::Seconds,
            m.duration.clone(),
        );
        m
    }

    /// Creates the controller's run counter at zero, so rates have a series
    /// before its first reconcile.
    pub fn register_controller(&self, controller: &str) {
        drop(self.runs.get_or_create(&labels(controller)));
    }

    /// Counts a reconcile of `controller` and times it: the duration is
    /// observed when the returned run is dropped, however the reconcile ends.
    pub fn reconcile_started(&self, controller: &str) -> ReconcileRun {
        let labels = labels(controller);
        self.runs.get_or_create(&labels).inc();
        ReconcileRun {
            duration: self.duration.get_or_create_owned(&labels),
            errors: self.errors.clone(),
            controller: controller.to_string(),
            started: Instant::now(),
        }
    }
}

fn labels(controller: &str) -> ControllerLabels {
    ControllerLabels {
        controller: controller.to_string(),
    }
}

/// One reconcile in progress; see [`Metrics::reconcile_started`].
pub struct ReconcileRun {
    duration: Histogram,
    errors: Family<ErrorLabels, Counter>,
    controller: String,
    started: Instant,
}

impl ReconcileRun {
    /// The reconcile failed. `reason` is a label value, so it must come from
    /// a small fixed set (an error kind such as `"apply"`, `"invalid_spec"`),
    /// never a message with names or numbers in it.
    pub fn failed(&self, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller: self.controller.clone(),
                reason: reason.to_string(),
            })
            .inc();
    }
}

impl Drop for ReconcileRun {
    fn drop(&mut self) {
        self.duration.observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    fn has_line(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "no line `{line}` in:\n{text}"
        );
    }

    #[test]
    fn runs_errors_and_durations_render_with_agreed_names() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.register_controller("trustdomain");
        {
            let _ok = metrics.reconcile_started("federationround");
        }
        {
            let run = metrics.reconcile_started("federationround");
            run.failed("apply");
        }
        let text = render(&registry);
        has_line(
            &text,
            r#"modelpub_reconcile_runs_total{controller="trustdomain"} 0"#,
        );
        has_line(
            &text,
            r#"modelpub_reconcile_runs_total{controller="federationround"} 2"#,
        );
        has_line(
            &text,
            r#"modelpub_reconcile_errors_total{controller="federationround",reason="apply"} 1"#,
        );
        has_line(
            &text,
            r#"modelpub_reconcile_duration_seconds_count{controller="federationround"} 2"#,
        );
        has_line(
            &text,
            "# TYPE modelpub_reconcile_duration_seconds histogram",
        );
    }

    #[test]
    fn the_duration_is_observed_when_the_run_ends_not_before() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let run = metrics.reconcile_started("computeoffer");
        let line = r#"modelpub_reconcile_duration_seconds_count{controller="computeoffer"}"#;
        has_line(&render(&registry), &format!("{line} 0"));
        std::thread::sleep(std::time::Duration::from_millis(5));
        drop(run);
        let text = render(&registry);
        has_line(&text, &format!("{line} 1"));
        let sum: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    r#"modelpub_reconcile_duration_seconds_sum{controller="computeoffer"} "#,
                )
            })
            .expect("a sum line")
            .parse()
            .unwrap();
        assert!(sum >= 0.005, "observed {sum} s for a 5 ms reconcile");
    }
}
