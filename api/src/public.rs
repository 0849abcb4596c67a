//! The public router.

use crate::{
    NodeApi, SubmitError,
    dto::{
        AccountJson, BatchSubmitJson, CheckpointJson, CommittedJson, CommitteeJson, MemberJson,
        ObjectJson, SubmitResultJson, TransactionJson, TransactionStatusJson, TxLookup,
        parse_digest,
    },
    error::ApiError,
    openapi::{OPENAPI_PATH, openapi_document},
};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, Path, State,
        rejection::{BytesRejection, JsonRejection},
    },
    http::{StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use futures_util::{Stream, StreamExt};
use keel_types::{
    Address, Height, MAX_KEY_LEN, MAX_TRANSACTION_BYTES, SignedTransaction, encoding::decode,
};
use std::{convert::Infallible, sync::Arc};
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

/// Largest JSON transaction body.
pub const MAX_JSON_BODY: usize = 4 * MAX_TRANSACTION_BYTES;
/// Largest binary batch body.
pub const MAX_BATCH_BODY: usize = 16 << 20;
/// Most transactions in one batch submission.
pub const MAX_BATCH_TRANSACTIONS: usize = 10_000;

type Api = Arc<dyn NodeApi>;

/// The public API.
pub fn public_router(node: Api) -> Router {
    Router::new()
        .route(
            "/v1/transactions",
            post(submit_one).layer(DefaultBodyLimit::max(MAX_JSON_BODY)),
        )
        .route(
            "/v1/transactions/batch",
            post(submit_batch).layer(DefaultBodyLimit::max(MAX_BATCH_BODY)),
        )
        .route("/v1/transactions/{digest}", get(transaction))
        .route("/v1/accounts/{address}", get(account))
        .route("/v1/objects/{owner}/{key}", get(object))
        .route("/v1/blocks/latest", get(latest_block))
        .route("/v1/blocks/{height}", get(block))
        .route("/v1/checkpoints/latest", get(latest_checkpoint))
        .route("/v1/checkpoints/{sequence}", get(checkpoint))
        .route("/v1/status", get(status))
        .route("/v1/committee", get(committee))
        .route("/", get(status_page))
        .route("/v1/stream", get(stream))
        .route(OPENAPI_PATH, get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .with_state(node)
}

/// The status page: one self-contained HTML document (inline style and script, no external
/// asset) that reads this node's public API from the browser.
const STATUS_PAGE: &str = include_str!("status_page.html");

async fn status_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Nothing but this document's own inline code and same-origin API reads.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
        ],
        STATUS_PAGE,
    )
        .into_response()
}

async fn committee(State(node): State<Api>) -> Result<Json<CommitteeJson>, ApiError> {
    let (epoch, peers, consensus) =
        run_blocking(move || (node.epoch(), node.peers(), node.consensus())).await?;
    let epoch = epoch.map_err(ApiError::internal)?;
    let members = epoch
        .committee
        .iter()
        .map(|v| {
            let this_node = epoch.validator == Some(v.index);
            let reputation = consensus
                .reputations
                .iter()
                .find(|r| r.validator == v.index);
            MemberJson {
                index: v.index,
                protocol_key: v.protocol_key.clone(),
                stake: v.stake,
                this_node,
                connected: this_node || peers.iter().any(|p| p.validator == v.index && p.connected),
                proposed: reputation.map(|r| r.proposed),
                voted: reputation.map(|r| r.voted),
                failed: reputation.map(|r| r.failed),
            }
        })
        .collect();
    Ok(Json(CommitteeJson {
        epoch: epoch.epoch,
        members,
    }))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see the OpenAPI document at /v1/openapi.json")
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Invalid(m) => ApiError::bad_request(m),
        SubmitError::Overloaded(m) => ApiError::overloaded(m),
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)
}

async fn submit_one(
    State(node): State<Api>,
    body: Result<Json<TransactionJson>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(json) = body?;
    let tx = json.to_signed()?;
    let mut results = run_blocking(move || node.submit(vec![tx])).await?;
    match results.pop() {
        Some(Ok(digest)) => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "digest": digest.to_string() })),
        )
            .into_response()),
        Some(Err(e)) => Err(submit_error(e)),
        None => Err(ApiError::internal("submit returned no result")),
    }
}

