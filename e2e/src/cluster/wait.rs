//! Waiting for the cluster to get somewhere, with a deadline that names
//! what never happened.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 500 ms until it gives `Ok(Some(_))`; an `Err` ends
/// the wait at once. On timeout the error names `what` and the last
/// "not yet" reason `check` gave.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Result<T, String>>>,
{
    let start = Instant::now();
    loop {
        let why = match check().await? {
            Ok(done) => return Ok(done),
            Err(why) => why,
        };
        if start.elapsed() > timeout {
            anyhow::bail!("{what}: not within {timeout:?}; last seen: {why}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
