//! Request routing and the verbs, following the API conventions:
//! - create: 201 with uid, resourceVersion, generation (kinds with a spec
//!   and status), creationTimestamp and managedFields set; 409 AlreadyExists;
//!   404 when the namespace does not exist;
//! - get/list (label and field selectors, Table for kubectl); watch from a
//!   resourceVersion (410 Expired when older than the kept history);
//! - update: 409 Conflict on a stale resourceVersion; with a status
//!   subresource the main resource ignores status and `/status` changes only
//!   status; a no-op write keeps the resourceVersion;
//! - patch: merge, JSON, strategic (built-ins only, 415 for custom
//!   resources, as the real server) and server-side apply (see [`super::ssa`]);
//! - delete: finalizers keep the object with a deletionTimestamp until they
//!   are removed; propagationPolicy Background, Foreground and Orphan are
//!   carried out by [`super::gc`];
//! - custom resources are defaulted and validated against their CRD (schema
//!   and CEL): 422 Invalid with the field path of each cause.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::stream;
use modelpub_crds::validation::{ErrorType, FieldError, InvalidObject};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::ServerState;
use super::auth::User;
use super::convert::{from_storage, to_storage};
use super::discovery::{self, Resource};
use super::rbac::{self, Attributes};
use super::selectors::{FieldSelector, LabelSelector};
use super::ssa::{self, ApplyRequest};
use super::status::{ApiError, Cause, json_response};
use super::store::{Change, EventKind, StoreKey, WriteError, resource_version};
use super::{crds, openapi, patch, table};

/// The server time, as metadata timestamps are written.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn namespaces_key() -> StoreKey {
    (String::new(), "namespaces".into())
}

const CRD_GROUP: &str = "apiextensions.k8s.io";

fn crd_key() -> StoreKey {
    (CRD_GROUP.into(), "customresourcedefinitions".into())
}

/// The label the real server keeps on every namespace, set to its name
/// whatever a client sends (NetworkPolicies select namespaces by it):
/// https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/#automatic-labelling
fn label_namespace_name(meta: &mut serde_json::Map<String, Value>, name: &str) {
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    labels["kubernetes.io/metadata.name"] = json!(name);
}

/// Adds a namespace that exists from the start, as `default` does.
pub fn bootstrap_namespace(state: &ServerState, name: &str) {
    let object = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": state.store.new_uid(),
            "creationTimestamp": now(),
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    });
    // A fresh store has no namespaces, so this cannot already exist.
    let _ = state.store.create(&namespaces_key(), "", name, object);
}

