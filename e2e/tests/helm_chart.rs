//! The helm chart (`charts/modelpub`) checked with the real helm binary:
//! lint, values schema, and every rendered object decoded strictly into its
//! k8s-openapi type, with the security, label and RBAC rules the issue sets.
//! helm comes from `scripts/setup.sh` (`.tools/bin/helm`) or PATH.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::rbac::v1::PolicyRule;
use modelpub_e2e::helm::{chart_dir, helm, repo_root, template};
use modelpub_e2e::manifest::{self, ManifestError, Object, Rendered};
use modelpub_e2e::rbac::{self, Grant};
use modelpub_operator::rbac::{Scope, chart_grants};
use serde_json::{Value, json};

const RELEASE: &str = "mp";
const NAMESPACE: &str = "modelpub-system";

/// What the chart must grant in `scope`: exactly
/// `modelpub_operator::rbac::chart_grants()`, the requests the reconcilers'
/// mocked-API scenarios record (each checked against `REQUIRED`, and every
/// entry exercised) plus the admission-only `finalizers` updates.
fn expected_grants(scope: Scope) -> BTreeSet<Grant> {
    chart_grants()
        .into_iter()
        .filter(|(s, _)| *s == scope)
        .map(|(_, grant)| grant)
        .collect()
}

fn render(extra: &[&str]) -> Vec<Rendered> {
    let yaml = template(RELEASE, NAMESPACE, extra);
    manifest::decode_all(&yaml).unwrap_or_else(|e| panic!("rendered chart is not strict: {e}"))
}

fn of_kind<'a>(objects: &'a [Rendered], kind: &str) -> Vec<&'a Rendered> {
    objects.iter().filter(|o| o.object.kind() == kind).collect()
}

fn only<'a>(objects: &'a [Rendered], kind: &str) -> &'a Rendered {
    match of_kind(objects, kind).as_slice() {
        [one] => one,
        many => panic!("expected exactly one {kind}, found {}", many.len()),
    }
}

/// The one object of `kind` whose name ends with `suffix`.
fn named<'a>(objects: &'a [Rendered], kind: &str, suffix: &str) -> &'a Rendered {
    let matching: Vec<&Rendered> = of_kind(objects, kind)
        .into_iter()
        .filter(|o| {
            o.json
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    match matching.as_slice() {
        [one] => one,
        many => panic!(
            "expected exactly one {kind} named *{suffix}, found {}",
            many.len()
        ),
    }
}

fn deployment(objects: &[Rendered]) -> Deployment {
    match &only(objects, "Deployment").object {
        Object::Deployment(d) => (**d).clone(),
        other => panic!("not a Deployment: {other:?}"),
    }
}

fn operator_container(d: &Deployment) -> Container {
    let pod = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    match pod.containers.as_slice() {
        [c] => c.clone(),
        cs => panic!("expected one container, found {}", cs.len()),
    }
}

fn grants_of(rules: Option<&[PolicyRule]>) -> BTreeSet<Grant> {
    rbac::grants(rules.unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"))
}

fn assert_same_grants(what: &str, granted: &BTreeSet<Grant>, needed: &BTreeSet<Grant>) {
    if let Some(problem) = rbac::mismatch(granted, needed) {
        panic!("{what} differs from the expected requests: {problem}");
    }
}

#[test]
fn lint_is_clean_also_in_strict_mode() {
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    for args in [vec!["lint", chart], vec!["lint", "--strict", chart]] {
        let run = helm(&args);
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(run.success, "helm {} failed:\n{all}", args.join(" "));
        assert!(
            !all.contains("[WARNING]") && !all.contains("[ERROR]"),
            "helm {} reports problems:\n{all}",
            args.join(" ")
        );
    }
}

#[test]
fn default_render_is_the_expected_set_of_strictly_typed_objects() {
    let objects = render(&[]);
    let kinds: Vec<&str> = objects.iter().map(|o| o.object.kind()).collect();
    let mut sorted = kinds.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "Service",
            "ServiceAccount",
        ],
        "rendered kinds: {kinds:?}"
    );
    for o in &objects {
        let ns = o
            .json
            .pointer("/metadata/namespace")
            .and_then(Value::as_str);
        match o.object.kind() {
            "ClusterRole" | "ClusterRoleBinding" => {
                assert_eq!(ns, None, "{} is cluster-scoped", o.object.kind())
            }
            kind => assert_eq!(
                ns,
                Some(NAMESPACE),
                "{kind} must live in the release namespace"
            ),
        }
    }
}

