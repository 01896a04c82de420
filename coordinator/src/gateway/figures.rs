//! The gateway's per-function figures as wire messages (`GatewayBatch`), for the
//! metrics bus: the counters as they stand, and the latency p95 of the requests
//! answered since the previous batch.

use super::{Gateway, StatusClass};
use sluice_common::metrics::{HistogramSnapshot, LATENCY_BUCKETS};
use sluice_common::wire::{CacheFigures, CallFigures, FunctionFigures, GatewayBatch, InstanceActivity};
use sluice_common::{FunctionName, NodeId};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// The node id a coordinator publishes its gateway's figures under.
pub fn coordinator_node_id(raft_id: u64) -> NodeId {
    NodeId::new(format!("coordinator-{raft_id}")).expect("coordinator-<number> is a valid node id")
}

/// JSON has no infinity: a p95 past the last bucket is sent as that bucket's bound.
const LONGEST: f64 = LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1];

/// Takes successive batches, remembering each function's latency histogram so
/// the next batch's p95 covers only what came after.
#[derive(Debug, Default)]
pub struct FiguresTaker {
    previous: HashMap<FunctionName, HistogramSnapshot>,
}

impl FiguresTaker {
    pub fn take(&mut self, gateway: &Gateway) -> GatewayBatch {
        let routes = gateway.routes();
        let mut next = HashMap::with_capacity(routes.len());
        let functions = routes
            .iter()
            .map(|r| {
                let c = &r.counters;
                let total_latency = c.latency();
                let latency = total_latency.snapshot();
                let before = self.previous.get(&r.name).copied().unwrap_or_default();
                next.insert(r.name.clone(), latency);
                FunctionFigures {
                    function: r.name.clone(),
                    requests_total: c.requests(),
                    responses_2xx_total: c.responses(StatusClass::Success),
                    responses_4xx_total: c.responses(StatusClass::ClientError),
                    responses_5xx_total: c.responses(StatusClass::ServerError),
                    cold_starts_total: c.cold_starts.load(Ordering::Relaxed),
                    shed_total: c.shed.load(Ordering::Relaxed),
                    in_flight: c.in_flight(),
                    queued: r.queued.load(Ordering::Relaxed),
                    latency_p95_seconds: latency.quantile_since(&before, 0.95).map(|s| s.min(LONGEST)),
                    latency_p50_seconds: latency.quantile_since(&before, 0.5).map(|s| s.min(LONGEST)),
                    latency_p99_seconds: latency.quantile_since(&before, 0.99).map(|s| s.min(LONGEST)),
                    request_us_total: total_latency.sum_micros(),
                    instances: r
                        .backends()
                        .iter()
                        .map(|b| InstanceActivity { instance: b.id, outstanding: b.outstanding.load(Ordering::Relaxed), last_active_ms: b.last_active.load(Ordering::Relaxed) })
                        .collect(),
                    cache: r.cache_spec().map(|_| {
                        let held = gateway.cache_figures(&r.name);
                        CacheFigures {
                            hits_total: c.cache_hits.load(Ordering::Relaxed),
                            misses_total: c.cache_misses.load(Ordering::Relaxed),
                            evictions_total: held.evictions,
                            bytes: held.bytes,
                        }
                    }),
                }
            })
            .collect();
        // Removed functions are forgotten with the swap.
        self.previous = next;
        let mut calls = Vec::new();
        for r in &routes {
            for (from, total) in r.counters.calls.lock().expect("calls lock").iter() {
                calls.push(CallFigures { from: from.clone(), to: r.name.clone(), calls_total: *total });
            }
        }
        GatewayBatch { functions, calls }
    }
}
