//! B6: the coordinator's decisions at scale. 1,000 hosts and 10,000 functions
//! in a 3-coordinator Raft cluster on loopback (fsync on, logs on a real disk),
//! the same decision code as the live coordinator (`decide::plan` read through
//! the Raft barrier), and agents that report their instances ready as the fake
//! runtime would (one report per node, committed through Raft). In one run:
//!
//! 1. placement: a round that places every instance the functions' load asks
//!    for (synthetic windows: 60 s of gateway figures per function), committed
//!    as one plan; placements/s counts the decision and the commit;
//! 2. steady: full decision rounds with everything placed and nothing to do
//!    (the tick every second costs), median of `--ticks`;
//! 3. a load change: 10% of the functions double their load, one round.
//!
//! Reference: Nomad's published 1,500-3,750 placements/s (C1M, C2M). Goals: a
//! tick at most 100 ms, at least 10,000 placements/s. Prints the figures and
//! writes `bench/results/b6.json`.

use anyhow::{bail, Context, Result};
use serde_json::json;
use sluice_common::rng::SplitMix64;
use sluice_common::{Clock, FunctionName, FunctionSpec, ImageRef, InstanceReport, InstanceState, NodeId, NodeReport, Resources, SystemClock, Timestamp};
use sluice_coordinator::applied::AppliedState;
use sluice_coordinator::decide::load::Activity;
use sluice_coordinator::decide::{plan, DecideConfig, Inputs, Round};
use sluice_coordinator::liveness::Liveness;
use sluice_coordinator::plan::Outcome;
use sluice_coordinator::predictor::{PredictConfig, Predictor};
use sluice_coordinator::raft::{RaftConfig, RaftNode};
use sluice_coordinator::state_machine::{Command, Response};
use sluice_coordinator::store::Store;
use sluice_coordinator::windows::{Metric, Scope, Windows, WindowsConfig};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const NOMAD_PLACEMENTS_PER_SEC: f64 = 3750.0;
const GOAL_TICK_MS: f64 = 100.0;
const GOAL_PLACEMENTS: f64 = 10_000.0;

struct Args {
    nodes: usize,
    functions: usize,
    ticks: usize,
    dir: PathBuf,
}

fn args() -> Result<Args> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    let mut a = Args { nodes: 1000, functions: 10_000, ticks: 5, dir: home.join(".cache/sluice/b6") };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--nodes" => a.nodes = value.parse()?,
            "--functions" => a.functions = value.parse()?,
            "--ticks" => a.ticks = value.parse()?,
            "--dir" => a.dir = PathBuf::from(value),
            other => bail!("unknown flag {other}: use --nodes, --functions, --ticks or --dir"),
        }
    }
    Ok(a)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Cluster {
    stores: Vec<Arc<Store>>,
    nodes: Vec<RaftNode>,
    _stop: watch::Sender<bool>,
}

async fn start_cluster(dir: &std::path::Path, clock: Arc<dyn Clock>) -> Result<Cluster> {
    let _ = std::fs::remove_dir_all(dir);
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_>>()?;
    let initial: BTreeMap<u64, String> = (1..=3).map(|i| (i, format!("127.0.0.1:{}", ports[i as usize - 1]))).collect();
    let (stop, stopped) = watch::channel(false);
    let (mut stores, mut nodes) = (Vec::new(), Vec::new());
    for i in 1..=3u64 {
        let mut config = RaftConfig::single(dir.join(format!("c{i}")));
        config.id = i;
        config.listen = format!("127.0.0.1:{}", ports[i as usize - 1]).parse()?;
        config.initial = Some(initial.clone());
        config.request_timeout = Duration::from_secs(30);
        let applied = AppliedState::new();
        let node = RaftNode::start(config, applied.clone(), clock.clone(), stopped.clone())?;
        stores.push(Store::new(applied, node.handle.clone(), clock.clone()));
        nodes.push(node);
    }
    Ok(Cluster { stores, nodes, _stop: stop })
}

