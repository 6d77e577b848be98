//! Creating manifests on a server the way `kubectl create` does: the
//! collection path of each document is found through discovery, so any
//! served kind (built-in or from a registered CRD) can be installed, and a
//! kind the server does not serve is an error naming it.

use std::path::Path;

use serde_json::Value;

/// Why a manifest could not be created.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not YAML: {reason}")]
    Yaml { path: String, reason: String },
    #[error("a document has no apiVersion or kind: {0}")]
    Untyped(String),
    #[error("the server does not serve {kind} in {api_version}")]
    NotServed { api_version: String, kind: String },
    #[error("creating {kind} {name:?}: {source}")]
    Api {
        kind: String,
        name: String,
        source: kube::Error,
    },
}

async fn get_json(client: &kube::Client, path: &str) -> Result<Value, kube::Error> {
    let request = axum::http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e)))?;
    client.request::<Value>(request).await
}

/// The collection path for `doc` (`/api/v1/namespaces/<ns>/configmaps`).
pub async fn collection_path(client: &kube::Client, doc: &Value) -> Result<String, InstallError> {
    let (Some(api_version), Some(kind)) = (
        doc.get("apiVersion").and_then(Value::as_str),
        doc.get("kind").and_then(Value::as_str),
    ) else {
        return Err(InstallError::Untyped(doc.to_string()));
    };
    let not_served = || InstallError::NotServed {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
    };
    let base = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    let list = get_json(client, &base).await.map_err(|_| not_served())?;
    let resource = list
        .get("resources")
        .and_then(Value::as_array)
        .and_then(|rs| {
            rs.iter().find(|r| {
                r.get("kind").and_then(Value::as_str) == Some(kind)
                    && r.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| !n.contains('/'))
            })
        })
        .ok_or_else(not_served)?;
    let plural = resource.get("name").and_then(Value::as_str).unwrap_or("");
    let namespaced = resource.get("namespaced").and_then(Value::as_bool) == Some(true);
    let namespace = doc.pointer("/metadata/namespace").and_then(Value::as_str);
    Ok(match namespace {
        Some(ns) if namespaced => format!("{base}/namespaces/{ns}/{plural}"),
        None if namespaced => format!("{base}/namespaces/default/{plural}"),
        _ => format!("{base}/{plural}"),
    })
}

/// Creates `doc` and returns the stored object.
pub async fn create(client: &kube::Client, doc: &Value) -> Result<Value, InstallError> {
    let path = collection_path(client, doc).await?;
    let api_error = |source| InstallError::Api {
        kind: doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        name: doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        source,
    };
    let request = axum::http::Request::post(path)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(doc.to_string().into_bytes())
        .map_err(|e| {
            api_error(kube::Error::BuildRequest(
                kube::core::request::Error::BuildRequest(e),
            ))
        })?;
    client.request::<Value>(request).await.map_err(api_error)
}

/// Creates every document of a YAML stream (e.g. `helm template` output).
pub async fn create_all(client: &kube::Client, yaml: &str) -> Result<Vec<Value>, InstallError> {
    let docs = serde_saphyr::from_multiple::<Value>(yaml).map_err(|e| InstallError::Yaml {
        path: "<stream>".into(),
        reason: e.to_string(),
    })?;
    let mut created = Vec::new();
    for doc in docs.iter().filter(|d| !d.is_null()) {
        created.push(create(client, doc).await?);
    }
    Ok(created)
}

/// Registers every CRD in `dir` (the chart's `crds/`), in file-name order.
pub async fn install_crds(client: &kube::Client, dir: &Path) -> Result<Vec<Value>, InstallError> {
    let read_error = |source| InstallError::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_error)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut created = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| InstallError::Read {
            path: file.display().to_string(),
            source,
        })?;
        let docs = serde_saphyr::from_multiple::<Value>(&text).map_err(|e| InstallError::Yaml {
            path: file.display().to_string(),
            reason: e.to_string(),
        })?;
        for doc in docs.iter().filter(|d| !d.is_null()) {
            created.push(create(client, doc).await?);
        }
    }
    Ok(created)
}
