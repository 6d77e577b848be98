//! Telemetry both ModelPub binaries share (neither depends on the other:
//! the operator never links libtorch): OTLP trace export and the HTTP
//! server for `/metrics`, `/healthz` and `/readyz`.
#![forbid(unsafe_code)]

pub mod http;
pub mod otlp;
#[cfg(any(test, feature = "test-collector"))]
pub mod test_collector;
