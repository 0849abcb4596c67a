//! The OpenAPI 3.1 document of the public API, served at [`OPENAPI_PATH`].

use keel_types::{MAX_KEY_LEN, MAX_OPS, MAX_TRANSACTION_BYTES, MAX_VALUE_LEN};
use serde_json::{Value, json};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// A JSON response with the common error body.
fn error(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The errors every endpoint with parameters may answer.
fn error_responses() -> Value {
    json!({
        "400": error("Bad input; the message names the field"),
        "404": error("Not found"),
        "500": error("Node failure (details in the node's log)")
    })
}

/// An unsigned 64-bit integer.
fn uint64(description: &str) -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": u64::MAX, "format": "uint64", "description": description})
}

/// Exactly `bytes` bytes as hex (either case).
fn hex_exact(bytes: usize, description: &str) -> Value {
    json!({"type": "string", "pattern": format!("^[0-9a-fA-F]{{{}}}$", 2 * bytes), "description": description})
}

/// `min..=max` bytes as hex (either case).
fn hex_range(min: usize, max: usize, description: &str) -> Value {
    json!({"type": "string", "pattern": format!("^([0-9a-fA-F]{{2}}){{{min},{max}}}$"), "description": description})
}

/// Lowercase hex, as the node writes it (responses).
fn hex(description: &str) -> Value {
    json!({"type": "string", "pattern": "^[0-9a-f]*$", "description": description})
}

fn ok_json(schema: &str, errors: &Value) -> Value {
    let mut responses = errors.clone();
    responses["200"] = json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    responses
}

fn path_param(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": schema})
}

