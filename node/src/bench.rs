//! `keel bench`: a load generator. It signs transfers between genesis-derived accounts ahead of
//! time (so signing does not compete with the validators during the run), submits them in bcs
//! batches at a target rate (each account always to the same node, so its nonces arrive in
//! order), and measures submit→commit latency from the first node's commit stream.

use crate::{client::Client, genesis::derived_account_key};
use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use indicatif::ProgressBar;
use keel_api::dto::CommittedJson;
use keel_types::{
    Address, ChainId, Digest, KeyPair, Nonce, Op, SignedTransaction, TimestampMs, Transaction,
    crypto::{SignedMessage, verify_batch},
    transaction::Identified,
};
use parking_lot::Mutex;
use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Load parameters.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// Public API base URLs.
    pub apis: Vec<String>,
    /// Seconds of load.
    pub duration_secs: u64,
    /// Target transactions per second (`None`: as fast as the nodes accept).
    pub rate: Option<u64>,
    /// Seed of the genesis-derived accounts.
    pub seed: String,
    /// Accounts used (at most the genesis-derived count).
    pub accounts: u64,
    /// Transactions per submitted batch.
    pub batch: usize,
    /// Seconds to wait for the last commits.
    pub drain_secs: u64,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Committed transactions per second during the load window.
    pub tps: f64,
    /// Latency percentiles in ms.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Transactions accepted by the nodes.
    pub submitted: u64,
    /// Of those, committed.
    pub committed: u64,
    /// Submissions refused as overloaded (HTTP 429 or the batch answer's `overloaded`).
    pub overloaded: u64,
    /// Accepted transactions without a final receipt on the first node's stream after the
    /// drain (goal: 0).
    pub unfinished: u64,
    /// The signature-verification bound of the committee on this machine.
    pub bound: SignatureBound,
}

/// What signature verification alone allows on this machine: batch verifications per second
/// on one core (measured here, on 64-transaction batches of the run's own transfers), the
/// cores, and how many validators verify each transaction (every one without designated
/// verifiers, f + 1 with them, from the first node's status).
#[derive(Debug, Clone, Copy, Default)]
pub struct SignatureBound {
    /// Signatures verified per second on one core.
    pub per_core: f64,
    /// Cores on this machine.
    pub cores: usize,
    /// Validators that verify each transaction.
    pub verifiers: usize,
}

impl SignatureBound {
    /// Transactions per second the machine could verify for the whole committee.
    pub fn tps(&self) -> f64 {
        self.per_core * self.cores as f64 / self.verifiers.max(1) as f64
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bound = self.bound.tps();
        write!(
            f,
            "bench: tps={:.0} p50_ms={:.0} p90_ms={:.0} p99_ms={:.0} submitted={} committed={} \
             refused={} unfinished={} verify_per_core={:.0} cores={} verifiers={} \
             sig_bound_tps={:.0} of_bound={:.3}",
            self.tps,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.submitted,
            self.committed,
            self.overloaded,
            self.unfinished,
            self.bound.per_core,
            self.bound.cores,
            self.bound.verifiers,
            bound,
            if bound > 0.0 { self.tps / bound } else { 0.0 }
        )
    }
}

