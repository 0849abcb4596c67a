//! Admission and the mempool.
//!
//! Admission runs the cheap checks first (size and static rules, chain id, expiry, nonce window,
//! a balance that covers the fee, duplicates), then verifies the signatures of everything that passed in one ed25519 batch,
//! falling back to one-by-one checks only to find the bad ones, so one forged transaction costs
//! only itself. Admitted transactions wait in a bounded pool (in total and per sender) in arrival
//! order until a batch takes them; a full pool answers [`Rejection::Overloaded`] and recovers as
//! batches drain it.

use crate::{config::MempoolConfig, error::Rejection};
use keel_types::{
    Account, Address, ChainId, Digest, FeeSchedule, MAX_TRANSACTION_BYTES, Nonce,
    SignedTransaction, TimestampMs,
    crypto::{SignedMessage, verify_batch},
    transaction::Identified,
};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Reads accounts from committed state.
pub trait AccountReader {
    /// The account (a default one when absent): its balance pays fees, its nonce is the one
    /// the next transaction must carry.
    fn account(&self, address: &Address) -> Account;
}

/// The checks of admission that need no pool state: everything but duplicates and room. Cheap
/// to clone, so the signature checks run outside the pool's lock ([`Admission::check`], then
/// [`Mempool::insert_checked`]).
#[derive(Debug, Clone)]
pub struct Admission {
    config: MempoolConfig,
    chain_id: ChainId,
    fees: FeeSchedule,
}

/// Transactions through [`Admission::check`]: each with its digest, or why it was refused,
/// and for those that passed, their fee and the sender's committed balance.
#[derive(Debug)]
pub struct Checked {
    txs: Vec<SignedTransaction>,
    results: Vec<Result<Digest, Rejection>>,
    payment: Vec<Payment>,
}

/// A transaction's fee and its sender's committed balance at admission.
#[derive(Debug, Clone, Copy, Default)]
struct Payment {
    fee: u64,
    balance: u64,
}

impl Admission {
    /// Checks that need no signature and no pool state.
    fn precheck(
        &self,
        tx: &SignedTransaction,
        id: &Identified,
        now: TimestampMs,
        accounts: &dyn AccountReader,
    ) -> Result<Payment, Rejection> {
        let t = &tx.transaction;
        if t.chain_id != self.chain_id {
            return Err(Rejection::WrongChain {
                expected: self.chain_id,
                found: t.chain_id,
            });
        }
        // The signature is a fixed 64-byte tuple in the signed encoding.
        let size = id.encoded_len + 64;
        if size > MAX_TRANSACTION_BYTES {
            return Err(Rejection::Invalid(format!(
                "signed transaction is {size} bytes, over the limit of {MAX_TRANSACTION_BYTES}"
            )));
        }
        t.validate()
            .map_err(|e| Rejection::Invalid(e.to_string()))?;
        if t.expiry < now {
            return Err(Rejection::Expired {
                expiry: t.expiry,
                now,
            });
        }
        if t.expiry.0.saturating_sub(now.0) > self.config.max_lifetime_ms {
            return Err(Rejection::ExpiryTooFar {
                expiry: t.expiry,
                now,
                max_ms: self.config.max_lifetime_ms,
            });
        }
        let account = accounts.account(&t.sender_address());
        let next = account.nonce;
        if t.nonce < next {
            return Err(Rejection::StaleNonce {
                nonce: t.nonce,
                next,
            });
        }
        if t.nonce.0 - next.0 >= self.config.nonce_window {
            return Err(Rejection::NonceTooFarAhead {
                nonce: t.nonce,
                next,
                window: self.config.nonce_window,
            });
        }
        let fee = self.fees.fee(t);
        if account.balance < fee {
            return Err(Rejection::CannotPayFee {
                fee,
                balance: account.balance,
            });
        }
        Ok(Payment {
            fee,
            balance: account.balance,
        })
    }

    /// Runs every check but duplicates and room: the cheap ones, then one batch verification
    /// of the signatures of everything that passed them (no lock needed).
    pub fn check(
        &self,
        txs: Vec<SignedTransaction>,
        now: TimestampMs,
        accounts: &dyn AccountReader,
    ) -> Checked {
        self.check_with(txs, now, accounts, true)
    }

    /// [`Admission::check`] without the signatures: for transactions this node verified at
    /// their first admission (their batch expired unordered and they come back).
    pub fn check_verified(
        &self,
        txs: Vec<SignedTransaction>,
        now: TimestampMs,
        accounts: &dyn AccountReader,
    ) -> Checked {
        self.check_with(txs, now, accounts, false)
    }

