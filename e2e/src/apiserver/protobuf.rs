//! The Kubernetes protobuf encoding, for the request bodies helm sends.
//!
//! client-go's typed clients (helm's release storage among them) send
//! Secrets and ConfigMaps as `application/vnd.kubernetes.protobuf`: the
//! magic `k8s\0`, then a `runtime.Unknown` whose `raw` is the object. This
//! module decodes those two kinds into the JSON the rest of the server
//! works with, reading the fields of `k8s.io/api/core/v1/generated.proto`
//! and `apimachinery/pkg/apis/meta/v1/generated.proto` they use. Other
//! kinds in protobuf are refused with 415, as the real server refuses a
//! media type it cannot decode.

use std::collections::BTreeMap;

use base64::Engine;
use prost::Message;
use serde_json::{Map, Value, json};

/// The envelope's magic prefix.
pub const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", tag = "2")]
    raw: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, tag = "1")]
    api_version: String,
    #[prost(string, tag = "2")]
    kind: String,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    generate_name: String,
    #[prost(string, tag = "3")]
    namespace: String,
    #[prost(string, tag = "5")]
    uid: String,
    #[prost(string, tag = "6")]
    resource_version: String,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
    #[prost(string, repeated, tag = "14")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Secret {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, bytes", tag = "2")]
    data: BTreeMap<String, Vec<u8>>,
    #[prost(string, tag = "3")]
    type_: String,
    #[prost(btree_map = "string, string", tag = "4")]
    string_data: BTreeMap<String, String>,
    #[prost(bool, optional, tag = "5")]
    immutable: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct ConfigMap {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, string", tag = "2")]
    data: BTreeMap<String, String>,
    #[prost(btree_map = "string, bytes", tag = "3")]
    binary_data: BTreeMap<String, Vec<u8>>,
    #[prost(bool, optional, tag = "4")]
    immutable: Option<bool>,
}

/// `authentication.k8s.io/v1` TokenRequest, as `kubectl create token`
/// sends it (k8s.io/api/authentication/v1/generated.proto).
#[derive(Clone, PartialEq, Message)]
struct TokenRequest {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<TokenRequestSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct TokenRequestSpec {
    #[prost(string, repeated, tag = "1")]
    audiences: Vec<String>,
    #[prost(int64, optional, tag = "4")]
    expiration_seconds: Option<i64>,
}

/// Why a protobuf body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("not a Kubernetes protobuf envelope: {0}")]
    Envelope(String),
    #[error(
        "{kind} is not decoded from protobuf by this test API server (only Secret, ConfigMap and TokenRequest)"
    )]
    Unsupported { kind: String },
    #[error("decoding a {kind}: {source}")]
    Decode {
        kind: String,
        source: prost::DecodeError,
    },
}

/// Decodes an enveloped `v1` Secret or ConfigMap, or a TokenRequest, into
/// its JSON form.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| ProtobufError::Envelope("no k8s\\0 prefix".into()))?;
    let unknown = Unknown::decode(inner).map_err(|e| ProtobufError::Envelope(e.to_string()))?;
    let meta = unknown.type_meta.unwrap_or_default();
    let kind = format!("{}/{}", meta.api_version, meta.kind);
    let decode_err = |source| ProtobufError::Decode {
        kind: kind.clone(),
        source,
    };
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut object = match (meta.api_version.as_str(), meta.kind.as_str()) {
        ("v1", "Secret") => {
            let s = Secret::decode(unknown.raw.as_slice()).map_err(decode_err)?;
            let mut o = json!({"metadata": metadata(s.metadata.unwrap_or_default())});
            put_map(
                &mut o,
                "data",
                s.data.iter().map(|(k, v)| (k.clone(), b64(v))),
            );
            put_map(&mut o, "stringData", s.string_data.into_iter());
            if !s.type_.is_empty() {
                o["type"] = json!(s.type_);
            }
            if let Some(i) = s.immutable {
                o["immutable"] = json!(i);
            }
            o
        }
        ("v1", "ConfigMap") => {
            let c = ConfigMap::decode(unknown.raw.as_slice()).map_err(decode_err)?;
            let mut o = json!({"metadata": metadata(c.metadata.unwrap_or_default())});
            put_map(&mut o, "data", c.data.into_iter());
            put_map(
                &mut o,
                "binaryData",
                c.binary_data.iter().map(|(k, v)| (k.clone(), b64(v))),
            );
            if let Some(i) = c.immutable {
                o["immutable"] = json!(i);
            }
            o
        }
        ("authentication.k8s.io/v1", "TokenRequest") => {
            let r = TokenRequest::decode(unknown.raw.as_slice()).map_err(decode_err)?;
            let spec = r.spec.unwrap_or_default();
            let mut o = json!({"metadata": metadata(r.metadata.unwrap_or_default()),
                "spec": {"audiences": spec.audiences}});
            if let Some(s) = spec.expiration_seconds {
                o["spec"]["expirationSeconds"] = json!(s);
            }
            o
        }
        _ => return Err(ProtobufError::Unsupported { kind }),
    };
    object["apiVersion"] = json!(meta.api_version);
    object["kind"] = json!(meta.kind);
    Ok(object)
}

