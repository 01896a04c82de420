//! The control loop: on every tick, on waiting requests and on lost instances, it
//! runs the scaler and placer over one snapshot and commits their decisions.
//!
//! Only the Raft leader decides; its decisions go through the log like any
//! write, so agents act only on committed decisions, and a new leader carries on
//! from the same state. A follower's loop sends its gateway's load to the
//! leader instead, so requests waiting on any coordinator's gateway count.

use crate::gateway::Gateway;
use crate::load::{LoadReport, LoadSnapshot};
use crate::placer::place;
use crate::scaler::{decide, Action};
use crate::state::{ClusterState, Command, Response};
use crate::store::Store;
use sluice_common::{InstanceState, Timestamp};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// How often decisions run when nothing wakes the loop earlier.
    pub tick: Duration,
    /// A node silent this long gets no new instances.
    pub lost_after: Duration,
    /// How long gone instances stay visible in `sluice ls`.
    pub keep_gone_for: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self { tick: Duration::from_secs(1), lost_after: Duration::from_secs(15), keep_gone_for: Duration::from_secs(300) }
    }
}

/// A follower's load report older than this is ignored: that gateway is gone or cut off.
pub const PEER_LOAD_MAX_AGE: Duration = Duration::from_secs(3);

/// Where the controller reads load from; the gateway in a real node.
pub trait LoadSource: Send + Sync + 'static {
    fn load(&self) -> LoadSnapshot;
}

impl LoadSource for Gateway {
    fn load(&self) -> LoadSnapshot {
        Gateway::load(self)
    }
}

/// Turns one snapshot into the commands to commit. Pure. `leader_since` is when
/// this coordinator became leader: the start of every node's failover grace.
pub fn plan(state: &ClusterState, load: &LoadSnapshot, now: Timestamp, leader_since: Timestamp, config: &ControllerConfig) -> Vec<Command> {
    let mut commands = Vec::new();
    for action in decide(state, load, now) {
        match action {
            Action::Start { function, count } => {
                let Some(spec) = state.functions.get(&function) else { continue };
                let placement = place(state, spec, count, now, config.lost_after, leader_since);
                if placement.unplaced > 0 {
                    warn!(function = %function, wanted = count, unplaced = placement.unplaced, "no live node has room; retrying on the next decision (add nodes or lower the function's limits if this lasts)");
                }
                for node in placement.nodes {
                    commands.push(Command::StartInstance { function: function.clone(), node, at: now });
                }
            }
            Action::Stop { id, reason } => commands.push(Command::StopInstance { id, reason: reason.as_str().into(), at: now }),
        }
    }
    let before = Timestamp(now.0.saturating_sub(config.keep_gone_for.as_millis() as u64));
    if state.instances.values().any(|i| i.state == InstanceState::Gone && i.state_since < before) {
        commands.push(Command::PruneGone { before });
    }
    commands
}

/// Runs decisions until `shutdown`.
pub async fn run(store: Arc<Store>, load: Arc<dyn LoadSource>, demand: Arc<Notify>, config: ControllerConfig, shutdown: impl Future<Output = ()>) {
    let mut tick = tokio::time::interval(config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut desired = store.watch_desired();
    let mut leadership = store.watch_leadership();
    let peer_loads = store.raft().peer_loads.clone();
    let id = store.raft_status().id;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = demand.notified() => {}
            _ = peer_loads.waiting.notified() => {}
            _ = desired.changed() => {}
            _ = leadership.changed() => {}
            _ = &mut shutdown => return,
        }
        let mut snapshot = load.load();
        let Some(leader_since) = store.leadership().since else {
            match serde_json::to_vec(&LoadReport { from: id, load: snapshot }) {
                Ok(report) => store.raft().share_load(report.into()),
                Err(e) => warn!(error = %e, "cannot encode this gateway's load for the leader"),
            }
            continue;
        };
        for peer in peer_loads.fresh(PEER_LOAD_MAX_AGE) {
            snapshot.merge(&peer);
        }
        let now = store.now();
        let commands = store.read(|s| plan(s, &snapshot, now, leader_since, &config));
        for cmd in commands {
            let what = describe(&cmd);
            match store.execute(cmd).await {
                Ok(Response::InstanceStarted { id }) => info!(instance = %id, decision = %what, "instance placed"),
                Ok(Response::Ok) => {
                    if !what.is_empty() {
                        info!(decision = %what, "applied");
                    }
                }
                Ok(other) => warn!(decision = %what, response = ?other, "decision not applied"),
                Err(e) => {
                    // Leadership lost or the log is stuck: the next leader decides afresh.
                    warn!(decision = %what, error = %e, "decision not committed; deciding again on the next round");
                    break;
                }
            }
        }
    }
}

fn describe(cmd: &Command) -> String {
    match cmd {
        Command::StartInstance { function, node, .. } => format!("start {function} on {node}"),
        Command::StopInstance { id, reason, .. } => format!("stop {id}: {reason}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::FunctionLoad;
    use crate::state::apply;
    use sluice_common::{FunctionName, FunctionSpec, ImageRef, NodeId, Resources};

    #[test]
    fn demand_becomes_placed_instances() {
        let mut st = ClusterState::default();
        let f = FunctionName::new("f").unwrap();
        let mut spec = FunctionSpec::new(f.clone(), ImageRef::parse("img").unwrap());
        spec.concurrency = 2;
        apply(&mut st, &Command::PutFunction { spec });
        let n = NodeId::new("n1").unwrap();
        apply(&mut st, &Command::NodeSeen { node: n.clone(), capacity: Resources { cpu_millis: 500, memory_mb: 4096 }, at: Timestamp(0) });
        let mut load = LoadSnapshot::default();
        load.functions.insert(f.clone(), FunctionLoad { in_flight: 0, queued: 5 });
        let cmds = plan(&st, &load, Timestamp(10), Timestamp(0), &ControllerConfig::default());
        // 5 requests at concurrency 2 want 3 instances; half a core holds 2 at 250 millis each.
        assert_eq!(
            cmds,
            vec![
                Command::StartInstance { function: f.clone(), node: n.clone(), at: Timestamp(10) },
                Command::StartInstance { function: f, node: n, at: Timestamp(10) },
            ]
        );
    }
}
