//! A member probe with canned answers, so TrustDomain scenarios need no
//! network.

use std::collections::BTreeMap;

use futures::future::BoxFuture;

use crate::controllers::trust_domain::peers::Peer;
use crate::controllers::trust_domain::probe::{MemberProbe, ProbeOutcome};
use crate::federation::domain::LocalDomain;

/// Answers from a table keyed by endpoint; endpoints not in the table are
/// reachable with message `connected` when `default_reachable`, else
/// unreachable with `connection refused`.
#[derive(Debug, Clone, Default)]
pub struct FakeProbe {
    pub answers: BTreeMap<String, ProbeOutcome>,
    pub default_reachable: bool,
}

impl FakeProbe {
    pub fn all_reachable() -> Self {
        Self {
            answers: BTreeMap::new(),
            default_reachable: true,
        }
    }

    /// `endpoint` answers `outcome`.
    pub fn with(mut self, endpoint: &str, outcome: ProbeOutcome) -> Self {
        self.answers.insert(endpoint.to_string(), outcome);
        self
    }
}

impl MemberProbe for FakeProbe {
    fn probe<'a>(&'a self, _us: &'a LocalDomain, member: &'a Peer) -> BoxFuture<'a, ProbeOutcome> {
        let outcome = self
            .answers
            .get(&member.endpoint)
            .cloned()
            .unwrap_or_else(|| {
                if self.default_reachable {
                    ProbeOutcome::reachable("connected")
                } else {
                    ProbeOutcome::unreachable("connection refused")
                }
            });
        Box::pin(async move { outcome })
    }
}
