//! `keel`: the Keel validator node and its tools.
//!
//! ```text
//!  keel keygen      → protocol.key + network.key (0600)
//!  keel genesis     → genesis.json + NAME.toml + NAME.token per validator
//!  keel run         → config → storage → channels → p2p → start-up state sync → tasks → wait
//!  keel config show → the effective config, every default filled in
//!  keel localnet    → N `keel run` processes on this machine, progress line, apis.txt
//!  keel bench       → signed transfers at a rate, submit→commit latency percentiles
//!  keel tx          → sign and submit one transaction from a key file; queries
//!  keel status      → a node's heights, load and committee links, from its public API
//!  keel doctor      → config, genesis, key permissions, disk, ports, clock against peers
//! ```
//!
//! # Tasks and channels of `keel run`
//!
//! Each long-lived component is a task that owns its state and is built from its own `…Deps`
//! struct (`service.rs` only wires). Every channel is bounded by a `[limits]` field; the
//! policy when it is full is written beside each arrow.
//!
//! ```text
//!  QUIC ─▶ router (p2p handler: decode + forward, never waits)
//!           ├─ consensus msg ─[consensus_queue, try_send: drop+count]──────────▶ driver
//!           ├─ batch ─[batch_verify_queue, each author its share, try_send: drop+count]─▶ batch verifier (blocking pool,
//!           │       batch_verifiers at once): author's quota in the batch ledger (over: refuse
//!           │       unverified); acknowledged lately: same ack again; designated verifier or
//!           │       a copy already held: verify, store synced, then ack ─▶ QUIC; otherwise
//!           │       store unverified, unsynced, no ack
//!           ├─ proof ─[proof_verify_queue, try_send: drop+count]─▶ proof verifier ─┐
//!           │                    [proof_queue, try_send: drop+count] ◀─────────────┘
//!           │                                                     ▼
//!           └─ ack ─[ack_queue, try_send: drop+count]─▶ batching ─[proof_queue, send: waits]─▶ driver
//!  API submit ─(429 while the oldest pending has waited > admission_max_wait_ms)─▶ mempool
//!               (Arc<Mutex>, bounded, 429 when full) ◀─take─ batching ─store, then
//!                                                                broadcast batch/proof ─▶ QUIC
//!  driver: owns Core + proof queue; precheck → verify → Core::handle → actions (synced safety
//!          write before votes/timeouts, blocks, commits) ─▶ QUIC
//!          fetch tasks ─[fetched_queue, send: waits]─▶ driver
//!          commits ─▶ committed watch (latest value) ─▶ execution thread
//!  execution thread: owns Executor; store ─▶ execute ─▶ status watch, receipts broadcast
//!          [receipt_stream_buffer: a slow subscriber skips the oldest], pending set
//!          executed heights ─[checkpoint_queue, send: waits]─▶ checkpoint task
//!  router ─ checkpoint signature ─[checkpoint_signature_queue, try_send: drop+count]─▶
//!          checkpoint task: owns CheckpointMachine; store own signature, then broadcast ─▶ QUIC;
//!          certified checkpoints ─▶ store (meta column) ─▶ router, API
//!  start-up (before the tasks): bootstrap state sync when far behind the latest certified
//!          checkpoint or pruned out: peers' checkpoints ─▶ StateSync ─▶ staging ─▶ install
//!  snapshot thread: holds state snapshots at the last limits.state_snapshots checkpoint
//!          heights (taken by the execution thread) ◀─ router's state summary/chunk answers
//!  sync task: every check_interval_ms asks peers' committed heights; far behind ─[sync_control_queue,
//!          send: waits]─▶ driver (pause → applied heights → resume with a rebuilt core);
//!          range requests as tasks (≤ sync.max_in_flight) ─▶ store (blocks, batches)
//!  status watch (round, heights, roots, sync, last progress) ◀─ driver, execution, sync; ─▶ API
//!  gauges task: endpoint and mempool gauges every gauges_interval_ms
//!  pruner task: every pruning.interval_ms, status watch (executed) + checkpoint floor watch
//!          ─▶ deletes heights below executed − keep_blocks (blocking pool, bounded per pass)
//!  batch ledger task: committed watch ─▶ reads the new committed blocks ─▶ BatchLedger (shared
//!          with the batch verifier and batching under a short lock): ordered batches leave it,
//!          batches expired unordered by the committed time are deleted
//! ```
//!
//! # What survives a power loss
//!
//! Everything this node promises to others is fsynced before the promise leaves:
//! - votes, timeouts and proposals: the safety data is written synced first; RocksDB has one
//!   write-ahead log, so that sync also makes durable every earlier write, the block voted for
//!   included;
//! - batch acknowledgements: the batch (with its ledger entry) is written synced before the
//!   acknowledgement is signed away; own batches likewise before they are broadcast (a peer's
//!   batch held unverified, with no acknowledgement, is written unsynced: nothing was promised);
//! - batch sequence reservations and epoch starts: synced;
//! - receipts streamed to clients are *derived*: execution is deterministic over the committed
//!   chain, which is durable through the blocks above (and held by the committee), so after a
//!   power loss the node re-executes and produces the same receipts. `storage.sync_commits`
//!   also syncs each executed state commit (one fsync per block) for operators who want the
//!   state itself durable.
//!
//! Shutdown: one cancellation token reaches every task; `run` waits for each with a grace
//! period, then closes the endpoint, joins the execution thread and flushes the store.
//!
//! This crate only wires: every protocol decision lives in the library crates. It is the only
//! crate that reads files and the environment.

