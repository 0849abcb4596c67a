//! Every p2p frame decoder on arbitrary bytes: notifications (consensus messages included),
//! requests and responses, as a stream reassembled from pieces and as one payload.
#![no_main]

use keel_consensus::ConsensusMessage;
use keel_p2p::{FrameDecoder, Notification, Protocol, Request, Response, decode_payload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limit = Protocol::Batches.frame_limit();
    let _ = decode_payload::<Notification<ConsensusMessage>>(data, "notification");
    let _ = decode_payload::<Request>(data, "request");
    let _ = decode_payload::<Response>(data, "response");
    // As a stream split at an arbitrary point (the first byte says where).
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let (a, b) = data.split_at(split);
    let mut notes = FrameDecoder::new(limit, "notification");
    let _ = notes.push::<Notification<ConsensusMessage>>(a);
    let _ = notes.push::<Notification<ConsensusMessage>>(b);
    let mut requests = FrameDecoder::new(limit, "request");
    let _ = requests.push::<Request>(a);
    let _ = requests.push::<Request>(b);
});
