//! One participant per vault: a Job that runs its pod once
//! (`backoffLimit: 0`, `restartPolicy: Never`), so a failed pod is a
//! dropout the aggregator tolerates rather than a retry with a new
//! process mid-round. The vault comes from the vault's claim, or (demo
//! data) is sealed by an init container from the vault's share of a
//! shipped data set.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ContainerPort, EnvVar, KeyToPath, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    ResourceRequirements, SecretVolumeSource, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use modelpub_agent_config::pod::{
    METRICS_PORT, TORCH_THREADS_ENV, VAULT_KEY, VAULT_KEY_DIR, VAULT_VOLUME_DIR, demo_vault_dir,
};
use modelpub_crds::federation_round::{AgentResources, VaultSpec};

use super::pod::{self, SECRET_MODE, Share};
use super::{Round, names};
use crate::labels::{self, Component};
use crate::quantity::parse_milli;

pub const VAULT_KEY_VOLUME: &str = "vault-key";
pub const VAULT_VOLUME: &str = "vault";
/// The extended resource GPUs are requested as.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Label naming the vault a participant pod trains on.
pub const VAULT_LABEL: &str = "modelpub.io/vault";

/// CPU and memory as both request and limit (a guaranteed share), GPUs as
/// a limit (extended resources cannot overcommit).
pub fn resources(r: &AgentResources) -> Option<ResourceRequirements> {
    let mut limits = BTreeMap::new();
    if let Some(cpu) = &r.cpu {
        limits.insert("cpu".to_string(), cpu.clone());
    }
    if let Some(memory) = &r.memory {
        limits.insert("memory".to_string(), memory.clone());
    }
    let requests = limits.clone();
    if r.gpus > 0 {
        limits.insert(GPU_RESOURCE.to_string(), Quantity(r.gpus.to_string()));
    }
    if limits.is_empty() {
        return None;
    }
    Some(ResourceRequirements {
        limits: Some(limits),
        requests: (!requests.is_empty()).then_some(requests),
        ..ResourceRequirements::default()
    })
}

/// As many libtorch threads as the CPU limit allows (whole cores, rounded
/// up); `None` without a positive CPU limit or with one that does not
/// parse (the CRD schema admits only valid quantities).
pub fn torch_threads(r: &AgentResources) -> Option<u32> {
    let milli = parse_milli(&r.cpu.as_ref()?.0).ok().filter(|m| *m > 0)?;
    u32::try_from((milli + 999) / 1000).ok()
}

/// The Job of the participant on `vault` (index `part` of the round's
/// vaults).
pub fn job(round: &Round, vault: &VaultSpec, image: &str) -> Job {
    let spec = &round.fr.spec;
    let name = names::agent(&round.name, &vault.name);
    let part = spec
        .data
        .vaults
        .iter()
        .position(|v| v.name == vault.name)
        .unwrap_or(0);
    let key_file = format!("{VAULT_KEY_DIR}/{VAULT_KEY}");
    let mut volumes = pod::base_volumes(&name, &names::agent_config(&round.name, &vault.name));
    volumes.push(Volume {
        name: VAULT_KEY_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(vault.key_secret_ref.name.clone()),
            items: Some(vec![KeyToPath {
                key: vault.key_secret_ref.key.clone(),
                path: VAULT_KEY.into(),
                ..KeyToPath::default()
            }]),
            default_mode: Some(SECRET_MODE),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    });
    let mut mounts = pod::base_mounts();
    mounts.push(pod::mount(VAULT_KEY_VOLUME, VAULT_KEY_DIR, true));
    let init_containers = match &vault.volume_claim_name {
        Some(claim) => {
            volumes.push(Volume {
                name: VAULT_VOLUME.into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: Some(true),
                }),
                ..Volume::default()
            });
            mounts.push(pod::mount(VAULT_VOLUME, VAULT_VOLUME_DIR, true));
            None
        }
        None => Some(vec![pod::container(
            "seal-vault",
            image,
            pod::seal_args(
                spec,
                Share::Train {
                    part,
                    of: spec.data.vaults.len(),
                },
                &key_file,
                &demo_vault_dir(),
            ),
            mounts.clone(),
        )]),
    };
    let mut main = pod::container("participant", image, pod::role_args("participant"), mounts);
    main.resources = resources(&spec.resources);
    // Named like the aggregator's, so one PodMonitor (the chart's) scrapes
    // both roles' metrics.
    main.ports = Some(vec![ContainerPort {
        name: Some(super::aggregator::METRICS_PORT_NAME.into()),
        container_port: i32::from(METRICS_PORT),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }]);
    main.env = torch_threads(&spec.resources).map(|n| {
        vec![EnvVar {
            name: TORCH_THREADS_ENV.into(),
            value: Some(n.to_string()),
            ..EnvVar::default()
        }]
    });
    let mut pod_labels = round.labels(Component::NodeAgent);
    pod_labels.insert(VAULT_LABEL.into(), vault.name.clone());
    let mut meta = round.child_meta(name, Component::NodeAgent);
    if let Some(l) = meta.labels.as_mut() {
        l.insert(VAULT_LABEL.into(), vault.name.clone());
    }
    Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    security_context: Some(pod::pod_security()),
                    init_containers,
                    containers: vec![main],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// Labels that select every participant pod of the round (the