/// The axum entry point.
pub async fn handle(State(state): State<Arc<ServerState>>, req: Request) -> Response {
    match route(&state, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

fn ok(body: &Value) -> Response {
    json_response(StatusCode::OK, body)
}

fn page_not_found() -> Response {
    (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

/// One request on a resource.
struct Ctx {
    state: Arc<ServerState>,
    resource: Resource,
    namespace: String,
    name: String,
    subresource: Option<String>,
    query: HashMap<String, String>,
    headers: HeaderMap,
    user: User,
    /// `Warning` headers for the response (unknown fields dropped).
    warnings: std::sync::Mutex<Vec<String>>,
}

impl Ctx {
    fn key(&self) -> StoreKey {
        self.resource.store_key()
    }

    fn q(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    fn dry_run(&self) -> bool {
        self.q("dryRun").is_some_and(|d| !d.is_empty())
    }

    fn manager(&self) -> String {
        if let Some(m) = self.q("fieldManager").filter(|m| !m.is_empty()) {
            return m.to_string();
        }
        let agent = self
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        agent.split('/').next().unwrap_or("unknown").to_string()
    }

    fn apply_request<'a>(
        &'a self,
        manager: &'a str,
        now: &'a str,
        api_version: &'a str,
    ) -> ApplyRequest<'a> {
        ApplyRequest {
            manager,
            force: self.q("force") == Some("true"),
            subresource: self.subresource.as_deref(),
            has_status: self.resource.status,
            api_version,
            now,
            schema: self
                .resource
                .custom
                .as_ref()
                .and_then(|c| c.schema.as_ref()),
        }
    }

    fn not_found(&self) -> ApiError {
        ApiError::not_found(&self.resource.plural, &self.resource.group, &self.name)
    }
}

async fn route(state: &Arc<ServerState>, req: Request) -> Result<Response, ApiError> {
    let user = state.tokens.authenticate(req.headers())?;
    let path = req.uri().path().trim_end_matches('/').to_string();
    let query: HashMap<String, String> = Query::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let method = req.method().clone();
    let resources = state.resources();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let get_only = |body: Option<Value>| match (&method, body) {
        (&Method::GET, Some(b)) => Ok(ok(&b)),
        (&Method::GET, None) => Err(ApiError::unknown_resource()),
        _ => Err(ApiError::method_not_allowed()),
    };
    let (group, version, rest): (&str, &str, &[&str]) = match segments.as_slice() {
        ["version"] => return get_only(Some(discovery::version_info())),
        ["healthz" | "livez" | "readyz"] => return Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => return get_only(Some(discovery::core_versions(&state.address))),
        ["apis"] => return get_only(Some(discovery::group_list(&resources))),
        ["apis", g] => return get_only(discovery::group(&resources, g)),
        ["api", v] => return get_only(discovery::resource_list(&resources, "", v)),
        ["apis", g, v] => return get_only(discovery::resource_list(&resources, g, v)),
        ["openapi", "v3"] => return get_only(Some(openapi::root(&resources))),
        ["openapi", "v3", "api", v] => return get_only(openapi::group_version(&resources, "", v)),
        ["openapi", "v3", "apis", g, v] => {
            return get_only(openapi::group_version(&resources, g, v));
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Ok(page_not_found()),
    };
    let find = |plural: &str| {
        resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    };
    let (namespace, plural, tail): (Option<&str>, &str, &[&str]) = match rest {
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|r| r.namespaced) => {
            (Some(*ns), *plural, tail)
        }
        [plural, tail @ ..] => (None, *plural, tail),
        [] => return Err(ApiError::unknown_resource()),
    };
    let resource = find(plural)
        .cloned()
        .ok_or_else(ApiError::unknown_resource)?;
    let (name, subresource) = match tail {
        [] => (None, None),
        [name] => (Some(*name), None),
        [name, sub] => (Some(*name), Some(*sub)),
        _ => return Err(ApiError::unknown_resource()),
    };
    if resource.group.is_empty()
        && resource.plural == "serviceaccounts"
        && subresource == Some("token")
        && let (Some(ns), Some(name)) = (namespace, name)
    {
        if method != Method::POST {
            return Err(ApiError::method_not_allowed());
        }
        rbac::authorize(
            &state.store,
            &user,
            &Attributes {
                verb: "create",
                group: "",
                resource: "serviceaccounts",
                subresource: Some("token"),
                namespace: Some(ns),
                name: Some(name),
            },
        )?;
        let key: StoreKey = (String::new(), "serviceaccounts".into());
        if state.store.get(&key, ns, name).is_none() {
            return Err(ApiError::not_found("serviceaccounts", "", name));
        }
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        let request = if body.is_empty() {
            json!({})
        } else {
            parse_json(&body)?
        };
        let token = state.tokens.issue_service_account(ns, name);
        let answer = super::token_request::answer(&request, ns, name, &token)?;
        return Ok(json_response(StatusCode::CREATED, &answer));
    }
    let scoped_wrongly = (!resource.namespaced && namespace.is_some())
        || (resource.namespaced && namespace.is_none() && name.is_some());
    let unknown_sub = subresource.is_some_and(|s| s != "status" || !resource.status);
    if scoped_wrongly || unknown_sub {
        return Err(ApiError::unknown_resource());
    }
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (&method, name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, false) if subresource.is_none() => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) if subresource.is_none() => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => return Err(ApiError::method_not_allowed()),
    };
    rbac::authorize(
        &state.store,
        &user,
        &Attributes {
            verb,
            group: &resource.group,
            resource: &resource.plural,
            subresource,
            namespace,
            name,
        },
    )?;
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
    let ctx = Ctx {
        state: state.clone(),
        resource,
        namespace: namespace.unwrap_or("").to_string(),
        name: name.unwrap_or("").to_string(),
        subresource: subresource.map(str::to_string),
        query,
        headers,
        user,
        warnings: std::sync::Mutex::new(Vec::new()),
    };
    let mut response = match verb {
        "get" => get(&ctx),
        "list" => list(&ctx),
        "watch" => watch_stream(&ctx),
        "create" => create(&ctx, &body),
        "update" => update(&ctx, &body),
        "patch" => patch_object(&ctx, &body),
        "delete" => delete(&ctx, &body),
        _ => delete_collection(&ctx, &body),
    }?;
    let warnings = ctx.warnings.lock().unwrap_or_else(|e| e.into_inner());
    for warning in warnings.iter() {
        let text = format!("299 - {warning:?}");
        if let Ok(value) = header::HeaderValue::from_str(&text) {
            response.headers_mut().append("warning", value);
        }
    }
    Ok(response)
}

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    // client-go's typed clients (helm's release storage) send protobuf.
    if body.starts_with(super::protobuf::MAGIC) {
        return super::protobuf::decode(body).map_err(|e| {
            ApiError::unsupported_media_type(&format!("application/vnd.kubernetes.protobuf: {e}"))
        });
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn wants_table(ctx: &Ctx) -> bool {
    ctx.headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(table::wants_table)
}

fn get(ctx: &Ctx) -> Result<Response, ApiError> {
    let stored = ctx
        .state
        .store
        .get(&ctx.key(), &ctx.namespace, &ctx.name)
        .ok_or_else(|| ctx.not_found())?;
    let object = from_storage(&ctx.resource, stored);
    if wants_table(ctx) {
        let rv = resource_version(&object).unwrap_or(0);
        let include = ctx.q("includeObject").unwrap_or("Metadata");
        return Ok(ok(&table::table(&ctx.resource, &[object], rv, include)));
    }
    Ok(ok(&object))
}

struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn from_query(ctx: &Ctx) -> Result<Self, ApiError> {
        Ok(Self {
            labels: LabelSelector::parse(ctx.q("labelSelector").unwrap_or(""))?,
            fields: FieldSelector::parse(
                ctx.q("fieldSelector").unwrap_or(""),
                &ctx.resource.group,
                &ctx.resource.plural,
            )?,
        })
    }

    fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

fn namespace_filter(ctx: &Ctx) -> Option<&str> {
    (ctx.resource.namespaced && !ctx.namespace.is_empty()).then_some(ctx.namespace.as_str())
}

fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    let filter = Filter::from_query(ctx)?;
    let (items, rv) = ctx.state.store.list(&ctx.key(), namespace_filter(ctx));
    let items: Vec<Value> = items
        .into_iter()
        .map(|o| from_storage(&ctx.resource, o))
        .filter(|o| filter.matches(o))
        .collect();
    if wants_table(ctx) {
        let include = ctx.q("includeObject").unwrap_or("Metadata");
        return Ok(ok(&table::table(&ctx.resource, &items, rv, include)));
    }
    Ok(ok(&json!({
        "kind": format!("{}List", ctx.resource.kind),
        "apiVersion": ctx.resource.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })))
}

/// Turns a stored change into the watch event this watcher sees, if any.
type SelectEvent = dyn Fn(&Change) -> Option<Value> + Send;

struct WatchState {
    backlog: VecDeque<Bytes>,
    receiver: broadcast::Receiver<Change>,
    deadline: tokio::time::Instant,
    last_rv: u64,
    select: Box<SelectEvent>,
}

/// One watch event as a JSON line.
fn line_of(event: &Value) -> Bytes {
    let mut line = event.to_string();
    line.push('\n');
    Bytes::from(line)
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    line_of(&json!({"type": kind, "object": object}))
}

fn watch_stream(ctx: &Ctx) -> Result<Response, ApiError> {
    let filter = Filter::from_query(ctx)?;
    let key = ctx.key();
    let requested = ctx.q("resourceVersion").unwrap_or("");
    let initial_events = ctx.q("sendInitialEvents") == Some("true");
    let since = match requested {
        "" | "0" => None,
        rv => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("invalid resourceVersion {rv:?}: not a number"))
        })?),
    };
    let mut backlog = VecDeque::new();
    let (changes, receiver, start_rv) = match since {
        Some(rv) if !initial_events => {
            let (changes, receiver) = match ctx.state.store.watch(&key, rv) {
                Ok(found) => found,
                // The real server starts the watch and sends the 410 as
                // its one ERROR event; clients then list again.
                Err(t) => {
                    let status = ApiError::gone(t.requested, t.oldest).body();
                    return Ok(json_response(
                        StatusCode::OK,
                        &json!({"type": "ERROR", "object": status}),
                    ));
                }
            };
            (changes, receiver, rv)
        }
        _ => {
            // No resourceVersion (or a streaming list): the current state as
            // ADDED events, then every later change.
            let current = ctx.state.store.current_rv();
            let (changes, receiver) = ctx
                .state
                .store
                .watch(&key, current)
                .map_err(|t| ApiError::gone(t.requested, t.oldest))?;
            let (items, _) = ctx.state.store.list(&key, namespace_filter(ctx));
            for item in items {
                let view = from_storage(&ctx.resource, item);
                if filter.matches(&view) {
                    backlog.push_back(event_line("ADDED", &view));
                }
            }
            if initial_events {
                backlog.push_back(event_line(
                    "BOOKMARK",
                    &json!({
                        "kind": ctx.resource.kind,
                        "apiVersion": ctx.resource.api_version(),
                        "metadata": {
                            "resourceVersion": current.to_string(),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    }),
                ));
            }
            (changes, receiver, current)
        }
    };
    let resource = ctx.resource.clone();
    let namespace = namespace_filter(ctx).map(str::to_string);
    let select = move |change: &Change| -> Option<Value> {
        if change.key != key || namespace.as_ref().is_some_and(|ns| *ns != change.namespace) {
            return None;
        }
        let view = from_storage(&resource, change.object.clone());
        let now_matches = filter.matches(&view);
        let matched_before = change
            .previous
            .as_ref()
            .is_some_and(|p| filter.matches(&from_storage(&resource, p.clone())));
        // As the real watch cache does: an object entering the selection is
        // ADDED, one leaving it DELETED.
        let kind = match (change.kind, matched_before, now_matches) {
            (EventKind::Modified, true, true) => "MODIFIED",
            (EventKind::Modified, false, true) => "ADDED",
            (EventKind::Modified, true, false) => "DELETED",
            (EventKind::Modified, false, false) => return None,
            (other, _, true) => other.as_str(),
            (_, _, false) => return None,
        };
        Some(json!({"type": kind, "object": view}))
    };
    let mut last_rv = start_rv;
    for change in &changes {
        if let Some(event) = select(change) {
            backlog.push_back(line_of(&event));
            last_rv = change.rv;
        }
    }
    let timeout = ctx
        .q("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let state = WatchState {
        backlog,
        receiver,
        deadline: tokio::time::Instant::now() + Duration::from_secs(timeout),
        last_rv: last_rv.max(start_rv),
        select: Box::new(select),
    };
    let events = stream::unfold(state, |mut st| async move {
        if let Some(line) = st.backlog.pop_front() {
            return Some((Ok::<Bytes, std::convert::Infallible>(line), st));
        }
        loop {
            let received = tokio::select! {
                _ = tokio::time::sleep_until(st.deadline) => return None,
                r = st.receiver.recv() => r,
            };
            // A lagging or closed watch ends; clients watch again from
            // their last resourceVersion, as with a real server.
            let change = received.ok()?;
            if change.rv <= st.last_rv {
                continue;
            }
            if let Some(event) = (st.select)(&change) {
                st.last_rv = change.rv;
                return Some((Ok(line_of(&event)), st));
            }
        }
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(events),
    )
        .into_response())
}