#[test]
fn a_misspelt_field_fails_with_its_path() {
    let good = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: x
spec:
  replicas: 1
  selector:
    matchLabels: {app: x}
  template:
    metadata:
      labels: {app: x}
    spec:
      containers:
        - name: x
          image: x:1
          imagePullPolicy: IfNotPresent
"#;
    manifest::decode_all(good).expect("a correct Deployment passes");

    let bad = good.replace("imagePullPolicy", "imagePullPolicyy");
    let err = manifest::decode_all(&bad).expect_err("a misspelt field must fail");
    match &err {
        ManifestError::UnknownFields {
            kind, differences, ..
        } => {
            assert_eq!(kind, "Deployment");
            assert_eq!(
                differences,
                &["/spec/template/spec/containers/0/imagePullPolicyy: dropped (unknown field)"]
            );
        }
        other => panic!("wrong error: {other}"),
    }
    assert!(err.to_string().contains("imagePullPolicyy"), "{err}");

    let bad_top = good.replace("  replicas: 1", "  replica: 1");
    let err = manifest::decode_all(&bad_top).expect_err("a misspelt spec field must fail");
    assert!(err.to_string().contains("/spec/replica: dropped"), "{err}");

    let unknown_kind = "apiVersion: v1\nkind: Secrett\nmetadata: {name: s}\n";
    let err = manifest::decode_all(unknown_kind).expect_err("an unknown kind must fail");
    assert!(err.to_string().contains("Secrett"), "{err}");
}

#[test]
fn values_schema_rejects_bad_values() {
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "operator.replicas=foo"], "replicas"),
        (&["--set", "replicas=2"], "replicas"),
        (&["--set", "serviceMonitor.enabeld=true"], "enabeld"),
        (
            &["--set", "operator.image.pullPolicy=Sometimes"],
            "pullPolicy",
        ),
        (&["--set", "metrics.port=80"], "port"),
        (&["--set", "serviceMonitor.interval=soon"], "interval"),
        (
            &[
                "--set",
                "operator.replicas=2",
                "--set",
                "leaderElection.enabled=false",
            ],
            "leaderElection.enabled",
        ),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["template", RELEASE, chart];
        args.extend_from_slice(extra);
        let run = helm(&args);
        assert!(
            !run.success,
            "helm {} should fail but rendered",
            args.join(" ")
        );
        assert!(
            run.stderr.contains(needle),
            "helm {}: error should name `{needle}`:\n{}",
            args.join(" "),
            run.stderr
        );
    }
    // The values a user is told to set are accepted.
    render(&[
        "--set",
        "operator.replicas=3",
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "serviceMonitor.labels.release=kube-prometheus-stack",
        "--set",
        "dashboard.enabled=false",
        "--set",
        "operator.image.tag=0.2.0",
    ]);
}

#[test]
fn operator_pod_meets_the_restricted_pod_security_standard() {
    let d = deployment(&render(&[]));
    let pod = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    let psc = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_ne!(psc.run_as_user, Some(0));
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    assert!(pod.host_network.is_none() && pod.host_pid.is_none() && pod.host_ipc.is_none());
    for v in pod.volumes.iter().flatten() {
        assert!(
            v.host_path.is_none(),
            "{}: hostPath volumes are not allowed under restricted",
            v.name
        );
    }
    for c in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        let sc = c
            .security_context
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no securityContext", c.name));
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
        assert_ne!(sc.privileged, Some(true), "{}", c.name);
        let caps = sc.capabilities.as_ref().expect("capabilities");
        assert_eq!(
            caps.drop.as_deref(),
            Some(&["ALL".to_string()][..]),
            "{}",
            c.name
        );
        assert!(caps.add.is_none(), "{}: adds capabilities", c.name);
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault"),
            "{}",
            c.name
        );
    }
}

