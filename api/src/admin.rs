//! The admin router: every route requires `Authorization: Bearer <token>`. The token is
//! compared in constant time (as blake3 digests, so its length does not leak either).
//! Reconfiguration: `GET /admin/epoch`, and votes for committee changes
//! (`POST /admin/validators`, `DELETE /admin/validators/{id}`,
//! `PUT /admin/validators/{id}/stake`, `POST /admin/keys/rotate`), each answered with the
//! change's digest and the epoch in which it takes effect; repeating a request is harmless.
//! `POST /admin/keys/stage` generates the keys a rotation moves to (body optional: which keys).

use crate::{NodeApi, error::ApiError};
use axum::{
    Json, Router,
    extract::{Path, Request, State, rejection::JsonRejection},
    http::header,
    middleware::{self, Next},
    response::Response,
    routing::{delete, get, post, put},
};
use serde::Deserialize;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Largest admin request body.
pub const MAX_ADMIN_BODY: usize = 16 * 1024;

#[derive(Clone)]
struct AdminState {
    node: Arc<dyn NodeApi>,
    token_digest: [u8; 32],
}

/// The admin API, answering only requests bearing `token`.
pub fn admin_router(node: Arc<dyn NodeApi>, token: &str) -> Router {
    let state = AdminState {
        node,
        token_digest: *blake3::hash(token.as_bytes()).as_bytes(),
    };
    Router::new()
        .route("/admin/status", get(status))
        .route("/admin/peers", get(peers))
        .route("/admin/log-level", put(log_level))
        .route("/admin/shutdown", post(shutdown))
        .route("/admin/epoch", get(epoch))
        .route("/admin/validators", post(add_validator))
        .route("/admin/validators/{id}", delete(remove_validator))
        .route("/admin/validators/{id}/stake", put(set_stake))
        .route("/admin/keys/stage", post(stage_keys))
        .route("/admin/keys/rotate", post(rotate_keys))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_ADMIN_BODY))
        .with_state(state)
}

async fn authenticate(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>` header"))?;
    let digest = blake3::hash(presented.as_bytes());
    if !bool::from(digest.as_bytes().ct_eq(&state.token_digest)) {
        return Err(ApiError::unauthorized("invalid admin token"));
    }
    Ok(next.run(request).await)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such admin endpoint")
}

async fn status(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let node = state.node.clone();
    let status = tokio::task::spawn_blocking(move || {
        node.status().map(|status| crate::dto::AdminStatusJson {
            status,
            consensus: node.consensus(),
        })
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(axum::response::IntoResponse::into_response(Json(status)))
}

async fn peers(State(state): State<AdminState>) -> Json<Vec<crate::dto::PeerJson>> {
    Json(state.node.peers())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLevel {
    filter: String,
}

async fn log_level(
    State(state): State<AdminState>,
    body: Result<Json<LogLevel>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body?;
    state
        .node
        .set_log_level(&body.filter)
        .map_err(|e| ApiError::bad_request(format!("filter: {e}")))?;
    Ok(Json(serde_json::json!({ "filter": body.filter })))
}

async fn shutdown(State(state): State<AdminState>) -> Json<serde_json::Value> {
    state.node.shutdown();
    Json(serde_json::json!({ "shutting_down": true }))
}

async fn epoch(State(state): State<AdminState>) -> Result<Json<crate::dto::EpochJson>, ApiError> {
    let node = state.node.clone();
    let epoch = tokio::task::spawn_blocking(move || node.epoch())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(epoch))
}

async fn vote(
    state: AdminState,
    change: crate::dto::ChangeRequest,
) -> Result<Json<crate::dto::VoteJson>, ApiError> {
    let node = state.node.clone();
    let voted = tokio::task::spawn_blocking(move || node.vote(change))
        .await
        .map_err(ApiError::internal)?;
    match voted {
        Ok(vote) => Ok(Json(vote)),
        Err(crate::SubmitError::Invalid(m)) => Err(ApiError::bad_request(m)),
        Err(crate::SubmitError::Overloaded(m)) => Err(ApiError::overloaded(m)),
    }
}

async fn add_validator(
    State(state): State<AdminState>,
    body: Result<Json<crate::dto::AddValidatorJson>, JsonRejection>,
) -> Result<Json<crate::dto::VoteJson>, ApiError> {
    let Json(body) = body?;
    vote(state, crate::dto::ChangeRequest::Add(body)).await
}

async fn remove_validator(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<crate::dto::VoteJson>, ApiError> {
    vote(state, crate::dto::ChangeRequest::Remove { validator: id }).await
}

async fn set_stake(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Result<Json<crate::dto::StakeJson>, JsonRejection>,
) -> Result<Json<crate::dto::VoteJson>, ApiError> {
    let Json(body) = body?;
    vote(
        state,
        crate::dto::ChangeRequest::SetStake {
            validator: id,
            stake: body.stake,
        },
    )
    .await
}

async fn stage_keys(
    State(state): State<AdminState>,
    body: axum::body::Bytes,
) -> Result<Json<crate::dto::StagedKeysJson>, ApiError> {
    // The body is optional: none means both keys.
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        crate::dto::StageKeysJson::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body: {e}")))?
    };
    if !request.protocol && !request.network {
        return Err(ApiError::bad_request(
            "body: `protocol` and `network` are both false: nothing to rotate",
        ));
    }
    let node = state.node.clone();
    let staged = tokio::task::spawn_blocking(move || node.stage_keys(request))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(staged))
}

async fn rotate_keys(
    State(state): State<AdminState>,
) -> Result<Json<crate::dto::VoteJson>, ApiError> {
    vote(state, crate::dto::ChangeRequest::RotateKeys).await
}
