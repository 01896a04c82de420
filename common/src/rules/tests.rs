//! Tests of the rule text parser, printer, `Rule::from_source` and serde:
//! tables of good rules with the tree each must parse to, and of bad rules
//! with where the error must point and what it must say.

use super::*;
use crate::metric::Agg;
use crate::FunctionName;
use std::collections::BTreeMap;

fn num(n: f64) -> Expr {
    Expr::Number(n)
}
fn param(p: Param) -> Expr {
    Expr::Param(p)
}
fn win(agg: Agg, signal: Signal, secs: u64) -> Expr {
    Expr::Window(WindowRef { agg, signal, range: Duration::from_secs(secs) })
}
fn bin(op: ArithOp, l: Expr, r: Expr) -> Expr {
    Expr::Binary(op, Box::new(l), Box::new(r))
}
fn neg(e: Expr) -> Expr {
    Expr::Neg(Box::new(e))
}
fn cmp(left: Expr, op: CmpOp, right: Expr) -> Condition {
    Condition::Compare { left, op, right }
}
fn and(a: Condition, b: Condition) -> Condition {
    Condition::And(Box::new(a), Box::new(b))
}
fn or(a: Condition, b: Condition) -> Condition {
    Condition::Or(Box::new(a), Box::new(b))
}
fn not(a: Condition) -> Condition {
    Condition::Not(Box::new(a))
}
fn sel(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}
fn body(condition: Condition, hold_for: u64, actions: Vec<Action>, cooldown: u64) -> RuleBody {
    RuleBody { condition, hold_for: Duration::from_secs(hold_for), actions, cooldown: Duration::from_secs(cooldown) }
}
/// `last(host.cpu, 1m) > 1`, for rules about something else.
fn cpu_above(n: f64) -> Condition {
    cmp(win(Agg::Last, Signal::HostCpu, 60), CmpOp::Gt, num(n))
}

use ArithOp::{Add, Div, Mul, Sub};
use CmpOp::{Ge, Gt, Le, Lt};