#[test]
fn operator_runs_with_the_agreed_flags_probes_and_images() {
    let d = deployment(&render(&[]));
    let c = operator_container(&d);
    assert_eq!(
        c.image.as_deref(),
        Some("ghcr.io/modelpub/modelpub-operator:0.1.0")
    );
    assert_eq!(
        c.args.as_deref().unwrap_or_default(),
        [
            "--metrics-addr",
            "0.0.0.0:8080",
            "--node-agent-image",
            "ghcr.io/modelpub/modelpub-node-agent:0.1.0",
            "--federation-listen",
            "0.0.0.0:7450",
            "--watch-namespaces",
            NAMESPACE,
            "--metrics-from-namespaces",
            NAMESPACE,
            "--lease-namespace",
            "$(POD_NAMESPACE)",
        ]
    );
    let env = c.env.as_deref().unwrap_or_default();
    let pod_ns = env
        .iter()
        .find(|e| e.name == "POD_NAMESPACE")
        .expect("POD_NAMESPACE env");
    assert_eq!(
        pod_ns
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("metadata.namespace"),
        "POD_NAMESPACE comes from the downward API"
    );
    assert!(
        env.iter()
            .any(|e| e.name == "RUST_LOG" && e.value.as_deref() == Some("info"))
    );

    let port = c.ports.as_deref().unwrap_or_default();
    assert!(
        port.iter()
            .any(|p| p.name.as_deref() == Some("metrics") && p.container_port == 8080),
        "named metrics port 8080: {port:?}"
    );
    for (probe, path) in [
        (&c.liveness_probe, "/healthz"),
        (&c.readiness_probe, "/readyz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("HTTP probe");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("metrics".into())
        );
    }

    let custom = deployment(&render(&[
        "--set",
        "metrics.port=9090",
        "--set",
        "operator.image.tag=0.2.0",
        "--set",
        "nodeAgent.image.repository=registry.example/na",
        "--set",
        "operator.logLevel=debug",
    ]));
    let c = operator_container(&custom);
    let args = c.args.unwrap_or_default();
    assert!(args.contains(&"0.0.0.0:9090".to_string()), "{args:?}");
    assert!(
        args.contains(&"registry.example/na:0.1.0".to_string()),
        "{args:?}"
    );
    assert_eq!(
        c.image.as_deref(),
        Some("ghcr.io/modelpub/modelpub-operator:0.2.0")
    );
    assert!(
        c.env
            .unwrap_or_default()
            .iter()
            .any(|e| e.name == "RUST_LOG" && e.value.as_deref() == Some("debug"))
    );
}

#[test]
fn every_object_carries_the_recommended_labels() {
    for extra in [&[][..], &["--set", "serviceMonitor.enabled=true"][..]] {
        let objects = render(extra);
        for o in &objects {
            let what = format!(
                "{} {}",
                o.object.kind(),
                o.json.pointer("/metadata/name").unwrap_or(&Value::Null)
            );
            let labels = manifest::labels(&o.json, "/metadata/labels");
            check_labels(&what, &labels);
        }
        let d = only(&objects, "Deployment");
        let pod_labels = manifest::labels(&d.json, "/spec/template/metadata/labels");
        check_labels("operator pod template", &pod_labels);
        for (what, selector) in [
            (
                "Deployment selector",
                manifest::labels(&d.json, "/spec/selector/matchLabels"),
            ),
            (
                "Service selector",
                manifest::labels(
                    &named(&objects, "Service", "-metrics").json,
                    "/spec/selector",
                ),
            ),
        ] {
            assert!(!selector.is_empty(), "{what} is empty");
            for (k, v) in &selector {
                assert_eq!(
                    pod_labels.get(k),
                    Some(v),
                    "{what} {k} does not match the pod"
                );
            }
            assert!(
                !selector.contains_key("app.kubernetes.io/version"),
                "{what} must survive upgrades"
            );
        }
    }
}

fn check_labels(what: &str, labels: &serde_json::Map<String, Value>) {
    let component = labels
        .get("app.kubernetes.io/component")
        .and_then(Value::as_str);
    assert!(
        matches!(component, Some("operator" | "dashboard")),
        "{what}: app.kubernetes.io/component is {component:?}"
    );
    for (key, want) in [
        ("app.kubernetes.io/name", "modelpub"),
        ("app.kubernetes.io/instance", RELEASE),
        ("app.kubernetes.io/version", "0.1.0"),
        ("app.kubernetes.io/part-of", "modelpub"),
        ("app.kubernetes.io/managed-by", "Helm"),
    ] {
        assert_eq!(
            labels.get(key).and_then(Value::as_str),
            Some(want),
            "{what}: label {key}"
        );
    }
}

/// The Role (or RoleBinding) of `kind` named `name` in `namespace`.
fn in_namespace<'a>(
    objects: &'a [Rendered],
    kind: &str,
    name: &str,
    namespace: &str,
) -> &'a Rendered {
    let found: Vec<&Rendered> = of_kind(objects, kind)
        .into_iter()
        .filter(|o| {
            o.json.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
                && o.json
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    == Some(namespace)
        })
        .collect();
    match found.as_slice() {
        [one] => one,
        many => panic!(
            "expected one {kind} {namespace}/{name}, found {}",
            many.len()
        ),
    }
}

fn role_grants(o: &Rendered) -> BTreeSet<Grant> {
    match &o.object {
        Object::ClusterRole(r) => grants_of(r.rules.as_deref()),
        Object::Role(r) => grants_of(r.rules.as_deref()),
        _ => panic!("{} is not a role", o.object.kind()),
    }
}

