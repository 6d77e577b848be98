//! A pod's volumes as local directories under its pod root
//! (`<pod-root>/volumes/<name>`): Secrets and ConfigMaps written out as
//! files (all keys, or `items` key -> path, with `defaultMode`/`mode`),
//! emptyDirs as empty directories, hostPaths as themselves. The mount
//! table maps every container `mountPath` (with `subPath`) to those
//! directories; see [`super::translate`].

use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{KeyToPath, PodSpec, Volume};

use super::sources::{Keys, Sources};
use super::translate::{MountError, MountTable, Translator};

/// Mode of Secret and ConfigMap files when the volume sets none.
pub const DEFAULT_MODE: i32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume `{volume}`: {kind} volumes are not supported by the process kubelet")]
    Unsupported { volume: String, kind: &'static str },
    #[error("volume `{0}` has no source (secret, configMap, emptyDir or hostPath)")]
    NoSource(String),
    #[error("container `{container}` mounts volume `{volume}`, which the pod does not define")]
    UnknownVolume { container: String, volume: String },
    #[error("volume `{volume}`: {kind} `{name}` not found")]
    MissingObject {
        volume: String,
        kind: &'static str,
        name: String,
    },
    #[error("volume `{volume}`: key `{key}` not found in {kind} `{name}`")]
    MissingKey {
        volume: String,
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("volume `{volume}`: `{path}` must be a relative path without `..`")]
    BadPath { volume: String, path: String },
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The local directory of `volume`.
pub fn volume_dir(pod_root: &Path, volume: &Volume) -> PathBuf {
    match &volume.host_path {
        Some(h) => PathBuf::from(&h.path),
        None => pod_root.join("volumes").join(&volume.name),
    }
}

fn relative(volume: &str, path: &str) -> Result<PathBuf, VolumeError> {
    let p = Path::new(path);
    let ok = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(p.to_path_buf())
    } else {
        Err(VolumeError::BadPath {
            volume: volume.into(),
            path: path.into(),
        })
    }
}

/// Every container's (init containers too) `volumeMounts` as one table.
pub fn mount_table(pod_root: &Path, spec: &PodSpec) -> Result<MountTable, VolumeError> {
    let mut table = MountTable::default();
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        for m in c.volume_mounts.iter().flatten() {
            let volume = volumes.iter().find(|v| v.name == m.name).ok_or_else(|| {
                VolumeError::UnknownVolume {
                    container: c.name.clone(),
                    volume: m.name.clone(),
                }
            })?;
            let mut dir = volume_dir(pod_root, volume);
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                dir = dir.join(relative(&m.name, sub)?);
            }
            table.add(&m.mount_path, dir)?;
        }
    }
    Ok(table)
}

/// Creates every volume's directory and files. ConfigMap files that are
/// JSON documents are translated for the local process (paths and
/// addresses; see [`Translator::config_file`]); Secret files never are.
pub fn materialise(
    pod_root: &Path,
    spec: &PodSpec,
    sources: &Sources,
    translator: &Translator,
) -> Result<(), VolumeError> {
    for v in spec.volumes.iter().flatten() {
        let dir = volume_dir(pod_root, v);
        if v.host_path.is_some() {
            continue;
        }
        if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            create_dir(&dir)?;
            let keys = match sources.secrets.get(&name) {
                Some(keys) => keys,
                None if s.optional == Some(true) => continue,
                None => {
                    return Err(VolumeError::MissingObject {
                        volume: v.name.clone(),
                        kind: "Secret",
                        name,
                    });
                }
            };
            let files = select(
                &v.name,
                "Secret",
                &name,
                keys,
                s.items.as_deref(),
                s.optional,
            )?;
            write_files(&dir, files, s.default_mode, |b| b.to_vec())?;
        } else if let Some(c) = &v.config_map {
            create_dir(&dir)?;
            let keys = match sources.config_maps.get(&c.name) {
                Some(keys) => keys,
                None if c.optional == Some(true) => continue,
                None => {
                    return Err(VolumeError::MissingObject {
                        volume: v.name.clone(),
                        kind: "ConfigMap",
                        name: c.name.clone(),
                    });
                }
            };
            let files = select(
                &v.name,
                "ConfigMap",
                &c.name,
                keys,
                c.items.as_deref(),
                c.optional,
            )?;
            write_files(&dir, files, c.default_mode, |b| translator.config_file(b))?;
        } else if v.empty_dir.is_some() {
            create_dir(&dir)?;
        } else {
            return Err(unsupported(v));
        }
    }
    Ok(())
}