fn good_rules() -> Vec<(&'static str, RuleBody)> {
    let inflight = || win(Agg::Avg, Signal::FunctionInflight, 30);
    let cpu = || win(Agg::Last, Signal::HostCpu, 60);
    vec![
        (
            "when avg(function.inflight, 30s) > 0.8 * target for 10s then scale_out(2) cooldown 60s",
            body(cmp(inflight(), Gt, bin(Mul, num(0.8), param(Param::Target))), 10, vec![Action::ScaleOut(2)], 60),
        ),
        (
            "when last(host.cpu, 1m) > 1 then scale_out(1), prefer_nodes(zone=eu-west, disk=ssd)",
            body(cpu_above(1.0), 0, vec![Action::ScaleOut(1), Action::PreferNodes(sel(&[("zone", "eu-west"), ("disk", "ssd")]))], 0),
        ),
        ("when last(host.cpu, 1m) > 1 then scale_in(1000)", body(cpu_above(1.0), 0, vec![Action::ScaleIn(1000)], 0)),
        ("when last(host.cpu, 1m) > 1 then scale_to(0)", body(cpu_above(1.0), 0, vec![Action::ScaleTo(0)], 0)),
        (
            "when last(host.cpu, 1m) > 1 then set_min(0), set_max(1000), prewarm(1), pause_idle()",
            body(cpu_above(1.0), 0, vec![Action::SetMin(0), Action::SetMax(1000), Action::Prewarm(1), Action::PauseIdle], 0),
        ),
        (
            "when last(host.cpu, 1m) > 1 then pause_idle, avoid_nodes(example.com/gpu=none), avoid_nodes(zone=us)",
            body(cpu_above(1.0), 0, vec![Action::PauseIdle, Action::AvoidNodes(sel(&[("example.com/gpu", "none")])), Action::AvoidNodes(sel(&[("zone", "us")]))], 0),
        ),
        (
            "when last(host.cpu, 1m) > 1 then set_min(2), set_max(2), scale_to(2), prewarm(1), pause_idle, prefer_nodes(a=b), avoid_nodes(a=c), prefer_nodes(d=e)",
            body(
                cpu_above(1.0),
                0,
                vec![
                    Action::SetMin(2),
                    Action::SetMax(2),
                    Action::ScaleTo(2),
                    Action::Prewarm(1),
                    Action::PauseIdle,
                    Action::PreferNodes(sel(&[("a", "b")])),
                    Action::AvoidNodes(sel(&[("a", "c")])),
                    Action::PreferNodes(sel(&[("d", "e")])),
                ],
                0,
            ),
        ),
        // Every parameter; `min` and `max` are parameters unless called.
        (
            "when instances < min + 1 or instances >= max - 1 or concurrency <= target / instances then scale_to(3)",
            body(
                or(
                    or(cmp(param(Param::Instances), Lt, bin(Add, param(Param::Min), num(1.0))), cmp(param(Param::Instances), Ge, bin(Sub, param(Param::Max), num(1.0)))),
                    cmp(param(Param::Concurrency), Le, bin(Div, param(Param::Target), param(Param::Instances))),
                ),
                0,
                vec![Action::ScaleTo(3)],
                0,
            ),
        ),
        (
            "when max(host.cpu, 5m) > max and min(host.memory, 1h) < min then pause_idle",
            body(
                and(cmp(win(Agg::Max, Signal::HostCpu, 300), Gt, param(Param::Max)), cmp(win(Agg::Min, Signal::HostMemory, 3600), Lt, param(Param::Min))),
                0,
                vec![Action::PauseIdle],
                0,
            ),
        ),
        // `and` binds tighter than `or`; `not` tighter than `and`.
        (
            "when last(host.cpu, 1m) > 1 or last(host.cpu, 1m) > 2 and not last(host.cpu, 1m) > 3 then pause_idle",
            body(or(cpu_above(1.0), and(cpu_above(2.0), not(cpu_above(3.0)))), 0, vec![Action::PauseIdle], 0),
        ),
        (
            "when not (last(host.cpu, 1m) > 1 or last(host.cpu, 1m) > 2) and last(host.cpu, 1m) > 3 then pause_idle",
            body(and(not(or(cpu_above(1.0), cpu_above(2.0))), cpu_above(3.0)), 0, vec![Action::PauseIdle], 0),
        ),
        (
            "when (last(host.cpu, 1m) > 1 or last(host.cpu, 1m) > 2) and (last(host.cpu, 1m) > 3 or not not last(host.cpu, 1m) > 4) then pause_idle",
            body(and(or(cpu_above(1.0), cpu_above(2.0)), or(cpu_above(3.0), not(not(cpu_above(4.0))))), 0, vec![Action::PauseIdle], 0),
        ),
        (
            "when last(host.cpu, 1m) > 1 or (last(host.cpu, 1m) > 2 or last(host.cpu, 1m) > 3) then pause_idle",
            body(or(cpu_above(1.0), or(cpu_above(2.0), cpu_above(3.0))), 0, vec![Action::PauseIdle], 0),
        ),
        ("when ((((last(host.cpu, 1m) > 1)))) then pause_idle", body(cpu_above(1.0), 0, vec![Action::PauseIdle], 0)),
        // A `(` that opens arithmetic, not a condition.
        (
            "when (last(host.cpu, 1m) + 1) * 2 > (target) then pause_idle",
            body(cmp(bin(Mul, bin(Add, cpu(), num(1.0)), num(2.0)), Gt, param(Param::Target)), 0, vec![Action::PauseIdle], 0),
        ),
        ("when ((last(host.cpu, 1m) + 1) > 2) then pause_idle", body(cmp(bin(Add, cpu(), num(1.0)), Gt, num(2.0)), 0, vec![Action::PauseIdle], 0)),
        // Arithmetic precedence and left associativity.
        (
            "when 1 + 2 * 3 - 4 / 2 > 10 - 4 - 3 then pause_idle",
            body(
                cmp(bin(Sub, bin(Add, num(1.0), bin(Mul, num(2.0), num(3.0))), bin(Div, num(4.0), num(2.0))), Gt, bin(Sub, bin(Sub, num(10.0), num(4.0)), num(3.0))),
                0,
                vec![Action::PauseIdle],
                0,
            ),
        ),
        (
            "when 2 * (target + 1) / instances > 1 - (2 - 3) then pause_idle",
            body(
                cmp(bin(Div, bin(Mul, num(2.0), bin(Add, param(Param::Target), num(1.0))), param(Param::Instances)), Gt, bin(Sub, num(1.0), bin(Sub, num(2.0), num(3.0)))),
                0,
                vec![Action::PauseIdle],
                0,
            ),
        ),
        // Negative numbers and negation.
        (
            "when last(host.cpu, 1m) - 100 < -5 and -2 * target > - -1 then pause_idle",
            body(and(cmp(bin(Sub, cpu(), num(100.0)), Lt, num(-5.0)), cmp(bin(Mul, num(-2.0), param(Param::Target)), Gt, neg(num(-1.0)))), 0, vec![Action::PauseIdle], 0),
        ),
        (
            "when -target > -(5) and -(target + 1) < -last(host.cpu, 1m) then pause_idle",
            body(and(cmp(neg(param(Param::Target)), Gt, neg(num(5.0))), cmp(neg(bin(Add, param(Param::Target), num(1.0))), Lt, neg(cpu()))), 0, vec![Action::PauseIdle], 0),
        ),
        // Whitespace is free, including newlines; none is needed around punctuation.
        (
            "when\n  avg(function.inflight,30s)>=0.5*target\n  for 0s\nthen\n  scale_out(1),pause_idle\ncooldown 24h",
            body(cmp(inflight(), Ge, bin(Mul, num(0.5), param(Param::Target))), 0, vec![Action::ScaleOut(1), Action::PauseIdle], 86_400),
        ),
        (
            "when p95(function.latency_p99, 24h) > 0.25 for 1h then scale_out(1) cooldown 0s",
            body(cmp(win(Agg::P95, Signal::FunctionLatencyP99, 86_400), Gt, num(0.25)), 3600, vec![Action::ScaleOut(1)], 0),
        ),
        (
            "when rate(function.errors, 1s) / rate(function.requests, 90s) > 0.05 then scale_in(1)",
            body(cmp(bin(Div, win(Agg::Rate, Signal::FunctionErrors, 1), win(Agg::Rate, Signal::FunctionRequests, 90)), Gt, num(0.05)), 0, vec![Action::ScaleIn(1)], 0),
        ),
    ]
}

