//! Seeded workloads for execution tests and benchmarks: signed transactions over a fixed set of
//! funded accounts, with knobs for conflicts and for transactions meant to fail or be discarded.

use crate::genesis::GenesisState;
use keel_types::{
    Address, ChainId, Committee, CommitteeChange, Digest, Epoch, EpochParams, EpochState,
    FeeSchedule, KeyPair, Nonce, Op, PossessionProof, SignedTransaction, Stake, TimestampMs,
    Transaction, ValidatorInfo, test_utils::seeded_key,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The chain id of generated transactions.
pub const CHAIN: ChainId = ChainId(7);
/// The timestamp of generated blocks; transactions expire after it unless made to expire.
pub const BLOCK_TIME: TimestampMs = TimestampMs(1_000_000);

/// What a workload generates. Probabilities are per transaction (or per op).
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Funded accounts.
    pub accounts: usize,
    /// Transfers go to one of this many "hot" accounts with probability `hot_probability`.
    pub hot_accounts: usize,
    /// Probability that a transfer targets a hot account.
    pub hot_probability: f64,
    /// Objects keys are drawn from `0..object_keys` (few keys: many conflicts).
    pub object_keys: usize,
    /// Probability that an op is a put, delete or compare-and-swap rather than a transfer.
    pub object_op_probability: f64,
    /// Most ops per transaction.
    pub max_ops: usize,
    /// Probability of a nonce off by one either way.
    pub bad_nonce_probability: f64,
    /// Probability of a transfer larger than any balance.
    pub overdraw_probability: f64,
    /// Probability of a transaction already expired at [`BLOCK_TIME`].
    pub expired_probability: f64,
    /// Probability of re-including an earlier transaction.
    pub duplicate_probability: f64,
    /// Senders are drawn at random (true) or in rotation, so a block of at most `accounts`
    /// transactions has distinct senders (false).
    pub random_senders: bool,
    /// Probability that a transaction is a governance vote (the first [`COMMITTEE`] accounts
    /// form the genesis committee; votes name a random epoch of the first few).
    pub governance_probability: f64,
    /// The genesis fees (with the poor accounts' 300, fees soon make some transactions
    /// unpayable, discarded).
    pub fees: FeeSchedule,
}

/// Accounts whose keys form the workload's genesis committee.
pub const COMMITTEE: usize = 4;

/// The workload's epoch parameters: short epochs, so blocks cross epoch ends.
pub const EPOCH_PARAMS: EpochParams = EpochParams {
    change_delay_blocks: 1,
    max_length_blocks: 3,
};

impl WorkloadConfig {
    /// Single-op transfers between `accounts` accounts in rotation, no hot spot, nothing bad.
    pub fn transfers(accounts: usize) -> Self {
        WorkloadConfig {
            accounts,
            hot_accounts: 1,
            hot_probability: 0.0,
            object_keys: 1,
            object_op_probability: 0.0,
            max_ops: 1,
            bad_nonce_probability: 0.0,
            overdraw_probability: 0.0,
            expired_probability: 0.0,
            duplicate_probability: 0.0,
            random_senders: false,
            governance_probability: 0.0,
            fees: FeeSchedule::default(),
        }
    }

    /// Everything at once: few accounts and keys, every kind of op and of bad transaction.
    pub fn adversarial() -> Self {
        WorkloadConfig {
            accounts: 12,
            hot_accounts: 2,
            hot_probability: 0.5,
            object_keys: 3,
            object_op_probability: 0.4,
            max_ops: 4,
            bad_nonce_probability: 0.1,
            overdraw_probability: 0.1,
            expired_probability: 0.05,
            duplicate_probability: 0.08,
            random_senders: true,
            governance_probability: 0.05,
            fees: FeeSchedule {
                per_op: 5,
                per_byte: 1,
            },
        }
    }
}

/// A seeded generator of signed transactions.
#[derive(Debug)]
pub struct Workload {
    config: WorkloadConfig,
    keys: Vec<KeyPair>,
    addresses: Vec<Address>,
    nonces: Vec<u64>,
    rng: ChaCha8Rng,
    cursor: usize,
    history: Vec<SignedTransaction>,
}

impl Workload {
    /// A workload over `config.accounts` seeded accounts.
    pub fn new(seed: u64, config: WorkloadConfig) -> Self {
        let keys: Vec<KeyPair> = (0..config.accounts as u64)
            .map(|i| seeded_key("account", i))
            .collect();
        let addresses = keys
            .iter()
            .map(|k| Address::from_public_key(&k.public()))
            .collect();
        Workload {
            nonces: vec![0; config.accounts],
            config,
            keys,
            addresses,
            rng: ChaCha8Rng::seed_from_u64(seed),
            cursor: 0,
            history: Vec::new(),
        }
    }

    /// The accounts' addresses.
    pub fn addresses(&self) -> &[Address] {
        &self.addresses
    }

    /// The genesis committee: the first [`COMMITTEE`] accounts' keys (fewer if there are
    /// fewer accounts), stake 1 each, in epoch 0.
    pub fn committee(&self) -> Committee {
        let validators = self
            .keys
            .iter()
            .take(COMMITTEE)
            .enumerate()
            .map(|(i, k)| ValidatorInfo {
                protocol_key: k.public(),
                network_key: seeded_key("workload network", i as u64).public(),
                stake: Stake(1),
                address: format!("10.0.0.{i}:1"),
            })
            .collect();
        // INVARIANT: distinct seeded keys and positive stakes make a valid committee.
        Committee::new(Epoch(0), validators).expect("INVARIANT: a valid committee")
    }