async fn submit_batch(
    State(node): State<Api>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    if body.len() > MAX_BATCH_BODY {
        return Err(ApiError::too_large(format!(
            "batch body is {} bytes, the limit is {MAX_BATCH_BODY}",
            body.len()
        )));
    }
    let txs: Vec<SignedTransaction> =
        decode(&body, MAX_BATCH_BODY, "transaction batch").map_err(|e| {
            ApiError::bad_request(format!("body: expected bcs Vec<SignedTransaction>: {e}"))
        })?;
    if txs.is_empty() || txs.len() > MAX_BATCH_TRANSACTIONS {
        return Err(ApiError::bad_request(format!(
            "body: {} transactions, expected 1..={MAX_BATCH_TRANSACTIONS}",
            txs.len()
        )));
    }
    let results = run_blocking(move || node.submit(txs)).await?;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let all_overloaded = results
        .iter()
        .all(|r| matches!(r, Err(SubmitError::Overloaded(_))));
    let body = BatchSubmitJson {
        accepted,
        results: results
            .into_iter()
            .map(|r| match r {
                Ok(d) => SubmitResultJson {
                    digest: Some(d.to_string()),
                    error: None,
                },
                Err(e) => SubmitResultJson {
                    digest: None,
                    error: Some(submit_error(e).body),
                },
            })
            .collect(),
    };
    let status = if all_overloaded {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::OK
    };
    Ok((status, Json(body)).into_response())
}

async fn transaction(
    State(node): State<Api>,
    Path(digest): Path<String>,
) -> Result<Json<TransactionStatusJson>, ApiError> {
    let digest = parse_digest(&digest)?;
    let (lookup, retained_from) = run_blocking(move || {
        let lookup = node.transaction(&digest)?;
        let retained_from = match lookup {
            TxLookup::Unknown => Some(node.retained_from()?),
            _ => None,
        };
        Ok::<_, String>((lookup, retained_from))
    })
    .await?
    .map_err(ApiError::internal)?;
    match lookup {
        TxLookup::Executed(receipt) => Ok(Json(TransactionStatusJson::from(&receipt))),
        TxLookup::Pending => Ok(Json(TransactionStatusJson {
            digest: digest.to_string(),
            status: "pending".into(),
            receipt: None,
        })),
        // A receipt is keyed by transaction, not height: a pruned one cannot be told from one
        // that never existed, so the answer says it may have been pruned.
        TxLookup::Unknown => Err(ApiError::not_found(match retained_from {
            Some(r) if r.0 > 1 => format!(
                "transaction {digest} is not known to this node; it may have been executed \
                 before height {r}, whose receipts this node has pruned"
            ),
            _ => format!("transaction {digest} is not known to this node"),
        })),
    }
}

fn parse_address(s: &str, field: &str) -> Result<Address, ApiError> {
    s.parse()
        .map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
}

async fn account(
    State(node): State<Api>,
    Path(address): Path<String>,
) -> Result<Json<AccountJson>, ApiError> {
    let address = parse_address(&address, "address")?;
    let account = run_blocking(move || node.account(&address))
        .await?
        .map_err(ApiError::internal)?;
    Ok(Json(AccountJson::new(&address, &account)))
}

async fn object(
    State(node): State<Api>,
    Path((owner, key)): Path<(String, String)>,
) -> Result<Json<ObjectJson>, ApiError> {
    let owner = parse_address(&owner, "owner")?;
    let key = hex::decode(&key).map_err(|e| ApiError::bad_request(format!("key: not hex: {e}")))?;
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ApiError::bad_request(format!(
            "key: {} bytes, must be 1..={MAX_KEY_LEN}",
            key.len()
        )));
    }
    let k = key.clone();
    let found = run_blocking(move || node.object(&owner, &k))
        .await?
        .map_err(ApiError::internal)?;
    match found {
        Some(object) => Ok(Json(ObjectJson::new(&owner, &key, &object))),
        None => Err(ApiError::not_found(format!(
            "object {} of {owner} does not exist",
            hex::encode(&key)
        ))),
    }
}

