//! Property tests, seeded so a failure replays: random and mutated input
//! never panics and always gets an error inside the text with an
//! expectation and a fix; accepted text prints back to the same rule; and
//! random rules print to text that parses back to them.

use super::*;
use crate::metric::Agg;
use crate::rng::SplitMix64;
use std::collections::BTreeMap;

/// Pieces random rule text is built from: the language's words and
/// punctuation, numbers and durations good and bad, and junk.
const PIECES: &[&str] = &[
    "when",
    "then",
    "for",
    "and",
    "or",
    "not",
    "cooldown",
    "avg",
    "min",
    "max",
    "p95",
    "last",
    "rate",
    "count",
    "target",
    "instances",
    "concurrency",
    "host.cpu",
    "host.memory",
    "host.load",
    "container.cpu",
    "function.inflight",
    "function.requests",
    "function.errors",
    "function.latency_p99",
    "function.queue",
    "scale_out",
    "scale_in",
    "scale_to",
    "set_min",
    "set_max",
    "prewarm",
    "pause_idle",
    "prefer_nodes",
    "avoid_nodes",
    "(",
    ")",
    ",",
    "+",
    "-",
    "*",
    "/",
    ">",
    ">=",
    "<",
    "<=",
    "=",
    "==",
    "!",
    "&&",
    "||",
    ".",
    ":",
    ";",
    "'",
    "\"",
    "\\",
    "0",
    "1",
    "2",
    "30",
    "0.8",
    "1e3",
    "1000",
    "1001",
    "99999999999999",
    "18446744073709551616",
    "30s",
    "5m",
    "1h",
    "0s",
    "25h",
    "1.5m",
    "10ms",
    "2d",
    "x",
    "avgg",
    "Target",
    "WHEN",
    "zone=eu",
    "a=b",
    "é",
    "日本",
    "🦀",
    "\u{0}",
    "\u{200b}",
    "\t",
    "\n",
    " ",
    "  ",
];

fn piece(rng: &mut SplitMix64) -> &'static str {
    rng.pick(PIECES)
}

/// Valid rules to mutate.
const SEEDS: &[&str] = &[
    "when avg(function.inflight, 30s) > 0.8 * target for 10s then scale_out(2) cooldown 60s",
    "when not (rate(function.errors, 1m) / rate(function.requests, 1m) > 0.05 or last(host.cpu, 5m) >= 90) then scale_in(1), pause_idle",
    "when -(target + 1) * 2 < -avg(container.memory, 1h) and instances <= max - 1 then set_min(1), set_max(5), prefer_nodes(zone=eu, disk=ssd)",
    "when max(host.load, 10s) > max then avoid_nodes(tier=batch) cooldown 24h",
];

/// `text` with 1-4 random edits: insert, delete, replace or duplicate a span.
fn mutate(rng: &mut SplitMix64, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let len = chars.len() as u64;
        let at = rng.below(len + 1) as usize;
        let span = (1 + rng.below(8) as usize).min(chars.len() - at.min(chars.len()));
        match rng.below(4) {
            0 => {
                let p: Vec<char> = piece(rng).chars().collect();
                chars.splice(at..at, p);
            }
            1 => {
                chars.drain(at..at + span);
            }
            2 => {
                let p: Vec<char> = piece(rng).chars().collect();
                chars.splice(at..at + span, p);
            }
            _ => {
                let copy: Vec<char> = chars[at..at + span].to_vec();
                chars.splice(at..at, copy);
            }
        }
    }
    chars.into_iter().collect()
}

/// Random rule-ish text: pieces, or a mutated valid rule.
fn random_text(rng: &mut SplitMix64) -> String {
    if rng.chance(0.5) {
        let seed = rng.pick(SEEDS);
        return mutate(rng, seed);
    }
    let mut s = String::new();
    if rng.chance(0.7) {
        s.push_str("when ");
    }
    for _ in 0..rng.below(40) {
        s.push_str(piece(rng));
        if rng.chance(0.6) {
            s.push(' ');
        }
    }
    s
}

