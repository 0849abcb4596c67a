//! Frames: round trips, caps enforced before allocation, and arbitrary bytes never panic the
//! decoder for any message type.

use keel_p2p::{Error, FrameDecoder, Notification, Protocol, Request, Response, encode_frame};
use keel_types::{Digest, Height};
use proptest::prelude::*;

type Note = Notification<Vec<u8>>;

#[test]
fn frames_round_trip_in_arbitrary_pieces() {
    let messages = vec![
        Request::Blocks {
            digests: vec![Digest::of_bytes(b"a")],
        },
        Request::CommittedRange {
            from: Height(1),
            to: Height(9),
        },
        Request::LatestCheckpoint,
        Request::Checkpoint { sequence: 4 },
        Request::StateChunk {
            checkpoint: 3,
            bucket: 7,
            after: Some(b"k".to_vec()),
        },
    ];
    let limit = Protocol::Sync.frame_limit();
    let mut stream = Vec::new();
    for m in &messages {
        stream.extend(encode_frame(m, limit, "sync").unwrap());
    }
    for piece in [1usize, 3, 7, 1000] {
        let mut decoder = FrameDecoder::new(limit, "sync");
        let mut out: Vec<Request> = Vec::new();
        for chunk in stream.chunks(piece) {
            out.extend(decoder.push::<Request>(chunk).unwrap());
        }
        assert_eq!(out, messages);
        assert_eq!(decoder.buffered(), 0);
    }
}

#[test]
fn oversize_frames_are_refused_from_the_prefix() {
    let mut decoder = FrameDecoder::new(1024, "consensus");
    // Announces 4 GiB: refused at once, nothing allocated for it.
    let err = decoder.push::<Note>(&[0xff, 0xff, 0xff, 0xff]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::FrameTooLarge {
                size: 4294967295,
                limit: 1024,
                ..
            }
        ),
        "{err}"
    );
    // And the sender side refuses to build one.
    let big = Notification::<Vec<u8>>::Consensus(vec![0; 2048]);
    assert!(matches!(
        encode_frame(&big, 1024, "consensus"),
        Err(Error::FrameTooLarge { .. })
    ));
}

#[test]
fn undecodable_payloads_are_typed_errors() {
    let mut decoder = FrameDecoder::new(1024, "sync");
    let err = decoder
        .push::<Response>(&[0, 0, 0, 2, 0xee, 0xee])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Decode {
                protocol: "sync",
                ..
            }
        ),
        "{err}"
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = FrameDecoder::new(1 << 16, "c").push::<Note>(&bytes);
        let _ = FrameDecoder::new(1 << 16, "r").push::<Request>(&bytes);
        let _ = FrameDecoder::new(1 << 16, "s").push::<Response>(&bytes);
        // With a valid length prefix, so the payload decoder itself sees the bytes.
        let mut framed = (bytes.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        let _ = FrameDecoder::new(1 << 16, "c").push::<Note>(&framed);
        let _ = FrameDecoder::new(1 << 16, "r").push::<Request>(&framed);
        let _ = FrameDecoder::new(1 << 16, "s").push::<Response>(&framed);
    }
}
