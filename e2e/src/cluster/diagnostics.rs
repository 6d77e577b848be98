//! What the suite prints when a step fails: the operator's log, the
//! Events, the objects' YAML and the last lines of every pod's log, so a
//! red CI run can be read without re-running it.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use super::Cluster;

/// How many trailing lines of each non-operator container's log to show.
const POD_LOG_TAIL: usize = 40;

impl Cluster {
    /// Everything worth reading about `namespace` after a failure.
    pub async fn diagnostics(&self, namespace: &str, operator_selector: &str) -> String {
        let mut out = String::new();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let all = pods
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let operators = pods
            .list(&ListParams::default().labels(operator_selector))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
        let containers = |p: &Pod| -> Vec<String> {
            p.spec
                .iter()
                .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
                .map(|c| c.name.clone())
                .collect()
        };
        for pod in &operators {
            for c in containers(pod) {
                out += &format!(
                    "\n===== operator log: pod {} container {c}\n{}",
                    name(pod),
                    self.container_log(namespace, &name(pod), &c)
                );
            }
        }
        let sections: [(&str, &[&str]); 4] = [
            (
                "events",
                &[
                    "get",
                    "events",
                    "-A",
                    "--sort-by=.metadata.creationTimestamp",
                ],
            ),
            (
                "ModelPub objects",
                &[
                    "get",
                    "trustdomains,computeoffers,federationrounds",
                    "-A",
                    "-o",
                    "yaml",
                ],
            ),
            (
                "workloads",
                &[
                    "get",
                    "deployments,jobs,pods,services,configmaps,networkpolicies,leases",
                    "-n",
                    namespace,
                    "-o",
                    "yaml",
                ],
            ),
            ("secrets (names only)", &["get", "secrets", "-n", namespace]),
        ];
        for (title, args) in sections {
            let run = self.tools.kubectl(args);
            out += &format!(
                "\n===== {title}: kubectl {}\n{}{}",
                args.join(" "),
                run.stdout,
                run.stderr
            );
        }
        for pod in all
            .iter()
            .filter(|p| !operators.iter().any(|o| name(o) == name(p)))
        {
            for c in containers(pod) {
                let log = self.container_log(namespace, &name(pod), &c);
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(POD_LOG_TAIL)..].join("\n");
                out += &format!(
                    "\n===== log tail: pod {} container {c}\n{tail}\n",
                    name(pod)
                );
            }
        }
        out
    }
}
