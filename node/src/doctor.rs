//! `keel doctor --config FILE`: checks a validator's setup, before it starts or while it runs.
//!
//! One line per check, `ok`, `warn` or `FAIL`, each saying what was found and, when something is
//! wrong, what to do. The process exits non-zero if any check fails. Checks, in order:
//! - the config, read exactly as `keel run` reads it (nothing else runs if it is invalid);
//! - the genesis, and whether this node's protocol key is in its committee;
//! - the key and admin-token files: readable, well-formed, not readable by group or others;
//! - the data directory: writable (or creatable), and the free space on its file system;
//! - the listen addresses: free, or held by this validator already running (its API answers);
//! - the clock against each peer's public API (the HTTP `Date` header, 1 s resolution, read as
//!   the middle of its second): a warning beyond 2 s, a failure when the skew is certainly beyond
//!   the consensus drift bound (`consensus.max_clock_drift_ms`), past which blocks are refused.
//!
//! Peers' APIs are found by the `keel genesis` convention (a peer's API port is its p2p port plus
//! this node's own API-to-p2p offset) unless `--peer-api` names them.

use crate::{config::NodeConfig, genesis::Genesis};
use anyhow::Result;
use keel_p2p::PeerAddress;
use keel_types::PublicKey;
use std::{
    net::{SocketAddr, TcpListener, UdpSocket},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

/// Free space below this fails the disk check.
pub const MIN_FREE_BYTES: u64 = 1 << 30;
/// Free space below this is a warning.
pub const LOW_FREE_BYTES: u64 = 10 << 30;
/// A clock skew beyond this is a warning (the `Date` header has 1 s resolution).
pub const SKEW_WARN: Duration = Duration::from_secs(2);
/// How long a peer's API gets to answer.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(3);

/// `keel doctor` arguments.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// The validator's config file.
    #[arg(long)]
    config: PathBuf,
    /// A peer's public API URL for the clock check (repeat; default: derived from the genesis).
    #[arg(long = "peer-api")]
    peer_apis: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// The findings so far.
#[derive(Default)]
struct Report {
    failed: usize,
    warned: usize,
}

impl Report {
    fn say(&mut self, verdict: Verdict, what: &str, detail: impl std::fmt::Display) {
        let tag = match verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => {
                self.warned += 1;
                "warn"
            }
            Verdict::Fail => {
                self.failed += 1;
                "FAIL"
            }
        };
        println!("{tag}  {what}: {detail}");
    }
}

/// Runs every check; an error means at least one check failed.
pub async fn run(args: DoctorArgs) -> Result<()> {
    let mut report = Report::default();
    let config = match NodeConfig::load(&args.config) {
        Ok(c) => {
            report.say(Verdict::Ok, "config", args.config.display());
            c
        }
        Err(e) => {
            report.say(Verdict::Fail, "config", format!("{e:#}"));
            anyhow::bail!("the config is invalid; nothing else was checked");
        }
    };
    let genesis = check_genesis(&mut report, &config);
    for (what, path) in [
        ("protocol key", &config.protocol_key),
        ("network key", &config.network_key),
    ] {
        check_private_file(&mut report, what, path, |p| {
            crate::genesis::read_key(p).map(|_| ())
        });
    }
    check_private_file(&mut report, "admin token", &config.admin_token_file, |_| {
        crate::token::read_token(&config).map(|_| ())
    });
    check_data_dir(&mut report, &config.data_dir);
    let api = format!("http://{}", config.api_listen);
    let running = answers(&format!("{api}/healthz")).await;
    check_udp(&mut report, "p2p_listen", config.p2p_listen, running);
    check_tcp(&mut report, "api_listen", config.api_listen, running);
    check_tcp(&mut report, "admin_listen", config.admin_listen, running);
    let peers = if args.peer_apis.is_empty() {
        genesis
            .map(|g| derived_peer_apis(&config, &g))
            .unwrap_or_default()
    } else {
        args.peer_apis.clone()
    };
    check_clocks(&mut report, &peers, config.consensus.max_clock_drift_ms).await;
    println!(
        "doctor: {} failed, {} warnings",
        report.failed, report.warned
    );
    if report.failed > 0 {
        anyhow::bail!("{} check(s) failed", report.failed);
    }
    Ok(())
}