    /// Genesis: every account funded with 1,000,000, except every fifth with 300 (so
    /// transfers from it soon fail); the committee of [`Workload::committee`].
    pub fn genesis(&self) -> GenesisState {
        GenesisState {
            epoch: (!self.keys.is_empty())
                .then(|| EpochState::genesis(self.committee(), EPOCH_PARAMS)),
            digest: Digest::of_tagged("keel/test-genesis", &self.config.accounts),
            accounts: self
                .addresses
                .iter()
                .enumerate()
                .map(|(i, a)| (*a, if i % 5 == 4 { 300 } else { 1_000_000 }))
                .collect(),
            fees: self.config.fees,
        }
    }

    /// `n` transactions.
    pub fn block(&mut self, n: usize) -> Vec<SignedTransaction> {
        (0..n).map(|_| self.transaction()).collect()
    }

    fn transaction(&mut self) -> SignedTransaction {
        let c = self.config.clone();
        if !self.history.is_empty() && self.rng.gen_bool(c.duplicate_probability) {
            let i = self.rng.gen_range(0..self.history.len());
            return self.history[i].clone();
        }
        let sender = if c.random_senders {
            self.rng.gen_range(0..c.accounts)
        } else {
            self.cursor = (self.cursor + 1) % c.accounts;
            self.cursor
        };
        let mut nonce = self.nonces[sender];
        let bad_nonce = self.rng.gen_bool(c.bad_nonce_probability);
        if bad_nonce {
            nonce = if nonce > 0 && self.rng.gen_bool(0.5) {
                nonce - 1
            } else {
                nonce + 1
            };
        }
        let expired = self.rng.gen_bool(c.expired_probability);
        let ops = if self.rng.gen_bool(c.governance_probability) {
            vec![self.vote()]
        } else {
            (0..self.rng.gen_range(1..=c.max_ops))
                .map(|_| self.op(sender))
                .collect()
        };
        let tx = Transaction {
            chain_id: CHAIN,
            sender: self.keys[sender].public(),
            nonce: Nonce(nonce),
            expiry: TimestampMs(if expired {
                BLOCK_TIME.0 - 1
            } else {
                BLOCK_TIME.0 + 60_000
            }),
            ops,
        }
        .sign(&self.keys[sender]);
        // A transaction generated to run consumes its nonce (even if it then fails); one with
        // a bad nonce or already expired does not.
        if !bad_nonce && !expired {
            self.nonces[sender] += 1;
        }
        if self.history.len() < 4096 {
            self.history.push(tx.clone());
        }
        tx
    }

    /// A vote for one of a few changes (stake changes, removals and additions of two fixed
    /// newcomers) in one of the first epochs; many fail (wrong epoch, not a validator, a
    /// conflict), some schedule changes.
    fn vote(&mut self) -> Op {
        let members = self.keys.len().min(COMMITTEE);
        let member = self.keys[self.rng.gen_range(0..members)].public();
        let change = match self.rng.gen_range(0..3) {
            0 => CommitteeChange::SetStake {
                protocol_key: member,
                stake: Stake(self.rng.gen_range(1..4)),
            },
            1 => CommitteeChange::Remove {
                protocol_key: member,
            },
            _ => {
                let i = self.rng.gen_range(0..2u64);
                let protocol = seeded_key("workload newcomer", i);
                let network = seeded_key("workload newcomer network", i);
                CommitteeChange::Add {
                    validator: ValidatorInfo {
                        protocol_key: protocol.public(),
                        network_key: network.public(),
                        stake: Stake(1),
                        address: format!("10.0.1.{i}:1"),
                    },
                    proof: PossessionProof::create(&protocol, &network, CHAIN),
                }
            }
        };
        Op::Governance {
            epoch: Epoch(self.rng.gen_range(0..3)),
            change,
        }
    }

    fn op(&mut self, sender: usize) -> Op {
        let c = &self.config;
        if self.rng.gen_bool(c.object_op_probability) {
            let key = format!("k{}", self.rng.gen_range(0..c.object_keys)).into_bytes();
            let value = vec![self.rng.r#gen::<u8>(); self.rng.gen_range(0..16)];
            return match self.rng.gen_range(0..3) {
                0 => Op::Put { key, value },
                1 => Op::Delete { key },
                _ => Op::CompareAndSwap {
                    key,
                    expected_version: self.rng.gen_range(0..3),
                    value,
                },
            };
        }
        let to = loop {
            let i = if self.rng.gen_bool(c.hot_probability) {
                self.rng.gen_range(0..c.hot_accounts)
            } else {
                self.rng.gen_range(0..c.accounts)
            };
            if i != sender {
                break i;
            }
        };
        let amount = if self.rng.gen_bool(c.overdraw_probability) {
            10_000_000
        } else {
            self.rng.gen_range(1..100)
        };
        Op::Transfer {
            to: self.addresses[to],
            amount,
        }
    }
}
