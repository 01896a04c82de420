//! The placer: which node each new instance goes to, and why.
//!
//! Filters first, each with a reason: the node is ready and not draining, has
//! the labels the function's `node_selector` asks for, is under its own and
//! the function's per-node limits, runs nothing the function is anti-affine
//! to, and has room for the reservation. Then a weighted score picks among
//! the nodes left:
//!
//! - **fit**: `binpack` prefers the fullest node that fits (after placing);
//!   `spread` the node with the smallest share of this function's instances,
//!   then the emptiest (by reservations alone, a few small instances on big
//!   nodes differ too little to outweigh the other scores, and all land on one);
//! - **image**: the node already holds the image (no pull);
//! - **load**: the host's measured CPU over the last 30 s (from the windows);
//! - **colocation**: the node runs functions this one calls or is called by
//!   (learned by the gateways), weighted by how often;
//! - **preference**: rules' `prefer_nodes` (+1) and `avoid_nodes` (-1).
//!
//! Ties go to the lower node id, so every replica would choose alike. Pure.

use crate::state::{reservation, ClusterState};
use serde::Serialize;
use sluice_common::labels::{self, Labels};
use sluice_common::placement::Strategy;
use sluice_common::{FunctionName, FunctionSpec, NodeId, Resources};
use std::collections::HashMap;

/// How much each score counts; set with `--placement-weights`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Weights {
    pub fit: f64,
    pub image: f64,
    pub load: f64,
    pub colocation: f64,
    pub preference: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self { fit: 1.0, image: 0.5, load: 0.5, colocation: 1.0, preference: 2.0 }
    }
}

impl Weights {
    /// Parses `fit=1,image=0.5,...`; names left out keep their default.
    pub fn parse(text: &str) -> Result<Weights, String> {
        let mut w = Weights::default();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| format!("{part:?} is not name=number"))?;
            let value: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && (0.0..=100.0).contains(v))
                .ok_or_else(|| format!("{part:?}: the weight must be a number from 0 to 100"))?;
            let slot = match name.trim() {
                "fit" => &mut w.fit,
                "image" => &mut w.image,
                "load" => &mut w.load,
                "colocation" => &mut w.colocation,
                "preference" => &mut w.preference,
                other => return Err(format!("{other:?} is not a placement weight: use fit, image, load, colocation or preference")),
            };
            *slot = value;
        }
        Ok(w)
    }
}

/// What rules ask of one function's placement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preferences {
    pub prefer: Vec<Labels>,
    pub avoid: Vec<Labels>,
}

/// One node as the placer sees it during a round; reservations grow as it places.
#[derive(Debug, Clone)]
struct Candidate {
    id: NodeId,
    capacity: Resources,
    reserved: Resources,
    instances: u32,
    max_instances: Option<u32>,
    labels: Labels,
    /// The images it holds, as ids of `Placer::images` (a short list: comparing
    /// numbers, not strings, for every node of every placement).
    images: Vec<u32>,
    schedulable: bool,
    state: &'static str,
    /// Host CPU, 0-100, over the last 30 s; None when not measured.
    cpu_percent: Option<f64>,
    /// Live instances of each function here.
    functions: HashMap<FunctionName, u32>,
}

/// Where an instance went.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen {
    pub node: NodeId,
    pub score: f64,
    pub feasible: u32,
    pub considered: u32,
}

/// One node's verdict for one function, as `sluice explain placement` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeVerdict {
    pub node: NodeId,
    /// Each filter, in order, with `passed` and what it found.
    pub filters: Vec<FilterResult>,
    /// Scores (0-1 each, or -1-1 for preference) if every filter passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scores: Option<Scores>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilterResult {
    pub filter: &'static str,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    pub fit: f64,
    pub image: f64,
    pub load: f64,
    pub colocation: f64,
    pub preference: f64,
    /// Weighted sum.
    pub total: f64,
}

/// The nodes of one round, with what has been placed on them so far.
#[derive(Debug, Clone)]
pub struct Placer<'a> {
    weights: Weights,
    /// For each function, those it must not share a node with, both ways
    /// round (only functions with an anti-affinity appear).
    conflicts: HashMap<FunctionName, Vec<FunctionName>>,
    nodes: Vec<Candidate>,
    /// Call rates between functions, both ways: `calls[f]` lists the functions
    /// `f` calls or is called by, with how often (per second).
    calls: &'a HashMap<FunctionName, Vec<(FunctionName, f64)>>,
    /// Every image some node holds, numbered.
    images: HashMap<String, u32>,
}