fn check_genesis(report: &mut Report, config: &NodeConfig) -> Option<Genesis> {
    let genesis = match Genesis::load(&config.genesis) {
        Ok(g) => g,
        Err(e) => {
            report.say(Verdict::Fail, "genesis", format!("{e:#}"));
            return None;
        }
    };
    let me = crate::genesis::read_key(&config.protocol_key)
        .ok()
        .map(|k| k.public());
    let member = genesis
        .validators
        .iter()
        .find(|v| v.protocol_key.parse::<PublicKey>().ok() == me);
    match member {
        Some(v) => report.say(
            Verdict::Ok,
            "genesis",
            format!(
                "chain {}, {} validators; this node is `{}` (p2p {})",
                genesis.chain_id,
                genesis.validators.len(),
                v.name,
                v.address
            ),
        ),
        None => report.say(
            Verdict::Warn,
            "genesis",
            format!(
                "chain {}: this node's protocol key is not in the genesis committee (fine for a \
                 validator joining later, which follows until a vote adds it)",
                genesis.chain_id
            ),
        ),
    }
    Some(genesis)
}

fn check_private_file(
    report: &mut Report,
    what: &str,
    path: &Path,
    parse: impl Fn(&Path) -> Result<()>,
) {
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode(),
        Err(e) => {
            report.say(Verdict::Fail, what, format!("{}: {e}", path.display()));
            return;
        }
    };
    if let Err(e) = parse(path) {
        report.say(Verdict::Fail, what, format!("{}: {e:#}", path.display()));
    } else if mode & 0o027 != 0 {
        report.say(
            Verdict::Fail,
            what,
            format!(
                "{} has mode {:o}: others than its owner can read or change a secret; run \
                 `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            ),
        );
    } else if mode & 0o070 != 0 {
        // A Kubernetes Secret mounted with an fsGroup is group-readable by design.
        report.say(
            Verdict::Warn,
            what,
            format!(
                "{} has mode {:o}: its group can read a secret; run `chmod 600 {}` unless that \
                 group is this node's alone (a Kubernetes Secret with fsGroup is)",
                path.display(),
                mode & 0o777,
                path.display()
            ),
        );
    } else {
        report.say(
            Verdict::Ok,
            what,
            format!("{} (mode {:o})", path.display(), mode & 0o777),
        );
    }
}

fn check_data_dir(report: &mut Report, dir: &Path) {
    // The directory, or the nearest ancestor that exists (`keel run` creates the rest).
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let probe = existing.join(format!(".keel-doctor-{}", std::process::id()));
    if let Err(e) = std::fs::write(&probe, b"probe") {
        report.say(
            Verdict::Fail,
            "data directory",
            format!("cannot write in {}: {e}", existing.display()),
        );
        return;
    }
    let _ = std::fs::remove_file(&probe);
    let state = if dir.exists() {
        "exists"
    } else {
        "will be created"
    };
    match nix::sys::statvfs::statvfs(existing) {
        Ok(fs) => {
            let free = fs.blocks_available().saturating_mul(fs.fragment_size());
            let gib = free as f64 / (1u64 << 30) as f64;
            let verdict = if free < MIN_FREE_BYTES {
                Verdict::Fail
            } else if free < LOW_FREE_BYTES {
                Verdict::Warn
            } else {
                Verdict::Ok
            };
            report.say(
                verdict,
                "data directory",
                format!("{} {state}, writable; {gib:.1} GiB free", dir.display()),
            );
        }
        Err(e) => report.say(
            Verdict::Warn,
            "data directory",
            format!(
                "{} {state}, writable; free space unknown: {e}",
                dir.display()
            ),
        ),
    }
}

fn in_use(report: &mut Report, what: &str, addr: SocketAddr, e: std::io::Error, running: bool) {
    if running {
        report.say(
            Verdict::Ok,
            what,
            format!("{addr} is held by this validator, which is running (its API answers)"),
        );
    } else {
        report.say(
            Verdict::Fail,
            what,
            format!("cannot bind {addr}: {e} (another process holds it, or the address is not this host's)"),
        );
    }
}

fn check_tcp(report: &mut Report, what: &str, addr: SocketAddr, running: bool) {
    match TcpListener::bind(addr) {
        Ok(_) => report.say(Verdict::Ok, what, format!("{addr} is free")),
        Err(e) => in_use(report, what, addr, e, running),
    }
}

