//! A small HTTP/1.1 client: the CLI's calls to the coordinator API and gateway,
//! also used by the end-to-end tests and benchmarks. `https://` URLs are
//! checked against the CA given with `--tls-ca` (or `SLUICE_TLS_CA`).

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sluice_common::connector::Connector;
use std::path::Path;
use std::sync::Arc;

/// A client with pooled keep-alive connections; cheap to clone.
#[derive(Clone)]
pub struct Http {
    client: Client<Connector, Full<Bytes>>,
    /// Sent as `Authorization: Bearer` on every request that does not carry its own.
    token: Option<Arc<str>>,
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
        Self::with_tls(None)
    }

    /// A client for `http://` and, with `tls`, `https://` URLs.
    pub fn with_tls(tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self { client: Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build(Connector::new(None, tls)), token: None }
    }

    /// A client checking `https://` servers against the CA certificate in `ca`
    /// (a flag's value, named in errors), and showing none of its own.
    pub fn with_ca(ca: Option<&Path>) -> Result<Self> {
        let tls = ca.map(|ca| sluice_common::tls::ca_client_config("--tls-ca", ca)).transpose()?;
        Ok(Self::with_tls(tls))
    }

    /// The same client, sending `token` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.map(Into::into);
        self
    }

    /// A client that opens a new connection per request and gives up connecting
    /// after `connect_timeout`: for talking to servers that get killed. A pooled
    /// connection to a host that vanished (no RST ever comes) would otherwise
    /// hang the next request until its own timeout.
    pub fn fresh_connections(connect_timeout: std::time::Duration) -> Self {
        Self::fresh_connections_tls(connect_timeout, None)
    }

    /// `fresh_connections`, for `https://` URLs too with `tls`.
    pub fn fresh_connections_tls(connect_timeout: std::time::Duration, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self { client: Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(Connector::new(Some(connect_timeout), tls)), token: None }
    }

    pub async fn send(&self, method: Method, url: &str, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> Result<Reply> {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(token) = self.token.as_deref().filter(|_| !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization"))) {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.body(Full::new(body.into())).with_context(|| format!("bad URL {url:?}: use http://host:port/..."))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| anyhow!("cannot reach {url}: {}; is `sluice up` running, and is --api/--gateway right?", sluice_common::connector::error_chain(&e)))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.context("reading the response")?.to_bytes();
        Ok(Reply { status, headers, body })
    }

    /// A GET whose answer is read as it comes: the status and headers, and the body to read.
    pub async fn get_streaming(&self, url: &str) -> Result<hyper::Response<hyper::body::Incoming>> {
        let mut req = Request::builder().method(Method::GET).uri(url);
        if let Some(token) = self.token.as_deref() {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.body(Full::new(Bytes::new())).with_context(|| format!("bad URL {url:?}: use http://host:port/..."))?;
        self.client.request(req).await.map_err(|e| anyhow!("cannot reach {url}: {}; is `sluice up` running, and is --api right?", sluice_common::connector::error_chain(&e)))
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

/// The coordinator API at several addresses: a call goes to the one that
/// answered last, and moves on when an address is unreachable, has no leader,
/// or says the request belongs to the leader.
#[derive(Clone)]
pub struct Api {
    bases: Vec<String>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    http: Http,
}

impl Api {
    /// `bases`: one or more `http://host:port` addresses, or `https://` ones
    /// whose certificates are checked against the CA in `tls_ca`.
    pub fn new(bases: &[String], tls_ca: Option<&Path>) -> Result<Self> {
        let bases: Vec<String> = bases.iter().map(|b| b.trim().trim_end_matches('/').to_string()).filter(|b| !b.is_empty()).collect();
        if bases.is_empty() {
            bail!("no coordinator API address: pass --api http://host:port (comma-separate several)");
        }
        for b in &bases {
            if b.starts_with("https://") && tls_ca.is_none() {
                bail!("--api {b:?}: an https:// API needs the cluster CA to check it against: pass --tls-ca ca.pem (or set SLUICE_TLS_CA)");
            }
            if !b.starts_with("http://") && !b.starts_with("https://") {
                bail!("--api {b:?}: write it as http://host:port (or https://host:port with --tls-ca)");
            }
        }
        Ok(Self { bases, current: Default::default(), http: Http::with_ca(tls_ca)? })
    }

    /// The same API, calling with `token`.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.http = self.http.with_token(token);
        self
    }

    /// Calls `path` on the first coordinator that can serve it and returns its JSON.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        use std::sync::atomic::Ordering::Relaxed;
        let first = self.current.load(Relaxed);
        let mut last_error = None;
        for k in 0..self.bases.len() {
            let i = (first + k) % self.bases.len();
            let url = format!("{}{path}", self.bases[i]);
            let reply = match body {
                Some(b) => self.http.json(method.clone(), &url, b).await,
                None => self.http.send(method.clone(), &url, Bytes::new(), &[]).await,
            };
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            };
            let value: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
            let elsewhere = reply.status == StatusCode::MISDIRECTED_REQUEST || value["error"]["code"] == "no_leader";
            if elsewhere && k + 1 < self.bases.len() {
                last_error = Some(anyhow!("{}", describe_error(reply.status, &value, &reply.body)));
                continue;
            }
            self.current.store(i, Relaxed);
            if !reply.status.is_success() {
                bail!("{}", describe_error(reply.status, &value, &reply.body));
            }
            return Ok(value);
        }
        Err(last_error.unwrap_or_else(|| anyhow!("no coordinator answered")))
    }
}

impl Api {
    /// A GET of `path` whose body is read as it comes (a followed log), from
    /// the first coordinator that answers; an error answer becomes an error.
    pub async fn get_streaming(&self, path: &str) -> Result<hyper::body::Incoming> {
        use std::sync::atomic::Ordering::Relaxed;
        let first = self.current.load(Relaxed);
        let mut last_error = None;
        for k in 0..self.bases.len() {
            let i = (first + k) % self.bases.len();
            let resp = match self.http.get_streaming(&format!("{}{path}", self.bases[i])).await {
                Ok(r) => r,
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            };
            let status = resp.status();
            if status.is_success() {
                self.current.store(i, Relaxed);
                return Ok(resp.into_body());
            }
            let raw = resp.into_body().collect().await.context("reading the response")?.to_bytes();
            let value: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
            let error = anyhow!("{}", describe_error(status, &value, &raw));
            let elsewhere = status == StatusCode::MISDIRECTED_REQUEST || ["no_leader", "agent_unknown"].contains(&value["error"]["code"].as_str().unwrap_or(""));
            if !elsewhere {
                return Err(error);
            }
            last_error = Some(error);
        }
        Err(last_error.unwrap_or_else(|| anyhow!("no coordinator answered")))
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
