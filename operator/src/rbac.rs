//! The exact Kubernetes API surface the operator uses, as RBAC grants.
//!
//! [`REQUIRED`] is the single source of truth: the mocked-API scenario
//! tests check every request a controller makes against it
//! ([`classify`] + [`is_allowed`]), a test checks that every entry is
//! exercised by some scenario (so nothing stale stays granted), and the
//! helm chart's ClusterRole and Role are compared with it.
//!
//! Request to verb, as the API server's authorizer maps them: GET of an
//! item `get`, GET of a collection `list`, GET with `watch=true` `watch`,
//! POST `create`, PATCH `patch`, PUT `update`, DELETE of an item `delete`,
//! DELETE of a collection `deletecollection`. A subresource is authorized
//! as `resource/subresource` (`trustdomains/status`). The finalizer helper
//! adds and removes finalizers with a PATCH of the main resource, so it
//! needs `patch` on the resource, not `update` on `…/finalizers`.

use std::collections::BTreeSet;
use std::fmt;

/// Where a permission is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Namespaced resources, in every namespace the operator watches: the
    /// chart's ClusterRole with `rbac.clusterWide`, else a Role in each of
    /// `watchNamespaces`.
    Watched,
    /// Cluster-scoped resources (nodes): a Role cannot grant them, so they
    /// are in the ClusterRole in either mode.
    ClusterScoped,
    /// Only in the leader-election Lease's namespace (the chart's
    /// leader-election Role).
    LeaseNamespace,
}

/// Verbs on one resource in one API group ("" is core).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    pub group: &'static str,
    /// Plural resource name, with `/subresource` when it is one.
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: Scope,
    /// Which code path makes these requests.
    pub why: &'static str,
}

const fn watched(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    why: &'static str,
) -> Permission {
    Permission {
        group,
        resource,
        verbs,
        scope: Scope::Watched,
        why,
    }
}

/// Every request the operator makes. Keep in step with
/// `charts/modelpub/templates/{clusterrole,role}.yaml`.
pub const REQUIRED: &[Permission] = &[
    watched(
        "modelpub.io",
        "trustdomains",
        &["get", "list", "watch", "patch"],
        "TrustDomain controller (watch, finalizer); ComputeOffer dereferences its trust domain",
    ),
    watched(
        "modelpub.io",
        "trustdomains/status",
        &["patch"],
        "TrustDomain status (server-side apply)",
    ),
    watched(
        "modelpub.io",
        "computeoffers",
        &["list", "watch", "patch"],
        "ComputeOffer controller (watch, finalizer)",
    ),
    watched(
        "modelpub.io",
        "computeoffers/status",
        &["patch"],
        "ComputeOffer status (server-side apply)",
    ),
    watched(
        "",
        "secrets",
        &["get", "list", "watch", "create", "delete"],
        "TrustDomain identity and CA: read, create when missing, delete on cleanup; watched as owned children",
    ),
    watched(
        "modelpub.io",
        "federationrounds",
        &["get", "list", "watch", "patch"],
        "FederationRound controller (watch, finalizer); federation endpoint: the round a member joins",
    ),
    watched(
        "modelpub.io",
        "federationrounds/status",
        &["patch"],
        "FederationRound status (server-side apply)",
    ),
    watched(
        "",
        "configmaps",
        &["list", "create", "patch", "delete"],
        "FederationRound party configs: apply, delete orphans and on cleanup; federation endpoint: a member's registration, created once",
    ),
    watched(
        "",
        "services",
        &["patch", "delete"],
        "FederationRound aggregator Service: apply, delete on cleanup",
    ),
    watched(
        "",
        "pods",
        &["list"],
        "FederationRound progress: participant pods that failed are dropouts",
    ),
    watched(
        "apps",
        "deployments",
        &["list", "watch", "patch", "delete"],
        "FederationRound aggregator Deployment: apply, watch as owned child, delete on cleanup",
    ),
    watched(
        "batch",
        "jobs",
        &["list", "watch", "patch", "delete"],
        "FederationRound participant Jobs: apply, watch as owned children, delete orphans and on cleanup",
    ),
    watched(
        "networking.k8s.io",
        "networkpolicies",
        &["patch", "delete"],
        "FederationRound NetworkPolicy: apply, delete on cleanup",
    ),
    Permission {
        group: "",
        resource: "nodes",
        verbs: &["list"],
        scope: Scope::ClusterScoped,
        why: "ComputeOffer capacity: allocatable nvidia.com/gpu of matching nodes",
    },
    watched(
        "events.k8s.io",
        "events",
        &["create", "patch"],
        "Events on reconciled resources (a repeated event patches its series)",
    ),
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "patch"],
        scope: Scope::LeaseNamespace,
        why: "leader election",
    },
];

