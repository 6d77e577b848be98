//! A federation link with a canned `JoinRound` answer, so FederationRound
//! scenarios need no second cluster; it remembers what was sent.

use std::sync::Mutex;

use futures::future::BoxFuture;
use modelpub_protocol::pb;

use crate::controllers::trust_domain::peers::Peer;
use crate::federation::client::PeerLink;
use crate::federation::domain::LocalDomain;

#[derive(Debug)]
pub struct FakeLink {
    pub view: Result<pb::RoundView, String>,
    /// Every join sent, with the member it went to.
    pub joins: Mutex<Vec<(String, pb::RoundJoin)>>,
}

impl FakeLink {
    pub fn answering(view: Result<pb::RoundView, String>) -> Self {
        Self {
            view,
            joins: Mutex::new(Vec::new()),
        }
    }
}

impl PeerLink for FakeLink {
    fn hello<'a>(
        &'a self,
        _domain: &'a LocalDomain,
        peer: &'a Peer,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move { Ok(format!("signed handshake with {}", peer.name)) })
    }

    fn join_round<'a>(
        &'a self,
        _domain: &'a LocalDomain,
        peer: &'a Peer,
        join: pb::RoundJoin,
    ) -> BoxFuture<'a, Result<pb::RoundView, String>> {
        if let Ok(mut joins) = self.joins.lock() {
            joins.push((peer.name.clone(), join));
        }
        let view = self.view.clone();
        Box::pin(async move { view })
    }
}
