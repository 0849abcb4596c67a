//! `keel localnet`: N validator processes on this machine, with a live progress line.
//!
//! The first run writes keys, a genesis (with accounts derived from [`LOCALNET_SEED`], which
//! `keel bench` signs for by default) and one config per validator into the directory; later
//! runs reuse them, so the chain continues. Once every validator is ready, the public API URLs
//! are written to `DIR/apis.txt`, one per line. SIGINT or SIGTERM stops the validators
//! gracefully (SIGTERM, then SIGKILL after a grace period).
//!
//! For a new user the first run also funds [`USER_ACCOUNTS`] accounts with fresh keys and
//! writes `DIR/accounts/account-N.key` (the key, mode 0600, as `keel tx --key` reads it) and
//! `account-N.address` (its address), so a first transaction needs nothing else.

use crate::{
    bench::{self, BenchArgs},
    client::Client,
    config::NodeConfig,
    genesis::{DerivedAccounts, GenesisAccount, write_key},
    setup::{self, GenesisSpec, ValidatorSpec},
};
use anyhow::{Context, Result, bail};
use keel_types::{Address, KeyPair};
use nix::{sys::signal::Signal, unistd::Pid};
use std::{
    io::{IsTerminal, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use tokio::process::{Child, Command};

/// Seed of the localnet's funded accounts.
pub const LOCALNET_SEED: &str = "keel-localnet";
/// How many accounts the localnet funds.
pub const LOCALNET_ACCOUNTS: u64 = 20_000;
/// Accounts with fresh keys the localnet funds for its user (key files in `DIR/accounts/`),
/// apart from the seed-derived ones `keel bench` signs for.
pub const USER_ACCOUNTS: usize = 3;
/// Each user account's balance.
pub const USER_BALANCE: u64 = 1_000_000_000;
/// Subdirectory of the user accounts' key and address files.
pub const ACCOUNTS_DIR: &str = "accounts";
const API_OFFSET: u16 = 100;
const ADMIN_OFFSET: u16 = 200;

/// `keel localnet` arguments.
#[derive(Debug, Clone)]
pub struct LocalnetArgs {
    /// Validators.
    pub validators: usize,
    /// Directory for keys, configs, data and logs.
    pub dir: PathBuf,
    /// Optional built-in load (transactions per second).
    pub load: Option<u64>,
    /// First port (p2p ports from here, APIs +100, admin +200); a free range is chosen if unset.
    pub base_port: Option<u16>,
}

fn ports_free(base: u16, n: usize) -> bool {
    (0..n).all(|i| {
        let p = |off: u16| base.checked_add(off + i as u16);
        let (Some(p2p), Some(api), Some(admin)) = (p(0), p(API_OFFSET), p(ADMIN_OFFSET)) else {
            return false;
        };
        std::net::UdpSocket::bind(("127.0.0.1", p2p)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", api)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", admin)).is_ok()
    })
}

fn pick_base_port(n: usize, wanted: Option<u16>) -> Result<u16> {
    if let Some(base) = wanted {
        if !ports_free(base, n) {
            bail!(
                "--base-port {base}: ports {base}..{} are not all free",
                base as usize + ADMIN_OFFSET as usize + n
            );
        }
        return Ok(base);
    }
    for _ in 0..50 {
        let base = rand::random::<u16>() % 30_000 + 20_000;
        if ports_free(base, n) {
            return Ok(base);
        }
    }
    bail!("no free port range found; pass --base-port")
}

/// Writes keys, genesis and configs for `n` validators into `dir` (if not there yet) and
/// returns the config paths.
pub fn prepare(dir: &Path, n: usize, base_port: Option<u16>) -> Result<Vec<PathBuf>> {
    if n == 0 || n > 64 {
        bail!("--validators: {n} is not in 1..=64");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let existing: Vec<PathBuf> = (0..n)
        .map(|i| dir.join(format!("validator-{i}.toml")))
        .collect();
    if dir.join("genesis.json").exists() {
        if existing.iter().all(|p| p.exists()) {
            return Ok(existing);
        }
        bail!(
            "{} holds a genesis for another number of validators; use another --dir",
            dir.display()
        );
    }
    let base = pick_base_port(n, base_port)?;
    let mut validators = Vec::new();
    for i in 0..n {
        let key_dir = dir.join("keys").join(format!("validator-{i}"));
        setup::keygen(&key_dir)?;
        validators.push(ValidatorSpec {
            name: format!("validator-{i}"),
            key_dir,
            p2p: SocketAddr::from(([127, 0, 0, 1], base + i as u16)).into(),
            stake: 1,
        });
    }
    let accounts = write_user_accounts(&dir.join(ACCOUNTS_DIR))?;
    setup::genesis(
        &GenesisSpec {
            chain_id: 1,
            validators,
            accounts,
            derived: Some(DerivedAccounts {
                seed: LOCALNET_SEED.into(),
                count: LOCALNET_ACCOUNTS,
                balance: 1_000_000_000_000,
            }),
            api_port_offset: API_OFFSET,
            admin_port_offset: ADMIN_OFFSET,
            layout: None,
            fees: keel_types::FeeSchedule {
                per_op: crate::genesis::DEFAULT_FEE_PER_OP,
                per_byte: crate::genesis::DEFAULT_FEE_PER_BYTE,
            },
        },
        dir,
    )
}

/// Generates the user accounts' keys into `dir` and returns their genesis entries.
fn write_user_accounts(dir: &Path) -> Result<Vec<GenesisAccount>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut rng = rand::rngs::OsRng;
    (0..USER_ACCOUNTS)
        .map(|i| {
            let key = KeyPair::generate(&mut rng);
            let address = Address::from_public_key(&key.public()).to_string();
            write_key(&dir.join(format!("account-{i}.key")), &key)?;
            let path = dir.join(format!("account-{i}.address"));
            std::fs::write(&path, format!("{address}\n"))
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(GenesisAccount {
                address,
                balance: USER_BALANCE,
            })
        })
        .collect()
}

fn spawn_validator(config: &Path, log: &Path) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot find the keel binary")?;
    let log_file =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err_file = log_file.try_clone()?;
    Command::new(exe)
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(log_file)
        .stderr(err_file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start a validator with {}", config.display()))
}

/// Sends SIGTERM to every child and waits; SIGKILL after `grace`.
pub async fn stop_all(children: &mut [Child], grace: Duration) {
    for c in children.iter() {
        if let Some(pid) = c.id() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    for c in children.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, c.wait()).await.is_err() {
            let _ = c.kill().await;
        }
    }
}

