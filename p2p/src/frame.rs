//! Length-prefixed bcs frames with a hard cap per protocol.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of bcs. The length is
//! checked against the protocol's cap *before* anything is read or allocated, and decoding
//! requires the payload to be consumed exactly; bad bytes give a typed error, never a panic.
//! [`FrameDecoder`] reassembles frames from a byte stream arriving in arbitrary pieces.

use crate::error::{Error, Result};
use serde::{Serialize, de::DeserializeOwned};

/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// Encodes `message` as one frame, refusing payloads over `limit`.
pub fn encode_frame<T: Serialize>(
    message: &T,
    limit: usize,
    protocol: &'static str,
) -> Result<Vec<u8>> {
    encode_frame_after(&[], message, limit, protocol)
}

/// [`encode_frame`] written after `head` (a stream's lane tag) in the same buffer, so the
/// payload is copied once.
pub fn encode_frame_after<T: Serialize>(
    head: &[u8],
    message: &T,
    limit: usize,
    protocol: &'static str,
) -> Result<Vec<u8>> {
    let payload = bcs::to_bytes(message).map_err(|e| Error::Decode {
        protocol,
        reason: e.to_string(),
    })?;
    if payload.len() > limit {
        return Err(Error::FrameTooLarge {
            protocol,
            size: payload.len(),
            limit,
        });
    }
    let len = u32::try_from(payload.len()).map_err(|_| Error::FrameTooLarge {
        protocol,
        size: payload.len(),
        limit,
    })?;
    let mut frame = Vec::with_capacity(head.len() + LENGTH_PREFIX + payload.len());
    frame.extend_from_slice(head);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Checks an announced frame length against `limit`.
pub fn check_length(
    prefix: [u8; LENGTH_PREFIX],
    limit: usize,
    protocol: &'static str,
) -> Result<usize> {
    let size = u32::from_be_bytes(prefix) as usize;
    if size > limit {
        return Err(Error::FrameTooLarge {
            protocol,
            size,
            limit,
        });
    }
    Ok(size)
}

/// Decodes one frame's payload.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8], protocol: &'static str) -> Result<T> {
    keel_types::encoding::decode(payload, usize::MAX, protocol).map_err(|e| Error::Decode {
        protocol,
        reason: e.to_string(),
    })
}

/// Reassembles frames from stream bytes. Holds at most one partial frame (bounded by the cap).
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    limit: usize,
    protocol: &'static str,
}

impl FrameDecoder {
    /// A decoder for frames of at most `limit` payload bytes.
    pub fn new(limit: usize, protocol: &'static str) -> Self {
        FrameDecoder {
            buffer: Vec::new(),
            limit,
            protocol,
        }
    }

    /// Adds bytes; returns every message completed by them. After an error the stream is
    /// unusable (the caller closes it).
    pub fn push<T: DeserializeOwned>(&mut self, bytes: &[u8]) -> Result<Vec<T>> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(prefix) = self.buffer.first_chunk::<LENGTH_PREFIX>() {
            let size = check_length(*prefix, self.limit, self.protocol)?;
            let Some(payload) = self.buffer.get(LENGTH_PREFIX..LENGTH_PREFIX + size) else {
                break;
            };
            out.push(decode_payload(payload, self.protocol)?);
            self.buffer.drain(..LENGTH_PREFIX + size);
        }
        Ok(out)
    }

    /// Bytes held for an incomplete frame.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}