#[test]
fn good_rules_parse_to_the_expected_tree() {
    for (text, want) in good_rules() {
        match parse_rule_text(text) {
            Ok(got) => assert_eq!(got, want, "{text}"),
            Err(e) => panic!("{text}: {e}"),
        }
    }
}

#[test]
fn good_rules_print_canonically_and_parse_back() {
    for (text, want) in good_rules() {
        let printed = want.to_string();
        let again = parse_rule_text(&printed).unwrap_or_else(|e| panic!("{printed}: {e}"));
        assert_eq!(again, want, "{text} printed as {printed}");
        assert_eq!(again.to_string(), printed, "printing is stable");
    }
    let canonical = [
        (
            "when avg(function.inflight,30s) > 0.8*target for 10s then scale_out(2) cooldown 60s",
            "when avg(function.inflight, 30s) > 0.8 * target for 10s then scale_out(2) cooldown 1m",
        ),
        ("when ((1 + 2)) * (3) > 1 - (2 - 3) for 0s then pause_idle() cooldown 0s", "when (1 + 2) * 3 > 1 - (2 - 3) then pause_idle"),
        ("when -(5) < - -1 and -(1 + 2) < --target then pause_idle", "when -(5) < -(-1) and -(1 + 2) < --target then pause_idle"),
        ("when not (1 > 2 or 3 > 4) and (5 > 6 and 7 > 8) then pause_idle", "when not (1 > 2 or 3 > 4) and (5 > 6 and 7 > 8) then pause_idle"),
        ("when 1 > 2 then prefer_nodes( zone = eu , disk=ssd )", "when 1 > 2 then prefer_nodes(disk=ssd, zone=eu)"),
        ("when avg(host.cpu, 3600s) > 1 for 120s then pause_idle cooldown 5400s", "when avg(host.cpu, 1h) > 1 for 2m then pause_idle cooldown 90m"),
    ];
    for (text, want) in canonical {
        assert_eq!(parse_rule_text(text).unwrap().to_string(), want);
    }
}