fn random_suffix(state: &ServerState) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let uid = state.store.new_uid();
    uid.bytes()
        .filter(u8::is_ascii_hexdigit)
        .take(5)
        .map(|b| ALPHABET[b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Checks apiVersion and kind against the endpoint, filling them if absent.
fn check_type(resource: &Resource, object: &mut Value) -> Result<(), ApiError> {
    let Some(map) = object.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let expected = resource.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != expected => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected})"
            )));
        }
        _ => {
            map.insert("apiVersion".into(), json!(expected));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k != resource.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                resource.kind
            )));
        }
        _ => {
            map.insert("kind".into(), json!(resource.kind));
        }
    }
    if !map.get("metadata").is_some_and(Value::is_object) {
        map.insert("metadata".into(), json!({}));
    }
    Ok(())
}

fn cause_reason(t: ErrorType) -> &'static str {
    match t {
        ErrorType::Required => "FieldValueRequired",
        ErrorType::Invalid => "FieldValueInvalid",
        ErrorType::NotSupported => "FieldValueNotSupported",
        ErrorType::TooMany => "FieldValueTooMany",
        ErrorType::Unknown => "FieldValueInvalid",
        ErrorType::Duplicate => "FieldValueDuplicate",
    }
}

fn cause(e: &FieldError) -> Cause {
    let text = e.to_string();
    let message = text
        .strip_prefix(&format!("{}: ", e.path))
        .unwrap_or(&text)
        .to_string();
    Cause {
        reason: cause_reason(e.error_type).into(),
        message,
        field: e.path.clone(),
    }
}

