//! Fault injection for tests with real processes, compiled into debug builds only: a release
//! binary ignores it. With `KEEL_FAULT_LIE_IN_SYNC` set in its environment, a node answers
//! peers' sync requests with corrupted data — every state chunk value altered (keys still in
//! order and in their bucket, so only the bucket checksum against the certified root shows
//! it), and committed ranges with two blocks swapped (a broken hash chain) — while it takes
//! part in consensus honestly. The tests use it to play a lying peer.

use keel_p2p::Response;

/// The environment variable that turns the lies on.
pub const LIE_IN_SYNC: &str = "KEEL_FAULT_LIE_IN_SYNC";

/// Whether this process lies in its sync answers (never in a release build).
pub fn lie_in_sync() -> bool {
    cfg!(debug_assertions) && std::env::var_os(LIE_IN_SYNC).is_some()
}

/// The lie told instead of `response`.
pub fn corrupt(response: Response) -> Response {
    match response {
        Response::StateChunk {
            mut entries,
            complete,
        } => {
            for (_, value) in &mut entries {
                value.push(0xee);
            }
            Response::StateChunk { entries, complete }
        }
        Response::CommittedRange { from, mut blocks } if blocks.len() > 3 => {
            blocks.swap(1, 2);
            Response::CommittedRange { from, blocks }
        }
        other => other,
    }
}