#[test]
fn every_signal_parses_with_every_aggregation_that_fits_it() {
    let mut tried = 0;
    for signal in Signal::ALL {
        for agg in RULE_AGGS {
            let text = format!("when {agg}({signal}, 5m) > 1 then pause_idle");
            let got = parse_rule_text(&text);
            if agg_fits(*agg, signal.kind()) {
                let want = body(cmp(win(*agg, *signal, 300), Gt, num(1.0)), 0, vec![Action::PauseIdle], 0);
                assert_eq!(got.unwrap(), want, "{text}");
                tried += 1;
            } else {
                let e = got.unwrap_err();
                assert_eq!(e.column, 7 + agg.as_str().len(), "{text}: {e}");
                assert!(e.fix.contains(&format!("with {signal}")), "{text}: {e}");
            }
        }
        assert_eq!(Signal::from_name(signal.name()), Some(*signal));
        assert!(!signal.unit().is_empty());
    }
    assert_eq!(Signal::ALL.len(), 15);
    assert_eq!(tried, 11 * 5 + 4);
}

#[test]
fn bad_rules_are_refused_with_a_position_and_a_fix() {
    let cases: &[(&str, usize, &str, &str)] = &[
        ("", 1, "`when`", "write a rule such as"),
        ("   ", 4, "`when`", "write a rule such as"),
        ("WHEN avg(host.cpu, 1m) > 1 then pause_idle", 1, "`when`", "did you mean `when`?"),
        ("when avg(function.inflight, 30s) > 1 scale_out(1)", 38, "`then`", "put `then` before the actions"),
        ("when avg(function.inflight, 30s) > 1 thn scale_out(1)", 38, "`then`", "did you mean `then`?"),
        ("when avgg(function.inflight, 30s) > 1 then scale_out(1)", 6, "a number, a parameter or an aggregation", "did you mean `avg`?"),
        ("when avg(function.inflght, 30s) > 1 then scale_out(1)", 10, "a signal", "did you mean `function.inflight`?"),
        ("when avg(inflight, 30s) > 1 then scale_out(1)", 10, "a signal", "did you mean `function.inflight`?"),
        ("when avg(cpu_total, 30s) > 1 then scale_out(1)", 10, "a signal", "use `host.cpu`"),
        ("when rate(function.inflight, 30s) > 1 then scale_out(1)", 11, "a counter for rate()", "rate() takes a counter such as function.requests; use avg(), max(), min(), p95() or last() with function.inflight"),
        ("when avg(function.requests, 30s) > 1 then scale_out(1)", 10, "a gauge for avg()", "avg() takes a gauge such as function.inflight; use rate() with function.requests"),
        ("when p95(function.errors, 5m) > 1 then scale_out(1)", 10, "a gauge for p95()", "use rate() with function.errors"),
        ("when avg(function.inflight, 30) > 1 then scale_out(1)", 29, "a duration such as 30s", "add a unit: s, m or h"),
        ("when avg(function.inflight, 30ms) > 1 then scale_out(1)", 29, "a duration such as 30s", "`ms` is not a unit"),
        ("when avg(function.inflight, 1.5m) > 1 then scale_out(1)", 29, "a whole number of seconds", "90s for 1.5m"),
        ("when avg(function.inflight, 0s) > 1 then scale_out(1)", 29, "a window from 1s to 24h", "use a window from 1s to 24h"),
        ("when avg(function.inflight, 25h) > 1 then scale_out(1)", 29, "a window from 1s to 24h", "use a window"),
        ("when avg(function.inflight, 99999999999999999999s) > 1 then scale_out(1)", 29, "a window from 1s to 24h", "use a window"),
        ("when avg(function.inflight, x) > 1 then scale_out(1)", 29, "a duration such as 30s", "s, m or h"),
        ("when avg(host.cpu, 1m) > 1 for 2h then scale_out(1)", 32, "a `for` duration from 0s to 1h", "0s to 1h"),
        ("when avg(host.cpu, 1m) > 1 for 10 then scale_out(1)", 32, "a duration such as 30s", "add a unit: s, m or h"),
        ("when avg(host.cpu, 1m) > 1 then scale_out(1) cooldown 2d", 55, "a duration such as 30s", "`d` is not a unit"),
        ("when avg(host.cpu, 1m) > 1 then scale_out(1) cooldown 25h", 55, "a cooldown from 0s to 24h", "use a cooldown"),
        ("when avg(host.cpu, 1m) > 1 then scale_out(1) cooldown", 54, "a duration such as 30s", "s, m or h"),
        ("when avg(host.cpu, 1m) > 1 then scale_out(0)", 43, "a whole number from 1 to 1000", "scale_out(N) with N from 1 to 1000"),
        ("when avg(host.cpu, 1m) > 1 then scale_in(1001)", 42, "a whole number from 1 to 1000", "scale_in(N)"),
        ("when avg(host.cpu, 1m) > 1 then prewarm(0)", 41, "a whole number from 1 to 1000", "prewarm(N)"),
        ("when avg(host.cpu, 1m) > 1 then set_max(1001)", 41, "a whole number from 0 to 1000", "set_max(N)"),
        ("when avg(host.cpu, 1m) > 1 then set_max(2.5)", 41, "a whole number from 0 to 1000", "set_max(N)"),
        ("when avg(host.cpu, 1m) > 1 then scale_to(-1)", 42, "a whole number from 0 to 1000", "scale_to(N)"),
        ("when avg(host.cpu, 1m) > 1 then scale_out 2", 43, "`(` after scale_out", "scale_out(1)"),
        ("when avg(host.cpu, 1m) > 1 then scale_out(2", 44, "`)`", "scale_out(2)"),
        ("when avg(host.cpu, 1m) > 1 then scale_out(2), scale_in(1)", 47, "actions that do not contradict", "`scale_out(2)` and `scale_in(1)` both change the instance count"),
        ("when avg(host.cpu, 1m) > 1 then scale_to(2), pause_idle, scale_out(1)", 58, "actions that do not contradict", "`scale_to(2)` and `scale_out(1)`"),
        ("when avg(host.cpu, 1m) > 1 then scale_in(1), scale_to(2)", 46, "actions that do not contradict", "contradict"),
        ("when avg(host.cpu, 1m) > 1 then scale_out(1), scale_out(2)", 47, "actions that do not contradict", "same action twice"),
        ("when avg(host.cpu, 1m) > 1 then prewarm(1), prewarm(2)", 45, "actions that do not contradict", "same action twice"),
        ("when avg(host.cpu, 1m) > 1 then set_min(5), set_max(2)", 45, "actions that do not contradict", "minimum above the maximum"),
        ("when avg(host.cpu, 1m) > 1 then scale_out(1) cooldown 1m extra", 58, "the end of the rule", "remove"),
        ("when avg(host.cpu, 1m) > 1 then scale_out(1) scale_in(1)", 46, "`,` and another action", "separate actions with `,`"),
        ("when avg(host.cpu, 1m) > 1 then scale_out(1) cooldwn 1m", 46, "`,` and another action", "did you mean `cooldown`?"),
        ("when avg(host.cpu, 1m) > 1 then scale_out(1) for 10s", 46, "`,` and another action", "`for` goes before `then`"),
        ("when avg(host.cpu, 1m) > 1 then scale_out(1) )", 46, "`,` and another action", "remove it"),
        ("when avg(host.cpu, 1m) > 1 then jump(1)", 33, "an action", "use `scale_out`, `scale_in`"),
        ("when avg(host.cpu, 1m) > 1 then scale_ot(1)", 33, "an action", "did you mean `scale_out`?"),
        ("when avg(host.cpu, 1m) > 1 then ", 33, "an action", "scale_out(1)"),
        ("when avg(host.cpu, 1m) > 1 then pause_idle(1)", 44, "`)`", "pause_idle takes no arguments"),
        ("when avg(host.cpu, 1m) > 1 then prefer_nodes()", 46, "a label key", "key=value"),
        ("when avg(host.cpu, 1m) > 1 then prefer_nodes(zone=eu", 53, "`,` and another label, or `)`", "close the list"),
        ("when avg(host.cpu, 1m) > 1 then avoid_nodes(zone=eu, zone=us)", 54, "each label key once", "appears twice"),
        ("when avg(host.cpu, 1m) > 1 then avoid_nodes(zone)", 49, "`=` after the label key `zone`", "key=value"),
        ("when avg(host.cpu, 1m) > 1 then prewarm(1), set_min(1), set_max(2), pause_idle, prefer_nodes(a=b), avoid_nodes(c=d), scale_out(1), scale_to(1)", 132, "actions that do not contradict", "both change"),
        ("when target then scale_out(1)", 13, "a comparison: >, >=, < or <=", "compare the value with a limit"),
        ("when avg(function.inflight, 30s) == 1 then scale_out(1)", 34, "a comparison", "no equality test"),
        ("when avg(host.cpu, 1m) > 1 && avg(host.memory, 1m) > 2 then scale_out(1)", 28, "`then`", "write `and`"),
        ("when ! avg(host.cpu, 1m) > 1 then scale_out(1)", 6, "a number, a parameter or an aggregation", "write `not`"),
        ("when 1 < avg(host.cpu, 1m) < 2 then scale_out(1)", 28, "`and`, `or`, `for` or `then`", "do not chain"),
        ("when (avg(host.cpu, 1m) > 1) + 1 > 2 then scale_out(1)", 6, "a number", "true or false"),
        ("when 2 * (avg(host.cpu, 1m) > 1) > 2 then scale_out(1)", 10, "a number", "true or false"),
        ("when (avg(host.cpu, 1m) > 1 then scale_out(1)", 29, "`)`", "close the `(` at column 6"),
        ("when count(function.requests, 1m) > 1 then scale_out(1)", 6, "a number, a parameter or an aggregation", "count() is not available"),
        ("when function.inflight > 1 then scale_out(1)", 6, "an aggregation around the signal", "avg(function.inflight, 30s)"),
        ("when function.requests > 1 then scale_out(1)", 6, "an aggregation around the signal", "rate(function.requests, 30s)"),
        ("when avg(host.cpu 1m) > 1 then scale_out(1)", 19, "`,` and a window", "avg(host.cpu, 30s)"),
        ("when avg host.cpu > 1 then scale_out(1)", 10, "`(` after avg", "avg(function.inflight, 30s)"),
        ("when avg(host.cpu, 1m > 1 then scale_out(1)", 23, "`)`", "close the call: avg(host.cpu, 1m)"),
        ("when avg(host.cpu, 1m) > 10000000000000 then scale_out(1)", 26, "a number of at most 1000000000000", "smaller"),
        ("when avg(host.cpu, 1m) > .5 then scale_out(1)", 26, "a number", "leading digit"),
        ("when avg(host.cpu, 1m) > 1e3 then scale_out(1)", 26, "a number", "write the number out in full"),
        ("when avg(host.cpu, 1m) > 5s then scale_out(1)", 26, "a number", "durations only go in"),
        ("when avg(host.cpu, 1m) > 1 and then scale_out(1)", 32, "a number, a parameter or an aggregation", "target"),
        ("when not then scale_out(1)", 10, "a number, a parameter or an aggregation", "avg(function.inflight, 30s)"),
        ("when é > 1 then scale_out(1)", 6, "a number, a parameter or an aggregation", "target"),
        ("when avg(host.cpu, 1m) > 1 then scale_out(1) — x", 46, "`,` and another action", "remove"),
        ("when x > 1 then scale_out(1)", 6, "a number, a parameter or an aggregation", "`target`, `instances`"),
        ("when Target > 1 then scale_out(1)", 6, "a number, a parameter or an aggregation", "did you mean `target`? Words in rules are lowercase"),
        ("when avg(host.cpu, 1m) > 1 then Scale_Out(1)", 33, "an action", "did you mean `scale_out`?"),
        ("if avg(host.cpu, 1m) > 1 then scale_out(1)", 1, "`when`", "a rule starts with `when`"),
        ("when avg(host.cpu, 1m) > 1 or then scale_out(1)", 31, "a number", "target"),
        ("when avg(host.cpu, 1m) then scale_out(1)", 24, "a comparison", "compare"),
        ("when 1 > 2", 11, "`then` and the actions, or `for`", "put `then` and the actions"),
        ("when 1 > 2 for 1m", 18, "`then` and the actions", "put `then`"),
        ("when avg(host.cpu, 1m) > 1 then prewarm(1), set_min(1), set_max(2), pause_idle, scale_out(1), prefer_nodes(a=b), prefer_nodes(c=d), avoid_nodes(e=f), avoid_nodes(g=h)", 151, "at most 8 actions", "split the actions"),
        ("when avg(host.cpu, 1m) > 1 then prefer_nodes(zone=eu), avoid_nodes(zone=eu)", 56, "actions that do not contradict", "prefer and avoid the same nodes"),
        ("when avg(host.cpu, 1m) > 1 then prefer_nodes(zone=eu), prefer_nodes(zone=eu)", 56, "actions that do not contradict", "same action twice"),
    ];
    for (text, column, expected, fix) in cases {
        let e = match parse_rule_text(text) {
            Ok(body) => panic!("{text:?} parsed as {body}"),
            Err(e) => e,
        };
        assert_eq!(e.field, "rule");
        assert_eq!((e.line, e.column), (1, *column), "{text:?}: {e}");
        assert!(e.expected.contains(expected), "{text:?}: expected {expected:?} in {e}");
        assert!(e.fix.contains(fix), "{text:?}: fix {fix:?} in {e}");
        assert!(!e.found.is_empty(), "{text:?}: {e}");
    }
}

