//! The semantics of one transaction: a pure function of the state values it reads.
//!
//! [`execute_transaction`] reads through a [`StateView`] and returns the writes it would make,
//! without applying them. Because the outcome depends only on the values read, a run whose
//! reads still hold at its place in the block is exactly the run sequential execution would
//! make there; the executor relies on this to run transactions optimistically in parallel.
//!
//! Rules, in order:
//! 1. expiry before the block's timestamp: discarded (nothing read);
//! 2. nonce ahead of the account's: discarded; behind: stale (the executor tells a duplicate
//!    of an executed transaction from a late one);
//! 3. the fee ([`FeeSchedule::fee`]) comes off the sender's balance first: a balance that
//!    cannot cover it discards the transaction (nothing changes);
//! 4. ops apply in order on a scratch copy; the first op that cannot apply fails the whole
//!    transaction, which then only pays its fee and consumes the nonce;
//! 5. success writes every changed account and object, and the sender's next nonce; an
//!    object written gets the write stamp `nonce × MAX_OPS + op_index + 1` as its version, so
//!    versions never repeat, even across a delete and re-create (no compare-and-swap ABA);
//! 6. a governance vote reads and writes the epoch record ([`crate::governance`]); a refused
//!    vote fails like any op.

use crate::{
    error::Result,
    governance::{self, EPOCH_STATE_KEY, VoteOutcome},
    state::{account_key, decode, decode_account, decode_object, encode, object_key},
};
use keel_types::{
    Account, Address, DiscardReason, Effect, EpochState, ExecutionStatus, FailureReason,
    FeeSchedule, Height, Nonce, Object, Op, TimestampMs, Transaction, transaction::MAX_OPS,
};
use std::collections::BTreeMap;

/// Reads state for one transaction.
pub trait StateView {
    /// The value of `key` as this view sees it.
    fn read(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>>;
}

/// State writes in key order (`None` deletes).
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// What running a transaction would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxOutcome {
    /// It ran (succeeded or failed), paid its fee and consumed its nonce.
    Executed {
        /// Success or the failure reason.
        status: ExecutionStatus,
        /// The fee charged.
        fee: u64,
        /// The writes to apply.
        writes: Writes,
        /// The same writes as a client reads them.
        effects: Vec<Effect>,
    },
    /// It cannot run; nothing changes.
    Discarded(DiscardReason),
    /// Its nonce is below the account's.
    Stale {
        /// The account's next nonce.
        next: Nonce,
    },
}

/// The block a transaction runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockContext {
    /// Its height.
    pub height: Height,
    /// Its timestamp.
    pub timestamp: TimestampMs,
    /// The chain's fees.
    pub fees: FeeSchedule,
}

/// Runs `tx` (sent by `sender`) in `block` against `view`.
pub fn execute_transaction(
    tx: &Transaction,
    sender: Address,
    block: BlockContext,
    view: &mut impl StateView,
) -> Result<TxOutcome> {
    let block_timestamp = block.timestamp;
    if tx.expiry < block_timestamp {
        return Ok(TxOutcome::Discarded(DiscardReason::Expired {
            expiry: tx.expiry,
            block_timestamp,
        }));
    }
    let start = decode_account(view.read(&account_key(&sender))?.as_deref())?;
    if tx.nonce < start.nonce {
        return Ok(TxOutcome::Stale { next: start.nonce });
    }
    if tx.nonce > start.nonce {
        return Ok(TxOutcome::Discarded(DiscardReason::FutureNonce {
            nonce: tx.nonce,
            next: start.nonce,
        }));
    }
    // A nonce cannot advance past u64::MAX: such an account can send no more.
    let Some(next_nonce) = start.nonce.checked_next() else {
        return Ok(TxOutcome::Discarded(DiscardReason::FutureNonce {
            nonce: tx.nonce,
            next: start.nonce,
        }));
    };
    let fee = block.fees.fee(tx);
    let Some(balance) = start.balance.checked_sub(fee) else {
        return Ok(TxOutcome::Discarded(DiscardReason::CannotPayFee {
            fee,
            balance: start.balance,
        }));
    };
    // The fee is charged first and kept whatever the ops do (it is burned).
    let start = Account { balance, ..start };

    let mut scratch = Scratch {
        sender,
        tx,
        height: block.height,
        accounts: BTreeMap::from([(sender, start)]),
        objects: BTreeMap::new(),
        epoch_state: None,
        votes: Vec::new(),
    };
    let status = match scratch.apply_ops(&tx.ops, view)? {
        Ok(()) => ExecutionStatus::Success,
        Err(reason) => {
            scratch.accounts = BTreeMap::from([(sender, start)]);
            scratch.objects.clear();
            scratch.epoch_state = None;
            scratch.votes.clear();
            ExecutionStatus::Failed(reason)
        }
    };
    if let Some(account) = scratch.accounts.get_mut(&sender) {
        account.nonce = next_nonce;
    }
    let (writes, effects) = scratch.into_writes();
    Ok(TxOutcome::Executed {
        status,
        fee,
        writes,
        effects,
    })
}

