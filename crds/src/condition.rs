//! Status conditions shared by every ModelPub resource: the standard
//! `metav1.Condition`, the condition types ModelPub sets, and a helper that
//! updates a condition list the way Kubernetes controllers are expected to
//! (one entry per type, `lastTransitionTime` only moves when `status` does).

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::{Schema, SchemaGenerator, json_schema};

/// The resource is in the state its spec asks for.
pub const READY: &str = "Ready";
/// The spec was accepted: references resolve and policy allows it.
pub const ACCEPTED: &str = "Accepted";
/// A FederationRound's aggregator and participants are running.
pub const PROGRESSING: &str = "Progressing";
/// A FederationRound finished all its rounds.
pub const COMPLETE: &str = "Complete";
/// A FederationRound stopped before finishing.
pub const FAILED: &str = "Failed";
/// A ComputeOffer is inside one of its schedule windows with budget left.
pub const OPEN: &str = "Open";

/// `status` values of a condition.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == TRUE)
}

/// Inserts or replaces the condition of `new.type_`. When the status does
/// not change, the existing `lastTransitionTime` is kept, because that field
/// records when the status last flipped, not when we last looked.
/// Returns true when anything changed (so callers can skip a status patch).
pub fn upsert(conditions: &mut Vec<Condition>, new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => {
            conditions.push(new);
            true
        }
        Some(old) => {
            let transition = if old.status == new.status {
                old.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            let updated = Condition {
                last_transition_time: transition,
                ..new
            };
            if *old == updated {
                false
            } else {
                *old = updated;
                true
            }
        }
    }
}

/// Builds a condition observed at `generation`, stamped `now`.
pub fn new_condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { TRUE } else { FALSE }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now,
    }
}

/// Schema of a `conditions` list: the `metav1.Condition` schema with the
/// validation upstream CRDs carry (`status` enum, `reason` and `type`
/// patterns, length limits), map-keyed by `type` so server-side apply merges
/// conditions by type. k8s-openapi's own schema for `Condition` has no
/// validation at all, hence this one.
pub fn conditions_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "maxItems": 32,
        "items": {
            "type": "object",
            "description": "One aspect of the resource's state (metav1.Condition).",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {
                    "type": "string",
                    "format": "date-time",
                    "description": "When the condition last changed status."
                },
                "message": {
                    "type": "string",
                    "maxLength": 32768,
                    "description": "What happened, in words; may be empty."
                },
                "observedGeneration": {
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0,
                    "description": "The metadata.generation the condition was set for."
                },
                "reason": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1024,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                    "description": "Why, as a CamelCase identifier, e.g. MembersUnreachable."
                },
                "status": {
                    "type": "string",
                    "enum": ["True", "False", "Unknown"],
                    "description": "True, False or Unknown."
                },
                "type": {
                    "type": "string",
                    "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
                    "description": "The condition type in CamelCase, e.g. Ready."
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn upsert_keeps_transition_time_while_status_is_unchanged() {
        let mut list = Vec::new();
        assert!(upsert(
            &mut list,
            new_condition(READY, false, "Waiting", "a", Some(1), at(10))
        ));
        assert!(upsert(
            &mut list,
            new_condition(READY, false, "Waiting", "b", Some(2), at(20))
        ));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].last_transition_time, at(10));
        assert_eq!(list[0].message, "b");
        assert!(!upsert(
            &mut list,
            new_condition(READY, false, "Waiting", "b", Some(2), at(30))
        ));
        assert!(upsert(
            &mut list,
            new_condition(READY, true, "Done", "c", Some(2), at(40))
        ));
        assert_eq!(list[0].last_transition_time, at(40));
        assert!(is_true(&list, READY));
        assert!(!is_true(&list, COMPLETE));
    }
}
