//! Coordinators as real `sluice coordinator` processes on loopback, sharing a
//! private mosquitto as their metrics bus: for tests that SIGKILL the leader
//! and restart it from its data directory while agents and clients carry on.
//!
//! The binary is the static `sluice` that scripts/build-images.sh builds (or
//! `SLUICE_BIN`); without it the test fails and says how to build it. Each
//! coordinator logs to `<dir>/<id>.log`, shown when a test fails.

use crate::mosquitto::Mosquitto;
use crate::ports::free_port;
use crate::Http;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the `sluice` binary is: `SLUICE_BIN`, else the static build of
/// scripts/build-images.sh.
pub fn sluice_binary() -> Result<PathBuf> {
    let path = match std::env::var_os("SLUICE_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set: set SLUICE_BIN to the sluice binary"))?;
            PathBuf::from(home).join(".cache/sluice/target-static/x86_64-unknown-linux-gnu/release/sluice")
        }
    };
    if !path.is_file() {
        bail!("no sluice binary at {}: build it with scripts/build-images.sh sluice, or set SLUICE_BIN", path.display());
    }
    Ok(path)
}

struct Coordinator {
    child: Option<Child>,
    api: u16,
    gateway: u16,
    raft: u16,
}

pub struct ProcessCluster {
    name: String,
    binary: PathBuf,
    dir: tempfile::TempDir,
    broker: Mosquitto,
    nodes: BTreeMap<u64, Coordinator>,
    extra: Vec<String>,
    /// The `--bus` of every coordinator when not the private mosquitto.
    bus: Option<String>,
    http: Http,
}

impl ProcessCluster {
    /// Starts `size` coordinators (with `extra` flags each) and waits for a leader.
    pub async fn start(name: &str, size: u64, extra: &[&str]) -> Result<ProcessCluster> {
        Self::start_on_bus(name, size, extra, None).await
    }

    /// As `start`, on the bus `bus` (e.g. the Kafka broker of scripts/brokers.sh) instead of the private mosquitto.
    pub async fn start_on_bus(name: &str, size: u64, extra: &[&str], bus: Option<String>) -> Result<ProcessCluster> {
        crate::init_logs();
        let binary = sluice_binary()?;
        let dir = tempfile::tempdir().context("a directory for the cluster")?;
        let broker_dir = dir.path().join("broker");
        std::fs::create_dir_all(&broker_dir)?;
        let broker = Mosquitto::start("127.0.0.1", free_port("127.0.0.1")?, &broker_dir).await?;
        let mut nodes = BTreeMap::new();
        for i in 1..=size {
            let port = || free_port("127.0.0.1");
            nodes.insert(i, Coordinator { child: None, api: port()?, gateway: port()?, raft: port()? });
        }
        let mut cluster = ProcessCluster {
            name: name.to_string(),
            binary,
            dir,
            broker,
            nodes,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            bus,
            http: Http::fresh_connections(Duration::from_millis(500)),
        };
        for i in 1..=size {
            cluster.spawn(i)?;
        }
        cluster.leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: u64) -> Result<()> {
        let initial: Vec<String> = self.nodes.iter().map(|(id, n)| format!("{id}=127.0.0.1:{}", n.raft)).collect();
        let n = self.nodes.get(&i).ok_or_else(|| anyhow!("no coordinator {i}"))?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(format!("{i}.log")))?;
        let data = self.dir.path().join(format!("data-{i}"));
        let bus = self.bus_url();
        let mut args: Vec<String> = vec![
            "coordinator".into(),
            "--id".into(),
            i.to_string(),
            "--api".into(),
            format!("127.0.0.1:{}", n.api),
            "--gateway".into(),
            format!("127.0.0.1:{}", n.gateway),
            "--raft".into(),
            format!("127.0.0.1:{}", n.raft),
            "--initial-cluster".into(),
            initial.join(","),
            "--data-dir".into(),
            data.display().to_string(),
            "--bus".into(),
            bus,
            "--heartbeat-ms".into(),
            "100".into(),
            "--election-ms".into(),
            "1000".into(),
            "--gateway-threads".into(),
            "1".into(),
        ];
        // Reactive scaling alone unless a test asks for prediction.
        if !self.extra.iter().any(|a| a == "--predict-policy") {
            args.extend(["--predict-policy".into(), "off".into()]);
        }
        // Tokens only where a test asks for them.
        if !self.extra.iter().any(|a| a == "--auth") {
            args.extend(["--auth".into(), "off".into()]);
        }
        args.extend(self.extra.iter().cloned());
        let child = crate::with_registry_credentials(&mut Command::new(&self.binary))
            .args(&args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.nodes.get_mut(&i).expect("checked above").child = Some(child);
        Ok(())
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Coordinators running now.
    pub fn alive(&self) -> Vec<u64> {
        self.nodes.iter().filter(|(_, n)| n.child.is_some()).map(|(i, _)| *i).collect()
    }

    pub fn api_url(&self, i: u64) -> String {
        format!("http://127.0.0.1:{}", self.nodes[&i].api)
    }

    pub fn gateway_url(&self, i: u64) -> String {
        format!("http://127.0.0.1:{}", self.nodes[&i].gateway)
    }

    /// The `--bus` every coordinator uses, for agents joining them.
    pub fn bus_url(&self) -> String {
        self.bus.clone().unwrap_or_else(|| self.broker.url(&self.name))
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self, i: u64) -> Result<()> {
        let n = self.nodes.get_mut(&i).ok_or_else(|| anyhow!("no coordinator {i}"))?;
        if let Some(mut child) = n.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts a killed coordinator again from its data directory.
    pub fn restart(&mut self, i: u64) -> Result<()> {
        anyhow::ensure!(self.nodes[&i].child.is_none(), "coordinator {i} is running");
        self.spawn(i)
    }

    /// The leader that a majority of the running coordinators agree on.
    pub async fn leader(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
            for i in self.alive() {
                if let Ok(r) = self.http.get(&format!("{}/v1/cluster", self.api_url(i))).await {
                    if let Ok(v) = r.json() {
                        if let Some(l) = v["leader"].as_u64() {
                            *votes.entry(l).or_default() += 1;
                        }
                    }
                }
            }
            let majority = self.nodes.len() / 2 + 1;
            if let Some((l, _)) = votes.into_iter().find(|(l, n)| *n >= majority && self.nodes[l].child.is_some()) {
                return Ok(l);
            }
            if Instant::now() > deadline {
                bail!("no leader agreed by a majority within {timeout:?}\n{}", self.logs(40));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `lines` lines of every coordinator's log.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for i in self.nodes.keys() {
            let text = std::fs::read_to_string(self.dir.path().join(format!("{i}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("--- coordinator {i}:\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            if let Some(mut child) = n.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