fn binds_the_operator(o: &Rendered, role_kind: &str, role_name: &str) {
    let (role_ref, subjects) = match &o.object {
        Object::ClusterRoleBinding(b) => (&b.role_ref, &b.subjects),
        Object::RoleBinding(b) => (&b.role_ref, &b.subjects),
        _ => panic!("{} is not a binding", o.object.kind()),
    };
    assert_eq!(role_ref.kind, role_kind);
    assert_eq!(role_ref.name, role_name);
    let subjects = subjects.as_deref().unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(subjects[0].name, OPERATOR);
    assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));
}

fn watch_flag(objects: &[Rendered]) -> Option<String> {
    let args = operator_container(&deployment(objects))
        .args
        .unwrap_or_default();
    let at = args.iter().position(|a| a == "--watch-namespaces")?;
    args.get(at + 1).cloned()
}

/// The name every RBAC object of the operator has (release `RELEASE`).
const OPERATOR: &str = "mp-modelpub-operator";

fn lease_role_is_alone_in_the_release_namespace(objects: &[Rendered]) {
    let lease = format!("{OPERATOR}-leader-election");
    let role = in_namespace(objects, "Role", &lease, NAMESPACE);
    assert_same_grants(
        "leader-election Role",
        &role_grants(role),
        &expected_grants(Scope::LeaseNamespace),
    );
    binds_the_operator(
        in_namespace(objects, "RoleBinding", &lease, NAMESPACE),
        "Role",
        &lease,
    );
}

/// The default install is namespaced: the ClusterRole holds only what a
/// Role cannot grant (nodes), the release namespace gets a Role with every
/// namespaced request, and the operator watches that namespace only.
#[test]
fn default_rbac_is_namespaced_to_the_release_namespace() {
    let objects = render(&[]);
    let cluster_role = only(&objects, "ClusterRole");
    assert_same_grants(
        "ClusterRole",
        &role_grants(cluster_role),
        &expected_grants(Scope::ClusterScoped),
    );
    binds_the_operator(
        only(&objects, "ClusterRoleBinding"),
        "ClusterRole",
        OPERATOR,
    );
    let role = in_namespace(&objects, "Role", OPERATOR, NAMESPACE);
    assert_same_grants(
        "watched-namespace Role",
        &role_grants(role),
        &expected_grants(Scope::Watched),
    );
    binds_the_operator(
        in_namespace(&objects, "RoleBinding", OPERATOR, NAMESPACE),
        "Role",
        OPERATOR,
    );
    lease_role_is_alone_in_the_release_namespace(&objects);
    assert_eq!(watch_flag(&objects).as_deref(), Some(NAMESPACE));
    let d = deployment(&objects);
    let pod = d.spec.and_then(|s| s.template.spec).expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some(OPERATOR));
}

/// `watchNamespaces` renders a Role and RoleBinding in each namespace
/// (binding the ServiceAccount of the release namespace) and passes the
/// same list to the operator.
#[test]
fn watch_namespaces_get_a_role_each() {
    let objects = render(&["--set", "watchNamespaces={research,clinic}"]);
    for ns in ["research", "clinic"] {
        let role = in_namespace(&objects, "Role", OPERATOR, ns);
        assert_same_grants(
            &format!("Role in {ns}"),
            &role_grants(role),
            &expected_grants(Scope::Watched),
        );
        binds_the_operator(
            in_namespace(&objects, "RoleBinding", OPERATOR, ns),
            "Role",
            OPERATOR,
        );
    }
    assert!(
        of_kind(&objects, "Role").iter().all(|r| {
            r.json
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                != Some(NAMESPACE)
                || r.json.pointer("/metadata/name").and_then(Value::as_str) != Some(OPERATOR)
        }),
        "the release namespace is not watched unless listed"
    );
    assert_eq!(watch_flag(&objects).as_deref(), Some("research,clinic"));
    let bad = helm(&[
        "template",
        RELEASE,
        chart_dir().to_str().unwrap(),
        "--set",
        "watchNamespaces={Research}",
    ]);
    assert!(!bad.success);
    assert!(bad.stderr.contains("watchNamespaces/0"), "{}", bad.stderr);
}

/// `rbac.clusterWide` is the explicit opt-in to every namespace: one
/// ClusterRole with every request, no per-namespace Roles, no
/// `--watch-namespaces`.
#[test]
fn cluster_wide_rbac_is_one_cluster_role() {
    let objects = render(&["--set", "rbac.clusterWide=true"]);
    let mut all = expected_grants(Scope::Watched);
    all.extend(expected_grants(Scope::ClusterScoped));
    assert_same_grants(
        "ClusterRole",
        &role_grants(only(&objects, "ClusterRole")),
        &all,
    );
    binds_the_operator(
        only(&objects, "ClusterRoleBinding"),
        "ClusterRole",
        OPERATOR,
    );
    lease_role_is_alone_in_the_release_namespace(&objects);
    assert_eq!(
        of_kind(&objects, "Role").len(),
        1,
        "only the leader-election Role"
    );
    assert_eq!(watch_flag(&objects), None);
}