/// Commit observations: digest → submit time, and latencies seen.
#[derive(Default)]
struct Tracker {
    sent: HashMap<Digest, Instant>,
    /// (commit time, latency).
    committed: Vec<(Instant, Duration)>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn progress_bar(len: u64, what: &str) -> ProgressBar {
    crate::progress::bar(len, "bench", what)
}

/// Signs `count` transfers with the accounts in rotation, each paying the account half the
/// ring away (so transactions close together in a block do not touch the same accounts).
fn presign(
    keys: &[KeyPair],
    nonces: &mut [u64],
    chain: ChainId,
    count: usize,
    expiry: TimestampMs,
    progress: &ProgressBar,
) -> Vec<(usize, SignedTransaction, Digest)> {
    let addresses: Vec<Address> = keys
        .iter()
        .map(|k| Address::from_public_key(&k.public()))
        .collect();
    let n = keys.len();
    let plan: Vec<(usize, u64)> = (0..count)
        .map(|i| {
            let a = i % n;
            let nonce = nonces[a];
            nonces[a] += 1;
            (a, nonce)
        })
        .collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = plan.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = plan
            .chunks(chunk)
            .map(|part| {
                let addresses = &addresses;
                s.spawn(move || {
                    part.iter()
                        .map(|&(a, nonce)| {
                            let tx = Transaction {
                                chain_id: chain,
                                sender: keys[a].public(),
                                nonce: Nonce(nonce),
                                expiry,
                                ops: vec![Op::Transfer {
                                    to: addresses[(a + n / 2 + 1) % n],
                                    amount: 1,
                                }],
                            }
                            .sign(&keys[a]);
                            let d = tx.digest();
                            progress.inc(1);
                            (a, tx, d)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Signatures verified per second on one core: `verify_batch` over groups of 64 of `txs`,
/// repeated for about half a second.
fn verification_rate(txs: &[SignedTransaction]) -> f64 {
    let group: Vec<(Identified, &SignedTransaction)> = txs
        .iter()
        .take(64)
        .map(|t| (t.transaction.identify(), t))
        .collect();
    if group.is_empty() {
        return 0.0;
    }
    let items: Vec<SignedMessage<'_>> = group
        .iter()
        .map(|(id, t)| SignedMessage {
            message: &id.signing_message,
            key: &t.transaction.sender,
            signature: &t.signature,
        })
        .collect();
    let started = Instant::now();
    let mut verified = 0usize;
    while started.elapsed() < Duration::from_millis(500) {
        // The run's own transfers are valid; a failure would only make the figure smaller.
        let _ = verify_batch(&items);
        verified += items.len();
    }
    verified as f64 / started.elapsed().as_secs_f64()
}

/// Runs the load and reports.
pub async fn run(args: BenchArgs) -> Result<BenchReport> {
    if args.apis.is_empty() {
        bail!("--api: at least one API URL is needed");
    }
    if args.accounts == 0 || args.accounts > crate::genesis::MAX_DERIVED_ACCOUNTS {
        bail!(
            "--accounts: {} is not in 1..={}",
            args.accounts,
            crate::genesis::MAX_DERIVED_ACCOUNTS
        );
    }
    let clients: Vec<Client> = args
        .apis
        .iter()
        .map(|a| Client::new(a))
        .collect::<Result<_>>()?;
    let status = clients[0].status().await?;
    let chain = ChainId(status.chain_id);
    let keys: Vec<KeyPair> = (0..args.accounts)
        .map(|i| derived_account_key(&args.seed, i))
        .collect();

    // Current nonces (a previous run may have used the accounts).
    let mut nonces = vec![0u64; keys.len()];
    let lookups: Vec<(usize, Client, Address)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                i,
                clients[i % clients.len()].clone(),
                Address::from_public_key(&k.public()),
            )
        })
        .collect();
    let reading = progress_bar(keys.len() as u64, "reading nonces");
    let fetched: Vec<Result<(usize, u64)>> = futures_util::stream::iter(lookups)
        .map(|(i, client, address)| async move { Ok((i, client.account(&address).await?.nonce)) })
        .buffer_unordered(64)
        .inspect(|_| reading.inc(1))
        .collect()
        .await;
    reading.finish_and_clear();
    for f in fetched {
        let (i, n) = f.context("reading account nonces (are the accounts funded in genesis?)")?;
        nonces[i] = n;
    }

    let rate = args.rate.unwrap_or(20_000).max(1);
    let total = (rate * args.duration_secs) as usize;
    let expiry = TimestampMs(crate::clock::now_ms().0 + 600_000);
    eprintln!(
        "bench: signing {total} transfers from {} accounts",
        keys.len()
    );
    let signing = progress_bar(total as u64, "signing");
    let signed = tokio::task::spawn_blocking({
        let mut nonces = nonces.clone();
        let signing = signing.clone();
        move || presign(&keys, &mut nonces, chain, total, expiry, &signing)
    })
    .await?;
    signing.finish_and_clear();

    // The signature bound, measured before the load (the nodes are idle or nearly so).
    let sample: Vec<SignedTransaction> =
        signed.iter().take(64).map(|(_, t, _)| t.clone()).collect();
    let per_core = tokio::task::spawn_blocking(move || verification_rate(&sample)).await?;
    let bound = SignatureBound {
        per_core,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        // Nodes from before designated verifiers do not report it: every validator verified.
        verifiers: [
            status.batch_verifiers,
            status.committee_size,
            args.apis.len(),
        ]
        .into_iter()
        .find(|v| *v > 0)
        .unwrap_or(1),
    };

    let tracker = Arc::new(Mutex::new(Tracker::default()));
    // Commit stream from the first node.
    let stream = clients[0].stream().await?;
    let listener = {
        let tracker = tracker.clone();
        tokio::spawn(async move {
            let mut body = stream.bytes_stream();
            let mut buffer = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let event: String = buffer.drain(..end + 2).collect();
                    let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) else {
                        continue;
                    };
                    let Ok(c) = serde_json::from_str::<CommittedJson>(data.trim()) else {
                        continue;
                    };
                    let Ok(d) = c.digest.parse::<Digest>() else {
                        continue;
                    };
                    let now = Instant::now();
                    let mut t = tracker.lock();
                    if let Some(sent) = t.sent.remove(&d) {
                        t.committed.push((now, now - sent));
                    }
                }
            }
        })
    };

    // One submitting task per node, fed chunks in order.
    let submitted = Arc::new(AtomicU64::new(0));
    let overloaded = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for client in &clients {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(SignedTransaction, Digest)>>(64);
        senders.push(tx);
        let client = client.clone();
        let tracker = tracker.clone();
        let submitted = submitted.clone();
        let overloaded = overloaded.clone();
        workers.push(tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                let txs: Vec<SignedTransaction> = chunk.iter().map(|(t, _)| t.clone()).collect();
                {
                    let now = Instant::now();
                    let mut t = tracker.lock();
                    for (_, d) in &chunk {
                        t.sent.insert(*d, now);
                    }
                }
                match client.submit_batch(&txs).await {
                    Ok(answer) => {
                        submitted.fetch_add(answer.accepted as u64, Ordering::Relaxed);
                        let mut t = tracker.lock();
                        for (r, (_, d)) in answer.results.iter().zip(&chunk) {
                            if let Some(e) = &r.error {
                                t.sent.remove(d);
                                if e.code == "overloaded" {
                                    overloaded.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        eprintln!("bench: submit to {} failed: {e}", client.base());
                        let mut t = tracker.lock();
                        for (_, d) in &chunk {
                            t.sent.remove(d);
                        }
                    }
                }
            }
        }));
    }

    // Pace the load: every 10 ms, release what the rate allows, grouped per node.
    let n = clients.len();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_secs);
    let mut next = 0usize;
    let mut pending: Vec<Vec<(SignedTransaction, Digest)>> = vec![Vec::new(); n];
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let loading = progress_bar(args.duration_secs * 1000, "load (ms)");
    while Instant::now() < deadline && next < signed.len() {
        tick.tick().await;
        if !loading.is_hidden() {
            loading.set_position(started.elapsed().as_millis() as u64);
            loading.set_message(format!(
                "accepted {} · committed {} · refused {}",
                submitted.load(Ordering::Relaxed),
                tracker.lock().committed.len(),
                overloaded.load(Ordering::Relaxed)
            ));
        }
        let due = match args.rate {
            Some(r) => ((started.elapsed().as_secs_f64() * r as f64) as usize).min(signed.len()),
            // As fast as possible: keep at most two seconds of the default rate in flight.
            None => {
                let in_flight = tracker.lock().sent.len();
                (next + 40_000usize.saturating_sub(in_flight)).min(signed.len())
            }
        };
        while next < due {
            let (account, tx, digest) = &signed[next];
            let node = account % n;
            pending[node].push((tx.clone(), *digest));
            if pending[node].len() >= args.batch {
                let _ = senders[node].send(std::mem::take(&mut pending[node])).await;
            }
            next += 1;
        }
        for (node, p) in pending.iter_mut().enumerate() {
            if !p.is_empty() {
                let _ = senders[node].send(std::mem::take(p)).await;
            }
        }
    }
    let load_secs = started.elapsed().as_secs_f64();
    drop(senders);
    for w in workers {
        let _ = w.await;
    }
    loading.finish_and_clear();
    // Wait for the stragglers.
    let drain_until = Instant::now() + Duration::from_secs(args.drain_secs);
    let draining = progress_bar(args.drain_secs * 1000, "drain (ms)");
    let drain_started = Instant::now();
    while Instant::now() < drain_until {
        let awaiting = tracker.lock().sent.len();
        if awaiting == 0 {
            break;
        }
        draining.set_position(drain_started.elapsed().as_millis() as u64);
        draining.set_message(format!("{awaiting} awaiting a receipt"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    draining.finish_and_clear();
    listener.abort();

    let t = tracker.lock();
    let window_end = started + Duration::from_secs_f64(load_secs);
    let in_window = t
        .committed
        .iter()
        .filter(|(at, _)| *at <= window_end)
        .count();
    let mut latencies: Vec<f64> = t
        .committed
        .iter()
        .map(|(_, l)| l.as_secs_f64() * 1e3)
        .collect();
    latencies.sort_by(f64::total_cmp);
    Ok(BenchReport {
        tps: in_window as f64 / load_secs.max(1e-9),
        p50_ms: percentile(&latencies, 0.50),
        p90_ms: percentile(&latencies, 0.90),
        p99_ms: percentile(&latencies, 0.99),
        submitted: submitted.load(Ordering::Relaxed),
        committed: t.committed.len() as u64,
        overloaded: overloaded.load(Ordering::Relaxed),
        unfinished: t.sent.len() as u64,
        bound,
    })
}
