//! A function's autoscaling settings: target tracking over windowed
//! concurrency, in the spirit of Knative's autoscaler (a stable and a panic
//! window), with a bound on how fast it scales down.

use crate::validation::ValidationError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How the default policy sizes a function. Every field has a default, so a
/// spec without `scaling` gets Knative's well-tried values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaling {
    /// Share of `concurrency` one instance should carry on average, in percent:
    /// the headroom that absorbs a rise before the windows see it.
    #[serde(default = "default_target_utilization")]
    pub target_utilization_percent: u32,
    /// Demand is the mean concurrency over this window.
    #[serde(default = "default_stable_window")]
    pub stable_window_secs: u32,
    /// A shorter window that reacts to a surge.
    #[serde(default = "default_panic_window")]
    pub panic_window_secs: u32,
    /// Panic mode starts when the panic window asks for this share of the
    /// instances ready now (200 = twice as many); while it lasts, and for a
    /// stable window after, the function never scales down.
    #[serde(default = "default_panic_threshold")]
    pub panic_threshold_percent: u32,
    /// Most of its instances a function loses in one scale-down step, in percent.
    #[serde(default = "default_scale_down_percent")]
    pub scale_down_max_percent: u32,
    /// Least time between two scale-down steps.
    #[serde(default = "default_scale_down_step")]
    pub scale_down_step_secs: u32,
    /// Let the coordinator's keep-warm model (`--predict-policy`) pre-warm,
    /// pause and hold instances of this function from its history. Off: only
    /// demand, rules and the bounds decide, and the last instance stops after
    /// `idle_timeout_secs`.
    #[serde(default = "default_predict")]
    pub predict: bool,
}

fn default_target_utilization() -> u32 {
    70
}
fn default_stable_window() -> u32 {
    60
}
fn default_panic_window() -> u32 {
    6
}
fn default_panic_threshold() -> u32 {
    200
}
fn default_scale_down_percent() -> u32 {
    50
}
fn default_scale_down_step() -> u32 {
    2
}
fn default_predict() -> bool {
    true
}

impl Default for Scaling {
    fn default() -> Self {
        Self {
            target_utilization_percent: default_target_utilization(),
            stable_window_secs: default_stable_window(),
            panic_window_secs: default_panic_window(),
            panic_threshold_percent: default_panic_threshold(),
            scale_down_max_percent: default_scale_down_percent(),
            scale_down_step_secs: default_scale_down_step(),
            predict: default_predict(),
        }
    }
}

/// Bounds of each setting. Windows stay within the metric windows' fine ring (15 minutes).
pub mod bounds {
    pub const TARGET_UTILIZATION_PERCENT: (u32, u32) = (1, 100);
    pub const STABLE_WINDOW_SECS: (u32, u32) = (2, 900);
    pub const PANIC_THRESHOLD_PERCENT: (u32, u32) = (110, 1000);
    pub const SCALE_DOWN_MAX_PERCENT: (u32, u32) = (1, 100);
    pub const SCALE_DOWN_STEP_SECS: (u32, u32) = (0, 3600);
}

impl Scaling {
    pub fn validate(&self) -> Result<(), ValidationError> {
        use bounds::*;
        let in_range = |field: &str, v: u32, (lo, hi): (u32, u32)| {
            if v < lo || v > hi {
                Err(ValidationError::new(field, format!("{v} is out of range: use a value from {lo} to {hi}")))
            } else {
                Ok(())
            }
        };
        in_range("target_utilization_percent", self.target_utilization_percent, TARGET_UTILIZATION_PERCENT)?;
        in_range("stable_window_secs", self.stable_window_secs, STABLE_WINDOW_SECS)?;
        in_range("panic_window_secs", self.panic_window_secs, (1, self.stable_window_secs))
            .map_err(|e| ValidationError::new(e.field, format!("{} (it must not be longer than stable_window_secs)", e.message)))?;
        in_range("panic_threshold_percent", self.panic_threshold_percent, PANIC_THRESHOLD_PERCENT)?;
        in_range("scale_down_max_percent", self.scale_down_max_percent, SCALE_DOWN_MAX_PERCENT)?;
        in_range("scale_down_step_secs", self.scale_down_step_secs, SCALE_DOWN_STEP_SECS)
    }

    pub fn stable_window(&self) -> Duration {
        Duration::from_secs(self.stable_window_secs.into())
    }

    pub fn panic_window(&self) -> Duration {
        Duration::from_secs(self.panic_window_secs.into())
    }

    pub fn scale_down_step(&self) -> Duration {
        Duration::from_secs(self.scale_down_step_secs.into())
    }

    /// The concurrency one instance should carry, given the hard limit per instance.
    pub fn target_per_instance(&self, concurrency: u32) -> f64 {
        (f64::from(concurrency) * f64::from(self.target_utilization_percent) / 100.0).max(0.01)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_knatives_and_valid() {
        let s = Scaling::default();
        s.validate().unwrap();
        assert_eq!((s.stable_window_secs, s.panic_window_secs), (60, 6));
        assert!((s.target_per_instance(4) - 2.8).abs() < 1e-9);
    }

    #[test]
    fn bad_settings_name_their_field() {
        type Case = (&'static str, fn(&mut Scaling));
        let cases: [Case; 4] = [
            ("panic_window_secs", |s| s.panic_window_secs = 61),
            ("target_utilization_percent", |s| s.target_utilization_percent = 0),
            ("panic_threshold_percent", |s| s.panic_threshold_percent = 100),
            ("stable_window_secs", |s| s.stable_window_secs = 901),
        ];
        for (field, mutate) in cases {
            let mut s = Scaling::default();
            mutate(&mut s);
            assert_eq!(s.validate().unwrap_err().field, field);
        }
    }
}
