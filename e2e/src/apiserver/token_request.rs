//! `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`, the
//! TokenRequest subresource `kubectl create token` calls: a bearer token for
//! the ServiceAccount, which exists (404 otherwise), authenticated as that
//! ServiceAccount from then on. Authorized as `create` on
//! `serviceaccounts/token`, as the real server does.
//! https://kubernetes.io/docs/reference/kubernetes-api/authentication-resources/token-request-v1/

use serde_json::{Value, json};

use super::handlers::now;
use super::status::ApiError;

/// The default lifetime the real server gives a token when the request
/// names none (one hour).
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// The TokenRequest answered for `request` (its JSON body; `spec` may be
/// empty) with a freshly issued `token`.
pub fn answer(
    request: &Value,
    namespace: &str,
    name: &str,
    token: &str,
) -> Result<Value, ApiError> {
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v
            .as_i64()
            .filter(|s| *s >= 600)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "spec.expirationSeconds: Invalid value: {v}: may not specify a duration less than 10 minutes"
                ))
            })?,
    };
    let expires = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(expiration))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| now());
    Ok(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": now()},
        "spec": {
            "audiences": spec.get("audiences").cloned().unwrap_or_else(|| json!([])),
            "expirationSeconds": expiration,
            "boundObjectRef": spec.get("boundObjectRef").cloned().unwrap_or(Value::Null),
        },
        "status": {"token": token, "expirationTimestamp": expires},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_and_its_default_lifetime_are_in_the_answer() {
        let a = answer(&json!({"spec": {}}), "modelpub", "modelpub-operator", "t0k").unwrap();
        assert_eq!(a["status"]["token"], "t0k");
        assert_eq!(a["spec"]["expirationSeconds"], 3600);
        assert_eq!(a["metadata"]["name"], "modelpub-operator");
    }

    #[test]
    fn a_lifetime_under_ten_minutes_is_refused() {
        let e = answer(&json!({"spec": {"expirationSeconds": 60}}), "n", "s", "t").unwrap_err();
        assert!(e.message.contains("less than 10 minutes"), "{}", e.message);
    }
}
