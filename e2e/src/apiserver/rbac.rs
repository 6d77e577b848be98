//! RBAC authorization from the stored ClusterRoles, Roles and their
//! bindings, with the real authorizer's rules: a request is allowed when
//! some rule of some role bound to the user (cluster-wide through a
//! ClusterRoleBinding, or in the request's namespace through a RoleBinding)
//! matches its verb, API group, resource (`pods/status` for a subresource)
//! and, when the rule names them, the object's name. Denials are 403 with
//! the authorizer's message.

use serde_json::Value;

use super::auth::User;
use super::status::ApiError;
use super::store::Store;

/// What a request wants to do.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

const RBAC: &str = "rbac.authorization.k8s.io";

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn subject_matches(subject: &Value, user: &User) -> bool {
    let kind = subject.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = subject.get("name").and_then(Value::as_str).unwrap_or("");
    match kind {
        "User" => user.name == name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = subject
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or("");
            user.service_account() == Some((ns, name))
        }
        _ => false,
    }
}

fn rule_matches(rule: &Value, a: &Attributes<'_>) -> bool {
    let verbs = strings(rule.get("verbs"));
    let groups = strings(rule.get("apiGroups"));
    let resources = strings(rule.get("resources"));
    let names = strings(rule.get("resourceNames"));
    let wanted = match a.subresource {
        Some(sub) => format!("{}/{sub}", a.resource),
        None => a.resource.to_string(),
    };
    let verb_ok = verbs.iter().any(|v| *v == "*" || *v == a.verb);
    let group_ok = groups.iter().any(|g| *g == "*" || *g == a.group);
    let resource_ok = resources.iter().any(|r| {
        *r == "*" || *r == wanted || (a.subresource.is_some_and(|s| *r == format!("*/{s}")))
    });
    // resourceNames restrict requests naming an object; a create, list or
    // watch names none, so a name-restricted rule never allows those.
    let name_ok = names.is_empty() || a.name.is_some_and(|n| names.contains(&n));
    verb_ok && group_ok && resource_ok && name_ok
}

/// The rules of the role a binding refers to, if it exists.
fn role_rules(store: &Store, binding: &Value, binding_namespace: &str) -> Vec<Value> {
    let kind = binding
        .pointer("/roleRef/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = binding
        .pointer("/roleRef/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let role = match kind {
        "ClusterRole" => store.get(&(RBAC.into(), "clusterroles".into()), "", name),
        "Role" => store.get(&(RBAC.into(), "roles".into()), binding_namespace, name),
        _ => None,
    };
    role.and_then(|r| r.get("rules").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

fn bound(binding: &Value, user: &User) -> bool {
    binding
        .get("subjects")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|s| subject_matches(s, user)))
}

/// Whether `user` may do `a`.
pub fn allowed(store: &Store, user: &User, a: &Attributes<'_>) -> bool {
    if user.is_master() {
        return true;
    }
    let (cluster_bindings, _) = store.list(&(RBAC.into(), "clusterrolebindings".into()), None);
    for binding in cluster_bindings.iter().filter(|b| bound(b, user)) {
        if role_rules(store, binding, "")
            .iter()
            .any(|r| rule_matches(r, a))
        {
            return true;
        }
    }
    if let Some(ns) = a.namespace {
        let (bindings, _) = store.list(&(RBAC.into(), "rolebindings".into()), Some(ns));
        for binding in bindings.iter().filter(|b| bound(b, user)) {
            if role_rules(store, binding, ns)
                .iter()
                .any(|r| rule_matches(r, a))
            {
                return true;
            }
        }
    }
    false
}

/// 403 unless `user` may do `a`.
pub fn authorize(store: &Store, user: &User, a: &Attributes<'_>) -> Result<(), ApiError> {
    if allowed(store, user, a) {
        return Ok(());
    }
    let resource = match a.subresource {
        Some(sub) => format!("{}/{sub}", a.resource),
        None => a.resource.to_string(),
    };
    let scope = match a.namespace {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".to_string(),
    };
    let why = format!(
        "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
        user.name, a.verb, a.group
    );
    Err(ApiError::forbidden(
        a.resource,
        a.group,
        a.name.unwrap_or(""),
        why,
    ))
}