#[test]
fn without_leader_election_there_is_no_lease_access_or_flag() {
    let objects = render(&["--set", "leaderElection.enabled=false"]);
    let lease = format!("{OPERATOR}-leader-election");
    for kind in ["Role", "RoleBinding"] {
        assert!(
            of_kind(&objects, kind).iter().all(|o| o
                .json
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                != Some(&lease)),
            "no leader-election {kind}"
        );
    }
    let args = operator_container(&deployment(&objects))
        .args
        .unwrap_or_default();
    assert!(!args.iter().any(|a| a == "--lease-namespace"), "{args:?}");
}

/// The PodMonitor selects exactly what the operator builds for a round:
/// pods labelled managed-by the operator with the aggregator or node-agent
/// component, on the container port both name `metrics`; in the watched
/// namespaces, or every namespace when cluster-wide.
/// Each round's NetworkPolicy admits its metrics port from the release
/// namespace (the operator reads /status) and Prometheus's namespaces, or
/// from every namespace when the restriction is turned off.
#[test]
fn round_metrics_are_open_to_the_release_and_prometheus_namespaces() {
    let flag = |objects: &[Rendered]| {
        let args = operator_container(&deployment(objects))
            .args
            .unwrap_or_default();
        let at = args.iter().position(|a| a == "--metrics-from-namespaces")?;
        args.get(at + 1).cloned()
    };
    assert_eq!(flag(&render(&[])).as_deref(), Some(NAMESPACE));
    let with_prometheus = render(&[
        "--set",
        "networkPolicy.roundMetricsFrom.namespaces={monitoring,modelpub-system}",
    ]);
    assert_eq!(
        flag(&with_prometheus).as_deref(),
        Some("modelpub-system,monitoring"),
        "the release namespace once, then Prometheus's"
    );
    let open = render(&["--set", "networkPolicy.roundMetricsFrom.restrict=false"]);
    assert_eq!(flag(&open), None);
}

#[test]
fn pod_monitor_scrapes_every_rounds_pods_when_enabled() {
    use modelpub_operator::controllers::federation_round::build::aggregator::METRICS_PORT_NAME;
    use modelpub_operator::labels::{COMPONENT, Component, MANAGED_BY, MANAGER};

    assert!(
        of_kind(&render(&[]), "PodMonitor").is_empty(),
        "off by default"
    );
    let objects = render(&[
        "--set",
        "podMonitor.enabled=true",
        "--set",
        "watchNamespaces={research,clinic}",
        "--set",
        "podMonitor.labels.release=kube-prometheus",
    ]);
    let Object::PodMonitor(pm) = &only(&objects, "PodMonitor").object else {
        unreachable!()
    };
    let keys = |pointer: &str| -> BTreeSet<String> {
        manifest::labels(pm, pointer).keys().cloned().collect()
    };
    let spec: BTreeSet<String> = ["selector", "namespaceSelector", "podMetricsEndpoints"]
        .map(String::from)
        .into();
    assert_eq!(keys("/spec"), spec);
    assert_eq!(pm["metadata"]["labels"]["release"], "kube-prometheus");
    assert_eq!(
        pm["spec"]["selector"]["matchLabels"],
        json!({MANAGED_BY: MANAGER})
    );
    assert_eq!(
        pm["spec"]["selector"]["matchExpressions"],
        json!([{"key": COMPONENT, "operator": "In",
            "values": [Component::Aggregator.as_str(), Component::NodeAgent.as_str()]}])
    );
    assert_eq!(
        pm["spec"]["namespaceSelector"],
        json!({"matchNames": ["research", "clinic"]})
    );
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    let endpoint_keys: BTreeSet<String> =
        ["port", "path", "interval", "scrapeTimeout", "relabelings"]
            .map(String::from)
            .into();
    assert_eq!(keys("/spec/podMetricsEndpoints/0"), endpoint_keys);
    assert_eq!(endpoint["port"], METRICS_PORT_NAME);
    assert_eq!(endpoint["path"], "/metrics");

    let wide = render(&[
        "--set",
        "podMonitor.enabled=true",
        "--set",
        "rbac.clusterWide=true",
    ]);
    let Object::PodMonitor(pm) = &only(&wide, "PodMonitor").object else {
        unreachable!()
    };
    assert_eq!(pm["spec"]["namespaceSelector"], json!({"any": true}));
}

