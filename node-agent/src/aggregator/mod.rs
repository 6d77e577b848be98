//! The aggregator role: plans rounds, collects updates as they stream in,
//! applies the strategy and publishes each new global model.

pub mod accumulator;
pub mod checkpoint;
mod driver;
mod evaluator;
mod listener;
mod presence;
mod round;
mod server_step;
mod service;
pub mod state;
pub mod strategy;

use std::sync::{Mutex, MutexGuard};

use modelpub_protocol::audit::AuditLog;
use modelpub_protocol::envelope::Signer;
use modelpub_protocol::identity::Roster;
use modelpub_protocol::pb;
use modelpub_protocol::replay::ReplayGuard;
use tokio::sync::watch;
use tonic::Status;

use crate::config::AggregatorConfig;
use crate::telemetry::AggregatorTelemetry;
use state::State;

pub use driver::run;
pub use round::secagg_params;
pub use service::STAGING_SLOTS;

/// What the service handlers and the round driver share.
pub struct Shared {
    pub config: AggregatorConfig,
    pub signer: Signer,
    pub roster: Roster,
    pub replay: ReplayGuard,
    pub audit: AuditLog,
    pub state: Mutex<State>,
    /// Bumped on every state change; long-polling handlers wait on it.
    pub changes: watch::Sender<u64>,
    /// Metrics and the /status board, fed at the events they count.
    pub telemetry: AggregatorTelemetry,
}

impl Shared {
    pub fn lock(&self) -> Result<MutexGuard<'_, State>, Status> {
        self.state
            .lock()
            .map_err(|_| Status::internal("aggregator state lock poisoned"))
    }

    pub fn bump(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    pub fn model_spec(&self) -> pb::ModelSpec {
        pb::ModelSpec {
            family: self.config.model.family().to_string(),
            config_json: self.config.model.to_json(),
        }
    }
}
