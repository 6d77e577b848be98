//! Kubernetes Events that explain what the operator did, as
//! `kubectl describe` shows them: Normal when it created something
//! (an identity, a CA, a certificate, a workload), Warning when a spec is
//! invalid or a reconcile failed.
//!
//! Events go to `events.k8s.io/v1` through kube's [`Recorder`] (reporter
//! `modelpub-operator`, instance = the pod name): a first event is a POST, an
//! identical one within minutes becomes a PATCH of its series count.
//! Publishing is best effort: a failure is logged and never fails the
//! reconcile that explains itself with it.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// The `reportingController` of every event.
pub const REPORTER: &str = "modelpub-operator";

/// Publishes events about ModelPub resources. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    recorder: std::sync::Arc<Recorder>,
}

impl Events {
    /// `instance` distinguishes replicas (the pod name, `$POD_NAME`).
    pub fn new(client: kube::Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: REPORTER.to_string(),
            instance,
        };
        Self {
            recorder: std::sync::Arc::new(Recorder::new(client, reporter)),
        }
    }

    /// A Normal event on `obj`: `reason` (PascalCase, e.g. `IdentityCreated`),
    /// `action` (PascalCase verb, e.g. `CreateSecret`), `note` for humans.
    pub async fn normal<K>(&self, obj: &K, reason: &str, action: &str, note: impl Into<String>)
    where
        K: Resource<DynamicType = ()>,
    {
        self.publish(obj, EventType::Normal, reason, action, note.into())
            .await;
    }

    /// A Warning event on `obj` (invalid spec, failed reconcile).
    pub async fn warning<K>(&self, obj: &K, reason: &str, action: &str, note: impl Into<String>)
    where
        K: Resource<DynamicType = ()>,
    {
        self.publish(obj, EventType::Warning, reason, action, note.into())
            .await;
    }

    /// A Warning event on `obj` about federation member `member` (not a
    /// Kubernetes object): named as the event's `related` object, so each
    /// member's events form their own series. The recorder folds events
    /// with the same type, reason, action and objects into one series
    /// that keeps the first note; without this, a second cluster refused
    /// for the same reason would only raise the first one's count.
    pub async fn warning_about_member<K>(
        &self,
        obj: &K,
        member: &str,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let related = ObjectReference {
            api_version: Some("modelpub.io/v1alpha1".into()),
            kind: Some("FederationMember".into()),
            name: Some(member.to_string()),
            ..ObjectReference::default()
        };
        self.publish_related(
            obj,
            EventType::Warning,
            reason,
            action,
            note.into(),
            Some(related),
        )
        .await;
    }

    async fn publish<K>(&self, obj: &K, type_: EventType, reason: &str, action: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        self.publish_related(obj, type_, reason, action, note, None)
            .await;
    }

    async fn publish_related<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        secondary: Option<ObjectReference>,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let reference = obj.object_ref(&());
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(truncate_note(note)),
            action: action.to_string(),
            secondary,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(
                kind = %K::kind(&()),
                name = reference.name.as_deref().unwrap_or(""),
                reason,
                "cannot publish event: {e}"
            );
        }
    }
}

/// The API server rejects notes over 1 kB; keep the start, which names the
/// problem, and cut on a character boundary.
fn truncate_note(note: String) -> String {
    const MAX: usize = 1024;
    if note.len() <= MAX {
        return note;
    }
    let mut end = MAX - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

#[cfg(test)]
mod tests {
    use super::truncate_note;

    #[test]
    fn long_notes_are_cut_to_one_kilobyte_on_a_char_boundary() {
        assert_eq!(truncate_note("short".into()), "short");
        let long = "é".repeat(1000);
        let cut = truncate_note(long);
        assert!(cut.len() <= 1024 && cut.ends_with("..."), "{}", cut.len());
    }
}
