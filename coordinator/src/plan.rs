//! A plan: the leader's decisions of one round, committed as one log entry.
//!
//! Every decision carries its reason with the figures it was made from, so
//! explaining it later is reading it back, not recomputing it. A plan is
//! conditional: the state machine re-checks each decision when it applies it
//! (capacity, maximum instances, the node's health) and refuses a whole plan
//! made in another term than the one it is committed in, so neither a deposed
//! leader's late proposal nor a decision overtaken by events can act.

use serde::{Deserialize, Serialize};
use sluice_common::predict::Why;
use sluice_common::rules::RuleName;
use sluice_common::{FunctionName, Health, InstanceId, NodeId, Timestamp};
use std::fmt;

/// One round's decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The Raft term the plan was made in; it applies only if committed in that term.
    pub term: u64,
    /// When it was made (the leader's clock).
    pub at: Timestamp,
    pub decisions: Vec<Decision>,
}

/// One action and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub action: Action,
    pub reason: Reason,
}

/// What a decision does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// A new instance of `function` on `node`.
    Start {
        function: FunctionName,
        node: NodeId,
        /// The instance it replaces (a drain move): it does not count twice against the maximum.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<InstanceId>,
        /// How the node was chosen.
        placement: PlacementNote,
    },
    /// Take an instance out of service; its agent stops it.
    Stop { id: InstanceId },
    /// Freeze an idle instance: it keeps its memory and costs no CPU.
    Pause { id: InstanceId },
    /// Thaw a paused instance.
    Resume { id: InstanceId },
    /// An instance on a node that is down: gone without its agent's word.
    MarkLost { id: InstanceId },
    /// A node's health as its liveness shows it.
    SetHealth { node: NodeId, health: Health },
    /// A rule took effect on a function: remembered for its cooldown.
    Fired { function: FunctionName, rule: RuleName, base: u32 },
    /// A function entered panic mode with `ready` instances: it stays there
    /// while its panic window's peak asks for the threshold over those.
    Panic { function: FunctionName, ready: u32 },
    /// Forget instances gone before `before`.
    Prune { before: Timestamp },
}

/// How a node was chosen for a new instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementNote {
    /// The winner's total score (higher is better).
    pub score: f64,
    /// Nodes that passed every filter, and nodes considered.
    pub feasible: u32,
    pub considered: u32,
}

/// Whether a function is sized by its stable or its panic window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Stable,
    Panic,
}

/// Why: the policy that decided, and the figures it read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// The default policy: target tracking over windowed concurrency.
    Demand {
        desired: u32,
        live: u32,
        /// Mean concurrency over the stable and the panic window.
        stable: f64,
        panic: f64,
        /// Concurrency (in flight + queued) at the gateways right now.
        now: f64,
        /// Concurrency one instance should carry.
        target: f64,
        mode: Mode,
    },
    /// A rule decided the count (or its floor, ceiling or bounds).
    Rule { rule: RuleName, desired: u32, live: u32 },
    /// `min_instances` (or a rule's `set_min`) holds instances up.
    Minimum { min: u32, live: u32 },
    /// `max_instances` (or a rule's `set_max`) caps the function.
    Maximum { max: u32, live: u32 },
    /// An instance did not become ready in its start timeout (plus grace).
    StartTimedOut { waited_secs: u64 },
    /// Its node is down.
    NodeLost { node: NodeId },
    /// Its node is draining: a replacement starts elsewhere, then it stops.
    Drain { node: NodeId },
    /// Its replacement is ready.
    Replaced { by: InstanceId },
    /// A node's agent has been silent this long (or spoke again).
    Liveness { silent_secs: u64 },
    /// A rule's condition held for its `for` duration.
    RuleFired { rule: RuleName, value: Option<f64> },
    /// Idle instances paused rather than stopped, by a rule's `pause_idle`.
    PauseIdle { rule: RuleName },
    /// The function's keep-warm model (`sluice_common::predict`) holds this
    /// many hot and paused instances now: pre-warmed before a call it expects,
    /// or kept through an idle time it expects to end.
    Predicted { hot: u32, paused: u32, live: u32, why: Why },
    /// A gateway holds requests for a function with no free slot and resumes
    /// a paused instance itself, without waiting for the controller's round.
    RequestWaiting {
        /// The gateway's coordinator, as its figures name it (`coordinator-<id>`).
        gateway: NodeId,
        /// Requests waiting there when it asked.
        queued: u32,
    },
    /// A gateway saw an instance paused while its requests were on it (the
    /// pause was decided from activity a second old): they wait in the frozen
    /// container until it thaws, so the gateway resumes it at once.
    RequestsInFlight { gateway: NodeId, in_flight: u32 },
    /// Routine upkeep.
    Housekeeping,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Demand { desired, live, stable, panic, now, target, mode } => write!(
                f,
                "target tracking ({}): concurrency stable {stable:.2}, panic {panic:.2}, now {now:.2} at target {target:.2} per instance wants {desired}, has {live}",
                match mode {
                    Mode::Stable => "stable window",
                    Mode::Panic => "panic mode",
                }
            ),
            Reason::Rule { rule, desired, live } => write!(f, "rule {rule} wants {desired}, has {live}"),
            Reason::Minimum { min, live } => write!(f, "minimum of {min} instances, has {live}"),
            Reason::Maximum { max, live } => write!(f, "maximum of {max} instances, has {live}"),
            Reason::StartTimedOut { waited_secs } => write!(f, "not ready after {waited_secs} s"),
            Reason::NodeLost { node } => write!(f, "node {node} is down"),
            Reason::Drain { node } => write!(f, "node {node} is draining"),
            Reason::Replaced { by } => write!(f, "replaced by {by}, which is ready"),
            Reason::Liveness { silent_secs } => write!(f, "agent silent for {silent_secs} s"),
            Reason::RuleFired { rule, value } => match value {
                Some(v) => write!(f, "rule {rule} fired at {v:.3}"),
                None => write!(f, "rule {rule} fired"),
            },
            Reason::PauseIdle { rule } => write!(f, "idle, paused by rule {rule}"),
            Reason::Predicted { hot, paused, live, why } => write!(f, "predicted: hold {hot} hot and {paused} paused ({why}), has {live}"),
            Reason::RequestWaiting { gateway, queued } => write!(f, "request waiting at gateway {gateway} ({queued} queued)"),
            Reason::RequestsInFlight { gateway, in_flight } => write!(f, "paused with {in_flight} requests in flight at gateway {gateway}"),
            Reason::Housekeeping => f.write_str("housekeeping"),
        }
    }
}

/// What became of one decision when the plan was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Started {
        id: InstanceId,
    },
    Done,
    /// Re-checked and refused: the state had moved on.
    Refused {
        why: String,
    },
}

impl Action {
    /// A short description for logs and events.
    pub fn describe(&self) -> String {
        match self {
            Action::Start { function, node, replaces: Some(old), .. } => format!("start {function} on {node} to replace {old}"),
            Action::Start { function, node, .. } => format!("start {function} on {node}"),
            Action::Stop { id } => format!("stop {id}"),
            Action::Pause { id } => format!("pause {id}"),
            Action::Resume { id } => format!("resume {id}"),
            Action::MarkLost { id } => format!("mark {id} lost"),
            Action::SetHealth { node, health } => format!("mark node {node} {health}"),
            Action::Fired { function, rule, .. } => format!("rule {rule} takes effect on {function}"),
            Action::Panic { function, ready } => format!("{function} enters panic mode at {ready} ready"),
            Action::Prune { .. } => "forget gone instances".into(),
        }
    }
}
