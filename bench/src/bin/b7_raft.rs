//! B7: Raft among 3 coordinators on loopback, fsync on. In one run:
//!
//! 1. References: the raw fsync rate of the filesystem the logs live on (one
//!    thread: write ~200 bytes + fdatasync), and one sequential client through
//!    Sluice (one write outstanding at a time: the latency-bound rate).
//! 2. Committed writes/s with batching (the default) from `--clients` keep-alive
//!    clients to the leader; p50/p99 latency, errors, writes/s ÷ fsyncs/s.
//! 3. The same against a fresh cluster run with `--raft-max-batch 1`.
//! 4. Failover: with `--failover-clients` background writers, `--kills` rounds of
//!    SIGKILL the leader, time until the survivors agree on a new leader and until
//!    the first write sent after the kill commits, restart the killed coordinator
//!    and time its catch-up. Then every acknowledged write is read back.
//!
//! Coordinators are separate `sluice coordinator` processes, killed on exit (also
//! on a panic or Ctrl-C). Prints the figures and their ratios and writes
//! `bench/results/b7.json`.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sluice_tests::{Http, Method};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const IMAGE: &str = "127.0.0.1:5000/sluice/hello:latest";
const GOAL_WRITES: f64 = 5000.0;
const GOAL_FAILOVER_S: f64 = 2.0;
const USAGE: &str = "\
usage: b7_raft [--seconds 10] [--warmup 2] [--seq-seconds 5] [--clients 64] [--kills 20]
               [--failover-clients 4] [--fsync-seconds 3] [--heartbeat-ms 150] [--election-ms 1000]
               [--names 0 (every write creates a function; N: the throughput phases update N functions)]
               [--dir $HOME/.cache/sluice/b7] [--sluice $CARGO_TARGET_DIR/release/sluice] [--keep]";

#[derive(Debug, Clone)]
struct Args {
    seconds: f64,
    warmup: f64,
    seq_seconds: f64,
    clients: usize,
    kills: usize,
    failover_clients: usize,
    fsync_seconds: f64,
    heartbeat_ms: u64,
    election_ms: u64,
    /// 0: every throughput write creates a new function; N: writes update N functions.
    names: usize,
    dir: PathBuf,
    sluice: PathBuf,
    keep: bool,
}