/// Removes the field at a validator path (`spec.a[0].b`).
fn prune(object: &mut Value, path: &str) {
    let mut tokens: Vec<String> = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            tokens.push(rest[..open].to_string());
            rest = &rest[open..];
            while let Some(r) = rest.strip_prefix('[') {
                let Some(close) = r.find(']') else { break };
                tokens.push(r[..close].to_string());
                rest = &r[close + 1..];
            }
        } else {
            tokens.push(rest.to_string());
        }
    }
    let Some((last, parents)) = tokens.split_last() else {
        return;
    };
    let mut cursor = object;
    for t in parents {
        let next = match cursor {
            Value::Array(items) => t.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            other => other.get_mut(t.as_str()),
        };
        match next {
            Some(n) => cursor = n,
            None => return,
        }
    }
    if let Some(map) = cursor.as_object_mut() {
        map.remove(last);
    }
}

/// Defaults and validates a custom resource as the CRD says. Unknown fields
/// are an error with `fieldValidation=Strict` (what kubectl sends) and are
/// pruned otherwise, with a `Warning` header unless `Ignore` (the default is
/// `Warn`), as the real server does.
fn admit_custom(ctx: &Ctx, object: Value, old: Option<&Value>) -> Result<Value, ApiError> {
    let Some(custom) = &ctx.resource.custom else {
        return Ok(object);
    };
    let strict = ctx.q("fieldValidation") == Some("Strict");
    let mut object = object;
    for _ in 0..2 {
        match custom.validator.admit(object.clone(), old) {
            Ok(admitted) => return Ok(admitted),
            Err(InvalidObject {
                errors,
                kind,
                group,
                name,
            }) => {
                let unknown: Vec<&FieldError> = errors
                    .iter()
                    .filter(|e| e.error_type == ErrorType::Unknown)
                    .collect();
                if unknown.is_empty() {
                    return Err(ApiError::invalid(
                        &kind,
                        &group,
                        &name,
                        errors.iter().map(cause).collect(),
                    ));
                }
                if strict {
                    let fields: Vec<String> = unknown
                        .iter()
                        .map(|e| format!("unknown field {:?}", e.path))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "{kind} in version {:?} cannot be handled as a {kind}: strict decoding error: {}",
                        ctx.resource.version,
                        fields.join(", ")
                    )));
                }
                let warn = ctx.q("fieldValidation") != Some("Ignore");
                let mut warnings = ctx.warnings.lock().unwrap_or_else(|e| e.into_inner());
                for e in unknown {
                    prune(&mut object, &e.path);
                    if warn {
                        warnings.push(format!("unknown field {:?}", e.path));
                    }
                }
            }
        }
    }
    custom.validator.admit(object, old).map_err(|e| {
        ApiError::invalid(
            &e.kind,
            &e.group,
            &e.name,
            e.errors.iter().map(cause).collect(),
        )
    })
}

fn is_label(part: &str) -> bool {
    let bytes = part.as_bytes();
    let inner_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    inner_ok && edge(bytes.first()) && edge(bytes.last())
}

/// What is wrong with an object name, in the real server's words:
/// namespaces must be RFC 1123 labels, RBAC objects path segments,
/// everything else RFC 1123 subdomains.
fn name_problem(resource: &Resource, name: &str) -> Option<String> {
    if resource.group == "rbac.authorization.k8s.io" {
        // RBAC names are path segments (`system:controller:...` is valid).
        return match name {
            "." | ".." => Some(format!("may not be '{name}'")),
            _ if name.contains('/') => Some("may not contain '/'".into()),
            _ if name.contains('%') => Some("may not contain '%'".into()),
            _ => None,
        };
    }
    if resource.group.is_empty() && resource.plural == "namespaces" {
        if name.len() > 63 {
            return Some("must be no more than 63 characters".into());
        }
        return (!is_label(name)).then(|| {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into()
        });
    }
    if name.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    (!name.split('.').all(is_label)).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into()
    })
}

/// Fills in what the server sets on create and checks the object.
fn prepare_create(ctx: &Ctx, mut object: Value, keep_managed: bool) -> Result<Value, ApiError> {
    check_type(&ctx.resource, &mut object)?;
    let meta = object["metadata"]
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    let name = match meta.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => match meta.get("generateName").and_then(Value::as_str) {
            Some(prefix) if !prefix.is_empty() => format!("{prefix}{}", random_suffix(&ctx.state)),
            _ => {
                return Err(ApiError::invalid(
                    &ctx.resource.kind,
                    &ctx.resource.group,
                    "",
                    vec![Cause {
                        reason: "FieldValueRequired".into(),
                        message: "Required value: name or generateName is required".into(),
                        field: "metadata.name".into(),
                    }],
                ));
            }
        },
    };
    if let Some(problem) = name_problem(&ctx.resource, &name) {
        return Err(ApiError::invalid(
            &ctx.resource.kind,
            &ctx.resource.group,
            &name,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {name:?}: {problem}"),
                field: "metadata.name".into(),
            }],
        ));
    }
    meta.insert("name".into(), json!(name));
    if ctx.resource.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != ctx.namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), json!(ctx.namespace));
            }
        }
    } else {
        meta.remove("namespace");
    }
    for field in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(field);
    }
    if !keep_managed {
        meta.remove("managedFields");
    }
    meta.insert("uid".into(), json!(ctx.state.store.new_uid()));
    meta.insert("creationTimestamp".into(), json!(now()));
    if ctx.key() == namespaces_key() {
        label_namespace_name(meta, &name);
    }
    if ctx.resource.has_generation() {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    if ctx.resource.namespaced {
        let ns = ctx
            .state
            .store
            .get(&namespaces_key(), "", &ctx.namespace)
            .ok_or_else(|| ApiError::not_found("namespaces", "", &ctx.namespace))?;
        if ns.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::forbidden(
                &ctx.resource.plural,
                &ctx.resource.group,
                &name,
                format!(
                    "unable to create new content in namespace {} because it is being terminated",
                    ctx.namespace
                ),
            ));
        }
    }
    if ctx.resource.status
        && let Some(map) = object.as_object_mut()
    {
        map.remove("status");
    }
    match (ctx.resource.group.as_str(), ctx.resource.plural.as_str()) {
        ("", "pods") => object["status"] = json!({"phase": "Pending"}),
        ("", "namespaces") => {
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
        (CRD_GROUP, "customresourcedefinitions") => {
            crds::resources_of(&object)?;
            object["status"] = crds::established_status(&object, &now());
        }
        _ => {}
    }
    let object = admit_custom(ctx, object, None)?;
    Ok(to_storage(&ctx.resource, object))
}

