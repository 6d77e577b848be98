//! The test-only API server against the documented behaviour of the real
//! Kubernetes API server, verb by verb (status codes, Status bodies, the
//! fields the server sets), through kube::Client and the real kubectl.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use modelpub_e2e::apiserver::{ApiServer, install};
use serde_json::{Value, json};

fn root() -> PathBuf {
    modelpub_e2e::helm::repo_root()
}

/// A raw request: (status code, JSON body).
async fn call(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| match b {
        Value::String(s) => s.into_bytes(),
        other => other.to_string().into_bytes(),
    });
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .header("accept", "application/json")
        .body(kube::client::Body::from(body.unwrap_or_default()))
        .expect("request");
    let response = client.send(request).await.expect("send");
    let code = response.status().as_u16();
    let bytes = response.into_body().collect_bytes().await.expect("body");
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (code, value)
}

const JSON: &str = "application/json";

async fn start() -> (ApiServer, kube::Client) {
    let server = ApiServer::start().await.expect("start the API server");
    let client = server
        .client(&server.admin_token())
        .await
        .expect("admin client");
    (server, client)
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.split("\n---")
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|d| serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

async fn install_chart_crds(client: &kube::Client) {
    let crds = install::install_crds(client, &root().join("charts/modelpub/crds"))
        .await
        .unwrap();
    assert_eq!(crds.len(), 3);
}

async fn namespace(client: &kube::Client, name: &str) {
    let (code, body) = call(
        client,
        "POST",
        "/api/v1/namespaces",
        JSON,
        Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})),
    )
    .await;
    assert_eq!(code, 201, "{body}");
}

/// Every namespace carries `kubernetes.io/metadata.name` with its own
/// name, which a client cannot change or remove (round NetworkPolicies
/// select namespaces by it).
/// https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/#automatic-labelling
#[tokio::test]
async fn namespaces_are_labelled_with_their_name() {
    let (_server, client) = start().await;
    namespace(&client, "research").await;
    let path = "/api/v1/namespaces/research";
    let (_, ns) = call(&client, "GET", path, JSON, None).await;
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "research"
    );
    let mut changed = ns.clone();
    changed["metadata"]["labels"] = json!({"kubernetes.io/metadata.name": "other", "team": "a"});
    let (code, after) = call(&client, "PUT", path, JSON, Some(changed)).await;
    assert_eq!(code, 200, "{after}");
    assert_eq!(
        after["metadata"]["labels"],
        json!({"kubernetes.io/metadata.name": "research", "team": "a"})
    );
}

fn configmap(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

fn trust_domain() -> Value {
    yaml_documents(&root().join("deploy/examples/trust-domain.yaml")).remove(0)
}

const TD: &str = "/apis/modelpub.io/v1alpha1/namespaces/modelpub/trustdomains";

#[tokio::test]
async fn discovery_lists_builtin_and_registered_kinds() {
    let (_server, client) = start().await;
    let (code, version) = call(&client, "GET", "/version", JSON, None).await;
    assert_eq!((code, version["major"].as_str()), (200, Some("1")));
    let (_, api) = call(&client, "GET", "/api", JSON, None).await;
    assert_eq!(api["versions"], json!(["v1"]));
    let (_, core) = call(&client, "GET", "/api/v1", JSON, None).await;
    let names: Vec<&str> = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        names.contains(&"pods") && names.contains(&"pods/status") && names.contains(&"secrets"),
        "{names:?}"
    );
    let (_, groups) = call(&client, "GET", "/apis", JSON, None).await;
    assert!(!groups.to_string().contains("modelpub.io"));
    install_chart_crds(&client).await;
    let (_, groups) = call(&client, "GET", "/apis", JSON, None).await;
    assert_eq!(groups["kind"], "APIGroupList");
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "modelpub.io"),
        "{groups}"
    );
    let (code, list) = call(&client, "GET", "/apis/modelpub.io/v1alpha1", JSON, None).await;
    assert_eq!(code, 200);
    let td = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "trustdomains")
        .expect("trustdomains served");
    assert_eq!(
        (td["kind"].as_str(), td["namespaced"].as_bool()),
        (Some("TrustDomain"), Some(true))
    );
    let crd: Value = client
        .request(
            http::Request::get(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/trustdomains.modelpub.io",
            )
            .body(vec![])
            .unwrap(),
        )
        .await
        .unwrap();
    let conditions = crd["status"]["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    );
}

#[tokio::test]
async fn unauthenticated_requests_get_401() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client("not-a-token").await.unwrap();
    let (code, body) = call(&client, "GET", "/api/v1/namespaces", JSON, None).await;
    assert_eq!(code, 401);
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
    );
}

#[tokio::test]
async fn rbac_denies_what_no_role_grants() {
    let (server, admin) = start().await;
    namespace(&admin, "ns").await;
    let sa = server
        .client(&server.service_account_token("ns", "sa"))
        .await
        .unwrap();
    let (code, body) = call(&sa, "GET", "/api/v1/namespaces/ns/secrets", JSON, None).await;
    assert_eq!(code, 403);
    assert_eq!(body["reason"], "Forbidden");
    assert_eq!(
        body["message"],
        "secrets is forbidden: User \"system:serviceaccount:ns:sa\" cannot list resource \"secrets\" in API group \"\" in the namespace \"ns\""
    );
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "e2e:read"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "read"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "e2e:read"},
        "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}]});
    assert_eq!(
        call(
            &admin,
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/ns/roles",
            JSON,
            Some(role)
        )
        .await
        .0,
        201
    );
    assert_eq!(
        call(
            &admin,
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/ns/rolebindings",
            JSON,
            Some(binding)
        )
        .await
        .0,
        201
    );
    assert_eq!(
        call(&sa, "GET", "/api/v1/namespaces/ns/secrets", JSON, None)
            .await
            .0,
        200
    );
    // The Role grants list in `ns` only, and no other verb.
    let (code, body) = call(&sa, "GET", "/api/v1/secrets", JSON, None).await;
    assert_eq!(code, 403);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with("at the cluster scope"),
        "{body}"
    );
    let (code, body) = call(&sa, "GET", "/api/v1/namespaces/ns/secrets/x", JSON, None).await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "secrets \"x\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot get resource \"secrets\" in API group \"\" in the namespace \"ns\""
    );
}

