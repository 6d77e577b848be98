//! Which namespaces the operator reconciles (`--watch-namespaces`): every
//! namespace, which needs the chart's cluster-wide opt-in (a ClusterRole),
//! or a listed few, which a Role in each of them is enough for. A watch on
//! `Api::all` is refused (403) without a ClusterRole even when a label
//! selector narrows it, so the scope decides which `Api`s are opened, not
//! only which objects are reconciled.

use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

/// The namespaces watched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WatchScope {
    /// Every namespace (cluster-wide RBAC).
    #[default]
    Cluster,
    /// Only these (a Role and RoleBinding in each); never empty.
    Namespaces(Vec<String>),
}

/// A list of namespace names (the value of `flag`) the operator cannot run
/// with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error(
        "{flag}: {name:?} is not a namespace name (a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
    )]
    NotANamespace { flag: &'static str, name: String },
    #[error("{flag} names {name:?} twice")]
    Repeated { flag: &'static str, name: String },
}

/// `names` checked as namespace names, in order, each once.
pub fn namespace_names(flag: &'static str, names: &[String]) -> Result<Vec<String>, ScopeError> {
    let mut seen: Vec<String> = Vec::new();
    for name in names.iter().map(|n| n.trim()) {
        if !is_dns1123_label(name) {
            return Err(ScopeError::NotANamespace {
                flag,
                name: name.to_string(),
            });
        }
        if seen.iter().any(|s| s == name) {
            return Err(ScopeError::Repeated {
                flag,
                name: name.to_string(),
            });
        }
        seen.push(name.to_string());
    }
    Ok(seen)
}

fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && name.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(|b| *b != b'-')
        && bytes.last().is_some_and(|b| *b != b'-')
}

impl WatchScope {
    /// The scope `--watch-namespaces` names: none means every namespace.
    pub fn from_names(names: &[String]) -> Result<Self, ScopeError> {
        let seen = namespace_names("--watch-namespaces", names)?;
        Ok(if seen.is_empty() {
            WatchScope::Cluster
        } else {
            WatchScope::Namespaces(seen)
        })
    }

    /// One entry per watch to open: `None` for the whole cluster, else each
    /// namespace.
    pub fn namespaces(&self) -> Vec<Option<String>> {
        match self {
            WatchScope::Cluster => vec![None],
            WatchScope::Namespaces(names) => names.iter().cloned().map(Some).collect(),
        }
    }

    /// Every `K` in scope, listed namespace by namespace when scoped.
    pub async fn list<K>(&self, client: &Client) -> Result<Vec<K>, kube::Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let mut all = Vec::new();
        for namespace in self.namespaces() {
            let api: Api<K> = api_in(client, namespace.as_deref());
            all.extend(api.list(&Default::default()).await?.items);
        }
        Ok(all)
    }
}

/// `Api::all` for `None`, else the namespace's.
pub fn api_in<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        None => Api::all(client.clone()),
        Some(ns) => Api::namespaced(client.clone(), ns),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn errors_name_the_flag() {
        let e = namespace_names("--metrics-from-namespaces", &names(&["Mon"])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--metrics-from-namespaces: \"Mon\""),
            "{e}"
        );
    }

    #[test]
    fn no_names_is_the_whole_cluster() {
        assert_eq!(WatchScope::from_names(&[]), Ok(WatchScope::Cluster));
        assert_eq!(WatchScope::Cluster.namespaces(), [None]);
    }

    #[test]
    fn names_are_checked_and_kept_in_order() {
        let scope = WatchScope::from_names(&names(&["modelpub", "research-2"])).unwrap();
        assert_eq!(
            scope.namespaces(),
            [Some("modelpub".to_string()), Some("research-2".to_string())]
        );
        for bad in ["", "Modelpub", "-a", "a-", "a_b", &"x".repeat(64)] {
            assert_eq!(
                WatchScope::from_names(&names(&[bad])),
                Err(ScopeError::NotANamespace {
                    flag: "--watch-namespaces",
                    name: bad.to_string()
                }),
                "{bad:?}"
            );
        }
        assert_eq!(
            WatchScope::from_names(&names(&["a", "a"])),
            Err(ScopeError::Repeated {
                flag: "--watch-namespaces",
                name: "a".into()
            })
        );
    }
}