impl<'a> Placer<'a> {
    /// A placer over `state`'s nodes; `cpu_percent(node)` reads the windows.
    pub fn new(state: &'a ClusterState, weights: Weights, cpu_percent: impl Fn(&NodeId) -> Option<f64>, calls: &'a HashMap<FunctionName, Vec<(FunctionName, f64)>>) -> Self {
        let mut images: HashMap<String, u32> = HashMap::new();
        let nodes = state
            .nodes
            .values()
            .map(|n| {
                let mut functions: HashMap<FunctionName, u32> = HashMap::new();
                let mut instances = 0;
                for i in state.live_on(&n.id) {
                    *functions.entry(i.function.clone()).or_default() += 1;
                    instances += 1;
                }
                Candidate {
                    id: n.id.clone(),
                    capacity: n.capacity,
                    reserved: state.reserved_on(&n.id),
                    instances,
                    max_instances: n.max_instances,
                    labels: n.labels.clone(),
                    images: n
                        .images
                        .iter()
                        .map(|image| {
                            let next = images.len() as u32;
                            *images.entry(image.clone()).or_insert(next)
                        })
                        .collect(),
                    schedulable: n.schedulable(),
                    state: n.state_name(),
                    cpu_percent: cpu_percent(&n.id),
                    functions,
                }
            })
            .collect();
        let mut conflicts: HashMap<FunctionName, Vec<FunctionName>> = HashMap::new();
        for spec in state.functions.values() {
            for other in &spec.placement.anti_affinity {
                conflicts.entry(spec.name.clone()).or_default().push(other.clone());
                conflicts.entry(other.clone()).or_default().push(spec.name.clone());
            }
        }
        Self { weights, conflicts, nodes, calls, images }
    }

    /// Picks a node for one instance of `spec` and books its reservation there.
    /// `except` is a node to leave out (the one a moved instance leaves).
    pub fn place(&mut self, spec: &FunctionSpec, prefs: &Preferences, except: Option<&NodeId>) -> Option<Chosen> {
        let need = reservation(spec);
        let wanted = self.wanted(spec, prefs);
        let mut best: Option<(usize, f64)> = None;
        let mut feasible = 0;
        for (i, node) in self.nodes.iter().enumerate() {
            if except == Some(&node.id) || first_failed_filter(node, spec, &need, wanted.conflicts).is_some() {
                continue;
            }
            feasible += 1;
            let total = scores(node, spec, &need, &wanted, &self.weights).total;
            // Strictly better wins; nodes come in id order, so ties keep the lower id.
            if best.is_none_or(|(_, b)| total > b + 1e-12) {
                best = Some((i, total));
            }
        }
        let (i, score) = best?;
        let node = &mut self.nodes[i];
        node.reserved = node.reserved.plus(&need);
        node.instances += 1;
        *node.functions.entry(spec.name.clone()).or_default() += 1;
        Some(Chosen { node: node.id.clone(), score, feasible, considered: self.nodes.len() as u32 })
    }

    /// What one function's placement looks up once, not per node.
    fn wanted<'p>(&'p self, spec: &FunctionSpec, prefs: &'p Preferences) -> Wanted<'p> {
        Wanted {
            image: self.images.get(spec.image.as_str()).copied(),
            partners: self.calls.get(&spec.name).map(Vec::as_slice).unwrap_or(&[]),
            conflicts: self.conflicts.get(&spec.name).map(Vec::as_slice).unwrap_or(&[]),
            prefs,
            instances: self.nodes.iter().filter_map(|n| n.functions.get(&spec.name)).sum(),
        }
    }

    /// Every node's filters and scores for one more instance of `spec`.
    pub fn explain(&self, spec: &FunctionSpec, prefs: &Preferences) -> Vec<NodeVerdict> {
        let need = reservation(spec);
        let wanted = self.wanted(spec, prefs);
        self.nodes
            .iter()
            .map(|node| {
                let filters = filter_results(node, spec, &need, wanted.conflicts);
                let passed = filters.iter().all(|f| f.passed);
                NodeVerdict { node: node.id.clone(), filters, scores: passed.then(|| scores(node, spec, &need, &wanted, &self.weights)) }
            })
            .collect()
    }
}

/// The name of the first filter `node` fails for `spec`, if any. Kept apart
/// from `filter_results` so the hot path builds no strings.
fn first_failed_filter(node: &Candidate, spec: &FunctionSpec, need: &Resources, conflicts: &[FunctionName]) -> Option<&'static str> {
    if !node.schedulable {
        return Some("ready");
    }
    if !labels::matches(&spec.placement.node_selector, &node.labels) {
        return Some("node_selector");
    }
    if node.max_instances.is_some_and(|m| node.instances >= m) {
        return Some("node_limit");
    }
    if let Some(m) = spec.placement.max_per_node {
        if node.functions.get(&spec.name).copied().unwrap_or(0) >= m {
            return Some("max_per_node");
        }
    }
    if anti_affine_here(node, conflicts).is_some() {
        return Some("anti_affinity");
    }
    if !node.reserved.plus(need).fits_within(&node.capacity) {
        return Some("capacity");
    }
    None
}