#[tokio::test]
async fn create_sets_server_fields_and_get_answers_404_like_the_real_server() {
    let (_server, client) = start().await;
    let (code, created) = call(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        JSON,
        Some(configmap("c", json!({}))),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let meta = &created["metadata"];
    assert!(
        meta["uid"].as_str().is_some_and(|u| u.len() == 36),
        "{meta}"
    );
    assert!(
        meta["resourceVersion"]
            .as_str()
            .is_some_and(|rv| rv.parse::<u64>().is_ok())
    );
    assert!(
        meta["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(meta["namespace"], "default");
    let (code, got) = call(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps/c",
        JSON,
        None,
    )
    .await;
    assert_eq!((code, &got["metadata"]["uid"]), (200, &meta["uid"]));
    let (code, again) = call(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        JSON,
        Some(configmap("c", json!({}))),
    )
    .await;
    assert_eq!(
        (code, again["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    assert_eq!(again["message"], "configmaps \"c\" already exists");
    let (code, bad) = call(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        JSON,
        Some(configmap("Bad_Name", json!({}))),
    )
    .await;
    assert_eq!((code, bad["reason"].as_str()), (422, Some("Invalid")));
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"),
        "{bad}"
    );
    let (code, missing) = call(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps/nope",
        JSON,
        None,
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(
        missing,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "configmaps \"nope\" not found", "reason": "NotFound", "details": {"name": "nope", "kind": "configmaps"}, "code": 404})
    );
    let (code, body) = call(
        &client,
        "POST",
        "/api/v1/namespaces/absent/configmaps",
        JSON,
        Some(configmap("c", json!({}))),
    )
    .await;
    assert_eq!(
        (code, body["message"].as_str()),
        (404, Some("namespaces \"absent\" not found"))
    );
    // A custom resource gets generation 1; a missing one names its group.
    install_chart_crds(&client).await;
    namespace(&client, "modelpub").await;
    let (code, td) = call(&client, "POST", TD, JSON, Some(trust_domain())).await;
    assert_eq!(
        (code, &td["metadata"]["generation"]),
        (201, &json!(1)),
        "{td}"
    );
    let (_, missing) = call(&client, "GET", &format!("{TD}/x"), JSON, None).await;
    assert_eq!(
        missing,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "trustdomains.modelpub.io \"x\" not found", "reason": "NotFound",
        "details": {"name": "x", "group": "modelpub.io", "kind": "trustdomains"}, "code": 404})
    );
}

#[tokio::test]
async fn unknown_resources_are_404() {
    let (_server, client) = start().await;
    for path in [
        "/apis/modelpub.io/v1alpha1/namespaces/default/trustdomains",
        "/api/v1/namespaces/default/widgets",
        "/apis/nope.io/v1/things",
    ] {
        let (code, body) = call(&client, "GET", path, JSON, None).await;
        assert_eq!(code, 404, "{path}");
        assert_eq!(
            body["message"], "the server could not find the requested resource",
            "{path}"
        );
    }
    let (code, body) = call(
        &client,
        "POST",
        "/api/v1/namespaces/default/widgets",
        JSON,
        Some(json!({})),
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (404, Some("NotFound")));
    // Installing a kind nobody serves (prometheus-operator's ServiceMonitor
    // on a cluster without it) fails naming the kind.
    let monitor = json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": "m", "namespace": "default"}});
    let err = install::create(&client, &monitor).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the server does not serve ServiceMonitor in monitoring.coreos.com/v1"
    );
}

#[tokio::test]
async fn list_filters_by_label_and_field_selectors() {
    let (_server, client) = start().await;
    for (name, labels) in [
        ("a", json!({"app": "web", "tier": "front"})),
        ("b", json!({"app": "web"})),
        ("c", json!({"app": "db"})),
    ] {
        assert_eq!(
            call(
                &client,
                "POST",
                "/api/v1/namespaces/default/configmaps",
                JSON,
                Some(configmap(name, labels))
            )
            .await
            .0,
            201
        );
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let names = |list: kube::core::ObjectList<ConfigMap>| {
        list.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
        ),
        ["a", "b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app in (db),!tier"))
                .await
                .unwrap()
        ),
        ["c"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier"))
                .await
                .unwrap()
        ),
        ["a"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app!=web"))
                .await
                .unwrap()
        ),
        ["c"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    let err = api
        .list(&ListParams::default().fields("data.k=v"))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    assert_eq!(
        (status.code, status.message.as_str()),
        (400, "field label not supported: data.k")
    );
}

