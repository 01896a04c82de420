//! Client workloads for the fault tests: writers that keep adding functions and
//! remember which additions were acknowledged, and the read-back that proves
//! none of those was lost.
//!
//! A write is acknowledged only by a 2xx; a 503 or a timeout leaves its outcome
//! unknown (it may still commit), so such names are neither required nor
//! forbidden in the end state.

use crate::docker_cluster::DockerCluster;
use crate::hello_image;
use anyhow::{bail, Context, Result};
use hyper::{Method, StatusCode};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long a client waits for one answer: past the coordinator's own 5 s
/// commit timeout, so that its 503 arrives instead of our guess.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a writer waits before it gives a write up as unknown and moves to
/// the next node: a killed container never resets its connections, so waiting
/// longer only idles the writer (the outcome is unknown either way).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the writers saw.
#[derive(Debug, Default, Clone)]
pub struct WriteLog {
    pub acknowledged: BTreeSet<String>,
    /// Answered with an error or not at all: outcome unknown.
    pub unknown: BTreeSet<String>,
}

/// Writers adding `<prefix>-<client>-<n>` functions through the cluster's nodes.
pub struct Writers {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    log: Arc<Mutex<WriteLog>>,
}

impl Writers {
    /// `clients` writers; each sticks to one node while it answers and moves to
    /// the next when it does not, as a client with several addresses would;
    /// `pause` between writes.
    pub fn start(cluster: Arc<DockerCluster>, prefix: &str, clients: usize, pause: Duration) -> Writers {
        let (stop, stopped) = watch::channel(false);
        let log = Arc::new(Mutex::new(WriteLog::default()));
        let mut tasks = JoinSet::new();
        for client in 0..clients {
            let (cluster, log, stopped, prefix) = (cluster.clone(), log.clone(), stopped.clone(), prefix.to_string());
            tasks.spawn(async move {
                let ids = cluster.ids();
                let mut current = client;
                for n in 0u64.. {
                    if *stopped.borrow() {
                        return;
                    }
                    let name = format!("{prefix}-{client}-{n}");
                    let via = ids[current % ids.len()];
                    let spec = json!({"name": name, "image": hello_image(), "env": {"V": n.to_string()}});
                    let outcome = tokio::time::timeout(WRITE_TIMEOUT, cluster.request(via, Method::POST, "/v1/functions", Some(&spec))).await;
                    let acked = matches!(&outcome, Ok(Ok(r)) if r.status == StatusCode::CREATED || r.status == StatusCode::OK);
                    {
                        let mut log = log.lock().expect("write log lock poisoned");
                        if acked {
                            log.acknowledged.insert(name);
                        } else {
                            log.unknown.insert(name);
                        }
                    }
                    if !acked {
                        current += 1;
                        // During an election every node says "no leader" at once; do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    tokio::time::sleep(pause).await;
                }
            });
        }
        Writers { stop, tasks, log }
    }

    /// Acknowledged writes so far.
    pub fn acknowledged(&self) -> usize {
        self.log.lock().expect("write log lock poisoned").acknowledged.len()
    }

    /// Stops the writers (each finishes its current write) and returns the log.
    pub async fn finish(mut self) -> WriteLog {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.log.lock().expect("write log lock poisoned").clone()
    }
}

/// The function names node `i` holds (a linearizable read), retried while the
/// node says it cannot serve yet.
pub async fn function_names(cluster: &DockerCluster, i: u64) -> Result<BTreeSet<String>> {
    let mut last = String::new();
    for _ in 0..20 {
        match tokio::time::timeout(CLIENT_TIMEOUT, cluster.request(i, Method::GET, "/v1/functions", None)).await {
            Ok(Ok(r)) if r.status == StatusCode::OK => {
                let v = r.json()?;
                let names = v.as_array().context("GET /v1/functions is not a list")?.iter().filter_map(|f| f["spec"]["name"].as_str().map(str::to_string)).collect();
                return Ok(names);
            }
            Ok(Ok(r)) => last = format!("{} {}", r.status, r.text()),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("node {i} would not list functions: {last}")
}

/// Reads function `name` from node `i` once and returns its env var `V` (the
/// value the fault tests write). Reads are linearizable, so no retries.
pub async fn read_v(cluster: &DockerCluster, i: u64, name: &str) -> Result<String> {
    let r = tokio::time::timeout(CLIENT_TIMEOUT, cluster.request(i, Method::GET, &format!("/v1/functions/{name}"), None))
        .await
        .with_context(|| format!("GET /v1/functions/{name} from node {i}: no answer within {CLIENT_TIMEOUT:?}"))??;
    if r.status != StatusCode::OK {
        bail!("GET /v1/functions/{name} from node {i}: {} {}", r.status, r.text());
    }
    let v = r.json()?;
    v["function"]["spec"]["env"]["V"].as_str().map(str::to_string).with_context(|| format!("node {i}: function {name} has no env V: {v}"))
}

/// Fails unless every acknowledged write is on node `i`, and nothing that was
/// never written is.
pub async fn verify_on(cluster: &DockerCluster, i: u64, log: &WriteLog, prefix: &str) -> Result<()> {
    let names = function_names(cluster, i).await?;
    let lost: Vec<&String> = log.acknowledged.iter().filter(|n| !names.contains(*n)).collect();
    if !lost.is_empty() {
        bail!("node {i} lost {} of {} acknowledged writes, e.g. {:?}", lost.len(), log.acknowledged.len(), &lost[..lost.len().min(10)]);
    }
    let phantoms: Vec<&String> = names.iter().filter(|n| n.starts_with(prefix) && !log.acknowledged.contains(*n) && !log.unknown.contains(*n)).collect();
    if !phantoms.is_empty() {
        bail!("node {i} holds writes nobody made: {phantoms:?}");
    }
    Ok(())
}