/// Runs the localnet until SIGINT or SIGTERM.
pub async fn run(args: LocalnetArgs) -> Result<()> {
    let configs = prepare(&args.dir, args.validators, args.base_port)?;
    let mut apis = Vec::new();
    let mut children = Vec::new();
    for (i, path) in configs.iter().enumerate() {
        let config = NodeConfig::load(path)?;
        apis.push(format!("http://{}", config.api_listen));
        children.push(spawn_validator(
            path,
            &args.dir.join(format!("validator-{i}.log")),
        )?);
    }
    let clients: Vec<Client> = apis.iter().map(|a| Client::new(a)).collect::<Result<_>>()?;
    let ready_by = Instant::now() + Duration::from_secs(120);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    for (i, c) in clients.iter().enumerate() {
        loop {
            if c.ready().await {
                break;
            }
            if let Ok(Some(status)) = children[i].try_wait() {
                stop_all(&mut children, Duration::from_secs(10)).await;
                bail!(
                    "validator {i} exited ({status}) before it was ready; see {}",
                    args.dir.join(format!("validator-{i}.log")).display()
                );
            }
            if Instant::now() > ready_by {
                stop_all(&mut children, Duration::from_secs(10)).await;
                bail!("validator {i} was not ready within 120 s");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = tokio::signal::ctrl_c() => { stop_all(&mut children, Duration::from_secs(15)).await; return Ok(()); }
                _ = term.recv() => { stop_all(&mut children, Duration::from_secs(15)).await; return Ok(()); }
            }
        }
    }
    std::fs::write(args.dir.join("apis.txt"), apis.join("\n") + "\n")?;
    println!(
        "localnet: {} validators ready; APIs listed in {} (logs: {}/validator-N.log); Ctrl-C stops",
        args.validators,
        args.dir.join("apis.txt").display(),
        args.dir.display()
    );
    let accounts = args.dir.join(ACCOUNTS_DIR);
    if accounts.is_dir() {
        println!(
            "localnet: funded accounts for you: {}/account-N.key (key) and account-N.address",
            accounts.display()
        );
    }

    let load = args.load.map(|rate| {
        let apis = apis.clone();
        tokio::spawn(async move {
            loop {
                let report = bench::run(BenchArgs {
                    apis: apis.clone(),
                    duration_secs: 30,
                    rate: Some(rate),
                    seed: LOCALNET_SEED.into(),
                    accounts: LOCALNET_ACCOUNTS,
                    batch: 500,
                    drain_secs: 5,
                })
                .await;
                match report {
                    Ok(r) => println!("\nload: {r}"),
                    Err(e) => {
                        eprintln!("\nload: {e:#}");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            }
        })
    });

    let terminal = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last: Option<(Instant, u64)> = None;
    let mut lines = 0u64;
    let mut exited = vec![false; children.len()];
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
        for (i, c) in children.iter_mut().enumerate() {
            if exited[i] {
                continue;
            }
            if let Ok(Some(status)) = c.try_wait() {
                exited[i] = true;
                eprintln!(
                    "\nlocalnet: validator {i} exited ({status}); see {}",
                    args.dir.join(format!("validator-{i}.log")).display()
                );
            }
        }
        if exited.iter().all(|e| *e) {
            bail!("every validator exited");
        }
        let Ok(status) = clients[0].status().await else {
            continue;
        };
        let now = Instant::now();
        let tps = last.map_or(0.0, |(t, n)| {
            status.executed_transactions.saturating_sub(n) as f64
                / now.duration_since(t).as_secs_f64()
        });
        last = Some((now, status.executed_transactions));
        let line = format!(
            "height {:>7}  round {:>7}  committed tps {:>7.0}  peers {}/{}  mempool {}",
            status.executed_height,
            status.round,
            tps,
            status.peers,
            args.validators.saturating_sub(1),
            status.mempool_size
        );
        if terminal {
            print!("\r{line}   ");
        } else if lines.is_multiple_of(5) {
            println!("{line}");
        }
        lines += 1;
        let _ = std::io::stdout().flush();
    }
    if let Some(l) = load {
        l.abort();
    }
    println!("\nlocalnet: stopping");
    stop_all(&mut children, Duration::from_secs(15)).await;
    println!("localnet: stopped");
    Ok(())
}
