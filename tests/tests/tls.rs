//! Mutual TLS end to end, with real processes on loopback: a CA and node
//! certificates made by `sluice certs`, three `sluice coordinator`s whose Raft
//! links, API and gateway are TLS, and two `sluice agent`s that reach them over
//! mutual TLS. Then peers whose certificates come from another CA (but who
//! trust the cluster's, so the refusal is the cluster's doing): a fourth
//! coordinator dialling the Raft ports and an agent polling the API. Both are
//! refused at the handshake and counted in `sluice_tls_handshake_failures_total`.
//!
//! Tokens are required, as by default: the test finds the founders' admin token
//! and gives each agent its own token.
//!
//! Runs the `sluice` binary of `sluice_tests::process_cluster::sluice_binary`
//! (`SLUICE_BIN`, or the static build of scripts/build-images.sh); the agents
//! need the Docker Engine, not any image. Every process logs to a file in the
//! test's directory, shown when the test fails.

use anyhow::{bail, ensure, Context, Result};
use hyper::Method;
use serde_json::{json, Value};
use sluice_tests::ports::free_port;
use sluice_tests::process_cluster::sluice_binary;
use sluice_tests::{hello_image, Http};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `sluice` processes, killed when dropped.
struct Processes {
    binary: PathBuf,
    dir: PathBuf,
    running: Vec<(String, Child)>,
}