fn store_error(ctx: &Ctx, e: WriteError) -> ApiError {
    let r = &ctx.resource;
    match e {
        WriteError::NotFound => ctx.not_found(),
        WriteError::AlreadyExists => ApiError::already_exists(&r.plural, &r.group, &ctx.name),
        WriteError::Conflict => ApiError::stale(&r.plural, &r.group, &ctx.name),
    }
}

/// Serves the custom resources of a stored CRD.
fn register_crd(state: &ServerState, crd: &Value) {
    if let Ok(served) = crds::resources_of(crd) {
        let group = crd
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or("");
        let plural = crd
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or("");
        state.set_resources(group, plural, served);
    }
}

/// Stops serving the custom resources of a removed CRD.
pub fn unregister_crd(state: &ServerState, crd: &Value) {
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or("");
    state.set_resources(group, plural, Vec::new());
    state.gc.notify_one();
}

fn create(ctx: &Ctx, body: &Bytes) -> Result<Response, ApiError> {
    let object = parse_json(body)?;
    let mut stored = prepare_create(ctx, object, false)?;
    let view = from_storage(&ctx.resource, stored.clone());
    let manager = ctx.manager();
    let time = now();
    let api_version = ctx.resource.api_version();
    let mut managed = view.clone();
    ssa::record_update(
        None,
        &mut managed,
        &manager,
        &ctx.apply_request(&manager, &time, &api_version),
    );
    if let Some(fields) = managed.pointer("/metadata/managedFields") {
        stored["metadata"]["managedFields"] = fields.clone();
    }
    commit_create(ctx, stored)
}

fn commit_create(ctx: &Ctx, stored: Value) -> Result<Response, ApiError> {
    let name = stored
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    owner_reference_admission(ctx, None, &stored, &name)?;
    if ctx.dry_run() {
        return Ok(json_response(
            StatusCode::CREATED,
            &from_storage(&ctx.resource, stored),
        ));
    }
    let created = ctx
        .state
        .store
        .create(&ctx.key(), &ctx.namespace, &name, stored)
        .map_err(|e| match e {
            WriteError::AlreadyExists => {
                ApiError::already_exists(&ctx.resource.plural, &ctx.resource.group, &name)
            }
            other => store_error(ctx, other),
        })?;
    if ctx.key() == crd_key() {
        register_crd(&ctx.state, &created);
    }
    if created.pointer("/metadata/ownerReferences").is_some() {
        ctx.state.gc.notify_one();
    }
    Ok(json_response(
        StatusCode::CREATED,
        &from_storage(&ctx.resource, created),
    ))
}

/// The object without what the server changes on every write.
fn comparable(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    o
}

fn without_meta_and_status(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(map) = o.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    o
}