/// Permissions no request of ours needs but an admission plugin checks:
/// with `OwnerReferencesPermissionEnforcement` (OpenShift, hardened
/// clusters), setting `blockOwnerDeletion: true` on a child requires
/// `update` on the owner's `finalizers` subresource. Every child the
/// operator creates sets it (TrustDomain Secrets, FederationRound
/// children). The chart grants these as well: compare it with
/// [`chart_grants`].
pub const ADMISSION: &[Permission] = &[
    watched(
        "modelpub.io",
        "trustdomains/finalizers",
        &["update"],
        "blockOwnerDeletion on the identity and CA Secrets",
    ),
    watched(
        "modelpub.io",
        "federationrounds/finalizers",
        &["update"],
        "blockOwnerDeletion on a round's children",
    ),
];

/// What the helm chart must grant, exactly: [`REQUIRED`] and
/// [`ADMISSION`], with the scope each is granted in.
pub fn chart_grants() -> BTreeSet<(Scope, Grant)> {
    REQUIRED
        .iter()
        .chain(ADMISSION)
        .flat_map(|p| {
            p.verbs.iter().map(|v| {
                (
                    p.scope,
                    Grant {
                        group: p.group.to_string(),
                        resource: p.resource.to_string(),
                        verb: v.to_string(),
                    },
                )
            })
        })
        .collect()
}

/// One authorizable request: `verb` on `resource` in `group`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grant {
    pub group: String,
    pub resource: String,
    pub verb: String,
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {}/{}", self.verb, group, self.resource)
    }
}

/// [`REQUIRED`] flattened to one grant per verb.
pub fn required_grants() -> BTreeSet<Grant> {
    REQUIRED
        .iter()
        .flat_map(|p| {
            p.verbs.iter().map(|v| Grant {
                group: p.group.to_string(),
                resource: p.resource.to_string(),
                verb: v.to_string(),
            })
        })
        .collect()
}

/// True when [`REQUIRED`] grants `grant`.
pub fn is_allowed(grant: &Grant) -> bool {
    REQUIRED.iter().any(|p| {
        p.group == grant.group
            && p.resource == grant.resource
            && p.verbs.contains(&grant.verb.as_str())
    })
}

/// A request path the classifier does not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Kubernetes resource request: {method} {path}")]
pub struct UnknownRequest {
    pub method: String,
    pub path: String,
}

