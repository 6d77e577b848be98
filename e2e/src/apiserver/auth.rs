//! Bearer-token authentication: an admin token (user `admin` in group
//! `system:masters`, which RBAC never restricts, as on a real cluster) and
//! ServiceAccount tokens minted on demand for
//! `system:serviceaccount:<namespace>:<name>`. Anything else is 401.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use axum::http::HeaderMap;

use super::status::ApiError;

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }

    /// The (namespace, name) of a ServiceAccount user.
    pub fn service_account(&self) -> Option<(&str, &str)> {
        let rest = self.name.strip_prefix("system:serviceaccount:")?;
        rest.split_once(':')
    }
}

/// Known tokens.
#[derive(Debug, Default)]
pub struct Tokens {
    users: Mutex<HashMap<String, User>>,
}

fn random_token() -> String {
    let a = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let b = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{a:016x}{b:016x}")
}

impl Tokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, User>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new token for `user`.
    pub fn issue(&self, user: User) -> String {
        let token = random_token();
        self.lock().insert(token.clone(), user);
        token
    }

    pub fn issue_admin(&self) -> String {
        self.issue(User {
            name: "admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        })
    }

    /// A token for the ServiceAccount `namespace/name`, with the groups a
    /// real ServiceAccount token carries.
    pub fn issue_service_account(&self, namespace: &str, name: &str) -> String {
        self.issue(User {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        })
    }

    /// The user behind the request's `Authorization: Bearer` header.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<User, ApiError> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        self.lock()
            .get(token)
            .cloned()
            .ok_or_else(ApiError::unauthorized)
    }
}
