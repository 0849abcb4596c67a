//! The public and admin API bodies: JSON transactions (and their conversion to a signed
//! transaction) and the admin requests.
#![no_main]

use keel_api::dto::{AddValidatorJson, StageKeysJson, StakeJson, TransactionJson};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(json) = serde_json::from_slice::<TransactionJson>(data)
        && let Ok(tx) = json.to_signed()
    {
        let _ = tx.validate(keel_types::ChainId(1));
    }
    let _ = serde_json::from_slice::<AddValidatorJson>(data);
    let _ = serde_json::from_slice::<StakeJson>(data);
    let _ = serde_json::from_slice::<StageKeysJson>(data);
});
