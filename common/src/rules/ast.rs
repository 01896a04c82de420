//! The parsed form of a rule's text: conditions, arithmetic, windows over
//! signals, parameters and actions. Plain data; parsing is in `parse`,
//! printing in `display`, evaluation in `eval`.

use super::scope::LabelSelector;
use crate::metric::{Agg, SeriesKind};
use std::time::Duration;

/// A condition: comparisons joined by `and`, `or` and `not`.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `left op right`, e.g. `avg(function.inflight, 30s) > 0.8 * target`.
    Compare { left: Expr, op: CmpOp, right: Expr },
    /// `a and b`: both hold.
    And(Box<Condition>, Box<Condition>),
    /// `a or b`: either holds.
    Or(Box<Condition>, Box<Condition>),
    /// `not a`.
    Not(Box<Condition>),
}

/// A comparison operator. There is no equality: measured values are floats,
/// and `==` on them is a bug waiting to happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    /// The operator as written in a rule.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
        }
    }
}

/// A number-valued expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal; finite, at most 1e12 in size when parsed. `-5` in a rule is
    /// `Number(-5.0)`, not `Neg(Number(5.0))`.
    Number(f64),
    /// A figure of the function, e.g. `target`.
    Param(Param),
    /// An aggregation over a window, e.g. `avg(function.inflight, 30s)`.
    Window(WindowRef),
    /// `left op right`.
    Binary(ArithOp, Box<Expr>, Box<Expr>),
    /// Unary minus of anything but a bare number literal.
    Neg(Box<Expr>),
}

/// An arithmetic operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl ArithOp {
    /// The operator as written in a rule.
    pub fn as_str(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
        }
    }

    /// Binding strength: `*` and `/` bind tighter than `+` and `-`.
    pub(super) fn precedence(self) -> u8 {
        match self {
            ArithOp::Add | ArithOp::Sub => 1,
            ArithOp::Mul | ArithOp::Div => 2,
        }
    }
}

/// An aggregation of one signal over the last `range`, e.g.
/// `avg(function.inflight, 30s)`. Parsing guarantees the pairing is sound:
/// `rate` only on counters, the other aggregations only on gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowRef {
    /// How the samples are combined.
    pub agg: Agg,
    /// Which series.
    pub signal: Signal,
    /// How far back from now: 1s to 24h, whole seconds.
    pub range: Duration,
}

/// A number the coordinator knows about the function the rule is applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Param {
    /// `target`: the function's total target concurrency (per-instance target x instances).
    Target,
    /// `instances`: the function's live instances.
    Instances,
    /// `min`: the function's minimum instances.
    Min,
    /// `max`: the function's maximum instances.
    Max,
    /// `concurrency`: the function's per-instance concurrency limit.
    Concurrency,
}

impl Param {
    /// Every parameter, in the order error messages list them.
    pub const ALL: &'static [Param] = &[Param::Target, Param::Instances, Param::Min, Param::Max, Param::Concurrency];

    /// The word a rule uses.
    pub fn name(self) -> &'static str {
        match self {
            Param::Target => "target",
            Param::Instances => "instances",
            Param::Min => "min",
            Param::Max => "max",
            Param::Concurrency => "concurrency",
        }
    }

    /// The parameter a rule word names, if any.
    pub fn from_name(word: &str) -> Option<Param> {
        Param::ALL.iter().copied().find(|p| p.name() == word)
    }
}

macro_rules! signals {
    ($($variant:ident => ($name:literal, $kind:ident, $unit:literal, $doc:literal)),* $(,)?) => {
        /// A measured series a rule can read through an aggregation.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Signal {
            $(#[doc = $doc] $variant,)*
        }

        impl Signal {
            /// Every signal, in the order error messages list them.
            pub const ALL: &'static [Signal] = &[$(Signal::$variant,)*];

            /// The name a rule uses, e.g. `function.inflight`.
            pub const fn name(self) -> &'static str {
                match self { $(Signal::$variant => $name,)* }
            }

            /// Gauge (a level) or counter (a running total, read with `rate`).
            pub const fn kind(self) -> SeriesKind {
                match self { $(Signal::$variant => SeriesKind::$kind,)* }
            }

            /// The unit of the series' values; `rate()` of a counter is this unit per second.
            pub const fn unit(self) -> &'static str {
                match self { $(Signal::$variant => $unit,)* }
            }

            /// What the signal measures, for help texts.
            pub const fn help(self) -> &'static str {
                match self { $(Signal::$variant => $doc,)* }
            }
        }
    };
}