impl Args {
    fn parse() -> Result<Self> {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| home.join(".cache/sluice/target"));
        let mut a = Args {
            seconds: 10.0,
            warmup: 2.0,
            seq_seconds: 5.0,
            clients: 64,
            kills: 20,
            failover_clients: 4,
            fsync_seconds: 3.0,
            heartbeat_ms: 150,
            election_ms: 1000,
            names: 0,
            dir: home.join(".cache/sluice/b7"),
            sluice: std::env::var_os("SLUICE").map(PathBuf::from).unwrap_or_else(|| target.join("release/sluice")),
            keep: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let (key, inline) = match arg.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (arg.clone(), None),
            };
            if key == "--help" || key == "-h" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            if key == "--keep" {
                a.keep = true;
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => it.next().with_context(|| format!("{key} needs a value\n{USAGE}"))?,
            };
            let bad = || format!("{key} {value:?}: not a valid value\n{USAGE}");
            match key.as_str() {
                "--seconds" => a.seconds = value.parse().ok().filter(|s: &f64| *s > 0.0).with_context(bad)?,
                "--warmup" => a.warmup = value.parse().ok().filter(|s: &f64| *s >= 0.0).with_context(bad)?,
                "--seq-seconds" => a.seq_seconds = value.parse().ok().filter(|s: &f64| *s > 0.0).with_context(bad)?,
                "--clients" => a.clients = value.parse().ok().filter(|n| *n > 0).with_context(bad)?,
                "--kills" => a.kills = value.parse().with_context(bad)?,
                "--failover-clients" => a.failover_clients = value.parse().ok().filter(|n| *n > 0).with_context(bad)?,
                "--fsync-seconds" => a.fsync_seconds = value.parse().ok().filter(|s: &f64| *s > 0.0).with_context(bad)?,
                "--heartbeat-ms" => a.heartbeat_ms = value.parse().with_context(bad)?,
                "--election-ms" => a.election_ms = value.parse().with_context(bad)?,
                "--names" => a.names = value.parse().with_context(bad)?,
                "--dir" => a.dir = PathBuf::from(value),
                "--sluice" => a.sluice = PathBuf::from(value),
                _ => bail!("unknown argument {key}\n{USAGE}"),
            }
        }
        Ok(a)
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One coordinator process.
struct Node {
    id: u64,
    api: SocketAddr,
    gateway: SocketAddr,
    raft: SocketAddr,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Three coordinators on loopback; every process is killed when this is dropped.
struct Coordinators {
    nodes: Vec<Node>,
    sluice: PathBuf,
    initial: String,
    extra: Vec<String>,
}

/// Ports the OS hands out now; they are free again when this returns (a small race we accept).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

impl Coordinators {
    /// Starts 3 coordinators with fresh data directories under `base`.
    fn start(sluice: &Path, base: &Path, extra: &[String]) -> Result<Self> {
        if base.exists() {
            std::fs::remove_dir_all(base).with_context(|| format!("removing {}", base.display()))?;
        }
        std::fs::create_dir_all(base.join("logs"))?;
        let ports = free_ports(9)?;
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let nodes: Vec<Node> = (0..3)
            .map(|i| Node {
                id: i as u64 + 1,
                api: addr(ports[i * 3]),
                gateway: addr(ports[i * 3 + 1]),
                raft: addr(ports[i * 3 + 2]),
                data: base.join(format!("node-{}", i + 1)),
                log: base.join("logs").join(format!("node-{}.log", i + 1)),
                child: None,
            })
            .collect();
        let initial = nodes.iter().map(|n| format!("{}={}", n.id, n.raft)).collect::<Vec<_>>().join(",");
        let mut c = Coordinators { nodes, sluice: sluice.to_path_buf(), initial, extra: extra.to_vec() };
        for i in 0..3 {
            c.spawn(i)?;
        }
        Ok(c)
    }

    /// Starts (or restarts, with the same data directory and arguments) coordinator `i`.
    fn spawn(&mut self, i: usize) -> Result<()> {
        let n = &self.nodes[i];
        let log = OpenOptions::new().create(true).append(true).open(&n.log)?;
        let mut cmd = Command::new(&self.sluice);
        cmd.arg("coordinator")
            // Raft throughput on loopback: no tokens.
            .args(["--auth", "off", "--no-image-pinning"])
            .args(["--id", &n.id.to_string()])
            .args(["--api", &n.api.to_string()])
            .args(["--gateway", &n.gateway.to_string()])
            .args(["--raft", &n.raft.to_string()])
            .args(["--initial-cluster", &self.initial])
            .arg("--data-dir")
            .arg(&n.data)
            .args(&self.extra)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().with_context(|| format!("starting {} (build it: cargo build --release -p sluice-cli)", self.sluice.display()))?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// SIGKILLs coordinator `i` and reaps it.
    fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    fn kill_all(&mut self) {
        for i in 0..self.nodes.len() {
            let _ = self.kill(i);
        }
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.nodes[i].api)
    }

    fn index_of(&self, id: u64) -> usize {
        self.nodes.iter().position(|n| n.id == id).unwrap()
    }

