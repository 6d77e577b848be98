//! ComputeOffer validation beyond the CRD schema: schedule windows parse
//! (times, a real IANA time zone), quantities parse, the lease duration is
//! positive. Pure; every problem names its field. Returns the parsed
//! windows so the schedule is evaluated from what was checked.

use modelpub_crds::ComputeOfferSpec;

use super::schedule::{ParsedWindow, parse_window};
use crate::error::{FieldError, SpecErrors};
use crate::quantity::parse_milli;

/// What a valid spec yields for the reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidOffer {
    pub windows: Vec<ParsedWindow>,
    /// Requested CPU and memory in thousandths, when set.
    pub cpu_milli: Option<i128>,
    pub memory_milli: Option<i128>,
}

pub fn validate(spec: &ComputeOfferSpec) -> Result<ValidOffer, SpecErrors> {
    let mut errors = Vec::new();
    if spec.trust_domain.is_empty() {
        errors.push(FieldError::new(
            "spec.trustDomain",
            "must name a TrustDomain",
        ));
    }
    if spec.resources.gpus < 0 {
        errors.push(FieldError::new("spec.resources.gpus", "must be 0 or more"));
    }
    let mut quantity =
        |field: &str, q: &Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
            q.as_ref().and_then(|q| match parse_milli(&q.0) {
                Ok(v) if v >= 0 => Some(v),
                Ok(_) => {
                    errors.push(FieldError::new(field, "must not be negative"));
                    None
                }
                Err(e) => {
                    errors.push(FieldError::new(field, e));
                    None
                }
            })
        };
    let cpu_milli = quantity("spec.resources.cpu", &spec.resources.cpu);
    let memory_milli = quantity("spec.resources.memory", &spec.resources.memory);
    let mut windows = Vec::new();
    for (i, w) in spec.schedule.windows.iter().enumerate() {
        match parse_window(i, w) {
            Ok(p) => windows.push(p),
            Err(e) => errors.extend(e),
        }
    }
    if let Err(e) = parse_duration_secs(&spec.limits.max_lease_duration) {
        errors.push(FieldError::new("spec.limits.maxLeaseDuration", e));
    }
    if let Some(budget) = spec.limits.energy_budget_k_wh_per_day
        && !(budget.is_finite() && budget >= 0.0)
    {
        errors.push(FieldError::new(
            "spec.limits.energyBudgetKWhPerDay",
            "must be a finite number >= 0",
        ));
    }
    if spec.limits.max_concurrent_leases < 1 {
        errors.push(FieldError::new(
            "spec.limits.maxConcurrentLeases",
            "must be at least 1",
        ));
    }
    if spec.allowed_workloads.is_empty() {
        errors.push(FieldError::new(
            "spec.allowedWorkloads",
            "must allow at least one workload kind",
        ));
    }
    SpecErrors::check(errors)?;
    Ok(ValidOffer {
        windows,
        cpu_milli,
        memory_milli,
    })
}

/// `4h`, `30m`, `1h30m`, `90s` as seconds; must be positive.
pub fn parse_duration_secs(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration like 30m, 4h or 1h30m");
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut last_unit = 0; // h=3, m=2, s=1: units must come in this order, once.
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let (rank, scale) = match c {
            'h' => (3, 3600),
            'm' => (2, 60),
            's' => (1, 1),
            _ => return Err(bad()),
        };
        if digits.is_empty() || (last_unit != 0 && rank >= last_unit) {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
        last_unit = rank;
    }
    if !digits.is_empty() || last_unit == 0 {
        return Err(bad());
    }
    if total == 0 {
        return Err(format!("{s:?} must be longer than zero"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::compute_offer::tests::offer;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use modelpub_crds::compute_offer::{Weekday, Window};

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("4h"), Ok(14400));
        assert_eq!(parse_duration_secs("1h30m"), Ok(5400));
        assert_eq!(parse_duration_secs("90s"), Ok(90));
        for bad in ["", "h", "4", "30m1h", "1h1h", "4d", "0m"] {
            assert!(parse_duration_secs(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_sound_offer_passes_with_parsed_windows() {
        let mut spec = offer().spec;
        spec.resources.cpu = Some(Quantity("7500m".into()));
        let v = validate(&spec).unwrap();
        assert_eq!(v.windows.len(), spec.schedule.windows.len());
        assert_eq!(v.cpu_milli, Some(7500));
    }

    #[test]
    fn every_problem_names_its_field() {
        let mut spec = offer().spec;
        spec.resources.memory = Some(Quantity("lots".into()));
        spec.schedule.windows.push(Window {
            days: vec![Weekday::Monday],
            start: "18:00".into(),
            end: "08:00".into(),
            timezone: "Europe/Nowhere".into(),
        });
        spec.limits.max_lease_duration = "4d".into();
        spec.limits.max_concurrent_leases = 0;
        let fields: Vec<String> = validate(&spec)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect();
        let last = spec.schedule.windows.len() - 1;
        assert_eq!(
            fields,
            [
                "spec.resources.memory".to_string(),
                format!("spec.schedule.windows[{last}].timezone"),
                "spec.limits.maxLeaseDuration".to_string(),
                "spec.limits.maxConcurrentLeases".to_string(),
            ]
        );
    }
}