#[tokio::test]
async fn watch_from_a_resource_version_sees_later_changes_in_order() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(configmap("a", json!({}))).unwrap(),
        )
        .await
        .unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    api.create(
        &PostParams::default(),
        &serde_json::from_value(configmap("b", json!({}))).unwrap(),
    )
    .await
    .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    api.delete("b", &DeleteParams::default()).await.unwrap();
    let events: Vec<_> = api
        .watch(&WatchParams::default().timeout(2), &rv)
        .await
        .unwrap()
        .take(3)
        .try_collect()
        .await
        .unwrap();
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(c) => ("ADDED".into(), c.metadata.name.clone().unwrap()),
            WatchEvent::Modified(c) => ("MODIFIED".into(), c.metadata.name.clone().unwrap()),
            WatchEvent::Deleted(c) => ("DELETED".into(), c.metadata.name.clone().unwrap()),
            other => (format!("{other:?}"), String::new()),
        })
        .collect();
    let want = [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
        .map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(seen, want);
    // A change made while watching arrives too.
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .unwrap()
        .boxed();
    let added = stream.try_next().await.unwrap().unwrap();
    assert!(matches!(added, WatchEvent::Added(_)), "{added:?}");
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "x"}})),
    )
    .await
    .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let WatchEvent::Modified(cm) = next else {
        panic!("{next:?}")
    };
    assert_eq!(cm.data.unwrap()["k"], "x");
    // With a label selector, an object entering the selection is ADDED and
    // one leaving it DELETED, as the real watch cache reports.
    let rv = api
        .get("a")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let selected = WatchParams::default().labels("pick=yes").timeout(5);
    let mut stream = api.watch(&selected, &rv).await.unwrap().boxed();
    for value in ["yes", "no"] {
        let labels = json!({"metadata": {"labels": {"pick": value}}});
        api.patch("a", &PatchParams::default(), &Patch::Merge(labels))
            .await
            .unwrap();
    }
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        kinds.push(match event {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Deleted(_) => "DELETED",
            _ => "other",
        });
    }
    assert_eq!(kinds, ["ADDED", "DELETED"]);
}

#[tokio::test]
async fn stale_update_is_409_and_noop_update_keeps_the_version() {
    let (_server, client) = start().await;
    let (_, created) = call(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        JSON,
        Some(configmap("c", json!({}))),
    )
    .await;
    let mut first = created.clone();
    first["data"]["k"] = json!("1");
    let (code, updated) = call(
        &client,
        "PUT",
        "/api/v1/namespaces/default/configmaps/c",
        JSON,
        Some(first),
    )
    .await;
    assert_eq!(code, 200);
    assert_ne!(
        updated["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    let mut stale = created.clone();
    stale["data"]["k"] = json!("2");
    let (code, body) = call(
        &client,
        "PUT",
        "/api/v1/namespaces/default/configmaps/c",
        JSON,
        Some(stale),
    )
    .await;
    assert_eq!(code, 409);
    assert_eq!(body["reason"], "Conflict");
    assert_eq!(
        body["message"],
        "Operation cannot be fulfilled on configmaps \"c\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let (_, same) = call(
        &client,
        "PUT",
        "/api/v1/namespaces/default/configmaps/c",
        JSON,
        Some(updated.clone()),
    )
    .await;
    assert_eq!(
        same["metadata"]["resourceVersion"],
        updated["metadata"]["resourceVersion"]
    );
}

#[tokio::test]
async fn status_subresource_separates_spec_and_status() {
    let (_server, client) = start().await;
    install_chart_crds(&client).await;
    namespace(&client, "modelpub").await;
    let (_, td) = call(&client, "POST", TD, JSON, Some(trust_domain())).await;
    // The main resource ignores status; a spec change bumps generation.
    let mut main = td.clone();
    main["status"] = json!({"identityFingerprint": "SHA256:abc"});
    main["spec"]["policy"]["consentRequired"] = json!(false);
    let (code, after_main) = call(
        &client,
        "PUT",
        &format!("{TD}/cardio-research"),
        JSON,
        Some(main),
    )
    .await;
    assert_eq!(code, 200, "{after_main}");
    assert!(after_main.get("status").is_none(), "{after_main}");
    assert_eq!(after_main["metadata"]["generation"], 2);
    // /status ignores spec and keeps generation.
    let mut status = after_main.clone();
    status["status"] = json!({"identityFingerprint": "SHA256:abc"});
    status["spec"]["policy"]["consentRequired"] = json!(true);
    let (code, after_status) = call(
        &client,
        "PUT",
        &format!("{TD}/cardio-research/status"),
        JSON,
        Some(status),
    )
    .await;
    assert_eq!(code, 200, "{after_status}");
    assert_eq!(after_status["status"]["identityFingerprint"], "SHA256:abc");
    assert_eq!(after_status["spec"]["policy"]["consentRequired"], false);
    assert_eq!(after_status["metadata"]["generation"], 2);
    // kube's patch_status (merge) goes through the same rules.
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("modelpub.io", "v1alpha1", "TrustDomain"),
        "trustdomains",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "modelpub", &ar);
    let patched = api
        .patch_status(
            "cardio-research",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"identityFingerprint": "SHA256:def"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["identityFingerprint"], "SHA256:def");
}

#[tokio::test]
async fn server_side_apply_tracks_field_managers() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let config = |data: Value| -> ConfigMap {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": data})).unwrap()
    };
    let created = api
        .patch(
            "s",
            &PatchParams::apply("one"),
            &Patch::Apply(config(json!({"a": "1", "b": "2"}))),
        )
        .await
        .unwrap();
    assert_eq!(created.data.as_ref().unwrap().len(), 2);
    let managers = created.metadata.managed_fields.unwrap();
    assert_eq!(
        (
            managers[0].manager.as_deref(),
            managers[0].operation.as_deref()
        ),
        (Some("one"), Some("Apply"))
    );
    // Re-applying without `b` removes it.
    let reapplied = api
        .patch(
            "s",
            &PatchParams::apply("one"),
            &Patch::Apply(config(json!({"a": "1"}))),
        )
        .await
        .unwrap();
    assert_eq!(reapplied.data.unwrap().keys().collect::<Vec<_>>(), ["a"]);
    // Another manager changing `a` conflicts, unless forced.
    let err = api
        .patch(
            "s",
            &PatchParams::apply("two"),
            &Patch::Apply(config(json!({"a": "9"}))),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"one\": .data.a"
    );
    assert_eq!(status.details.unwrap().causes[0].field, ".data.a");
    // Agreeing on the value is no conflict; force takes the field over.
    api.patch(
        "s",
        &PatchParams::apply("two"),
        &Patch::Apply(config(json!({"a": "1"}))),
    )
    .await
    .unwrap();
    let forced = api
        .patch(
            "s",
            &PatchParams::apply("two").force(),
            &Patch::Apply(config(json!({"a": "9"}))),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["a"], "9");
    // Without a fieldManager, apply is refused as the real server does.
    let (code, body) = call(
        &client,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/s",
        "application/apply-patch+yaml",
        Some(Value::String("data: {a: '1'}".into())),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("fieldManager: Required value"),
        "{body}"
    );
}