impl Processes {
    fn spawn(&mut self, name: &str, args: &[String]) -> Result<()> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let child = sluice_tests::with_registry_credentials(&mut Command::new(&self.binary))
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.running.push((name.to_string(), child));
        Ok(())
    }

    /// The last lines of every process's log.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.running {
            let text = std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            out.push_str(&format!("--- {name}:\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `sluice certs ...` and expects it to succeed.
fn certs(binary: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(binary).arg("certs").args(args).output()?;
    ensure!(out.status.success(), "sluice certs {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

struct Ports {
    api: u16,
    gateway: u16,
    raft: u16,
}

fn tls_flags(cert_dir: &Path, name: &str, ca: &Path) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        cert_dir.join(format!("{name}.pem")).display().to_string(),
        "--tls-key".into(),
        cert_dir.join(format!("{name}.key")).display().to_string(),
        "--tls-ca".into(),
        ca.display().to_string(),
    ]
}

fn coordinator_args(id: u64, ports: &Ports, initial: &str, data: &Path, tls: Vec<String>) -> Vec<String> {
    let mut args: Vec<String> = [
        "coordinator",
        "--id",
        &id.to_string(),
        "--api",
        &format!("127.0.0.1:{}", ports.api),
        "--gateway",
        &format!("127.0.0.1:{}", ports.gateway),
        "--raft",
        &format!("127.0.0.1:{}", ports.raft),
        "--initial-cluster",
        initial,
        "--data-dir",
        &data.display().to_string(),
        "--bus",
        "inproc",
        "--heartbeat-ms",
        "100",
        "--election-ms",
        "1000",
        "--gateway-threads",
        "1",
        "--predict-policy",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(tls);
    args
}

fn agent_args(node: &str, apis: &[String], tls: Vec<String>) -> Vec<String> {
    let mut args: Vec<String> =
        ["agent", "--node", node, "--coordinator", &apis.join(","), "--agent-metrics", "127.0.0.1:0", "--sample-secs", "1"].iter().map(|s| s.to_string()).collect();
    args.extend(tls);
    args
}

/// `sluice_tls_handshake_failures_total{listener=...}` on the coordinator at `api`.
async fn handshake_failures(http: &Http, api: &str, listener: &str) -> Result<u64> {
    let text = http.get(&format!("{api}/metrics")).await?.text();
    let series = format!("sluice_tls_handshake_failures_total{{listener=\"{listener}\"}} ");
    let line = text.lines().find_map(|l| l.strip_prefix(series.as_str())).with_context(|| format!("{api}/metrics has no {series}"))?;
    Ok(line.trim().parse()?)
}

/// Polls `check` every 200 ms until it gives `Some`, for up to `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?} (last error: {last:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_mutual_tls_refuses_peers_with_another_cas_certificates() -> Result<()> {
    sluice_tests::init_logs();
    let binary = sluice_binary()?;
    let dir = tempfile::tempdir()?;
    let mut procs = Processes { binary: binary.clone(), dir: dir.path().to_path_buf(), running: Vec::new() };
    match run(&binary, dir.path(), &mut procs).await {
        Ok(()) => Ok(()),
        Err(e) => Err(e.context(procs.logs())),
    }
}

async fn run(binary: &Path, dir: &Path, procs: &mut Processes) -> Result<()> {
    // The cluster's CA and certificates, and another CA's, as an operator makes them.
    let (ca_dir, other_ca_dir, cert_dir, rogue_dir) = (dir.join("ca"), dir.join("other-ca"), dir.join("certs"), dir.join("rogue"));
    certs(binary, &["init", "--dir", &ca_dir.display().to_string()])?;
    certs(binary, &["init", "--dir", &other_ca_dir.display().to_string()])?;
    for name in ["coord-1", "coord-2", "coord-3", "agent-1", "agent-2"] {
        certs(binary, &["issue", "--ca-dir", &ca_dir.display().to_string(), "--name", name, "--ip", "127.0.0.1", "--out", &cert_dir.display().to_string()])?;
    }
    certs(binary, &["issue", "--ca-dir", &other_ca_dir.display().to_string(), "--name", "rogue", "--ip", "127.0.0.1", "--out", &rogue_dir.display().to_string()])?;
    let ca = ca_dir.join("ca.pem");

    let port = || free_port("127.0.0.1");
    let ports: Vec<Ports> = (0..4).map(|_| Ok(Ports { api: port()?, gateway: port()?, raft: port()? })).collect::<Result<_>>()?;
    let initial = (1..=3).map(|i| format!("{i}=127.0.0.1:{}", ports[i - 1].raft)).collect::<Vec<_>>().join(",");
    for id in 1..=3u64 {
        let name = format!("coord-{id}");
        let mut tls = tls_flags(&cert_dir, &name, &ca);
        // The gateway gets TLS too, with the same certificate.
        tls.extend(["--gateway-tls-cert".into(), cert_dir.join(format!("{name}.pem")).display().to_string()]);
        tls.extend(["--gateway-tls-key".into(), cert_dir.join(format!("{name}.key")).display().to_string()]);
        procs.spawn(&name, &coordinator_args(id, &ports[id as usize - 1], &initial, &dir.join(format!("data-{id}")), tls))?;
    }
    let apis: Vec<String> = ports[..3].iter().map(|p| format!("https://127.0.0.1:{}", p.api)).collect();
    let tls = sluice_common::tls::ca_client_config("--tls-ca", &ca)?;
    let anonymous = Http::fresh_connections_tls(Duration::from_millis(500), Some(tls));

    // Tokens are on too, as by default: the founder whose admin token was
    // committed first keeps it in its data directory; the others wrote none.
    let data_dirs: Vec<PathBuf> = (1..=3).map(|i| dir.join(format!("data-{i}"))).collect();
    let admin = eventually("one founder's admin token, accepted", Duration::from_secs(30), || async {
        let files: Vec<String> = data_dirs.iter().filter_map(|d| std::fs::read_to_string(d.join("admin.token")).ok()).collect();
        let [token] = files.as_slice() else { return Ok(None) };
        let token = token.trim().to_string();
        let r = anonymous.send(Method::GET, &format!("{}/v1/cluster", apis[0]), "", &[("authorization", &format!("Bearer {token}"))]).await?;
        Ok((r.status == hyper::StatusCode::OK).then_some(token))
    })
    .await?;
    ensure!(anonymous.get(&format!("{}/v1/cluster", apis[0])).await?.status == hyper::StatusCode::UNAUTHORIZED, "TLS alone does not let a caller in");
    let http = anonymous.clone().with_token(Some(admin));

    // A leader that all three agree on: the Raft links work over mutual TLS.
    let leader = eventually("a leader all three coordinators agree on", Duration::from_secs(30), || async {
        let mut leaders = Vec::new();
        for api in &apis {
            leaders.push(http.get(&format!("{api}/v1/cluster")).await?.json()?["leader"].as_u64());
        }
        Ok(leaders.iter().all(|l| l.is_some() && *l == leaders[0]).then(|| leaders[0].unwrap_or_default()))
    })
    .await?;
    let follower = (1..=3).find(|i| *i != leader).unwrap_or(1) as usize;

    // Plain HTTP to the TLS API gets no answer.
    let plain = Http::fresh_connections(Duration::from_millis(500));
    ensure!(plain.get(&format!("http://127.0.0.1:{}/v1/cluster", ports[0].api)).await.is_err(), "the API answered plain HTTP");

    // A write through a follower is on every coordinator.
    let spec = json!({"name": "tls-fn", "image": hello_image(), "env": {"V": "1"}});
    let r = http.json(Method::POST, &format!("{}/v1/functions", apis[follower - 1]), &spec).await?;
    ensure!(r.status.is_success(), "POST /v1/functions via follower {follower}: {} {}", r.status, r.text());
    for api in &apis {
        let r = http.get(&format!("{api}/v1/functions/tls-fn")).await?;
        ensure!(r.status.is_success() && r.json()?["function"]["spec"]["env"]["V"] == "1", "{api}/v1/functions/tls-fn: {} {}", r.status, r.text());
    }
    // The gateway is TLS too: it answers (404, no such function) over https.
    let r = http.get(&format!("https://127.0.0.1:{}/function/absent", ports[0].gateway)).await?;
    ensure!(r.status == hyper::StatusCode::NOT_FOUND, "gateway over TLS: {} {}", r.status, r.text());

    // Two agents over mutual TLS, each with its agent token: every coordinator lists both nodes as ready.
    let agent_token = |name: &'static str| {
        let (http, api, file) = (http.clone(), apis[0].clone(), dir.join(format!("{name}.token")));
        async move {
            let r = http.json(Method::POST, &format!("{api}/v1/tokens"), &json!({"name": name, "roles": ["agent"]})).await?;
            ensure!(r.status == hyper::StatusCode::CREATED, "token for {name}: {} {}", r.status, r.text());
            std::fs::write(&file, r.json()?["token"].as_str().context("token")?)?;
            Ok::<_, anyhow::Error>(vec!["--token-file".to_string(), file.display().to_string()])
        }
    };
    for name in ["agent-1", "agent-2"] {
        let mut flags = tls_flags(&cert_dir, name, &ca);
        flags.extend(agent_token(name).await?);
        procs.spawn(name, &agent_args(name, &apis, flags))?;
    }
    let ready = |api: String| {
        let http = http.clone();
        async move {
            let nodes: Value = http.get(&format!("{api}/v1/nodes")).await?.json()?;
            let ready: Vec<String> = nodes.as_array().into_iter().flatten().filter(|n| n["state"] == "ready").filter_map(|n| n["id"].as_str().map(str::to_string)).collect();
            Ok::<_, anyhow::Error>(ready)
        }
    };
    for api in &apis {
        eventually(&format!("agent-1 and agent-2 ready on {api}"), Duration::from_secs(30), || async {
            let ready = ready(api.clone()).await?;
            Ok((ready.contains(&"agent-1".to_string()) && ready.contains(&"agent-2".to_string())).then_some(()))
        })
        .await?;
    }

    // Peers with certificates from another CA, trusting the cluster's CA (so
    // they go through with the handshake and the cluster is the one refusing).
    let mut before = (0, 0);
    for api in &apis {
        before.0 += handshake_failures(&http, api, "raft").await?;
        before.1 += handshake_failures(&http, api, "api").await?;
    }
    let rogue_initial = format!("{initial},4=127.0.0.1:{}", ports[3].raft);
    procs.spawn("rogue-coordinator", &coordinator_args(4, &ports[3], &rogue_initial, &dir.join("data-4"), tls_flags(&rogue_dir, "rogue", &ca)))?;
    // The rogue agent even holds a valid agent token: its certificate is what keeps it out.
    let mut rogue_flags = tls_flags(&rogue_dir, "rogue", &ca);
    rogue_flags.extend(agent_token("rogue").await?);
    procs.spawn("rogue-agent", &agent_args("rogue", &apis, rogue_flags))?;
    let after = eventually("the rogue coordinator's Raft links and the rogue agent's polls refused and counted", Duration::from_secs(30), || async {
        let mut after = (0, 0);
        for api in &apis {
            after.0 += handshake_failures(&http, api, "raft").await?;
            after.1 += handshake_failures(&http, api, "api").await?;
        }
        Ok((after.0 > before.0 && after.1 > before.1).then_some(after))
    })
    .await?;
    eprintln!("handshake failures (raft, api): {before:?} before the rogues, {after:?} after");

    // Refused, not let in: a few seconds on, the rogue node is not known, the
    // cluster is still the three with the same leader, and writes go on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for api in &apis {
        let nodes = http.get(&format!("{api}/v1/nodes")).await?.json()?;
        ensure!(!nodes.as_array().into_iter().flatten().any(|n| n["id"] == "rogue"), "{api} knows the rogue node: {nodes}");
        let cluster = http.get(&format!("{api}/v1/cluster")).await?.json()?;
        ensure!(cluster["leader"].as_u64() == Some(leader), "{api}: the leader changed from {leader}: {cluster}");
        ensure!(cluster["members"].as_array().map(Vec::len) == Some(3), "{api}: members changed: {cluster}");
    }
    let spec = json!({"name": "tls-fn", "image": hello_image(), "env": {"V": "2"}});
    let r = http.json(Method::POST, &format!("{}/v1/functions", apis[leader as usize - 1]), &spec).await?;
    ensure!(r.status.is_success(), "a write after the rogues: {} {}", r.status, r.text());
    Ok(())
}
