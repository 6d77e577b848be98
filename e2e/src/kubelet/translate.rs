//! How a pod's view of the world maps onto a local process.
//!
//! A container sees its volumes at absolute mount paths
//! (`/var/lib/modelpub`, `/etc/modelpub/secrets`, `/tmp`, ...) and its own
//! network namespace (it binds `0.0.0.0:7443`, dials
//! `https://<svc>.<ns>.svc:7443`). A local process has neither, so the
//! process kubelet rewrites the strings a process is given: its args, its
//! env values, and the string values of JSON files in its ConfigMap
//! volumes (the node-agent's `config.json` holds paths and listen
//! addresses). The rules, applied to a whole string (or to the value of a
//! `--flag=value` argument):
//!
//! * an absolute path under a mount path `P` becomes the same path under
//!   the volume's local directory (longest mount first); other paths (image
//!   contents such as `/usr/share/...`) are left alone;
//! * `host:port` and `scheme://host[:port]/...` with host `0.0.0.0`, `::`,
//!   `127.0.0.1` or `localhost` get the pod's own loopback address (every
//!   pod has its own `127.x.y.z`, so two pods can both listen on 7443);
//! * the same forms naming a Service (`<svc>.<ns>.svc[.cluster.local]`, or
//!   `<svc>.<ns>` / `<svc>` when that Service exists) get the Service's
//!   loopback address, where the kubelet proxies to the ready pods behind it.
//!
//! A host name without a port is left alone: that is how a TLS server name
//! is written (the participant dials the Service address yet verifies the
//! certificate against `aggregator_server_name`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::network::service_ip;

/// Mount paths of a pod and the local directories standing in for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountTable {
    /// (mount path without trailing `/`, local dir), longest path first.
    mounts: Vec<(String, PathBuf)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("mountPath `{0}` is not an absolute path")]
    Relative(String),
    #[error(
        "mountPath `{path}` names {first} in one container and {second} in another: \
         the process kubelet needs one volume per mount path across the pod"
    )]
    Conflict {
        path: String,
        first: String,
        second: String,
    },
}

impl MountTable {
    /// Adds `mount_path` -> `local`; the same path may be added twice only
    /// for the same local directory.
    pub fn add(&mut self, mount_path: &str, local: PathBuf) -> Result<(), MountError> {
        if !mount_path.starts_with('/') {
            return Err(MountError::Relative(mount_path.to_string()));
        }
        let key = mount_path.trim_end_matches('/').to_string();
        if let Some((_, existing)) = self.mounts.iter().find(|(p, _)| *p == key) {
            if *existing == local {
                return Ok(());
            }
            return Err(MountError::Conflict {
                path: mount_path.to_string(),
                first: existing.display().to_string(),
                second: local.display().to_string(),
            });
        }
        self.mounts.push((key, local));
        self.mounts.sort_by_key(|m| std::cmp::Reverse(m.0.len()));
        Ok(())
    }

    /// The local path of an absolute container path, if a mount covers it.
    pub fn local_path(&self, path: &str) -> Option<PathBuf> {
        self.mounts.iter().find_map(|(mount, local)| {
            let rest = if mount.is_empty() {
                Some(path)
            } else {
                path.strip_prefix(mount.as_str())
                    .filter(|r| r.is_empty() || r.starts_with('/'))
            }?;
            let rest = rest.trim_start_matches('/');
            Some(if rest.is_empty() {
                local.clone()
            } else {
                local.join(rest)
            })
        })
    }
}

/// Services a pod can name: their loopback addresses come from
/// [`service_ip`] with the kubelet's salt, so a name resolves even before
/// its Service exists (as a `.svc` name does in a cluster).
#[derive(Debug, Clone, Default)]
pub struct ServiceNames {
    pub salt: u64,
    /// `(namespace, name)` of the Services that exist when the pod starts:
    /// only these resolve from the short forms `<svc>` and `<svc>.<ns>`.
    pub existing: BTreeSet<(String, String)>,
}

/// Rewrites the strings a container process is given.
#[derive(Debug, Clone)]
pub struct Translator {
    pub mounts: MountTable,
    pub pod_ip: Ipv4Addr,
    pub namespace: String,
    pub services: ServiceNames,
}