/// A transaction's view of the accounts and objects it touched, changed in place.
struct Scratch<'t> {
    sender: Address,
    tx: &'t Transaction,
    height: Height,
    /// The epoch record, once a governance op read it, and whether it changed.
    epoch_state: Option<(EpochState, bool)>,
    /// Effects of counted governance votes.
    votes: Vec<Effect>,
    /// Every account read, with its current value (all are written back).
    accounts: BTreeMap<Address, Account>,
    /// Sender's objects read: the current value, and whether the transaction changed it.
    objects: BTreeMap<Vec<u8>, (Option<Object>, bool)>,
}

impl Scratch<'_> {
    fn account(&mut self, address: Address, view: &mut impl StateView) -> Result<&mut Account> {
        match self.accounts.entry(address) {
            std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(e) => {
                let found = decode_account(view.read(&account_key(&address))?.as_deref())?;
                Ok(e.insert(found))
            }
        }
    }

    fn object(
        &mut self,
        key: &[u8],
        view: &mut impl StateView,
    ) -> Result<&mut (Option<Object>, bool)> {
        if !self.objects.contains_key(key) {
            let found = decode_object(view.read(&object_key(&self.sender, key))?.as_deref())?;
            self.objects.insert(key.to_vec(), (found, false));
        }
        // INVARIANT: inserted just above if absent.
        Ok(self.objects.get_mut(key).expect("INVARIANT: object loaded"))
    }

    /// Applies the ops; the outer error is a storage failure, the inner one the op that failed.
    fn apply_ops(
        &mut self,
        ops: &[Op],
        view: &mut impl StateView,
    ) -> Result<Result<(), FailureReason>> {
        for (i, op) in ops.iter().enumerate() {
            let op_index = u32::try_from(i).unwrap_or(u32::MAX);
            if let Err(reason) = self.apply_op(op_index, op, view)? {
                return Ok(Err(reason));
            }
        }
        Ok(Ok(()))
    }

    fn apply_op(
        &mut self,
        op_index: u32,
        op: &Op,
        view: &mut impl StateView,
    ) -> Result<Result<(), FailureReason>> {
        match op {
            Op::Transfer { to, amount } => {
                let from = self.account(self.sender, view)?;
                if from.balance < *amount {
                    return Ok(Err(FailureReason::InsufficientBalance {
                        op_index,
                        needed: *amount,
                        available: from.balance,
                    }));
                }
                from.balance -= amount;
                let to = self.account(*to, view)?;
                match to.balance.checked_add(*amount) {
                    Some(b) => to.balance = b,
                    None => return Ok(Err(FailureReason::BalanceOverflow { op_index })),
                }
            }
            Op::Put { key, value } => {
                let stamp = self.write_stamp(op_index);
                let entry = self.object(key, view)?;
                return Ok(write_version(entry, value, stamp, op_index));
            }
            Op::Delete { key } => {
                let entry = self.object(key, view)?;
                if entry.0.is_some() {
                    *entry = (None, true);
                }
            }
            Op::CompareAndSwap {
                key,
                expected_version,
                value,
            } => {
                let entry = self.object(key, view)?;
                let found = entry.0.as_ref().map_or(0, |o| o.version);
                if found != *expected_version {
                    return Ok(Err(FailureReason::VersionMismatch {
                        op_index,
                        expected: *expected_version,
                        found,
                    }));
                }
                let stamp = self.write_stamp(op_index);
                let entry = self.object(key, view)?;
                return Ok(write_version(entry, value, stamp, op_index));
            }
            Op::Governance { epoch, change } => {
                let refused =
                    |reason: String| FailureReason::GovernanceRefused { op_index, reason };
                if self.epoch_state.is_none() {
                    let Some(bytes) = view.read(EPOCH_STATE_KEY)? else {
                        return Ok(Err(refused("this chain keeps no epoch record".into())));
                    };
                    self.epoch_state = Some((decode(&bytes, "epoch state")?, false));
                }
                let Some((state, changed)) = self.epoch_state.as_mut() else {
                    return Ok(Err(refused("no epoch record".into())));
                };
                let voter = self.tx.sender;
                match governance::vote(state, &voter, *epoch, change, self.height) {
                    Err(reason) => return Ok(Err(refused(reason))),
                    Ok(outcome) => {
                        *changed |= outcome != VoteOutcome::AlreadyCounted;
                        self.votes.push(Effect::GovernanceVote {
                            change: change.digest(),
                            scheduled_until: match outcome {
                                VoteOutcome::Scheduled { ends_at } => Some(ends_at),
                                _ => None,
                            },
                        });
                    }
                }
            }
        }
        Ok(Ok(()))
    }

    /// The version a write by op `op_index` of this transaction gives an object:
    /// `nonce × MAX_OPS + op_index + 1`, strictly increasing over the sender's writes (see
    /// [`Object`]); `None` past `u64::MAX`.
    fn write_stamp(&self, op_index: u32) -> Option<u64> {
        self.tx
            .nonce
            .0
            .checked_mul(MAX_OPS as u64)?
            .checked_add(u64::from(op_index) + 1)
    }

    fn into_writes(self) -> (Writes, Vec<Effect>) {
        let mut writes = Writes::new();
        let mut effects = Vec::with_capacity(self.accounts.len() + self.objects.len());
        // Accounts (tag `a`) sort before objects (tag `o`), so effects come out in key order.
        for (address, account) in self.accounts {
            writes.insert(account_key(&address), Some(encode(&account)));
            effects.push(Effect::Account {
                address,
                balance: account.balance,
                nonce: account.nonce,
            });
        }
        for (key, (object, changed)) in self.objects {
            if !changed {
                continue;
            }
            let state_key = object_key(&self.sender, &key);
            match object {
                Some(object) => {
                    effects.push(Effect::ObjectWritten {
                        key,
                        version: object.version,
                    });
                    writes.insert(state_key, Some(encode(&object)));
                }
                None => {
                    effects.push(Effect::ObjectDeleted { key });
                    writes.insert(state_key, None);
                }
            }
        }
        if let Some((state, true)) = self.epoch_state {
            writes.insert(EPOCH_STATE_KEY.to_vec(), Some(encode(&state)));
        }
        effects.extend(self.votes);
        (writes, effects)
    }
}

/// Writes `value` with version `stamp` (see [`Object`]: `None` when the stamp overflows).
fn write_version(
    entry: &mut (Option<Object>, bool),
    value: &[u8],
    stamp: Option<u64>,
    op_index: u32,
) -> Result<(), FailureReason> {
    let Some(version) = stamp else {
        return Err(FailureReason::VersionOverflow { op_index });
    };
    *entry = (
        Some(Object {
            version,
            value: value.to_vec(),
        }),
        true,
    );
    Ok(())
}
