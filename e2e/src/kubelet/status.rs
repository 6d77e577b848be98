//! What the kubelet reports for a pod: its containers' states and the pod
//! phase and conditions derived from them, as a `PodStatus`.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub fn now() -> Time {
    Time(Timestamp::now())
}

/// One container's state as the kubelet saw it last.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started: Time,
    },
    Terminated {
        exit_code: i32,
        signal: Option<i32>,
        started: Option<Time>,
        finished: Time,
    },
}

impl RunState {
    pub fn waiting(reason: &str, message: Option<String>) -> Self {
        Self::Waiting {
            reason: reason.into(),
            message,
        }
    }

    fn to_api(&self) -> ContainerState {
        match self {
            RunState::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..ContainerState::default()
            },
            RunState::Running { started } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(started.clone()),
                }),
                ..ContainerState::default()
            },
            RunState::Terminated {
                exit_code,
                signal,
                started,
                finished,
            } => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: *exit_code,
                    signal: *signal,
                    reason: Some(
                        if *exit_code == 0 {
                            "Completed"
                        } else {
                            "Error"
                        }
                        .into(),
                    ),
                    started_at: started.clone(),
                    finished_at: Some(finished.clone()),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            },
        }
    }
}

/// A container's record: state, previous termination, restarts, readiness.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRecord {
    pub name: String,
    pub image: String,
    pub state: RunState,
    pub last_terminated: Option<RunState>,
    pub restart_count: i32,
    pub ready: bool,
    /// Whether the container will not be started again (exited under its
    /// restart policy, or the pod is stopping).
    pub done: bool,
}

impl ContainerRecord {
    pub fn new(name: &str, image: &str) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            state: RunState::waiting("PodInitializing", None),
            last_terminated: None,
            restart_count: 0,
            ready: false,
            done: false,
        }
    }

    fn exit_code(&self) -> Option<i32> {
        match &self.state {
            RunState::Terminated { exit_code, .. } => Some(*exit_code),
            _ => None,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.done && self.exit_code() == Some(0)
    }

    pub fn failed(&self) -> bool {
        self.done && self.exit_code().is_some_and(|c| c != 0)
    }

    fn to_api(&self) -> ContainerStatus {
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: String::new(),
            ready: self.ready,
            restart_count: self.restart_count,
            started: Some(matches!(self.state, RunState::Running { .. })),
            state: Some(self.state.to_api()),
            last_state: self.last_terminated.as_ref().map(RunState::to_api),
            ..ContainerStatus::default()
        }
    }
}

/// Why a pod cannot start (an image that cannot run here, a missing
/// Secret, an unsupported volume): it stays Pending with this reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked {
    pub reason: String,
    pub message: String,
}

/// Everything the kubelet knows about one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRecord {
    pub pod_ip: Option<Ipv4Addr>,
    pub started: Time,
    pub init: Vec<ContainerRecord>,
    pub main: Vec<ContainerRecord>,
    pub blocked: Option<Blocked>,
}

/// The pod phase from its containers' records.
pub fn phase(r: &PodRecord) -> &'static str {
    if r.blocked.is_some() {
        return "Pending";
    }
    if r.init.iter().any(ContainerRecord::failed) {
        return "Failed";
    }
    if !r.init.iter().all(ContainerRecord::succeeded) {
        return "Pending";
    }
    if !r.main.is_empty() && r.main.iter().all(|c| c.done) {
        return if r.main.iter().all(ContainerRecord::succeeded) {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    if r.main
        .iter()
        .all(|c| matches!(c.state, RunState::Waiting { .. }) && c.restart_count == 0)
    {
        return "Pending";
    }
    "Running"
}

fn condition(type_: &str, ok: bool, reason: Option<&str>, message: Option<&str>) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.map(str::to_string),
        message: message.map(str::to_string),
        last_transition_time: Some(now()),
        ..PodCondition::default()
    }
}

