//! A cluster of real `sluice coordinator` processes, one per Docker container on a private
//! bridge network, for testing replication under faults: SIGKILL, restart, pause (a frozen
//! process whose kernel still accepts connections) and network disconnection.
//!
//! Everything goes through the `docker` CLI, so the harness sees exactly what an operator
//! would. Containers run `sluice/sluice:latest` (build it with `scripts/build-images.sh`, and
//! rebuild after changing the coordinator: the tests run the image, not the workspace). The test
//! process reaches each container directly at its static IP, which needs Linux bridge networking
//! on this host (the usual case; not Docker Desktop nor a remote daemon).
//!
//! Each cluster is named; its network is `sluice-<name>` and its containers
//! `sluice-<name>-<id>`, labelled `sluice.test-cluster=<name>`. Starting a cluster first removes
//! whatever a crashed earlier run of the same name left. Dropping it removes its containers and
//! network, unless `SLUICE_TEST_KEEP=1` is set (to inspect them after a failure).

use crate::{Http, Reply};
use anyhow::{anyhow, bail, Context, Result};
use hyper::Method;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

/// The image every coordinator container runs.
pub const IMAGE: &str = "sluice/sluice:latest";
/// The label that marks containers as this harness's, with the cluster name as its value.
pub const LABEL: &str = "sluice.test-cluster";
/// Ports inside each container (they all use the same, each at its own IP).
pub const API_PORT: u16 = 7070;
pub const GATEWAY_PORT: u16 = 8080;
pub const RAFT_PORT: u16 = 7071;

/// How long `status` waits for `/v1/cluster`: short, because a paused, killed or
/// disconnected node never answers, the callers poll, and a poll round lasts as long as
/// its slowest node (this bounds how precisely a failover is timed).
const STATUS_TIMEOUT: Duration = Duration::from_millis(250);
/// How long `request` waits: longer than the coordinator's own 5 s request timeout, so that a
/// write's 503 (outcome unknown) reaches the test instead of our timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Tunables of a cluster; `Default` suits tests that measure failover in seconds.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `--heartbeat-ms` of every coordinator.
    pub heartbeat_ms: u64,
    /// `--election-ms` of every coordinator: elections start after this to twice this
    /// without hearing from a leader, so failover takes about that long.
    pub election_ms: u64,
    /// `RUST_LOG` inside the containers.
    pub rust_log: String,
    /// How long `start` waits for every node to know the same leader.
    pub start_timeout: Duration,
    /// The metrics bus the coordinators share.
    pub bus: ClusterBus,
}

/// The metrics bus of a test cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterBus {
    /// None shared (`--bus inproc`): enough for tests of the replicated log.
    InProcess,
    /// A private mosquitto on the host's address in the cluster's network:
    /// every gateway's load reaches the leader, as in production.
    Mosquitto,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        // Shorter than the coordinator's defaults (150/1500) so a killed leader is replaced well
        // within 3 s, yet several heartbeats per election timeout even on a busy 2-core machine.
        Self { heartbeat_ms: 100, election_ms: 1000, rust_log: "info".into(), start_timeout: Duration::from_secs(30), bus: ClusterBus::InProcess }
    }
}

/// Coordinators `1..=size` in containers on their own network; see the module docs.
pub struct DockerCluster {
    name: String,
    network: String,
    /// The first three octets of the /24, e.g. `172.30.57`.
    prefix: String,
    options: ClusterOptions,
    /// Ids of every container created so far (the founders, then `add_node`s).
    nodes: BTreeSet<u64>,
    http: Http,
    destroyed: bool,
    /// The private broker (and its state directory) when `ClusterBus::Mosquitto`.
    broker: Option<(crate::mosquitto::Mosquitto, tempfile::TempDir)>,
}

impl DockerCluster {
    /// Starts `size` coordinators that bootstrap one cluster, and waits until all of them know
    /// the same leader.
    pub async fn start(name: &str, size: usize) -> Result<DockerCluster> {
        Self::start_with(name, size, ClusterOptions::default()).await
    }