/// Checks an error is inside `text` and says what was expected and how to fix it.
#[track_caller]
fn assert_well_formed(e: &ParseError, text: &str) {
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(e.line >= 1 && e.line <= lines.len(), "{text:?}: {e}");
    let line_chars = lines[e.line - 1].chars().count();
    assert!(e.column >= 1 && e.column <= line_chars + 1, "{text:?}: {e}");
    assert!(!e.expected.is_empty() && !e.fix.is_empty() && !e.found.is_empty(), "{text:?}: {e}");
}

#[test]
fn random_and_mutated_text_never_panics_and_errors_are_inside_the_text() {
    let mut rng = SplitMix64::new(0x5eed_0001);
    let mut accepted = 0;
    for _ in 0..20_000 {
        let text = random_text(&mut rng);
        match parse_rule_text(&text) {
            Err(e) => assert_well_formed(&e, &text),
            Ok(body) => {
                // Whatever is accepted prints back to the same rule.
                accepted += 1;
                let printed = body.to_string();
                assert_eq!(parse_rule_text(&printed).as_ref(), Ok(&body), "{text:?} printed as {printed:?}");
            }
        }
        if let Err(e) = parse_scope(&text) {
            assert_well_formed(&e, &text);
        }
    }
    // Some mutations (say, a duplicated space) leave a rule valid; the printer is exercised too.
    assert!(accepted > 100, "only {accepted} accepted");
}

fn random_number(rng: &mut SplitMix64) -> f64 {
    let n = rng.below(2_000_001) as f64 - 1_000_000.0;
    n / [1.0, 10.0, 100.0, 1000.0][rng.below(4) as usize]
}

fn random_window(rng: &mut SplitMix64) -> WindowRef {
    let signal = rng.pick(Signal::ALL);
    let aggs: Vec<Agg> = RULE_AGGS.iter().copied().filter(|a| agg_fits(*a, signal.kind())).collect();
    let range = Duration::from_secs(rng.pick(&[1, 30, 45, 60, 90, 300, 3600, 5400, 86_400]));
    WindowRef { agg: rng.pick(&aggs), signal, range }
}

fn random_expr(rng: &mut SplitMix64, depth: u32) -> Expr {
    if depth == 0 || rng.chance(0.35) {
        return match rng.below(3) {
            0 => Expr::Number(random_number(rng)),
            1 => Expr::Param(rng.pick(Param::ALL)),
            _ => Expr::Window(random_window(rng)),
        };
    }
    if rng.chance(0.2) {
        return Expr::Neg(Box::new(random_expr(rng, depth - 1)));
    }
    let op = rng.pick(&[ArithOp::Add, ArithOp::Sub, ArithOp::Mul, ArithOp::Div]);
    Expr::Binary(op, Box::new(random_expr(rng, depth - 1)), Box::new(random_expr(rng, depth - 1)))
}

fn random_cond(rng: &mut SplitMix64, depth: u32) -> Condition {
    if depth == 0 || rng.chance(0.3) {
        let op = rng.pick(&[CmpOp::Gt, CmpOp::Ge, CmpOp::Lt, CmpOp::Le]);
        return Condition::Compare { left: random_expr(rng, 2), op, right: random_expr(rng, 2) };
    }
    match rng.below(3) {
        0 => Condition::Not(Box::new(random_cond(rng, depth - 1))),
        1 => Condition::And(Box::new(random_cond(rng, depth - 1)), Box::new(random_cond(rng, depth - 1))),
        _ => Condition::Or(Box::new(random_cond(rng, depth - 1)), Box::new(random_cond(rng, depth - 1))),
    }
}

