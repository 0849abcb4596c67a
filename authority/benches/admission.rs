//! Admission throughput on one core: signed transfers admitted one at a time (single signature
//! verification) versus in groups of 64 (one batch verification). `cargo bench -p keel-authority`.

use keel_authority::{AccountReader, Mempool, MempoolConfig};
use keel_types::{
    Account, Address, ChainId, FeeSchedule, KeyPair, Nonce, Op, SignedTransaction, TimestampMs,
    Transaction,
};
use std::time::Instant;

const CHAIN: ChainId = ChainId(9);
const NOW: TimestampMs = TimestampMs(1_000_000);

struct Zero;
impl AccountReader for Zero {
    fn account(&self, _address: &Address) -> Account {
        Account {
            balance: u64::MAX,
            nonce: Nonce(0),
        }
    }
}

fn transactions(n: u64) -> Vec<SignedTransaction> {
    let to = Address([7; 32]);
    (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&i.to_le_bytes());
            let key = KeyPair::from_seed(&seed);
            Transaction {
                chain_id: CHAIN,
                sender: key.public(),
                nonce: Nonce(0),
                expiry: TimestampMs(NOW.0 + 60_000),
                ops: vec![Op::Transfer { to, amount: 1 }],
            }
            .sign(&key)
        })
        .collect()
}

fn main() {
    let n = 20_000u64;
    let txs = transactions(n);
    for group in [1usize, 64] {
        let config = MempoolConfig {
            max_pending: n as usize,
            ..MempoolConfig::default()
        };
        let mut pool = Mempool::new(
            config,
            CHAIN,
            FeeSchedule {
                per_op: 100,
                per_byte: 1,
            },
        );
        let start = Instant::now();
        let mut admitted = 0;
        for chunk in txs.chunks(group) {
            admitted += pool
                .admit(chunk.to_vec(), NOW, &Zero)
                .iter()
                .filter(|r| r.is_ok())
                .count();
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(admitted, n as usize);
        println!(
            "admission, groups of {group:>2}: {:.0} transactions/s on one core ({n} signed transfers)",
            n as f64 / secs
        );
    }
}
