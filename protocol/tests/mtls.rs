//! Mutual TLS end to end: a real tonic server only admits clients holding a
//! certificate from its federation's CA.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;

use modelpub_protocol::envelope::{Expectation, Opened, RoundRule, Signer, open};
use modelpub_protocol::identity::{Identity, Roster};
use modelpub_protocol::pb;
use modelpub_protocol::pb::federation_client::FederationClient;
use modelpub_protocol::pb::federation_server::{Federation, FederationServer};
use modelpub_protocol::replay::ReplayGuard;
use modelpub_protocol::tls::{FederationCa, TlsMaterial};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{ClientTlsConfig, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

const FED: &str = "fed-mtls";

struct TestFederation {
    signer: Signer,
}

type FrameStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ModelFrame, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Federation for TestFederation {
    async fn join(
        &self,
        _request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        let accepted = pb::JoinAccepted {
            total_rounds: 3,
            ..Default::default()
        };
        Ok(Response::new(self.signer.seal(0, &accepted)))
    }

    async fn await_round(
        &self,
        _request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        Err(Status::unimplemented("test server"))
    }

    type DownloadModelStream = FrameStream;

    async fn download_model(
        &self,
        _request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<Self::DownloadModelStream>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn upload_update(
        &self,
        _request: Request<Streaming<pb::UpdateFrame>>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn get_round_result(
        &self,
        _request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn advertise_keys(
        &self,
        _request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn share_keys(
        &self,
        _request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn await_unmask(
        &self,
        _request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn reveal(
        &self,
        _request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        Err(Status::unimplemented("test server"))
    }
}

async fn start_server(material: &TlsMaterial, server_id: Identity) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = FederationServer::new(TestFederation {
        signer: Signer::new(server_id, FED),
    });
    let router = Server::builder()
        .tls_config(material.server_config())
        .unwrap()
        .add_service(service);
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    addr
}

async fn call_join(addr: SocketAddr, tls: ClientTlsConfig) -> Result<pb::SignedEnvelope, String> {
    let endpoint = Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    let client_id = Identity::from_secret_bytes("client", [2; 32]);
    let request = Signer::new(client_id, FED).seal(0, &pb::JoinRequest::default());
    FederationClient::new(channel)
        .join(request)
        .await
        .map(Response::into_inner)
        .map_err(|e| format!("{e:?}"))
}

fn issue_server(ca: &FederationCa) -> TlsMaterial {
    ca.issue(
        "aggregator",
        &["localhost"],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
    )
    .unwrap()
}

#[tokio::test]
async fn same_ca_client_is_admitted_and_gets_a_verifiable_reply() {
    let ca = FederationCa::generate(FED).unwrap();
    let server_id = Identity::generate("aggregator").unwrap();
    let addr = start_server(&issue_server(&ca), server_id.clone()).await;
    let client = ca.issue("bank-a", &[], &[]).unwrap();
    let reply = call_join(addr, client.client_config("localhost"))
        .await
        .expect("a member of the federation must get through");
    let roster = Roster::new([server_id.public()]);
    let opened: Opened<pb::JoinAccepted> = open(
        &reply,
        &roster,
        &Expectation {
            federation: FED,
            round: RoundRule::Exactly(0),
        },
        &ReplayGuard::new(),
    )
    .unwrap();
    assert_eq!(opened.message.total_rounds, 3);
}

#[tokio::test]
async fn client_from_another_ca_is_refused() {
    let ca = FederationCa::generate(FED).unwrap();
    let addr = start_server(
        &issue_server(&ca),
        Identity::generate("aggregator").unwrap(),
    )
    .await;
    let intruder = FederationCa::generate(FED)
        .unwrap()
        .issue("bank-a", &[], &[])
        .unwrap();
    // The intruder trusts the real CA, so only its own certificate is wrong.
    let material = TlsMaterial {
        ca_pem: ca.cert_pem(),
        ..intruder
    };
    let result = call_join(addr, material.client_config("localhost")).await;
    assert!(result.is_err(), "foreign certificate was accepted");
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let ca = FederationCa::generate(FED).unwrap();
    let addr = start_server(
        &issue_server(&ca),
        Identity::generate("aggregator").unwrap(),
    )
    .await;
    modelpub_protocol::tls::install_crypto_provider();
    let anonymous = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca.cert_pem()))
        .domain_name("localhost");
    let result = call_join(addr, anonymous).await;
    assert!(result.is_err(), "client without certificate was accepted");
}

#[tokio::test]
async fn client_refuses_server_from_another_ca() {
    let ca = FederationCa::generate(FED).unwrap();
    let rogue = FederationCa::generate(FED).unwrap();
    let addr = start_server(
        &issue_server(&rogue),
        Identity::generate("aggregator").unwrap(),
    )
    .await;
    let client = ca.issue("bank-a", &[], &[]).unwrap();
    let result = call_join(addr, client.client_config("localhost")).await;
    assert!(
        result.is_err(),
        "client trusted a server outside its federation"
    );
}