fn random_selector(rng: &mut SplitMix64) -> LabelSelector {
    let mut pairs = BTreeMap::new();
    for _ in 0..1 + rng.below(3) {
        pairs.insert(rng.pick(&["zone", "disk", "example.com/tier", "gpu"]).to_string(), rng.pick(&["eu-west", "ssd", "a_b", "1.2"]).to_string());
    }
    LabelSelector(pairs)
}

/// 1-8 actions that do not contradict each other.
fn random_actions(rng: &mut SplitMix64) -> Vec<Action> {
    let mut actions = Vec::new();
    let count = |rng: &mut SplitMix64, min: u64| (min + rng.below(1001 - min)) as u32;
    match rng.below(4) {
        0 => actions.push(Action::ScaleOut(count(rng, 1))),
        1 => actions.push(Action::ScaleIn(count(rng, 1))),
        2 => actions.push(Action::ScaleTo(count(rng, 0))),
        _ => {}
    }
    let lo = count(rng, 0);
    if rng.chance(0.3) {
        actions.push(Action::SetMin(lo));
    }
    if rng.chance(0.3) {
        actions.push(Action::SetMax(lo + rng.below(u64::from(1001 - lo)) as u32));
    }
    if rng.chance(0.3) {
        actions.push(Action::Prewarm(count(rng, 1)));
    }
    if rng.chance(0.3) {
        actions.push(Action::PauseIdle);
    }
    for _ in 0..rng.below(3) {
        let s = random_selector(rng);
        let a = if rng.chance(0.5) { Action::PreferNodes(s) } else { Action::AvoidNodes(s) };
        let clash = actions.iter().any(|b| match (&a, b) {
            (Action::PreferNodes(x) | Action::AvoidNodes(x), Action::PreferNodes(y) | Action::AvoidNodes(y)) => x == y,
            _ => false,
        });
        if !clash {
            actions.push(a);
        }
    }
    if actions.is_empty() {
        actions.push(Action::PauseIdle);
    }
    rng.shuffle(&mut actions);
    actions.truncate(bounds::ACTIONS);
    actions
}

fn nodes(c: &Condition) -> usize {
    fn expr(e: &Expr) -> usize {
        match e {
            Expr::Number(_) | Expr::Param(_) | Expr::Window(_) => 1,
            Expr::Neg(x) => 1 + expr(x),
            Expr::Binary(_, l, r) => 1 + expr(l) + expr(r),
        }
    }
    match c {
        Condition::Compare { left, right, .. } => 1 + expr(left) + expr(right),
        Condition::And(a, b) | Condition::Or(a, b) => 1 + nodes(a) + nodes(b),
        Condition::Not(x) => 1 + nodes(x),
    }
}

#[test]
fn random_rules_print_and_parse_back_equal() {
    let mut rng = SplitMix64::new(0x5eed_0002);
    let mut checked = 0;
    while checked < 2_000 {
        let condition = random_cond(&mut rng, 4);
        if nodes(&condition) > bounds::CONDITION_NODES {
            continue;
        }
        let body = RuleBody {
            condition,
            hold_for: Duration::from_secs(rng.pick(&[0, 1, 59, 60, 600, 3600])),
            actions: random_actions(&mut rng),
            cooldown: Duration::from_secs(rng.pick(&[0, 5, 60, 7200, 86_400])),
        };
        let text = body.to_string();
        if text.len() > bounds::TEXT_BYTES {
            continue;
        }
        match parse_rule_text(&text) {
            Ok(again) => assert_eq!(again, body, "{text}"),
            Err(e) => panic!("{text}: {e}"),
        }
        checked += 1;
    }
}

