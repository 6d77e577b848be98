//! `TrustDomain` (`td`): this cluster's identity in a federation and the
//! peers it trusts, with the policy that decides what they may do here.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::condition::{Condition, Time};

/// A federation this cluster belongs to: who we are, whom we trust and on
/// what terms. The operator creates our identity, publishes its fingerprint
/// and a join token in status, and probes every member.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "modelpub.io",
    version = "v1alpha1",
    kind = "TrustDomain",
    doc = "TrustDomain (td): this cluster's identity in a federation, the peers it trusts and the policy they are held to.",
    plural = "trustdomains",
    shortname = "td",
    category = "modelpub",
    namespaced,
    status = "TrustDomainStatus",
    printcolumn = r#"{"name":"Self","type":"string","description":"Our name in the federation","jsonPath":".spec.self.name"}"#,
    printcolumn = r#"{"name":"Fingerprint","type":"string","description":"Our identity fingerprint","jsonPath":".status.identityFingerprint"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","description":"Identity issued and members probed","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.members.exists(m, m.name == self.self.name)").message("members must not include this cluster's own name (spec.self.name)").field_path(".members"))]
pub struct TrustDomainSpec {
    /// The federation's name, a DNS label every member's TrustDomain
    /// shares: join tokens name it, and a token for another federation is
    /// refused. Absent means this TrustDomain's `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub federation: Option<String>,
    /// This cluster's identity in the federation.
    #[serde(rename = "self")]
    pub self_: SelfIdentity,
    /// The peers this cluster trusts, each pinned by its public key or
    /// identity fingerprint. Names are unique.
    #[serde(default)]
    #[schemars(length(max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub members: Vec<Member>,
    /// What members may do with this cluster's data and compute.
    #[serde(default)]
    pub policy: TrustPolicy,
}

/// How this cluster names and exposes itself to its peers.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SelfIdentity {
    /// Our name in the federation, a DNS label (lower-case letters, digits
    /// and '-'), e.g. `hospital-a`. It becomes the subject of our identity
    /// and cannot change once the identity is issued.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("self.name is immutable: it is the subject of this cluster's identity"))]
    pub name: String,
    /// The public `https://host:port` URL where peers reach this cluster's
    /// federation endpoint.
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https://[^\s/]+(:[0-9]{1,5})?(/.*)?$")
    )]
    pub endpoint: String,
}

/// A trusted peer. The peer's `joinToken` (from its TrustDomain status)
/// pins its key, its CA and its endpoint at once; without one, `publicKey`
/// or `fingerprint` pins its identity, `endpoint` says where it is, and
/// `caBundle` additionally pins its TLS certificate chain. Pins given next
/// to a token must agree with it.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.joinToken) || has(self.publicKey) || has(self.fingerprint)").message("a member needs a joinToken, a publicKey or a fingerprint pin"))]
#[x_kube(validation = Rule::new("has(self.joinToken) || has(self.endpoint)").message("a member needs an endpoint unless its joinToken gives one").field_path(".endpoint"))]
pub struct Member {
    /// The peer's name in the federation (its `spec.self.name`), a DNS label.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The peer's `https://host:port` federation endpoint. Absent means the
    /// one in `joinToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https://[^\s/]+(:[0-9]{1,5})?(/.*)?$")
    )]
    pub endpoint: Option<String>,
    /// The peer's join token (`mpj2.…`, its TrustDomain's
    /// `status.joinToken`): signed by the peer's identity, for this
    /// federation, and accepted only before it expires. Once accepted it
    /// stays trusted after expiry; changing it is a new acceptance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16384))]
    pub join_token: Option<String>,
    /// The peer's Ed25519 public key: 64 lower-case hex characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub public_key: Option<String>,
    /// The peer's identity fingerprint as shown in its TrustDomain status,
    /// `SHA256:` followed by 64 lower-case hex characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^SHA256:[0-9a-f]{64}$"))]
    pub fingerprint: Option<String>,
    /// PEM certificates the peer's TLS certificate must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_bundle: Option<String>,
}

/// The terms under which members use this cluster.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrustPolicy {
    /// When true, a FederationRound that trains on this cluster's data
    /// waits for the `modelpub.io/consent: granted` annotation before it
    /// starts.
    #[serde(default = "default_true")]
    pub consent_required: bool,
    /// SPDX identifiers of the model licences a FederationRound may use,
    /// e.g. `Apache-2.0`. Empty allows any licence.
    #[serde(default)]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed_model_licences: Vec<String>,
    /// What may be done remotely with each class of data. When the list is
    /// not empty, a data class it does not name may not be used; an empty
    /// list puts no limit on data classes.
    #[serde(default)]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub data_classes: Vec<DataClassRule>,
    /// Egress limit towards members, in bits per second as a Kubernetes
    /// quantity (e.g. `100M`), the `kubernetes.io/egress-bandwidth`
    /// convention. Absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_limit: Option<Quantity>,
}