fn check_udp(report: &mut Report, what: &str, addr: SocketAddr, running: bool) {
    match UdpSocket::bind(addr) {
        Ok(_) => report.say(Verdict::Ok, what, format!("{addr} (UDP) is free")),
        Err(e) => in_use(report, what, addr, e, running),
    }
}

/// Peers' API URLs by the `keel genesis` port convention.
fn derived_peer_apis(config: &NodeConfig, genesis: &Genesis) -> Vec<String> {
    let offset = i32::from(config.api_listen.port()) - i32::from(config.p2p_listen.port());
    let me = crate::genesis::read_key(&config.network_key)
        .ok()
        .map(|k| k.public());
    genesis
        .validators
        .iter()
        .filter(|v| v.network_key.parse::<PublicKey>().ok() != me)
        .filter_map(|v| {
            let shift = |port: u16| u16::try_from(i32::from(port) + offset).ok();
            Some(match v.address.parse::<PeerAddress>().ok()? {
                PeerAddress::Socket(a) => {
                    format!("http://{}", SocketAddr::new(a.ip(), shift(a.port())?))
                }
                PeerAddress::Name { host, port } => format!("http://{host}:{}", shift(port)?),
            })
        })
        .collect()
}

async fn answers(url: &str) -> bool {
    let Ok(client) = reqwest::Client::builder().timeout(PEER_TIMEOUT).build() else {
        return false;
    };
    matches!(client.get(url).send().await, Ok(r) if r.status().is_success())
}

async fn check_clocks(report: &mut Report, peers: &[String], max_drift_ms: u64) {
    if peers.is_empty() {
        report.say(Verdict::Warn, "clock", "no peer to compare with");
        return;
    }
    let client = match reqwest::Client::builder().timeout(PEER_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            report.say(Verdict::Warn, "clock", format!("no HTTP client: {e}"));
            return;
        }
    };
    // The header's second is truncated: the peer's clock read up to 1 s more than it says.
    let fail_at = Duration::from_millis(max_drift_ms);
    for peer in peers {
        let what = format!("clock vs {peer}");
        let sent = SystemTime::now();
        let answer = client.get(format!("{peer}/healthz")).send().await;
        let received = SystemTime::now();
        let date = match answer {
            Ok(r) => r
                .headers()
                .get(reqwest::header::DATE)
                .and_then(|d| d.to_str().ok())
                .and_then(|d| httpdate::parse_http_date(d).ok()),
            Err(e) => {
                report.say(
                    Verdict::Warn,
                    &what,
                    format!("not reachable ({e}); not started yet?"),
                );
                continue;
            }
        };
        let Some(date) = date else {
            report.say(Verdict::Warn, &what, "no usable Date header");
            continue;
        };
        // The peer stamped the answer between `sent` and `received`, truncated to the second:
        // on average half a second later than the header says.
        let local = sent + received.duration_since(sent).unwrap_or_default() / 2;
        let date = date + Duration::from_millis(500);
        let (skew, sign) = match date.duration_since(local) {
            Ok(ahead) => (ahead, "ahead"),
            Err(e) => (e.duration(), "behind"),
        };
        // Beyond the bound by more than the header's resolution: certainly too far.
        let verdict = if skew.saturating_sub(Duration::from_millis(500)) >= fail_at {
            Verdict::Fail
        } else if skew > SKEW_WARN {
            Verdict::Warn
        } else {
            Verdict::Ok
        };
        let detail = if verdict == Verdict::Ok {
            "within 2 s (the Date header has 1 s resolution)".to_string()
        } else {
            format!(
                "{:.1} s {sign} of this host (blocks more than consensus.max_clock_drift_ms = \
                 {max_drift_ms} ms ahead are refused): synchronise the clocks (NTP)",
                skew.as_secs_f64()
            )
        };
        report.say(verdict, &what, detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_open_to_others_fails_and_readable_by_its_group_warns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        std::fs::write(&path, "x").unwrap();
        for (mode, failed, warned) in [
            (0o600, 0, 0),
            (0o440, 0, 1),
            (0o640, 0, 1),
            (0o604, 1, 0),
            (0o660, 1, 0),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let mut report = Report::default();
            check_private_file(&mut report, "admin token", &path, |_| Ok(()));
            assert_eq!(
                (report.failed, report.warned),
                (failed, warned),
                "mode {mode:o}"
            );
        }
    }
}
