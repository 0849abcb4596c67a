//! `keel tx`: sign and submit one transaction from a key file, or query the API.

use crate::{client::Client, genesis::read_key};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use keel_api::dto::{ObjectJson, TransactionStatusJson};
use keel_types::{Address, ChainId, Nonce, Op, TimestampMs, Transaction};
use std::path::PathBuf;

/// `keel tx` arguments.
#[derive(Args, Debug)]
pub struct TxArgs {
    /// Public API URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    #[command(subcommand)]
    command: TxCommand,
}

/// Waiting for a submitted transaction's receipt.
#[derive(Args, Debug, Clone, Copy)]
struct WaitArgs {
    /// Wait for the receipt and print it (exits non-zero if the transaction failed or was
    /// discarded).
    #[arg(long)]
    wait: bool,
    /// Seconds `--wait` waits before giving up.
    #[arg(long, default_value_t = DEFAULT_WAIT_SECS)]
    wait_secs: u64,
}

/// Default of `--wait-secs`.
const DEFAULT_WAIT_SECS: u64 = 30;
/// How often `--wait` asks for the receipt.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Subcommand, Debug)]
enum TxCommand {
    /// Transfer to an address.
    Transfer {
        /// Sender key file (64 hex characters).
        #[arg(long)]
        key: PathBuf,
        /// Recipient address (hex).
        #[arg(long)]
        to: String,
        /// Amount.
        #[arg(long)]
        amount: u64,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Create or overwrite one of the sender's objects.
    Put {
        /// Sender key file.
        #[arg(long)]
        key: PathBuf,
        /// Object key (UTF-8).
        #[arg(long)]
        name: String,
        /// Value (UTF-8).
        #[arg(long)]
        value: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete one of the sender's objects.
    Delete {
        /// Sender key file.
        #[arg(long)]
        key: PathBuf,
        /// Object key (UTF-8).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// A transaction's status and receipt.
    Status {
        /// Transaction digest (hex).
        digest: String,
    },
    /// An account.
    Account {
        /// Address (hex), or a key file with --key.
        address: Option<String>,
        /// Key file whose account to show.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// An object (its value printed as text when it is UTF-8).
    Object {
        /// Owner address (hex).
        owner: String,
        /// Object key (UTF-8).
        name: String,
    },
}

async fn sign_and_submit(
    client: &Client,
    key: &std::path::Path,
    ops: Vec<Op>,
    wait: WaitArgs,
) -> Result<()> {
    let key = read_key(key)?;
    let address = Address::from_public_key(&key.public());
    let status = client.status().await?;
    let account = client.account(&address).await?;
    let tx = Transaction {
        chain_id: ChainId(status.chain_id),
        sender: key.public(),
        nonce: Nonce(account.nonce),
        expiry: TimestampMs(crate::clock::now_ms().0 + 60_000),
        ops,
    }
    .sign(&key);
    let answer = client.submit_json(&tx).await?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    if wait.wait {
        wait_for_receipt(client, &tx.digest().to_string(), wait.wait_secs).await?;
    }
    Ok(())
}

/// Polls the transaction until its block is executed, prints the answer, and fails unless
/// the receipt says `success`.
async fn wait_for_receipt(client: &Client, digest: &str, secs: u64) -> Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    let path = format!("/v1/transactions/{digest}");
    loop {
        // 404: not known to the node at this moment (forgotten from a full pending set before
        // its block executed); keep asking until the deadline.
        let answer: Option<TransactionStatusJson> = client.get_json_or_none(&path).await?;
        if let Some(answer) = answer.filter(|a| a.status != "pending") {
            println!("{}", serde_json::to_string_pretty(&answer)?);
            return match &answer.receipt {
                Some(r) if r.status == "success" => Ok(()),
                Some(r) => anyhow::bail!(
                    "transaction {digest} {}: {}",
                    r.status,
                    r.reason.as_deref().unwrap_or("no reason given")
                ),
                None => anyhow::bail!("transaction {digest}: {} without a receipt", answer.status),
            };
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("transaction {digest} still pending after {secs} s (--wait-secs)");
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// Runs a `keel tx` command.
pub async fn run(args: TxArgs) -> Result<()> {
    let client = Client::new(&args.api)?;
    match args.command {
        TxCommand::Transfer {
            key,
            to,
            amount,
            wait,
        } => {
            let to: Address = to.parse().context("--to")?;
            sign_and_submit(&client, &key, vec![Op::Transfer { to, amount }], wait).await
        }
        TxCommand::Put {
            key,
            name,
            value,
            wait,
        } => {
            let op = Op::Put {
                key: name.into_bytes(),
                value: value.into_bytes(),
            };
            sign_and_submit(&client, &key, vec![op], wait).await
        }
        TxCommand::Delete { key, name, wait } => {
            let op = Op::Delete {
                key: name.into_bytes(),
            };
            sign_and_submit(&client, &key, vec![op], wait).await
        }
        TxCommand::Status { digest } => {
            let v = client
                .get_value(&format!("/v1/transactions/{digest}"))
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        TxCommand::Account { address, key } => {
            let address: Address = match (address, key) {
                (Some(a), _) => a.parse().context("address")?,
                (None, Some(k)) => Address::from_public_key(&read_key(&k)?.public()),
                (None, None) => anyhow::bail!("give an address or --key"),
            };
            let a = client.account(&address).await?;
            println!("{}", serde_json::to_string_pretty(&a)?);
            Ok(())
        }
        TxCommand::Object { owner, name } => {
            let owner: Address = owner.parse().context("owner")?;
            let object: ObjectJson = client
                .get_json(&format!(
                    "/v1/objects/{owner}/{}",
                    hex::encode(name.as_bytes())
                ))
                .await?;
            let mut shown = serde_json::to_value(&object)?;
            let text = hex::decode(&object.value)
                .ok()
                .and_then(|v| String::from_utf8(v).ok());
            if let Some(text) = text {
                shown["text"] = serde_json::Value::String(text);
            }
            println!("{}", serde_json::to_string_pretty(&shown)?);
            Ok(())
        }
    }
}