/// The `status` the kubelet writes through `pods/status`.
pub fn pod_status(r: &PodRecord) -> PodStatus {
    let phase = phase(r);
    let initialized = r.init.iter().all(ContainerRecord::succeeded);
    let running = phase == "Running";
    let containers_ready = running && r.main.iter().all(|c| c.ready);
    let (reason, message) = match &r.blocked {
        Some(b) => (Some(b.reason.as_str()), Some(b.message.as_str())),
        None => (None, None),
    };
    let ip = r.pod_ip.map(|ip| ip.to_string());
    PodStatus {
        phase: Some(phase.into()),
        reason: reason.map(str::to_string),
        message: message.map(str::to_string),
        host_ip: Some(Ipv4Addr::LOCALHOST.to_string()),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        start_time: Some(r.started.clone()),
        conditions: Some(vec![
            condition("PodScheduled", true, None, None),
            condition(
                "Initialized",
                initialized && r.blocked.is_none(),
                reason.filter(|_| !initialized),
                message.filter(|_| !initialized),
            ),
            condition("ContainersReady", containers_ready, None, None),
            condition("Ready", containers_ready, reason, message),
        ]),
        init_container_statuses: (!r.init.is_empty())
            .then(|| r.init.iter().map(ContainerRecord::to_api).collect()),
        container_statuses: Some(r.main.iter().map(ContainerRecord::to_api).collect()),
        ..PodStatus::default()
    }
}

/// Whether a container that exited with `exit_code` starts again.
pub fn restarts(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terminated(code: i32) -> RunState {
        RunState::Terminated {
            exit_code: code,
            signal: None,
            started: None,
            finished: now(),
        }
    }

    fn record() -> PodRecord {
        PodRecord {
            pod_ip: Some(Ipv4Addr::new(127, 5, 0, 1)),
            started: now(),
            init: vec![ContainerRecord::new("seal", "img")],
            main: vec![ContainerRecord::new("main", "img")],
            blocked: None,
        }
    }

    #[test]
    fn phases_follow_init_then_main_containers() {
        let mut r = record();
        assert_eq!(phase(&r), "Pending");
        r.init[0].state = terminated(0);
        r.init[0].done = true;
        assert_eq!(phase(&r), "Pending");
        r.main[0].state = RunState::Running { started: now() };
        assert_eq!(phase(&r), "Running");
        r.main[0].state = terminated(0);
        assert_eq!(phase(&r), "Running", "not done: it restarts");
        r.main[0].done = true;
        assert_eq!(phase(&r), "Succeeded");
        r.main[0].state = terminated(3);
        assert_eq!(phase(&r), "Failed");
        let mut r = record();
        r.init[0].state = terminated(1);
        r.init[0].done = true;
        assert_eq!(phase(&r), "Failed");
    }

    #[test]
    fn a_blocked_pod_is_pending_with_its_reason() {
        let mut r = record();
        r.blocked = Some(Blocked {
            reason: "ImageNotRunnable".into(),
            message: "image `nginx` cannot run".into(),
        });
        let s = pod_status(&r);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(s.reason.as_deref(), Some("ImageNotRunnable"));
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.message.as_deref(), Some("image `nginx` cannot run"));
    }

    #[test]
    fn statuses_carry_exit_codes_restarts_and_readiness() {
        let mut r = record();
        r.init[0].state = terminated(0);
        r.init[0].done = true;
        r.main[0].state = RunState::Running { started: now() };
        r.main[0].last_terminated = Some(terminated(2));
        r.main[0].restart_count = 1;
        r.main[0].ready = true;
        let s = pod_status(&r);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("127.5.0.1"));
        let c = &s.container_statuses.unwrap()[0];
        assert_eq!(c.restart_count, 1);
        assert!(c.ready);
        let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (2, Some("Error")));
        let init = &s.init_container_statuses.unwrap()[0];
        assert_eq!(
            init.state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            0
        );
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
    }

    #[test]
    fn restart_policies() {
        assert!(restarts("Always", 0));
        assert!(restarts("Always", 1));
        assert!(!restarts("OnFailure", 0));
        assert!(restarts("OnFailure", 1));
        assert!(!restarts("Never", 1));
    }
}