async fn block_at(node: Api, height: Option<Height>) -> Result<Response, ApiError> {
    // The block first, then the lowest retained height: the pruner deletes a block and raises
    // that height in one write, so a missing block below it was pruned, never "not yet".
    let (found, retained_from) = run_blocking(move || {
        let found = node.block(height)?;
        let retained_from = match found {
            None => Some(node.retained_from()?),
            Some(_) => None,
        };
        Ok::<_, String>((found, retained_from))
    })
    .await?
    .map_err(ApiError::internal)?;
    match (found, height, retained_from) {
        (Some(b), _, _) => Ok(Json(b).into_response()),
        (None, Some(h), Some(r)) if h.0 > 0 && h < r => Err(ApiError::gone(format!(
            "block at height {h} was pruned; this node keeps heights {r} and above"
        ))),
        (None, Some(h), _) => Err(ApiError::not_found(format!(
            "no committed block at height {h}"
        ))),
        (None, None, _) => Err(ApiError::not_found("no block committed yet")),
    }
}

async fn block(State(node): State<Api>, Path(height): Path<String>) -> Result<Response, ApiError> {
    let height: u64 = height.parse().map_err(|e| {
        ApiError::bad_request(format!("height: expected a number or `latest`: {e}"))
    })?;
    block_at(node, Some(Height(height))).await
}

async fn latest_block(State(node): State<Api>) -> Result<Response, ApiError> {
    block_at(node, None).await
}

async fn checkpoint_at(node: Api, sequence: Option<u64>) -> Result<Response, ApiError> {
    let found = run_blocking(move || node.checkpoint(sequence))
        .await?
        .map_err(ApiError::internal)?;
    match found {
        Some(c) => Ok(Json(CheckpointJson::from(&c)).into_response()),
        None => Err(ApiError::not_found(match sequence {
            Some(s) => format!("no certified checkpoint with sequence {s} on this node"),
            None => "no checkpoint certified yet".into(),
        })),
    }
}

async fn checkpoint(
    State(node): State<Api>,
    Path(sequence): Path<String>,
) -> Result<Response, ApiError> {
    let sequence: u64 = sequence.parse().map_err(|e| {
        ApiError::bad_request(format!("sequence: expected a number or `latest`: {e}"))
    })?;
    checkpoint_at(node, Some(sequence)).await
}

async fn latest_checkpoint(State(node): State<Api>) -> Result<Response, ApiError> {
    checkpoint_at(node, None).await
}

async fn status(State(node): State<Api>) -> Result<Response, ApiError> {
    let status = run_blocking(move || node.status())
        .await?
        .map_err(ApiError::internal)?;
    Ok(Json(status).into_response())
}

/// Committed transactions as server-sent events: one `transaction` event per receipt; a
/// subscriber too slow to keep up gets a `lagged` event with the number of blocks it missed.
async fn stream(
    State(node): State<Api>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let crate::Subscription { receipts, slot } = node.subscribe().map_err(ApiError::overloaded)?;
    let events = BroadcastStream::new(receipts).flat_map(|item| {
        let events: Vec<Result<Event, Infallible>> = match item {
            Ok(receipts) => receipts
                .iter()
                .map(|r| {
                    let json = serde_json::to_string(&CommittedJson::from(r)).unwrap_or_default();
                    Ok(Event::default().event("transaction").data(json))
                })
                .collect(),
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                vec![Ok(Event::default().event("lagged").data(n.to_string()))]
            }
        };
        futures_util::stream::iter(events)
    });
    // The slot lives as long as the stream: it is given back when the client goes away.
    let events = events.map(move |event| {
        let _held = &slot;
        event
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

async fn openapi() -> Response {
    Json(openapi_document()).into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(node): State<Api>) -> Result<&'static str, ApiError> {
    node.readiness().map_err(ApiError::not_ready)?;
    Ok("ready")
}

async fn metrics(State(node): State<Api>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        node.metrics(),
    )
        .into_response()
}
