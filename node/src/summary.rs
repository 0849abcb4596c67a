//! `keel status --api URL`: a node's state in a few readable lines, from its public API.
//!
//! Reads `/v1/status` twice, one second apart (the second reading gives the transactions per
//! second), and `/v1/committee` (each member's stake, this node's connection to it, and its
//! recent proposals and votes).
//!
//! `--watch` follows the node instead, one reading a second (`--interval-ms`): on a terminal, a progress bar
//! while it state-syncs or range-syncs and a live line while it follows; otherwise one line per
//! reading. `--until-following` ends the watch once the node follows the chain (exit 0), and
//! `--timeout` bounds that wait (exit non-zero when it runs out first, or on Ctrl-C).

use crate::client::Client;
use anyhow::{Result, bail};
use indicatif::ProgressStyle;
use keel_api::dto::{CommitteeJson, StatusJson};
use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

/// Between the two status readings.
const SAMPLE: Duration = Duration::from_secs(1);

/// Prints the summary of the node at `api`.
pub async fn run(api: &str) -> Result<()> {
    let client = Client::new(api)?;
    let first = client.status().await?;
    let started = Instant::now();
    tokio::time::sleep(SAMPLE).await;
    let s = client.status().await?;
    let tps = s
        .executed_transactions
        .saturating_sub(first.executed_transactions) as f64
        / started.elapsed().as_secs_f64();
    let committee = client.committee().await?;
    print!("{}", render(api, &s, tps, &committee));
    Ok(())
}

/// What `keel status --watch` is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// Stop (successfully) once the node follows the chain.
    pub until_following: bool,
    /// With `until_following`: give up (an error) after this long.
    pub timeout: Option<Duration>,
    /// Between readings.
    pub interval: Duration,
}

/// Default of `keel status --watch --interval-ms`.
pub const WATCH_INTERVAL_MS: u64 = 1000;