fn put_map(o: &mut Value, key: &str, entries: impl Iterator<Item = (String, String)>) {
    let map: Map<String, Value> = entries.map(|(k, v)| (k, Value::String(v))).collect();
    if !map.is_empty() {
        o[key] = Value::Object(map);
    }
}

fn metadata(m: ObjectMeta) -> Value {
    let mut o = Map::new();
    let mut put = |k: &str, v: Value| {
        o.insert(k.to_string(), v);
    };
    for (k, v) in [
        ("name", m.name),
        ("generateName", m.generate_name),
        ("namespace", m.namespace),
        ("uid", m.uid),
        ("resourceVersion", m.resource_version),
    ] {
        if !v.is_empty() {
            put(k, json!(v));
        }
    }
    if !m.labels.is_empty() {
        put("labels", json!(m.labels));
    }
    if !m.annotations.is_empty() {
        put("annotations", json!(m.annotations));
    }
    if !m.finalizers.is_empty() {
        put("finalizers", json!(m.finalizers));
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: api_version.into(),
                kind: kind.into(),
            }),
            raw,
        };
        [MAGIC.to_vec(), unknown.encode_to_vec()].concat()
    }

    #[test]
    fn a_secret_decodes_to_its_json_form() {
        let secret = Secret {
            metadata: Some(ObjectMeta {
                name: "sh.helm.release.v1.modelpub.v1".into(),
                namespace: "modelpub".into(),
                resource_version: "42".into(),
                labels: BTreeMap::from([("owner".into(), "helm".into())]),
                ..Default::default()
            }),
            data: BTreeMap::from([("release".into(), b"H4sI".to_vec())]),
            type_: "helm.sh/release.v1".into(),
            ..Default::default()
        };
        let json = decode(&envelope("v1", "Secret", secret.encode_to_vec())).unwrap();
        assert_eq!(
            json,
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
                "metadata": {"name": "sh.helm.release.v1.modelpub.v1", "namespace": "modelpub",
                             "resourceVersion": "42", "labels": {"owner": "helm"}},
                "data": {"release": "SDRzSQ=="}
            })
        );
    }

    #[test]
    fn a_config_map_decodes_and_other_kinds_are_refused_by_name() {
        let cm = ConfigMap {
            metadata: Some(ObjectMeta {
                name: "c".into(),
                ..Default::default()
            }),
            data: BTreeMap::from([("k".into(), "v".into())]),
            ..Default::default()
        };
        let json = decode(&envelope("v1", "ConfigMap", cm.encode_to_vec())).unwrap();
        assert_eq!(json["data"]["k"], "v");
        let err = decode(&envelope("apps/v1", "Deployment", Vec::new())).unwrap_err();
        assert!(err.to_string().contains("apps/v1/Deployment"), "{err}");
        let err = decode(b"{\"kind\":\"Secret\"}").unwrap_err();
        assert!(err.to_string().contains("envelope"), "{err}");
        let err = decode(&envelope("v1", "Secret", vec![0xff, 0xff])).unwrap_err();
        assert!(err.to_string().contains("decoding a v1/Secret"), "{err}");
    }

    #[test]
    fn a_token_request_decodes_with_its_lifetime_and_audiences() {
        let request = TokenRequest {
            metadata: Some(ObjectMeta::default()),
            spec: Some(TokenRequestSpec {
                audiences: vec!["https://kubernetes.default.svc".into()],
                expiration_seconds: Some(7200),
            }),
        };
        let json = decode(&envelope(
            "authentication.k8s.io/v1",
            "TokenRequest",
            request.encode_to_vec(),
        ))
        .unwrap();
        assert_eq!(json["kind"], "TokenRequest");
        assert_eq!(json["spec"]["expirationSeconds"], 7200);
        assert_eq!(
            json["spec"]["audiences"][0],
            "https://kubernetes.default.svc"
        );
    }
}