#[test]
fn the_documented_message_shape() {
    let e = parse_rule_text("when avg(function.inflight, 30) > 0.8 * target then scale_out(1)").unwrap_err();
    assert_eq!(e.message(), "line 1, column 29: expected a duration such as 30s, found \"30\": add a unit: s, m or h");
    assert_eq!(e.to_string(), format!("rule: {}", e.message()));
}

#[test]
fn limits_are_errors_not_crashes() {
    // Too long: the error points at the first character past the limit.
    let long = format!("when {} > 1 then pause_idle", "1 + ".repeat(300));
    let e = parse_rule_text(&long).unwrap_err();
    assert_eq!(e.column, bounds::TEXT_BYTES + 1);
    assert!(e.expected.contains("at most 1000 bytes"), "{e}");
    let long_unicode = format!("when {}", "é".repeat(600));
    let e = parse_rule_text(&long_unicode).unwrap_err();
    assert!(e.column <= long_unicode.chars().count() + 1);

    // Too deep: the 17th parenthesis.
    let deep = format!("when {}1 > 0{} then pause_idle", "(".repeat(17), ")".repeat(17));
    let e = parse_rule_text(&deep).unwrap_err();
    assert_eq!(e.column, 6 + 16, "{e}");
    assert!(e.expected.contains("at most 16 levels"), "{e}");
    assert!(parse_rule_text(&format!("when {}1 > 0{} then pause_idle", "(".repeat(16), ")".repeat(16))).is_ok());
    let nots = format!("when {}1 > 0 then pause_idle", "not ".repeat(17));
    assert!(parse_rule_text(&nots).unwrap_err().expected.contains("levels of nesting"));
    let minuses = format!("when {}target > 0 then pause_idle", "-".repeat(40));
    assert!(parse_rule_text(&minuses).unwrap_err().expected.contains("levels of nesting"));
    // Far too deep for a naive recursive parser, still an error.
    let very_deep = format!("when {} then pause_idle", "(".repeat(900));
    assert!(parse_rule_text(&very_deep).unwrap_err().expected.contains("levels of nesting"));

    // Too many nodes: 33 numbers and 32 additions are 65; the 32nd `+` is one too many.
    // With 30 additions, the numbers, additions and the comparison make 63.
    let wide = format!("when 1{} > 0 then pause_idle", "+1".repeat(32));
    let e = parse_rule_text(&wide).unwrap_err();
    assert_eq!(e.column, 6 + 1 + 2 * 31, "{e}");
    assert!(e.expected.contains("at most 64 parts"), "{e}");
    assert!(parse_rule_text(&format!("when 1{} > 0 then pause_idle", "+1".repeat(30))).is_ok());
}

