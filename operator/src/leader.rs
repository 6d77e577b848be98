//! Leader election: only one operator replica reconciles.
//!
//! Replicas compete for a `coordination.k8s.io/v1` Lease
//! (`--lease-namespace`/`--lease-name`) through `kube-lease-manager`, which
//! publishes "am I the leader?" on a watch channel. [`run_while_leading`]
//! is the gate: it starts the controllers when this replica becomes leader
//! and drops them — stopping every reconcile at its next await point — as
//! soon as the lease is lost, then waits to lead again. Dropping the
//! channel makes the manager release the lease, so a clean shutdown hands
//! leadership over at once instead of after the lease expires.

use std::future::Future;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a lease is valid after its last renewal, in seconds.
pub const LEASE_DURATION_SECS: u64 = 15;
/// The leader renews this long before its lease would expire.
pub const LEASE_GRACE_SECS: u64 = 5;

#[derive(Debug, thiserror::Error)]
#[error("leader election with Lease {namespace}/{name}: {source}")]
pub struct LeaderError {
    pub namespace: String,
    pub name: String,
    #[source]
    pub source: LeaseManagerError,
}

/// The background election task; it ends (releasing the lease) once every
/// receiver of its channel is dropped.
pub type Election = JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>;

/// Joins the election for Lease `namespace/name` as `identity` (the pod
/// name): creates the Lease when missing and keeps competing in the
/// background. The receiver says whether this replica leads now; the
/// handle ends when every receiver is dropped (after releasing the lease).
pub async fn elect(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
) -> Result<(watch::Receiver<bool>, Election), LeaderError> {
    let manager = LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(LEASE_DURATION_SECS)
        .with_grace(LEASE_GRACE_SECS)
        .build()
        .await
        .map_err(|source| LeaderError {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
        })?;
    Ok(manager.watch().await)
}

/// Why [`run_while_leading`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateEnd {
    /// The work future finished on its own while leading.
    WorkEnded,
    /// The election stopped (its channel closed): nobody can say we lead.
    ElectionEnded,
}

/// Runs `work()` only while `leading` is true: starts it on becoming
/// leader, drops it on losing the lease, and starts a fresh one on leading
/// again.
pub async fn run_while_leading<F, Fut>(mut leading: watch::Receiver<bool>, mut work: F) -> GateEnd
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return GateEnd::ElectionEnded;
        }
        tracing::info!("leading: starting the controllers");
        let lost = async {
            // Err: the election ended, which also means we no longer lead.
            let _ = leading.wait_for(|l| !*l).await;
        };
        tokio::select! {
            () = work() => return GateEnd::WorkEnded,
            () = lost => {
                tracing::warn!("lost the lease: stopping the controllers");
            }
        }
        if leading.has_changed().is_err() {
            return GateEnd::ElectionEnded;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Counts starts and drops of the work future.
    #[derive(Default)]
    struct Probe {
        started: AtomicUsize,
        dropped: AtomicUsize,
    }

    struct DropGuard(Arc<Probe>);

    impl Drop for DropGuard {
        fn drop(&mut self) {
            self.0.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn pending_work(probe: Arc<Probe>) -> impl FnMut() -> futures::future::BoxFuture<'static, ()> {
        move || {
            let probe = probe.clone();
            Box::pin(async move {
                probe.started.fetch_add(1, Ordering::SeqCst);
                let _guard = DropGuard(probe);
                std::future::pending::<()>().await;
            })
        }
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// Waits (up to 5 s) until `counter` reaches `want`.
    async fn reaches(counter: &AtomicUsize, want: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while counter.load(Ordering::SeqCst) != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "counter stuck at {}, want {want}",
                counter.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn work_runs_only_while_leading() {
        let (tx, rx) = watch::channel(false);
        let probe = Arc::new(Probe::default());
        let gate = tokio::spawn(run_while_leading(rx, pending_work(probe.clone())));
        settle().await;
        assert_eq!(probe.started.load(Ordering::SeqCst), 0, "not leader yet");
        tx.send(true).unwrap();
        reaches(&probe.started, 1).await;
        assert_eq!(probe.dropped.load(Ordering::SeqCst), 0);
        tx.send(false).unwrap();
        reaches(&probe.dropped, 1).await;
        settle().await;
        assert_eq!(
            probe.started.load(Ordering::SeqCst),
            1,
            "not restarted while not leading"
        );
        tx.send(true).unwrap();
        reaches(&probe.started, 2).await;
        drop(tx);
        let end = tokio::time::timeout(Duration::from_secs(5), gate)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(end, GateEnd::ElectionEnded);
        assert_eq!(probe.dropped.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn finished_work_ends_the_gate() {
        let (_tx, rx) = watch::channel(true);
        let end = run_while_leading(rx, || async {}).await;
        assert_eq!(end, GateEnd::WorkEnded);
    }

    #[tokio::test]
    async fn an_election_that_ends_before_leading_ends_the_gate() {
        let (tx, rx) = watch::channel(false);
        drop(tx);
        let end = run_while_leading(rx, || async { panic!("must not run") }).await;
        assert_eq!(end, GateEnd::ElectionEnded);
    }

    /// A minimal Lease store behind the mocked API: GET, POST, PATCH
    /// (spec fields merged, null removes).
    fn serve_lease(ex: crate::testing::Exchange, lease: &mut Option<serde_json::Value>) {
        assert_eq!(ex.path.split('/').nth(5), Some("lease-ns"), "{}", ex.path);
        match ex.method.as_str() {
            "GET" => match lease.clone() {
                Some(l) => ex.respond(200, &l),
                None => ex.not_found(),
            },
            "POST" => {
                let mut l = ex.body.clone();
                l["metadata"]["namespace"] = "lease-ns".into();
                l["metadata"]["resourceVersion"] = "1".into();
                *lease = Some(l.clone());
                ex.respond(201, &l);
            }
            "PATCH" => {
                let l = lease.as_mut().expect("patch of an existing lease");
                if !l["spec"].is_object() {
                    l["spec"] = serde_json::json!({});
                }
                for (k, v) in ex.body["spec"].as_object().unwrap() {
                    if v.is_null() {
                        l["spec"].as_object_mut().unwrap().remove(k);
                    } else {
                        l["spec"][k] = v.clone();
                    }
                }
                let l = l.clone();
                ex.respond(200, &l);
            }
            other => panic!("unexpected {other} {}", ex.path),
        }
    }

    #[tokio::test]
    async fn elect_creates_and_takes_the_lease() {
        exercised().await;
    }

    /// Plays an election until this replica leads; returns the grants used.
    pub(crate) async fn exercised() -> std::collections::BTreeSet<crate::rbac::Grant> {
        let (ctx, mut api) = crate::testing::context();
        let client = ctx.client.clone();
        let election = tokio::spawn(async move {
            let (mut rx, handle) = elect(client, "lease-ns", "modelpub-operator", "pod-a")
                .await
                .expect("election starts");
            rx.wait_for(|l| *l).await.expect("becomes leader");
            (rx, handle)
        });
        tokio::pin!(election);
        let mut lease = None;
        let (_rx, _handle) = loop {
            tokio::select! {
                done = &mut election => break done.unwrap(),
                ex = api.next() => serve_lease(ex, &mut lease),
            }
        };
        let lease = lease.expect("the lease was created");
        assert_eq!(lease["metadata"]["name"], "modelpub-operator");
        assert_eq!(lease["spec"]["holderIdentity"], "pod-a");
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);
        api.seen().clone()
    }
}
