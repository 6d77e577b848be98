//! Who is still connected. A participant whose process or pod ends loses
//! its TCP connection (the kernel closes it, or HTTP/2 keepalive notices a
//! silent peer), and every stage of the round it is in stops waiting for
//! it at once instead of running to the stage timeout (issue 13).
//!
//! Connections are counted per certificate common name, which the
//! federation CA sets to the party's name. Only a party whose count falls
//! to zero is gone, so a second connection presenting the same name can
//! delay that (back to the stage timeout) but never cause it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Shared;

/// Open connections per party name.
#[derive(Default)]
pub struct Presence {
    connections: BTreeMap<String, usize>,
}

impl Presence {
    /// True once every connection of a party that had one has closed. A
    /// party never seen connected is not gone: it may still be on its way.
    pub fn gone(&self, party: &str) -> bool {
        self.connections.get(party) == Some(&0)
    }

    fn arrive(&mut self, party: &str) {
        *self.connections.entry(party.to_owned()).or_default() += 1;
    }

    fn leave(&mut self, party: &str) -> bool {
        match self.connections.get_mut(party) {
            Some(n) if *n > 0 => {
                *n -= 1;
                *n == 0
            }
            _ => false,
        }
    }
}

/// One open connection of `party`; dropping it (hyper does when the
/// connection ends, however it ends) counts the connection closed and
/// wakes the stages waiting on the state.
pub struct Present {
    shared: Arc<Shared>,
    party: String,
}

impl Present {
    pub fn arrive(shared: Arc<Shared>, party: String) -> Self {
        if let Ok(mut state) = shared.state.lock() {
            state.presence.arrive(&party);
        }
        Self { shared, party }
    }
}

impl Drop for Present {
    fn drop(&mut self) {
        let gone = match self.shared.state.lock() {
            Ok(mut state) => state.presence.leave(&self.party),
            Err(_) => return,
        };
        if gone {
            tracing::info!(participant = %self.party, "connection closed: no longer waited for");
            self.shared.bump();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_party_is_gone_only_when_its_last_connection_closes() {
        let mut p = Presence::default();
        assert!(!p.gone("a"), "never seen: not gone");
        p.arrive("a");
        p.arrive("a");
        assert!(!p.leave("a"));
        assert!(!p.gone("a"), "one connection left");
        assert!(p.leave("a"));
        assert!(p.gone("a"));
        p.arrive("a");
        assert!(!p.gone("a"), "reconnected");
        assert!(!p.leave("b"), "an unknown party's close changes nothing");
        assert!(!p.gone("b"));
    }
}