#[tokio::test]
async fn merge_and_json_patches() {
    let (_server, client) = start().await;
    call(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        JSON,
        Some(configmap("p", json!({"x": "1"}))),
    )
    .await;
    let (code, merged) = call(
        &client,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/p",
        "application/merge-patch+json",
        Some(json!({"metadata": {"labels": {"x": null, "y": "2"}}, "data": {"n": "m"}})),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(merged["metadata"]["labels"], json!({"y": "2"}));
    assert_eq!(merged["data"], json!({"k": "v", "n": "m"}));
    let (code, patched) = call(&client, "PATCH", "/api/v1/namespaces/default/configmaps/p", "application/json-patch+json",
        Some(json!([{"op": "test", "path": "/data/k", "value": "v"}, {"op": "remove", "path": "/data/k"}, {"op": "add", "path": "/data/z", "value": "1"}]))).await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["data"], json!({"n": "m", "z": "1"}));
    let (code, failed) = call(
        &client,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/p",
        "application/json-patch+json",
        Some(json!([{"op": "test", "path": "/data/n", "value": "other"}])),
    )
    .await;
    assert_eq!(code, 422, "{failed}");
    // A merge patch pinning an old resourceVersion is a conflict.
    let (code, _) = call(
        &client,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/p",
        "application/merge-patch+json",
        Some(json!({"metadata": {"resourceVersion": "1"}, "data": {"q": "1"}})),
    )
    .await;
    assert_eq!(code, 409);
    // Custom resources take no strategic merge patch.
    install_chart_crds(&client).await;
    namespace(&client, "modelpub").await;
    call(&client, "POST", TD, JSON, Some(trust_domain())).await;
    let (code, body) = call(
        &client,
        "PATCH",
        &format!("{TD}/cardio-research"),
        "application/strategic-merge-patch+json",
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
}

async fn wait_gone(client: &kube::Client, path: &str) {
    for _ in 0..100 {
        if call(client, "GET", path, JSON, None).await.0 == 404 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} was never deleted");
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (_server, client) = start().await;
    let mut cm = configmap("f", json!({}));
    cm["metadata"]["finalizers"] = json!(["example.com/keep"]);
    call(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        JSON,
        Some(cm),
    )
    .await;
    let path = "/api/v1/namespaces/default/configmaps/f";
    let (code, kept) = call(&client, "DELETE", path, JSON, None).await;
    assert_eq!(code, 200);
    assert!(kept["metadata"]["deletionTimestamp"].is_string(), "{kept}");
    let (code, still) = call(&client, "GET", path, JSON, None).await;
    assert_eq!(code, 200);
    assert!(still["metadata"]["deletionTimestamp"].is_string());
    let (code, _) = call(
        &client,
        "PATCH",
        path,
        "application/merge-patch+json",
        Some(json!({"metadata": {"finalizers": null}})),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(call(&client, "GET", path, JSON, None).await.0, 404);
}

#[tokio::test]
async fn owned_objects_are_garbage_collected() {
    let (_server, client) = start().await;
    let owner_ref = |o: &Value| json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": o["metadata"]["name"], "uid": o["metadata"]["uid"]}]);
    let (_, owner) = call(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        JSON,
        Some(configmap("owner", json!({}))),
    )
    .await;
    let mut dependent = configmap("dependent", json!({}));
    dependent["metadata"]["ownerReferences"] = owner_ref(&owner);
    assert_eq!(
        call(
            &client,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            JSON,
            Some(dependent)
        )
        .await
        .0,
        201
    );
    let (code, _) = call(
        &client,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/owner",
        JSON,
        Some(json!({"propagationPolicy": "Background"})),
    )
    .await;
    assert_eq!(code, 200);
    wait_gone(&client, "/api/v1/namespaces/default/configmaps/dependent").await;
    // Orphan: the dependent stays and loses its reference.
    let (_, owner) = call(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        JSON,
        Some(configmap("owner2", json!({}))),
    )
    .await;
    let mut kept = configmap("kept", json!({}));
    kept["metadata"]["ownerReferences"] = owner_ref(&owner);
    call(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        JSON,
        Some(kept),
    )
    .await;
    call(
        &client,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/owner2",
        JSON,
        Some(json!({"propagationPolicy": "Orphan"})),
    )
    .await;
    wait_gone(&client, "/api/v1/namespaces/default/configmaps/owner2").await;
    let (code, kept) = call(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps/kept",
        JSON,
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert!(kept["metadata"].get("ownerReferences").is_none(), "{kept}");
    // Deleting a namespace deletes its content, then the namespace.
    namespace(&client, "doomed").await;
    call(
        &client,
        "POST",
        "/api/v1/namespaces/doomed/configmaps",
        JSON,
        Some(configmap("x", json!({}))),
    )
    .await;
    let (code, ns) = call(&client, "DELETE", "/api/v1/namespaces/doomed", JSON, None).await;
    assert_eq!(
        (code, ns["status"]["phase"].as_str()),
        (200, Some("Terminating"))
    );
    wait_gone(&client, "/api/v1/namespaces/doomed").await;
    assert_eq!(
        call(
            &client,
            "GET",
            "/api/v1/namespaces/doomed/configmaps/x",
            JSON,
            None
        )
        .await
        .0,
        404
    );
}

/// Each file in deploy/examples/invalid is refused with its `# expect:`
/// field and `# message:` words; a two-document file is an update.
#[tokio::test]
async fn invalid_examples_are_refused_with_the_field_path() {
    let (_server, client) = start().await;
    install_chart_crds(&client).await;
    namespace(&client, "modelpub").await;
    let dir = root().join("deploy/examples/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 20);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let header = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                .unwrap()
                .trim()
                .to_string()
        };
        let (field, words) = (header("expect"), header("message"));
        let docs = yaml_documents(&file);
        let plural = match docs[0]["kind"].as_str().unwrap() {
            "TrustDomain" => "trustdomains",
            "ComputeOffer" => "computeoffers",
            _ => "federationrounds",
        };
        let base = format!("/apis/modelpub.io/v1alpha1/namespaces/modelpub/{plural}");
        let (code, body) = if docs.len() == 2 {
            let (code, created) = call(
                &client,
                "POST",
                &format!("{base}?fieldValidation=Strict"),
                JSON,
                Some(docs[0].clone()),
            )
            .await;
            assert_eq!(code, 201, "{}: {created}", file.display());
            let mut update = docs[1].clone();
            update["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"].clone();
            let name = created["metadata"]["name"].as_str().unwrap();
            let answer = call(
                &client,
                "PUT",
                &format!("{base}/{name}?fieldValidation=Strict"),
                JSON,
                Some(update),
            )
            .await;
            call(&client, "DELETE", &format!("{base}/{name}"), JSON, None).await;
            answer
        } else {
            call(
                &client,
                "POST",
                &format!("{base}?fieldValidation=Strict"),
                JSON,
                Some(docs[0].clone()),
            )
            .await
        };
        let shown = file.display();
        if words == "Unknown field" {
            // The real server refuses unknown fields under Strict (what
            // kubectl sends) as a decoding error: 400, naming the field.
            assert_eq!(code, 400, "{shown}: {body}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("unknown field \"{field}\"")),
                "{shown}: {body}"
            );
            continue;
        }
        assert_eq!(
            (code, body["reason"].as_str()),
            (422, Some("Invalid")),
            "{shown}: {body}"
        );
        let causes = body["details"]["causes"].as_array().unwrap();
        assert!(
            causes.iter().any(|c| c["field"] == field.as_str()
                && c["message"]
                    .as_str()
                    .unwrap()
                    .to_lowercase()
                    .contains(&words.to_lowercase())),
            "{shown}: expected {field}: {words} in {body}"
        );
    }
    // Without Strict the unknown field is dropped, with a warning.
    let mut typo = trust_domain();
    typo["metadata"]["name"] = json!("typo");
    typo["spec"]["polcy"] = json!({"consentRequired": false});
    let request = http::Request::post(TD)
        .header("content-type", JSON)
        .body(kube::client::Body::from(typo.to_string().into_bytes()))
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let warning = response
        .headers()
        .get("warning")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(warning, "299 - \"unknown field \\\"spec.polcy\\\"\"");
    let (_, stored) = call(&client, "GET", &format!("{TD}/typo"), JSON, None).await;
    assert!(stored["spec"].get("polcy").is_none(), "{stored}");
}

