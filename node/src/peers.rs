//! Who is who on the network (validator index ↔ network key) and [`Outbound`], the handle the
//! tasks send through. It is built after the endpoint has started, from the endpoint itself.
//! The map is shared: at an epoch change the epoch task replaces it with the new committee's
//! (`crate::epoch`), and every holder sees the new map at once. While a member's key rotation
//! is pending or scheduled, its next network key is an alias of it for incoming messages.

use keel_authority::BatchFetcher;
use keel_consensus::ConsensusMessage;
use keel_p2p::{Network, Notification, Request, Response};
use keel_types::{Batch, Committee, Digest, PublicKey, ValidatorIndex};
use parking_lot::RwLock;
use std::{collections::HashMap, sync::Arc};

/// The network type the node runs.
pub type Net = Network<ConsensusMessage>;

/// Validator indexes and network keys of the current committee. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Peers {
    map: Arc<RwLock<PeerMap>>,
}

#[derive(Debug)]
struct PeerMap {
    keys: Vec<PublicKey>,
    by_key: HashMap<PublicKey, ValidatorIndex>,
    /// Further keys that stand for a member (a rotating validator's next network key, which it
    /// presents as soon as it switches, possibly before this node).
    aliases: HashMap<PublicKey, ValidatorIndex>,
}

impl PeerMap {
    fn new(committee: &Committee) -> Self {
        let keys: Vec<PublicKey> = committee
            .validators()
            .iter()
            .map(|v| v.network_key)
            .collect();
        let by_key = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, ValidatorIndex(i as u32)))
            .collect();
        PeerMap {
            keys,
            by_key,
            aliases: HashMap::new(),
        }
    }
}

impl Peers {
    /// The committee's network keys.
    pub fn new(committee: &Committee) -> Self {
        Peers {
            map: Arc::new(RwLock::new(PeerMap::new(committee))),
        }
    }

    /// Replaces the map with `committee`'s (an epoch change).
    pub fn set_committee(&self, committee: &Committee) {
        *self.map.write() = PeerMap::new(committee);
    }

    /// The network key of validator `index`.
    pub fn key(&self, index: ValidatorIndex) -> Option<PublicKey> {
        self.map.read().keys.get(index.as_usize()).copied()
    }

    /// Replaces the aliases: messages from each key count as the member's.
    pub fn set_aliases(&self, aliases: impl IntoIterator<Item = (PublicKey, ValidatorIndex)>) {
        self.map.write().aliases = aliases.into_iter().collect();
    }

    /// The validator holding network key `key` (or an alias of it).
    pub fn index(&self, key: &PublicKey) -> Option<ValidatorIndex> {
        let map = self.map.read();
        map.by_key
            .get(key)
            .or_else(|| map.aliases.get(key))
            .copied()
    }

    /// Every member's network key.
    pub fn keys(&self) -> Vec<PublicKey> {
        self.map.read().keys.clone()
    }
}

/// Sends to validators by index. Cheap to clone. Sends never block: the transport queues per
/// peer and drops the oldest frames when a peer's queue is full.
#[derive(Clone)]
pub struct Outbound {
    net: Net,
    peers: Peers,
    runtime: tokio::runtime::Handle,
}

impl Outbound {
    /// Sends through `net`; blocking fetches (from the execution thread) wait on `runtime`.
    pub fn new(net: Net, peers: Peers, runtime: tokio::runtime::Handle) -> Self {
        Outbound {
            net,
            peers,
            runtime,
        }
    }

    /// Sends to one validator.
    pub fn send(&self, to: ValidatorIndex, message: &Notification<ConsensusMessage>) {
        let Some(key) = self.peers.key(to) else {
            tracing::debug!(%to, "send to an unknown validator");
            return;
        };
        if let Err(e) = self.net.send(&key, message) {
            tracing::debug!(%to, error = %e, "send failed");
        }
    }

    /// Sends to every other validator.
    pub fn broadcast(&self, message: &Notification<ConsensusMessage>) {
        if let Err(e) = self.net.broadcast(message) {
            tracing::debug!(error = %e, "broadcast failed");
        }
    }

    /// Asks validator `from` for a request's answer (untrusted).
    pub async fn request(
        &self,
        from: ValidatorIndex,
        request: &Request,
    ) -> Result<Response, String> {
        let key = self
            .peers
            .key(from)
            .ok_or_else(|| format!("no validator {from}"))?;
        self.net
            .request(&key, request)
            .await
            .map_err(|e| e.to_string())
    }
}

impl BatchFetcher for Outbound {
    /// Blocks the calling thread (the execution thread, never an async task) on the runtime.
    fn fetch_batch(&self, digest: &Digest, holders: &[ValidatorIndex]) -> Result<Batch, String> {
        let mut last = String::from("no holder to ask");
        for holder in holders {
            let request = Request::Batches {
                digests: vec![*digest],
            };
            match self.runtime.block_on(self.request(*holder, &request)) {
                Ok(Response::Batches(batches)) => {
                    if let Some(b) = batches.into_iter().find(|b| b.digest() == *digest) {
                        return Ok(b);
                    }
                    last = format!("validator {holder} does not have it");
                }
                Ok(other) => last = format!("validator {holder} answered {other:?}"),
                Err(e) => last = format!("validator {holder}: {e}"),
            }
        }
        Err(last)
    }
}