#[test]
fn positions_in_multi_line_text_are_real_lines_and_columns() {
    let text = "when avg(host.cpu, 1m) > 1\nthen scale_out(1)\ncooldown 5";
    let e = parse_rule_text(text).unwrap_err();
    assert_eq!((e.line, e.column), (3, 10), "{e}");
    assert!(e.fix.contains("add a unit"));
    let e = parse_rule_text("when (avg(host.cpu, 1m) > 1\n  or 1 > 2\nthen pause_idle").unwrap_err();
    assert_eq!((e.line, e.column), (3, 1), "{e}");
    assert!(e.fix.contains("line 1, column 6"), "{e}");
}

fn source(name: &str, scope: &str, priority: i32, rule: &str) -> RuleSource {
    RuleSource { name: name.into(), scope: scope.into(), priority, rule: rule.into() }
}

const OK_RULE: &str = "when avg(function.inflight, 30s) > 0.8 * target for 10s then scale_out(2) cooldown 60s";

#[test]
fn from_source_validates_every_part() {
    let rule = Rule::from_source(source("burst", "function:resize", 10, OK_RULE)).unwrap();
    assert_eq!(rule.name.as_str(), "burst");
    assert_eq!(rule.scope, RuleScope::Function(FunctionName::new("resize").unwrap()));
    assert_eq!(rule.priority, 10);
    assert_eq!(rule.hold_for, Duration::from_secs(10));
    assert_eq!(rule.cooldown, Duration::from_secs(60));
    assert_eq!(rule.actions, vec![Action::ScaleOut(2)]);
    assert_eq!(rule.to_string(), "when avg(function.inflight, 30s) > 0.8 * target for 10s then scale_out(2) cooldown 1m");
    assert_eq!(rule.windows().len(), 1);
    assert_eq!(rule.body(), parse_rule_text(OK_RULE).unwrap());

    let cases = [
        (source("Burst", "all", 0, OK_RULE), "name", 1, "lowercase"),
        (source("", "all", 0, OK_RULE), "name", 1, "empty"),
        (source("burst", "labels:", 0, OK_RULE), "scope", 8, "key=value"),
        (source("burst", "all", 1001, OK_RULE), "priority", 1, "-1000 to 1000"),
        (source("burst", "all", -1001, OK_RULE), "priority", 1, "-1000 to 1000"),
        (source("burst", "all", 0, "when then"), "rule", 6, "target"),
    ];
    for (src, field, column, fix) in cases {
        let e = Rule::from_source(src.clone()).unwrap_err();
        assert_eq!((e.field.as_str(), e.line, e.column), (field, 1, column), "{src:?}: {e}");
        assert!(e.fix.contains(fix), "{src:?}: {e}");
        let v: ValidationError = e.into();
        assert_eq!(v.field, field);
    }
    assert!(Rule::from_source(source("edge", "all", -1000, OK_RULE)).is_ok());
}

