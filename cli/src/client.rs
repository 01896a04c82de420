//! A small HTTP client for the CLI: JSON to and from the coordinator API.

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A response: status, headers and the whole body.
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Http {
    pub fn new() -> Self {
        Self { client: Client::builder(TokioExecutor::new()).build_http() }
    }

    pub async fn send(&self, method: Method, url: &str, body: Bytes, headers: &[(String, String)]) -> Result<Reply> {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(body)).with_context(|| format!("bad URL {url:?}: use http://host:port/..."))?;
        let resp = self.client.request(req).await.map_err(|e| anyhow!("cannot reach {url}: {e}; is `sluice up` running, and is --api/--gateway right?"))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.context("reading the response")?.to_bytes();
        Ok(Reply { status, headers, body })
    }

    /// Calls the API and returns its JSON, turning an error response into a readable error.
    pub async fn json(&self, method: Method, url: &str, body: Option<&Value>) -> Result<Value> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let headers = [("content-type".to_string(), "application/json".to_string())];
        let reply = self.send(method, url, bytes, &headers).await?;
        let value: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        if !reply.status.is_success() {
            bail!("{}", describe_error(reply.status, &value, &reply.body));
        }
        Ok(value)
    }
}

/// `400 name: "Foo" is invalid ...` from an API error body.
pub fn describe_error(status: StatusCode, value: &Value, raw: &[u8]) -> String {
    let err = &value["error"];
    match (err["field"].as_str(), err["message"].as_str()) {
        (Some(field), Some(msg)) => format!("{status}: {field}: {msg}"),
        (None, Some(msg)) => format!("{status}: {msg}"),
        _ => format!("{status}: {}", String::from_utf8_lossy(raw)),
    }
}