#[test]
fn service_monitor_scrapes_the_metrics_service_when_enabled() {
    let objects = render(&[
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "serviceMonitor.interval=15s",
    ]);
    let Object::ServiceMonitor(sm) = &only(&objects, "ServiceMonitor").object else {
        unreachable!()
    };
    // No typed model: allow only the fields this chart means to set, so a
    // misspelling still fails.
    let keys = |pointer: &str| -> BTreeSet<String> {
        manifest::labels(sm, pointer).keys().cloned().collect()
    };
    let allowed_spec: BTreeSet<String> = ["selector", "namespaceSelector", "endpoints"]
        .map(String::from)
        .into();
    assert_eq!(keys("/spec"), allowed_spec);
    let endpoints = sm
        .pointer("/spec/endpoints")
        .and_then(Value::as_array)
        .expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    let allowed_endpoint: BTreeSet<String> = ["port", "path", "interval", "scrapeTimeout"]
        .map(String::from)
        .into();
    assert_eq!(keys("/spec/endpoints/0"), allowed_endpoint);
    assert_eq!(endpoints[0]["path"], "/metrics");
    assert_eq!(endpoints[0]["interval"], "15s");
    assert_eq!(
        sm.pointer("/spec/namespaceSelector/matchNames/0"),
        Some(&Value::from(NAMESPACE))
    );

    let svc = named(&objects, "Service", "-metrics");
    let Object::Service(service) = &svc.object else {
        unreachable!()
    };
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    assert!(
        ports
            .iter()
            .any(|p| p.name.as_deref() == endpoints[0]["port"].as_str() && p.port == 8080),
        "ServiceMonitor port must name a Service port: {ports:?}"
    );
    let svc_labels = manifest::labels(&svc.json, "/metadata/labels");
    let selector = manifest::labels(sm, "/spec/selector/matchLabels");
    assert!(!selector.is_empty());
    for (k, v) in &selector {
        assert_eq!(
            svc_labels.get(k),
            Some(v),
            "ServiceMonitor selector {k} does not match the Service"
        );
    }
}

#[test]
fn dashboard_configmap_carries_the_dashboard_for_the_grafana_sidecar() {
    let chart_copy = chart_dir().join("dashboards").join("modelpub.json");
    let chart_text = std::fs::read_to_string(&chart_copy).expect("chart dashboard copy");
    let dashboard: Value = serde_json::from_str(&chart_text).expect("dashboard is JSON");
    assert!(
        dashboard
            .get("panels")
            .and_then(Value::as_array)
            .is_some_and(|p| !p.is_empty())
    );

    let objects = render(&[]);
    let cm = only(&objects, "ConfigMap");
    let Object::ConfigMap(config_map) = &cm.object else {
        unreachable!()
    };
    assert_eq!(
        manifest::labels(&cm.json, "/metadata/labels").get("grafana_dashboard"),
        Some(&Value::from("1"))
    );
    let data = config_map
        .data
        .as_ref()
        .and_then(|d| d.get("modelpub.json"))
        .expect("modelpub.json key");
    assert_eq!(
        data.trim_end(),
        chart_text.trim_end(),
        "ConfigMap carries the chart's dashboard verbatim"
    );

    assert!(of_kind(&render(&["--set", "dashboard.enabled=false"]), "ConfigMap").is_empty());
}

#[test]
fn chart_dashboard_is_a_copy_of_the_canonical_one() {
    let canonical = repo_root()
        .join("deploy")
        .join("grafana")
        .join("modelpub-dashboard.json");
    let chart_copy = chart_dir().join("dashboards").join("modelpub.json");
    let canonical_text = std::fs::read(&canonical)
        .unwrap_or_else(|e| panic!("{}: {e}; the chart ships a copy of it", canonical.display()));
    let copy_text = std::fs::read(&chart_copy).expect("chart dashboard copy");
    assert!(
        canonical_text == copy_text,
        "{} differs from {}: copy it (`cp {} {}`)",
        chart_copy.display(),
        canonical.display(),
        "deploy/grafana/modelpub-dashboard.json",
        "charts/modelpub/dashboards/modelpub.json"
    );
}

#[test]
fn crds_render_strictly_and_are_covered_by_the_watched_namespace_role() {
    let objects = render(&["--include-crds"]);
    let crds: Vec<_> = of_kind(&objects, "CustomResourceDefinition")
        .into_iter()
        .map(|o| match &o.object {
            Object::CustomResourceDefinition(crd) => (**crd).clone(),
            _ => unreachable!(),
        })
        .collect();
    let names: BTreeSet<String> = crds
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let want: BTreeSet<String> = [
        "computeoffers.modelpub.io",
        "federationrounds.modelpub.io",
        "trustdomains.modelpub.io",
    ]
    .map(String::from)
    .into();
    assert_eq!(
        names, want,
        "charts/modelpub/crds/ must hold the generated CRDs (the modelpub-crds generator writes them)"
    );
    let granted = role_grants(in_namespace(&objects, "Role", OPERATOR, NAMESPACE));
    for crd in &crds {
        let plural = &crd.spec.names.plural;
        // What every controller needs on its kind: a watch (list + watch) and
        // the finalizer PATCH.
        for verb in ["list", "watch", "patch"] {
            assert!(
                granted.contains(&Grant {
                    group: crd.spec.group.clone(),
                    resource: plural.clone(),
                    verb: verb.to_string(),
                }),
                "the watched-namespace Role lacks {verb} on {plural}"
            );
        }
        let has_status = crd.spec.versions.iter().any(|v| {
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        });
        assert!(
            has_status,
            "{plural}: the operator writes status through the status subresource"
        );
    }
}

