//! The control loop: the I/O around `decide::plan`.
//!
//! On the leader it runs a round on every tick, when a gateway reports waiting
//! requests, when a desired set changes and when leadership changes: it reads
//! the state through the Raft barrier (so it never plans on a state older than
//! what is committed), reads the windows, activity and liveness, plans, and
//! commits the plan as one log entry. It decides only once its term's first
//! entry is applied (`Leadership::since`), so it never re-places what its
//! predecessor placed. On a follower it passes its liveness notes to the
//! leader once a second.
//!
//! On every coordinator it also feeds the keep-warm models (`predictor`) at
//! each bin's end, so whichever leads next has their history; the leader's
//! rounds read what they hold now. And it samples each function's instance
//! counts into the dashboard's timeline once a second (`timeline`).

use crate::decide::{self, DecideConfig, Inputs, Round};
use crate::ingest::Telemetry;
use crate::liveness::Liveness;
use crate::plan::{Action, Decision, Outcome};
use crate::predictor::{PredictConfig, Predictor};
use crate::state::ClusterState;
use crate::state_machine::{Command, Response};
use crate::store::Store;
use crate::timeline::Counts;
use sluice_common::predict::Hold;
use sluice_common::{FunctionName, InstanceState, Timestamp};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, error, info, warn};

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// How often decisions run when nothing wakes the loop earlier.
    pub tick: Duration,
    pub decide: DecideConfig,
    /// Keep-warm prediction; None turns it off (reactive scaling only).
    pub predict: Option<PredictConfig>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self { tick: Duration::from_secs(1), decide: DecideConfig::default(), predict: Some(PredictConfig::default()) }
    }
}

/// How often a follower sends its liveness notes to the leader.
const SHARE_EVERY: Duration = Duration::from_millis(500);
/// Liveness notes older than this are forgotten.
const LIVENESS_HORIZON: Duration = Duration::from_secs(600);

/// Runs decisions until `shutdown`.
pub async fn run(store: Arc<Store>, telemetry: Arc<Telemetry>, config: ControllerConfig, shutdown: impl Future<Output = ()>) {
    let mut tick = tokio::time::interval(config.tick.min(SHARE_EVERY));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut desired = store.watch_desired();
    let mut leadership = store.watch_leadership();
    let id = store.raft_status().id;
    let liveness = store.raft().liveness.clone();
    let mut last_round = tokio::time::Instant::now() - config.tick;
    let mut predictor = config.predict.clone().map(Predictor::new);
    let mut sampled_second = 0;
    tokio::pin!(shutdown);
    loop {
        let woken = tokio::select! {
            _ = tick.tick() => false,
            _ = telemetry.demand.notified() => true,
            _ = desired.changed() => true,
            changed = leadership.changed() => {
                if changed.is_err() {
                    // The Raft loop is gone (its storage failed): nothing can be
                    // decided or committed, and a closed watch would wake this loop
                    // at once, forever.
                    error!("the raft loop has ended; the controller stops (the coordinator exits so it is restarted)");
                    return;
                }
                true
            }
            _ = &mut shutdown => return,
        };
        let now = store.now();
        if let Some(p) = predictor.as_mut().filter(|p| p.due(now)) {
            store.read(|state| p.advance(&telemetry.windows(), state.functions.values(), now));
        }
        let holds = predictor.as_ref().map(|p| p.holds(now)).unwrap_or_default();
        // Once a second, whatever woke the loop: the timeline's finest slot.
        if now.millis() / 1000 != sampled_second {
            sampled_second = now.millis() / 1000;
            store.read(|state| sample_timeline(state, &telemetry, &holds, now));
        }
        liveness.lock().expect("liveness lock poisoned").forget_older(now, LIVENESS_HORIZON);
        let lead = store.leadership();
        let (Some(since), Some(term)) = (lead.since, lead.term) else {
            if lead.leader.is_some_and(|l| l != id) {
                let notes = liveness.lock().expect("liveness lock poisoned").recent(id, now, config.decide.lost_after);
                match serde_json::to_vec(&notes) {
                    Ok(bytes) => store.raft().share_heard(bytes.into()),
                    Err(e) => warn!(error = %e, "cannot encode liveness notes for the leader"),
                }
            }
            continue;
        };
        if !woken && last_round.elapsed() < config.tick {
            continue;
        }
        last_round = tokio::time::Instant::now();
        let round = store.read_linearizable(|state| with_inputs(state, &telemetry, &liveness, (term, since), now, &config.decide, &holds, decide::plan)).await;
        match round {
            Ok(round) => commit(&store, round).await,
            Err(e) => debug!(error = %e, "cannot read through the barrier; deciding on the next round"),
        }
    }
}