    /// Any coordinator that exited on its own, with the tail of its log.
    fn check_alive(&mut self) -> Result<()> {
        for n in &mut self.nodes {
            if let Some(child) = &mut n.child {
                if let Some(status) = child.try_wait()? {
                    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    bail!("coordinator {} exited by itself ({status}); last lines of {}:\n{}", n.id, n.log.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
                }
            }
        }
        Ok(())
    }

    async fn status(&self, http: &Http, i: usize) -> Option<Value> {
        let reply = tokio::time::timeout(Duration::from_secs(1), http.get(&self.url(i, "/v1/cluster"))).await.ok()?.ok()?;
        reply.status.is_success().then(|| reply.json().ok()).flatten()
    }

    /// The leader that every coordinator in `among` reports, if they agree and it is one of them.
    async fn agreed_leader(&self, http: &Http, among: &[usize]) -> Option<u64> {
        let mut agreed = None;
        for &i in among {
            let leader = self.status(http, i).await?.get("leader")?.as_u64()?;
            if agreed.is_some_and(|a| a != leader) {
                return None;
            }
            agreed = Some(leader);
        }
        agreed.filter(|l| among.iter().any(|&i| self.nodes[i].id == *l))
    }

    async fn wait_leader(&mut self, http: &Http, among: &[usize], timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.agreed_leader(http, among).await {
                return Ok(l);
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("coordinators {among:?} agreed on no leader within {timeout:?}; logs in {}", self.nodes[0].log.parent().unwrap().display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Coordinators {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Raw fsync rate: one thread appending ~200 bytes then fdatasync, for `secs`.
fn measure_fsync(dir: &Path, secs: f64) -> Result<(f64, f64, f64, u64)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("fsync.test");
    let mut f: File = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let buf = [b'x'; 200];
    let (started, limit) = (Instant::now(), Duration::from_secs_f64(secs));
    let mut lat = Vec::new();
    while started.elapsed() < limit {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        lat.push(ms(t.elapsed()));
    }
    let rate = lat.len() as f64 / started.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok((rate, percentile(&lat, 0.5), percentile(&lat, 0.99), lat.len() as u64))
}

/// The filesystem type of `dir` (`df -PT`).
fn fs_type(dir: &Path) -> Result<String> {
    let out = Command::new("df").arg("-PT").arg(dir).output().context("running df")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1).context("df printed nothing")?;
    let cols: Vec<&str> = line.split_whitespace().collect();
    Ok(format!("{} on {}", cols.get(1).unwrap_or(&"?"), cols.first().unwrap_or(&"?")))
}

fn write_body(name: &str, value: &str) -> Value {
    json!({"name": name, "image": IMAGE, "env": {"V": value}})
}

fn value_of(name: &str) -> String {
    format!("v.{name}")
}

#[derive(Debug, Default)]
struct Load {
    writes: u64,
    errors: u64,
    secs: f64,
    lat_ms: Vec<f64>,
    first_errors: Vec<String>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.writes as f64 / self.secs
    }
    fn json(&self) -> Value {
        json!({"writes": self.writes, "seconds": self.secs, "writes_per_s": self.rate(), "errors": self.errors,
               "latency_ms": {"p50": percentile(&self.lat_ms, 0.5), "p99": percentile(&self.lat_ms, 0.99), "max": percentile(&self.lat_ms, 1.0)},
               "first_errors": self.first_errors})
    }
    fn line(&self) -> String {
        format!(
            "{:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms, {} errors ({} writes in {:.1} s)",
            self.rate(),
            percentile(&self.lat_ms, 0.5),
            percentile(&self.lat_ms, 0.99),
            self.errors,
            self.writes,
            self.secs
        )
    }
}

/// `clients` tasks, each POSTing functions to `url` back to back, counting the
/// writes answered in [warmup, warmup + secs). Every write creates a function
/// with a new name, or with `names` > 0 updates one of `names` functions (a
/// unique value each time).
async fn load(http: &Http, url: &str, clients: usize, warmup: f64, secs: f64, prefix: &str, names: usize) -> Result<Load> {
    let start = Instant::now() + Duration::from_secs_f64(warmup);
    let end = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for task in 0..clients {
        let (http, url, prefix) = (http.clone(), url.to_string(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut out = Load::default();
            let per_task = names.div_ceil(clients) as u64;
            for seq in 0u64.. {
                let name = if names == 0 { format!("{prefix}-{task}-{seq}") } else { format!("{prefix}-{task}-{}", seq % per_task) };
                let sent = Instant::now();
                let reply = http.json(Method::POST, &url, &write_body(&name, &format!("{task}.{seq}"))).await;
                let done = Instant::now();
                let counted = done >= start && done < end;
                match reply {
                    Ok(r) if r.status.is_success() => {
                        if counted {
                            out.writes += 1;
                            out.lat_ms.push(ms(done - sent));
                        }
                    }
                    other => {
                        if counted {
                            out.errors += 1;
                            if out.first_errors.len() < 3 {
                                out.first_errors.push(match other {
                                    Ok(r) => format!("{} {}", r.status, r.text()),
                                    Err(e) => format!("{e:#}"),
                                });
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                if done >= end {
                    break;
                }
            }
            out
        }));
    }
    let mut total = Load { secs, ..Load::default() };
    for t in tasks {
        let l = t.await?;
        total.writes += l.writes;
        total.errors += l.errors;
        total.lat_ms.extend(l.lat_ms);
        for e in l.first_errors {
            if total.first_errors.len() < 5 {
                total.first_errors.push(e);
            }
        }
    }
    Ok(total)
}

/// A write that was acknowledged (2xx): its name, when it was sent and answered.
struct Acked {
    name: String,
    sent: Instant,
    done: Instant,
}

/// Background writers for the failover phase: they write to the coordinator in
/// `hint` and move on to the next one when theirs fails.
struct Writers {
    acked: Arc<Mutex<Vec<Acked>>>,
    failed: Arc<AtomicU64>,
    hint: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(http: &Http, urls: Vec<String>, clients: usize, leader: usize) -> Self {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicU64::new(0));
        let hint = Arc::new(AtomicUsize::new(leader));
        let stop = Arc::new(AtomicBool::new(false));
        let urls = Arc::new(urls);
        let tasks = (0..clients)
            .map(|task| {
                let (http, urls, acked, failed, hint, stop) = (http.clone(), urls.clone(), acked.clone(), failed.clone(), hint.clone(), stop.clone());
                tokio::spawn(async move {
                    let (mut seen, mut cur) = (usize::MAX, 0);
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let h = hint.load(Ordering::Relaxed);
                        if h != seen {
                            (seen, cur) = (h, h);
                        }
                        let name = format!("f-{task}-{seq}");
                        seq += 1;
                        let sent = Instant::now();
                        let reply = tokio::time::timeout(Duration::from_secs(30), http.json(Method::POST, &urls[cur], &write_body(&name, &value_of(&name)))).await;
                        match reply {
                            Ok(Ok(r)) if r.status.is_success() => acked.lock().unwrap().push(Acked { name, sent, done: Instant::now() }),
                            _ => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                cur = (cur + 1) % urls.len();
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Writers { acked, failed, hint, stop, tasks }
    }

    /// When the first write sent at or after `at` was acknowledged.
    fn first_commit_after(&self, at: Instant) -> Option<Instant> {
        self.acked.lock().unwrap().iter().filter(|a| a.sent >= at).map(|a| a.done).min()
    }

    async fn stop(self) -> Result<(Vec<String>, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await?;
        }
        let names = std::mem::take(&mut *self.acked.lock().unwrap()).into_iter().map(|a| a.name).collect();
        Ok((names, self.failed.load(Ordering::Relaxed)))
    }
}

#[derive(Debug)]
struct Round {
    killed: u64,
    new_leader: u64,
    elect_ms: f64,
    first_write_ms: f64,
    probe_ms: f64,
    catch_up_ms: f64,
    catch_up_target: u64,
}

/// Writes to coordinator `i` until one succeeds; its name goes into `acked`.
async fn probe(c: &Coordinators, http: &Http, i: usize, name: &str, deadline: Instant) -> Result<()> {
    loop {
        let reply = tokio::time::timeout(Duration::from_secs(30), http.json(Method::POST, &c.url(i, "/v1/functions"), &write_body(name, &value_of(name)))).await;
        if matches!(&reply, Ok(Ok(r)) if r.status.is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no write to the new leader {} succeeded (last reply: {reply:?})", c.nodes[i].id);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn failover(c: &mut Coordinators, http: &Http, args: &Args) -> Result<(Vec<Round>, Vec<String>, u64)> {
    let all = [0, 1, 2];
    let leader = c.wait_leader(http, &all, Duration::from_secs(30)).await?;
    let urls = (0..3).map(|i| c.url(i, "/v1/functions")).collect();
    let writers = Writers::start(http, urls, args.failover_clients, c.index_of(leader));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut rounds, mut probes) = (Vec::new(), Vec::new());
    for round in 1..=args.kills {
        let leader = c.wait_leader(http, &all, Duration::from_secs(30)).await?;
        let li = c.index_of(leader);
        let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != li).collect();
        let killed_at = Instant::now();
        c.kill(li)?;
        // (a) the survivors agree on a new leader; (b) a write sent after the kill commits.
        // (c) one write sent to the new leader as soon as it is known (the probe).
        let (mut elected, mut new_leader, mut first_write, mut probed) = (None, 0, None, None);
        let deadline = killed_at + Duration::from_secs(30);
        while elected.is_none() || first_write.is_none() {
            if elected.is_none() {
                if let Some(l) = c.agreed_leader(http, &survivors).await {
                    elected = Some(killed_at.elapsed());
                    new_leader = l;
                    writers.hint.store(c.index_of(l), Ordering::Relaxed);
                    let name = format!("p-{round}");
                    probe(c, http, c.index_of(l), &name, deadline).await?;
                    probed = Some(killed_at.elapsed());
                    probes.push(name);
                }
            }
            if first_write.is_none() {
                first_write = writers.first_commit_after(killed_at).map(|t| t - killed_at);
            }
            c.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "round {round}: after killing leader {leader}: new leader agreed: {elected:?}, first write committed: {first_write:?} after 30 s; logs in {}",
                    c.nodes[0].log.parent().unwrap().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Restart the killed coordinator and wait until it has applied what was committed.
        let target = c.status(http, c.index_of(new_leader)).await.and_then(|s| s.get("commit")?.as_u64()).context("the new leader does not answer /v1/cluster")?;
        let restarted_at = Instant::now();
        c.spawn(li)?;
        let catch_up = loop {
            if let Some(s) = c.status(http, li).await {
                if s.get("leader").and_then(Value::as_u64) == Some(new_leader) && s.get("applied").and_then(Value::as_u64).is_some_and(|a| a >= target) {
                    break restarted_at.elapsed();
                }
            }
            c.check_alive()?;
            if restarted_at.elapsed() > Duration::from_secs(60) {
                bail!("round {round}: restarted coordinator {leader} did not catch up to {target} in 60 s; log: {}", c.nodes[li].log.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let r = Round {
            killed: leader,
            new_leader,
            elect_ms: ms(elected.unwrap()),
            first_write_ms: ms(first_write.unwrap()),
            probe_ms: ms(probed.unwrap()),
            catch_up_ms: ms(catch_up),
            catch_up_target: target,
        };
        eprintln!(
            "b7: failover {round}/{}: killed {} -> leader {} in {:.0} ms, first background write {:.0} ms, probe write {:.0} ms, restarted node caught up to {} in {:.0} ms",
            args.kills, r.killed, r.new_leader, r.elect_ms, r.first_write_ms, r.probe_ms, r.catch_up_target, r.catch_up_ms
        );
        rounds.push(r);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut acked, failed) = writers.stop().await?;
    acked.extend(probes);
    Ok((rounds, acked, failed))
}

/// Reads back acknowledged writes: every one in each coordinator's full list,
/// and a random sample of up to 1000 one by one. Returns (lost names, sampled).
async fn verify(c: &Coordinators, http: &Http, names: &[String]) -> Result<(Vec<String>, usize)> {
    let mut lost = std::collections::BTreeSet::new();
    for i in 0..3 {
        let reply = http.get(&c.url(i, "/v1/functions")).await?;
        if !reply.status.is_success() {
            bail!("GET /v1/functions on coordinator {}: {} {}", c.nodes[i].id, reply.status, reply.text());
        }
        let list = reply.json()?;
        let have: std::collections::HashMap<&str, &str> = list
            .as_array()
            .context("GET /v1/functions is not a list")?
            .iter()
            .filter_map(|f| Some((f.pointer("/spec/name")?.as_str()?, f.pointer("/spec/env/V")?.as_str()?)))
            .collect();
        for n in names {
            if have.get(n.as_str()).copied() != Some(value_of(n).as_str()) {
                lost.insert(n.clone());
            }
        }
    }
    // Sample with a small xorshift: no need for a crate.
    let mut seed = Instant::now().elapsed().as_nanos() as u64 ^ std::process::id() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    let mut sample: Vec<&String> = names.iter().collect();
    let k = sample.len().min(1000);
    for i in 0..k {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let j = i + (seed % (sample.len() - i) as u64) as usize;
        sample.swap(i, j);
    }
    sample.truncate(k);
    let missing = Arc::new(Mutex::new(Vec::new()));
    let chunks: Vec<Vec<String>> = sample.chunks(k.div_ceil(16).max(1)).map(|c| c.iter().map(|s| s.to_string()).collect()).collect();
    let mut tasks = Vec::new();
    for (t, chunk) in chunks.into_iter().enumerate() {
        let (http, missing) = (http.clone(), missing.clone());
        let urls: Vec<String> = (0..3).map(|i| c.url(i, "/v1/functions/")).collect();
        tasks.push(tokio::spawn(async move {
            for (j, name) in chunk.into_iter().enumerate() {
                let url = format!("{}{name}", urls[(t + j) % 3]);
                let ok = match http.get(&url).await {
                    Ok(r) if r.status.is_success() => {
                        r.json().ok().and_then(|v| v.pointer("/function/spec/env/V").and_then(Value::as_str).map(str::to_string)) == Some(value_of(&name))
                    }
                    _ => false,
                };
                if !ok {
                    missing.lock().unwrap().push(name);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    lost.extend(missing.lock().unwrap().drain(..));
    Ok((lost.into_iter().collect(), k))
}

fn stats(v: &[f64]) -> Value {
    json!({"p50": percentile(v, 0.5), "p90": percentile(v, 0.9), "max": percentile(v, 1.0), "samples": v})
}

/// Starts 3 fresh coordinators with `extra` arguments and loads their leader.
async fn throughput(args: &Args, http: &Http, phase: &str, extra: &[String], clients: usize, warmup: f64, secs: f64) -> Result<Load> {
    let mut c = Coordinators::start(&args.sluice, &args.dir.join(phase), extra)?;
    let leader = c.wait_leader(http, &[0, 1, 2], Duration::from_secs(30)).await?;
    let url = c.url(c.index_of(leader), "/v1/functions");
    let result = load(http, &url, clients, warmup, secs, &phase[..1], args.names).await?;
    c.check_alive()?;
    Ok(result)
}

async fn run(args: &Args) -> Result<()> {
    if !args.sluice.exists() {
        bail!("{} not found: cargo build --release -p sluice-cli (or pass --sluice)", args.sluice.display());
    }
    std::fs::create_dir_all(&args.dir)?;
    let fs = fs_type(&args.dir)?;
    if fs.starts_with("tmpfs") || fs.starts_with("ramfs") {
        bail!("{} is on {fs}: fsync costs nothing there; pass --dir on a real disk", args.dir.display());
    }
    let http = Http::new();
    let timing = ["--heartbeat-ms".to_string(), args.heartbeat_ms.to_string(), "--election-ms".to_string(), args.election_ms.to_string()];

    // 1. The filesystem's fsync rate, measured before each throughput phase (the
    // disk may be shared); the reference is their median.
    let mut fsync = Vec::new();
    let mut measure = async || -> Result<()> {
        let (dir, secs) = (args.dir.clone(), args.fsync_seconds);
        let f = tokio::task::spawn_blocking(move || measure_fsync(&dir, secs)).await??;
        eprintln!("b7: fsync reference: {:.0}/s (p50 {:.2} ms, p99 {:.2} ms) on {} ({fs})", f.0, f.1, f.2, args.dir.display());
        fsync.push(f);
        Ok(())
    };
    measure().await?;
    // 2. The latency-bound reference, then batched (the default) and 3. batching
    // off, each on a fresh cluster so that none starts with the others' functions.
    let seq = throughput(args, &http, "sequential", &timing, 1, args.warmup.min(1.0), args.seq_seconds).await?;
    eprintln!("b7: sequential, batched: {}", seq.line());
    measure().await?;
    let batched = throughput(args, &http, "batched", &timing, args.clients, args.warmup, args.seconds).await?;
    eprintln!("b7: {} clients, batched: {}", args.clients, batched.line());
    measure().await?;
    let mut unbatched_args = timing.to_vec();
    unbatched_args.extend(["--raft-max-batch".to_string(), "1".to_string()]);
    let unbatched = throughput(args, &http, "unbatched", &unbatched_args, args.clients, args.warmup, args.seconds).await?;
    eprintln!("b7: {} clients, --raft-max-batch 1: {}", args.clients, unbatched.line());
    let rates: Vec<f64> = fsync.iter().map(|f| f.0).collect();
    let fsync_rate = percentile(&rates, 0.5);
    let (fsync_p50, fsync_p99) = (percentile(&fsync.iter().map(|f| f.1).collect::<Vec<_>>(), 0.5), percentile(&fsync.iter().map(|f| f.2).collect::<Vec<_>>(), 0.5));

    // 4. Failover, on a fresh batched cluster.
    let mut c = Coordinators::start(&args.sluice, &args.dir.join("failover"), &timing)?;
    let (rounds, acked, write_failures) = failover(&mut c, &http, args).await?;
    c.wait_leader(&http, &[0, 1, 2], Duration::from_secs(30)).await?;
    let (lost, sampled) = verify(&c, &http, &acked).await?;
    c.check_alive()?;
    drop(c);

    let elect: Vec<f64> = rounds.iter().map(|r| r.elect_ms).collect();
    let first: Vec<f64> = rounds.iter().map(|r| r.first_write_ms).collect();
    let probe: Vec<f64> = rounds.iter().map(|r| r.probe_ms).collect();
    let catch_up: Vec<f64> = rounds.iter().map(|r| r.catch_up_ms).collect();
    let (factor, vs_goal, vs_unbatched) = (batched.rate() / fsync_rate, batched.rate() / GOAL_WRITES, batched.rate() / unbatched.rate());
    let c = args.clients;
    println!(
        "B7 fsync reference (write 200 B + fdatasync, 1 thread): {fsync_rate:.0}/s median of {:?}, p50 {fsync_p50:.2} ms, p99 {fsync_p99:.2} ms ({fs})",
        rates.iter().map(|r| r.round() as u64).collect::<Vec<_>>()
    );
    println!("B7 sequential client, batched (1 outstanding):           {}", seq.line());
    println!("B7 {c} clients, batched (default):                       {}", batched.line());
    println!("B7 {c} clients, --raft-max-batch 1:                      {}", unbatched.line());
    println!("B7 ratio batched/fsync: {factor:.2} (batching factor); batched/unbatched: {vs_unbatched:.2}; batched/sequential: {:.2}", batched.rate() / seq.rate());
    println!("B7 ratio batched/goal: {vs_goal:.2} (goal >= {GOAL_WRITES:.0} committed writes/s)");
    if !rounds.is_empty() {
        println!(
            "B7 failover, new leader agreed ({} kills):  p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms (goal p50 <= {:.0} ms: {:.2} of it)",
            rounds.len(),
            percentile(&elect, 0.5),
            percentile(&elect, 0.9),
            percentile(&elect, 1.0),
            GOAL_FAILOVER_S * 1000.0,
            percentile(&elect, 0.5) / (GOAL_FAILOVER_S * 1000.0)
        );
        println!(
            "B7 failover, first background write committed: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
            percentile(&first, 0.5),
            percentile(&first, 0.9),
            percentile(&first, 1.0)
        );
        println!(
            "B7 failover, probe write to the new leader:     p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
            percentile(&probe, 0.5),
            percentile(&probe, 0.9),
            percentile(&probe, 1.0)
        );
        println!(
            "B7 restarted coordinator catch-up:           p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
            percentile(&catch_up, 0.5),
            percentile(&catch_up, 0.9),
            percentile(&catch_up, 1.0)
        );
    }
    println!(
        "B7 acknowledged writes during failover: {} ({} attempts failed), all checked in each coordinator's list, {sampled} read one by one: lost = {}",
        acked.len(),
        write_failures,
        lost.len()
    );
    if !lost.is_empty() {
        println!("B7 LOST (first 10): {:?}", &lost[..lost.len().min(10)]);
    }
    let out = json!({
        "bench": "B7",
        "settings": {"seconds": args.seconds, "warmup": args.warmup, "seq_seconds": args.seq_seconds, "clients": args.clients, "kills": args.kills,
                     "failover_clients": args.failover_clients, "names": args.names, "heartbeat_ms": args.heartbeat_ms, "election_ms": args.election_ms,
                     "dir": args.dir, "filesystem": fs, "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "fsync": {"per_s": fsync_rate, "samples_per_s": rates, "count": fsync.iter().map(|f| f.3).sum::<u64>(), "seconds_each": args.fsync_seconds, "latency_ms": {"p50": fsync_p50, "p99": fsync_p99}},
        "sequential_batched": seq.json(),
        "batched": batched.json(),
        "unbatched": unbatched.json(),
        "ratios": {"batched_over_fsync": factor, "batched_over_goal": vs_goal, "batched_over_unbatched": vs_unbatched, "batched_over_sequential": batched.rate() / seq.rate()},
        "failover": {
            "rounds": rounds.iter().map(|r| json!({"killed": r.killed, "new_leader": r.new_leader, "elect_ms": r.elect_ms, "first_write_ms": r.first_write_ms, "probe_ms": r.probe_ms,
                                                    "catch_up_ms": r.catch_up_ms, "catch_up_target": r.catch_up_target})).collect::<Vec<_>>(),
            "new_leader_ms": stats(&elect), "first_write_ms": stats(&first), "probe_ms": stats(&probe), "catch_up_ms": stats(&catch_up),
            "acknowledged": acked.len(), "failed_attempts": write_failures, "sampled_one_by_one": sampled, "lost": lost.len(), "lost_names": lost,
        },
    });
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("b7.json"), serde_json::to_string_pretty(&out)?)?;
    if !args.keep {
        for sub in ["sequential", "batched", "unbatched", "failover"] {
            let _ = std::fs::remove_dir_all(args.dir.join(sub).join("node-1"));
            let _ = std::fs::remove_dir_all(args.dir.join(sub).join("node-2"));
            let _ = std::fs::remove_dir_all(args.dir.join(sub).join("node-3"));
        }
    }
    if !lost.is_empty() {
        bail!("{} acknowledged writes were lost", lost.len());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    // Dropping `run` on Ctrl-C or SIGTERM drops the coordinators, which kills their processes.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = run(&args) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = term.recv() => bail!("terminated"),
    }
}