#[test]
fn crd_schemas_decode_strictly_and_typos_in_them_fail() {
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.org
spec:
  group: example.org
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size: {type: integer, format: uint32, minimum: 0, maximum: 10}
                ratio: {type: number, format: double, default: 0.5}
                mode: {type: string, enum: [fast, slow], nullable: true}
                extra: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;
    manifest::decode_all(crd).expect("a correct CRD passes, integer bounds included");
    let bad = crd.replace("maximum: 10", "maximun: 10");
    let err = manifest::decode_all(&bad).expect_err("a misspelt schema keyword must fail");
    assert!(err.to_string().contains("/size/maximun: dropped"), "{err}");
}

#[test]
fn grant_comparison_names_what_is_extra_or_missing_and_refuses_wildcards() {
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..PolicyRule::default()
    };
    let needed = rbac::grants_from_table(&[("apps", "deployments", &["get", "list"])]);
    let exact = rbac::grants(&[rule(&["apps"], &["deployments"], &["get", "list"])]).expect("flat");
    assert_eq!(rbac::mismatch(&exact, &needed), None);

    let wider = rbac::grants(&[rule(
        &["apps"],
        &["deployments"],
        &["get", "list", "delete"],
    )])
    .expect("flat");
    let problem = rbac::mismatch(&wider, &needed).expect("an extra verb is a mismatch");
    assert!(
        problem.contains("granted but not needed: [delete apps/deployments]"),
        "{problem}"
    );

    let narrower = rbac::grants(&[rule(&["apps"], &["deployments"], &["get"])]).expect("flat");
    let problem = rbac::mismatch(&narrower, &needed).expect("a missing verb is a mismatch");
    assert!(
        problem.contains("needed but not granted: [list apps/deployments]"),
        "{problem}"
    );

    assert!(matches!(
        rbac::grants(&[rule(&["apps"], &["*"], &["get"])]),
        Err(rbac::RbacError::Wildcard(_))
    ));
    let mut named = rule(&[""], &["secrets"], &["get"]);
    named.resource_names = Some(vec!["one".into()]);
    assert!(matches!(
        rbac::grants(&[named]),
        Err(rbac::RbacError::Unexpected(_))
    ));
}

#[test]
fn the_federation_endpoint_is_a_load_balancer_on_its_own_port_and_can_be_turned_off() {
    let objects = render(&[]);
    let svc = named(&objects, "Service", "-operator-federation");
    let Object::Service(service) = &svc.object else {
        unreachable!()
    };
    let spec = service.spec.clone().unwrap_or_default();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    let ports = spec.ports.unwrap_or_default();
    assert_eq!(ports.len(), 1, "only the federation port is exposed");
    assert_eq!(ports[0].port, 7450);
    let c = operator_container(&deployment(&objects));
    assert!(
        c.ports
            .unwrap_or_default()
            .iter()
            .any(|p| p.name.as_deref() == Some("federation") && p.container_port == 7450),
        "the operator container names its federation port"
    );
    let off = render(&["--set", "federation.enabled=false"]);
    assert_eq!(
        of_kind(&off, "Service").len(),
        1,
        "only the metrics Service"
    );
    let args = operator_container(&deployment(&off))
        .args
        .unwrap_or_default();
    assert!(!args.iter().any(|a| a == "--federation-listen"), "{args:?}");
    let cluster_ip = render(&["--set", "federation.service.type=ClusterIP"]);
    let Object::Service(s) = &named(&cluster_ip, "Service", "-operator-federation").object else {
        unreachable!()
    };
    assert_eq!(
        s.spec.as_ref().and_then(|s| s.type_.as_deref()),
        Some("ClusterIP")
    );
}

