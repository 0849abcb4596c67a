//! Reconfiguration with real processes under a steady load of signed transfers: operators vote
//! through the admin API, the epoch ends `change_delay_blocks` after the change is scheduled,
//! consensus restarts at round 0 with the new committee, and nothing stops committing.

mod common;

use common::{ACCOUNTS, Committee, submit_spread, transfers};
use serde_json::Value;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

const GRACE_MS: u64 = 2_000;

fn admin(c: &Committee, i: usize, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}{path}", c.admin[i]);
    let request = match method {
        "GET" => c.http.get(url),
        "PUT" => c.http.put(url),
        "DELETE" => c.http.delete(url),
        _ => c.http.post(url),
    };
    let request = match body {
        Some(b) => request.json(&b),
        None => request,
    };
    let r = request.bearer_auth(&c.tokens[i]).send().unwrap();
    let code = r.status().as_u16();
    (code, r.json().unwrap_or(Value::Null))
}

fn epoch_of(c: &Committee, i: usize) -> u64 {
    c.status(i)["epoch"].as_u64().unwrap()
}

/// Commit heights sampled every 50 ms on one validator, from a thread; the longest stretch
/// without a new commit is what the test reports and bounds.
struct GapWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Duration>>,
}

impl GapWatch {
    fn start(api: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let (mut last, mut since, mut longest) = (0u64, Instant::now(), Duration::ZERO);
            while !flag.load(Ordering::Relaxed) {
                if let Ok(r) = http.get(format!("{api}/v1/status")).send()
                    && let Ok(v) = r.json::<Value>()
                {
                    let h = v["committed_height"].as_u64().unwrap_or(0);
                    if h > last {
                        longest = longest.max(since.elapsed());
                        last = h;
                        since = Instant::now();
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            longest.max(since.elapsed())
        });
        GapWatch {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// A steady load: one round of transfers from every account every `every`, to the listed
/// validators, until stopped (bounded by `rounds`).
fn load(c: &Committee, nodes: &[usize], rounds: u64, every: Duration, stop: &AtomicBool) -> u64 {
    let mut submitted = 0;
    for nonce in 0..rounds {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let started = Instant::now();
        submitted += submit_spread(c, nodes, &transfers(ACCOUNTS, nonce, 1)) as u64;
        std::thread::sleep(every.saturating_sub(started.elapsed()));
    }
    submitted
}

/// Votes for a change on validators `voters` and waits until the epoch after `from` starts on
/// `members`; returns (seconds from the vote scheduling it to the new epoch's first commit as
/// seen by polling, the new epoch's `started_after`).
fn change_epoch(
    c: &Committee,
    voters: &[usize],
    members: &[usize],
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (f64, u64) {
    let from = epoch_of(c, members[0]);
    let mut change = String::new();
    let mut transactions = Vec::new();
    for &v in voters {
        let (code, answer) = admin(c, v, method, path, body.clone());
        assert_eq!(code, 200, "vote on {v}: {answer}");
        assert_eq!(
            answer["effective_epoch"].as_u64(),
            Some(from + 1),
            "{answer}"
        );
        change = answer["change"].as_str().unwrap().to_string();
        if let Some(tx) = answer["transaction"].as_str() {
            transactions.push((v, tx.to_string()));
        }
        // Repeating the request is harmless: same change, no second counted vote.
        let (code, again) = admin(c, v, method, path, body.clone());
        assert_eq!(code, 200, "{again}");
        assert_eq!(again["change"].as_str(), Some(change.as_str()));
    }
    // Scheduled once the votes execute.
    let mut scheduled_at = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    c.wait_for(
        Duration::from_secs(31),
        "the change to be scheduled",
        || {
            if Instant::now() > deadline {
                for (v, tx) in &transactions {
                    eprintln!(
                        "vote of {v}: {}",
                        c.get(*v, &format!("/v1/transactions/{tx}")).1
                    );
                }
                eprintln!(
                    "epoch: {}",
                    admin(c, members[0], "GET", "/admin/epoch", None).1
                );
                eprintln!("log 0: {}", c.log_tail(0));
            }
            let (_, e) = admin(c, members[0], "GET", "/admin/epoch", None);
            if e["epoch"].as_u64() != Some(from) {
                scheduled_at.get_or_insert(Instant::now());
                return true;
            }
            let found = e["scheduled"]
                .as_array()
                .is_some_and(|s| s.iter().any(|x| x["change"].as_str() == Some(&change)));
            if found {
                scheduled_at.get_or_insert(Instant::now());
            }
            found
        },
    );
    let scheduled_at = scheduled_at.unwrap();
    let mut started_after = 0;
    c.wait_for(
        Duration::from_secs(60),
        "every member to start the next epoch",
        || {
            members.iter().all(|&m| {
                let (_, e) = admin(c, m, "GET", "/admin/epoch", None);
                started_after = e["started_after"].as_u64().unwrap_or(0);
                e["epoch"].as_u64() == Some(from + 1)
                    && c.status(m)["committed_height"].as_u64().unwrap_or(0) > started_after
            })
        },
    );
    (scheduled_at.elapsed().as_secs_f64(), started_after)
}

#[test]
fn stake_change_and_removal_under_load_keep_committing() {
    let mut c = Committee::create(5);
    for i in 0..5 {
        c.edit_config(
            i,
            &[(
                "epoch_switch_grace_ms = 10000",
                &format!("epoch_switch_grace_ms = {GRACE_MS}"),
            )],
        );
        c.spawn(i);
    }
    for i in 0..5 {
        c.wait_ready(i, Duration::from_secs(60));
    }
    let c = c;
    let stop = AtomicBool::new(false);
    let gaps = GapWatch::start(c.apis[0].clone());
    let (submitted, stake_change, removal) = std::thread::scope(|s| {
        let loader = s.spawn(|| load(&c, &[0, 1, 2, 3], 600, Duration::from_millis(100), &stop));
        std::thread::sleep(Duration::from_secs(2));

        // A bad request is refused with the value at fault and changes nothing.
        let (code, answer) = admin(
            &c,
            0,
            "PUT",
            "/admin/validators/9/stake",
            Some(serde_json::json!({ "stake": 2 })),
        );
        assert_eq!(code, 400, "{answer}");
        assert!(answer.to_string().contains("no validator 9"), "{answer}");
        let (code, answer) = admin(
            &c,
            0,
            "PUT",
            "/admin/validators/4/stake",
            Some(serde_json::json!({ "stake": 0 })),
        );
        assert_eq!(code, 400, "{answer}");
        assert!(answer.to_string().contains("stake"), "{answer}");

        // Epoch 1 → 2: validator 4's stake doubles (4 of 5 votes: more than 2/3).
        let stake_change = change_epoch(
            &c,
            &[0, 1, 2, 3],
            &[0, 1, 2, 3, 4],
            "PUT",
            "/admin/validators/4/stake",
            Some(serde_json::json!({ "stake": 2 })),
        );
        let (_, e) = admin(&c, 0, "GET", "/admin/epoch", None);
        assert_eq!(e["committee"][4]["stake"].as_u64(), Some(2), "{e}");
        assert!(e["scheduled"].as_array().unwrap().is_empty(), "{e}");

        // Epoch 2 → 3: validator 4 is removed. The four others hold 4 of 6: not more than 2/3,
        // so it also takes validator 4's own vote (its operator retires it).
        let removal = change_epoch(
            &c,
            &[0, 1, 2, 3, 4],
            &[0, 1, 2, 3],
            "DELETE",
            "/admin/validators/4",
            None,
        );
        let (_, e) = admin(&c, 0, "GET", "/admin/epoch", None);
        assert_eq!(e["committee"].as_array().unwrap().len(), 4, "{e}");
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        (loader.join().unwrap(), stake_change, removal)
    });
    let longest_gap = gaps.finish();

    // The four members agree on the state after the removal's epoch started and beyond.
    let height = c.status(0)["executed_height"].as_u64().unwrap();
    let roots = common::roots_at(&c, &[0, 1, 2, 3], height);
    assert!(
        roots.windows(2).all(|w| w[0] == w[1]),
        "roots differ: {roots:?}"
    );
    // The removed validator is not a peer any more: the members closed its connections.
    c.wait_for(
        Duration::from_millis(GRACE_MS * 5),
        "the removed validator to be disconnected",
        || c.status(4)["peers"].as_u64() == Some(0),
    );
    assert_eq!(
        epoch_of(&c, 4),
        3,
        "the removed validator followed the chain to its removal"
    );
    let changes: f64 = (0..4)
        .map(|i| c.metric(i, "keel_epoch_changes_total").unwrap_or(0.0))
        .sum();
    assert_eq!(changes, 8.0, "each member changed epoch twice");
    println!(
        "submitted {submitted} transfers; stake change: {:.2} s from scheduled to the new epoch's first commit (epoch 2 after height {}); removal: {:.2} s (epoch 3 after height {}); longest commit gap {} ms; roots equal at height {height}",
        stake_change.0,
        stake_change.1,
        removal.0,
        removal.1,
        longest_gap.as_millis()
    );
    assert!(
        longest_gap <= Duration::from_secs(2),
        "a commit gap of {} ms",
        longest_gap.as_millis()
    );
}