/// Runs `f` on the decision inputs as this coordinator holds them now: the
/// windows, activity, call graph and liveness, locked while `f` runs (keep it a
/// decision, not I/O). `lead` is the term and when this coordinator began to lead.
///
/// Locks are taken in one order everywhere, so none waits on another in a
/// circle: the state (held by the caller), the windows, activity, calls, liveness.
// Each argument is one decision input the caller holds; bundling them would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn with_inputs<R>(
    state: &ClusterState,
    telemetry: &Telemetry,
    liveness: &Mutex<Liveness>,
    lead: (u64, Timestamp),
    now: Timestamp,
    config: &DecideConfig,
    holds: &HashMap<FunctionName, Hold>,
    f: impl FnOnce(&Inputs<'_>) -> R,
) -> R {
    let windows = telemetry.windows();
    let activity = telemetry.activity();
    let calls = telemetry.calls().partners(now, crate::ingest::CALLS_HORIZON);
    let liveness = liveness.lock().expect("liveness lock poisoned");
    f(&Inputs {
        state,
        windows: &windows,
        activity: &activity,
        liveness: &liveness,
        calls: &calls,
        now,
        term: lead.0,
        leader_since: lead.1,
        history_from: telemetry.history_from().unwrap_or(now),
        config,
        holds,
    })
}

/// Records every function's instance counts in the timeline, and forgets
/// removed functions' (the state first, then the timeline: the lock order).
fn sample_timeline(state: &ClusterState, telemetry: &Telemetry, holds: &HashMap<FunctionName, Hold>, now: Timestamp) {
    let mut states: HashMap<&FunctionName, Vec<InstanceState>> = HashMap::new();
    for i in state.instances.values() {
        states.entry(&i.function).or_default().push(i.state);
    }
    let mut timeline = telemetry.timeline();
    timeline.retain(|f| state.functions.contains_key(f));
    for name in state.functions.keys() {
        let predicted = holds.get(name).map_or(0, Hold::total);
        timeline.record(name, Counts::of(states.get(name).into_iter().flatten(), predicted), now);
    }
}

async fn commit(store: &Store, round: Round) {
    for (function, missing) in &round.unplaced {
        warn!(function = %function, missing, "no node can take an instance; retrying on the next round (add nodes, or check `sluice explain placement {function}`)");
    }
    if round.plan.decisions.is_empty() {
        return;
    }
    let decisions: Vec<Decision> = round.plan.decisions.clone();
    match store.execute(Command::Plan(round.plan)).await {
        Ok(Response::Planned { outcomes }) => {
            for (d, outcome) in decisions.iter().zip(outcomes) {
                let what = d.action.describe();
                match outcome {
                    Outcome::Started { id } => info!(instance = %id, decision = %what, reason = %d.reason, "instance placed"),
                    Outcome::Done => info!(decision = %what, reason = %d.reason, "applied"),
                    // A gateway resumes a paused instance for its waiting requests
                    // without waiting for a round, so a round that saw them waiting
                    // often finds the resume done: expected, not worth a warning.
                    Outcome::Refused { why } if matches!(d.action, Action::Resume { .. }) => {
                        debug!(decision = %what, why = %why, "resume refused when applied (a gateway resumed it first, or it moved on)")
                    }
                    Outcome::Refused { why } => warn!(decision = %what, why = %why, "decision refused when applied; deciding again on the next round"),
                }
            }
        }
        Ok(other) => warn!(response = ?other, "plan not applied; deciding again on the next round"),
        // Leadership lost or the log is stuck: the next leader decides afresh.
        Err(e) => warn!(error = %e, "plan not committed; deciding again on the next round"),
    }
}