#[test]
fn images_pin_by_digest_and_tracing_and_extra_env_reach_the_operator() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let objects = render(&[
        "--set",
        &format!("operator.image.digest={digest}"),
        "--set",
        &format!("nodeAgent.image.digest={digest}"),
        "--set",
        "tracing.otlpEndpoint=http://otel-collector.observability:4317",
        "--set",
        "operator.extraEnv[0].name=HTTPS_PROXY",
        "--set",
        "operator.extraEnv[0].value=http://proxy:3128",
    ]);
    let c = operator_container(&deployment(&objects));
    assert_eq!(
        c.image.as_deref(),
        Some(format!("ghcr.io/modelpub/modelpub-operator@{digest}").as_str())
    );
    let args = c.args.clone().unwrap_or_default();
    let at = args.iter().position(|a| a == "--node-agent-image").unwrap();
    assert_eq!(
        args[at + 1],
        format!("ghcr.io/modelpub/modelpub-node-agent@{digest}")
    );
    let env = c.env.unwrap_or_default();
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        value("OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
        Some("http://otel-collector.observability:4317")
    );
    assert_eq!(value("HTTPS_PROXY").as_deref(), Some("http://proxy:3128"));
    // A malformed digest is refused by the values schema.
    let run = helm(&[
        "template",
        "x",
        chart_dir().to_str().unwrap(),
        "--set",
        "operator.image.digest=latest",
    ]);
    assert!(
        !run.success,
        "a digest that is not sha256:<hex> must be refused"
    );
    // Without a digest: the tag, and no OTLP variable.
    let c = operator_container(&deployment(&render(&[])));
    assert!(c.image.as_deref().unwrap().ends_with(":0.1.0"));
    assert!(
        !c.env
            .unwrap_or_default()
            .iter()
            .any(|e| e.name == "OTEL_EXPORTER_OTLP_ENDPOINT")
    );
}

#[test]
fn the_operator_pod_admits_only_metrics_and_federation_traffic_and_can_have_a_pdb() {
    let objects = render(&[]);
    assert!(
        of_kind(&objects, "PodDisruptionBudget").is_empty(),
        "off by default"
    );
    let Object::NetworkPolicy(np) = &only(&objects, "NetworkPolicy").object else {
        unreachable!()
    };
    let spec = np.spec.clone().unwrap();
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_string()][..])
    );
    let rules = spec.ingress.unwrap();
    let ports: Vec<String> = rules
        .iter()
        .map(|r| match &r.ports.as_ref().unwrap()[0].port {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => s.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(ports, ["metrics", "federation"]);
    assert!(
        rules[1].from.is_none(),
        "the federation port admits any source"
    );
    let selector = spec.pod_selector.unwrap().match_labels.unwrap_or_default();
    let d = only(&objects, "Deployment");
    let pod_labels = manifest::labels(&d.json, "/spec/template/metadata/labels");
    for (k, v) in &selector {
        assert_eq!(
            pod_labels.get(k).and_then(Value::as_str),
            Some(v.as_str()),
            "the policy selects the operator pod"
        );
    }
    let without = render(&[
        "--set",
        "networkPolicy.enabled=false",
        "--set",
        "federation.enabled=false",
    ]);
    assert!(of_kind(&without, "NetworkPolicy").is_empty());
    let with_pdb = render(&[
        "--set",
        "podDisruptionBudget.enabled=true",
        "--set",
        "operator.replicas=2",
    ]);
    let Object::PodDisruptionBudget(pdb) = &only(&with_pdb, "PodDisruptionBudget").object else {
        unreachable!()
    };
    let spec = pdb.spec.clone().unwrap();
    assert_eq!(
        spec.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
}

#[test]
fn notes_warn_that_the_default_images_are_not_published() {
    let notes = |extra: &[&str]| {
        let chart = chart_dir();
        let mut args = vec![
            "install",
            "--dry-run=client",
            RELEASE,
            chart.to_str().unwrap(),
            "-n",
            NAMESPACE,
        ];
        args.extend_from_slice(extra);
        let run = helm(&args);
        assert!(run.success, "helm install --dry-run: {}", run.stderr);
        run.stdout
            .split_once("NOTES:")
            .map(|(_, n)| n.to_string())
            .unwrap_or_default()
    };
    let default = notes(&[]);
    assert!(default.contains("ImagePullBackOff"), "{default}");
    assert!(default.contains("federation"), "{default}");
    let own = notes(&[
        "--set",
        "operator.image.repository=registry.example/modelpub-operator",
        "--set",
        "nodeAgent.image.repository=registry.example/modelpub-node-agent",
    ]);
    assert!(!own.contains("ImagePullBackOff"), "{own}");
    // The notes say where the operator reconciles, per install mode.
    assert!(
        default.contains(&format!("only in {NAMESPACE}"))
            && default.contains(&format!("kubectl apply -n {NAMESPACE}")),
        "{default}"
    );
    let wide = notes(&["--set", "rbac.clusterWide=true"]);
    assert!(wide.contains("in every namespace"), "{wide}");
}