#![forbid(unsafe_code)]

mod admin;
mod api_view;
mod batch_gc;
mod batching;
mod bench;
mod bootstrap;
mod checkpoint;
mod client;
mod clock;
mod config;
mod doctor;
mod driver;
mod epoch;
mod execute;
mod faults;
mod gauges;
mod genesis;
mod governance;
mod keys;
mod limits;
mod localnet;
mod metrics;
mod payload;
mod peers;
mod pending;
mod persist;
mod progress;
mod prune;
mod router;
mod service;
mod setup;
mod snapshots;
mod status;
mod summary;
mod sync;
mod token;
mod tx;
mod verify;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, reload, util::SubscriberInitExt};

#[derive(Parser)]
#[command(name = "keel", version, about = "Keel BFT validator node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a validator's protocol and network keys.
    Keygen {
        /// Directory to write protocol.key, network.key (mode 0600) and public.json (the
        /// public keys, for whoever writes the genesis) into.
        #[arg(long)]
        out_dir: PathBuf,
        /// Write only public.json, from the keys already in --out-dir (keys made before
        /// public.json existed).
        #[arg(long)]
        export_public: bool,
    },
    /// Write a genesis file and one config per validator.
    Genesis {
        /// Output directory.
        #[arg(long)]
        out_dir: PathBuf,
        /// The chain id.
        #[arg(long, default_value_t = 1)]
        chain_id: u64,
        /// A validator: NAME=KEYDIR@HOST:PORT[/STAKE] (repeat). KEYDIR holds its keys, or only
        /// the public.json that `keel keygen` wrote beside them. HOST is an IP address (bound as
        /// given) or a host name (peers look it up at each dial; the node binds 0.0.0.0).
        #[arg(long = "validator", required = true)]
        validators: Vec<setup::ValidatorSpec>,
        /// Write one directory per validator (OUT_DIR/NAME/) to copy to NODE_DIR on its host;
        /// `{name}` in NODE_DIR stands for the validator's name. Without it, the configs name
        /// the files where they are on this machine.
        #[arg(long, value_name = "NODE_DIR")]
        node_dir: Option<String>,
        /// With --node-dir: each validator's data directory (default NODE_DIR/data).
        #[arg(long, requires = "node_dir")]
        data_dir: Option<String>,
        /// A funded account: ADDRESS:BALANCE (repeat).
        #[arg(long = "account")]
        accounts: Vec<String>,
        /// Fund COUNT accounts derived from SEED with BALANCE each: SEED:COUNT:BALANCE.
        #[arg(long)]
        derived_accounts: Option<String>,
        /// Public API port = p2p port + this.
        #[arg(long, default_value_t = 100)]
        api_port_offset: u16,
        /// Admin API port = p2p port + this (bound to 127.0.0.1).
        #[arg(long, default_value_t = 200)]
        admin_port_offset: u16,
        /// Fee every transaction pays per operation (governance votes are free).
        #[arg(long, default_value_t = genesis::DEFAULT_FEE_PER_OP)]
        fee_per_op: u64,
        /// Fee per byte of state an operation stores (an object's key and value).
        #[arg(long, default_value_t = genesis::DEFAULT_FEE_PER_BYTE)]
        fee_per_byte: u64,
    },
    /// Run a validator.
    Run {
        /// The validator's config file.
        #[arg(long)]
        config: PathBuf,
        /// The data directory was restored from a backup: its safety data may be older than
        /// what this validator signed, so it signs nothing until its peers' certificates show
        /// which rounds are safe (kept across restarts until then).
        #[arg(long)]
        restored_from_backup: bool,
    },
    /// Inspect a config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run N validators on this machine.
    Localnet {
        /// Number of validators.
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Directory for keys, configs, data and logs (reused across runs).
        #[arg(long, default_value = "localnet")]
        dir: PathBuf,
        /// Built-in load in transactions per second.
        #[arg(long)]
        load: Option<u64>,
        /// First port of the range used (default: a free range).
        #[arg(long)]
        base_port: Option<u16>,
    },
    /// Load-generate signed transfers and report throughput and latency.
    Bench {
        /// Public API URL (repeat for several nodes).
        #[arg(long = "api", required = true)]
        apis: Vec<String>,
        /// Seconds of load.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Target transactions per second (default: as fast as accepted).
        #[arg(long)]
        rate: Option<u64>,
        /// Seed of the genesis-derived accounts to sign for.
        #[arg(long, default_value = localnet::LOCALNET_SEED)]
        seed: String,
        /// Accounts to use.
        #[arg(long, default_value_t = localnet::LOCALNET_ACCOUNTS)]
        accounts: u64,
        /// Transactions per submitted batch.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Seconds to wait for the last commits.
        #[arg(long, default_value_t = 10)]
        drain: u64,
    },
    /// Sign and submit a transaction, or query.
    Tx(tx::TxArgs),
    /// A node's state in a few readable lines (heights, load, committee links), from its API.
    Status {
        /// Public API URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        /// Follow the node, one reading a second (a progress bar while it syncs) until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// With --watch: stop once the node follows the chain.
        #[arg(long, requires = "watch")]
        until_following: bool,
        /// With --until-following: give up (exit non-zero) after this many seconds.
        #[arg(long, requires = "until_following", value_name = "SECS")]
        timeout: Option<u64>,
        /// With --watch: milliseconds between readings.
        #[arg(long, requires = "watch", default_value_t = summary::WATCH_INTERVAL_MS,
              value_parser = clap::value_parser!(u64).range(50..=60_000))]
        interval_ms: u64,
    },
    /// Check a validator's setup: config, genesis, key permissions, data directory and free
    /// space, listen ports, clock against peers.
    Doctor(doctor::DoctorArgs),
    /// Ask this node (admin API) about the epoch, or to vote for a committee change.
    Admin(admin::AdminArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective config (validated, every default filled in, paths resolved).
    Show {
        /// The validator's config file.
        #[arg(long)]
        config: PathBuf,
    },
}

