//! The aggregator's mutual-TLS listener. Each connection's handshake runs
//! here rather than inside tonic, so that a client refused in it (its
//! certificate chains to no CA of the round: a cluster never peered, or
//! one whose CA changed) can be named: the certificate it presented goes
//! into the audit log and `/status`. Each accepted connection carries a
//! token from `on_accepted` for as long as it lives, which is how the
//! aggregator knows who is still connected (`presence.rs`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use modelpub_protocol::client_auth::{self, Presented, PresentedSlot};
use modelpub_protocol::tls::TlsMaterial;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

type TlsConnection = tokio_rustls::server::TlsStream<TcpStream>;

/// An accepted connection, handed to tonic, with the token `T` that lives
/// exactly as long as it does.
pub struct Connection<T> {
    stream: TlsConnection,
    _token: T,
}

impl<T: Unpin> AsyncRead for Connection<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<T: Unpin> AsyncWrite for Connection<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl<T> Connected for Connection<T> {
    type ConnectInfo = <TlsConnection as Connected>::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

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
/// cluster's CA and the members'), and yields the connections that pass,
/// each with the token `on_accepted` made from the certificate.
/// `on_refused` hears of every client whose certificate was refused.
pub fn incoming<T: Send + Unpin + 'static>(
    listener: TcpListener,
    tls: TlsMaterial,
    on_refused: impl Fn(Refused) + Send + Sync + 'static,
    on_accepted: impl Fn(Option<Presented>) -> T + Send + Sync + 'static,
) -> ReceiverStream<Result<Connection<T>, std::io::Error>> {
    let (connections, incoming) = tokio::sync::mpsc::channel(64);
    let on_refused = Arc::new(on_refused);
    let on_accepted = Arc::new(on_accepted);
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
            let on_accepted = on_accepted.clone();
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
                        let token = on_accepted(client_auth::presented(&seen));
                        let _ = connections
                            .send(Ok(Connection {
                                stream,
                                _token: token,
                            }))
                            .await;
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
