//! The ComputeOffer status, built purely from the offer, the capacity its
//! nodes report and the schedule at this instant: capacity, `openNow`,
//! why not when not (`reason`), when that changes (`nextChangeTime`), and
//! the `Ready` (trust domain found, enough capacity) and `Open` conditions.

use modelpub_crds::condition::{self, Time};
use modelpub_crds::{ComputeOffer, ComputeOfferStatus};

use super::capacity::Seen;
use super::schedule::OpenState;
use super::validate::ValidOffer;
use crate::error::SpecErrors;
use crate::labels::selector_from_map;

/// What the offer asks for that the nodes do not have, one sentence each.
pub fn shortfalls(co: &ComputeOffer, valid: &ValidOffer, seen: &Seen) -> Vec<String> {
    let nodes = match selector_from_map(&co.spec.resources.node_selector) {
        Some(sel) => format!("nodes matching {sel}"),
        None => "nodes".to_string(),
    };
    let mut out = Vec::new();
    let want = co.spec.resources.gpus;
    if want > seen.capacity.gpus {
        out.push(format!(
            "offer asks for {want} GPUs but {nodes} report {} allocatable",
            seen.capacity.gpus
        ));
    }
    let show = |q: &Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        q.as_ref().map(|q| q.0.clone()).unwrap_or_default()
    };
    if valid.cpu_milli.is_some_and(|c| c > seen.cpu_milli) {
        out.push(format!(
            "offer asks for {} CPU but {nodes} report {} allocatable",
            show(&co.spec.resources.cpu),
            show(&seen.capacity.cpu)
        ));
    }
    if valid.memory_milli.is_some_and(|m| m > seen.memory_milli) {
        out.push(format!(
            "offer asks for {} memory but {nodes} report {} allocatable",
            show(&co.spec.resources.memory),
            show(&seen.capacity.memory)
        ));
    }
    out
}

/// Status after a successful look at nodes and schedule.
pub fn observed(
    co: &ComputeOffer,
    valid: &ValidOffer,
    seen: &Seen,
    schedule: &OpenState,
    now: Time,
) -> ComputeOfferStatus {
    let generation = co.metadata.generation;
    let mut status = co.status.clone().unwrap_or_default();
    let short = shortfalls(co, valid, seen);
    status.capacity = Some(seen.capacity.clone());
    status.open_now = schedule.open && short.is_empty();
    status.next_change_time = schedule.next_change.map(Time);
    let (open_reason, why_closed) = match (short.is_empty(), schedule.open) {
        (true, true) => ("Open", None),
        (true, false) => ("OutsideWindow", Some(schedule.reason.clone())),
        (false, true) => ("NoCapacity", Some(short.join("; "))),
        (false, false) => (
            "NoCapacity",
            Some(format!("{}; {}", short.join("; "), schedule.reason)),
        ),
    };
    status.reason = why_closed.clone();
    let ready = if short.is_empty() {
        let cordoned = match seen.cordoned {
            0 => String::new(),
            n => format!(" ({n} cordoned left out)"),
        };
        condition::new_condition(
            condition::READY,
            true,
            "CapacityAvailable",
            format!(
                "trust domain {} found; {} nodes report {} allocatable GPUs{cordoned}",
                co.spec.trust_domain, seen.capacity.nodes, seen.capacity.gpus
            ),
            generation,
            now.clone(),
        )
    } else {
        condition::new_condition(
            condition::READY,
            false,
            "InsufficientCapacity",
            short.join("; "),
            generation,
            now.clone(),
        )
    };
    condition::upsert(&mut status.conditions, ready);
    condition::upsert(
        &mut status.conditions,
        condition::new_condition(
            condition::OPEN,
            status.open_now,
            open_reason,
            why_closed.unwrap_or_else(|| schedule.reason.clone()),
            generation,
            now,
        ),
    );
    status.observed_generation = generation;
    status
}

