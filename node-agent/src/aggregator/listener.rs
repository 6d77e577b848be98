//! The aggregator's mutual-TLS listener. Each connection's handshake runs
//! here rather than inside tonic, so that a client refused in it (its
//! certificate chains to no CA of the round: a cluster never peered, or
//! one whose CA changed) can be named: the certificate it presented goes
//! into the audit log and `/status`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use modelpub_protocol::client_auth::{self, Presented, PresentedSlot};
use modelpub_protocol::tls::TlsMaterial;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;

/// An accepted connection, handed to tonic.
pub type Connection = tokio_rustls::server::TlsStream<TcpStream>;

/// How long a client has to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client refused in the handshake.
#[derive(Debug, Clone)]
pub struct Refused {
    pub presented: Presented,
    pub address: SocketAddr,
    pub reason: String,
}

/// Accepts connections on `listener`, completes each handshake with a
/// client certificate required to chain to `tls.ca_pem` (a bundle: this
/// cluster's CA and the members'), and yields the connections that pass.
/// `on_refused` hears of every client whose certificate was refused.
pub fn incoming(
    listener: TcpListener,
    tls: TlsMaterial,
    on_refused: impl Fn(Refused) + Send + Sync + 'static,
) -> ReceiverStream<Result<Connection, std::io::Error>> {
    let (connections, incoming) = tokio::sync::mpsc::channel(64);
    let on_refused = Arc::new(on_refused);
    tokio::spawn(async move {
        loop {
            let (tcp, address) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    continue;
                }
            };
            let tls = tls.clone();
            let connections = connections.clone();
            let on_refused = on_refused.clone();
            tokio::spawn(async move {
                let seen = PresentedSlot::default();
                let config = match client_auth::server_config(
                    &[&tls.ca_pem],
                    &tls.cert_pem,
                    &tls.key_pem,
                    seen.clone(),
                ) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!("TLS configuration: {e}");
                        return;
                    }
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = connections.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => match client_auth::presented(&seen) {
                        Some(presented) => on_refused(Refused {
                            presented,
                            address,
                            reason: e.to_string(),
                        }),
                        // No certificate at all, or the client gave up on
                        // ours: nothing to name.
                        None => tracing::info!(%address, "TLS handshake failed: {e}"),
                    },
                    Err(_) => tracing::info!(%address, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(incoming)
}