fn unsupported(v: &Volume) -> VolumeError {
    let kind = if v.persistent_volume_claim.is_some() {
        "persistentVolumeClaim"
    } else if v.projected.is_some() {
        "projected"
    } else if v.downward_api.is_some() {
        "downwardAPI"
    } else if v.csi.is_some() || v.ephemeral.is_some() {
        "CSI/ephemeral"
    } else if v.nfs.is_some() {
        "nfs"
    } else {
        return VolumeError::NoSource(v.name.clone());
    };
    VolumeError::Unsupported {
        volume: v.name.clone(),
        kind,
    }
}

struct File<'a> {
    path: PathBuf,
    bytes: &'a [u8],
    mode: Option<i32>,
}

/// All keys, or the listed `items` (a missing item key is an error unless
/// the volume is optional).
fn select<'a>(
    volume: &str,
    kind: &'static str,
    name: &str,
    keys: &'a Keys,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
) -> Result<Vec<File<'a>>, VolumeError> {
    let Some(items) = items else {
        return keys
            .iter()
            .map(|(k, v)| {
                Ok(File {
                    path: relative(volume, k)?,
                    bytes: v,
                    mode: None,
                })
            })
            .collect();
    };
    let mut files = Vec::new();
    for item in items {
        match keys.get(&item.key) {
            Some(bytes) => files.push(File {
                path: relative(volume, &item.path)?,
                bytes,
                mode: item.mode,
            }),
            None if optional == Some(true) => {}
            None => {
                return Err(VolumeError::MissingKey {
                    volume: volume.into(),
                    kind,
                    name: name.into(),
                    key: item.key.clone(),
                });
            }
        }
    }
    Ok(files)
}

fn create_dir(dir: &Path) -> Result<(), VolumeError> {
    std::fs::create_dir_all(dir).map_err(io(dir))
}