/// NetworkPolicy admits these to the aggregator).
pub fn selector(round: &Round) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::FEDERATION_ROUND.to_string(), round.name.clone()),
        (
            labels::COMPONENT.to_string(),
            Component::NodeAgent.as_str().to_string(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::round_fixture;
    use super::*;

    fn pod_spec(job: &Job) -> &PodSpec {
        job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn demo_vaults_are_sealed_by_an_init_container() {
        let fr = round_fixture();
        let round = Round::new(&fr).unwrap();
        let j = job(&round, &fr.spec.data.vaults[1], "img:1");
        assert_eq!(j.metadata.name.as_deref(), Some("mnist-agent-hospital-b"));
        let spec = j.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = pod_spec(&j);
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let seal = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(
            seal.args.clone().unwrap(),
            [
                "vault",
                "seal",
                "--dataset",
                "digits",
                "--seed",
                "42",
                "--key-file",
                "/etc/modelpub/vault-key/vault.key",
                "--out",
                "/var/lib/modelpub/vault",
                "--split",
                "train",
                "--part",
                "1",
                "--of",
                "3"
            ]
        );
        let key = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == VAULT_KEY_VOLUME)
            .and_then(|v| v.secret.clone())
            .unwrap();
        assert_eq!(key.secret_name.as_deref(), Some("hospital-b-vault"));
        let item = &key.items.unwrap()[0];
        assert_eq!(
            (item.key.as_str(), item.path.as_str()),
            ("key", "vault.key")
        );
        let labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(labels[VAULT_LABEL], "hospital-b");
        for (k, v) in selector(&round) {
            assert_eq!(labels[&k], v);
        }
    }

    #[test]
    fn claimed_vaults_are_mounted_read_only_without_sealing() {
        let fr = round_fixture();
        let round = Round::new(&fr).unwrap();
        let j = job(&round, &fr.spec.data.vaults[2], "img:1");
        let pod = pod_spec(&j);
        assert!(pod.init_containers.is_none());
        let claim = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find_map(|v| v.persistent_volume_claim.clone())
            .unwrap();
        assert_eq!(claim.claim_name, "hospital-c-data");
        assert_eq!(claim.read_only, Some(true));
        let mounts = pod.containers[0].volume_mounts.as_ref().unwrap();
        let vault = mounts.iter().find(|m| m.name == VAULT_VOLUME).unwrap();
        assert_eq!(vault.mount_path, "/mnt/vault");
        assert_eq!(vault.read_only, Some(true));
    }

    #[test]
    fn gpus_are_limits_and_cpu_memory_are_guaranteed() {
        let fr = round_fixture();
        let round = Round::new(&fr).unwrap();
        let j = job(&round, &fr.spec.data.vaults[0], "img:1");
        let r = pod_spec(&j).containers[0].resources.clone().unwrap();
        let limits = r.limits.unwrap();
        assert_eq!(limits[GPU_RESOURCE], Quantity("1".into()));
        assert_eq!(limits["cpu"], Quantity("2".into()));
        assert_eq!(limits["memory"], Quantity("4Gi".into()));
        let requests = r.requests.unwrap();
        assert!(!requests.contains_key(GPU_RESOURCE));
        assert_eq!(requests["cpu"], Quantity("2".into()));
        assert_eq!(resources(&AgentResources::default()), None);
        let gpu_only = resources(&AgentResources {
            gpus: 2,
            ..AgentResources::default()
        })
        .unwrap();
        assert_eq!(gpu_only.requests, None);
        assert_eq!(gpu_only.limits.unwrap()[GPU_RESOURCE], Quantity("2".into()));
    }

    #[test]
    fn libtorch_gets_as_many_threads_as_the_cpu_limit() {
        let fr = round_fixture();
        let round = Round::new(&fr).unwrap();
        let j = job(&round, &fr.spec.data.vaults[0], "img:1");
        let env = pod_spec(&j).containers[0].env.clone().unwrap();
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].name, TORCH_THREADS_ENV);
        assert_eq!(env[0].value.as_deref(), Some("2"));
        let threads = |cpu: &str| {
            torch_threads(&AgentResources {
                cpu: Some(Quantity(cpu.into())),
                ..AgentResources::default()
            })
        };
        assert_eq!(threads("4"), Some(4));
        assert_eq!(threads("1500m"), Some(2));
        assert_eq!(threads("0.5"), Some(1));
        assert_eq!(threads("250m"), Some(1));
        assert_eq!(threads("0"), None);
        assert_eq!(threads("lots"), None);
        assert_eq!(torch_threads(&AgentResources::default()), None);
    }
}
