//! The federation endpoint's listener and its `Peering` service.
//!
//! Each connection is read up to its ClientHello first: the SNI
//! ([`super::server_name`]) picks the TrustDomain, whose CA issues the
//! certificate we present and whose trusted members' CAs are the only
//! client roots. A client refused there (never peered, or its CA changed)
//! is recorded with the certificate it presented, as is one whose
//! envelope fails the sender's pinned key.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use modelpub_crds::TrustDomain;
use modelpub_protocol::envelope::{Expectation, Opened, RoundRule, open, seal};
use modelpub_protocol::error::ProtocolError;
use modelpub_protocol::pb;
use modelpub_protocol::pb::peering_server::{Peering, PeeringServer};
use modelpub_protocol::replay::{ReplayGuard, SequenceCounter};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};

use super::domain::LocalDomain;
use super::refusals::{self, BAD_REQUEST, NOT_A_MEMBER, SIGNATURE_MISMATCH, UNKNOWN_CA};
use super::tls::{self, Presented, PresentedSlot};
use crate::context::Context;

/// How long a client has to send its ClientHello and finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `Peering` on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Context>,
) -> Result<(), tonic::transport::Error> {
    let (connections, incoming) = tokio::sync::mpsc::channel(16);
    let accepting = ctx.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, address)) = listener.accept().await else {
                continue;
            };
            let ctx = accepting.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                if let Some(tls) = handshake(tcp, address, &ctx).await {
                    let _ = connections.send(Ok::<_, std::io::Error>(tls)).await;
                }
            });
        }
    });
    tonic::transport::Server::builder()
        .add_service(PeeringServer::new(Endpoint::new(ctx)))
        .serve_with_incoming(ReceiverStream::new(incoming))
        .await
}

/// The TrustDomain whose endpoint name is `sni`.
async fn domain_for(ctx: &Context, sni: &str) -> Option<TrustDomain> {
    let list: Vec<TrustDomain> = ctx.config.scope.list(&ctx.client).await.ok()?;
    list.into_iter()
        .find(|td| super::server_name(&td.spec.self_.name, &td.federation_name()) == sni)
}

async fn handshake(
    tcp: TcpStream,
    address: SocketAddr,
    ctx: &Context,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
    let start = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor)
        .await
        .ok()?
        .map_err(|e| tracing::debug!(%address, "not a TLS client: {e}"))
        .ok()?;
    let sni = start.client_hello().server_name().unwrap_or("").to_string();
    let Some(td) = domain_for(ctx, &sni).await else {
        tracing::info!(%address, %sni, "federation endpoint: no TrustDomain serves this name");
        return None;
    };
    let domain = LocalDomain::load(&ctx.client, &td, ctx.clock.now().as_second())
        .await
        .map_err(|e| tracing::warn!(%address, "federation endpoint of {sni}: {e}"))
        .ok()?;
    let seen = PresentedSlot::default();
    let config = match tls::server_config(&domain, seen.clone()) {
        Ok(Some(config)) => config,
        Ok(None) => {
            refuse(
                ctx,
                &td,
                "(unknown)",
                UNKNOWN_CA,
                format!(
                    "a client connected to {}, which trusts no member with a pinned CA yet",
                    domain.name()
                ),
                address,
                None,
            )
            .await;
            return None;
        }
        Err(e) => {
            tracing::warn!(%address, "federation endpoint of {sni}: {e}");
            return None;
        }
    };
    let accept = start.into_stream(Arc::new(config));
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            let presented = seen.lock().ok().and_then(|s| s.clone());
            // No certificate seen: the client gave up on ours (it pinned
            // another CA for us), which is its refusal, not ours.
            if let Some(p) = presented {
                let name = p.common_name.clone().unwrap_or_else(|| "(no name)".into());
                refuse(
                    ctx,
                    &td,
                    &name,
                    UNKNOWN_CA,
                    format!(
                        "TLS handshake refused: the certificate of {name} chains to no CA pinned for a member of {} ({e}); \
                         a cluster that was never peered, or whose CA changed (paste its new join token)",
                        domain.federation
                    ),
                    address,
                    Some(p),
                )
                .await;
            } else {
                tracing::info!(%address, "federation endpoint: TLS handshake failed: {e}");
            }
            None
        }
        Err(_) => None,
    }
}

/// Records a refusal for the TrustDomain status and says so in a Warning
/// Event on it.
async fn refuse(
    ctx: &Context,
    td: &TrustDomain,
    name: &str,
    reason: &str,
    message: String,
    address: SocketAddr,
    presented: Option<Presented>,
) {
    tracing::warn!(%address, name, reason, "federation endpoint: {message}");
    let ns = td.namespace().unwrap_or_default();
    ctx.refusals.record(
        &ns,
        &td.name_any(),
        refusals::refused(
            name,
            reason,
            message.clone(),
            Some(address.to_string()),
            presented.map(|p| p.sha256),
            ctx.clock.now_time(),
        ),
    );
    ctx.events
        .warning_about_member(
            td,
            name,
            reason,
            "FederationHandshake",
            format!("refused {name} from {address}: {message}"),
        )
        .await;
}