/// Status when the offer cannot be evaluated: closed, `Ready=False` with
/// `reason` (`InvalidSpec`, `TrustDomainNotFound`) and `message`.
pub fn not_ready(
    co: &ComputeOffer,
    reason: &str,
    message: String,
    now: Time,
) -> ComputeOfferStatus {
    let generation = co.metadata.generation;
    let mut status = co.status.clone().unwrap_or_default();
    status.open_now = false;
    status.reason = Some(message.clone());
    status.next_change_time = None;
    condition::upsert(
        &mut status.conditions,
        condition::new_condition(
            condition::READY,
            false,
            reason,
            message.clone(),
            generation,
            now.clone(),
        ),
    );
    condition::upsert(
        &mut status.conditions,
        condition::new_condition(condition::OPEN, false, reason, message, generation, now),
    );
    status.observed_generation = generation;
    status
}

/// [`not_ready`] for an invalid spec, naming every bad field.
pub fn invalid(co: &ComputeOffer, errors: &SpecErrors, now: Time) -> ComputeOfferStatus {
    not_ready(co, "InvalidSpec", errors.to_string(), now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::compute_offer::capacity::capacity;
    use crate::controllers::compute_offer::tests::{node, offer};
    use crate::controllers::compute_offer::validate::validate;
    use jiff::Timestamp;

    fn now() -> Time {
        Time(Timestamp::from_second(1_000).unwrap())
    }

    fn open() -> OpenState {
        OpenState {
            open: true,
            reason: "inside schedule: open until Tuesday 08:00 UTC".into(),
            next_change: Some(Timestamp::from_second(5_000).unwrap()),
        }
    }

    fn cond<'a>(s: &'a ComputeOfferStatus, t: &str) -> (&'a str, &'a str, &'a str) {
        let c = condition::find(&s.conditions, t).unwrap();
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    #[test]
    fn open_when_inside_a_window_with_the_gpus() {
        let co = offer();
        let v = validate(&co.spec).unwrap();
        let s = observed(
            &co,
            &v,
            &capacity(&[node("a", 2, "8", "32Gi"), node("b", 2, "8", "32Gi")]),
            &open(),
            now(),
        );
        assert!(s.open_now);
        assert_eq!(s.reason, None);
        assert_eq!(s.capacity.as_ref().unwrap().gpus, 4);
        assert_eq!(
            s.next_change_time,
            Some(Time(Timestamp::from_second(5_000).unwrap()))
        );
        assert_eq!(cond(&s, "Ready").0, "True");
        assert_eq!(
            cond(&s, "Open"),
            (
                "True",
                "Open",
                "inside schedule: open until Tuesday 08:00 UTC"
            )
        );
        assert_eq!(s.observed_generation, Some(2));
    }

    #[test]
    fn closed_when_nodes_lack_gpus_and_says_so() {
        let mut co = offer();
        co.spec.resources.node_selector = [("gpu".to_string(), "a100".to_string())].into();
        let v = validate(&co.spec).unwrap();
        let s = observed(
            &co,
            &v,
            &capacity(&[node("a", 2, "8", "32Gi")]),
            &open(),
            now(),
        );
        assert!(!s.open_now);
        let why = "offer asks for 4 GPUs but nodes matching gpu=a100 report 2 allocatable";
        assert_eq!(s.reason.as_deref(), Some(why));
        assert_eq!(cond(&s, "Ready"), ("False", "InsufficientCapacity", why));
        assert_eq!(cond(&s, "Open"), ("False", "NoCapacity", why));
    }

    #[test]
    fn cpu_and_memory_shortfalls_are_named() {
        let mut co = offer();
        co.spec.resources.gpus = 0;
        co.spec.resources.cpu = Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
            "16".into(),
        ));
        co.spec.resources.memory = Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
            "64Gi".into(),
        ));
        let v = validate(&co.spec).unwrap();
        let short = shortfalls(&co, &v, &capacity(&[node("a", 0, "8", "32Gi")]));
        assert_eq!(
            short,
            [
                "offer asks for 16 CPU but nodes report 8 allocatable",
                "offer asks for 64Gi memory but nodes report 32Gi allocatable"
            ]
        );
    }

    #[test]
    fn invalid_spec_closes_the_offer_naming_the_field() {
        let co = offer();
        let errors = SpecErrors(vec![crate::error::FieldError::new(
            "spec.schedule.windows[0].timezone",
            "bad",
        )]);
        let s = invalid(&co, &errors, now());
        assert!(!s.open_now);
        assert_eq!(
            cond(&s, "Ready"),
            (
                "False",
                "InvalidSpec",
                "spec.schedule.windows[0].timezone: bad"
            )
        );
    }
}
