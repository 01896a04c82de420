//! A small HTTP/1.1 client: the CLI's calls to the coordinator API and gateway,
//! also used by the end-to-end tests and benchmarks.

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A client with pooled keep-alive connections; cheap to clone.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A response: status, headers and the whole body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| format!("not JSON: {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    pub fn new() -> Self {
        Self { client: Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build_http() }
    }

    pub async fn send(&self, method: Method, url: &str, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> Result<Reply> {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).with_context(|| format!("bad URL {url:?}: use http://host:port/..."))?;
        let resp = self.client.request(req).await.map_err(|e| anyhow!("cannot reach {url}: {e}; is `sluice up` running, and is --api/--gateway right?"))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.context("reading the response")?.to_bytes();
        Ok(Reply { status, headers, body })
    }

    pub async fn get(&self, url: &str) -> Result<Reply> {
        self.send(Method::GET, url, Bytes::new(), &[]).await
    }

    /// Sends `body` as JSON and returns the reply, whatever its status.
    pub async fn json(&self, method: Method, url: &str, body: &Value) -> Result<Reply> {
        self.send(method, url, body.to_string(), &[("content-type", "application/json")]).await
    }

    /// Calls the API and returns its JSON, turning an error response into a readable error.
    pub async fn call(&self, method: Method, url: &str, body: Option<&Value>) -> Result<Value> {
        let reply = match body {
            Some(b) => self.json(method, url, b).await?,
            None => self.send(method, url, Bytes::new(), &[]).await?,
        };
        let value: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        if !reply.status.is_success() {
            bail!("{}", describe_error(reply.status, &value, &reply.body));
        }
        Ok(value)
    }
}

/// `400 Bad Request: name: "Foo" is invalid ...` from an API error body.
pub fn describe_error(status: StatusCode, value: &Value, raw: &[u8]) -> String {
    let err = &value["error"];
    match (err["field"].as_str(), err["message"].as_str()) {
        (Some(field), Some(msg)) => format!("{status}: {field}: {msg}"),
        (None, Some(msg)) => format!("{status}: {msg}"),
        _ => format!("{status}: {}", String::from_utf8_lossy(raw)),
    }
}
