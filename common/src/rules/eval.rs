//! Evaluating a rule's condition against figures the caller supplies.
//! Pure: the caller (the coordinator) looks up windows and parameters;
//! missing or unusable figures make the answer "no data" (`None`), never a
//! guess.

use super::ast::{ArithOp, CmpOp, Condition, Expr, Param, WindowRef};

/// Where evaluation gets its figures. `None` means "no data", e.g. a window
/// with no samples yet.
pub trait EvalContext {
    /// The aggregated value of a window, e.g. `avg(function.inflight, 30s)`.
    fn window(&self, w: &WindowRef) -> Option<f64>;
    /// The value of a parameter for the function the rule is applied to.
    fn param(&self, p: Param) -> Option<f64>;
}

impl Expr {
    /// The expression's value; `None` if any part has no data, on division
    /// by zero, or when a result is not finite.
    pub fn eval(&self, ctx: &dyn EvalContext) -> Option<f64> {
        let v = match self {
            Expr::Number(n) => *n,
            Expr::Param(p) => ctx.param(*p)?,
            Expr::Window(w) => ctx.window(w)?,
            Expr::Neg(x) => -x.eval(ctx)?,
            Expr::Binary(op, l, r) => {
                let (l, r) = (l.eval(ctx)?, r.eval(ctx)?);
                match op {
                    ArithOp::Add => l + r,
                    ArithOp::Sub => l - r,
                    ArithOp::Mul => l * r,
                    ArithOp::Div if r == 0.0 => return None,
                    ArithOp::Div => l / r,
                }
            }
        };
        v.is_finite().then_some(v)
    }
}

