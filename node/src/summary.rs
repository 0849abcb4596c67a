//! `keel status --api URL`: a node's state in a few readable lines, from its public API.
//!
//! Reads `/v1/status` twice, one second apart (the second reading gives the transactions per
//! second), and `/v1/committee` (each member's stake, this node's connection to it, and its
//! recent proposals and votes).

use crate::client::Client;
use anyhow::Result;
use keel_api::dto::{CommitteeJson, StatusJson};
use std::time::{Duration, Instant};

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

    #[test]
    fn the_summary_names_heights_load_and_each_member_link() {
        let status = StatusJson {
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
            sync: SyncJson {
                state: "range_sync".into(),
                target_height: Some(400),
                percent: Some(25),
            },
            latest_checkpoint: None,
        };
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