impl Translator {
    /// The local form of one string (see the module docs for the rules).
    pub fn string(&self, s: &str) -> String {
        if s.starts_with('/') {
            return self
                .mounts
                .local_path(s)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| s.to_string());
        }
        if let Some(flag) = s.strip_prefix("--")
            && let Some((name, value)) = flag.split_once('=')
        {
            return format!("--{name}={}", self.string(value));
        }
        if let Some((scheme, rest)) = s.split_once("://") {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            return match self.authority(authority, false) {
                Some(a) => format!("{scheme}://{a}{path}"),
                None => s.to_string(),
            };
        }
        self.authority(s, true).unwrap_or_else(|| s.to_string())
    }

    /// `host[:port]` with the host translated; `None` when nothing changes.
    /// Outside URLs a port is required (a bare name is a TLS server name).
    fn authority(&self, authority: &str, port_required: bool) -> Option<String> {
        let (host, port) = split_host_port(authority)?;
        if port.is_none() && port_required {
            return None;
        }
        let ip = self.host(host)?;
        Some(match port {
            Some(p) => format!("{ip}:{p}"),
            None => ip.to_string(),
        })
    }

    fn host(&self, host: &str) -> Option<Ipv4Addr> {
        if matches!(host, "0.0.0.0" | "::" | "[::]" | "127.0.0.1" | "localhost") {
            return Some(self.pod_ip);
        }
        let salt = self.services.salt;
        let labels: Vec<&str> = host.split('.').collect();
        match labels.as_slice() {
            [svc, ns, "svc"] | [svc, ns, "svc", "cluster", "local"] => {
                Some(service_ip(salt, ns, svc))
            }
            [svc, ns] if self.exists(ns, svc) => Some(service_ip(salt, ns, svc)),
            [svc] if self.exists(&self.namespace, svc) => {
                Some(service_ip(salt, &self.namespace, svc))
            }
            _ => None,
        }
    }

    fn exists(&self, namespace: &str, name: &str) -> bool {
        self.services
            .existing
            .contains(&(namespace.to_string(), name.to_string()))
    }

    /// Every string of a JSON document translated (keys are left alone).
    pub fn json(&self, value: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(s) => Value::String(self.string(&s)),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.json(v)).collect()),
            Value::Object(map) => {
                Value::Object(map.into_iter().map(|(k, v)| (k, self.json(v))).collect())
            }
            other => other,
        }
    }

    /// A file of a ConfigMap volume: JSON documents get their strings
    /// translated, anything else is kept byte for byte.
    pub fn config_file(&self, bytes: &[u8]) -> Vec<u8> {
        match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => {
                serde_json::to_vec_pretty(&self.json(v)).unwrap_or_else(|_| bytes.to_vec())
            }
            _ => bytes.to_vec(),
        }
    }

    /// The local directory of a container path (working directory).
    pub fn dir(&self, container_path: &str, fallback: &Path) -> PathBuf {
        self.mounts
            .local_path(container_path)
            .unwrap_or_else(|| fallback.to_path_buf())
    }
}