/// Pieces of random TOML: structure, quoting, escapes and rule text.
const FILE_PIECES: &[&str] = &[
    "[[rule]]\n",
    "[rule]\n",
    "[[rules]]\n",
    "name = ",
    "rule = ",
    "scope = ",
    "priority = ",
    "nmae = ",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "\\",
    "\\n",
    "\\t",
    "\\u00e9",
    "\\U0001F980",
    "\\x41",
    "\\e",
    "\\\n",
    "=",
    "\n",
    "\r\n",
    " ",
    "#",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"burst\"",
    "\"all\"",
    "\"labels:a=b\"",
    "\"function:resize\"",
    "10",
    "-5",
    "5000",
    "0x10",
    "1.5",
    "true",
    "1979-05-27",
    "\"when 1 > 0 then pause_idle\"",
    "'when avg(host.cpu, 1m) > 80 then scale_out(1)'",
    "when",
    "then",
    "scale_out(0)",
    "é",
    "🦀",
];

const GOOD_FILE: &str = "# Rules.\n[[rule]]\nname = \"burst\"\nscope = \"labels:tier=web\"\npriority = 10\nrule = \"when avg(function.inflight, 30s) > 0.8 * target for 10s then scale_out(2) cooldown 60s\"\n\n[[rule]]\nname = 'calm'\nrule = '''\nwhen avg(function.inflight, 5m) < 0.3 * target\nthen scale_in(1)'''\n\n[[rule]]\nname = \"warm\"\nrule = \"\"\"\nwhen\\trate(function.cold_starts, 1m) > 0.1 \\\n  then prewarm(2)\"\"\"\n";

#[test]
fn random_files_never_panic_and_errors_are_inside_the_file() {
    assert_eq!(parse_file(GOOD_FILE).map(|r| r.len()), Ok(3));
    let mut rng = SplitMix64::new(0x5eed_0003);
    for _ in 0..3_000 {
        let contents = if rng.chance(0.5) {
            let mut s = GOOD_FILE.to_string();
            for _ in 0..1 + rng.below(3) {
                // Mutate by whole pieces so the TOML stays plausible.
                let mut cut = rng.below(s.len() as u64 + 1) as usize;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.insert_str(cut, rng.pick(FILE_PIECES));
            }
            mutate(&mut rng, &s)
        } else {
            (0..rng.below(30)).map(|_| rng.pick(FILE_PIECES)).collect()
        };
        match parse_file(&contents) {
            Ok(rules) => {
                for rule in rules {
                    assert_eq!(Rule::from_source(rule.source.clone()).as_ref(), Ok(&rule), "{contents:?}");
                }
            }
            Err(errors) => {
                assert!(!errors.is_empty());
                for e in &errors {
                    assert_well_formed(e, &contents);
                }
            }
        }
    }
}

/// How a string is written in TOML.
#[derive(Clone, Copy, Debug)]
enum Quoting {
    Basic,
    Literal,
    MultiBasic,
    MultiLiteral,
}

/// `text` as a TOML string in `quoting` (basic if the text cannot be written
/// so), with some characters escaped at random, and the byte offset in the
/// written form of each character of `text` plus one for its end.
fn encode(rng: &mut SplitMix64, text: &str, quoting: Quoting) -> (String, Vec<usize>) {
    let plain = |c: char| !c.is_control() || c == '\t';
    let quoting = match quoting {
        Quoting::Literal if text.chars().all(|c| plain(c) && c != '\'') => Quoting::Literal,
        Quoting::MultiLiteral if text.chars().all(|c| (plain(c) || c == '\n') && c != '\'') => Quoting::MultiLiteral,
        Quoting::MultiBasic => Quoting::MultiBasic,
        _ => Quoting::Basic,
    };
    let (open, close) = match quoting {
        Quoting::Basic => ("\"", "\""),
        Quoting::Literal => ("'", "'"),
        Quoting::MultiBasic => ("\"\"\"\n", "\"\"\""),
        Quoting::MultiLiteral => ("'''\n", "'''"),
    };
    let mut raw = open.to_string();
    let mut offsets = Vec::new();
    for c in text.chars() {
        let basic = matches!(quoting, Quoting::Basic | Quoting::MultiBasic);
        if basic && matches!(quoting, Quoting::MultiBasic) && !c.is_whitespace() && rng.chance(0.05) {
            // A line-ending backslash: drops itself, the newline and the indent.
            raw.push_str("\\\n    ");
        }
        offsets.push(raw.len());
        match c {
            '\n' if !basic || matches!(quoting, Quoting::MultiBasic) => raw.push('\n'),
            _ if !basic => raw.push(c),
            '"' => raw.push_str("\\\""),
            '\\' => raw.push_str("\\\\"),
            '\t' if rng.chance(0.5) => raw.push_str("\\t"),
            '\n' => raw.push_str("\\n"),
            c if c.is_ascii() && (!plain(c) || rng.chance(0.05)) => raw.push_str(&format!("\\x{:02X}", c as u32)),
            c if !plain(c) || rng.chance(0.05) => {
                if (c as u32) < 0x10000 && rng.chance(0.5) {
                    raw.push_str(&format!("\\u{:04X}", c as u32));
                } else {
                    raw.push_str(&format!("\\U{:08X}", c as u32));
                }
            }
            c => raw.push(c),
        }
    }
    offsets.push(raw.len());
    raw.push_str(close);
    (raw, offsets)
}