#[tokio::test]
async fn kube_client_lists_watches_and_applies_custom_resources() {
    let (_server, client) = start().await;
    install_chart_crds(&client).await;
    namespace(&client, "modelpub").await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("modelpub.io", "v1alpha1", "TrustDomain"),
        "trustdomains",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "modelpub", &ar);
    let td: DynamicObject = serde_json::from_value(trust_domain()).unwrap();
    let applied = api
        .patch(
            "cardio-research",
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&td),
        )
        .await
        .unwrap();
    assert_eq!(applied.metadata.generation, Some(1));
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let rv = list.metadata.resource_version.unwrap();
    let mut events = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    api.patch(
        "cardio-research",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"seen": "yes"}}})),
    )
    .await
    .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let WatchEvent::Modified(o) = event else {
        panic!("{event:?}")
    };
    assert_eq!(o.metadata.labels.unwrap()["seen"], "yes");
    // An invalid apply is a 422 kube surfaces as an API error.
    let mut bad = trust_domain();
    bad["spec"]["self"]["endpoint"] = json!("http://plain.example");
    let bad: DynamicObject = serde_json::from_value(bad).unwrap();
    let err = api
        .patch(
            "cardio-research",
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&bad),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    assert_eq!(status.code, 422, "{status:?}");
}

