//! `keel admin`: the operator's side of the admin API. Reads the node's config for the admin
//! address and the token file, sends one request and prints the JSON answer.

use crate::{config::NodeConfig, genesis::read_key};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use keel_types::{ChainId, PossessionProof};
use std::path::PathBuf;

/// `keel admin` arguments.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The validator's config file (admin address and token file).
    #[arg(long)]
    config: PathBuf,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// The epoch: committee, pending and scheduled changes.
    Epoch,
    /// Vote to add a validator, from its key directory (as `keel keygen` writes it).
    AddValidator {
        /// The new validator's key directory (protocol.key, network.key).
        #[arg(long)]
        keys: PathBuf,
        /// The `host:port` its peers dial.
        #[arg(long)]
        address: String,
        /// Its stake.
        #[arg(long)]
        stake: u64,
        /// The chain id (signed into the proof of possession).
        #[arg(long)]
        chain_id: u64,
    },
    /// Vote to remove a validator (committee index or protocol key).
    RemoveValidator {
        /// Index or protocol key (hex).
        id: String,
    },
    /// Vote to set a validator's stake.
    SetStake {
        /// Index or protocol key (hex).
        id: String,
        /// The new stake.
        stake: u64,
    },
    /// Generate new keys for a rotation (both unless one is named); prints the staged public
    /// keys. Running it again prints the keys already staged.
    StageKeys {
        /// Rotate only the protocol key.
        #[arg(long, conflicts_with = "network_only")]
        protocol_only: bool,
        /// Rotate only the network key.
        #[arg(long)]
        network_only: bool,
    },
    /// Vote to rotate this validator's keys to the staged ones (they take effect at the next
    /// epoch).
    RotateKeys,
}

/// Runs one admin command.
pub async fn run(args: AdminArgs) -> Result<()> {
    let config = NodeConfig::load(&args.config)?;
    let token = crate::token::read_token(&config)?;
    let base = format!("http://{}", config.admin_listen);
    let http = reqwest::Client::new();
    let request = match args.command {
        AdminCommand::Epoch => http.get(format!("{base}/admin/epoch")),
        AdminCommand::AddValidator {
            keys,
            address,
            stake,
            chain_id,
        } => {
            let protocol = read_key(&keys.join("protocol.key"))?;
            let network = read_key(&keys.join("network.key"))?;
            let proof = PossessionProof::create(&protocol, &network, ChainId(chain_id));
            http.post(format!("{base}/admin/validators"))
                .json(&serde_json::json!({
                    "protocol_key": protocol.public().to_string(),
                    "network_key": network.public().to_string(),
                    "address": address,
                    "stake": stake,
                    "proof_protocol": hex::encode(proof.protocol.0),
                    "proof_network": hex::encode(proof.network.0),
                }))
        }
        AdminCommand::RemoveValidator { id } => {
            http.delete(format!("{base}/admin/validators/{id}"))
        }
        AdminCommand::SetStake { id, stake } => http
            .put(format!("{base}/admin/validators/{id}/stake"))
            .json(&serde_json::json!({ "stake": stake })),
        AdminCommand::StageKeys {
            protocol_only,
            network_only,
        } => http
            .post(format!("{base}/admin/keys/stage"))
            .json(&serde_json::json!({
                "protocol": !network_only,
                "network": !protocol_only,
            })),
        AdminCommand::RotateKeys => http.post(format!("{base}/admin/keys/rotate")),
    };
    let response = request
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach the admin API at {base}"))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .context("the admin API answered something that is not JSON")?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    if !status.is_success() {
        bail!("the admin API answered {status}");
    }
    Ok(())
}
