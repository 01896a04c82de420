//! Node decisions: health from liveness, and drains.
//!
//! A node is `ready` while its agent is heard from, `suspect` after
//! `suspect_after` of silence (no new instances; its instances stay), and
//! `down` after `lost_after` (its instances are marked lost and replaced
//! elsewhere). A new leader gives every node a full period from its election
//! before calling it silent, since followers' notes take a moment to reach it
//! (Nomad's failover grace); that grace never makes a node healthier than
//! the log says, only real word from its agent does.
//!
//! A draining node's instances move: a replacement starts elsewhere, and the
//! old instance stops once the replacement is ready, so no request is turned
//! away. Pure.

use super::placer::{Placer, Preferences};
use crate::liveness::Liveness;
use crate::plan::{Action, Decision, PlacementNote, Reason};
use crate::state::{is_serving_state, ClusterState};
use sluice_common::{Health, InstanceId, InstanceState, Timestamp};
use std::collections::HashSet;
use std::time::Duration;

/// Health thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub suspect_after: Duration,
    pub lost_after: Duration,
}

/// Health changes, and instances lost with a node going down (returned, so the
/// scaler does not count them this round).
pub fn health(state: &ClusterState, liveness: &Liveness, leader_since: Timestamp, now: Timestamp, t: Thresholds, out: &mut Vec<Decision>) -> HashSet<InstanceId> {
    let mut lost = HashSet::new();
    for node in state.nodes.values() {
        let heard = liveness.last_heard(&node.id);
        // Benefit of the doubt for a new leader: silence counts from its election at the latest.
        let silent_down = now.since(heard.unwrap_or(Timestamp(0)).max(leader_since));
        let silent_up = heard.map_or(Duration::MAX, |h| now.since(h));
        let judge = |silent: Duration| {
            if silent > t.lost_after {
                Health::Down
            } else if silent > t.suspect_after {
                Health::Suspect
            } else {
                Health::Ready
            }
        };
        let worse = judge(silent_down);
        // Only word from the agent itself, since it was marked, makes a node healthier.
        let better = if heard.is_some_and(|h| h > node.state_since) { judge(silent_up) } else { node.health };
        let next = if worse > node.health {
            worse
        } else if better < node.health {
            better
        } else {
            node.health
        };
        if next == node.health {
            continue;
        }
        let silent_secs = if next > node.health { silent_down.as_secs() } else { silent_up.as_secs() };
        out.push(Decision { action: Action::SetHealth { node: node.id.clone(), health: next }, reason: Reason::Liveness { silent_secs } });
        if next == Health::Down {
            for inst in state.live_on(&node.id) {
                out.push(Decision { action: Action::MarkLost { id: inst.id }, reason: Reason::NodeLost { node: node.id.clone() } });
                lost.insert(inst.id);
            }
        }
    }
    lost
}

/// Moves the instances of draining nodes: starts replacements, and stops the
/// old ones whose replacement is ready. `skip` holds instances this round
/// already stops.
pub fn drain(state: &ClusterState, placer: &mut Placer<'_>, skip: &HashSet<InstanceId>, out: &mut Vec<Decision>, unplaced: &mut Vec<(sluice_common::FunctionName, u32)>) {
    for node in state.nodes.values().filter(|n| n.draining) {
        for inst in state.live_on(&node.id).filter(|i| is_serving_state(i.state) && !skip.contains(&i.id)) {
            let replacement = state.live_instances(&inst.function).find(|r| r.replaces == Some(inst.id));
            match replacement {
                Some(r) if r.state == InstanceState::Ready => {
                    out.push(Decision { action: Action::Stop { id: inst.id }, reason: Reason::Replaced { by: r.id } });
                }
                Some(_) => {} // on its way
                None => {
                    let Some(spec) = state.functions.get(&inst.function) else { continue };
                    match placer.place(spec, &Preferences::default(), Some(&node.id)) {
                        Some(c) => out.push(Decision {
                            action: Action::Start {
                                function: inst.function.clone(),
                                node: c.node,
                                replaces: Some(inst.id),
                                placement: PlacementNote { score: c.score, feasible: c.feasible, considered: c.considered },
                            },
                            reason: Reason::Drain { node: node.id.clone() },
                        }),
                        None => unplaced.push((inst.function.clone(), 1)),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::{NodeId, NodeInfo, Resources};

    const T: Thresholds = Thresholds { suspect_after: Duration::from_secs(5), lost_after: Duration::from_secs(15) };

    fn node(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn state_with(health: Health, since: u64) -> ClusterState {
        let mut st = ClusterState::default();
        let mut n = NodeInfo::new(node("a"), Resources { cpu_millis: 1000, memory_mb: 1000 }, Timestamp(since));
        n.health = health;
        st.nodes.insert(node("a"), n);
        st
    }

    fn decide(st: &ClusterState, heard: Option<u64>, leader_since: u64, now: u64) -> Vec<Health> {
        let mut l = Liveness::default();
        if let Some(h) = heard {
            l.heard(&node("a"), Timestamp(h));
        }
        let mut out = Vec::new();
        health(st, &l, Timestamp(leader_since), Timestamp(now), T, &mut out);
        out.into_iter()
            .filter_map(|d| match d.action {
                Action::SetHealth { health, .. } => Some(health),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn silence_makes_a_node_suspect_then_down_and_word_brings_it_back() {
        let st = state_with(Health::Ready, 0);
        assert_eq!(decide(&st, Some(100_000), 0, 104_000), vec![]);
        assert_eq!(decide(&st, Some(100_000), 0, 106_000), vec![Health::Suspect]);
        assert_eq!(decide(&st, Some(100_000), 0, 116_000), vec![Health::Down]);
        let down = state_with(Health::Down, 116_000);
        assert_eq!(decide(&down, Some(100_000), 0, 130_000), vec![], "old word does not revive it");
        assert_eq!(decide(&down, Some(129_000), 0, 130_000), vec![Health::Ready]);
    }

    #[test]
    fn a_new_leader_gives_every_node_a_grace_but_no_pardon() {
        let st = state_with(Health::Ready, 0);
        // Never heard by this leader (elected at 100 s), 10 s ago: suspect, not down.
        assert_eq!(decide(&st, None, 100_000, 110_000), vec![Health::Suspect]);
        assert_eq!(decide(&st, None, 100_000, 103_000), vec![]);
        // A node the old leader had marked down stays down through the grace.
        let down = state_with(Health::Down, 50_000);
        assert_eq!(decide(&down, None, 100_000, 101_000), vec![]);
    }
}
