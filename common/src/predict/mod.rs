//! Keep-warm prediction: how many instances of a function to hold loaded, and
//! in which tier, for the next bin of time, from that function's own history.
//!
//! Time is counted in bins (a minute live and in `sluice sim`; seconds in
//! tests). At the end of every bin the function's model `observe`s how many
//! invocations arrived and how many instances they needed at once; before a bin
//! `hold` says what to keep loaded through it. Everything here is pure: the
//! coordinator feeds the models from its windows, the simulator from a trace,
//! and both call the same code.
//!
//! Built-in policies (`PolicyKind`): a fixed keep-alive (`fixed-<N>m`, as
//! OpenWhisk and Lambda do), the hybrid histogram policy of "Serverless in the
//! Wild" (ATC'20, `hybrid`) and Sluice's own (`sluice`, in `sluice.rs`).

mod fixed;
mod histogram;
mod hybrid;
mod sluice;
#[cfg(test)]
mod tests;

pub use fixed::FixedKeepAlive;
pub use histogram::IdleHistogram;
pub use hybrid::Hybrid;
pub use sluice::{Sluice, SluiceParams};

use serde::{Deserialize, Serialize};
use std::fmt;

/// Idle times longer than this many bins fall outside the histograms (four
/// hours of one-minute bins, as in ATC'20).
pub const RANGE_BINS: usize = 240;

/// What to keep loaded through one bin.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Hold {
    /// Running instances, ready to serve at once.
    pub hot: u32,
    /// Paused instances: memory held, no CPU; a request resumes one.
    pub paused: u32,
    pub why: Why,
}

impl Hold {
    pub const NOTHING: Hold = Hold { hot: 0, paused: 0, why: Why::Nothing };

    pub fn total(&self) -> u32 {
        self.hot + self.paused
    }
}

/// Why a model holds what it holds: recorded with the decisions it causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Why {
    /// No history, or the model expects no invocation now.
    Nothing,
    /// Invoked in the last bin: keep what that needed, and the trend.
    Busy { needed: u32 },
    /// Within a fixed keep-alive after the last invocation.
    KeepAlive { idle_bins: u32, keep_bins: u32 },
    /// Inside the window a histogram predicts (pre-warmed or kept).
    Window { idle_bins: u32, from_bins: u32, until_bins: u32 },
    /// The chance that the idle time ends in this bin (percent) is worth the
    /// memory the hold costs.
    Likely { idle_bins: u32, chance_pct: u8 },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Nothing => write!(f, "no invocation expected"),
            Why::Busy { needed } => write!(f, "invoked in the last bin, needing {needed}"),
            Why::KeepAlive { idle_bins, keep_bins } => write!(f, "idle {idle_bins} of a {keep_bins}-bin keep-alive"),
            Why::Window { idle_bins, from_bins, until_bins } => write!(f, "idle {idle_bins}, inside the predicted window {from_bins}..{until_bins}"),
            Why::Likely { idle_bins, chance_pct } => write!(f, "idle {idle_bins}, next invocation {chance_pct}% likely in this bin"),
        }
    }
}

/// A per-function model.
pub trait KeepWarm: Send {
    /// Bin `bin` has ended: `arrivals` invocations came, needing `needed`
    /// instances at once (0 when none came). Bins arrive in order; a skipped
    /// bin is an idle one.
    fn observe(&mut self, bin: u64, arrivals: u32, needed: u32);
    /// What to hold through `bin`, from the bins observed before it.
    fn hold(&self, bin: u64) -> Hold;
    /// Bytes the model keeps: bounded per function, whatever its history.
    fn bytes(&self) -> usize;
}

/// A built-in policy, by name.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyKind {
    /// Keep each instance this many bins after its last use.
    Fixed {
        bins: u32,
    },
    Hybrid,
    Sluice(SluiceParams),
}

impl PolicyKind {
    /// A fresh model for a function whose instances hold `memory_mb` each.
    pub fn model(&self, memory_mb: f64) -> Box<dyn KeepWarm> {
        match self {
            PolicyKind::Fixed { bins } => Box::new(FixedKeepAlive::new(*bins)),
            PolicyKind::Hybrid => Box::new(Hybrid::new()),
            PolicyKind::Sluice(p) => Box::new(Sluice::new(p.clone(), memory_mb)),
        }
    }

    pub fn name(&self) -> String {
        match self {
            PolicyKind::Fixed { bins } => format!("fixed-{bins}m"),
            PolicyKind::Hybrid => "hybrid".into(),
            PolicyKind::Sluice(p) if *p == SluiceParams::default() => "sluice".into(),
            PolicyKind::Sluice(p) => format!("sluice:worth={},prior={}", p.worth, p.prior_weight),
        }
    }

    /// `fixed-<N>m`, `hybrid` or `sluice`.
    pub fn parse(name: &str) -> Result<PolicyKind, String> {
        match name {
            "hybrid" => Ok(PolicyKind::Hybrid),
            "sluice" => Ok(PolicyKind::Sluice(SluiceParams::default())),
            _ if name.starts_with("sluice:") => SluiceParams::parse(&name["sluice:".len()..]).map(PolicyKind::Sluice),
            _ => {
                let bins = name.strip_prefix("fixed-").and_then(|r| r.strip_suffix('m')).and_then(|n| n.parse::<u32>().ok());
                match bins {
                    Some(bins) if (1..=1440).contains(&bins) => Ok(PolicyKind::Fixed { bins }),
                    _ => Err(format!("unknown policy {name:?}: use fixed-<N>m (N from 1 to 1440 minutes), hybrid, sluice or sluice:worth=W,prior=P")),
                }
            }
        }
    }
}