/// Follows the node at `api` until Ctrl-C, or as `watch` says.
pub async fn watch(api: &str, watch: Watch) -> Result<()> {
    let client = Client::new(api)?;
    let terminal = std::io::stderr().is_terminal();
    let bar = crate::progress::bar(100, "status", "sync");
    let syncing_style = bar.style();
    let following_style = ProgressStyle::with_template("status: {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let started = Instant::now();
    let mut previous: Option<(u64, Instant)> = None;
    let mut ticks = tokio::time::interval(watch.interval);
    // A timeout too large to add is no timeout.
    let deadline = watch
        .timeout
        .and_then(|t| started.checked_add(t))
        .map(tokio::time::Instant::from_std);
    // Both made once, so neither a deadline nor a Ctrl-C between two readings is lost.
    let out_of_time = async move {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(out_of_time);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let reading = tokio::select! {
            _ = &mut interrupted => {
                bar.finish();
                if watch.until_following {
                    bail!("interrupted before {api} followed the chain");
                }
                return Ok(());
            }
            _ = &mut out_of_time => {
                bar.finish();
                bail!("{api}: not following after {} s", started.elapsed().as_secs());
            }
            reading = async {
                ticks.tick().await;
                client.status().await
            } => reading,
        };
        let (line, percent, following) = match reading {
            Ok(s) => {
                let now = Instant::now();
                let tps = previous.map(|(count, at)| {
                    s.executed_transactions.saturating_sub(count) as f64
                        / now.duration_since(at).as_secs_f64().max(1e-3)
                });
                previous = Some((s.executed_transactions, now));
                (
                    watch_line(&s, tps),
                    s.sync.percent,
                    s.sync.state == "following",
                )
            }
            Err(e) => (format!("no answer from {api}: {e:#}"), None, false),
        };
        if terminal {
            match percent {
                Some(p) => {
                    bar.set_style(syncing_style.clone());
                    bar.set_position(u64::from(p));
                }
                None => bar.set_style(following_style.clone()),
            }
            bar.set_message(line);
        } else {
            println!("{line}");
        }
        if watch.until_following && following {
            bar.finish();
            return Ok(());
        }
    }
}

/// One reading as `--watch` shows it (`tps`: since the previous reading).
fn watch_line(s: &StatusJson, tps: Option<f64>) -> String {
    let heights = format!(
        "executed {} / committed {}",
        s.executed_height, s.committed_height
    );
    match (s.sync.state.as_str(), s.sync.target_height, s.sync.percent) {
        ("state_sync", Some(target), Some(p)) => {
            format!("state sync to the checkpoint at height {target}: {p}% of the state")
        }
        ("range_sync", Some(target), Some(p)) => {
            format!("range sync to height {target}: {p}%, {heights}")
        }
        (state, _, _) => {
            let rate = tps.map_or(String::new(), |t| format!(", {t:.0} tx/s"));
            format!(
                "{state}: {heights}, round {}{rate}, mempool {}, {} peers",
                s.round, s.mempool_size, s.peers
            )
        }
    }
}

fn render(api: &str, s: &StatusJson, tps: f64, committee: &CommitteeJson) -> String {
    let mut out = String::new();
    let validator = s
        .validator
        .map_or("not a committee member".to_string(), |v| {
            format!("validator {v}")
        });
    let sync = match (&s.sync.target_height, s.sync.percent) {
        (Some(target), Some(p)) => format!("{} to height {target} ({p}%)", s.sync.state),
        _ => s.sync.state.clone(),
    };
    out += &format!(
        "{api}: chain {}, epoch {}, {validator}, {sync}\n",
        s.chain_id, s.epoch
    );
    out += &format!(
        "  height    executed {} / committed {} (round {})\n",
        s.executed_height, s.committed_height, s.round
    );
    out += &format!(
        "  load      {tps:.0} tx/s, {} executed in all, mempool {}\n",
        s.executed_transactions, s.mempool_size
    );
    out += &format!("  state     root {}\n", s.state_root);
    out += &match &s.latest_checkpoint {
        Some(c) => format!("  checkpoint #{} at height {}\n", c.sequence, c.height),
        None => "  checkpoint none certified yet\n".to_string(),
    };
    let connected = committee
        .members
        .iter()
        .filter(|m| m.connected && !m.this_node)
        .count();
    out += &format!(
        "  committee {} members, {connected} of {} peers connected\n",
        committee.members.len(),
        committee.members.len().saturating_sub(1)
    );
    for m in &committee.members {
        let link = if m.this_node {
            "this node"
        } else if m.connected {
            "connected"
        } else {
            "DISCONNECTED"
        };
        let activity = match (m.proposed, m.voted) {
            (Some(p), Some(v)) => format!("  proposed {p}, voted {v} recently"),
            _ => String::new(),
        };
        let key: String = m.protocol_key.chars().take(12).collect();
        out += &format!(
            "    {:>3}  {key}…  stake {:<4} {link}{activity}\n",
            m.index, m.stake
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_api::dto::{MemberJson, SyncJson};

    fn status(sync: SyncJson) -> StatusJson {
        StatusJson {
            chain_id: 7,
            validator: Some(1),
            epoch: 3,
            round: 120,
            committed_height: 100,
            executed_height: 98,
            state_root: "ab".repeat(32),
            executed_transactions: 5000,
            committee_size: 2,
            batch_verifiers: 1,
            peers: 0,
            mempool_size: 12,
            sync,
            latest_checkpoint: None,
        }
    }

    fn sync(state: &str, target: Option<u64>, percent: Option<u32>) -> SyncJson {
        SyncJson {
            state: state.into(),
            target_height: target,
            percent,
        }
    }

    #[test]
    fn the_watch_line_says_how_far_a_sync_is_or_how_the_node_follows() {
        let state = status(sync("state_sync", Some(10_000), Some(40)));
        assert_eq!(
            watch_line(&state, None),
            "state sync to the checkpoint at height 10000: 40% of the state"
        );
        let range = status(sync("range_sync", Some(400), Some(25)));
        assert_eq!(
            watch_line(&range, Some(3.0)),
            "range sync to height 400: 25%, executed 98 / committed 100"
        );
        let following = status(sync("following", None, None));
        assert_eq!(
            watch_line(&following, Some(250.4)),
            "following: executed 98 / committed 100, round 120, 250 tx/s, mempool 12, 0 peers"
        );
        assert!(!watch_line(&following, None).contains("tx/s"));
    }

    #[test]
    fn the_summary_names_heights_load_and_each_member_link() {
        let status = status(sync("range_sync", Some(400), Some(25)));
        let member = |index, this_node, connected| MemberJson {
            index,
            protocol_key: format!("{index}").repeat(64),
            stake: 1,
            this_node,
            connected,
            proposed: Some(4),
            voted: Some(9),
            failed: Some(0),
        };
        let committee = CommitteeJson {
            epoch: 3,
            members: vec![member(0, false, false), member(1, true, true)],
        };
        let text = render("http://n1", &status, 250.4, &committee);
        assert!(
            text.contains("chain 7, epoch 3, validator 1, range_sync to height 400 (25%)"),
            "{text}"
        );
        assert!(
            text.contains("executed 98 / committed 100 (round 120)"),
            "{text}"
        );
        assert!(
            text.contains("250 tx/s, 5000 executed in all, mempool 12"),
            "{text}"
        );
        assert!(text.contains("0 of 1 peers connected"), "{text}");
        assert!(text.contains("DISCONNECTED"), "{text}");
        assert!(
            text.contains("this node  proposed 4, voted 9 recently"),
            "{text}"
        );
    }
}
