//! The names of what Sluice measures, as types: written by ingest, read by the
//! windows' queries, the scaler and the rules. A typo is a compile error, not a
//! query that silently finds nothing.
//!
//! A `Metric` is one stored series of one scope kind (a host, an instance
//! container, or a gateway's view of a function). Its `name` is what the API
//! shows; names repeat across scope kinds (`cpu_percent` of a host and of a
//! container) because the scope says which is meant.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How a series' values read; fixed by its metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesKind {
    /// A level: CPU share, bytes in use, queue length.
    Gauge,
    /// A running total: its `rate` is the increase per second (a drop is a restart).
    Counter,
}

/// An aggregation over a time range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Agg {
    /// Mean of the samples.
    Avg,
    Min,
    Max,
    /// 95th percentile (nearest rank) of the per-slot means. A spike shorter
    /// than a slot is smoothed into its slot's mean; `Max` keeps it.
    P95,
    /// Increase per second; counters only.
    Rate,
    /// The latest sample by timestamp.
    Last,
    /// Samples in the range.
    Count,
}

impl Agg {
    pub fn as_str(self) -> &'static str {
        match self {
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::P95 => "p95",
            Agg::Rate => "rate",
            Agg::Last => "last",
            Agg::Count => "count",
        }
    }
}

impl fmt::Display for Agg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of scope a metric belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    Node,
    Instance,
    Gateway,
}

macro_rules! metrics {
    ($($variant:ident => ($name:literal, $scope:ident, $kind:ident, $doc:literal)),* $(,)?) => {
        /// Every stored series kind. New metrics are added at the end.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Metric {
            $(#[doc = $doc] $variant,)*
        }

        impl Metric {
            pub const ALL: &'static [Metric] = &[$(Metric::$variant,)*];

            /// The name the API and `/metrics` use.
            pub const fn name(self) -> &'static str {
                match self { $(Metric::$variant => $name,)* }
            }

            pub const fn kind(self) -> SeriesKind {
                match self { $(Metric::$variant => SeriesKind::$kind,)* }
            }

            pub const fn scope(self) -> ScopeKind {
                match self { $(Metric::$variant => ScopeKind::$scope,)* }
            }

            pub const fn help(self) -> &'static str {
                match self { $(Metric::$variant => $doc,)* }
            }
        }
    };
}

metrics! {
    HostCpuPercent => ("cpu_percent", Node, Gauge, "Busy share of all the host's cores, 0-100."),
    HostMemoryUsedBytes => ("memory_used_bytes", Node, Gauge, "Host memory in use."),
    HostMemoryUsedPercent => ("memory_used_percent", Node, Gauge, "Host memory in use, 0-100."),
    HostSwapUsedBytes => ("swap_used_bytes", Node, Gauge, "Host swap in use."),
    HostLoad1 => ("load1", Node, Gauge, "One-minute load average."),
    HostDiskReadBytesPerSec => ("disk_read_bytes_per_sec", Node, Gauge, "Disk reads."),
    HostDiskWriteBytesPerSec => ("disk_write_bytes_per_sec", Node, Gauge, "Disk writes."),
    HostNetRxBytesPerSec => ("net_rx_bytes_per_sec", Node, Gauge, "Bytes received by the host's devices."),
    HostNetTxBytesPerSec => ("net_tx_bytes_per_sec", Node, Gauge, "Bytes sent by the host's devices."),
    ContainerCpuPercent => ("cpu_percent", Instance, Gauge, "Share of one core, 0-100 per core."),
    ContainerMemoryUsedBytes => ("memory_used_bytes", Instance, Gauge, "Memory in use, less inactive file cache."),
    ContainerMemoryUsedPercent => ("memory_used_percent", Instance, Gauge, "Memory in use as a share of the limit, 0-100."),
    ContainerNetRxBytesPerSec => ("net_rx_bytes_per_sec", Instance, Gauge, "Bytes received."),
    ContainerNetTxBytesPerSec => ("net_tx_bytes_per_sec", Instance, Gauge, "Bytes sent."),
    ContainerBlockReadBytesPerSec => ("block_read_bytes_per_sec", Instance, Gauge, "Block device reads."),
    ContainerBlockWriteBytesPerSec => ("block_write_bytes_per_sec", Instance, Gauge, "Block device writes."),
    ContainerPids => ("pids", Instance, Gauge, "Processes in the container."),
    GatewayRequestsTotal => ("requests_total", Gateway, Counter, "Invocations received."),
    GatewayResponses2xxTotal => ("responses_2xx_total", Gateway, Counter, "2xx responses."),
    GatewayResponses4xxTotal => ("responses_4xx_total", Gateway, Counter, "4xx responses."),
    GatewayResponses5xxTotal => ("responses_5xx_total", Gateway, Counter, "5xx responses."),
    GatewayColdStartsTotal => ("cold_starts_total", Gateway, Counter, "Invocations that waited for an instance to start."),
    GatewayShedTotal => ("shed_total", Gateway, Counter, "Invocations refused because the queue was full."),
    GatewayInFlight => ("in_flight", Gateway, Gauge, "Invocations being served."),
    GatewayQueued => ("queued", Gateway, Gauge, "Invocations waiting for an instance."),
    GatewayLatencyP95Seconds => ("latency_p95_seconds", Gateway, Gauge, "95th percentile latency of the interval's responses."),
    GatewayRequestSecondsTotal => ("request_seconds_total", Gateway, Counter, "Time invocations spent in the gateway, queued or served: its rate is the mean concurrency."),
    GatewayLatencyP50Seconds => ("latency_p50_seconds", Gateway, Gauge, "Median latency of the interval's responses."),
    GatewayLatencyP99Seconds => ("latency_p99_seconds", Gateway, Gauge, "99th percentile latency of the interval's responses."),
    GatewayCacheHitsTotal => ("cache_hits_total", Gateway, Counter, "Invocations answered from the gateway's response cache."),
    GatewayCacheMissesTotal => ("cache_misses_total", Gateway, Counter, "Invocations of a function with a cache that the cache did not answer."),
    GatewayCacheEvictionsTotal => ("cache_evictions_total", Gateway, Counter, "Cached responses dropped to make room for others."),
    GatewayCacheBytes => ("cache_bytes", Gateway, Gauge, "Bytes the gateway's response cache holds for the function."),
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_within_a_scope_kind() {
        let mut seen = HashSet::new();
        for m in Metric::ALL {
            assert!(seen.insert((m.scope(), m.name())), "{m:?} repeats a name in its scope");
        }
    }

    #[test]
    fn counters_end_in_total() {
        for m in Metric::ALL {
            assert_eq!(m.kind() == SeriesKind::Counter, m.name().ends_with("_total"), "{m:?}");
        }
    }
}