/// The real kubectl: apply, get, describe and delete a TrustDomain.
#[tokio::test]
async fn kubectl_apply_get_describe_delete() {
    let (server, client) = start().await;
    install_chart_crds(&client).await;
    namespace(&client, "modelpub").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig, &server.admin_token())
        .unwrap();
    let kubectl = modelpub_e2e::helm::kubectl_bin();
    let example = root().join("deploy/examples/trust-domain.yaml");
    let run = |args: Vec<String>| {
        let kubectl = kubectl.clone();
        let kubeconfig = kubeconfig.clone();
        async move {
            let out = tokio::process::Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(&args)
                .env("HOME", kubeconfig.parent().unwrap())
                .output()
                .await
                .expect("run kubectl");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "kubectl {args:?} failed:\n{text}");
            text
        }
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let example = example.to_str().unwrap();
    let out = run(s(&["apply", "-f", example])).await;
    assert!(
        out.contains("trustdomain.modelpub.io/cardio-research created"),
        "{out}"
    );
    // Re-applying the same file changes nothing on the server. (kubectl may
    // still say "configured": schema defaults inside list items make its
    // three-way merge patch resend the list, as against a real cluster.)
    let rv = |o: Value| o["metadata"]["resourceVersion"].clone();
    let before = call(&client, "GET", &format!("{TD}/cardio-research"), JSON, None)
        .await
        .1;
    run(s(&["apply", "-f", example])).await;
    let after = call(&client, "GET", &format!("{TD}/cardio-research"), JSON, None)
        .await
        .1;
    assert_eq!(rv(before), rv(after));
    let out = run(s(&["-n", "modelpub", "get", "td"])).await;
    assert!(
        out.contains("cardio-research") && out.contains("hospital-a") && out.contains("SELF"),
        "{out}"
    );
    let out = run(s(&[
        "-n",
        "modelpub",
        "get",
        "td",
        "cardio-research",
        "-o",
        "json",
    ]))
    .await;
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["spec"]["self"]["name"], "hospital-a");
    let out = run(s(&["-n", "modelpub", "describe", "td", "cardio-research"])).await;
    assert!(
        out.contains("Name:") && out.contains("cardio-research") && out.contains("hospital-b"),
        "{out}"
    );
    let out = run(s(&["apply", "--server-side", "-f", example])).await;
    assert!(out.contains("serverside-applied"), "{out}");
    // A built-in kind goes through kubectl's strategic merge patch.
    let cm = dir.path().join("cm.yaml");
    let cm_path = cm.to_str().unwrap();
    let manifest = |value: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: modelpub\ndata:\n  mode: {value}\n"
        )
    };
    std::fs::write(&cm, manifest("first")).unwrap();
    run(s(&["apply", "-f", cm_path])).await;
    std::fs::write(&cm, manifest("second")).unwrap();
    let out = run(s(&["apply", "-f", cm_path])).await;
    assert!(out.contains("configmap/settings configured"), "{out}");
    let (_, live) = call(
        &client,
        "GET",
        "/api/v1/namespaces/modelpub/configmaps/settings",
        JSON,
        None,
    )
    .await;
    assert_eq!(live["data"]["mode"], "second");
    // Built-in typed describers and the default table work too.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "modelpub"},
        "spec": {"containers": [{"name": "c", "image": "ghcr.io/modelpub/modelpub-node-agent:dev"}]}});
    install::create(&client, &pod).await.unwrap();
    let out = run(s(&["get", "pods", "-A"])).await;
    assert!(out.contains("modelpub") && out.contains(" p "), "{out}");
    let out = run(s(&["-n", "modelpub", "describe", "pod", "p"])).await;
    assert!(out.contains("Status:") && out.contains("Pending"), "{out}");
    let out = run(s(&["-n", "modelpub", "delete", "td", "cardio-research"])).await;
    assert!(
        out.contains("trustdomain.modelpub.io \"cardio-research\" deleted"),
        "{out}"
    );
    assert_eq!(
        call(&client, "GET", &format!("{TD}/cardio-research"), JSON, None)
            .await
            .0,
        404
    );
}

/// The chart's RBAC, installed as helm would, authorizes the operator's
/// ServiceAccount for exactly its recorded requests (and the admission
/// checks on blockOwnerDeletion), and nothing else. In the default,
/// namespaced mode that means nothing outside the watched namespaces: a
/// Secret elsewhere is a 403 for the operator's token.
#[tokio::test]
async fn chart_rbac_authorizes_the_operator_service_account() {
    chart_rbac_authorizes(&["--set", "watchNamespaces={modelpub}"], Mode::Namespaced).await;
}

#[tokio::test]
async fn cluster_wide_chart_rbac_authorizes_the_operator_service_account() {
    chart_rbac_authorizes(&["--set", "rbac.clusterWide=true"], Mode::ClusterWide).await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Namespaced,
    ClusterWide,
}

async fn chart_rbac_authorizes(values: &[&str], mode: Mode) {
    use modelpub_e2e::apiserver::{auth::User, rbac};
    use modelpub_operator::rbac::{Scope, chart_grants};

    let (server, admin) = start().await;
    install_chart_crds(&admin).await;
    namespace(&admin, "modelpub-system").await;
    namespace(&admin, "modelpub").await;
    namespace(&admin, "elsewhere").await;
    let rendered = modelpub_e2e::helm::template("mp", "modelpub-system", values);
    let created = install::create_all(&admin, &rendered).await.unwrap();
    assert!(created.len() >= 6, "{created:?}");
    let user = User {
        name: "system:serviceaccount:modelpub-system:mp-modelpub-operator".into(),
        groups: vec![
            "system:serviceaccounts".into(),
            "system:serviceaccounts:modelpub-system".into(),
            "system:authenticated".into(),
        ],
    };
    for (scope, grant) in chart_grants() {
        let namespace = match (scope, mode) {
            (Scope::Watched, Mode::Namespaced) => Some("modelpub"),
            (Scope::Watched, Mode::ClusterWide) | (Scope::ClusterScoped, _) => None,
            (Scope::LeaseNamespace, _) => Some("modelpub-system"),
        };
        let (resource, subresource) = match grant.resource.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (grant.resource.as_str(), None),
        };
        let attributes = rbac::Attributes {
            verb: &grant.verb,
            group: &grant.group,
            resource,
            subresource,
            namespace,
            name: None,
        };
        assert!(
            rbac::allowed(&server.state().store, &user, &attributes),
            "the chart does not grant {grant}"
        );
    }
    // The token as `kubectl create token` gets it: a TokenRequest.
    let (code, answer) = call(
        &admin,
        "POST",
        "/api/v1/namespaces/modelpub-system/serviceaccounts/mp-modelpub-operator/token",
        JSON,
        Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})),
    )
    .await;
    assert_eq!(code, 201, "{answer}");
    let token = answer["status"]["token"].as_str().unwrap();
    let sa = server.client(token).await.unwrap();
    let (code, body) = call(
        &sa,
        "POST",
        "/api/v1/namespaces/modelpub-system/serviceaccounts/mp-modelpub-operator/token",
        JSON,
        Some(json!({"spec": {}})),
    )
    .await;
    assert_eq!(code, 403, "the operator cannot mint tokens: {body}");
    let (code, body) = call(
        &sa,
        "GET",
        "/apis/modelpub.io/v1alpha1/trustdomains",
        JSON,
        None,
    )
    .await;
    let outside = [
        "/api/v1/secrets",
        "/api/v1/namespaces/elsewhere/secrets",
        "/api/v1/namespaces/elsewhere/secrets/any",
        "/apis/modelpub.io/v1alpha1/namespaces/elsewhere/trustdomains",
    ];
    match mode {
        Mode::ClusterWide => assert_eq!(code, 200, "{body}"),
        Mode::Namespaced => {
            assert_eq!(code, 403, "a cluster-wide list needs a ClusterRole: {body}");
            for path in outside {
                let (code, body) = call(&sa, "GET", path, JSON, None).await;
                assert_eq!(code, 403, "{path} outside the watched namespaces: {body}");
            }
            let (_, body) = call(&sa, "GET", outside[1], JSON, None).await;
            assert_eq!(
                body["message"],
                "secrets is forbidden: User \"system:serviceaccount:modelpub-system:mp-modelpub-operator\" cannot list resource \"secrets\" in API group \"\" in the namespace \"elsewhere\""
            );
        }
    }
    let (code, body) = call(
        &sa,
        "GET",
        "/api/v1/namespaces/modelpub/secrets",
        JSON,
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // Nothing beyond the grants: no deleting namespaces, no reading Leases
    // outside the leader-election namespace.
    let (code, body) = call(&sa, "DELETE", "/api/v1/namespaces/modelpub", JSON, None).await;
    assert_eq!(code, 403, "{body}");
    let leases = "/apis/coordination.k8s.io/v1/namespaces/modelpub/leases";
    let (code, body) = call(&sa, "GET", leases, JSON, None).await;
    assert_eq!(code, 403, "{body}");
    // blockOwnerDeletion needs update on the owner's finalizers: granted for
    // TrustDomains, not for ComputeOffers.
    let (_, td) = call(&admin, "POST", TD, JSON, Some(trust_domain())).await;
    let offer = json!({"apiVersion": "modelpub.io/v1alpha1", "kind": "ComputeOffer",
        "metadata": {"name": "o", "namespace": "modelpub"},
        "spec": {"trustDomain": "cardio-research", "resources": {"gpus": 1}}});
    let (code, offer) = call(
        &admin,
        "POST",
        "/apis/modelpub.io/v1alpha1/namespaces/modelpub/computeoffers",
        JSON,
        Some(offer),
    )
    .await;
    assert_eq!(code, 201, "{offer}");
    let owned_by = |owner: &Value, name: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "ownerReferences": [{
            "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]}})
    };
    let secrets = "/api/v1/namespaces/modelpub/secrets";
    let (code, body) = call(&sa, "POST", secrets, JSON, Some(owned_by(&td, "identity"))).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = call(&sa, "POST", secrets, JSON, Some(owned_by(&offer, "other"))).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body["message"],
        "secrets \"other\" is forbidden: cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on: , <nil>"
    );
}

