//! Tests of the JSON forms.

use super::*;
use keel_types::{Address, Height, Nonce, receipt::DiscardReason};

fn receipt(status: ExecutionStatus) -> Receipt {
    Receipt {
        transaction: Digest::of_bytes(b"tx"),
        sender: Address([1; 32]),
        nonce: Nonce(3),
        status,
        effects: Vec::new(),
        height: Height(9),
        block: Digest::of_bytes(b"block"),
        position: 0,
        fee: 0,
    }
}

#[test]
fn a_discarded_transaction_is_reported_discarded_not_executed() {
    let discarded = receipt(ExecutionStatus::Discarded(DiscardReason::StaleNonce {
        nonce: Nonce(3),
        next: Nonce(4),
    }));
    let json = TransactionStatusJson::from(&discarded);
    assert_eq!(json.status, "discarded");
    assert_eq!(json.receipt.unwrap().status, "discarded");
    let executed = TransactionStatusJson::from(&receipt(ExecutionStatus::Success));
    assert_eq!(executed.status, "executed");
}
