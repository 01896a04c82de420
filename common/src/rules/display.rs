//! The canonical text of rules and their parts: what `Display` prints
//! parses back to an equal value. Parentheses appear only where precedence
//! or grouping needs them, durations use the largest exact unit, and a
//! `for` or `cooldown` of zero is left out.

use super::ast::{Action, ArithOp, CmpOp, Condition, Expr, Param, Signal, WindowRef};
use super::scope::{LabelSelector, RuleScope};
use super::{Rule, RuleBody};
use std::fmt;
use std::time::Duration;

/// `90s`, `2m`, `1h`, `0s`: whole seconds in the largest unit that divides
/// them exactly. Rules only hold whole seconds; a fraction is dropped.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (hours, minutes) = (secs / 3600, secs / 60);
    if secs == 0 {
        "0s".to_string()
    } else if hours * 3600 == secs {
        format!("{hours}h")
    } else if minutes * 60 == secs {
        format!("{minutes}m")
    } else {
        format!("{secs}s")
    }
}

/// Writes the text of a rule from its parts; shared by `Rule` and `RuleBody`.
fn write_rule(f: &mut fmt::Formatter<'_>, condition: &Condition, hold_for: Duration, actions: &[Action], cooldown: Duration) -> fmt::Result {
    write!(f, "when {condition}")?;
    if !hold_for.is_zero() {
        write!(f, " for {}", fmt_duration(hold_for))?;
    }
    f.write_str(" then ")?;
    for (i, action) in actions.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{action}")?;
    }
    if !cooldown.is_zero() {
        write!(f, " cooldown {}", fmt_duration(cooldown))?;
    }
    Ok(())
}

/// The canonical text of the rule's `when ... then ...` part (not its name, scope or priority).
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_rule(f, &self.condition, self.hold_for, &self.actions, self.cooldown)
    }
}

impl fmt::Display for RuleBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_rule(f, &self.condition, self.hold_for, &self.actions, self.cooldown)
    }
}

/// Binding strength of a condition: `or` < `and` < `not` < a comparison.
fn cond_precedence(c: &Condition) -> u8 {
    match c {
        Condition::Or(..) => 1,
        Condition::And(..) => 2,
        Condition::Not(_) => 3,
        Condition::Compare { .. } => 4,
    }
}

/// Writes `c`, in parentheses if it binds less tightly than `min`.
fn write_cond(f: &mut fmt::Formatter<'_>, c: &Condition, min: u8) -> fmt::Result {
    let paren = cond_precedence(c) < min;
    if paren {
        f.write_str("(")?;
    }
    match c {
        // Left-associative: a right operand of the same operator keeps its parentheses.
        Condition::Or(a, b) => {
            write_cond(f, a, 1)?;
            f.write_str(" or ")?;
            write_cond(f, b, 2)?;
        }
        Condition::And(a, b) => {
            write_cond(f, a, 2)?;
            f.write_str(" and ")?;
            write_cond(f, b, 3)?;
        }
        Condition::Not(x) => {
            f.write_str("not ")?;
            write_cond(f, x, 3)?;
        }
        Condition::Compare { left, op, right } => write!(f, "{left} {op} {right}")?,
    }
    if paren {
        f.write_str(")")?;
    }
    Ok(())
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_cond(f, self, 0)
    }
}

/// Writes `e`, in parentheses if it binds less tightly than `min`
/// (1: `+ -`, 2: `* /`, 3: unary minus).
fn write_expr(f: &mut fmt::Formatter<'_>, e: &Expr, min: u8) -> fmt::Result {
    match e {
        Expr::Number(n) => write!(f, "{n}"),
        Expr::Param(p) => write!(f, "{p}"),
        Expr::Window(w) => write!(f, "{w}"),
        Expr::Binary(op, l, r) => {
            let p = op.precedence();
            if p < min {
                f.write_str("(")?;
            }
            write_expr(f, l, p)?;
            write!(f, " {op} ")?;
            write_expr(f, r, p + 1)?;
            if p < min {
                f.write_str(")")?;
            }
            Ok(())
        }
        // `-5` parses as the number -5, so the negation of a number keeps parentheses.
        Expr::Neg(x) if matches!(**x, Expr::Number(_)) => write!(f, "-({x})"),
        Expr::Neg(x) => {
            f.write_str("-")?;
            write_expr(f, x, 3)
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_expr(f, self, 0)
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ArithOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for WindowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({}, {})", self.agg, self.signal, fmt_duration(self.range))
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::ScaleOut(n) | Action::ScaleIn(n) | Action::ScaleTo(n) | Action::SetMin(n) | Action::SetMax(n) | Action::Prewarm(n) => {
                write!(f, "{}({n})", self.name())
            }
            Action::PauseIdle => f.write_str("pause_idle"),
            Action::PreferNodes(s) | Action::AvoidNodes(s) => {
                write!(f, "{}(", self.name())?;
                write_pairs(f, s, ", ")?;
                f.write_str(")")
            }
        }
    }
}

fn write_pairs(f: &mut fmt::Formatter<'_>, s: &LabelSelector, separator: &str) -> fmt::Result {
    for (i, (k, v)) in s.0.iter().enumerate() {
        if i > 0 {
            f.write_str(separator)?;
        }
        write!(f, "{k}={v}")?;
    }
    Ok(())
}

/// `k=v,k=v`, as in a `labels:` scope.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_pairs(f, self, ",")
    }
}

/// `all`, `function:NAME` or `labels:k=v,k=v`: what `parse_scope` reads.
impl fmt::Display for RuleScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleScope::All => f.write_str("all"),
            RuleScope::Function(name) => write!(f, "function:{name}"),
            RuleScope::Labels(s) => write!(f, "labels:{s}"),
        }
    }
}