/// The grant an API request needs, from its method, path and query.
pub fn classify(method: &str, path: &str, query: Option<&str>) -> Result<Grant, UnknownRequest> {
    let unknown = || UnknownRequest {
        method: method.to_string(),
        path: path.to_string(),
    };
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    // After the prefix: the group ("" for core) and what follows the version.
    let (group, rest) = match segs.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return Err(unknown()),
    };
    // `namespaces/{ns}/{resource}...` is namespaced; `namespaces[/{name}]`
    // alone is the Namespace resource itself.
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, has_name) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => return Err(unknown()),
    };
    let watching =
        query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match (method, has_name) {
        ("GET", _) if watching => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return Err(unknown()),
    };
    Ok(Grant {
        group: group.to_string(),
        resource,
        verb: verb.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(group: &str, resource: &str, verb: &str) -> Grant {
        Grant {
            group: group.into(),
            resource: resource.into(),
            verb: verb.into(),
        }
    }

    #[test]
    fn requests_map_to_the_verbs_the_authorizer_checks() {
        let cases = [
            (
                "GET",
                "/api/v1/namespaces/ns/secrets/a",
                None,
                g("", "secrets", "get"),
            ),
            (
                "GET",
                "/api/v1/namespaces/ns/secrets",
                Some("labelSelector=x"),
                g("", "secrets", "list"),
            ),
            (
                "GET",
                "/api/v1/secrets",
                Some("watch=true&resourceVersion=1"),
                g("", "secrets", "watch"),
            ),
            ("GET", "/api/v1/nodes", None, g("", "nodes", "list")),
            (
                "GET",
                "/api/v1/namespaces/ns",
                None,
                g("", "namespaces", "get"),
            ),
            (
                "POST",
                "/apis/events.k8s.io/v1/namespaces/ns/events",
                None,
                g("events.k8s.io", "events", "create"),
            ),
            (
                "PATCH",
                "/apis/modelpub.io/v1alpha1/namespaces/ns/trustdomains/t/status",
                Some("fieldManager=x"),
                g("modelpub.io", "trustdomains/status", "patch"),
            ),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l",
                None,
                g("coordination.k8s.io", "leases", "update"),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/ns/secrets/a",
                None,
                g("", "secrets", "delete"),
            ),
            (
                "DELETE",
                "/apis/batch/v1/namespaces/ns/jobs",
                None,
                g("batch", "jobs", "deletecollection"),
            ),
        ];
        for (method, path, query, want) in cases {
            assert_eq!(
                classify(method, path, query).unwrap(),
                want,
                "{method} {path}"
            );
        }
        assert!(classify("GET", "/healthz", None).is_err());
        assert!(classify("GET", "/api/v1/namespaces/ns/secrets/a/b/c", None).is_err());
    }

    /// Every grant in REQUIRED is used by some scenario: nothing stale is
    /// granted.
    #[tokio::test]
    async fn every_required_grant_is_exercised() {
        let mut used = BTreeSet::new();
        used.extend(crate::controllers::trust_domain::tests::exercised().await);
        used.extend(crate::controllers::compute_offer::tests::exercised().await);
        used.extend(crate::controllers::federation_round::tests::exercised().await);
        used.extend(crate::controllers::tests::exercised().await);
        used.extend(crate::leader::tests::exercised().await);
        used.extend(crate::federation::rounds::tests::exercised().await);
        let unused: Vec<String> = required_grants()
            .difference(&used)
            .map(ToString::to_string)
            .collect();
        assert!(unused.is_empty(), "granted but never used: {unused:?}");
    }

    #[test]
    fn required_is_least_privilege() {
        for p in REQUIRED {
            for w in [p.group, p.resource]
                .into_iter()
                .chain(p.verbs.iter().copied())
            {
                assert!(!w.contains('*'), "wildcard in {p:?}");
            }
            assert!(!p.verbs.is_empty() && !p.why.is_empty(), "{p:?}");
        }
        for p in ADMISSION {
            assert!(
                p.resource.ends_with("/finalizers") && p.verbs == ["update"],
                "{p:?}"
            );
            // Admission-only grants are never what a request needs.
            assert!(!is_allowed(&g(p.group, p.resource, "update")));
        }
        let chart = chart_grants();
        assert!(chart.contains(&(
            Scope::Watched,
            g("modelpub.io", "trustdomains/finalizers", "update")
        )));
        assert!(chart.contains(&(
            Scope::LeaseNamespace,
            g("coordination.k8s.io", "leases", "patch")
        )));
        assert_eq!(chart.len(), required_grants().len() + ADMISSION.len());
        assert!(is_allowed(&g("", "secrets", "create")));
        assert!(!is_allowed(&g("", "secrets", "update")));
        assert!(!is_allowed(&g("", "pods", "get")));
    }
}
