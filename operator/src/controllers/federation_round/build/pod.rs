//! What the aggregator and participant pods share: the restricted Pod
//! Security profile, the party-directory emptyDir, the Secret and
//! ConfigMap mounts, and the `modelpub` command lines.

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, PodSecurityContext,
    SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use modelpub_agent_config::pod::{CONFIG_DIR, PARTY_DIR, SECRETS_DIR};

use modelpub_crds::federation_round::{DatasetKind, FederationRoundSpec};

use super::config::config_path;

/// The non-root user of the node-agent image.
pub const RUN_AS: i64 = 65532;
/// Secret files: readable by the owner and the pod's fsGroup only.
pub const SECRET_MODE: i32 = 0o440;

pub const PARTY_VOLUME: &str = "party";
pub const SECRETS_VOLUME: &str = "secrets";
pub const CONFIG_VOLUME: &str = "config";
pub const TMP_VOLUME: &str = "tmp";

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

/// Pod-level half of the restricted profile: non-root user and group,
/// fsGroup so the emptyDir and Secret files belong to it, RuntimeDefault
/// seccomp.
pub fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(runtime_default()),
        ..PodSecurityContext::default()
    }
}

/// Container-level half: read-only root file system, no privilege
/// escalation, every capability dropped.
pub fn container_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

/// The volumes every party pod has: writable party dir and /tmp
/// (emptyDir), the party's Secret and its ConfigMap (read-only).
pub fn base_volumes(secret: &str, config_map: &str) -> Vec<Volume> {
    vec![
        Volume {
            name: PARTY_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        Volume {
            name: TMP_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        Volume {
            name: SECRETS_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.into()),
                default_mode: Some(SECRET_MODE),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: CONFIG_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map.into(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]
}

pub fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

/// The mounts matching [`base_volumes`].
pub fn base_mounts() -> Vec<VolumeMount> {
    vec![
        mount(PARTY_VOLUME, PARTY_DIR, false),
        mount(TMP_VOLUME, "/tmp", false),
        mount(SECRETS_VOLUME, SECRETS_DIR, true),
        mount(CONFIG_VOLUME, CONFIG_DIR, true),
    ]
}

/// `modelpub <role> --dir <party> --config <mounted config> --secrets
/// <mounted secret>`: the node-agent copies its identity into the writable
/// party dir and runs the role.
pub fn role_args(role: &str) -> Vec<String> {
    vec![
        role.into(),
        "--dir".into(),
        PARTY_DIR.into(),
        "--config".into(),
        config_path(),
        "--secrets".into(),
        SECRETS_DIR.into(),
    ]
}

/// A container running the node-agent image with the restricted profile.
pub fn container(
    name: &str,
    image: &str,
    args: Vec<String>,
    mounts: Vec<VolumeMount>,
) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        args: Some(args),
        volume_mounts: Some(mounts),
        security_context: Some(container_security()),
        ..Container::default()
    }
}

/// The data set's name on the `modelpub vault seal` command line.
pub fn dataset_name(dataset: DatasetKind) -> &'static str {
    match dataset {
        DatasetKind::Digits => "digits",
        DatasetKind::Shakespeare => "shakespeare",
        DatasetKind::Csv => "csv",
    }
}

/// Which part of the data set a vault gets: the held-out test split (the
/// aggregator's evaluation set) or share `part` of `of` of the training
/// split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    Test,
    Train { part: usize, of: usize },
}

/// `modelpub vault seal ...`: seals a share of a shipped data set into the
/// vault at `out` with the key at `key_file`. Every party splits and
/// partitions with the round's init seed, so shares are disjoint and the
/// test split is held out from all of them.
pub fn seal_args(
    spec: &FederationRoundSpec,
    share: Share,
    key_file: &str,
    out: &str,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "vault".into(),
        "seal".into(),
        "--dataset".into(),
        dataset_name(spec.data.dataset).into(),
        "--seed".into(),
        spec.model.init_seed.to_string(),
        "--key-file".into(),
        key_file.into(),
        "--out".into(),
        out.into(),
    ];
    match share {
        Share::Test => args.extend(["--split".into(), "test".into()]),
        Share::Train { part, of } => {
            args.extend(["--split".into(), "train".into()]);
            if let Some(p) = &spec.data.partition {
                args.extend(["--partition".into(), p.clone()]);
            }
            args.extend([
                "--part".into(),
                part.to_string(),
                "--of".into(),
                of.to_string(),
            ]);
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_follow_the_restricted_profile() {
        let c = container("x", "img", role_args("participant"), base_mounts());
        let s = c.security_context.unwrap();
        assert_eq!(s.allow_privilege_escalation, Some(false));
        assert_eq!(s.read_only_root_filesystem, Some(true));
        assert_eq!(s.run_as_non_root, Some(true));
        assert_eq!(s.capabilities.unwrap().drop.unwrap(), ["ALL"]);
        assert_eq!(s.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let p = pod_security();
        assert_eq!(p.run_as_user, Some(65532));
        assert_eq!(p.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(
            c.args.unwrap(),
            [
                "participant",
                "--dir",
                "/var/lib/modelpub",
                "--config",
                "/etc/modelpub/config/config.json",
                "--secrets",
                "/etc/modelpub/secrets"
            ]
        );
    }

    #[test]
    fn only_the_party_dir_and_tmp_are_writable() {
        for m in base_mounts() {
            let writable = !m.read_only.unwrap();
            assert_eq!(
                writable,
                m.mount_path == "/var/lib/modelpub" || m.mount_path == "/tmp",
                "{}",
                m.mount_path
            );
        }
        let volumes = base_volumes("s", "c");
        let secret = volumes[2].secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("s"));
        assert_eq!(secret.default_mode, Some(0o440));
        assert_eq!(volumes[3].config_map.as_ref().unwrap().name, "c");
    }
}
