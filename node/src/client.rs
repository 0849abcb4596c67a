//! A small client of the public API, used by `keel tx`, `keel bench` and `keel localnet`.

use anyhow::{Context, Result, bail};
use keel_api::dto::{AccountJson, BatchSubmitJson, StatusJson, TransactionJson};
use keel_types::{Address, SignedTransaction};
use std::time::Duration;

/// A client of one node's public API.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(8)
            .build()?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A JSON document at `path`, or `None` on 404; any other non-2xx answer is an error.
    pub async fn get_json_or_none<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>> {
        let (url, status, body) = self.fetch(path).await?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            bail!("GET {url}: {status}: {body}");
        }
        serde_json::from_str(&body)
            .map(Some)
            .with_context(|| format!("GET {url}: unexpected body {body}"))
    }

    /// A JSON document at `path`; a non-2xx answer is an error carrying its body.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let (url, status, body) = self.fetch(path).await?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET {url}: unexpected body {body}"))
    }

    /// GETs `path`: the URL, the status and the body.
    async fn fetch(&self, path: &str) -> Result<(String, reqwest::StatusCode, String)> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response.text().await?;
        Ok((url, status, body))
    }

    /// The committee as the node sees it.
    pub async fn committee(&self) -> Result<keel_api::dto::CommitteeJson> {
        self.get_json("/v1/committee").await
    }

    /// Node status.
    pub async fn status(&self) -> Result<StatusJson> {
        self.get_json("/v1/status").await
    }

    /// Whether `/readyz` answers 200.
    pub async fn ready(&self) -> bool {
        let url = format!("{}/readyz", self.base);
        matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_success())
    }

    /// An account.
    pub async fn account(&self, address: &Address) -> Result<AccountJson> {
        self.get_json(&format!("/v1/accounts/{address}")).await
    }

    /// Any JSON document.
    pub async fn get_value(&self, path: &str) -> Result<serde_json::Value> {
        self.get_json(path).await
    }

    /// Submits one transaction as JSON; returns the answer body.
    pub async fn submit_json(&self, tx: &SignedTransaction) -> Result<serde_json::Value> {
        let url = format!("{}/v1/transactions", self.base);
        let response = self
            .http
            .post(&url)
            .json(&TransactionJson::from_signed(tx))
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        if !status.is_success() {
            bail!("POST {url}: {status}: {body}");
        }
        Ok(body)
    }

    /// Submits transactions as one bcs batch.
    pub async fn submit_batch(&self, txs: &[SignedTransaction]) -> Result<BatchSubmitJson> {
        let url = format!("{}/v1/transactions/batch", self.base);
        let body = bcs::to_bytes(txs)?;
        let response = self
            .http
            .post(&url)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !(status.is_success() || status.as_u16() == 429) {
            bail!("POST {url}: {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("POST {url}: unexpected body {text}"))
    }

    /// The committed-transaction event stream.
    pub async fn stream(&self) -> Result<reqwest::Response> {
        let url = format!("{}/v1/stream", self.base);
        let response = reqwest::Client::new()
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if !response.status().is_success() {
            bail!("GET {url}: {}", response.status());
        }
        Ok(response)
    }
}