/// Writes `desired` over the stored `current`, with the update rules in the
/// module docs. `managed`: managedFields were already computed (apply).
fn write_update(
    ctx: &Ctx,
    current: &Value,
    desired: Value,
    managed: bool,
) -> Result<Value, ApiError> {
    let current_view = from_storage(&ctx.resource, current.clone());
    let current_rv = resource_version(current).unwrap_or(0);
    let mut desired = desired;
    check_type(&ctx.resource, &mut desired)?;
    if ctx.key() == namespaces_key()
        && let Some(meta) = desired["metadata"].as_object_mut()
    {
        label_namespace_name(meta, &ctx.name);
    }
    // A client may rewrite managedFields (kubectl does, when moving from
    // client-side to server-side apply); the server keeps what it sent and
    // tracks this write's own changes on top, as the real one does.
    let sent_managers = desired.pointer("/metadata/managedFields").cloned();
    let mut baseline = current_view.clone();
    if let Some(Value::Array(sent)) = &sent_managers
        && current_view.pointer("/metadata/managedFields") != sent_managers.as_ref()
    {
        baseline["metadata"]["managedFields"] = Value::Array(sent.clone());
    }
    if let Some(rv) = desired
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && !rv.is_empty()
        && rv.parse::<u64>().ok() != Some(current_rv)
    {
        return Err(ApiError::stale(
            &ctx.resource.plural,
            &ctx.resource.group,
            &ctx.name,
        ));
    }
    if let Some(n) = desired.pointer("/metadata/name").and_then(Value::as_str)
        && n != ctx.name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({})",
            ctx.name
        )));
    }
    let mut new = if ctx.subresource.as_deref() == Some("status") {
        let mut n = current_view.clone();
        match desired.get("status") {
            Some(s) => n["status"] = s.clone(),
            None => {
                if let Some(map) = n.as_object_mut() {
                    map.remove("status");
                }
            }
        }
        if let Some(fields) = desired.pointer("/metadata/managedFields") {
            n["metadata"]["managedFields"] = fields.clone();
        }
        n
    } else {
        let mut n = desired;
        if ctx.resource.status {
            match current_view.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    if let Some(map) = n.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        }
        n
    };
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match current_view["metadata"].get(field) {
            Some(v) => new["metadata"][field] = v.clone(),
            None => {
                if let Some(meta) = new["metadata"].as_object_mut() {
                    meta.remove(field);
                }
            }
        }
    }
    new["metadata"]["resourceVersion"] = json!(current_rv.to_string());
    // Defaults first: a write that only omits defaulted fields changes nothing.
    let mut new = admit_custom(ctx, new, Some(&current_view))?;
    if ctx.resource.has_generation()
        && without_meta_and_status(&new) != without_meta_and_status(&current_view)
    {
        let generation = current_view
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        new["metadata"]["generation"] = json!(generation + 1);
    }
    if ctx.key() == crd_key() {
        crds::resources_of(&new)?;
    }
    if !managed {
        let manager = ctx.manager();
        let time = now();
        let api_version = ctx.resource.api_version();
        ssa::record_update(
            Some(&baseline),
            &mut new,
            &manager,
            &ctx.apply_request(&manager, &time, &api_version),
        );
    }
    if comparable(&new) == comparable(&current_view) {
        return Ok(current_view);
    }
    owner_reference_admission(ctx, Some(&current_view), &new, &ctx.name)?;
    if ctx.dry_run() {
        return Ok(new);
    }
    let stored = ctx
        .state
        .store
        .update(
            &ctx.key(),
            &ctx.namespace,
            &ctx.name,
            to_storage(&ctx.resource, new),
            current_rv,
        )
        .map_err(|e| store_error(ctx, e))?;
    if ctx.key() == crd_key() {
        register_crd(&ctx.state, &stored);
    }
    let stored = finish_if_released(&ctx.state, &ctx.key(), stored);
    ctx.state.gc.notify_one();
    Ok(from_storage(&ctx.resource, stored))
}