    pub async fn start_with(name: &str, size: usize, options: ClusterOptions) -> Result<DockerCluster> {
        crate::init_logs();
        anyhow::ensure!((1..=200).contains(&size), "cluster size {size}: use 1 to 200 (ids map to IPs .11 up in a /24)");
        anyhow::ensure!(
            !name.is_empty() && name.len() <= 40 && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "cluster name {name:?}: use 1 to 40 of a-z, 0-9 and '-' (it names the Docker network and containers)"
        );
        let name = name.to_string();
        let network = format!("sluice-{name}");
        preflight().await?;
        // A crashed run of the same test may have left its containers and network behind.
        remove_leftovers(&name, &network).await?;
        let prefix = create_network(&name, &network).await?;
        let broker = match options.bus {
            ClusterBus::InProcess => None,
            ClusterBus::Mosquitto => {
                let ip = format!("{prefix}.1");
                let dir = tempfile::tempdir().context("a directory for the cluster's broker")?;
                let broker = crate::mosquitto::Mosquitto::start(&ip, crate::ports::free_port(&ip)?, dir.path()).await?;
                Some((broker, dir))
            }
        };
        let http = Http::fresh_connections(Duration::from_millis(500));
        let mut cluster = DockerCluster { name, network, prefix, options, nodes: BTreeSet::new(), http, destroyed: false, broker };

        let initial: Vec<String> = (1..=size as u64).map(|i| format!("{i}={}", cluster.raft_addr(i))).collect();
        let initial = initial.join(",");
        for i in 1..=size as u64 {
            cluster.run_container(i, &["--initial-cluster", &initial]).await?;
        }
        cluster.wait_until_all_know_a_leader(cluster.options.start_timeout).await?;
        Ok(cluster)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn network(&self) -> &str {
        &self.network
    }

    /// Ids of every container this cluster created (ids are also the Raft ids).
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().copied().collect()
    }

    pub fn container(&self, i: u64) -> String {
        format!("sluice-{}-{i}", self.name)
    }

    /// The `--bus` of the coordinators (and of agents joining them).
    pub fn bus_url(&self) -> String {
        self.broker.as_ref().map_or_else(|| "inproc".to_string(), |(b, _)| b.url(&self.name))
    }

