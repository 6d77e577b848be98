//! The operator's error type and its retry policy.
//!
//! Every variant says what was being done and on which object, so a
//! Warning Event or log line is enough to act on. [`Error::reason`] is the
//! small fixed label set of `modelpub_reconcile_errors_total{reason}`;
//! [`Error::event_reason`] is the CamelCase reason of the Warning Event.
//! Failed reconciles are retried with per-object exponential backoff
//! ([`Backoff`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use kube::runtime::finalizer;

/// One problem in a resource's spec, naming the field as a JSON path such
/// as `spec.members[1].endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in a spec (validation reports them all at once, so
/// a user fixes them in one edit). Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<FieldError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for SpecErrors {}

impl SpecErrors {
    /// `Ok(())` when `errors` is empty, otherwise the errors.
    pub fn check(errors: Vec<FieldError>) -> Result<(), SpecErrors> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SpecErrors(errors))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API request failed. `action` names the request and the
    /// object, e.g. `create Secret default/td-identity`.
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The spec cannot be acted on; the user must change it.
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] SpecErrors),
    /// An object the spec refers to does not exist (yet), e.g. the
    /// TrustDomain a ComputeOffer names.
    #[error("{0}")]
    MissingReference(String),
    /// Key material in a Secret is missing or unreadable, or issuing a
    /// certificate failed. `what` names the Secret or the party.
    #[error("{what}: {message}")]
    Identity { what: String, message: String },
    /// Adding or removing the finalizer failed, or the wrapped reconcile
    /// failed (then the inner error is the cause).
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// A mapper for `map_err` on API calls:
    /// `api.get(name).await.map_err(Error::kube(format!("get Secret {ns}/{name}")))`.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube {
            action,
            source: Box::new(source),
        }
    }

    /// An identity/certificate error about `what` (a Secret, a party).
    pub fn identity(what: impl Into<String>, message: impl fmt::Display) -> Error {
        Error::Identity {
            what: what.into(),
            message: message.to_string(),
        }
    }

    /// Metric label (`modelpub_reconcile_errors_total{reason}`): one of
    /// `kube_api`, `invalid_spec`, `missing_reference`, `identity`,
    /// `finalizer`. The wrapped error's reason when a finalizer-wrapped
    /// reconcile failed.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube_api",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::MissingReference(_) => "missing_reference",
            Error::Identity { .. } => "identity",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.reason(),
                _ => "finalizer",
            },
        }
    }

    /// The `reason` of the Warning Event published for this error.
    pub fn event_reason(&self) -> &'static str {
        match self.reason() {
            "kube_api" => "ApiError",
            "invalid_spec" => "InvalidSpec",
            "missing_reference" => "MissingReference",
            "identity" => "IdentityError",
            _ => "FinalizerError",
        }
    }

    /// The innermost error of our own (unwraps the finalizer wrapper).
    pub fn root(&self) -> &Error {
        match self {
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.root(),
                _ => self,
            },
            other => other,
        }
    }
}

impl From<finalizer::Error<Error>> for Error {
    fn from(e: finalizer::Error<Error>) -> Self {
        Error::Finalizer(Box::new(e))
    }
}

/// True when the API answered 404 Not Found.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// True when the API answered 409 Conflict / AlreadyExists.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Per-object exponential backoff for failed reconciles: `base`, 2×base,
/// 4×base, … capped at `max`, each delay stretched by a random 0–100% so
/// objects that failed together (an API server outage) do not all retry
/// in the same second. A success resets the object. Keyed by a string such
/// as `namespace/name` so the three controllers can share one. The delays
/// come from `backon` (the retry crate kube-runtime itself uses), one
/// iterator per failing object.
#[derive(Debug)]
pub struct Backoff {
    schedule: ExponentialBuilder,
    max: Duration,
    failures: Mutex<HashMap<String, ExponentialBackoff>>,
}

impl Default for Backoff {
    /// 5 s doubling to at most 5 min, with jitter.
    fn default() -> Self {
        Self::new(Duration::from_secs(5), Duration::from_secs(300))
    }
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self::exact(base, max).jittered()
    }

    /// The same schedule without jitter: `base`, 2×base, … exactly, for
    /// scenario tests that assert the requeue delay.
    pub fn exact(base: Duration, max: Duration) -> Self {
        Self {
            schedule: ExponentialBuilder::default()
                .with_min_delay(base)
                .with_max_delay(max)
                .with_factor(2.0)
                .without_max_times(),
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn jittered(mut self) -> Self {
        self.schedule = self.schedule.with_jitter();
        self
    }

    /// Records a failure of `key` and returns how long to wait before the
    /// next attempt: between the exponential delay and twice it.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures
            .entry(key.to_string())
            .or_insert_with(|| self.schedule.build())
            .next()
            // `without_max_times`: the schedule never ends; the cap is the
            // answer should it ever.
            .unwrap_or(self.max)
    }

    /// Forgets `key`'s failures after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("boom", "Reason").with_code(code),
        ))
    }

    /// Each delay lies between the exponential step and twice it.
    fn within(delay: Duration, step: u64) -> bool {
        delay >= Duration::from_secs(step) && delay < Duration::from_secs(2 * step)
    }

    #[test]
    fn backoff_doubles_per_object_caps_and_resets() {
        let b = Backoff::new(Duration::from_secs(5), Duration::from_secs(30));
        for step in [5, 10, 20, 30, 30] {
            let delay = b.failed("ns/a");
            assert!(within(delay, step), "{delay:?} for step {step} s");
        }
        assert!(
            within(b.failed("ns/b"), 5),
            "objects back off independently"
        );
        b.succeeded("ns/a");
        assert!(within(b.failed("ns/a"), 5), "a success resets");
    }

    #[test]
    fn the_exact_schedule_doubles_without_jitter() {
        let b = Backoff::exact(Duration::from_secs(5), Duration::from_secs(30));
        let delays: Vec<u64> = (0..5).map(|_| b.failed("ns/a").as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 30, 30]);
    }

    #[test]
    fn objects_failing_together_do_not_retry_together() {
        let b = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
        let first: std::collections::BTreeSet<Duration> =
            (0..20).map(|i| b.failed(&format!("ns/o{i}"))).collect();
        assert!(first.len() > 10, "jitter spreads retries: {first:?}");
    }

    #[test]
    fn reasons_are_a_small_fixed_set_and_see_through_the_finalizer() {
        let kube = Error::kube("get Secret default/x")(api_error(500));
        assert_eq!(kube.reason(), "kube_api");
        assert_eq!(
            kube.to_string().split(':').next(),
            Some("get Secret default/x")
        );
        let spec = Error::from(SpecErrors(vec![FieldError::new("spec.self.name", "empty")]));
        assert_eq!(spec.to_string(), "invalid spec: spec.self.name: empty");
        let wrapped = Error::from(finalizer::Error::ApplyFailed(spec));
        assert_eq!(wrapped.reason(), "invalid_spec");
        assert_eq!(wrapped.event_reason(), "InvalidSpec");
        assert!(matches!(wrapped.root(), Error::InvalidSpec(_)));
        let add = Error::from(finalizer::Error::<Error>::AddFinalizer(api_error(409)));
        assert_eq!(add.reason(), "finalizer");
        assert!(is_conflict(&api_error(409)) && is_not_found(&api_error(404)));
        assert!(!is_not_found(&api_error(409)));
    }
}