fn owner_references(object: Option<&Value>) -> Vec<Value> {
    object
        .and_then(|o| o.pointer("/metadata/ownerReferences"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The OwnerReferencesPermissionEnforcement admission plugin, as enabled on
/// real clusters: changing an object's ownerReferences (other than on
/// create) needs `delete` on the object, and setting
/// `blockOwnerDeletion: true` needs `update` on the owner's `finalizers`
/// subresource. 403 otherwise, with the plugin's wording.
fn owner_reference_admission(
    ctx: &Ctx,
    old: Option<&Value>,
    new: &Value,
    name: &str,
) -> Result<(), ApiError> {
    let before = owner_references(old);
    let after = owner_references(Some(new));
    let pods_status = ctx.resource.group.is_empty()
        && ctx.resource.plural == "pods"
        && ctx.subresource.as_deref() == Some("status");
    if before == after || pods_status {
        return Ok(());
    }
    let r = &ctx.resource;
    let namespace = (!ctx.namespace.is_empty()).then_some(ctx.namespace.as_str());
    let forbidden =
        |why: &str| ApiError::forbidden(&r.plural, &r.group, name, format!("{why}: , <nil>"));
    if old.is_some() {
        let may_delete = rbac::allowed(
            &ctx.state.store,
            &ctx.user,
            &Attributes {
                verb: "delete",
                group: &r.group,
                resource: &r.plural,
                subresource: None,
                namespace,
                name: Some(name),
            },
        );
        if !may_delete {
            return Err(forbidden(
                "cannot set an ownerRef on a resource you can't delete",
            ));
        }
    }
    let blocking = |refs: &[Value], uid: &Value| {
        refs.iter()
            .any(|o| o.get("uid") == Some(uid) && o.get("blockOwnerDeletion") == Some(&json!(true)))
    };
    let resources = ctx.state.resources();
    for owner in &after {
        let uid = owner.get("uid").cloned().unwrap_or(Value::Null);
        if !blocking(&after, &uid) || blocking(&before, &uid) {
            continue;
        }
        let api_version = owner
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = owner.get("kind").and_then(Value::as_str).unwrap_or("");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let Some(mapped) = resources
            .iter()
            .find(|x| x.group == group && x.version == version && x.kind == kind)
        else {
            return Err(forbidden(&format!(
                "cannot set blockOwnerDeletion in this case because cannot find RESTMapping for APIVersion {api_version} Kind {kind}"
            )));
        };
        let may_finalize = rbac::allowed(
            &ctx.state.store,
            &ctx.user,
            &Attributes {
                verb: "update",
                group,
                resource: &mapped.plural,
                subresource: Some("finalizers"),
                namespace,
                name: owner.get("name").and_then(Value::as_str),
            },
        );
        if !may_finalize {
            return Err(forbidden(
                "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on",
            ));
        }
    }
    Ok(())
}

/// Removes an object being deleted once its last finalizer is gone.
pub fn finish_if_released(state: &ServerState, key: &StoreKey, object: Value) -> Value {
    let deleting = object.pointer("/metadata/deletionTimestamp").is_some();
    let finalizers = object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let spec_finalizers = key == &namespaces_key()
        && object
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
    if !deleting || finalizers || spec_finalizers {
        return object;
    }
    let ns = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    match state.store.remove(key, ns, name, resource_version(&object)) {
        Ok(removed) => {
            if key == &crd_key() {
                unregister_crd(state, &removed);
            }
            state.gc.notify_one();
            removed
        }
        Err(_) => object,
    }
}

fn update(ctx: &Ctx, body: &Bytes) -> Result<Response, ApiError> {
    let desired = parse_json(body)?;
    let current = ctx
        .state
        .store
        .get(&ctx.key(), &ctx.namespace, &ctx.name)
        .ok_or_else(|| ctx.not_found())?;
    let updated = write_update(ctx, &current, desired, false)?;
    Ok(ok(&updated))
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

fn apply_conflict(ctx: &Ctx, conflicts: &[ssa::FieldConflict]) -> ApiError {
    let n = conflicts.len();
    let listing = match conflicts {
        [one] => format!("conflict with {:?}: {}", one.manager, one.field),
        many => {
            let lines: Vec<String> = many
                .iter()
                .map(|c| format!("- conflict with {:?}: {}", c.manager, c.field))
                .collect();
            format!("\n{}", lines.join("\n"))
        }
    };
    let mut error = ApiError::conflict(&ctx.resource.plural, &ctx.resource.group, &ctx.name, "");
    error.message = format!(
        "Apply failed with {n} conflict{}: {listing}",
        if n == 1 { "" } else { "s" }
    );
    error.details["causes"] = Value::Array(
        conflicts
            .iter()
            .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {:?}", c.manager), "field": c.field}))
            .collect(),
    );
    error
}

fn patch_options_invalid(field: &str, message: &str) -> ApiError {
    ApiError::invalid(
        "PatchOptions",
        "meta.k8s.io",
        "",
        vec![Cause {
            reason: if message.starts_with("Required") {
                "FieldValueRequired".into()
            } else {
                "FieldValueForbidden".into()
            },
            message: message.into(),
            field: field.into(),
        }],
    )
}

/// The real server's upgrade path from client-side apply: conflicts on
/// fields whose value in the `last-applied-configuration` annotation is the
/// value now applied are not conflicts (the same configuration, now applied
/// server-side), so the apply proceeds as if forced.
fn conflicts_from_last_applied(
    live: &Value,
    config: &Value,
    conflicts: &[ssa::FieldConflict],
) -> bool {
    let Some(last) = live
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
    else {
        return false;
    };
    conflicts.iter().all(|c| {
        let pointer = c.field.replace('.', "/");
        last.pointer(&pointer).is_some() && last.pointer(&pointer) == config.pointer(&pointer)
    })
}

fn server_side_apply(ctx: &Ctx, body: &Bytes) -> Result<Response, ApiError> {
    let manager = ctx.q("fieldManager").unwrap_or("").to_string();
    if manager.is_empty() {
        return Err(patch_options_invalid(
            "fieldManager",
            "Required value: is required for apply patch",
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the apply configuration is not UTF-8"))?;
    let mut config: Value = serde_saphyr::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    check_type(&ctx.resource, &mut config)?;
    if let Some(n) = config.pointer("/metadata/name").and_then(Value::as_str)
        && n != ctx.name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({})",
            ctx.name
        )));
    }
    let time = now();
    let api_version = ctx.resource.api_version();
    let request = ctx.apply_request(&manager, &time, &api_version);
    for _ in 0..5 {
        let current = ctx.state.store.get(&ctx.key(), &ctx.namespace, &ctx.name);
        let Some(current) = current else {
            if ctx.subresource.is_some() {
                return Err(ctx.not_found());
            }
            let mut created =
                ssa::apply(None, &config, &request).map_err(|c| apply_conflict(ctx, &c))?;
            created["metadata"]["name"] = json!(ctx.name);
            for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                if created["metadata"].get(field).is_none()
                    && let Some(v) = config.pointer(&format!("/metadata/{field}"))
                {
                    created["metadata"][field] = v.clone();
                }
            }
            let stored = prepare_create(ctx, created, true)?;
            return commit_create(ctx, stored);
        };
        let current_view = from_storage(&ctx.resource, current.clone());
        let applied = match ssa::apply(Some(&current_view), &config, &request) {
            Ok(applied) => applied,
            Err(conflicts) if conflicts_from_last_applied(&current_view, &config, &conflicts) => {
                let forced = ApplyRequest {
                    force: true,
                    ..request.clone()
                };
                ssa::apply(Some(&current_view), &config, &forced)
                    .map_err(|c| apply_conflict(ctx, &c))?
            }
            Err(conflicts) => return Err(apply_conflict(ctx, &conflicts)),
        };
        match write_update(ctx, &current, applied, true) {
            Err(e)
                if e.reason == "Conflict"
                    && config.pointer("/metadata/resourceVersion").is_none() =>
            {
                continue;
            }
            other => return other.map(|o| ok(&o)),
        }
    }
    Err(ApiError::internal(
        "too many concurrent writes to apply the configuration",
    ))
}

fn patch_object(ctx: &Ctx, body: &Bytes) -> Result<Response, ApiError> {
    let kind = content_type(&ctx.headers);
    if kind == "application/apply-patch+yaml" {
        return server_side_apply(ctx, body);
    }
    if ctx.q("force").is_some() {
        return Err(patch_options_invalid(
            "force",
            "Forbidden: may not be specified for non-apply patch",
        ));
    }
    let supported = [
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
    ];
    let strategic_on_custom =
        kind == "application/strategic-merge-patch+json" && ctx.resource.custom.is_some();
    if !supported.contains(&kind.as_str()) || strategic_on_custom {
        return Err(ApiError::unsupported_media_type(&kind));
    }
    let patch = parse_json(body)?;
    let pins_version = patch.pointer("/metadata/resourceVersion").is_some();
    for _ in 0..5 {
        let current = ctx
            .state
            .store
            .get(&ctx.key(), &ctx.namespace, &ctx.name)
            .ok_or_else(|| ctx.not_found())?;
        let mut patched = from_storage(&ctx.resource, current.clone());
        match kind.as_str() {
            "application/merge-patch+json" => patch::merge(&mut patched, &patch),
            "application/strategic-merge-patch+json" => patch::strategic(&mut patched, &patch),
            _ => {
                patched = patch::json_patch(&patched, &patch)
                    .map_err(|e| ApiError::new(422, "Invalid", e.0))?;
            }
        }
        match write_update(ctx, &current, patched, false) {
            Err(e) if e.reason == "Conflict" && !pins_version => continue,
            other => return other.map(|o| ok(&o)),
        }
    }
    Err(ApiError::internal(
        "too many concurrent writes to apply the patch",
    ))
}

/// How dependents are handled when their owner is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// What a delete did.
pub enum Deleted {
    /// Removed from the store.
    Removed(Value),
    /// Kept, with a deletionTimestamp, until its finalizers are removed.
    Pending(Value),
}

/// Deletes a stored object: marks it when finalizers (or the propagation
/// policy's finalizer, or a namespace's content) must run first, else
/// removes it.
pub fn delete_stored(
    state: &ServerState,
    key: &StoreKey,
    current: &Value,
    policy: Propagation,
) -> Result<Deleted, WriteError> {
    let ns = current
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = current
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let rv = resource_version(current);
    let mut finalizers: Vec<Value> = current
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let extra = match policy {
        Propagation::Foreground => Some("foregroundDeletion"),
        Propagation::Orphan => Some("orphan"),
        Propagation::Background => None,
    };
    if let Some(f) = extra
        && !finalizers.contains(&json!(f))
    {
        finalizers.push(json!(f));
    }
    let is_namespace = key == &namespaces_key();
    if finalizers.is_empty() && !is_namespace {
        let removed = state.store.remove(key, ns, name, rv)?;
        if key == &crd_key() {
            unregister_crd(state, &removed);
        }
        state.gc.notify_one();
        return Ok(Deleted::Removed(removed));
    }
    let mut marked = current.clone();
    let already = current.pointer("/metadata/deletionTimestamp").is_some();
    if already
        && current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            == Some(&finalizers)
    {
        return Ok(Deleted::Pending(current.clone()));
    }
    if !already {
        marked["metadata"]["deletionTimestamp"] = json!(now());
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    }
    if !finalizers.is_empty() {
        marked["metadata"]["finalizers"] = Value::Array(finalizers);
    }
    if is_namespace {
        marked["status"]["phase"] = json!("Terminating");
    }
    let updated = state.store.update(key, ns, name, marked, rv.unwrap_or(0))?;
    state.gc.notify_one();
    Ok(Deleted::Pending(updated))
}

fn delete_options(ctx: &Ctx, body: &Bytes) -> Result<(Value, Propagation), ApiError> {
    let options = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_json(body)?
    };
    let policy = options
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or_else(|| ctx.q("propagationPolicy"));
    let orphan = options.get("orphanDependents").and_then(Value::as_bool) == Some(true);
    let policy = match (policy, orphan) {
        (Some("Foreground"), _) => Propagation::Foreground,
        (Some("Orphan"), _) | (None, true) => Propagation::Orphan,
        (Some("Background"), _) | (None, false) => Propagation::Background,
        (Some(other), _) => {
            return Err(ApiError::invalid(
                "DeleteOptions",
                "meta.k8s.io",
                "",
                vec![Cause {
                    reason: "FieldValueNotSupported".into(),
                    message: format!(
                        "Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                    ),
                    field: "propagationPolicy".into(),
                }],
            ));
        }
    };
    Ok((options, policy))
}

fn success_status(ctx: &Ctx, object: &Value) -> Value {
    let mut details =
        json!({"name": object.pointer("/metadata/name"), "kind": ctx.resource.plural});
    if !ctx.resource.group.is_empty() {
        details["group"] = json!(ctx.resource.group);
    }
    if let Some(uid) = object.pointer("/metadata/uid") {
        details["uid"] = uid.clone();
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

fn delete(ctx: &Ctx, body: &Bytes) -> Result<Response, ApiError> {
    let (options, policy) = delete_options(ctx, body)?;
    let current = ctx
        .state
        .store
        .get(&ctx.key(), &ctx.namespace, &ctx.name)
        .ok_or_else(|| ctx.not_found())?;
    let r = &ctx.resource;
    if let Some(uid) = options
        .pointer("/preconditions/uid")
        .and_then(Value::as_str)
    {
        let actual = current
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        if uid != actual {
            return Err(ApiError::conflict(
                &r.plural,
                &r.group,
                &ctx.name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    if let Some(rv) = options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
    {
        let actual = resource_version(&current).unwrap_or(0).to_string();
        if rv != actual {
            return Err(ApiError::conflict(
                &r.plural,
                &r.group,
                &ctx.name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                ),
            ));
        }
    }
    if ctx.dry_run() {
        return Ok(ok(&success_status(ctx, &current)));
    }
    match delete_stored(&ctx.state, &ctx.key(), &current, policy)
        .map_err(|e| store_error(ctx, e))?
    {
        Deleted::Removed(removed) => Ok(ok(&success_status(ctx, &removed))),
        Deleted::Pending(kept) => Ok(ok(&from_storage(r, kept))),
    }
}

fn delete_collection(ctx: &Ctx, body: &Bytes) -> Result<Response, ApiError> {
    let (_, policy) = delete_options(ctx, body)?;
    let filter = Filter::from_query(ctx)?;
    let (items, rv) = ctx.state.store.list(&ctx.key(), namespace_filter(ctx));
    let mut deleted = Vec::new();
    for item in items {
        let view = from_storage(&ctx.resource, item.clone());
        if !filter.matches(&view) {
            continue;
        }
        match delete_stored(&ctx.state, &ctx.key(), &item, policy) {
            Ok(Deleted::Removed(o) | Deleted::Pending(o)) => {
                deleted.push(from_storage(&ctx.resource, o))
            }
            // Deleted or changed meanwhile: the collection delete skips it.
            Err(_) => {}
        }
    }
    Ok(ok(&json!({
        "kind": format!("{}List", ctx.resource.kind),
        "apiVersion": ctx.resource.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": deleted,
    })))
}