    /// The host's own address on the cluster's network (the bridge's gateway): where an agent
    /// on this host publishes function ports so that the coordinators' gateways reach them.
    pub fn host_ip(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// Node `i`'s static IP: `.11` for node 1, `.12` for node 2, ...
    pub fn ip(&self, i: u64) -> String {
        format!("{}.{}", self.prefix, 10 + i)
    }

    pub fn api_url(&self, i: u64) -> String {
        format!("http://{}:{API_PORT}", self.ip(i))
    }

    pub fn gateway_url(&self, i: u64) -> String {
        format!("http://{}:{GATEWAY_PORT}", self.ip(i))
    }

    /// What the other coordinators dial to reach node `i`.
    pub fn raft_addr(&self, i: u64) -> String {
        format!("{}:{RAFT_PORT}", self.ip(i))
    }

    pub fn http(&self) -> &Http {
        &self.http
    }

    /// Sends an API request to node `i`, with a timeout so a paused node cannot hang the test.
    pub async fn request(&self, i: u64, method: Method, path: &str, body: Option<&Value>) -> Result<Reply> {
        let url = format!("{}{path}", self.api_url(i));
        let call = async {
            match body {
                Some(b) => self.http.json(method.clone(), &url, b).await,
                None => self.http.send(method.clone(), &url, "", &[]).await,
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, call).await.map_err(|_| anyhow!("{method} {url}: no answer within {REQUEST_TIMEOUT:?}"))?
    }

    /// `GET /v1/cluster` from node `i`, failing fast if it does not answer.
    pub async fn status(&self, i: u64) -> Result<Value> {
        fetch_status(&self.http, i, &self.api_url(i)).await
    }

    /// Every node's status, or why it has none, in id order.
    pub async fn statuses(&self) -> Vec<(u64, Result<Value>)> {
        // All at once: asking in turn would make each paused node cost a whole timeout per poll.
        let tasks: Vec<_> = self
            .nodes
            .iter()
            .map(|&i| {
                let (http, api) = (self.http.clone(), self.api_url(i));
                (i, tokio::spawn(async move { fetch_status(&http, i, &api).await }))
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for (i, task) in tasks {
            out.push((i, task.await.unwrap_or_else(|e| Err(anyhow!("node {i}: the status task failed: {e}")))));
        }
        out
    }

    /// The leader that a majority of voters reports for the same term, asking every reachable
    /// node; `None` while there is none (an election under way, or no quorum reachable).
    pub async fn leader(&self) -> Result<Option<u64>> {
        Ok(agreed_leader(&self.statuses().await, self.nodes.len()))
    }

    /// Waits until a majority agrees on a leader other than `excluding`, and returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration, excluding: Option<u64>) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.statuses().await;
            if let Some(l) = agreed_leader(&statuses, self.nodes.len()) {
                if Some(l) != excluding {
                    return Ok(l);
                }
            }
            if Instant::now() >= deadline {
                let not = excluding.map(|e| format!(" other than {e}")).unwrap_or_default();
                bail!("no leader{not} agreed by a majority within {timeout:?}\n{}", self.report(&statuses).await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every node answers and all name the same leader, which says it leads.
    pub async fn wait_until_all_know_a_leader(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.statuses().await;
            let leaders: BTreeSet<Option<u64>> = statuses.iter().map(|(_, s)| s.as_ref().ok().and_then(|v| v["leader"].as_u64())).collect();
            if let [Some(l)] = leaders.into_iter().collect::<Vec<_>>()[..] {
                let leads = statuses.iter().any(|(i, s)| *i == l && s.as_ref().is_ok_and(|v| v["role"] == "leader"));
                if leads {
                    return Ok(l);
                }
            }
            if Instant::now() >= deadline {
                let hint = if statuses.iter().all(|(_, s)| s.is_err()) {
                    format!(
                        "\nno node answered at all: if the logs below look healthy, this process cannot reach the containers' IPs \
                         (it must run on the Docker host, with Linux bridge networking; try `curl {}/healthz`)",
                        self.api_url(1)
                    )
                } else {
                    String::new()
                };
                bail!("the nodes did not all agree on a leader within {timeout:?}{hint}\n{}", self.report(&statuses).await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Each node's status and the tail of its log, for failure messages.
    pub async fn report(&self, statuses: &[(u64, Result<Value>)]) -> String {
        let mut out = String::new();
        for (i, s) in statuses {
            let status = match s {
                Ok(v) => v.to_string(),
                Err(e) => format!("{e:#}"),
            };
            let state = docker(&["inspect", "-f", "{{.State.Status}} (exit {{.State.ExitCode}})", &self.container(*i)]).await.unwrap_or_else(|e| format!("{e:#}"));
            let logs = self.logs_tail(*i, 30).await.unwrap_or_else(|e| format!("{e:#}"));
            out.push_str(&format!("--- node {i} ({}, container {}): {status}\n{logs}\n", self.ip(*i), state.trim()));
        }
        out
    }

    /// `e` with every node's status and log tail appended: what a failed test should return.
    pub async fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        let report = self.report(&self.statuses().await).await;
        anyhow!("{e:#}\n{report}")
    }

    /// The whole log (stdout and stderr) of node `i`'s container, across restarts.
    pub async fn logs(&self, i: u64) -> Result<String> {
        docker_output(&["logs", &self.container(i)], true).await
    }

    pub async fn logs_tail(&self, i: u64, lines: usize) -> Result<String> {
        docker_output(&["logs", "--tail", &lines.to_string(), &self.container(i)], true).await
    }

    /// SIGKILL node `i`: no shutdown, no flush beyond what it already made durable.
    pub async fn kill(&self, i: u64) -> Result<()> {
        docker(&["kill", "--signal", "KILL", &self.container(i)]).await.map(drop)
    }

    /// Starts node `i` again after `kill` (or a crash): same container, same IP, same /data.
    pub async fn start_node(&self, i: u64) -> Result<()> {
        docker(&["start", &self.container(i)]).await.map(drop)
    }

    /// SIGTERM node `i` and wait for it to exit (a clean shutdown).
    pub async fn stop(&self, i: u64) -> Result<()> {
        docker(&["stop", "--time", "10", &self.container(i)]).await.map(drop)
    }

    /// Freezes node `i`'s processes; its network stays up, so peers' connections hang
    /// rather than fail, like a long GC pause or a stuck host.
    pub async fn pause(&self, i: u64) -> Result<()> {
        docker(&["pause", &self.container(i)]).await.map(drop)
    }

    pub async fn unpause(&self, i: u64) -> Result<()> {
        docker(&["unpause", &self.container(i)]).await.map(drop)
    }

    /// Cuts node `i` off the cluster network (it keeps running; it can reach no one and no
    /// one, including this test, can reach it).
    pub async fn disconnect(&self, i: u64) -> Result<()> {
        docker(&["network", "disconnect", &self.network, &self.container(i)]).await.map(drop)
    }

    /// Reconnects node `i` after `disconnect`, at its old IP so the peers' addresses stay valid.
    pub async fn connect(&self, i: u64) -> Result<()> {
        docker(&["network", "connect", "--ip", &self.ip(i), &self.network, &self.container(i)]).await.map(drop)
    }

    /// Starts node `i` with `--join`: running but no member until the cluster adds it, e.g. with
    /// `add_member`. Returns once its API answers.
    pub async fn add_node(&mut self, i: u64) -> Result<()> {
        anyhow::ensure!((1..=200).contains(&i), "node id {i}: use 1 to 200");
        anyhow::ensure!(!self.nodes.contains(&i), "node {i} already exists in cluster {}; ids are never reused", self.name);
        self.run_container(i, &["--join"]).await?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let reply = tokio::time::timeout(STATUS_TIMEOUT, self.http.get(&format!("{}/healthz", self.api_url(i)))).await;
            if matches!(reply, Ok(Ok(ref r)) if r.status.is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let logs = self.logs_tail(i, 30).await.unwrap_or_default();
                bail!("joining node {i} did not answer {}/healthz within 15 s; its log:\n{logs}", self.api_url(i));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asks node `via` to add node `i` as a member (a voter once caught up, unless `learner`).
    /// Only the leader makes membership changes: a follower answers 421 `not_leader`
    /// (see `add_member_at_leader`).
    pub async fn add_member(&self, via: u64, i: u64, learner: bool) -> Result<Reply> {
        let body = serde_json::json!({"id": i, "raft_addr": self.raft_addr(i), "learner": learner});
        self.request(via, Method::POST, "/v1/cluster/members", Some(&body)).await
    }

    /// Asks node `via` to remove member `i` (only the leader accepts it, as with `add_member`).
    pub async fn remove_member(&self, via: u64, i: u64) -> Result<Reply> {
        self.request(via, Method::DELETE, &format!("/v1/cluster/members/{i}"), None).await
    }

    /// Adds node `i` through whichever node leads, following leader changes for up to 10 s;
    /// fails unless the change is accepted.
    pub async fn add_member_at_leader(&self, i: u64, learner: bool) -> Result<Value> {
        self.at_leader(&format!("adding member {i}"), |c, leader| async move { c.add_member(leader, i, learner).await }).await
    }

    /// Removes member `i` through whichever node leads, as `add_member_at_leader`.
    pub async fn remove_member_at_leader(&self, i: u64) -> Result<Value> {
        self.at_leader(&format!("removing member {i}"), |c, leader| async move { c.remove_member(leader, i).await }).await
    }

    /// Sends `call` to the agreed leader, again while the answer says leadership moved.
    async fn at_leader<'a, F, Fut>(&'a self, what: &str, call: F) -> Result<Value>
    where
        F: Fn(&'a Self, u64) -> Fut,
        Fut: std::future::Future<Output = Result<Reply>>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leader = self.wait_for_leader(deadline.saturating_duration_since(Instant::now()), None).await?;
            let reply = call(self, leader).await?;
            if reply.status.is_success() {
                return reply.json();
            }
            let code = reply.json().ok().and_then(|v| v["error"]["code"].as_str().map(str::to_string)).unwrap_or_default();
            if !matches!(code.as_str(), "not_leader" | "no_leader") || Instant::now() >= deadline {
                bail!("{what} via leader {leader}: {} {}", reply.status, reply.text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Removes the containers and the network, reporting what could not be removed.
    pub async fn destroy(mut self) -> Result<()> {
        self.destroyed = true;
        if keep() {
            tracing::warn!(cluster = %self.name, "SLUICE_TEST_KEEP is set: leaving the containers and network {} in place", self.network);
            return Ok(());
        }
        remove_leftovers(&self.name, &self.network).await
    }

    async fn run_container(&mut self, i: u64, membership: &[&str]) -> Result<()> {
        let container = self.container(i);
        let (label, ip, id) = (format!("{LABEL}={}", self.name), self.ip(i), i.to_string());
        let (rust_log, advertise) = (format!("RUST_LOG={}", self.options.rust_log), self.raft_addr(i));
        let (heartbeat, election) = (self.options.heartbeat_ms.to_string(), self.options.election_ms.to_string());
        let bus = self.bus_url();
        let (api, gateway, raft) = (format!("0.0.0.0:{API_PORT}"), format!("0.0.0.0:{GATEWAY_PORT}"), format!("0.0.0.0:{RAFT_PORT}"));
        let mut args = vec![
            "run",
            "--detach",
            "--name",
            &container,
            "--hostname",
            &container,
            "--label",
            &label,
            "--network",
            &self.network,
            "--ip",
            &ip,
            "--env",
            &rust_log,
            // Plain logs: they end up in test failure messages, not on a terminal.
            "--env",
            "NO_COLOR=1",
            IMAGE,
            "coordinator",
            // Raft fault tests: no prediction needed.
            "--predict-policy",
            "off",
            // Nor tokens: the private network is the test's own.
            "--auth",
            "off",
            "--insecure-expose-without-auth",
            // Nor digests: the registry is on the host's loopback, out of the containers' reach.
            "--no-image-pinning",
            "--id",
            &id,
            "--api",
            &api,
            "--gateway",
            &gateway,
            "--raft",
            &raft,
            "--advertise-raft",
            &advertise,
            "--data-dir",
            "/data",
            "--heartbeat-ms",
            &heartbeat,
            "--election-ms",
            &election,
            "--bus",
            &bus,
        ];
        args.extend_from_slice(membership);
        // Recorded first: `docker run` can create the container and then fail to start it, and
        // its status and logs still belong in reports.
        self.nodes.insert(i);
        docker(&args).await.with_context(|| format!("starting coordinator {i} of cluster {}", self.name))?;
        Ok(())
    }
}

impl Drop for DockerCluster {
    /// Best effort and synchronous, so that a panicking test still cleans up after itself.
    fn drop(&mut self) {
        if self.destroyed {
            return;
        }
        if keep() {
            eprintln!("SLUICE_TEST_KEEP is set: leaving containers sluice-{}-* and network {} in place", self.name, self.network);
            return;
        }
        // By label rather than by name, so that containers that never started go too.
        let filter = format!("label={LABEL}={}", self.name);
        let removed = docker_blocking(&["ps", "--all", "--quiet", "--filter", &filter], false).and_then(|ids| {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if ids.is_empty() {
                return Ok(String::new());
            }
            let mut args = vec!["rm", "--force", "--volumes"];
            args.extend(ids);
            docker_blocking(&args, false)
        });
        if let Err(e) = removed {
            eprintln!("could not remove the containers of cluster {}: {e:#}; remove them with: docker rm -f $(docker ps -aq --filter {filter})", self.name);
        }
        if let Err(e) = docker_blocking(&["network", "rm", &self.network], false) {
            eprintln!("could not remove network {}: {e:#}; remove it with: docker network rm {}", self.network, self.network);
        }
    }
}

/// Set `SLUICE_TEST_KEEP=1` to keep a failed test's containers for `docker logs` / `exec`.
fn keep() -> bool {
    std::env::var("SLUICE_TEST_KEEP").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The leader reported by a majority of voters for one term. Nodes that do not answer count
/// against it, so a minority partition never "agrees" on its stale leader.
fn agreed_leader(statuses: &[(u64, Result<Value>)], nodes: usize) -> Option<u64> {
    let answered: Vec<&Value> = statuses.iter().filter_map(|(_, s)| s.as_ref().ok()).collect();
    // Voters as the members list says; containers the cluster never added are no voters.
    let voters = answered.iter().map(|v| v["members"].as_array().map_or(0, |m| m.iter().filter(|m| m["role"] == "voter").count())).max().filter(|&n| n > 0).unwrap_or(nodes);
    let mut votes: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for v in &answered {
        if let (Some(leader), Some(term)) = (v["leader"].as_u64(), v["term"].as_u64()) {
            *votes.entry((leader, term)).or_default() += 1;
        }
    }
    votes.into_iter().find(|&(_, n)| n > voters / 2).map(|((leader, _), _)| leader)
}

/// `GET /v1/cluster` at `api` (node `i`'s API URL).
async fn fetch_status(http: &Http, i: u64, api: &str) -> Result<Value> {
    let url = format!("{api}/v1/cluster");
    let reply = tokio::time::timeout(STATUS_TIMEOUT, http.get(&url))
        .await
        .map_err(|_| anyhow!("node {i}: GET {url} got no answer within {STATUS_TIMEOUT:?} (paused, disconnected or down?)"))??;
    anyhow::ensure!(reply.status.is_success(), "node {i}: GET {url} answered {} {}", reply.status, reply.text());
    reply.json()
}

/// Fails with what to do if the Docker daemon is unreachable or the image is missing.
async fn preflight() -> Result<()> {
    docker(&["version", "--format", "{{.Server.Version}}"]).await.context("cannot talk to the Docker daemon: start it (and check this user may use /var/run/docker.sock)")?;
    docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE])
        .await
        .with_context(|| format!("image {IMAGE} is missing: run scripts/build-images.sh sluice (and again after changing the coordinator)"))?;
    Ok(())
}

/// Removes the containers labelled as cluster `name`, then its network.
async fn remove_leftovers(name: &str, network: &str) -> Result<()> {
    let ids = docker(&["ps", "--all", "--quiet", "--filter", &format!("label={LABEL}={name}")]).await?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "--force", "--volumes"];
        args.extend(ids);
        docker(&args).await.with_context(|| format!("removing the containers of cluster {name}"))?;
    }
    let exists = docker(&["network", "ls", "--quiet", "--filter", &format!("name=^{network}$")]).await?;
    if !exists.trim().is_empty() {
        docker(&["network", "rm", network]).await.with_context(|| format!("removing network {network}: `docker network inspect {network}` shows what still uses it"))?;
    }
    Ok(())
}

/// Creates the bridge network with a /24 in 172.30.20-219.x picked from the name, trying the
/// following ones if another network (another test running now, or a leftover) holds it.
async fn create_network(name: &str, network: &str) -> Result<String> {
    let start = fnv1a(name.as_bytes()) % 200;
    let mut last = None;
    for k in 0..200 {
        let prefix = format!("172.30.{}", (start + k) % 200 + 20);
        let subnet = format!("{prefix}.0/24");
        let label = format!("{LABEL}={name}");
        match docker(&["network", "create", "--driver", "bridge", "--subnet", &subnet, "--gateway", &format!("{prefix}.1"), "--label", &label, network]).await {
            Ok(_) => return Ok(prefix),
            Err(e) if format!("{e:#}").contains("overlap") => last = Some(e),
            Err(e) => return Err(e.context(format!("creating network {network} ({subnet})"))),
        }
    }
    Err(last
        .unwrap_or_else(|| anyhow!("no subnet tried"))
        .context(format!("every 172.30.20-219.0/24 is taken; remove stale test networks: docker network ls --filter label={LABEL}")))
}

/// FNV-1a: stable across Rust versions and runs, unlike `DefaultHasher`'s promise.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Runs `docker args...` off the async threads and returns its stdout.
async fn docker(args: &[&str]) -> Result<String> {
    docker_output(args, false).await
}

/// As `docker`, with stderr appended to stdout if `merge` (for `docker logs`, whose stderr is
/// the container's).
async fn docker_output(args: &[&str], merge: bool) -> Result<String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_blocking(&args, merge)
    })
    .await
    .context("the docker CLI task panicked")?
}

fn docker_blocking(args: &[&str], merge: bool) -> Result<String> {
    let out = Command::new("docker").args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("the docker CLI is not installed (or not on PATH): install Docker Engine")
        } else {
            anyhow!("cannot run docker: {e}")
        }
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("`docker {}` failed ({}): {}", args.join(" "), out.status, stderr.trim());
    }
    Ok(if merge { stdout + &stderr } else { stdout })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn st(leader: Option<u64>, term: u64) -> Result<Value> {
        Ok(json!({"leader": leader, "term": term, "members": [{"id": 1, "role": "voter"}, {"id": 2, "role": "voter"}, {"id": 3, "role": "voter"}]}))
    }

    #[test]
    fn a_leader_needs_a_majority_of_voters_in_one_term() {
        let down = || Err(anyhow!("down"));
        assert_eq!(agreed_leader(&[(1, st(Some(1), 2)), (2, st(Some(1), 2)), (3, down())], 3), Some(1));
        // A deposed leader alone in a partition still believes in itself.
        assert_eq!(agreed_leader(&[(1, st(Some(1), 2)), (2, down()), (3, down())], 3), None);
        assert_eq!(agreed_leader(&[(1, st(Some(1), 2)), (2, st(Some(1), 3)), (3, st(None, 3))], 3), None);
        assert_eq!(agreed_leader(&[(1, down()), (2, st(Some(3), 4)), (3, st(Some(3), 4))], 3), Some(3));
    }

    #[test]
    fn subnets_are_stable_per_name() {
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv1a(b"smoke"), fnv1a(b"smoke2"));
    }
}
