//! Decisions across leader changes, with three real coordinator processes on
//! loopback (a private mosquitto as their metrics bus), two agents on the real
//! Docker Engine, and steady load through the gateways:
//!
//! - the leader is killed 10 times (SIGKILL) and restarted; the load goes
//!   through two of the three gateways, so when the third coordinator leads
//!   its own gateway has seen none of it;
//! - no instance that was serving is stopped by a new leader (which, before
//!   the fix, saw every instance idle from the moment it took over);
//! - no function ever runs more instances than its maximum (placements are
//!   re-checked when they apply, and a deposed leader's late plan is void);
//! - no request fails that a healthy instance could have served: only those in
//!   flight at a gateway that was killed are excused;
//! - A2: the failovers mark no agent suspect or lost.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sluice_agent::runtime::{DockerConfig, DockerRuntime};
use sluice_cli::node::run_agent;
use sluice_common::{NodeId, SystemClock};
use sluice_tests::process_cluster::ProcessCluster;
use sluice_tests::{eventually, host_args, remove_containers, sleep_image, Http};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAX: usize = 6;
const KILLS: usize = 10;
const AGENTS: [&str; 2] = ["t-fo-a", "t-fo-b"];
/// The coordinators whose gateways carry the load.
const LOAD_GATEWAYS: [u64; 2] = [2, 3];