fn write_files(
    dir: &Path,
    files: Vec<File<'_>>,
    default_mode: Option<i32>,
    content: impl Fn(&[u8]) -> Vec<u8>,
) -> Result<(), VolumeError> {
    for f in files {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            create_dir(parent)?;
        }
        std::fs::write(&path, content(f.bytes)).map_err(io(&path))?;
        let mode = f.mode.or(default_mode).unwrap_or(DEFAULT_MODE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = u32::try_from(mode & 0o777).unwrap_or(0o644);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(io(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::translate::ServiceNames;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use std::net::Ipv4Addr;

    fn spec() -> PodSpec {
        serde_json::from_value(serde_json::json!({
            "volumes": [
                {"name": "party", "emptyDir": {}},
                {"name": "secrets", "secret": {"secretName": "s", "defaultMode": 0o440}},
                {"name": "key", "secret": {"secretName": "vk", "items": [{"key": "k", "path": "sub/vault.key", "mode": 0o400}]}},
                {"name": "config", "configMap": {"name": "cm"}}
            ],
            "initContainers": [{"name": "i", "volumeMounts": [
                {"name": "party", "mountPath": "/var/lib/modelpub"}]}],
            "containers": [{"name": "c", "volumeMounts": [
                {"name": "party", "mountPath": "/var/lib/modelpub"},
                {"name": "party", "mountPath": "/data", "subPath": "d"},
                {"name": "secrets", "mountPath": "/etc/modelpub/secrets", "readOnly": true},
                {"name": "key", "mountPath": "/etc/modelpub/vault-key"},
                {"name": "config", "mountPath": "/etc/modelpub/config"}]}]
        }))
        .unwrap()
    }

    fn sources() -> Sources {
        let mut s = Sources::default();
        s.add_secret(
            "s",
            &Secret {
                data: Some([("tls.key".to_string(), ByteString(vec![0, 1, 2]))].into()),
                string_data: Some([("identity.pub".to_string(), "pub".to_string())].into()),
                ..Secret::default()
            },
        );
        s.add_secret(
            "vk",
            &Secret {
                data: Some(
                    [
                        ("k".to_string(), ByteString(b"KEY".to_vec())),
                        ("other".to_string(), ByteString(b"x".to_vec())),
                    ]
                    .into(),
                ),
                ..Secret::default()
            },
        );
        s.add_config_map(
            "cm",
            &ConfigMap {
                data: Some(
                    [(
                        "config.json".to_string(),
                        r#"{"dir": "/var/lib/modelpub/vault", "listen": "0.0.0.0:7443"}"#
                            .to_string(),
                    )]
                    .into(),
                ),
                ..ConfigMap::default()
            },
        );
        s
    }

    fn translator(root: &Path, spec: &PodSpec) -> Translator {
        Translator {
            mounts: mount_table(root, spec).unwrap(),
            pod_ip: Ipv4Addr::new(127, 3, 0, 1),
            namespace: "lab".into(),
            services: ServiceNames::default(),
        }
    }

    #[test]
    fn secrets_config_maps_and_empty_dirs_become_files() {
        let root = tempfile::tempdir().unwrap();
        let spec = spec();
        let t = translator(root.path(), &spec);
        materialise(root.path(), &spec, &sources(), &t).unwrap();
        let vols = root.path().join("volumes");
        assert!(vols.join("party").is_dir());
        assert_eq!(
            std::fs::read(vols.join("secrets/tls.key")).unwrap(),
            [0, 1, 2]
        );
        assert_eq!(
            std::fs::read(vols.join("secrets/identity.pub")).unwrap(),
            b"pub"
        );
        assert_eq!(
            std::fs::read(vols.join("key/sub/vault.key")).unwrap(),
            b"KEY"
        );
        assert!(!vols.join("key/other").exists(), "items select keys");
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(vols.join("config/config.json")).unwrap())
                .unwrap();
        assert_eq!(
            config["dir"],
            vols.join("party/vault").display().to_string(),
            "config paths point at the local volume"
        );
        assert_eq!(config["listen"], "127.3.0.1:7443");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &str| {
                std::fs::metadata(vols.join(p))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777
            };
            assert_eq!(mode("secrets/tls.key"), 0o440);
            assert_eq!(mode("key/sub/vault.key"), 0o400);
            assert_eq!(mode("config/config.json"), 0o644);
        }
        assert_eq!(
            t.string("/data/x"),
            vols.join("party/d/x").display().to_string(),
            "subPath"
        );
    }

    #[test]
    fn missing_objects_keys_and_unsupported_volumes_are_named() {
        let root = tempfile::tempdir().unwrap();
        let spec = spec();
        let t = translator(root.path(), &spec);
        let mut s = sources();
        s.secrets.remove("vk");
        let e = materialise(root.path(), &spec, &s, &t).unwrap_err();
        assert_eq!(e.to_string(), "volume `key`: Secret `vk` not found");
        let mut s = sources();
        s.secrets.get_mut("vk").unwrap().remove("k");
        let e = materialise(root.path(), &spec, &s, &t).unwrap_err();
        assert_eq!(
            e.to_string(),
            "volume `key`: key `k` not found in Secret `vk`"
        );
        let pvc: PodSpec = serde_json::from_value(serde_json::json!({
            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "c"}}],
            "containers": []
        }))
        .unwrap();
        let e = materialise(root.path(), &pvc, &s, &t).unwrap_err();
        assert!(
            e.to_string()
                .contains("persistentVolumeClaim volumes are not supported"),
            "{e}"
        );
        let bad: PodSpec = serde_json::from_value(serde_json::json!({
            "volumes": [{"name": "v", "secret": {"secretName": "vk", "items": [{"key": "k", "path": "../x"}]}}],
            "containers": [{"name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}]
        }))
        .unwrap();
        let e = materialise(root.path(), &bad, &sources(), &t).unwrap_err();
        assert!(matches!(e, VolumeError::BadPath { .. }), "{e}");
        let e = mount_table(root.path(), &bad).unwrap_err();
        assert!(matches!(e, VolumeError::UnknownVolume { .. }), "{e}");
    }
}
