//! Scheduling rules: the small language operators use to tell the
//! coordinator when to scale or place a function.
//!
//! ```text
//! when avg(function.inflight, 30s) > 0.8 * target for 10s then scale_out(2) cooldown 60s
//! ```
//!
//! reads: when the function's mean in-flight requests over the last 30
//! seconds exceed 80% of its target concurrency, and have done so for 10
//! seconds, add two instances; then let the rule rest for a minute. This
//! module parses, validates, prints and evaluates rules; what firing means
//! is the coordinator's business.
//!
//! # Grammar
//!
//! ```text
//! rule     := 'when' cond ['for' duration] 'then' action (',' action)* ['cooldown' duration]
//! cond     := and ('or' and)*
//! and      := unary ('and' unary)*
//! unary    := 'not' unary | '(' cond ')' | expr cmp expr
//! cmp      := '>' | '>=' | '<' | '<='
//! expr     := term (('+' | '-') term)*
//! term     := factor (('*' | '/') factor)*
//! factor   := '-' factor | NUMBER | PARAM | AGG '(' SIGNAL ',' duration ')' | '(' expr ')'
//! duration := DIGITS ('s' | 'm' | 'h')           -- no space: 30s, 5m, 1h
//! action   := scale_out(N) | scale_in(N) | scale_to(N) | set_min(N) | set_max(N)
//!           | prewarm(N) | pause_idle | pause_idle() | prefer_nodes(k=v, ...) | avoid_nodes(k=v, ...)
//! ```
//!
//! Words are lowercase; whitespace (including newlines) is free between
//! tokens. Numbers are decimals (`70`, `0.8`), at most 1e12; `-5` is the
//! number -5. Windows range from 1s to 24h, `for` from 0s to 1h and
//! `cooldown` from 0s to 24h. `scale_out`, `scale_in` and `prewarm` take
//! 1-1000; `scale_to`, `set_min` and `set_max` take 0-1000. A rule holds at
//! most 8 actions, at most one of `scale_out`, `scale_in` and `scale_to`, no
//! action twice (several `prefer_nodes` or `avoid_nodes` are fine if their
//! selectors differ), no `set_min` above its `set_max`, and does not prefer
//! and avoid the same nodes. A condition holds at most 64 parts (numbers,
//! names, windows, operators) and nests at most 16 deep (parentheses, `not`,
//! unary minus); a rule's text is at most 1000 bytes.
//!
//! # Signals
//!
//! Gauges, read with `avg`, `min`, `max`, `p95` or `last`:
//! `host.cpu` (% of all the host's cores), `host.memory` (% used),
//! `host.load` (1-minute load average), `container.cpu` (% of one core),
//! `container.memory` (% of the limit), `function.inflight`,
//! `function.queue`, `function.concurrency` (in flight plus queued),
//! `function.latency_p50`, `function.latency_p95`, `function.latency_p99`
//! (seconds).
//!
//! Counters, read with `rate` (per second): `function.requests`,
//! `function.errors` (5xx responses), `function.cold_starts`, `function.shed`.
//!
//! # Parameters
//!
//! The coordinator computes these for the function a rule is applied to:
//! `instances` is its live instances, `concurrency` its per-instance
//! concurrency limit, `target` its total target concurrency (per-instance
//! target x instances), `min` and `max` its minimum and maximum instances.
//!
//! # Where rules come from
//!
//! The HTTP API and files carry a [`RuleSource`]: name, scope
//! (`all`, `function:NAME`, `labels:k=v,...`), priority and the text above.
//! [`Rule::from_source`] validates one; [`parse_file`] reads a TOML file of
//! `[[rule]]` tables:
//!
//! ```toml
//! [[rule]]
//! name = "burst"
//! scope = "labels:tier=web"   # optional, default "all"
//! priority = 10               # optional, default 0; -1000 to 1000
//! rule = "when avg(function.inflight, 30s) > 0.8 * target for 10s then scale_out(2) cooldown 60s"
//! ```
//!
//! Every error says where (line and column), what was expected, what was
//! found and how to fix it; see [`ParseError`].
//!
//! # Evaluating
//!
//! [`Condition::eval`] reads windows and parameters through an
//! [`EvalContext`] the caller implements. A figure that is missing, a
//! division by zero or a result that is not finite is "no data" (`None`);
//! `and`, `or` and `not` then use three-valued logic, so `false and ?` is
//! still false. [`Condition::windows`] lists what a condition reads, for
//! explaining a decision.

mod ast;
mod display;
mod error;
mod eval;
mod file;
mod lexer;
mod parse;
mod scope;

#[cfg(test)]
mod file_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use ast::{agg_fits, Action, ArithOp, CmpOp, Condition, Expr, Param, Signal, WindowRef, RULE_AGGS};
pub use display::fmt_duration;
pub use error::ParseError;
pub use eval::EvalContext;
pub use file::parse_file;
pub use scope::{parse_scope, LabelSelector, RuleScope};

