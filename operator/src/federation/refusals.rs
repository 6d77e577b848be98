//! Who the federation endpoint turned away, per TrustDomain, kept in
//! memory until the TrustDomain controller writes them into
//! `status.refusedPeers` (the newest [`KEPT`]). Each refusal also raises
//! a Warning Event at once; the Events outlive an operator restart, this
//! list does not.

use std::collections::BTreeMap;
use std::sync::Mutex;

use modelpub_crds::condition::Time;
use modelpub_crds::trust_domain::RefusedPeer;

/// How many refusals a TrustDomain's status keeps (its `maxItems`).
pub const KEPT: usize = 20;

pub const UNKNOWN_CA: &str = "UnknownCertificateAuthority";
pub const NOT_A_MEMBER: &str = "NotAMember";
pub const SIGNATURE_MISMATCH: &str = "SignatureMismatch";
pub const BAD_REQUEST: &str = "BadRequest";

/// Refusals keyed by `namespace/trust-domain`, newest first; one entry per
/// (name, reason), its time and message updated when it happens again.
#[derive(Debug, Default)]
pub struct Refusals {
    by_domain: Mutex<BTreeMap<String, Vec<RefusedPeer>>>,
}

fn key(namespace: &str, trust_domain: &str) -> String {
    format!("{namespace}/{trust_domain}")
}

impl Refusals {
    pub fn record(&self, namespace: &str, trust_domain: &str, refused: RefusedPeer) {
        let mut all = self.by_domain.lock().unwrap_or_else(|p| p.into_inner());
        let list = all.entry(key(namespace, trust_domain)).or_default();
        list.retain(|r| !(r.name == refused.name && r.reason == refused.reason));
        list.insert(0, refused);
        list.truncate(KEPT);
    }

    /// The refusals of one TrustDomain, newest first.
    pub fn of(&self, namespace: &str, trust_domain: &str) -> Vec<RefusedPeer> {
        let all = self.by_domain.lock().unwrap_or_else(|p| p.into_inner());
        all.get(&key(namespace, trust_domain))
            .cloned()
            .unwrap_or_default()
    }
}

/// A refusal record at `now`.
pub fn refused(
    name: &str,
    reason: &str,
    message: impl Into<String>,
    address: Option<String>,
    certificate_sha256: Option<String>,
    now: Time,
) -> RefusedPeer {
    RefusedPeer {
        name: name.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        address,
        certificate_sha256,
        last_refused_time: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Time {
        Time(jiff::Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn the_same_refusal_again_moves_to_the_front_and_the_list_is_bounded() {
        let r = Refusals::default();
        r.record(
            "ns",
            "td",
            refused("rogue", UNKNOWN_CA, "x", None, None, at(1)),
        );
        r.record(
            "ns",
            "td",
            refused("b", SIGNATURE_MISMATCH, "y", None, None, at(2)),
        );
        r.record(
            "ns",
            "td",
            refused("rogue", UNKNOWN_CA, "x", None, None, at(3)),
        );
        let list = r.of("ns", "td");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name, "rogue");
        assert_eq!(list[0].last_refused_time, at(3));
        assert!(r.of("ns", "other").is_empty());
        for i in 0..30 {
            r.record(
                "ns",
                "td",
                refused(&format!("p{i}"), BAD_REQUEST, "z", None, None, at(i)),
            );
        }
        assert_eq!(r.of("ns", "td").len(), KEPT);
        assert_eq!(r.of("ns", "td")[0].name, "p29");
    }
}
