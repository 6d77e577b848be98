//! Reaching the aggregator over mutual TLS, retrying while it starts up.

use std::time::{Duration, Instant};

use anyhow::Context;
use modelpub_protocol::tls::TlsMaterial;
use tonic::transport::{Channel, Endpoint};

/// Connects, retrying with backoff until `patience` runs out; the error
/// names the address and the last cause.
pub async fn connect(
    url: &str,
    server_name: &str,
    tls: &TlsMaterial,
    patience: Duration,
) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("`{url}` is not a valid aggregator URL"))?
        .tls_config(tls.client_config(server_name))
        .context("TLS configuration")?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    let started = Instant::now();
    let mut wait = Duration::from_millis(100);
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(e) => {
                if started.elapsed() + wait > patience {
                    let cause = std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    anyhow::bail!(
                        "aggregator at {url} is not reachable after {:.0} s: {e} {cause}",
                        started.elapsed().as_secs_f64()
                    );
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}