/// `host` and optional port of `host[:port]` / `[v6]:port`; `None` when it
/// does not look like an authority (spaces, slashes, a non-numeric port).
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
        return None;
    }
    if s.starts_with('[') {
        let end = s.find(']')?;
        let host = &s[..=end];
        return match &s[end + 1..] {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?.parse().ok()?))),
        };
    }
    if s == "::" {
        return Some((s, None));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, Some(port.parse().ok()?))),
        Some(_) => None,
        None => Some((s, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translator() -> Translator {
        let mut mounts = MountTable::default();
        mounts
            .add("/var/lib/modelpub", "/pod/party".into())
            .unwrap();
        mounts
            .add("/etc/modelpub/secrets/", "/pod/secrets".into())
            .unwrap();
        mounts
            .add("/etc/modelpub/secrets/extra", "/pod/extra".into())
            .unwrap();
        mounts.add("/tmp", "/pod/tmp".into()).unwrap();
        Translator {
            mounts,
            pod_ip: Ipv4Addr::new(127, 1, 0, 2),
            namespace: "lab".into(),
            services: ServiceNames {
                salt: 7,
                existing: BTreeSet::from([("lab".to_string(), "web".to_string())]),
            },
        }
    }

    #[test]
    fn paths_under_mounts_move_to_the_volume_dirs() {
        let t = translator();
        assert_eq!(t.string("/var/lib/modelpub"), "/pod/party");
        assert_eq!(t.string("/var/lib/modelpub/vault"), "/pod/party/vault");
        assert_eq!(
            t.string("/etc/modelpub/secrets/vault.key"),
            "/pod/secrets/vault.key"
        );
        assert_eq!(t.string("/etc/modelpub/secrets/extra/a"), "/pod/extra/a");
        // a sibling that merely shares a prefix is not under the mount
        assert_eq!(t.string("/var/lib/modelpubx/a"), "/var/lib/modelpubx/a");
        assert_eq!(
            t.string("/usr/share/modelpub/data"),
            "/usr/share/modelpub/data"
        );
        assert_eq!(t.string("--out=/tmp/x"), "--out=/pod/tmp/x");
        assert_eq!(t.string("vault"), "vault");
    }

    #[test]
    fn listen_addresses_and_loopback_become_the_pod_address() {
        let t = translator();
        assert_eq!(t.string("0.0.0.0:7443"), "127.1.0.2:7443");
        assert_eq!(t.string("[::]:9464"), "127.1.0.2:9464");
        assert_eq!(t.string("localhost:80"), "127.1.0.2:80");
        assert_eq!(
            t.string("http://127.0.0.1:9464/status"),
            "http://127.1.0.2:9464/status"
        );
        assert_eq!(
            t.string("--metrics-addr=0.0.0.0:8080"),
            "--metrics-addr=127.1.0.2:8080"
        );
        assert_eq!(t.string("0.0.0.0"), "0.0.0.0", "no port: not an address");
    }

    #[test]
    fn service_names_with_a_port_become_the_service_address() {
        let t = translator();
        let agg = service_ip(7, "lab", "mnist-aggregator");
        assert_eq!(
            t.string("https://mnist-aggregator.lab.svc:7443"),
            format!("https://{agg}:7443")
        );
        assert_eq!(
            t.string("mnist-aggregator.lab.svc.cluster.local:7443"),
            format!("{agg}:7443")
        );
        // the TLS server name stays a name
        assert_eq!(
            t.string("mnist-aggregator.lab.svc"),
            "mnist-aggregator.lab.svc"
        );
        let web = service_ip(7, "lab", "web");
        assert_eq!(t.string("web:80"), format!("{web}:80"));
        assert_eq!(t.string("web.lab:80"), format!("{web}:80"));
        // short names resolve only to Services that exist
        assert_eq!(t.string("example.com:443"), "example.com:443");
        assert_eq!(t.string("other:80"), "other:80");
        assert_eq!(t.string("a b:80"), "a b:80");
        assert_eq!(t.string("x:notaport"), "x:notaport");
    }

    #[test]
    fn json_config_strings_are_translated_and_other_files_kept() {
        let t = translator();
        let config = serde_json::json!({
            "listen": "0.0.0.0:7443",
            "address_file": "/var/lib/modelpub/address",
            "aggregator_url": "https://a.lab.svc:7443",
            "aggregator_server_name": "a.lab.svc",
            "vault": {"dir": "/var/lib/modelpub/vault", "key_file": "/etc/modelpub/secrets/vault.key"},
            "rounds": 3,
            "/var/lib/modelpub": ["/tmp/x"]
        });
        let out: serde_json::Value =
            serde_json::from_slice(&t.config_file(&serde_json::to_vec(&config).unwrap())).unwrap();
        assert_eq!(out["listen"], "127.1.0.2:7443");
        assert_eq!(out["address_file"], "/pod/party/address");
        assert_eq!(
            out["aggregator_url"],
            format!("https://{}:7443", service_ip(7, "lab", "a"))
        );
        assert_eq!(out["aggregator_server_name"], "a.lab.svc");
        assert_eq!(out["vault"]["key_file"], "/pod/secrets/vault.key");
        assert_eq!(out["rounds"], 3);
        assert_eq!(
            out["/var/lib/modelpub"][0], "/pod/tmp/x",
            "keys stay, values move"
        );
        assert_eq!(t.config_file(b"plain /tmp/x text"), b"plain /tmp/x text");
        assert_eq!(
            t.config_file(b"\"/tmp/x\""),
            b"\"/tmp/x\"",
            "only documents"
        );
    }

    #[test]
    fn mount_conflicts_and_relative_paths_are_refused() {
        let mut m = MountTable::default();
        m.add("/a", "/x".into()).unwrap();
        m.add("/a/", "/x".into()).unwrap();
        assert!(matches!(
            m.add("/a", "/y".into()),
            Err(MountError::Conflict { .. })
        ));
        assert_eq!(
            m.add("rel", "/y".into()),
            Err(MountError::Relative("rel".into()))
        );
        let mut root = MountTable::default();
        root.add("/", "/r".into()).unwrap();
        assert_eq!(root.local_path("/etc/x"), Some(PathBuf::from("/r/etc/x")));
    }
}