/// A function on `node` that the one being placed must not share a node with.
fn anti_affine_here<'c>(node: &Candidate, conflicts: &'c [FunctionName]) -> Option<&'c FunctionName> {
    conflicts.iter().find(|f| node.functions.get(*f).is_some_and(|n| *n > 0))
}

fn filter_results(node: &Candidate, spec: &FunctionSpec, need: &Resources, conflicts: &[FunctionName]) -> Vec<FilterResult> {
    let r = |filter, passed, detail: String| FilterResult { filter, passed, detail };
    let mine = node.functions.get(&spec.name).copied().unwrap_or(0);
    let after = node.reserved.plus(need);
    vec![
        r("ready", node.schedulable, format!("node is {}", node.state)),
        r(
            "node_selector",
            labels::matches(&spec.placement.node_selector, &node.labels),
            format!("wants {}; node has {}", show_labels(&spec.placement.node_selector), show_labels(&node.labels)),
        ),
        r(
            "node_limit",
            node.max_instances.is_none_or(|m| node.instances < m),
            match node.max_instances {
                Some(m) => format!("{} of at most {m} instances", node.instances),
                None => format!("{} instances, no limit", node.instances),
            },
        ),
        r(
            "max_per_node",
            spec.placement.max_per_node.is_none_or(|m| mine < m),
            match spec.placement.max_per_node {
                Some(m) => format!("{mine} of at most {m} of this function"),
                None => format!("{mine} of this function, no limit"),
            },
        ),
        match anti_affine_here(node, conflicts) {
            Some(other) => r("anti_affinity", false, format!("runs {other}, which must not share a node with {}", spec.name)),
            None => r("anti_affinity", true, "nothing here conflicts".into()),
        },
        r(
            "capacity",
            after.fits_within(&node.capacity),
            format!("after placing: {}/{} CPU millis, {}/{} MiB", after.cpu_millis, node.capacity.cpu_millis, after.memory_mb, node.capacity.memory_mb),
        ),
    ]
}

fn show_labels(l: &Labels) -> String {
    if l.is_empty() {
        return "no labels".into();
    }
    l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// One placement's lookups, done once for all nodes.
struct Wanted<'p> {
    /// The spec's image among the nodes' images (None: no node holds it).
    image: Option<u32>,
    partners: &'p [(FunctionName, f64)],
    conflicts: &'p [FunctionName],
    prefs: &'p Preferences,
    /// Live instances of the function on all nodes, before this one.
    instances: u32,
}

fn scores(node: &Candidate, spec: &FunctionSpec, need: &Resources, wanted: &Wanted<'_>, w: &Weights) -> Scores {
    let after = node.reserved.plus(need);
    let used = utilisation(&after, &node.capacity);
    let fit = match spec.placement.strategy {
        Strategy::Binpack => used,
        Strategy::Spread => {
            let mine = node.functions.get(&spec.name).copied().unwrap_or(0);
            let share = f64::from(mine) / f64::from(wanted.instances + 1);
            0.8 * (1.0 - share) + 0.2 * (1.0 - used)
        }
    };
    let image = if wanted.image.is_some_and(|id| node.images.contains(&id)) { 1.0 } else { 0.0 };
    let load = node.cpu_percent.map_or(0.5, |cpu| 1.0 - (cpu / 100.0).clamp(0.0, 1.0));
    let colocation = if wanted.partners.is_empty() {
        0.0
    } else {
        let total_calls: f64 = wanted.partners.iter().map(|(_, rate)| rate).sum();
        let here: f64 = wanted.partners.iter().filter(|(f, _)| node.functions.get(f).is_some_and(|n| *n > 0)).map(|(_, rate)| rate).sum();
        if total_calls > 0.0 {
            here / total_calls
        } else {
            0.0
        }
    };
    let prefs = wanted.prefs;
    let preference = if prefs.prefer.is_empty() && prefs.avoid.is_empty() {
        0.0
    } else {
        let p = prefs.prefer.iter().filter(|s| labels::matches(s, &node.labels)).count() as f64 - prefs.avoid.iter().filter(|s| labels::matches(s, &node.labels)).count() as f64;
        p.clamp(-1.0, 1.0)
    };
    let total = w.fit * fit + w.image * image + w.load * load + w.colocation * colocation + w.preference * preference;
    Scores { fit, image, load, colocation, preference, total }
}

/// Utilisation of the scarcer resource, 0.0-1.0.
fn utilisation(reserved: &Resources, capacity: &Resources) -> f64 {
    let ratio = |r: u64, c: u64| if c == 0 { 1.0 } else { (r as f64 / c as f64).min(1.0) };
    ratio(reserved.cpu_millis, capacity.cpu_millis).max(ratio(reserved.memory_mb, capacity.memory_mb))
}

#[cfg(test)]
mod tests;
