//! The rule text parser: recursive descent over the tokens of `lexer`,
//! with every error positioned and explained.
//!
//! A `(` may open a condition (`(a > 1 or b > 2)`) or arithmetic
//! (`(target + 1) * 2`). Rather than guess and back up, conditions and
//! arithmetic are parsed by one precedence ladder (`or` < `and` < `not` <
//! comparison < `+ -` < `* /` < unary minus) whose results are either kind;
//! each operator then checks that its operands are the kind it needs.
//! That keeps parsing linear and puts the error where the mix-up is.

use super::ast::{agg_fits, Action, ArithOp, CmpOp, Condition, Expr, Param, Signal, WindowRef, RULE_AGGS};
use super::bounds;
use super::display::fmt_duration;
use super::error::{describe_pos, one_of, quote, suggest, Fault};
use super::lexer::{token_at, Kind, Token};
use super::scope::parse_selector;
use super::RuleBody;
use crate::metric::{Agg, SeriesKind};
use std::mem::discriminant;
use std::time::Duration;

/// A rule to copy from, for messages about the overall shape.
const EXAMPLE: &str = "when avg(function.inflight, 30s) > 0.8 * target then scale_out(1)";
const END: &str = "the end of the rule";
const FACTOR_EXPECTED: &str = "a number, a parameter or an aggregation";
const FACTOR_FIX: &str = "use a number such as 0.8, a parameter (`target`, `instances`, `min`, `max`, `concurrency`) \
     or an aggregation over a window (`avg`, `min`, `max`, `p95`, `last`, `rate`), e.g. avg(function.inflight, 30s)";
const COMPARE_FIX: &str = "compare the value with a limit, e.g. `avg(function.inflight, 30s) > 0.8 * target`";

/// Parses the text of a rule (`when ... then ...`), with errors at byte offsets of `src`.
pub(super) fn parse_body(src: &str) -> Result<RuleBody, Fault> {
    if src.len() > bounds::TEXT_BYTES {
        let at = src.char_indices().find(|(i, c)| i + c.len_utf8() > bounds::TEXT_BYTES).map_or(src.len(), |(i, _)| i);
        return Err(Fault::new(
            at,
            format!("a rule of at most {} bytes", bounds::TEXT_BYTES),
            format!("a rule of {} bytes", src.len()),
            "shorten the rule (spaces count too) or split it into several rules",
        ));
    }
    let mut p = Parser { src, next: token_at(src, 0), depth: 0, nodes: 0 };
    p.keyword_when()?;
    let top = p.or()?;
    let condition = p.need_cond(top)?;
    let has_for = p.is_word("for");
    let hold_for = if has_for {
        p.bump();
        p.duration(Use::For)?
    } else {
        Duration::ZERO
    };
    if !p.is_word("then") {
        return Err(p.missing_then(has_for));
    }
    p.bump();
    let actions = p.actions()?;
    let has_cooldown = p.is_word("cooldown");
    let cooldown = if has_cooldown {
        p.bump();
        p.duration(Use::Cooldown)?
    } else {
        Duration::ZERO
    };
    if p.peek().kind != Kind::End {
        return Err(p.trailing(has_cooldown));
    }
    Ok(RuleBody { condition, hold_for, actions, cooldown })
}

/// Why two actions of one rule cannot both apply, if they cannot. Several
/// `prefer_nodes` (or `avoid_nodes`) with different selectors are separate
/// preferences; any other action may appear once.
fn conflict(a: &Action, b: &Action) -> Option<String> {
    let count_changes = a.is_count_change() && b.is_count_change();
    if count_changes && discriminant(a) != discriminant(b) {
        return Some(format!(
            "`{a}` and `{b}` both change the instance count and contradict each other: \
             keep one, or write two rules with different conditions"
        ));
    }
    match (a, b) {
        (Action::PreferNodes(x), Action::AvoidNodes(y)) | (Action::AvoidNodes(x), Action::PreferNodes(y)) if x == y => {
            Some(format!("`{a}` and `{b}` prefer and avoid the same nodes: keep one"))
        }
        (Action::PreferNodes(_), Action::PreferNodes(_)) | (Action::AvoidNodes(_), Action::AvoidNodes(_)) if a != b => None,
        _ if discriminant(a) == discriminant(b) => Some(format!("`{a}` and `{b}` are the same action twice: keep one")),
        (Action::SetMin(lo), Action::SetMax(hi)) | (Action::SetMax(hi), Action::SetMin(lo)) if lo > hi => Some(format!(
            "`{a}` and `{b}` would put the minimum above the maximum: \
                 make the minimum at most the maximum"
        )),
        _ => None,
    }
}