/// The character index in `text` of a (line, column) position.
fn char_index(text: &str, line: usize, column: usize) -> usize {
    text.split('\n').take(line - 1).map(|l| l.chars().count() + 1).sum::<usize>() + column - 1
}

/// (line, column) of a byte offset, computed plainly.
fn file_position(contents: &str, offset: usize) -> (usize, usize) {
    let before = &contents[..offset];
    (before.matches('\n').count() + 1, before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1)
}

#[test]
fn errors_in_a_files_strings_point_at_the_same_character_as_in_the_text() {
    let mut rng = SplitMix64::new(0x5eed_0004);
    let quotings = [Quoting::Basic, Quoting::Literal, Quoting::MultiBasic, Quoting::MultiLiteral];
    let mut compared = 0;
    for _ in 0..3_000 {
        let text = random_text(&mut rng);
        let in_scope = rng.chance(0.25);
        let quoting = rng.pick(&quotings);
        let (raw, offsets) = encode(&mut rng, &text, quoting);
        let (scope, rule) = if in_scope { (raw.as_str(), "\"when 1 > 0 then pause_idle\"") } else { ("\"all\"", raw.as_str()) };
        let prefix = format!("# generated\n[[rule]]\nname = \"r\"\nscope = {scope}\nrule = ");
        let contents = format!("{prefix}{rule}\n");
        let start = if in_scope { prefix.find("scope = ").map_or(0, |i| i + "scope = ".len()) } else { prefix.len() };
        let direct = if in_scope { parse_scope(&text).err() } else { parse_rule_text(&text).err() };
        match (parse_file(&contents), direct) {
            (Ok(rules), None) => {
                assert_eq!(rules.len(), 1);
                let got = if in_scope { rules[0].scope.to_string() } else { rules[0].source.rule.clone() };
                let want = if in_scope { parse_scope(&text).map(|s| s.to_string()).unwrap_or_default() } else { text.clone() };
                assert_eq!(got, want, "{contents:?}");
            }
            (Err(errors), Some(want)) => {
                assert_eq!(errors.len(), 1, "{contents:?}: {errors:?}");
                let got = &errors[0];
                let at = start + offsets[char_index(&text, want.line, want.column)];
                assert_eq!((got.line, got.column), file_position(&contents, at), "{contents:?}: {got} vs {want}");
                assert_eq!((&got.expected, &got.found, &got.fix), (&want.expected, &want.found, &want.fix));
                assert_eq!(got.field, if in_scope { "rules[0].scope" } else { "rules[0].rule" });
                compared += 1;
            }
            (file, direct) => panic!("{contents:?}: the file gave {file:?}, the text {direct:?}"),
        }
    }
    assert!(compared > 2_000, "only {compared} errors compared");
}
