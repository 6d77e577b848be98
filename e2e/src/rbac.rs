//! RBAC rules as flat grants: one (API group, resource, verb) each, so a
//! ClusterRole can be compared with the list of requests a component makes,
//! in both directions (nothing missing, nothing extra).

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::PolicyRule;

/// One permitted request, the operator's own type: its scenario tests
/// record requests as these, so the chart is compared in the same terms.
pub use modelpub_operator::rbac::Grant;

/// A rule that cannot be least-privilege, or cannot be flattened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RbacError {
    #[error("wildcard `*` in rule {0}")]
    Wildcard(String),
    #[error("resourceNames/nonResourceURLs are not expected in rule {0}")]
    Unexpected(String),
}

/// Flattens rules into grants, refusing wildcards and the rule kinds this
/// project never needs.
pub fn grants(rules: &[PolicyRule]) -> Result<BTreeSet<Grant>, RbacError> {
    let mut out = BTreeSet::new();
    for rule in rules {
        let shown = || format!("{rule:?}");
        if rule.resource_names.is_some() || rule.non_resource_urls.is_some() {
            return Err(RbacError::Unexpected(shown()));
        }
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    if [group, resource, verb].iter().any(|w| w.contains('*')) {
                        return Err(RbacError::Wildcard(shown()));
                    }
                    out.insert(Grant {
                        group: group.clone(),
                        resource: resource.clone(),
                        verb: verb.clone(),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Grants from a table of (group, resource, verbs).
pub fn grants_from_table(table: &[(&str, &str, &[&str])]) -> BTreeSet<Grant> {
    table
        .iter()
        .flat_map(|(group, resource, verbs)| {
            verbs.iter().map(move |verb| Grant {
                group: group.to_string(),
                resource: resource.to_string(),
                verb: verb.to_string(),
            })
        })
        .collect()
}

/// What `granted` has beyond `needed`, and what it lacks; `None` when equal.
pub fn mismatch(granted: &BTreeSet<Grant>, needed: &BTreeSet<Grant>) -> Option<String> {
    let list = |set: Vec<&Grant>| {
        set.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let extra: Vec<_> = granted.difference(needed).collect();
    let missing: Vec<_> = needed.difference(granted).collect();
    if extra.is_empty() && missing.is_empty() {
        None
    } else {
        Some(format!(
            "granted but not needed: [{}]; needed but not granted: [{}]",
            list(extra),
            list(missing)
        ))
    }
}
