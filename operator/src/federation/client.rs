//! This cluster calling a member's federation endpoint: `Hello` (the
//! TrustDomain probe's signed handshake) and `JoinRound` (a round the
//! member coordinates). Behind [`PeerLink`] so scenario tests answer with
//! canned replies (`testing::FakeLink`) and the operator uses the network
//! ([`NetworkLink`]).

use std::time::Duration;

use futures::future::BoxFuture;
use modelpub_protocol::envelope::{Expectation, RoundRule, open, seal};
use modelpub_protocol::identity::Roster;
use modelpub_protocol::pb;
use modelpub_protocol::pb::peering_client::PeeringClient;
use modelpub_protocol::replay::{ReplayGuard, SequenceCounter};
use tonic::transport::Endpoint;

use super::domain::LocalDomain;
use super::tls;
use crate::controllers::trust_domain::peers::Peer;
use crate::controllers::trust_domain::probe::socket_address;

/// What calling a member may do.
pub trait PeerLink: Send + Sync {
    /// The signed handshake: `Ok` once the member answered over TLS to its
    /// pinned CA with a welcome signed by its pinned key.
    fn hello<'a>(
        &'a self,
        domain: &'a LocalDomain,
        peer: &'a Peer,
    ) -> BoxFuture<'a, Result<String, String>>;

    /// Registers our participants of `join.round` with the member that
    /// coordinates it; its view of the round.
    fn join_round<'a>(
        &'a self,
        domain: &'a LocalDomain,
        peer: &'a Peer,
        join: pb::RoundJoin,
    ) -> BoxFuture<'a, Result<pb::RoundView, String>>;
}

/// Calls over the network, each within `timeout`.
#[derive(Debug)]
pub struct NetworkLink {
    pub timeout: Duration,
    sequence: SequenceCounter,
    replay: ReplayGuard,
}

impl Default for NetworkLink {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            sequence: SequenceCounter::new(),
            replay: ReplayGuard::new(),
        }
    }
}

impl NetworkLink {
    async fn connect(
        &self,
        domain: &LocalDomain,
        peer: &Peer,
    ) -> Result<PeeringClient<tonic::transport::Channel>, String> {
        let address = socket_address(&peer.endpoint)?;
        let tls = tls::client_config(domain, peer)?;
        let channel = Endpoint::from_shared(format!("https://{address}"))
            .map_err(|e| format!("endpoint {}: {e}", peer.endpoint))?
            .tls_config(tls)
            .map_err(|e| format!("TLS configuration for {}: {e}", peer.name))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .connect()
            .await
            .map_err(|e| {
                format!(
                    "cannot reach the federation endpoint of {} at {address}: {}",
                    peer.name,
                    crate::federation::client::causes(&e)
                )
            })?;
        Ok(PeeringClient::new(channel))
    }

    /// Opens a reply: from `peer`, signed by its pinned key, round 0.
    fn reply<M: prost::Message + prost::Name + Default>(
        &self,
        domain: &LocalDomain,
        peer: &Peer,
        env: &pb::SignedEnvelope,
    ) -> Result<M, String> {
        let key = peer.public.clone().ok_or_else(|| {
            format!(
                "member {} is pinned by fingerprint only: its replies cannot be checked (give its joinToken or publicKey)",
                peer.name
            )
        })?;
        let roster = Roster::new([key]);
        let expect = Expectation {
            federation: &domain.federation,
            round: RoundRule::Exactly(0),
        };
        open::<M>(env, &roster, &expect, &self.replay)
            .map(|o| o.message)
            .map_err(|e| format!("the reply of {} was refused: {e}", peer.name))
    }
}

/// An error with its causes, for a status message.
pub fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn refused(peer: &Peer, status: tonic::Status) -> String {
    format!(
        "{} refused: {} ({:?})",
        peer.name,
        status.message(),
        status.code()
    )
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl PeerLink for NetworkLink {
    fn hello<'a>(
        &'a self,
        domain: &'a LocalDomain,
        peer: &'a Peer,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let mut client = self.connect(domain, peer).await?;
            let sent = now_ms();
            let hello = pb::PeeringHello {
                to: peer.name.clone(),
                sent_unix_ms: sent,
            };
            let env = seal(
                &domain.identity,
                &domain.federation,
                0,
                self.sequence.next(),
                &hello,
            );
            let reply = client
                .hello(env)
                .await
                .map_err(|s| refused(peer, s))?
                .into_inner();
            let welcome: pb::PeeringWelcome = self.reply(domain, peer, &reply)?;
            if welcome.to != peer.name || welcome.hello_sent_unix_ms != sent {
                return Err(format!(
                    "{} answered a different hello (to {:?} at {})",
                    peer.name, welcome.to, welcome.hello_sent_unix_ms
                ));
            }
            // No timing in the message: the status is rewritten only when
            // what it says changes.
            Ok(format!(
                "signed handshake: TLS to the pinned CA, welcome signed by the pinned key of {}",
                peer.name
            ))
        })
    }

    fn join_round<'a>(
        &'a self,
        domain: &'a LocalDomain,
        peer: &'a Peer,
        join: pb::RoundJoin,
    ) -> BoxFuture<'a, Result<pb::RoundView, String>> {
        Box::pin(async move {
            let mut client = self.connect(domain, peer).await?;
            let env = seal(
                &domain.identity,
                &domain.federation,
                0,
                self.sequence.next(),
                &join,
            );
            let reply = client
                .join_round(env)
                .await
                .map_err(|s| refused(peer, s))?
                .into_inner();
            self.reply(domain, peer, &reply)
        })
    }
}
