//! Config sections read from operators' files: the p2p endpoint (and its checks) and the
//! consensus core (and its checks), from arbitrary TOML text. (The node's whole config file
//! lives in the `keel` binary crate; its parser is property-tested there.)
#![no_main]

use keel_consensus::CoreConfig;
use keel_p2p::EndpointConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p2p) = toml::from_str::<EndpointConfig>(text) {
        let _ = p2p.validate();
    }
    if let Ok(core) = toml::from_str::<CoreConfig>(text) {
        let _ = core.validate();
    }
});