impl Condition {
    /// Whether the condition holds; `None` when it cannot be told for lack
    /// of data. `and`, `or` and `not` use three-valued logic, so a known
    /// answer wins where it settles the result: `false and ?` is false,
    /// `true or ?` is true.
    pub fn eval(&self, ctx: &dyn EvalContext) -> Option<bool> {
        match self {
            Condition::Compare { left, op, right } => {
                let (l, r) = (left.eval(ctx)?, right.eval(ctx)?);
                Some(match op {
                    CmpOp::Gt => l > r,
                    CmpOp::Ge => l >= r,
                    CmpOp::Lt => l < r,
                    CmpOp::Le => l <= r,
                })
            }
            Condition::And(a, b) => match (a.eval(ctx), b.eval(ctx)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Condition::Or(a, b) => match (a.eval(ctx), b.eval(ctx)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Condition::Not(x) => x.eval(ctx).map(|v| !v),
        }
    }

    /// Every window the condition reads, once each, in the order written:
    /// what to show when explaining a decision.
    pub fn windows(&self) -> Vec<&WindowRef> {
        let mut out = Vec::new();
        self.collect_windows(&mut out);
        out
    }

    fn collect_windows<'a>(&'a self, out: &mut Vec<&'a WindowRef>) {
        match self {
            Condition::Compare { left, right, .. } => {
                left.collect_windows(out);
                right.collect_windows(out);
            }
            Condition::And(a, b) | Condition::Or(a, b) => {
                a.collect_windows(out);
                b.collect_windows(out);
            }
            Condition::Not(x) => x.collect_windows(out),
        }
    }
}

impl Expr {
    fn collect_windows<'a>(&'a self, out: &mut Vec<&'a WindowRef>) {
        match self {
            Expr::Window(w) if !out.contains(&w) => out.push(w),
            Expr::Number(_) | Expr::Param(_) | Expr::Window(_) => {}
            Expr::Neg(x) => x.collect_windows(out),
            Expr::Binary(_, l, r) => {
                l.collect_windows(out);
                r.collect_windows(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse_rule_text, Signal};
    use super::*;
    use crate::metric::Agg;
    use std::time::Duration;

    /// Windows by signal; parameters fixed; `None` for anything not listed.
    struct Figures {
        windows: Vec<(Signal, f64)>,
        target: Option<f64>,
    }

    impl EvalContext for Figures {
        fn window(&self, w: &WindowRef) -> Option<f64> {
            self.windows.iter().find(|(s, _)| *s == w.signal).map(|(_, v)| *v)
        }
        fn param(&self, p: Param) -> Option<f64> {
            match p {
                Param::Target => self.target,
                Param::Instances => Some(4.0),
                Param::Min => Some(1.0),
                Param::Max => Some(10.0),
                Param::Concurrency => Some(8.0),
            }
        }
    }

    fn cond(text: &str) -> Condition {
        parse_rule_text(&format!("when {text} then pause_idle")).unwrap().condition
    }

    fn expr(text: &str) -> Expr {
        match cond(&format!("{text} > 0")) {
            Condition::Compare { left, .. } => left,
            other => panic!("{other:?}"),
        }
    }

    fn figures() -> Figures {
        Figures { windows: vec![(Signal::FunctionInflight, 30.0), (Signal::HostCpu, 50.0)], target: Some(32.0) }
    }

    #[test]
    fn arithmetic_follows_precedence() {
        let f = figures();
        assert_eq!(expr("1 + 2 * 3").eval(&f), Some(7.0));
        assert_eq!(expr("(1 + 2) * 3").eval(&f), Some(9.0));
        assert_eq!(expr("10 - 4 - 3").eval(&f), Some(3.0));
        assert_eq!(expr("12 / 3 / 2").eval(&f), Some(2.0));
        assert_eq!(expr("-instances * 2").eval(&f), Some(-8.0));
        assert_eq!(expr("-(2 + 3)").eval(&f), Some(-5.0));
        assert_eq!(expr("0.8 * target").eval(&f), Some(0.8 * 32.0));
        assert_eq!(expr("avg(function.inflight, 30s) / concurrency").eval(&f), Some(30.0 / 8.0));
        assert_eq!(expr("max - min").eval(&f), Some(9.0));
    }

    #[test]
    fn division_by_zero_and_missing_data_are_none() {
        let f = figures();
        assert_eq!(expr("1 / 0").eval(&f), None);
        assert_eq!(expr("1 / (instances - 4)").eval(&f), None);
        assert_eq!(expr("avg(function.queue, 30s) + 1").eval(&f), None);
        assert_eq!(expr("1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000 * 1000000000000").eval(&f), None);
        let no_target = Figures { target: None, ..figures() };
        assert_eq!(expr("0.8 * target").eval(&no_target), None);
        assert_eq!(cond("avg(function.inflight, 30s) > 0.8 * target").eval(&no_target), None);
        let nan = Figures { windows: vec![(Signal::HostCpu, f64::NAN)], target: Some(1.0) };
        assert_eq!(cond("avg(host.cpu, 1m) > 1").eval(&nan), None);
    }

    #[test]
    fn comparisons_and_three_valued_logic() {
        let f = figures();
        let (t, fa, none) = ("last(host.cpu, 1m) > 40", "last(host.cpu, 1m) > 60", "last(function.queue, 1m) > 0");
        assert_eq!(cond(t).eval(&f), Some(true));
        assert_eq!(cond(fa).eval(&f), Some(false));
        assert_eq!(cond(none).eval(&f), None);
        assert_eq!(cond("last(host.cpu, 1m) >= 50 and last(host.cpu, 1m) <= 50").eval(&f), Some(true));
        assert_eq!(cond("last(host.cpu, 1m) < 50").eval(&f), Some(false));
        let cases = [
            (format!("{t} and {t}"), Some(true)),
            (format!("{t} and {fa}"), Some(false)),
            (format!("{fa} and {none}"), Some(false)),
            (format!("{none} and {fa}"), Some(false)),
            (format!("{t} and {none}"), None),
            (format!("{fa} or {fa}"), Some(false)),
            (format!("{t} or {none}"), Some(true)),
            (format!("{none} or {t}"), Some(true)),
            (format!("{fa} or {none}"), None),
            (format!("not {t}"), Some(false)),
            (format!("not {none}"), None),
            (format!("not ({fa} or {none})"), None),
            (format!("not ({fa} and {none})"), Some(true)),
        ];
        for (text, want) in cases {
            assert_eq!(cond(&text).eval(&f), want, "{text}");
        }
    }

    #[test]
    fn lists_each_window_once() {
        let c = cond("avg(function.inflight, 30s) > 1 and (avg(function.inflight, 30s) > target or rate(function.requests, 1m) > 2)");
        let w = c.windows();
        assert_eq!(w.len(), 2);
        assert_eq!(*w[0], WindowRef { agg: Agg::Avg, signal: Signal::FunctionInflight, range: Duration::from_secs(30) });
        assert_eq!(w[1].agg, Agg::Rate);
    }
}