/// The advice for an operator borrowed from another language, if `text` is one.
fn foreign_operator(text: &str) -> Option<&'static str> {
    match text {
        "&&" | "&" => Some("write `and` instead of `&&`"),
        "||" | "|" => Some("write `or` instead of `||`"),
        "!" => Some("write `not` instead of `!`"),
        "==" | "=" | "!=" => Some("there is no equality test on measured values: compare with >, >=, < or <="),
        _ => None,
    }
}

/// Where a duration stands, which sets its bounds.
#[derive(Clone, Copy)]
enum Use {
    Window,
    For,
    Cooldown,
}

impl Use {
    fn bounds(self) -> ((u64, u64), &'static str) {
        match self {
            Use::Window => (bounds::WINDOW_SECS, "a window"),
            Use::For => (bounds::FOR_SECS, "a `for` duration"),
            Use::Cooldown => (bounds::COOLDOWN_SECS, "a cooldown"),
        }
    }
}

/// What a sub-expression turned out to be; see the module docs.
enum Parsed {
    Cond(Condition),
    Expr(Expr),
}

/// A parsed piece and the offset it starts at.
struct Node {
    kind: Parsed,
    start: usize,
}

struct Parser<'a> {
    src: &'a str,
    /// The next unread token (lexed once, as parsing looks at it many times).
    next: Token<'a>,
    /// Open parentheses, `not`s and unary minuses around the current point.
    depth: usize,
    /// Condition and expression nodes built so far.
    nodes: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Token<'a> {
        self.next
    }

    fn bump(&mut self) -> Token<'a> {
        let t = self.next;
        self.seek(t.end);
        t
    }

    /// Continues reading at byte `pos`.
    fn seek(&mut self, pos: usize) {
        self.next = token_at(self.src, pos);
    }

    fn is_word(&self, word: &str) -> bool {
        let t = self.peek();
        t.kind == Kind::Word && t.text == word
    }

    fn fault(&self, t: &Token<'_>, expected: impl Into<String>, fix: impl Into<String>) -> Fault {
        let found = if t.kind == Kind::End { END.to_string() } else { quote(t.text) };
        Fault::new(t.start, expected, found, fix)
    }

    /// Counts one more node; the bound keeps evaluation and printing cheap
    /// and their recursion shallow.
    fn count_node(&mut self, t: &Token<'_>) -> Result<(), Fault> {
        self.nodes += 1;
        if self.nodes > bounds::CONDITION_NODES {
            let fix = "simplify the condition or split it into several rules";
            return Err(self.fault(t, format!("a condition of at most {} parts (numbers, names, windows, operators)", bounds::CONDITION_NODES), fix));
        }
        Ok(())
    }

    /// Enters one level of nesting; the bound keeps the parser's recursion
    /// (and so the stack) small whatever the input.
    fn enter(&mut self, t: &Token<'_>) -> Result<(), Fault> {
        self.depth += 1;
        if self.depth > bounds::NESTING {
            let fix = "remove parentheses, `not`s or minus signs, or split the condition into several rules";
            return Err(self.fault(t, format!("at most {} levels of nesting", bounds::NESTING), fix));
        }
        Ok(())
    }

    fn need_cond(&self, node: Node) -> Result<Condition, Fault> {
        match node.kind {
            Parsed::Cond(c) => Ok(c),
            Parsed::Expr(_) => {
                let t = self.peek();
                Err(self.fault(&t, "a comparison: >, >=, < or <=", foreign_operator(t.text).unwrap_or(COMPARE_FIX)))
            }
        }
    }

    fn need_expr(&self, node: Node) -> Result<Expr, Fault> {
        match node.kind {
            Parsed::Expr(e) => Ok(e),
            Parsed::Cond(_) => Err(Fault::new(
                node.start,
                "a number",
                "a condition in parentheses",
                "a condition is true or false, not a number: join conditions with `and` or `or`, and keep arithmetic inside comparisons",
            )),
        }
    }

    /// `and ('or' and)*`
    fn or(&mut self) -> Result<Node, Fault> {
        self.joined("or", Self::and, Condition::Or)
    }

    /// `not ('and' not)*`
    fn and(&mut self) -> Result<Node, Fault> {
        self.joined("and", Self::not, Condition::And)
    }

    /// `operand (word operand)*`, left to right, each side a condition.
    fn joined(&mut self, word: &str, operand: fn(&mut Self) -> Result<Node, Fault>, join: fn(Box<Condition>, Box<Condition>) -> Condition) -> Result<Node, Fault> {
        let mut left = operand(self)?;
        while self.is_word(word) {
            let start = left.start;
            let l = self.need_cond(left)?;
            let t = self.bump();
            let right = operand(self)?;
            let r = self.need_cond(right)?;
            self.count_node(&t)?;
            left = Node { kind: Parsed::Cond(join(Box::new(l), Box::new(r))), start };
        }
        Ok(left)
    }

    /// `'not' not | compare`
    fn not(&mut self) -> Result<Node, Fault> {
        if !self.is_word("not") {
            return self.compare();
        }
        let t = self.bump();
        self.enter(&t)?;
        let inner = self.not()?;
        self.depth -= 1;
        let c = self.need_cond(inner)?;
        self.count_node(&t)?;
        Ok(Node { kind: Parsed::Cond(Condition::Not(Box::new(c))), start: t.start })
    }

    /// `additive [cmp additive]`; a comparison cannot be followed by another.
    fn compare(&mut self) -> Result<Node, Fault> {
        let left = self.additive()?;
        let t = self.peek();
        let op = match t.kind {
            Kind::Gt => CmpOp::Gt,
            Kind::Ge => CmpOp::Ge,
            Kind::Lt => CmpOp::Lt,
            Kind::Le => CmpOp::Le,
            _ => return Ok(left),
        };
        let start = left.start;
        let l = self.need_expr(left)?;
        self.bump();
        let right = self.additive()?;
        let r = self.need_expr(right)?;
        self.count_node(&t)?;
        let next = self.peek();
        if matches!(next.kind, Kind::Gt | Kind::Ge | Kind::Lt | Kind::Le) {
            let fix = "comparisons do not chain: write `a < b and b < c`";
            return Err(self.fault(&next, "`and`, `or`, `for` or `then`", fix));
        }
        Ok(Node { kind: Parsed::Cond(Condition::Compare { left: l, op, right: r }), start })
    }

    /// `term (('+'|'-') term)*`
    fn additive(&mut self) -> Result<Node, Fault> {
        let mut left = self.term()?;
        loop {
            let t = self.peek();
            let op = match t.kind {
                Kind::Plus => ArithOp::Add,
                Kind::Minus => ArithOp::Sub,
                _ => return Ok(left),
            };
            left = self.binary(left, op, Self::term)?;
        }
    }

    /// `factor (('*'|'/') factor)*`
    fn term(&mut self) -> Result<Node, Fault> {
        let mut left = self.factor()?;
        loop {
            let t = self.peek();
            let op = match t.kind {
                Kind::Star => ArithOp::Mul,
                Kind::Slash => ArithOp::Div,
                _ => return Ok(left),
            };
            left = self.binary(left, op, Self::factor)?;
        }
    }

    /// `left op operand`, with the operator as the next token.
    fn binary(&mut self, left: Node, op: ArithOp, operand: fn(&mut Self) -> Result<Node, Fault>) -> Result<Node, Fault> {
        let start = left.start;
        let l = self.need_expr(left)?;
        let t = self.bump();
        let right = operand(self)?;
        let r = self.need_expr(right)?;
        self.count_node(&t)?;
        Ok(Node { kind: Parsed::Expr(Expr::Binary(op, Box::new(l), Box::new(r))), start })
    }

    /// `'-' factor | NUMBER | PARAM | AGG '(' SIGNAL ',' DURATION ')' | '(' or ')'`
    fn factor(&mut self) -> Result<Node, Fault> {
        let t = self.peek();
        let expr = |e: Expr| Ok(Node { kind: Parsed::Expr(e), start: t.start });
        match t.kind {
            Kind::Minus => {
                self.bump();
                if self.peek().kind == Kind::Number {
                    // `-5` is the number -5, so it prints back as written.
                    let n = self.number()?;
                    self.count_node(&t)?;
                    return expr(Expr::Number(-n));
                }
                self.enter(&t)?;
                let inner = self.factor()?;
                self.depth -= 1;
                let e = self.need_expr(inner)?;
                self.count_node(&t)?;
                expr(Expr::Neg(Box::new(e)))
            }
            Kind::Number => {
                let n = self.number()?;
                self.count_node(&t)?;
                expr(Expr::Number(n))
            }
            Kind::NumberUnit => {
                let digits = t.text.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
                let exponent = digits.strip_prefix(['e', 'E']);
                let fix = if exponent.is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())) {
                    "write the number out in full, e.g. 1000 for 1e3"
                } else {
                    "durations only go in windows, `for` and `cooldown`; write a plain number here"
                };
                Err(self.fault(&t, FACTOR_EXPECTED, fix))
            }
            Kind::LParen => {
                self.bump();
                self.enter(&t)?;
                let inner = self.or()?;
                self.depth -= 1;
                let close = self.peek();
                if close.kind != Kind::RParen {
                    return Err(self.fault(&close, "`)`", format!("close the `(` at {}", describe_pos(self.src, t.start))));
                }
                self.bump();
                Ok(Node { kind: inner.kind, start: t.start })
            }
            Kind::Word => self.word(t),
            _ => {
                let fix = match t.text {
                    "." => "write numbers with a leading digit, e.g. 0.5",
                    other => foreign_operator(other).unwrap_or(FACTOR_FIX),
                };
                Err(self.fault(&t, FACTOR_EXPECTED, fix))
            }
        }
    }

    /// A word where a value is expected: a parameter or an aggregation.
    fn word(&mut self, t: Token<'a>) -> Result<Node, Fault> {
        let called = token_at(self.src, t.end).kind == Kind::LParen;
        let agg = RULE_AGGS.iter().copied().find(|a| a.as_str() == t.text);
        // `min` and `max` are parameters unless called: `min(host.cpu, 1m)`.
        if let Some(agg) = agg.filter(|_| called || Param::from_name(t.text).is_none()) {
            return self.window(t, agg);
        }
        if let Some(param) = Param::from_name(t.text) {
            self.bump();
            self.count_node(&t)?;
            return Ok(Node { kind: Parsed::Expr(Expr::Param(param)), start: t.start });
        }
        if t.text == "count" {
            let fix = "count() is not available in rules: use rate() with a counter such as function.requests, or avg() with a gauge";
            return Err(self.fault(&t, FACTOR_EXPECTED, fix));
        }
        if let Some(signal) = Signal::from_name(t.text) {
            let agg = if signal.kind() == SeriesKind::Counter { "rate" } else { "avg" };
            let fix = format!("read a signal through an aggregation over a window, e.g. {agg}({signal}, 30s)");
            return Err(self.fault(&t, "an aggregation around the signal", fix));
        }
        let mut candidates: Vec<&str> = RULE_AGGS.iter().map(|a| a.as_str()).collect();
        candidates.extend(Param::ALL.iter().map(|p| p.name()));
        candidates.push("not");
        Err(self.fault(&t, FACTOR_EXPECTED, suggest(t.text, &candidates, FACTOR_FIX.into())))
    }

    /// `AGG '(' SIGNAL ',' DURATION ')'`, with the aggregation's word next.
    fn window(&mut self, t: Token<'a>, agg: Agg) -> Result<Node, Fault> {
        let example = if agg == Agg::Rate { Signal::FunctionRequests } else { Signal::FunctionInflight };
        self.bump();
        let open = self.peek();
        if open.kind != Kind::LParen {
            return Err(self.fault(&open, format!("`(` after {agg}"), format!("write {agg}(SIGNAL, WINDOW), e.g. {agg}({example}, 30s)")));
        }
        self.bump();
        let s = self.peek();
        let signal = match Signal::from_name(s.text).filter(|_| s.kind == Kind::Word) {
            Some(signal) => signal,
            None => {
                let names: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
                let fix = if s.kind == Kind::Word {
                    suggest(s.text, &names, format!("use {}", one_of(names.iter().copied())))
                } else {
                    format!("write {agg}(SIGNAL, WINDOW) with a signal such as {example}")
                };
                return Err(self.fault(&s, "a signal such as function.inflight", fix));
            }
        };
        if !agg_fits(agg, signal.kind()) {
            let (expected, fix) = if agg == Agg::Rate {
                ("a counter for rate()".to_string(), format!("rate() takes a counter such as function.requests; use avg(), max(), min(), p95() or last() with {signal}"))
            } else {
                (format!("a gauge for {agg}()"), format!("{agg}() takes a gauge such as function.inflight; use rate() with {signal}"))
            };
            return Err(self.fault(&s, expected, fix));
        }
        self.bump();
        let comma = self.peek();
        if comma.kind != Kind::Comma {
            let fix = format!("write {agg}({signal}, 30s): the window says how far back to look");
            return Err(self.fault(&comma, "`,` and a window such as 30s", fix));
        }
        self.bump();
        let range = self.duration(Use::Window)?;
        let close = self.peek();
        if close.kind != Kind::RParen {
            return Err(self.fault(&close, "`)`", format!("close the call: {agg}({signal}, {})", fmt_duration(range))));
        }
        self.bump();
        self.count_node(&t)?;
        Ok(Node { kind: Parsed::Expr(Expr::Window(WindowRef { agg, signal, range })), start: t.start })
    }

    /// A number literal, which must be the next token.
    fn number(&mut self) -> Result<f64, Fault> {
        let t = self.peek();
        match t.text.parse::<f64>() {
            Ok(n) if n.is_finite() && n.abs() <= bounds::NUMBER => {
                self.bump();
                Ok(n)
            }
            _ => Err(self.fault(&t, "a number of at most 1000000000000 (1e12)", "use a smaller number")),
        }
    }

    /// A duration: whole digits followed directly by `s`, `m` or `h`.
    fn duration(&mut self, usage: Use) -> Result<Duration, Fault> {
        let t = self.peek();
        let ((lo, hi), what) = usage.bounds();
        let expected = "a duration such as 30s";
        match t.kind {
            Kind::Number => Err(self.fault(&t, expected, "add a unit: s, m or h")),
            Kind::NumberUnit => {
                let digits = t.text.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.text.len());
                let (number, unit) = t.text.split_at(digits);
                if unit.starts_with('.') {
                    return Err(self.fault(&t, "a whole number of seconds, minutes or hours", "use a smaller unit instead of a fraction, e.g. 90s for 1.5m"));
                }
                let scale = match unit {
                    "s" => 1,
                    "m" => 60,
                    "h" => 3600,
                    _ => return Err(self.fault(&t, expected, format!("`{unit}` is not a unit here: use s, m or h (seconds, minutes, hours)"))),
                };
                match number.parse::<u64>().ok().and_then(|n| n.checked_mul(scale)) {
                    Some(secs) if (lo..=hi).contains(&secs) => {
                        self.bump();
                        Ok(Duration::from_secs(secs))
                    }
                    _ => {
                        let range = format!("{what} from {} to {}", fmt_duration(Duration::from_secs(lo)), fmt_duration(Duration::from_secs(hi)));
                        Err(self.fault(&t, range.clone(), format!("use {range}")))
                    }
                }
            }
            _ => Err(self.fault(&t, expected, "write a whole number followed by s, m or h, e.g. 30s, 5m or 1h")),
        }
    }

    /// The `when` that starts every rule.
    fn keyword_when(&mut self) -> Result<(), Fault> {
        let t = self.peek();
        if self.is_word("when") {
            self.bump();
            return Ok(());
        }
        let shape = format!("a rule starts with `when`, e.g. `{EXAMPLE}`");
        let fix = match t.kind {
            Kind::End => format!("write a rule such as `{EXAMPLE}`"),
            Kind::Word => suggest(t.text, &["when"], shape),
            _ => shape,
        };
        Err(self.fault(&t, "`when`", fix))
    }

    /// The error when the condition is not followed by `then`.
    fn missing_then(&self, has_for: bool) -> Fault {
        let t = self.peek();
        let expected = if has_for { "`then` and the actions" } else { "`then` and the actions, or `for` and a duration" };
        let general = "put `then` and the actions after the condition, e.g. `... then scale_out(1)`";
        let fix = if t.kind == Kind::Word && Action::NAMES.contains(&t.text) {
            "put `then` before the actions".to_string()
        } else if let Some(fix) = foreign_operator(t.text) {
            fix.to_string()
        } else if t.kind == Kind::Word {
            suggest(t.text, &["then", "for", "and", "or"], general.into())
        } else {
            general.to_string()
        };
        self.fault(&t, expected, fix)
    }

    /// The error for anything after the actions (and cooldown) but the end.
    fn trailing(&self, has_cooldown: bool) -> Fault {
        let t = self.peek();
        let word = t.kind == Kind::Word;
        let (expected, general) = if has_cooldown {
            ("the end of the rule", "remove what follows the cooldown")
        } else {
            ("`,` and another action, `cooldown` and a duration, or the end of the rule", "remove it, or separate actions with `,`")
        };
        let fix = if word && Action::NAMES.contains(&t.text) && !has_cooldown {
            "separate actions with `,`".to_string()
        } else if word && t.text == "for" {
            "`for` goes before `then`: `when CONDITION for 10s then ACTIONS`".to_string()
        } else if word && !has_cooldown {
            suggest(t.text, &["cooldown"], general.into())
        } else {
            general.to_string()
        };
        self.fault(&t, expected, fix)
    }

    /// `action (',' action)*`: at most the bound, none contradicting another.
    fn actions(&mut self) -> Result<Vec<Action>, Fault> {
        let mut actions: Vec<Action> = Vec::new();
        loop {
            let t = self.peek();
            if actions.len() == bounds::ACTIONS {
                let fix = "split the actions over several rules with the same condition";
                let expected = format!("at most {} actions", bounds::ACTIONS);
                return Err(self.fault(&t, expected, fix));
            }
            let action = self.action()?;
            if let Some(why) = actions.iter().find_map(|a| conflict(a, &action)) {
                let expected = "actions that do not contradict each other";
                return Err(Fault::new(t.start, expected, quote(&action.to_string()), why));
            }
            actions.push(action);
            if self.peek().kind != Kind::Comma {
                return Ok(actions);
            }
            self.bump();
        }
    }

    /// One action: `scale_out(2)`, `pause_idle`, `prefer_nodes(zone=eu)`, ...
    fn action(&mut self) -> Result<Action, Fault> {
        let t = self.peek();
        if t.kind != Kind::Word || !Action::NAMES.contains(&t.text) {
            let list = one_of(Action::NAMES.iter().copied());
            let fix =
                if t.kind == Kind::Word { suggest(t.text, Action::NAMES, format!("use {list}")) } else { format!("write an action such as scale_out(1); the actions are {list}") };
            return Err(self.fault(&t, "an action", fix));
        }
        self.bump();
        Ok(match t.text {
            "scale_out" => Action::ScaleOut(self.count(t.text, 1)?),
            "scale_in" => Action::ScaleIn(self.count(t.text, 1)?),
            "scale_to" => Action::ScaleTo(self.count(t.text, 0)?),
            "set_min" => Action::SetMin(self.count(t.text, 0)?),
            "set_max" => Action::SetMax(self.count(t.text, 0)?),
            "prewarm" => Action::Prewarm(self.count(t.text, 1)?),
            "pause_idle" => {
                if self.peek().kind == Kind::LParen {
                    self.bump();
                    let close = self.peek();
                    if close.kind != Kind::RParen {
                        return Err(self.fault(&close, "`)`", "pause_idle takes no arguments: write pause_idle"));
                    }
                    self.bump();
                }
                Action::PauseIdle
            }
            name => {
                self.open(name, "zone=eu-west")?;
                let (selector, end) = parse_selector(self.src, self.next.start, Some(')'), END)?;
                self.seek(end);
                if name == "prefer_nodes" {
                    Action::PreferNodes(selector)
                } else {
                    Action::AvoidNodes(selector)
                }
            }
        })
    }

    fn open(&mut self, name: &str, example: &str) -> Result<(), Fault> {
        let t = self.peek();
        if t.kind != Kind::LParen {
            return Err(self.fault(&t, format!("`(` after {name}"), format!("write {name}({example})")));
        }
        self.bump();
        Ok(())
    }

    /// `'(' N ')'` with N a whole number from `min` to the bound.
    fn count(&mut self, name: &str, min: u32) -> Result<u32, Fault> {
        self.open(name, "1")?;
        let t = self.peek();
        let max = bounds::COUNT;
        let n = match t.kind {
            Kind::Number => t.text.parse::<u32>().ok().filter(|n| (min..=max).contains(n)),
            _ => None,
        };
        let Some(n) = n else {
            return Err(self.fault(&t, format!("a whole number from {min} to {max}"), format!("write {name}(N) with N from {min} to {max}")));
        };
        self.bump();
        let close = self.peek();
        if close.kind != Kind::RParen {
            return Err(self.fault(&close, "`)`", format!("{name} takes one number: write {name}({n})")));
        }
        self.bump();
        Ok(n)
    }
}
