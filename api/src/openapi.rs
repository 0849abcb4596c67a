//! The OpenAPI 3.1 document of the public API, served at [`OPENAPI_PATH`].

use serde_json::{Value, json};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

fn error_responses() -> Value {
    json!({
        "400": {"description": "Bad input; the message names the field", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "404": {"description": "Not found", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "500": {"description": "Node failure (details in the node's log)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    })
}

fn hex(description: &str) -> Value {
    json!({"type": "string", "pattern": "^[0-9a-f]*$", "description": description})
}

fn ok_json(schema: &str, errors: &Value) -> Value {
    let mut responses = errors.clone();
    responses["200"] = json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    responses
}

/// The document.
pub fn openapi_document() -> Value {
    let errors = error_responses();
    let path_param = |name: &str, description: &str| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}, "description": description});
    let mut submit_responses = errors.clone();
    submit_responses["202"] = json!({"description": "Admitted", "content": {"application/json": {"schema": {"type": "object", "properties": {"digest": hex("transaction digest")}}}}});
    submit_responses["429"] = json!({"description": "Mempool full; retry later", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    submit_responses["413"] = json!({"description": "Body too large"});
    let mut batch_responses = errors.clone();
    batch_responses["200"] = json!({"description": "Per-transaction results", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchSubmit"}}}});
    batch_responses["429"] = json!({"description": "Every transaction refused as overloaded"});
    batch_responses["413"] = json!({"description": "Body too large"});
    let mut block_responses = ok_json("Block", &errors);
    block_responses["410"] = json!({"description": "Pruned: the message names the height and the lowest height this node keeps", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Keel validator node API", "version": env!("CARGO_PKG_VERSION")},
        "paths": {
            "/v1/transactions": {"post": {
                "summary": "Submit one signed transaction",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Transaction"}}}},
                "responses": submit_responses
            }},
            "/v1/transactions/batch": {"post": {
                "summary": "Submit up to 10,000 signed transactions as the bcs encoding of Vec<SignedTransaction>",
                "requestBody": {"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": batch_responses
            }},
            "/v1/transactions/{digest}": {"get": {
                "summary": "A transaction's status and receipt",
                "parameters": [path_param("digest", "transaction digest (hex)")],
                "responses": ok_json("TransactionStatus", &errors)
            }},
            "/v1/accounts/{address}": {"get": {
                "summary": "An account's balance and next nonce",
                "parameters": [path_param("address", "address (hex)")],
                "responses": ok_json("Account", &errors)
            }},
            "/v1/objects/{owner}/{key}": {"get": {
                "summary": "An object",
                "parameters": [path_param("owner", "owner address (hex)"), path_param("key", "object key (hex)")],
                "responses": ok_json("Object", &errors)
            }},
            "/v1/blocks/{height}": {"get": {
                "summary": "A committed block by height",
                "parameters": [path_param("height", "block height")],
                "responses": block_responses
            }},
            "/v1/blocks/latest": {"get": {"summary": "The latest committed block", "responses": ok_json("Block", &errors)}},
            "/v1/checkpoints/{sequence}": {"get": {
                "summary": "A certified checkpoint by sequence (404 when this node does not hold it)",
                "parameters": [path_param("sequence", "checkpoint sequence")],
                "responses": ok_json("Checkpoint", &errors)
            }},
            "/v1/checkpoints/latest": {"get": {"summary": "The latest certified checkpoint (404 before the first)", "responses": ok_json("Checkpoint", &errors)}},
            "/v1/status": {"get": {"summary": "Node status", "responses": ok_json("Status", &errors)}},
            "/v1/stream": {"get": {
                "summary": "Server-sent events: `transaction` (data: Committed JSON) per executed transaction; `lagged` (data: blocks missed) for slow subscribers",
                "responses": {
                    "200": {"description": "Event stream", "content": {"text/event-stream": {}}},
                    "429": {"description": "Too many subscribers (`limits.stream_subscribers`); retry later", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                }
            }},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "The process serves requests"}}}},
            "/readyz": {"get": {"summary": "Readiness: peers connected and recent progress", "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready, with the reason"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Text exposition format", "content": {"text/plain": {}}}}}},
            OPENAPI_PATH: {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}}
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string", "enum": ["bad_request", "not_found", "gone", "payload_too_large", "unsupported_media_type", "unauthorized", "overloaded", "not_ready", "internal"]},
                "message": {"type": "string"}}}}},
            "Transaction": {"type": "object", "additionalProperties": false,
                "required": ["chain_id", "sender", "nonce", "expiry_ms", "ops", "signature"],
                "properties": {
                    "chain_id": {"type": "integer"}, "sender": hex("ed25519 public key, 32 bytes"),
                    "nonce": {"type": "integer"}, "expiry_ms": {"type": "integer", "description": "ms since the Unix epoch"},
                    "ops": {"type": "array", "minItems": 1, "maxItems": 32, "items": {"$ref": "#/components/schemas/Op"}},
                    "signature": hex("ed25519 signature, 64 bytes, over blake3(domain tag \"keel/transaction/v1\" || epoch 0 || chain id || bcs(transaction))")}},
            "Op": {"oneOf": [
                {"type": "object", "required": ["type", "to", "amount"], "properties": {"type": {"const": "transfer"}, "to": hex("address"), "amount": {"type": "integer", "minimum": 1}}},
                {"type": "object", "required": ["type", "key", "value"], "properties": {"type": {"const": "put"}, "key": hex("1..=256 bytes"), "value": hex("at most 64 KiB")}},
                {"type": "object", "required": ["type", "key"], "properties": {"type": {"const": "delete"}, "key": hex("1..=256 bytes")}},
                {"type": "object", "required": ["type", "key", "expected_version", "value"], "properties": {"type": {"const": "compare_and_swap"}, "key": hex("1..=256 bytes"), "expected_version": {"type": "integer"}, "value": hex("at most 64 KiB")}}
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
            "Status": {"type": "object", "properties": {"chain_id": {"type": "integer"}, "validator": {"type": ["integer", "null"], "description": "this node's index in the committee; null while it is not a member"}, "epoch": {"type": "integer"}, "round": {"type": "integer"}, "committed_height": {"type": "integer"}, "executed_height": {"type": "integer"}, "state_root": hex("state root"), "executed_transactions": {"type": "integer"}, "peers": {"type": "integer"}, "mempool_size": {"type": "integer"}, "sync": {"type": "object", "properties": {"state": {"type": "string", "enum": ["following", "range_sync", "state_sync"]}, "target_height": {"type": "integer"}, "percent": {"type": "integer"}}}}},
            "Status": {"type": "object", "properties": {"chain_id": {"type": "integer"}, "validator": {"type": ["integer", "null"], "description": "this node's index in the committee; null while it is not a member"}, "epoch": {"type": "integer"}, "round": {"type": "integer"}, "committed_height": {"type": "integer"}, "executed_height": {"type": "integer"}, "state_root": hex("state root"), "executed_transactions": {"type": "integer"}, "peers": {"type": "integer"}, "mempool_size": {"type": "integer"},
                "latest_checkpoint": {"type": "object", "description": "absent before the first certified checkpoint", "properties": {"sequence": {"type": "integer"}, "digest": hex("checkpoint digest"), "height": {"type": "integer"}, "state_root": hex("state root at that height")}}}},
            "Checkpoint": {"type": "object", "properties": {
                "sequence": {"type": "integer"}, "digest": hex("checkpoint digest"), "epoch": {"type": "integer"}, "previous": hex("previous checkpoint's digest"),
                "block": hex("last block"), "height": {"type": "integer"}, "state_root": hex("Merkle root over the 256 bucket checksums"),
                "executed_transactions": {"type": "integer"}, "ends_epoch": {"type": "boolean"},
                "signers": {"type": "array", "items": {"type": "integer"}, "description": "validators whose signatures certify it (more than 2/3 of the stake)"},
                "certificate": hex("bcs encoding of the CertifiedCheckpoint, to verify against the committee")}},
            "Committed": {"type": "object", "properties": {"digest": hex("transaction"), "height": {"type": "integer"}, "position": {"type": "integer"}, "status": {"type": "string"}}}
        }}
    })
}