/// Which gateways clients may use now, and a generation per coordinator bumped
/// at each kill, so a request can tell whether its gateway died under it.
struct Gateways {
    urls: Vec<(u64, String)>,
    alive: Mutex<BTreeSet<u64>>,
    generation: Vec<AtomicU64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kills_stop_no_serving_instance_exceed_no_max_and_fail_no_request() -> Result<()> {
    let mut pc = ProcessCluster::start("failover", 3, &["--tick-secs", "0.5"]).await?;
    let docker = DockerRuntime::connect(DockerConfig::default()).await?;
    let mut agents = Vec::new();
    for name in AGENTS {
        remove_containers(&docker, &NodeId::new(name)?).await?;
        let bus = sluice_cli::node::connect_bus(&pc.bus_url(), name).await?;
        let (stop, rx) = tokio::sync::watch::channel(false);
        let coordinators: Vec<String> = pc.ids().into_iter().map(|i| pc.api_url(i)).collect();
        let (_, run) = run_agent(&host_args(name), coordinators, None, None, Arc::new(SystemClock), Some(bus), rx).await?;
        agents.push((stop, tokio::spawn(run)));
    }
    let result = run(&mut pc).await;
    for (stop, task) in agents {
        let _ = stop.send(true);
        let _ = task.await;
    }
    for name in AGENTS {
        remove_containers(&docker, &NodeId::new(name)?).await?;
    }
    result.map_err(|e| e.context(pc.logs(60)))
}

async fn api(pc: &ProcessCluster, http: &Http, path: &str) -> Result<Value> {
    let mut last = None;
    for i in pc.alive() {
        match http.get(&format!("{}{path}", pc.api_url(i))).await {
            Ok(r) if r.status.is_success() => return r.json(),
            Ok(r) => last = Some(anyhow::anyhow!("{} {}", r.status, r.text())),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no coordinator running")))
}

fn serving(instances: &Value) -> Vec<(u64, String)> {
    instances
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| matches!(i["state"].as_str(), Some("pending" | "starting" | "ready" | "paused")))
        .map(|i| (i["id"].as_u64().unwrap_or(0), i["state"].as_str().unwrap_or("").to_string()))
        .collect()
}

async fn run(pc: &mut ProcessCluster) -> Result<()> {
    let http = Http::fresh_connections(Duration::from_millis(500));
    let leader = pc.leader(Duration::from_secs(10)).await?;
    // A short idle timeout: a leader that wrongly thinks an instance idle stops it within seconds.
    let spec = json!({"name": "steady", "image": sleep_image(), "min_instances": 0, "max_instances": MAX, "concurrency": 4, "idle_timeout_secs": 3});
    let r = http.json(sluice_tests::Method::POST, &format!("{}/v1/functions", pc.api_url(leader)), &spec).await?;
    anyhow::ensure!(r.status.is_success(), "deploy: {} {}", r.status, r.text());

    // Steady load: 10 callers of a 50 ms function through the gateways of
    // coordinators 2 and 3. When coordinator 1 leads, its own gateway sees no
    // load at all: it must take everyone's from the bus.
    let gateways = Arc::new(Gateways {
        urls: LOAD_GATEWAYS.iter().map(|&i| (i, format!("{}/function/steady?ms=50", pc.gateway_url(i)))).collect(),
        alive: Mutex::new(LOAD_GATEWAYS.into_iter().collect()),
        generation: pc.ids().into_iter().map(|_| AtomicU64::new(0)).collect(),
    });
    let running = Arc::new(AtomicBool::new(true));
    let (ok, failed, excused) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::<String>::new())), Arc::new(AtomicU64::new(0)));
    let turn = Arc::new(AtomicUsize::new(0));
    let mut callers = Vec::new();
    for _ in 0..10 {
        let (gateways, running, ok, failed, excused, turn) = (gateways.clone(), running.clone(), ok.clone(), failed.clone(), excused.clone(), turn.clone());
        callers.push(tokio::spawn(async move {
            let client = Http::new();
            while running.load(Ordering::Relaxed) {
                let alive: Vec<u64> = gateways.alive.lock().unwrap().iter().copied().collect();
                if alive.is_empty() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let id = alive[turn.fetch_add(1, Ordering::Relaxed) % alive.len()];
                let (_, url) = gateways.urls.iter().find(|(i, _)| *i == id).unwrap();
                let slot = &gateways.generation[id as usize - 1];
                let generation = slot.load(Ordering::SeqCst);
                let outcome = client.get(url).await;
                let killed_under_it = slot.load(Ordering::SeqCst) != generation;
                match outcome {
                    Ok(r) if r.status.is_success() => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ if killed_under_it => {
                        excused.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failed.lock().unwrap().push(format!("gateway {id}: {} {}", r.status, r.text())),
                    Err(e) => failed.lock().unwrap().push(format!("gateway {id}: {e:#}")),
                }
            }
        }));
    }

    // Warm: the load has its instances, and they stay put for a while.
    eventually("the load has settled on its instances", Duration::from_secs(90), || async {
        let instances = api(pc, &http, "/v1/instances?function=steady").await?;
        let ready = serving(&instances).iter().filter(|(_, s)| s == "ready").count();
        Ok((ready >= 2 && ok.load(Ordering::Relaxed) > 500).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let warm_at = now_ms();
    let serving_at_warm: BTreeSet<u64> = serving(&api(pc, &http, "/v1/instances?function=steady").await?).into_iter().filter(|(_, s)| s == "ready").map(|(i, _)| i).collect();
    let failed_before = failed.lock().unwrap().len();
    anyhow::ensure!(failed_before == 0, "requests failed while warming: {:?}", failed.lock().unwrap());

    // Watch the instance count the whole time.
    let most = Arc::new(AtomicUsize::new(0));
    let watching = Arc::new(AtomicBool::new(true));
    let urls: Vec<String> = pc.ids().into_iter().map(|i| pc.api_url(i)).collect();
    let watcher = {
        let (most, watching, http) = (most.clone(), watching.clone(), http.clone());
        tokio::spawn(async move {
            while watching.load(Ordering::Relaxed) {
                for url in &urls {
                    if let Ok(r) = http.get(&format!("{url}/v1/instances?function=steady")).await {
                        if let Ok(v) = r.json() {
                            most.fetch_max(serving(&v).len(), Ordering::Relaxed);
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let (mut failovers, mut leaders) = (Vec::new(), Vec::new());
    for k in 0..KILLS {
        let old = pc.leader(Duration::from_secs(10)).await?;
        leaders.push(old);
        gateways.alive.lock().unwrap().remove(&old);
        gateways.generation[old as usize - 1].fetch_add(1, Ordering::SeqCst);
        pc.kill(old)?;
        let killed = Instant::now();
        let new = pc.leader(Duration::from_secs(10)).await.with_context(|| format!("kill {k}: no new leader"))?;
        failovers.push(killed.elapsed());
        anyhow::ensure!(new != old);
        // Let the new leader decide a few rounds with the old one gone, then bring it back.
        tokio::time::sleep(Duration::from_secs(4)).await;
        pc.restart(old)?;
        eventually("the restarted coordinator answers", Duration::from_secs(15), || {
            let url = format!("{}/v1/cluster", pc.api_url(old));
            let http = http.clone();
            async move { Ok(http.get(&url).await.ok().filter(|r| r.status.is_success()).map(|_| ())) }
        })
        .await?;
        if LOAD_GATEWAYS.contains(&old) {
            gateways.alive.lock().unwrap().insert(old);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    leaders.push(pc.leader(Duration::from_secs(10)).await?);
    running.store(false, Ordering::Relaxed);
    for c in callers {
        let _ = c.await;
    }
    watching.store(false, Ordering::Relaxed);
    let _ = watcher.await;

    eprintln!(
        "failover: {KILLS} kills, leaders in turn {leaders:?}, new leader after {:?}; {} requests served, {} excused (their gateway was killed), at most {} instances",
        failovers,
        ok.load(Ordering::Relaxed),
        excused.load(Ordering::Relaxed),
        most.load(Ordering::Relaxed)
    );
    let failed = failed.lock().unwrap().clone();
    anyhow::ensure!(failed.is_empty(), "{} requests failed that a healthy instance could have served: {:?}", failed.len(), &failed[..failed.len().min(10)]);
    anyhow::ensure!(most.load(Ordering::Relaxed) <= MAX, "{} instances at once, above the maximum of {MAX}", most.load(Ordering::Relaxed));

    let instances = api(pc, &http, "/v1/instances?function=steady").await?;
    let serving_now: BTreeSet<u64> = serving(&instances).into_iter().map(|(i, _)| i).collect();
    anyhow::ensure!(serving_at_warm.is_subset(&serving_now), "instances serving before the kills are gone: before {serving_at_warm:?}, now {serving_now:?}");

    // No serving instance was stopped by a new leader, and no agent was marked suspect or down.
    let events = api(pc, &http, "/v1/events?limit=10000").await?;
    let after_warm: Vec<&Value> = events.as_array().into_iter().flatten().filter(|e| e["at"].as_u64().unwrap_or(0) >= warm_at).collect();
    let stops: Vec<&&Value> =
        after_warm.iter().filter(|e| e["action"].as_str().is_some_and(|a| a.starts_with("stop") || a.starts_with("mark") || a.starts_with("pause"))).collect();
    anyhow::ensure!(stops.is_empty(), "instances were stopped, paused or marked lost during the failovers: {stops:?}");
    let nodes = api(pc, &http, "/v1/nodes").await?;
    for n in nodes.as_array().into_iter().flatten() {
        anyhow::ensure!(n["state"] == "ready", "A2: an agent's node is not ready after the failovers: {n}");
    }
    Ok(())
}

/// Unix milliseconds now, as events are stamped.
fn now_ms() -> u64 {
    use sluice_common::Clock;
    SystemClock.now().millis()
}
