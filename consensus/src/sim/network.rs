//! The network model: a queue of events ordered by (virtual time, sequence number) and the
//! links between replicas. Before the stabilisation time a link loses each message with the
//! scenario's probability and drops everything that crosses an active partition; after it,
//! nothing is lost. Latency is drawn per message from the scenario's range (a replica's
//! messages to itself arrive at once). All draws come from the run's one seeded RNG, in the
//! order the simulation asks for them, so a seed replays exactly.

use super::scenario::{Partition, SimConfig};
use crate::message::{CertificateAnswer, ConsensusMessage};
use keel_types::{Digest, Round, SignedBlock, ValidatorIndex};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BinaryHeap;

/// Something that happens at a virtual time.
pub(super) enum Event {
    /// A leader's proposal delay ([`crate::Action::ProposeAfter`]) passed.
    ProposeTimer {
        replica: usize,
        epoch: keel_types::Epoch,
        round: Round,
    },
    /// A message arrives.
    Deliver {
        from: usize,
        to: usize,
        message: Box<ConsensusMessage>,
    },
    /// A round timer fires; only the latest generation set by the replica counts.
    Timer {
        replica: usize,
        round: Round,
        generation: u64,
    },
    /// A block request arrives at `server`.
    Fetch {
        requester: usize,
        server: usize,
        digest: Digest,
    },
    /// A block reply arrives.
    FetchReply { to: usize, blocks: Vec<SignedBlock> },
    /// An amnesiac replica's certificate request arrives at `server`.
    CertificateRequest { requester: usize, server: usize },
    /// A certificate answer arrives.
    CertificateAnswer {
        to: usize,
        from: usize,
        answer: Box<CertificateAnswer>,
    },
    /// A replica crashes (losing its safety data if `wipe_safety`).
    Crash { replica: usize, wipe_safety: bool },
    /// A replica restarts from its persisted state.
    Restart(usize),
    /// A late replica asks for the committed blocks of `epoch` above `after`.
    EpochSync {
        requester: usize,
        server: usize,
        epoch: keel_types::Epoch,
        after: keel_types::Height,
    },
    /// The committed blocks from height `first` on.
    EpochSyncReply {
        to: usize,
        first: keel_types::Height,
        blocks: Vec<SignedBlock>,
    },
}

struct Queued {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: reverse for earliest first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The event queue, the clock, the links and the run's RNG.
pub(super) struct Network {
    queue: BinaryHeap<Queued>,
    seq: u64,
    /// Virtual time (ms).
    pub(super) now: u64,
    /// The run's one RNG (the adversary draws from it too).
    pub(super) rng: ChaCha8Rng,
    latency_ms: (u64, u64),
    loss: f64,
    partitions: Vec<Partition>,
    stable_ms: u64,
}

impl Network {
    /// The network of `config`, at time 0, with nothing queued.
    pub(super) fn new(config: &SimConfig) -> Self {
        Network {
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            latency_ms: config.latency_ms,
            loss: config.loss,
            partitions: config.partitions.clone(),
            stable_ms: config.stable_ms,
        }
    }

    /// Queues `event` at virtual time `at`.
    pub(super) fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            event,
        });
    }

    /// The time of the next event, if any.
    pub(super) fn next_at(&self) -> Option<u64> {
        self.queue.peek().map(|q| q.at)
    }

    /// Takes the next event and moves the clock to its time.
    pub(super) fn pop(&mut self) -> Option<Event> {
        let q = self.queue.pop()?;
        self.now = q.at;
        Some(q.event)
    }

    /// Whether a message from `from` to `to` sent now is lost.
    pub(super) fn drops(&mut self, from: usize, to: usize) -> bool {
        if from == to {
            return false;
        }
        if self.now >= self.stable_ms {
            return false;
        }
        let (a, b) = (ValidatorIndex(from as u32), ValidatorIndex(to as u32));
        let cut = self.partitions.iter().any(|p| {
            self.now >= p.from_ms
                && self.now < p.heal_ms
                && (p.side.contains(&a) != p.side.contains(&b))
        });
        cut || self.rng.gen_bool(self.loss)
    }

    /// The delay of a message from `from` to `to` sent now.
    pub(super) fn latency(&mut self, from: usize, to: usize) -> u64 {
        if from == to {
            0
        } else {
            self.rng.gen_range(self.latency_ms.0..=self.latency_ms.1)
        }
    }

    /// Schedules `event` after the link's delay from `from` to `to`, unless the link loses
    /// it.
    pub(super) fn over_link(&mut self, from: usize, to: usize, event: Event) {
        if self.drops(from, to) {
            return;
        }
        let at = self.now + self.latency(from, to);
        self.schedule(at, event);
    }

    /// Sends `message` over the link, unless the link loses it.
    pub(super) fn transmit(&mut self, from: usize, to: usize, message: ConsensusMessage) {
        if self.drops(from, to) {
            return;
        }
        let at = self.now + self.latency(from, to);
        self.schedule(
            at,
            Event::Deliver {
                from,
                to,
                message: Box::new(message),
            },
        );
    }

    /// Sends a block request from `requester` to `server`, unless the link loses it.
    pub(super) fn request(&mut self, requester: usize, server: usize, digest: Digest) {
        if self.drops(requester, server) {
            return;
        }
        let at = self.now + self.latency(requester, server);
        self.schedule(
            at,
            Event::Fetch {
                requester,
                server,
                digest,
            },
        );
    }

    /// Sends a certificate request from `requester` to `server`, unless the link loses it.
    pub(super) fn request_certificates(&mut self, requester: usize, server: usize) {
        if self.drops(requester, server) {
            return;
        }
        let at = self.now + self.latency(requester, server);
        self.schedule(at, Event::CertificateRequest { requester, server });
    }

    /// Sends a certificate answer from `server` to `to`, unless the link loses it.
    pub(super) fn answer(&mut self, server: usize, to: usize, answer: CertificateAnswer) {
        if self.drops(server, to) {
            return;
        }
        let at = self.now + self.latency(server, to);
        self.schedule(
            at,
            Event::CertificateAnswer {
                to,
                from: server,
                answer: Box::new(answer),
            },
        );
    }

    /// Sends a block reply from `server` to `to`, unless the link loses it.
    pub(super) fn reply(&mut self, server: usize, to: usize, blocks: Vec<SignedBlock>) {
        if self.drops(server, to) {
            return;
        }
        let at = self.now + self.latency(server, to);
        self.schedule(at, Event::FetchReply { to, blocks });
    }
}
