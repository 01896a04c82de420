//! Which functions call each other, as the gateways saw it: the co-location
//! score's input.
//!
//! A gateway knows the caller of a request when it comes from the address of
//! one of a function's instances, and publishes per (caller, callee) totals.
//! Each edge keeps a rate that follows those totals with a one-minute time
//! constant, so a pair that stops calling fades out. Pure.

use sluice_common::wire::CallFigures;
use sluice_common::{FunctionName, NodeId, Timestamp};
use std::collections::HashMap;
use std::time::Duration;

/// How quickly a rate forgets: the time constant of its exponential average.
const MEMORY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct Edge {
    total: u64,
    at: Timestamp,
    /// Calls per second, smoothed.
    rate: f64,
}

/// Call rates per (gateway, caller, callee).
#[derive(Debug, Default, Clone)]
pub struct CallGraph {
    edges: HashMap<(NodeId, FunctionName, FunctionName), Edge>,
}

impl CallGraph {
    /// Takes in a gateway's totals, stamped `at`.
    pub fn record(&mut self, gateway: &NodeId, at: Timestamp, calls: &[CallFigures]) {
        for c in calls {
            let key = (gateway.clone(), c.from.clone(), c.to.clone());
            match self.edges.get_mut(&key) {
                Some(e) if at > e.at => {
                    let dt = at.since(e.at).as_secs_f64();
                    // A total that went down is a gateway that restarted: count from zero.
                    let added = if c.calls_total >= e.total { c.calls_total - e.total } else { c.calls_total };
                    let weight = 1.0 - (-dt / MEMORY.as_secs_f64()).exp();
                    e.rate += weight * (added as f64 / dt - e.rate);
                    e.total = c.calls_total;
                    e.at = at;
                }
                Some(_) => {}
                None => {
                    self.edges.insert(key, Edge { total: c.calls_total, at, rate: 0.0 });
                }
            }
        }
    }

    /// For each function, the functions it calls or is called by, with the
    /// rate (both ways, all gateways), leaving out edges quiet since `horizon`.
    pub fn partners(&self, now: Timestamp, horizon: Duration) -> HashMap<FunctionName, Vec<(FunctionName, f64)>> {
        let mut sums: HashMap<(FunctionName, FunctionName), f64> = HashMap::new();
        for ((_, from, to), e) in &self.edges {
            if now.since(e.at) > horizon || e.rate <= 0.0 {
                continue;
            }
            *sums.entry((from.clone(), to.clone())).or_default() += e.rate;
            *sums.entry((to.clone(), from.clone())).or_default() += e.rate;
        }
        let mut out: HashMap<FunctionName, Vec<(FunctionName, f64)>> = HashMap::new();
        for ((a, b), rate) in sums {
            out.entry(a).or_default().push((b, rate));
        }
        for v in out.values_mut() {
            v.sort_by(|x, y| x.0.cmp(&y.0));
        }
        out
    }

    /// Forgets edges quiet since `horizon`.
    pub fn expire(&mut self, now: Timestamp, horizon: Duration) {
        self.edges.retain(|_, e| now.since(e.at) <= horizon);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> FunctionName {
        FunctionName::new(s).unwrap()
    }

    #[test]
    fn rates_follow_the_totals_both_ways_and_fade() {
        let mut g = CallGraph::default();
        let gw = NodeId::new("coordinator-1").unwrap();
        for s in 0..=120u64 {
            g.record(&gw, Timestamp(s * 1000), &[CallFigures { from: f("web"), to: f("db"), calls_total: s * 10 }]);
        }
        let p = g.partners(Timestamp(120_000), Duration::from_secs(300));
        let (partner, rate) = &p[&f("db")][0];
        assert_eq!(partner, &f("web"));
        assert!((rate - 10.0).abs() < 1.5, "about 10 calls/s after two minutes: {rate}");
        assert_eq!(p[&f("web")][0].0, f("db"), "both ways");
        // A gateway restart (the total drops) is counted from zero, not as a negative.
        g.record(&gw, Timestamp(121_000), &[CallFigures { from: f("web"), to: f("db"), calls_total: 10 }]);
        assert!(g.partners(Timestamp(121_000), Duration::from_secs(300))[&f("db")][0].1 > 0.0);
        assert!(g.partners(Timestamp(1_000_000), Duration::from_secs(300)).is_empty(), "quiet edges leave out");
    }
}