/// The `Peering` service.
pub struct Endpoint {
    ctx: Arc<Context>,
    sequence: SequenceCounter,
    replay: ReplayGuard,
}

impl Endpoint {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            sequence: SequenceCounter::new(),
            replay: ReplayGuard::new(),
        }
    }

    /// Finds the TrustDomain the envelope is addressed to, checks that its
    /// sender is a trusted member, that the connection's client
    /// certificate was issued by that member's pinned CA, and that the
    /// envelope is signed by its pinned key.
    async fn authenticate<M>(
        &self,
        request: &Request<pb::SignedEnvelope>,
        to: impl Fn(&M) -> &str,
    ) -> Result<(LocalDomain, TrustDomain, Opened<M>), Status>
    where
        M: prost::Message + prost::Name + Default,
    {
        let env = request.get_ref();
        let info = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .cloned();
        let address = info
            .as_ref()
            .and_then(|i| i.get_ref().remote_addr())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let certificate = info
            .as_ref()
            .and_then(|i| i.peer_certs())
            .and_then(|c| c.first().map(|c| c.as_ref().to_vec()));
        // Which domain is only known from the payload; it is checked
        // below once the signature is.
        let unverified = M::decode(env.payload.as_slice()).map_err(|e| {
            Status::invalid_argument(format!("{}: payload does not decode: {e}", env.kind))
        })?;
        let wanted = to(&unverified).to_string();
        let td = (self.ctx.config.scope.list::<TrustDomain>(&self.ctx.client))
            .await
            .map_err(|e| Status::unavailable(format!("cannot list TrustDomains: {e}")))?
            .into_iter()
            .find(|td| td.spec.self_.name == wanted && td.federation_name() == env.federation)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no member {wanted:?} of federation {:?} here",
                    env.federation
                ))
            })?;
        let domain = LocalDomain::load(&self.ctx.client, &td, self.ctx.clock.now().as_second())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let presented = certificate.as_deref().map(Presented::from_der);
        let Some(peer) = domain.peer(&env.sender) else {
            let message = format!(
                "{:?} is not a trusted member of {} at {}",
                env.sender,
                domain.federation,
                domain.name()
            );
            refuse(
                &self.ctx,
                &td,
                &env.sender,
                NOT_A_MEMBER,
                message.clone(),
                address,
                presented,
            )
            .await;
            return Err(Status::permission_denied(message));
        };
        let bound = match (&certificate, &peer.ca_bundle) {
            (Some(der), Some(ca)) => tls::issued_by(der, ca),
            _ => false,
        };
        if !bound {
            let message = format!(
                "the client certificate was not issued by the CA pinned for {}",
                peer.name
            );
            refuse(
                &self.ctx,
                &td,
                &env.sender,
                UNKNOWN_CA,
                message.clone(),
                address,
                presented,
            )
            .await;
            return Err(Status::permission_denied(message));
        }
        let expect = Expectation {
            federation: &domain.federation,
            round: RoundRule::Exactly(0),
        };
        match open::<M>(env, &domain.roster(), &expect, &self.replay) {
            Ok(opened) => Ok((domain, td, opened)),
            Err(e) => {
                let reason = match e {
                    ProtocolError::BadSignature { .. } => SIGNATURE_MISMATCH,
                    ProtocolError::UnknownSender(_) => NOT_A_MEMBER,
                    _ => BAD_REQUEST,
                };
                let message = match reason {
                    SIGNATURE_MISMATCH => format!(
                        "{e}: not signed by the key pinned for {} (re-keyed? paste its new join token)",
                        peer.name
                    ),
                    _ => e.to_string(),
                };
                refuse(
                    &self.ctx,
                    &td,
                    &env.sender,
                    reason,
                    message,
                    address,
                    presented,
                )
                .await;
                Err(e.into())
            }
        }
    }

    fn seal<M: prost::Message + prost::Name>(
        &self,
        domain: &LocalDomain,
        m: &M,
    ) -> pb::SignedEnvelope {
        seal(
            &domain.identity,
            &domain.federation,
            0,
            self.sequence.next(),
            m,
        )
    }
}

#[tonic::async_trait]
impl Peering for Endpoint {
    async fn hello(
        &self,
        request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        let (domain, _, opened) = self
            .authenticate::<pb::PeeringHello>(&request, |h| &h.to)
            .await?;
        let welcome = pb::PeeringWelcome {
            to: domain.name().to_string(),
            hello_sent_unix_ms: opened.message.sent_unix_ms,
        };
        Ok(Response::new(self.seal(&domain, &welcome)))
    }

    async fn join_round(
        &self,
        request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        let (domain, _, opened) = self
            .authenticate::<pb::RoundJoin>(&request, |j| &j.to)
            .await?;
        let view =
            super::rounds::join(&self.ctx.client, &domain, &opened.sender, &opened.message).await?;
        Ok(Response::new(self.seal(&domain, &view)))
    }
}
