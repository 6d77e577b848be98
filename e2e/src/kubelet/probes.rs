//! Readiness and liveness probes against a pod's loopback address:
//! `httpGet` (a 2xx or 3xx answer) and `tcpSocket` (a connection). `exec`
//! probes would run a command inside the container, which a process has no
//! image for: they always fail, saying why (a container with an exec
//! readiness probe never becomes ready; with an exec liveness probe it is
//! restarted), so nothing passes unchecked.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The port number of `port` (a number or a container port name).
pub fn port_number(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// One probe attempt: `Ok(())` when it passes, the reason otherwise.
pub async fn check(probe: &Probe, container: &Container, ip: Ipv4Addr) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(http) = &probe.http_get {
        let port = port_number(&http.port, container)
            .ok_or_else(|| format!("httpGet port {:?} is not a container port", http.port))?;
        let path = http.path.as_deref().unwrap_or("/");
        return tokio::time::timeout(timeout, http_get(ip, port, path))
            .await
            .map_err(|_| format!("GET {path} on {ip}:{port} timed out"))?;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = port_number(&tcp.port, container)
            .ok_or_else(|| format!("tcpSocket port {:?} is not a container port", tcp.port))?;
        return tokio::time::timeout(timeout, TcpStream::connect((ip, port)))
            .await
            .map_err(|_| format!("connect to {ip}:{port} timed out"))?
            .map(drop)
            .map_err(|e| format!("connect to {ip}:{port}: {e}"));
    }
    Err("only httpGet and tcpSocket probes run on the process kubelet".into())
}

async fn http_get(ip: Ipv4Addr, port: u16, path: &str) -> Result<(), String> {
    let mut s = TcpStream::connect((ip, port))
        .await
        .map_err(|e| format!("connect to {ip}:{port}: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("GET {path}: not an HTTP answer"))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("GET {path}: HTTP {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn server(answer: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        port
    }

    fn probe(json: serde_json::Value) -> Probe {
        serde_json::from_value(json).unwrap()
    }

    #[tokio::test]
    async fn http_and_tcp_probes_pass_and_fail() {
        let ok = server("HTTP/1.1 200 OK\r\n\r\n").await;
        let bad = server("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "metrics", "containerPort": ok}]
        }))
        .unwrap();
        let ip = Ipv4Addr::LOCALHOST;
        let named = probe(serde_json::json!({"httpGet": {"path": "/readyz", "port": "metrics"}}));
        assert_eq!(check(&named, &container, ip).await, Ok(()));
        let failing = probe(serde_json::json!({"httpGet": {"path": "/readyz", "port": bad}}));
        let e = check(&failing, &container, ip).await.unwrap_err();
        assert!(e.contains("HTTP 503"), "{e}");
        let tcp = probe(serde_json::json!({"tcpSocket": {"port": ok}}));
        assert_eq!(check(&tcp, &container, ip).await, Ok(()));
        let unknown = probe(serde_json::json!({"tcpSocket": {"port": "nope"}}));
        assert!(check(&unknown, &container, ip).await.is_err());
        let exec = probe(serde_json::json!({"exec": {"command": ["true"]}}));
        let e = check(&exec, &container, ip).await.unwrap_err();
        assert!(e.contains("only httpGet and tcpSocket"), "{e}");
    }
}