fn init_logging(format: &str, filter: &str) -> Result<api_view::LogReload> {
    let filter = EnvFilter::try_new(filter).context("config field `log.filter`")?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    if format == "json" {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init();
    }
    Ok(Box::new(move |f: &str| {
        let filter = EnvFilter::try_new(f).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    }))
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    builder.build().context("cannot start the async runtime")
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Keygen {
            out_dir,
            export_public: true,
        } => {
            let path = setup::export_public(&out_dir)?;
            println!("wrote {}", path.display());
        }
        Command::Keygen {
            out_dir,
            export_public: false,
        } => {
            let (protocol, network) = setup::keygen(&out_dir)?;
            println!("protocol key: {}", protocol.public());
            println!("network key:  {}", network.public());
            println!(
                "written to {}; send {} to whoever writes the genesis",
                out_dir.display(),
                out_dir.join(setup::PUBLIC_KEYS_FILE).display()
            );
        }
        Command::Genesis {
            out_dir,
            chain_id,
            validators,
            accounts,
            derived_accounts,
            api_port_offset,
            admin_port_offset,
            fee_per_op,
            fee_per_byte,
            node_dir,
            data_dir,
        } => {
            let layout = node_dir.map(|node_dir| setup::NodeLayout { node_dir, data_dir });
            let accounts = accounts
                .iter()
                .map(|a| {
                    let (address, balance) = a
                        .split_once(':')
                        .with_context(|| format!("--account `{a}`: expected ADDRESS:BALANCE"))?;
                    Ok(genesis::GenesisAccount {
                        address: address.into(),
                        balance: balance
                            .parse()
                            .with_context(|| format!("--account `{a}`: balance"))?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let derived = derived_accounts
                .map(|d| {
                    let parts: Vec<&str> = d.rsplitn(3, ':').collect();
                    let [balance, count, seed] = parts[..] else {
                        anyhow::bail!("--derived-accounts `{d}`: expected SEED:COUNT:BALANCE");
                    };
                    Ok(genesis::DerivedAccounts {
                        seed: seed.into(),
                        count: count
                            .parse()
                            .with_context(|| format!("--derived-accounts `{d}`: count"))?,
                        balance: balance
                            .parse()
                            .with_context(|| format!("--derived-accounts `{d}`: balance"))?,
                    })
                })
                .transpose()?;
            let configs = setup::genesis(
                &setup::GenesisSpec {
                    chain_id,
                    validators,
                    accounts,
                    derived,
                    api_port_offset,
                    admin_port_offset,
                    layout: layout.clone(),
                    fees: keel_types::FeeSchedule {
                        per_op: fee_per_op,
                        per_byte: fee_per_byte,
                    },
                },
                &out_dir,
            )?;
            println!("wrote {}", out_dir.join("genesis.json").display());
            for c in configs {
                println!("wrote {}", c.display());
            }
            if let Some(layout) = layout {
                println!(
                    "copy each {}/NAME/ to {} on that validator's host (keys/ holds its keys when \
                     they were given here; otherwise put them there), then run \
                     `keel run --config {}/{}`",
                    out_dir.display(),
                    layout.node_dir,
                    layout.node_dir,
                    setup::NODE_CONFIG_FILE
                );
            }
        }
        Command::Run {
            config,
            restored_from_backup,
        } => {
            let config = config::NodeConfig::load(&config)?;
            let reload = init_logging(&config.log.format, &config.log.filter)?;
            let rt = runtime(config.runtime_threads)?;
            let grace = std::time::Duration::from_secs(config.limits.shutdown_grace_secs);
            let result = rt.block_on(service::run(config, reload, restored_from_backup));
            // The store is closed by now; a blocking task still running (a peer's host-name
            // lookup the system resolver has not answered) must not hold the exit up.
            rt.shutdown_timeout(grace);
            result?;
        }
        Command::Config(ConfigCommand::Show { config }) => {
            print!("{}", config::NodeConfig::load(&config)?.to_toml()?);
        }
        Command::Localnet {
            validators,
            dir,
            load,
            base_port,
        } => {
            let rt = runtime(2)?;
            rt.block_on(localnet::run(localnet::LocalnetArgs {
                validators,
                dir,
                load,
                base_port,
            }))?;
        }
        Command::Bench {
            apis,
            duration,
            rate,
            seed,
            accounts,
            batch,
            drain,
        } => {
            let rt = runtime(2)?;
            let report = rt.block_on(bench::run(bench::BenchArgs {
                apis,
                duration_secs: duration,
                rate,
                seed,
                accounts,
                batch: batch.clamp(1, 10_000),
                drain_secs: drain,
            }))?;
            if report.overloaded > 0 {
                println!(
                    "bench: {} submissions refused as overloaded",
                    report.overloaded
                );
            }
            println!("{report}");
        }
        Command::Tx(args) => {
            let rt = runtime(1)?;
            rt.block_on(tx::run(args))?;
        }
        Command::Status {
            api,
            watch,
            until_following,
            timeout,
            interval_ms,
        } => {
            let rt = runtime(1)?;
            if watch {
                rt.block_on(summary::watch(
                    &api,
                    summary::Watch {
                        until_following,
                        timeout: timeout.map(std::time::Duration::from_secs),
                        interval: std::time::Duration::from_millis(interval_ms),
                    },
                ))?;
            } else {
                rt.block_on(summary::run(&api))?;
            }
        }
        Command::Doctor(args) => {
            let rt = runtime(1)?;
            rt.block_on(doctor::run(args))?;
        }
        Command::Admin(args) => {
            let rt = runtime(1)?;
            rt.block_on(admin::run(args))?;
        }
    }
    Ok(())
}