/// Events written through events.k8s.io/v1 (as kube's Recorder does) are
/// the v1 Events `kubectl describe` lists by involvedObject, as on a real
/// cluster where both APIs share one store.
#[tokio::test]
async fn events_k8s_io_events_are_core_events() {
    let (_server, client) = start().await;
    let event = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "td.1", "namespace": "default"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "regarding": {"apiVersion": "modelpub.io/v1alpha1", "kind": "TrustDomain", "name": "td", "namespace": "default", "uid": "u-1"},
        "reason": "Issued", "note": "identity issued", "type": "Normal", "action": "Reconcile",
        "reportingController": "modelpub-operator", "reportingInstance": "op-1",
    });
    let (code, body) = call(
        &client,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        JSON,
        Some(event),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["note"], "identity issued");
    let selector = "involvedObject.name=td,involvedObject.kind=TrustDomain,involvedObject.uid=u-1";
    let (code, list) = call(
        &client,
        "GET",
        &format!("/api/v1/namespaces/default/events?fieldSelector={selector}"),
        JSON,
        None,
    )
    .await;
    assert_eq!(code, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(
        (items[0]["message"].as_str(), items[0]["reason"].as_str()),
        (Some("identity issued"), Some("Issued"))
    );
    assert_eq!(items[0]["source"]["component"], "modelpub-operator");
    let (_, none) = call(
        &client,
        "GET",
        "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name=other",
        JSON,
        None,
    )
    .await;
    assert_eq!(none["items"], json!([]));
}

/// A server with the chart's CRDs and the example TrustDomain applied by
/// manager `user`; the TrustDomain API and the applied object.
async fn applied_trust_domain() -> (ApiServer, Api<DynamicObject>, DynamicObject) {
    let (server, client) = start().await;
    install_chart_crds(&client).await;
    namespace(&client, "modelpub").await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("modelpub.io", "v1alpha1", "TrustDomain"),
        "trustdomains",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client, "modelpub", &ar);
    let td: DynamicObject = serde_json::from_value(trust_domain()).unwrap();
    api.patch(
        "cardio-research",
        &PatchParams::apply("user"),
        &Patch::Apply(&td),
    )
    .await
    .unwrap();
    (server, api, td)
}