signals! {
    HostCpu => ("host.cpu", Gauge, "%", "Busy share of all the host's cores, 0-100."),
    HostMemory => ("host.memory", Gauge, "%", "Host memory in use, 0-100."),
    HostLoad => ("host.load", Gauge, "tasks", "One-minute load average."),
    ContainerCpu => ("container.cpu", Gauge, "% of a core", "An instance's CPU use as a share of one core (100 per busy core)."),
    ContainerMemory => ("container.memory", Gauge, "% of limit", "An instance's memory in use as a share of its limit, 0-100."),
    FunctionRequests => ("function.requests", Counter, "requests", "Invocations received."),
    FunctionErrors => ("function.errors", Counter, "responses", "5xx responses."),
    FunctionColdStarts => ("function.cold_starts", Counter, "cold starts", "Invocations that waited for an instance to start."),
    FunctionShed => ("function.shed", Counter, "requests", "Invocations refused because the queue was full."),
    FunctionInflight => ("function.inflight", Gauge, "requests", "Invocations being served."),
    FunctionQueue => ("function.queue", Gauge, "requests", "Invocations waiting for an instance."),
    FunctionConcurrency => ("function.concurrency", Gauge, "requests", "Invocations in flight plus queued."),
    FunctionLatencyP50 => ("function.latency_p50", Gauge, "s", "Median response latency, in seconds."),
    FunctionLatencyP95 => ("function.latency_p95", Gauge, "s", "95th percentile response latency, in seconds."),
    FunctionLatencyP99 => ("function.latency_p99", Gauge, "s", "99th percentile response latency, in seconds."),
}

impl Signal {
    /// The signal a rule name denotes, if any.
    pub fn from_name(word: &str) -> Option<Signal> {
        Signal::ALL.iter().copied().find(|s| s.name() == word)
    }
}

/// The aggregations a rule may write, in the order error messages list them.
/// `count` is left out: a sample count says more about the collector than the function.
pub const RULE_AGGS: &[Agg] = &[Agg::Avg, Agg::Min, Agg::Max, Agg::P95, Agg::Last, Agg::Rate];

/// Whether `agg` may be applied to a series of `kind` in a rule.
pub fn agg_fits(agg: Agg, kind: SeriesKind) -> bool {
    match agg {
        Agg::Rate => kind == SeriesKind::Counter,
        Agg::Avg | Agg::Min | Agg::Max | Agg::P95 | Agg::Last => kind == SeriesKind::Gauge,
        Agg::Count => false,
    }
}

/// What a rule does when it fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `scale_out(N)`: add N instances (1-1000).
    ScaleOut(u32),
    /// `scale_in(N)`: remove N instances (1-1000).
    ScaleIn(u32),
    /// `scale_to(N)`: run exactly N instances (0-1000).
    ScaleTo(u32),
    /// `set_min(N)`: raise or lower the function's minimum instances (0-1000).
    SetMin(u32),
    /// `set_max(N)`: raise or lower the function's maximum instances (0-1000).
    SetMax(u32),
    /// `prewarm(N)`: start N instances ahead of demand (1-1000).
    Prewarm(u32),
    /// `pause_idle`: stop the function's idle instances now.
    PauseIdle,
    /// `prefer_nodes(k=v, ...)`: place new instances on matching nodes when possible.
    PreferNodes(LabelSelector),
    /// `avoid_nodes(k=v, ...)`: keep new instances off matching nodes when possible.
    AvoidNodes(LabelSelector),
}

impl Action {
    /// The names a rule may use, in the order error messages list them.
    pub const NAMES: &'static [&'static str] = &["scale_out", "scale_in", "scale_to", "set_min", "set_max", "prewarm", "pause_idle", "prefer_nodes", "avoid_nodes"];

    /// The action's name as written in a rule.
    pub fn name(&self) -> &'static str {
        match self {
            Action::ScaleOut(_) => "scale_out",
            Action::ScaleIn(_) => "scale_in",
            Action::ScaleTo(_) => "scale_to",
            Action::SetMin(_) => "set_min",
            Action::SetMax(_) => "set_max",
            Action::Prewarm(_) => "prewarm",
            Action::PauseIdle => "pause_idle",
            Action::PreferNodes(_) => "prefer_nodes",
            Action::AvoidNodes(_) => "avoid_nodes",
        }
    }

    /// True for the actions that change the instance count directly
    /// (`scale_out`, `scale_in`, `scale_to`); a rule holds at most one of them.
    pub fn is_count_change(&self) -> bool {
        matches!(self, Action::ScaleOut(_) | Action::ScaleIn(_) | Action::ScaleTo(_))
    }
}