use crate::ids::{check_dns_label, truncate};
use crate::validation::ValidationError;
use error::{quote, Fault};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Bounds on rules: small enough that a rule is cheap to parse, print and
/// evaluate, and that no input can make the parser recurse deeply.
pub mod bounds {
    /// Longest rule text, in bytes.
    pub const TEXT_BYTES: usize = 1000;
    /// Most actions in one rule.
    pub const ACTIONS: usize = 8;
    /// Most nodes (numbers, parameters, windows, operators) in a condition.
    pub const CONDITION_NODES: usize = 64;
    /// Deepest nesting of parentheses, `not` and unary minus.
    pub const NESTING: usize = 16;
    /// Largest number literal, in size.
    pub const NUMBER: f64 = 1e12;
    /// Largest count an action takes.
    pub const COUNT: u32 = 1000;
    /// Window ranges, in seconds: 1s to 24h.
    pub const WINDOW_SECS: (u64, u64) = (1, 86_400);
    /// `for` durations, in seconds: 0s to 1h.
    pub const FOR_SECS: (u64, u64) = (0, 3_600);
    /// Cooldowns, in seconds: 0s to 24h.
    pub const COOLDOWN_SECS: (u64, u64) = (0, 86_400);
    /// Priorities, lowest and highest.
    pub const PRIORITY: (i32, i32) = (-1000, 1000);
    /// Most rules in one file.
    pub const RULES_PER_FILE: usize = 1000;
    /// Most pairs in a label selector; more is a sign of a list pasted by mistake.
    pub const SELECTOR_PAIRS: usize = 16;
    /// Longest label key or value.
    pub const LABEL_LEN: usize = 63;
}

/// A rule's name: a DNS label, unique among the rules.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RuleName(String);

impl RuleName {
    /// Validates and wraps a name.
    pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        check_dns_label("name", &value)?;
        Ok(Self(value))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RuleName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

/// What files and the HTTP API carry: the rule as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSource {
    /// The rule's name: a DNS label, unique among the rules.
    pub name: String,
    /// `all`, `function:NAME` or `labels:k=v,...`.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Orders rules that act on the same function: higher first. -1000 to 1000.
    #[serde(default)]
    pub priority: i32,
    /// The rule's text: `when ... then ...`.
    pub rule: String,
}

fn default_scope() -> String {
    "all".to_string()
}

/// A parsed, validated rule. It serializes as its [`RuleSource`], so logs and
/// snapshots hold the text as written, and deserializing parses it again.
/// `source` is what the other fields were parsed from; change them and it no
/// longer describes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "RuleSource", try_from = "RuleSource")]
pub struct Rule {
    pub name: RuleName,
    /// The functions the rule applies to.
    pub scope: RuleScope,
    /// -1000 to 1000; higher first.
    pub priority: i32,
    /// The `when` part.
    pub condition: Condition,
    /// How long the condition must hold before the rule fires; zero without `for`.
    pub hold_for: Duration,
    /// The `then` part: 1 to 8 actions that do not contradict each other.
    pub actions: Vec<Action>,
    /// How long the rule rests after firing; zero without `cooldown`.
    pub cooldown: Duration,
    /// What the rule was parsed from, and what it serializes as.
    pub source: RuleSource,
}

/// The parsed text of a rule, without name, scope or priority: what
/// [`parse_rule_text`] returns. Prints as the canonical text.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleBody {
    /// The `when` part.
    pub condition: Condition,
    /// The `for` part; zero without one.
    pub hold_for: Duration,
    /// The `then` part.
    pub actions: Vec<Action>,
    /// The `cooldown` part; zero without one.
    pub cooldown: Duration,
}

/// Parses a rule's text (`when ... then ...`). Errors are in field `rule`,
/// at the line and column of the text.
pub fn parse_rule_text(text: &str) -> Result<RuleBody, ParseError> {
    parse::parse_body(text).map_err(|f| f.locate("rule", text))
}

/// The part of a [`RuleSource`] an error is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Name,
    Scope,
    Priority,
    Rule,
}

impl Part {
    fn field(self) -> &'static str {
        match self {
            Part::Name => "name",
            Part::Scope => "scope",
            Part::Priority => "priority",
            Part::Rule => "rule",
        }
    }
}

/// Validates a source, with the error at a byte offset of the part it is in.
fn build(source: RuleSource) -> Result<Rule, (Part, Fault)> {
    let name = RuleName::new(source.name.as_str()).map_err(|e| {
        let found = if source.name.is_empty() { "an empty name".to_string() } else { quote(&truncate(&source.name)) };
        (Part::Name, Fault::new(0, "a rule name", found, e.message))
    })?;
    let scope = scope::scope_fault(&source.scope).map_err(|f| (Part::Scope, f))?;
    let (lo, hi) = bounds::PRIORITY;
    if !(lo..=hi).contains(&source.priority) {
        let expected = format!("a priority from {lo} to {hi}");
        let fix = format!("use {expected}; rules with a higher priority come first");
        return Err((Part::Priority, Fault::new(0, expected, source.priority.to_string(), fix)));
    }
    let body = parse::parse_body(&source.rule).map_err(|f| (Part::Rule, f))?;
    Ok(Rule { name, scope, priority: source.priority, condition: body.condition, hold_for: body.hold_for, actions: body.actions, cooldown: body.cooldown, source })
}

impl Rule {
    /// Validates the name, scope, priority (-1000 to 1000) and text of a rule.
    /// The error's field says which; its position is inside that field's text.
    pub fn from_source(source: RuleSource) -> Result<Rule, ParseError> {
        build(source.clone()).map_err(|(part, fault)| {
            let text = match part {
                Part::Name => source.name.clone(),
                Part::Scope => source.scope.clone(),
                Part::Priority => source.priority.to_string(),
                Part::Rule => source.rule.clone(),
            };
            fault.locate(part.field(), &text)
        })
    }

    /// The rule's parsed text.
    pub fn body(&self) -> RuleBody {
        RuleBody { condition: self.condition.clone(), hold_for: self.hold_for, actions: self.actions.clone(), cooldown: self.cooldown }
    }

    /// Every window the rule's condition reads, once each.
    pub fn windows(&self) -> Vec<&WindowRef> {
        self.condition.windows()
    }
}

impl From<Rule> for RuleSource {
    fn from(rule: Rule) -> Self {
        rule.source
    }
}

impl TryFrom<RuleSource> for Rule {
    type Error = ParseError;
    fn try_from(source: RuleSource) -> Result<Self, ParseError> {
        Rule::from_source(source)
    }
}