    fn check_with(
        &self,
        txs: Vec<SignedTransaction>,
        now: TimestampMs,
        accounts: &dyn AccountReader,
        verify: bool,
    ) -> Checked {
        let ids: Vec<Identified> = txs.iter().map(|t| t.transaction.identify()).collect();
        let mut results: Vec<Result<Digest, Rejection>> = Vec::with_capacity(txs.len());
        let mut payment = vec![Payment::default(); txs.len()];
        let mut candidates = Vec::new();
        for (i, (tx, id)) in txs.iter().zip(&ids).enumerate() {
            match self.precheck(tx, id, now, accounts) {
                Ok(paid) => {
                    candidates.push(i);
                    payment[i] = paid;
                    results.push(Ok(id.digest));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if verify {
            // One batch verification for everything that passed the cheap checks.
            let items: Vec<SignedMessage<'_>> = candidates
                .iter()
                .map(|i| SignedMessage {
                    message: &ids[*i].signing_message,
                    key: &txs[*i].transaction.sender,
                    signature: &txs[*i].signature,
                })
                .collect();
            if let Err(bad) = verify_batch(&items) {
                for b in bad {
                    if let Some(i) = candidates.get(b) {
                        results[*i] = Err(Rejection::BadSignature);
                    }
                }
            }
        }
        Checked {
            txs,
            results,
            payment,
        }
    }
}

/// Pending transactions.
#[derive(Debug)]
pub struct Mempool {
    admission: Admission,
    config: MempoolConfig,
    /// The fees of each sender's pending transactions.
    pending_fees: HashMap<Address, u64>,
    by_digest: HashMap<Digest, SignedTransaction>,
    by_sender: HashMap<Address, BTreeMap<Nonce, Digest>>,
    order: VecDeque<Digest>,
}

impl Mempool {
    /// An empty pool admitting transactions for `chain_id` that can pay `fees`.
    pub fn new(config: MempoolConfig, chain_id: ChainId, fees: FeeSchedule) -> Self {
        Mempool {
            admission: Admission {
                config: config.clone(),
                chain_id,
                fees,
            },
            config,
            pending_fees: HashMap::new(),
            by_digest: HashMap::new(),
            by_sender: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Pending transactions.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The pool's admission checks, to run outside its lock.
    pub fn admission(&self) -> Admission {
        self.admission.clone()
    }

    /// Admits transactions that arrived together (checks, then inserts); one result per
    /// input, in order. Callers that share the pool behind a lock run
    /// [`Admission::check`] outside it and [`Mempool::insert_checked`] inside instead.
    pub fn admit(
        &mut self,
        txs: Vec<SignedTransaction>,
        now: TimestampMs,
        accounts: &dyn AccountReader,
    ) -> Vec<Result<Digest, Rejection>> {
        let checked = self.admission.check(txs, now, accounts);
        self.insert_checked(checked)
    }

    /// Inserts what passed [`Admission::check`] (refusing duplicates and what does not fit);
    /// one result per checked input, in order.
    pub fn insert_checked(&mut self, checked: Checked) -> Vec<Result<Digest, Rejection>> {
        let Checked {
            txs,
            mut results,
            payment,
        } = checked;
        for (i, tx) in txs.into_iter().enumerate() {
            if let Ok(digest) = results[i] {
                results[i] = self.insert(tx, digest, payment[i]);
            }
        }
        results
    }

    fn insert(
        &mut self,
        tx: SignedTransaction,
        digest: Digest,
        payment: Payment,
    ) -> Result<Digest, Rejection> {
        if self.by_digest.contains_key(&digest) {
            return Err(Rejection::Duplicate(digest));
        }
        let sender = tx.transaction.sender_address();
        let nonce = tx.transaction.nonce;
        let per_sender = self.by_sender.get(&sender).map_or(0, BTreeMap::len);
        if let Some(existing) = self.by_sender.get(&sender).and_then(|m| m.get(&nonce)) {
            return Err(Rejection::Duplicate(*existing));
        }
        if self.by_digest.len() >= self.config.max_pending {
            return Err(Rejection::Overloaded(format!(
                "{} transactions pending, the limit",
                self.by_digest.len()
            )));
        }
        if per_sender >= self.config.max_pending_per_sender {
            return Err(Rejection::Overloaded(format!(
                "{per_sender} transactions pending from this sender, the limit"
            )));
        }
        // A sender's pending transactions together must be payable from its balance: one that
        // could pay for a single fee cannot fill blocks with discarded transactions.
        let pending_fees = self.pending_fees.get(&sender).copied().unwrap_or(0);
        let owed = pending_fees.saturating_add(payment.fee);
        if owed > payment.balance {
            return Err(Rejection::CannotPayFee {
                fee: owed,
                balance: payment.balance,
            });
        }
        self.pending_fees.insert(sender, owed);
        self.by_sender
            .entry(sender)
            .or_default()
            .insert(nonce, digest);
        self.by_digest.insert(digest, tx);
        self.order.push_back(digest);
        Ok(digest)
    }

    /// Takes up to `max` transactions in arrival order (for a batch).
    pub fn take(&mut self, max: usize) -> Vec<SignedTransaction> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(digest) = self.order.pop_front() else {
                break;
            };
            if let Some(tx) = self.remove(&digest) {
                out.push(tx);
            }
        }
        out
    }

    /// Removes a pending transaction (taken, executed elsewhere or expired).
    pub fn remove(&mut self, digest: &Digest) -> Option<SignedTransaction> {
        let tx = self.by_digest.remove(digest)?;
        let sender = tx.transaction.sender_address();
        let fee = self.admission.fees.fee(&tx.transaction);
        if let Some(owed) = self.pending_fees.get_mut(&sender) {
            *owed = owed.saturating_sub(fee);
            if *owed == 0 {
                self.pending_fees.remove(&sender);
            }
        }
        if let Some(m) = self.by_sender.get_mut(&sender) {
            m.remove(&tx.transaction.nonce);
            if m.is_empty() {
                self.by_sender.remove(&sender);
            }
        }
        Some(tx)
    }
}