/// Server-side apply on /status (how the operator writes status) owns
/// status fields separately from the spec's managers.
#[tokio::test]
async fn server_side_apply_on_status() {
    let (_server, api, td) = applied_trust_domain().await;
    let status = json!({"apiVersion": "modelpub.io/v1alpha1", "kind": "TrustDomain",
        "status": {"identityFingerprint": "SHA256:aa", "conditions": [{"type": "Ready", "status": "True",
            "reason": "Issued", "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    let params = PatchParams::apply("modelpub-operator").force();
    let after = api
        .patch_status("cardio-research", &params, &Patch::Apply(&status))
        .await
        .unwrap();
    assert_eq!(after.data["status"]["identityFingerprint"], "SHA256:aa");
    assert_eq!(
        after.metadata.generation,
        Some(1),
        "a status write is no spec change"
    );
    let managers = after.metadata.managed_fields.unwrap();
    let status_manager = managers
        .iter()
        .find(|m| m.manager.as_deref() == Some("modelpub-operator"))
        .unwrap();
    assert_eq!(status_manager.subresource.as_deref(), Some("status"));
    // Re-applying the spec leaves status alone.
    let again = api
        .patch(
            "cardio-research",
            &PatchParams::apply("user"),
            &Patch::Apply(&td),
        )
        .await
        .unwrap();
    assert_eq!(again.data["status"]["identityFingerprint"], "SHA256:aa");
}

/// `status.conditions` is `x-kubernetes-list-type: map` keyed by `type`:
/// the real server merges applied conditions by type, so a manager that
/// applies its own condition leaves another manager's alone, and a value
/// another manager owns is a conflict on that item's field.
/// https://kubernetes.io/docs/reference/using-api/server-side-apply/#merge-strategy
#[tokio::test]
async fn server_side_apply_merges_conditions_by_type() {
    let (_server, api, _) = applied_trust_domain().await;
    let condition = |kind: &str, status: &str| {
        json!({"apiVersion": "modelpub.io/v1alpha1", "kind": "TrustDomain",
            "status": {"conditions": [{"type": kind, "status": status, "reason": "Checked",
                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    };
    let types = |o: &DynamicObject| -> Vec<(String, String)> {
        o.data["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["type"].as_str().unwrap().into(),
                    c["status"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let apply_as = |manager: &'static str, body: Value| {
        let api = api.clone();
        async move {
            api.patch_status(
                "cardio-research",
                &PatchParams::apply(manager),
                &Patch::Apply(&body),
            )
            .await
        }
    };
    apply_as("modelpub-operator", condition("Ready", "True"))
        .await
        .unwrap();
    let both = apply_as("auditor", condition("Audited", "True"))
        .await
        .unwrap();
    assert_eq!(
        types(&both),
        [
            ("Ready".into(), "True".into()),
            ("Audited".into(), "True".into())
        ]
    );
    let flipped = apply_as("modelpub-operator", condition("Ready", "False"))
        .await
        .unwrap();
    assert_eq!(
        types(&flipped),
        [
            ("Ready".into(), "False".into()),
            ("Audited".into(), "True".into())
        ],
        "the operator's apply must not clobber the auditor's condition"
    );
    let err = apply_as("auditor", condition("Ready", "True"))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected a 409, got {err:?}")
    };
    assert_eq!(status.code, 409);
    assert!(
        status.message.contains(
            r#"conflict with "modelpub-operator": .status.conditions[type="Ready"].status"#
        ),
        "{}",
        status.message
    );
}

/// `modelpub-operator` next to the test executable (built by `cargo build
/// --workspace --bins`, as scripts/test.sh does), or `$MODELPUB_OPERATOR_BIN`.
fn operator_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MODELPUB_OPERATOR_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("modelpub-operator");
    assert!(
        bin.is_file(),
        "{} not found: build it with `cargo build --workspace --bins` or set MODELPUB_OPERATOR_BIN",
        bin.display()
    );
    bin
}

/// The real operator, with only its ServiceAccount's token and the chart's
/// RBAC, reconciles a TrustDomain against this server: finalizer, identity
/// Secrets (blockOwnerDeletion admitted), status by server-side apply,
/// events, and cleanup on deletion. Any request the chart does not allow
/// would be a 403 and stall it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_reconciles_with_only_the_charts_rbac() {
    let (server, admin) = start().await;
    install_chart_crds(&admin).await;
    namespace(&admin, "modelpub-system").await;
    namespace(&admin, "modelpub").await;
    // The default, namespaced RBAC, for the namespace the resources are in.
    let rendered = modelpub_e2e::helm::template(
        "mp",
        "modelpub-system",
        &["--set", "watchNamespaces={modelpub}"],
    );
    // The operator runs here as a process, not as the chart's Deployment,
    // with the Deployment's --watch-namespaces.
    let docs: Vec<Value> = modelpub_e2e::manifest::parse_documents(&rendered).unwrap();
    for doc in docs.iter().filter(|d| d["kind"] != "Deployment") {
        install::create(&admin, doc).await.unwrap();
    }
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let args: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--watch-namespaces")
        .unwrap();
    let watched = args[at + 1].to_string();
    assert_eq!(watched, "modelpub");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let token = server.service_account_token("modelpub-system", "mp-modelpub-operator");
    server.write_kubeconfig(&kubeconfig, &token).unwrap();
    let mut operator = tokio::process::Command::new(operator_bin())
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--lease-namespace",
            "modelpub-system",
            "--watch-namespaces",
            &watched,
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // hospital-c's example key is not an Ed25519 point the operator accepts;
    // the two other members are enough here.
    let mut td = trust_domain();
    td["spec"]["members"].as_array_mut().unwrap().truncate(1);
    assert_eq!(call(&admin, "POST", TD, JSON, Some(td)).await.0, 201);
    let path = format!("{TD}/cardio-research");
    let mut live = Value::Null;
    for _ in 0..200 {
        live = call(&admin, "GET", &path, JSON, None).await.1;
        if live["status"]["identityFingerprint"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        live["status"]["identityFingerprint"].is_string(),
        "{live:#}"
    );
    assert!(
        !live["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (_, secrets) = call(
        &admin,
        "GET",
        "/api/v1/namespaces/modelpub/secrets",
        JSON,
        None,
    )
    .await;
    let names: Vec<&str> = secrets["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["cardio-research-ca", "cardio-research-identity"]);
    let (_, events) = call(
        &admin,
        "GET",
        "/api/v1/namespaces/modelpub/events?fieldSelector=involvedObject.name=cardio-research",
        JSON,
        None,
    )
    .await;
    assert!(!events["items"].as_array().unwrap().is_empty(), "{events}");
    assert_eq!(call(&admin, "DELETE", &path, JSON, None).await.0, 200);
    wait_gone(&admin, &path).await;
    let (_, secrets) = call(
        &admin,
        "GET",
        "/api/v1/namespaces/modelpub/secrets",
        JSON,
        None,
    )
    .await;
    assert_eq!(secrets["items"], json!([]));
    operator.start_kill().unwrap();
}