/// The document.
pub fn openapi_document() -> Value {
    let errors = error_responses();
    let digest = || hex_exact(32, "digest: 32 bytes as hex");
    let address = || hex_exact(32, "address: 32 bytes as hex");
    let key = || hex_range(1, MAX_KEY_LEN, "object key: 1..=256 bytes as hex");
    let value = || hex_range(0, MAX_VALUE_LEN, "object value: at most 64 KiB as hex");
    let mut body_errors = errors.clone();
    body_errors["400"] = error(
        "Bad input: malformed JSON or bcs, a field out of range (the message names it), an invalid signature or public key, or a transaction admission refuses (wrong chain, expired, nonce outside the window, a fee the balance cannot pay)",
    );
    body_errors["413"] = error("Body too large");
    body_errors["415"] = error("Wrong Content-Type");
    let mut submit_responses = body_errors.clone();
    submit_responses["202"] = json!({"description": "Admitted", "content": {"application/json": {"schema": {"type": "object", "required": ["digest"], "properties": {"digest": hex("transaction digest")}}}}});
    submit_responses["429"] = error("Mempool full; retry later");
    let mut batch_responses = body_errors.clone();
    batch_responses["200"] = json!({"description": "Per-transaction results", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchSubmit"}}}});
    batch_responses["429"] = json!({"description": "Every transaction refused as overloaded", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchSubmit"}}}});
    let mut block_responses = ok_json("Block", &errors);
    block_responses["410"] =
        error("Pruned: the message names the height and the lowest height this node keeps");
    let op = |kind: &str, required: &[&str], properties: Value| {
        let mut properties = properties;
        properties["type"] = json!({"const": kind});
        let mut required: Vec<&str> = required.to_vec();
        required.insert(0, "type");
        json!({"type": "object", "additionalProperties": false, "required": required, "properties": properties})
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Keel validator node API", "version": env!("CARGO_PKG_VERSION")},
        "paths": {
            "/v1/transactions": {"post": {
                "summary": "Submit one signed transaction",
                "description": "A body valid by this schema is still refused with 400 when its signature does not verify, its sender is not a valid ed25519 point, or admission refuses it: those rules are beyond JSON Schema.",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Transaction"}}}},
                "responses": submit_responses
            }},
            "/v1/transactions/batch": {"post": {
                "summary": "Submit 1..=10,000 signed transactions as the bcs encoding of Vec<SignedTransaction> (at most 16 MiB)",
                "description": "Bytes that are not such an encoding are refused with 400.",
                "requestBody": {"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": batch_responses
            }},
            "/v1/transactions/{digest}": {"get": {
                "summary": "A transaction's status and receipt",
                "parameters": [path_param("digest", digest())],
                "responses": ok_json("TransactionStatus", &errors)
            }},
            "/v1/accounts/{address}": {"get": {
                "summary": "An account's balance and next nonce",
                "parameters": [path_param("address", address())],
                "responses": ok_json("Account", &errors)
            }},
            "/v1/objects/{owner}/{key}": {"get": {
                "summary": "An object",
                "parameters": [path_param("owner", address()), path_param("key", key())],
                "responses": ok_json("Object", &errors)
            }},
            "/v1/blocks/{height}": {"get": {
                "summary": "A committed block by height",
                "parameters": [path_param("height", uint64("block height"))],
                "responses": block_responses
            }},
            "/v1/blocks/latest": {"get": {"summary": "The latest committed block", "responses": ok_json("Block", &errors)}},
            "/v1/checkpoints/{sequence}": {"get": {
                "summary": "A certified checkpoint by sequence (404 when this node does not hold it)",
                "parameters": [path_param("sequence", uint64("checkpoint sequence"))],
                "responses": ok_json("Checkpoint", &errors)
            }},
            "/v1/checkpoints/latest": {"get": {"summary": "The latest certified checkpoint (404 before the first)", "responses": ok_json("Checkpoint", &errors)}},
            "/v1/status": {"get": {"summary": "Node status", "responses": ok_json("Status", &errors)}},
            "/v1/committee": {"get": {"summary": "The current committee: each member's stake, this node's connection to it and its recent activity", "responses": ok_json("Committee", &errors)}},
            "/": {"get": {"summary": "The status page (HTML reading this API)", "responses": {"200": {"description": "A self-contained HTML document", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
            "/v1/stream": {"get": {
                "summary": "Server-sent events: `transaction` (data: Committed JSON) per executed transaction; `lagged` (data: blocks missed) for slow subscribers",
                "responses": {
                    "200": {"description": "Event stream", "content": {"text/event-stream": {}}},
                    "429": {"description": "Too many subscribers (`limits.stream_subscribers`); retry later", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                }
            }},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "The process serves requests", "content": {"text/plain": {"schema": {"const": "ok"}}}}}}},
            "/readyz": {"get": {"summary": "Readiness: peers connected and recent progress", "responses": {"200": {"description": "Ready", "content": {"text/plain": {"schema": {"const": "ready"}}}}, "503": error("Not ready, with the reason")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            OPENAPI_PATH: {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}}}
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string", "enum": ["bad_request", "not_found", "gone", "payload_too_large", "unsupported_media_type", "unauthorized", "overloaded", "not_ready", "internal"]},
                "message": {"type": "string"}}}}},
            "Transaction": {"type": "object", "additionalProperties": false,
                "required": ["chain_id", "sender", "nonce", "expiry_ms", "ops", "signature"],
                "properties": {
                    "chain_id": uint64("the network"), "sender": hex_exact(32, "ed25519 public key"),
                    "nonce": uint64("the sender's next nonce"), "expiry_ms": uint64("ms since the Unix epoch after which the transaction is void"),
                    "ops": {"type": "array", "minItems": 1, "maxItems": MAX_OPS, "items": {"$ref": "#/components/schemas/Op"}},
                    "signature": hex_exact(64, "ed25519 signature over blake3(domain tag \"keel/transaction/v1\" || epoch 0 || chain id || bcs(transaction))")}},
            "Op": {"oneOf": [
                op("transfer", &["to", "amount"], json!({"to": address(), "amount": {"type": "integer", "minimum": 1, "maximum": u64::MAX, "format": "uint64"}})),
                op("put", &["key", "value"], json!({"key": key(), "value": value()})),
                op("delete", &["key"], json!({"key": key()})),
                op("compare_and_swap", &["key", "expected_version", "value"], json!({"key": key(), "expected_version": uint64("the version the object must have (0: absent)"), "value": value()})),
                op("governance", &["epoch", "change"], json!({"epoch": uint64("the epoch voted in"), "change": hex_range(0, MAX_TRANSACTION_BYTES, "bcs of the committee change"), "description": {"type": "string", "description": "ignored when submitted"}}))
            ]},
            "BatchSubmit": {"type": "object", "properties": {"accepted": {"type": "integer"}, "results": {"type": "array", "items": {"type": "object", "properties": {"digest": hex("digest"), "error": {"$ref": "#/components/schemas/Error/properties/error"}}}}}},
            "TransactionStatus": {"type": "object", "properties": {"digest": hex("digest"), "status": {"type": "string", "enum": ["pending", "executed", "discarded"]}, "receipt": {"$ref": "#/components/schemas/Receipt"}}},
            "Receipt": {"type": "object", "properties": {
                "digest": hex("transaction"), "sender": hex("address"), "nonce": {"type": "integer"},
                "status": {"type": "string", "enum": ["success", "failed", "discarded"]}, "reason": {"type": "string"},
                "effects": {"type": "array", "items": {"type": "object"}}, "height": {"type": "integer"}, "block": hex("block digest"), "position": {"type": "integer"}, "fee": {"type": "integer", "minimum": 0, "description": "The fee paid (0 when discarded)"}}},
            "Account": {"type": "object", "properties": {"address": hex("address"), "balance": {"type": "integer"}, "nonce": {"type": "integer"}}},
            "Object": {"type": "object", "properties": {"owner": hex("address"), "key": hex("key"), "version": {"type": "integer"}, "value": hex("value")}},
            "Block": {"type": "object", "properties": {"height": {"type": "integer"}, "digest": hex("digest"), "epoch": {"type": "integer"}, "round": {"type": "integer"}, "author": {"type": "integer"}, "timestamp_ms": {"type": "integer"}, "parent": hex("digest"), "executed": {"type": "boolean"},
                "batches": {"type": "array", "items": {"type": "object", "properties": {"digest": hex("batch digest"), "author": {"type": "integer"}, "transactions": {"type": "integer"}}}}}},
            "Status": {"type": "object", "properties": {"chain_id": {"type": "integer"}, "validator": {"type": ["integer", "null"], "description": "this node's index in the committee; null while it is not a member"}, "epoch": {"type": "integer"}, "round": {"type": "integer"}, "committed_height": {"type": "integer"}, "executed_height": {"type": "integer"}, "state_root": hex("state root"), "executed_transactions": {"type": "integer"}, "committee_size": {"type": "integer"}, "batch_verifiers": {"type": "integer", "description": "validators that verify each batch's transaction signatures"}, "peers": {"type": "integer"}, "mempool_size": {"type": "integer"},
                "sync": {"type": "object", "properties": {"state": {"type": "string", "enum": ["starting", "following", "range_sync", "state_sync"]}, "target_height": {"type": "integer"}, "percent": {"type": "integer"}}},
                "latest_checkpoint": {"type": "object", "description": "absent before the first certified checkpoint", "properties": {"sequence": {"type": "integer"}, "digest": hex("checkpoint digest"), "height": {"type": "integer"}, "state_root": hex("state root at that height")}}}},
            "Checkpoint": {"type": "object", "properties": {
                "sequence": {"type": "integer"}, "digest": hex("checkpoint digest"), "epoch": {"type": "integer"}, "previous": hex("previous checkpoint's digest"),
                "block": hex("last block"), "height": {"type": "integer"}, "state_root": hex("Merkle root over the 256 bucket checksums"),
                "executed_transactions": {"type": "integer"}, "ends_epoch": {"type": "boolean"},
                "signers": {"type": "array", "items": {"type": "integer"}, "description": "validators whose signatures certify it (more than 2/3 of the stake)"},
                "certificate": hex("bcs encoding of the CertifiedCheckpoint, to verify against the committee")}},
            "Committee": {"type": "object", "required": ["epoch", "members"], "properties": {"epoch": {"type": "integer"}, "members": {"type": "array", "items": {"type": "object", "required": ["index", "protocol_key", "stake", "this_node", "connected"], "properties": {
                "index": {"type": "integer"}, "protocol_key": hex("protocol public key"), "stake": {"type": "integer"}, "this_node": {"type": "boolean"}, "connected": {"type": "boolean", "description": "this node's connection to it (true for itself)"},
                "proposed": {"type": "integer", "description": "blocks it proposed among the recent committed blocks (absent with round-robin leaders)"}, "voted": {"type": "integer", "description": "recent parent certificates it signed"}, "failed": {"type": "integer", "description": "recent rounds it led that failed"}}}}}},
            "Committed": {"type": "object", "properties": {"digest": hex("transaction"), "height": {"type": "integer"}, "position": {"type": "integer"}, "status": {"type": "string"}}}
        }}
    })
}
