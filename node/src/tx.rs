//! `keel tx`: sign and submit one transaction from a key file, or query the API.

use crate::{client::Client, genesis::read_key};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
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
    },
    /// Delete one of the sender's objects.
    Delete {
        /// Sender key file.
        #[arg(long)]
        key: PathBuf,
        /// Object key (UTF-8).
        #[arg(long)]
        name: String,
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
}

async fn sign_and_submit(client: &Client, key: &std::path::Path, ops: Vec<Op>) -> Result<()> {
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
    Ok(())
}

/// Runs a `keel tx` command.
pub async fn run(args: TxArgs) -> Result<()> {
    let client = Client::new(&args.api)?;
    match args.command {
        TxCommand::Transfer { key, to, amount } => {
            let to: Address = to.parse().context("--to")?;
            sign_and_submit(&client, &key, vec![Op::Transfer { to, amount }]).await
        }
        TxCommand::Put { key, name, value } => {
            let op = Op::Put {
                key: name.into_bytes(),
                value: value.into_bytes(),
            };
            sign_and_submit(&client, &key, vec![op]).await
        }
        TxCommand::Delete { key, name } => {
            let op = Op::Delete {
                key: name.into_bytes(),
            };
            sign_and_submit(&client, &key, vec![op]).await
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
    }
}