#[test]
fn rules_serialize_as_their_source() {
    let src = source("burst", "labels:tier=web", 5, "when  avg(function.inflight,30s)>1 then scale_out(1)");
    let rule = Rule::from_source(src.clone()).unwrap();
    let json = serde_json::to_value(&rule).unwrap();
    assert_eq!(json, serde_json::json!({"name": "burst", "scope": "labels:tier=web", "priority": 5, "rule": src.rule}));
    let back: Rule = serde_json::from_value(json).unwrap();
    assert_eq!(back, rule);

    // Defaults: scope all, priority 0.
    let minimal: Rule = serde_json::from_str(r#"{"name": "a", "rule": "when 1 > 0 then pause_idle"}"#).unwrap();
    assert_eq!((minimal.scope.clone(), minimal.priority), (RuleScope::All, 0));

    let bad = serde_json::from_str::<Rule>(r#"{"name": "a", "rule": "when 1 > 0 then scale_out(0)"}"#).unwrap_err();
    assert!(bad.to_string().contains("rule: line 1, column 27: expected a whole number from 1 to 1000"), "{bad}");
    let unknown = serde_json::from_str::<Rule>(r#"{"name": "a", "rule": "when 1 > 0 then pause_idle", "when": 1}"#).unwrap_err();
    assert!(unknown.to_string().contains("unknown field"), "{unknown}");
    assert!(serde_json::from_str::<RuleName>("\"ok-name\"").is_ok());
    assert!(serde_json::from_str::<RuleName>("\"Not Ok\"").is_err());
}

#[test]
fn scopes_print_as_they_parse() {
    let labels: BTreeMap<String, String> = [("b", "2"), ("a", "1")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    for scope in [RuleScope::All, RuleScope::Function(FunctionName::new("resize").unwrap()), RuleScope::Labels(LabelSelector(labels))] {
        assert_eq!(parse_scope(&scope.to_string()).unwrap(), scope);
    }
    assert_eq!(parse_scope("labels: b=2 , a=1").unwrap().to_string(), "labels:a=1,b=2");
}

#[test]
fn count_changes_are_the_scale_actions() {
    assert!(Action::ScaleOut(1).is_count_change());
    assert!(Action::ScaleIn(1).is_count_change());
    assert!(Action::ScaleTo(1).is_count_change());
    assert!(!Action::SetMin(1).is_count_change());
    assert!(!Action::Prewarm(1).is_count_change());
    assert!(!Action::PauseIdle.is_count_change());
}
