"""Custom checkov checks for scripts/security-scan.sh (--external-checks-dir).

checkov's own CKV2_K8S_5 ("No ServiceAccount/Node should be able to read
all secrets") misses a ClusterRole whose Secrets rule is not its first rule
(checkov 3.3.30: it passes the chart's cluster-wide ClusterRole), and no
built-in check looks at a ClusterRole that can create workloads everywhere
(which reaches every ServiceAccount: a pod may name any ServiceAccount of
its namespace). These two make both grants visible, so they are either
absent or justified in scripts/security-scan/checkov-skips.txt.
"""
from __future__ import annotations

from typing import Any

from checkov.common.models.enums import CheckResult
from checkov.kubernetes.checks.resource.base_rbac_check import BaseRbacK8sCheck, RbacOperation


class _AnyOperation(BaseRbacK8sCheck):
    """Fails a ClusterRole with a rule (without resourceNames) granting any
    one of failing_operations."""

    def scan_spec_conf(self, conf: dict[str, Any]) -> CheckResult:
        rules = conf.get("rules")
        if not isinstance(rules, list):
            return CheckResult.PASSED
        for rule in rules:
            if not isinstance(rule, dict) or rule.get("resourceNames"):
                continue
            if any(self.rule_can(rule, op) for op in self.failing_operations):
                return CheckResult.FAILED
        return CheckResult.PASSED


class ClusterRoleReadsAllSecrets(_AnyOperation):
    def __init__(self) -> None:
        super().__init__(
            name="ClusterRole reads Secrets in every namespace",
            id="CKV_MODELPUB_1",
            supported_entities=["ClusterRole"],
        )
        self.failing_operations = [
            RbacOperation(apigroups=[""], verbs=["get", "list", "watch"], resources=["secrets"]),
        ]


class ClusterRoleWritesWorkloads(_AnyOperation):
    def __init__(self) -> None:
        super().__init__(
            name="ClusterRole creates or changes workloads (pods) in every namespace",
            id="CKV_MODELPUB_2",
            supported_entities=["ClusterRole"],
        )
        write = ["create", "update", "patch"]
        self.failing_operations = [
            RbacOperation(apigroups=[""], verbs=write, resources=["pods", "replicationcontrollers"]),
            RbacOperation(
                apigroups=["apps"],
                verbs=write,
                resources=["deployments", "replicasets", "statefulsets", "daemonsets"],
            ),
            RbacOperation(apigroups=["batch"], verbs=write, resources=["jobs", "cronjobs"]),
        ]


reads_secrets = ClusterRoleReadsAllSecrets()
writes_workloads = ClusterRoleWritesWorkloads()