async fn leader(c: &Cluster) -> Result<Arc<Store>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = c.stores.iter().find(|s| s.leadership().since.is_some()) {
            return Ok(s.clone());
        }
        if Instant::now() > deadline {
            bail!("no leader in 20 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Commits `commands` with up to 512 in flight (Raft batches what queues up).
async fn commit_all(store: &Arc<Store>, commands: Vec<Command>) -> Result<()> {
    use futures_util::stream::{self, StreamExt};
    let results: Vec<_> = stream::iter(commands)
        .map(|cmd| {
            let s = store.clone();
            async move { s.execute(cmd).await }
        })
        .buffer_unordered(512)
        .collect()
        .await;
    for r in results {
        r.map_err(|e| anyhow::anyhow!("commit failed: {e}"))?;
    }
    Ok(())
}

fn node_id(i: usize) -> NodeId {
    NodeId::new(format!("h{i:04}")).expect("a node name")
}

fn function_name(i: usize) -> FunctionName {
    FunctionName::new(format!("f{i:05}")).expect("a function name")
}

/// Mean concurrency of function `i`: most need one instance, some several.
fn load_of(i: usize, rng: &mut SplitMix64) -> f64 {
    match i % 20 {
        0 => 10.0 + rng.below(20) as f64,
        1..=5 => 3.0 + rng.below(5) as f64,
        _ => 0.5 + rng.below(15) as f64 / 10.0,
    }
}

/// 60 s of one gateway's figures for each function, at its load.
fn feed_windows(w: &mut Windows, loads: &[f64], now: Timestamp) {
    let gw = NodeId::new("coordinator-1").expect("a node name");
    for (f, load) in loads.iter().enumerate() {
        let name = function_name(f);
        let scope = Scope::Gateway(gw.clone(), name.clone());
        let mut busy = 0.0;
        for s in (0..60u64).rev() {
            let ts = Timestamp(now.0 - s * 1000);
            busy += load;
            w.record(&scope, Metric::GatewayInFlight, Some(&name), ts, *load, now);
            w.record(&scope, Metric::GatewayQueued, Some(&name), ts, 0.0, now);
            w.record(&scope, Metric::GatewayRequestSecondsTotal, Some(&name), ts, busy, now);
        }
    }
}

async fn round(store: &Store, windows: &Windows, liveness: &Liveness, predictor: &Predictor, now: Timestamp, config: &DecideConfig) -> Result<(Round, Duration)> {
    let activity = Activity::default();
    let calls = HashMap::new();
    let lead = store.leadership();
    let started = Instant::now();
    let holds = predictor.holds(now);
    let round = store
        .read_linearizable(|state| {
            plan(&Inputs {
                state,
                windows,
                activity: &activity,
                liveness,
                calls: &calls,
                now,
                term: lead.term.unwrap_or(0),
                leader_since: Timestamp(now.0 - 600_000),
                history_from: Timestamp(now.0 - 600_000),
                config,
                holds: &holds,
            })
        })
        .await
        .map_err(|e| anyhow::anyhow!("barrier: {e}"))?;
    Ok((round, started.elapsed()))
}

/// Commits a round's plan; returns the instances it started and the time it took.
async fn commit(store: &Store, round: Round) -> Result<(usize, Duration)> {
    let started = Instant::now();
    let response = store.execute(Command::Plan(round.plan)).await.map_err(|e| anyhow::anyhow!("plan not committed: {e}"))?;
    let elapsed = started.elapsed();
    let Response::Planned { outcomes } = response else { bail!("plan not applied: {response:?}") };
    let refused = outcomes.iter().filter(|o| matches!(o, Outcome::Refused { .. })).count();
    if refused > 0 {
        eprintln!("b6: {refused} decisions refused when applied");
    }
    Ok((outcomes.iter().filter(|o| matches!(o, Outcome::Started { .. })).count(), elapsed))
}

/// The agents report every pending instance ready: one report per node, as the fake runtime would.
async fn agents_report(store: &Arc<Store>, now: Timestamp) -> Result<()> {
    let reports: Vec<Command> = store.read(|s| {
        s.nodes
            .values()
            .filter_map(|n| {
                let instances: Vec<InstanceReport> = s
                    .live_on(&n.id)
                    .filter(|i| i.state == InstanceState::Pending)
                    .map(|i| InstanceReport {
                        id: i.id,
                        function: i.function.clone(),
                        state: InstanceState::Ready,
                        endpoint: Some(sluice_common::Endpoint::published("10.0.0.1", 30000)),
                        reason: None,
                        addr: None,
                    })
                    .collect();
                (!instances.is_empty()).then(|| Command::Report {
                    report: NodeReport {
                        node: n.id.clone(),
                        capacity: n.capacity,
                        instances,
                        at: now,
                        labels: n.labels.clone(),
                        max_instances: None,
                        images: n.images.clone(),
                        agent_addr: None,
                    },
                    at: now,
                })
            })
            .collect()
    });
    commit_all(store, reports).await
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let cluster = start_cluster(&a.dir, clock.clone()).await?;
    let store = leader(&cluster).await?;
    let now = clock.now();
    let mut rng = SplitMix64::new(6);

    let setup = Instant::now();
    let nodes: Vec<Command> = (0..a.nodes)
        .map(|i| Command::Report {
            report: NodeReport {
                node: node_id(i),
                capacity: Resources { cpu_millis: 32_000, memory_mb: 32_768 },
                instances: vec![],
                at: now,
                labels: [("zone".to_string(), ["a", "b", "c"][i % 3].to_string())].into(),
                max_instances: None,
                images: [format!("registry.local/fn{}:1", i % 50)].into(),
                agent_addr: None,
            },
            at: now,
        })
        .collect();
    commit_all(&store, nodes).await?;
    let functions: Vec<Command> = (0..a.functions)
        .map(|i| {
            let mut spec = FunctionSpec::new(function_name(i), ImageRef::parse(format!("registry.local/fn{}:1", i % 100)).expect("an image"));
            spec.limits.cpu_millis = 100 + (i % 5) as u32 * 100;
            spec.limits.memory_mb = 64 + (i % 4) as u32 * 64;
            spec.max_instances = 50;
            if i % 10 == 0 {
                spec.placement.node_selector = [("zone".to_string(), "a".to_string())].into();
            }
            if i % 5 == 0 {
                spec.placement.strategy = sluice_common::placement::Strategy::Binpack;
            }
            Command::PutFunction { spec }
        })
        .collect();
    commit_all(&store, functions).await?;
    let loads: Vec<f64> = (0..a.functions).map(|i| load_of(i, &mut rng)).collect();
    let mut windows = Windows::new(WindowsConfig { max_series: 100_000, ..WindowsConfig::default() });
    feed_windows(&mut windows, &loads, now);
    let mut liveness = Liveness::default();
    for i in 0..a.nodes {
        liveness.heard(&node_id(i), now);
    }
    let config = DecideConfig::default();
    eprintln!("b6: {} nodes, {} functions committed and their windows filled in {:.1} s", a.nodes, a.functions, setup.elapsed().as_secs_f64());
    // The keep-warm models, rebuilt from the windows as a new leader does; each
    // tick then reads what they hold.
    let mut predictor = Predictor::new(PredictConfig::default());
    let started = Instant::now();
    store.read(|state| predictor.advance(&windows, state.functions.values(), now));
    eprintln!("b6: keep-warm models of {} functions rebuilt from the windows in {:.0} ms ({} KB)", predictor.functions(), ms(started.elapsed()), predictor.bytes() / 1024);

    // 1. Placement.
    let (placing, plan_time) = round(&store, &windows, &liveness, &predictor, now, &config).await?;
    let decisions = placing.plan.decisions.len();
    let (placed, commit_time) = commit(&store, placing).await?;
    let placements_per_sec = placed as f64 / (plan_time + commit_time).as_secs_f64();
    eprintln!("b6: placement round: {placed} instances placed ({decisions} decisions): decide {:.0} ms, commit {:.0} ms", ms(plan_time), ms(commit_time));
    agents_report(&store, now).await?;

    // 2. Steady ticks.
    let mut ticks = Vec::new();
    for _ in 0..a.ticks {
        let (r, t) = round(&store, &windows, &liveness, &predictor, now, &config).await?;
        if !r.plan.decisions.is_empty() {
            eprintln!("b6: a steady tick still decided {} things (e.g. {:?})", r.plan.decisions.len(), r.plan.decisions.first().map(|d| d.action.describe()));
        }
        ticks.push(ms(t));
    }
    let tick_ms = median(ticks.clone());

    // 3. 10% of the functions double their load.
    let mut more = loads.clone();
    for (i, l) in more.iter_mut().enumerate() {
        if i % 10 == 3 {
            *l *= 2.0;
        }
    }
    let later = Timestamp(now.0 + 60_000);
    let mut windows2 = Windows::new(WindowsConfig { max_series: 100_000, ..WindowsConfig::default() });
    feed_windows(&mut windows2, &more, later);
    let mut liveness2 = Liveness::default();
    for i in 0..a.nodes {
        liveness2.heard(&node_id(i), later);
    }
    let (change, change_plan) = round(&store, &windows2, &liveness2, &predictor, later, &config).await?;
    let (change_placed, change_commit) = commit(&store, change).await?;

    let instances = store.read(|s| s.instances.len());
    println!("B6 decisions: {} hosts, {} functions, {instances} instances, 3 coordinators (fsync on)", a.nodes, a.functions);
    println!("  steady tick (nothing to do):  {tick_ms:.1} ms median of {} (goal <= {GOAL_TICK_MS} ms: {:.2} of it)", ticks.len(), tick_ms / GOAL_TICK_MS);
    println!("  placement round: {placed} placements, decide {:.0} ms + commit {:.0} ms = {placements_per_sec:.0} placements/s", ms(plan_time), ms(commit_time));
    println!(
        "    vs goal {GOAL_PLACEMENTS}: {:.2}x; vs Nomad's published 1,500-3,750/s: {:.1}x the top of it",
        placements_per_sec / GOAL_PLACEMENTS,
        placements_per_sec / NOMAD_PLACEMENTS_PER_SEC
    );
    println!("  load change (10% of functions double): {change_placed} placements, decide {:.0} ms + commit {:.0} ms", ms(change_plan), ms(change_commit));
    let out = json!({
        "nodes": a.nodes, "functions": a.functions, "instances": instances,
        "tick_ms_median": tick_ms, "ticks_ms": ticks,
        "placements": placed, "decide_ms": ms(plan_time), "commit_ms": ms(commit_time), "placements_per_sec": placements_per_sec,
        "change_placements": change_placed, "change_decide_ms": ms(change_plan), "change_commit_ms": ms(change_commit),
        "reference_nomad_placements_per_sec": [1500.0, NOMAD_PLACEMENTS_PER_SEC],
        "ratio_to_goal_placements": placements_per_sec / GOAL_PLACEMENTS, "ratio_to_goal_tick": tick_ms / GOAL_TICK_MS,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("b6.json"), serde_json::to_string_pretty(&out)?)?;
    drop(cluster.stores);
    let _ = cluster._stop.send(true);
    for n in cluster.nodes {
        tokio::task::spawn_blocking(move || n.join()).await?;
    }
    Ok(())
}