impl Default for TrustPolicy {
    fn default() -> Self {
        Self {
            consent_required: true,
            allowed_model_licences: Vec::new(),
            data_classes: Vec::new(),
            bandwidth_limit: None,
        }
    }
}

/// The rule for one data class.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxEpsilon) || self.federatedTraining").message("maxEpsilon only applies when federatedTraining is allowed").field_path(".maxEpsilon"))]
pub struct DataClassRule {
    /// The data class, as a FederationRound names it in `spec.data.dataClass`,
    /// e.g. `public`, `pseudonymised`, `clinical`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// May members train models on this class with federated learning (the
    /// data stays here; only model updates leave)?
    #[serde(default)]
    pub federated_training: bool,
    /// May members run arbitrary workloads on this class (data would be
    /// processed by code they supply)?
    #[serde(default)]
    pub remote_compute: bool,
    /// Must updates from this class be protected by secure aggregation?
    #[serde(default = "default_true")]
    pub require_secure_aggregation: bool,
    /// Largest differential privacy budget (epsilon) a run on this class may
    /// spend. Absent means differential privacy is not required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_epsilon: Option<f64>,
}

fn default_true() -> bool {
    true
}

/// What the operator observed about the domain.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrustDomainStatus {
    /// Fingerprint of this cluster's identity (`SHA256:<hex>`); peers put it
    /// in their `members[].fingerprint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_fingerprint: Option<String>,
    /// Our Ed25519 public key in hex, for peers that pin keys directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// A token peers paste into their `spec.members[].joinToken` to trust
    /// this cluster: `mpj2.` and the base64url JSON of the federation, our
    /// name, endpoint, public key and CA certificate, signed by our
    /// identity and valid until `joinTokenExpiry`. It holds no secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
    /// When `joinToken` stops being accepted by peers that have not
    /// accepted it yet; a fresh one is published before then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token_expiry: Option<Time>,
    /// Name of the Secret holding our private identity key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_secret_name: Option<String>,
    /// Reachability of each member, from the operator's last probe (one
    /// per `spec.members` entry, so at most 256).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub members: Vec<MemberStatus>,
    /// The clients the federation endpoint refused most recently (at most
    /// 20, newest first), each with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub refused_peers: Vec<RefusedPeer>,
    /// Standard conditions: `Ready` (identity issued, every member
    /// reachable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One member: whether its pins are trusted, and how it answered the last
/// probe.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// The member's name.
    pub name: String,
    /// Whether its pins are accepted: false when its join token was
    /// refused (see `reason`). An untrusted member is not probed and takes
    /// part in nothing.
    #[serde(default = "default_true")]
    pub trusted: bool,
    /// Why it is not trusted, or what it is pinned by: `Pinned`,
    /// `JoinTokenAccepted`, `JoinTokenExpired`, `JoinTokenTampered`,
    /// `JoinTokenForeignFederation`, `JoinTokenMismatch` or
    /// `JoinTokenInvalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The identity fingerprint it is pinned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The SHA-256 (hex) of the join token accepted for it; a token whose
    /// digest is recorded here is not checked for expiry again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_token_sha256: Option<String>,
    /// Whether its endpoint answered (over TLS to its pinned CA when one
    /// is known).
    pub reachable: bool,
    /// When the operator last probed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// Why it is unreachable, or what it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When its federation endpoint last completed the signed handshake:
    /// mutual TLS to the CA pinned for it, and a reply signed by the key
    /// pinned for it. Kept while later probes fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handshake_time: Option<Time>,
}

/// A client this cluster's federation endpoint turned away.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RefusedPeer {
    /// Who it claimed to be: the envelope's sender, or the common name of
    /// the certificate it presented.
    pub name: String,
    /// `UnknownCertificateAuthority` (its certificate chains to no CA
    /// pinned for a member: never peered, or its CA changed),
    /// `NotAMember` (no member of that name), `SignatureMismatch` (its
    /// envelope is not signed by the key pinned for it: re-keyed), or
    /// `BadRequest`.
    pub reason: String,
    /// What was wrong, in words.
    pub message: String,
    /// The address it connected from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The SHA-256 of the certificate it presented, when it presented one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_sha256: Option<String>,
    /// When it was last refused.
    pub last_refused_time: Time,
}

impl TrustDomain {
    /// The federation this TrustDomain belongs to: `spec.federation`, or
    /// its own name.
    pub fn federation_name(&self) -> String {
        self.spec
            .federation
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }
}
