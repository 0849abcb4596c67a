//! The bcs decoders of untrusted types: a signed transaction (with its static rules), a batch
//! submission body, batches, blocks, certificates and checkpoints.
#![no_main]

use keel_types::{
    Batch, BatchAck, CertifiedCheckpoint, ChainId, ProofOfAvailability, SignedBlock,
    SignedTransaction, encoding::decode,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = SignedTransaction::decode(data) {
        let _ = tx.validate(ChainId(1));
        let _ = tx.digest();
    }
    if let Ok(txs) = decode::<Vec<SignedTransaction>>(data, 16 << 20, "batch body") {
        for tx in &txs {
            let _ = tx.validate(ChainId(1));
        }
    }
    if let Ok(batch) = decode::<Batch>(data, 8 << 20, "batch") {
        let _ = batch.validate(ChainId(1));
        let _ = batch.info();
    }
    let _ = decode::<BatchAck>(data, 1 << 16, "ack");
    let _ = decode::<ProofOfAvailability>(data, 1 << 16, "proof");
    if let Ok(block) = decode::<SignedBlock>(data, 4 << 20, "block") {
        let _ = block.digest();
    }
    let _ = decode::<CertifiedCheckpoint>(data, 1 << 20, "checkpoint");
});
