//! Rule errors: where (line and column), what was expected, what was found
//! and how to fix it; plus the helpers that build them (positions,
//! quoting, "did you mean").

use crate::validation::ValidationError;
use serde::Serialize;
use std::fmt;

/// A rule, scope or rule file that was refused. Every error has a position
/// (`line` and `column` from 1, columns counted in characters), a non-empty
/// `expected` and a non-empty `fix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct ParseError {
    /// What the position is in: `"rule"`, `"scope"`, `"name"`, `"priority"`,
    /// `"rules[2].rule"` in a file, or `"file"` for the file's TOML syntax.
    pub field: String,
    pub line: usize,
    pub column: usize,
    /// What would have been accepted there, e.g. `a duration such as 30s`.
    pub expected: String,
    /// What was there, quoted when it is text from the input.
    pub found: String,
    /// How to fix it.
    pub fix: String,
}

impl ParseError {
    /// The error without its field:
    /// `line 1, column 31: expected a duration such as 30s, found "30": add a unit: s, m or h`.
    pub fn message(&self) -> String {
        format!("line {}, column {}: expected {}, found {}: {}", self.line, self.column, self.expected, self.found, self.fix)
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message())
        } else {
            write!(f, "{}: {}", self.field, self.message())
        }
    }
}

/// So the HTTP API answers a bad rule with its usual 400 body.
impl From<ParseError> for ValidationError {
    fn from(e: ParseError) -> Self {
        let field = if e.field.is_empty() { "rule".to_string() } else { e.field.clone() };
        ValidationError::new(field, e.message())
    }
}

/// An error at a byte offset of the text being parsed, before it is turned
/// into a line and column: a rule text's offsets become file positions
/// when the text came from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fault {
    /// Byte offset in the parsed text; may equal its length (the end).
    pub at: usize,
    pub expected: String,
    pub found: String,
    pub fix: String,
}

impl Fault {
    pub fn new(at: usize, expected: impl Into<String>, found: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { at, expected: expected.into(), found: found.into(), fix: fix.into() }
    }

    /// The error at its own offset in `text`.
    pub fn locate(self, field: &str, text: &str) -> ParseError {
        let at = self.at;
        self.locate_at(field, text, at)
    }

    /// The error at byte offset `at` of `text` (the file it came from).
    pub fn locate_at(self, field: &str, text: &str, at: usize) -> ParseError {
        let (line, column) = line_col(text, at);
        ParseError { field: field.to_string(), line, column, expected: self.expected, found: self.found, fix: self.fix }
    }
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
/// An offset inside a character or past the end is moved back onto one, so
/// this never panics.
pub(super) fn line_col(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// "line 2, column 5" or, for one-line text, "column 5": how a fix refers to
/// another place in the same text.
pub(super) fn describe_pos(text: &str, at: usize) -> String {
    let (line, column) = line_col(text, at);
    if text.contains('\n') {
        format!("line {line}, column {column}")
    } else {
        format!("column {column}")
    }
}

/// Input text for a message: quoted, escaped, at most 40 characters.
pub(super) fn quote(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() > MAX {
        let head: String = s.chars().take(MAX).collect();
        format!("{:?}", format!("{head}..."))
    } else {
        format!("{s:?}")
    }
}

/// `a, b, c or d`, each in backticks.
pub(super) fn one_of<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = items.into_iter().map(|s| format!("`{s}`")).collect();
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// The candidate `word` was probably meant to be: the same but for case, or
/// within a small edit distance, or (for dotted names such as signals) the
/// one whose last part is `word`.
pub(super) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    // Past this length a word is not a typo of any candidate; also bounds the work.
    if word.is_empty() || word.chars().count() > 40 {
        return None;
    }
    let lower = word.to_lowercase();
    let len = lower.chars().count();
    let mut best: Option<(usize, &'a str)> = None;
    for &c in candidates {
        let c_len = c.chars().count();
        let allowed = match c_len {
            0..=4 => 1,
            5..=10 => 2,
            _ => 3,
        };
        // The length difference is a lower bound on the distance: skip the work.
        if len.abs_diff(c_len) > allowed {
            continue;
        }
        let d = distance(&lower, c);
        if d <= allowed && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c).or_else(|| candidates.iter().copied().find(|c| c.rsplit('.').next() == Some(lower.as_str())))
}

/// `did you mean `x`?` or, when nothing is close, `otherwise`.
pub(super) fn suggest(word: &str, candidates: &[&str], otherwise: String) -> String {
    match did_you_mean(word, candidates) {
        Some(c) if c == word.to_lowercase() => {
            format!("did you mean `{c}`? Words in rules are lowercase")
        }
        Some(c) => format!("did you mean `{c}`?"),
        None => otherwise,
    }
}

/// Edit distance with adjacent transpositions (optimal string alignment).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * width + j] + 1).min(d[i * width + j - 1] + 1).min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = v;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters_and_lines() {
        assert_eq!(line_col("abc", 0), (1, 1));
        assert_eq!(line_col("héllo", 3), (1, 3));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
        assert_eq!(line_col("é", 1), (1, 1));
    }

    #[test]
    fn suggestions_are_close_or_absent() {
        let aggs = ["avg", "min", "max", "p95", "last", "rate"];
        assert_eq!(did_you_mean("avgg", &aggs), Some("avg"));
        assert_eq!(did_you_mean("AVG", &aggs), Some("avg"));
        assert_eq!(did_you_mean("xyzzy", &aggs), None);
        assert_eq!(did_you_mean("function.inflght", &["function.inflight", "function.queue"]), Some("function.inflight"));
        assert_eq!(did_you_mean("inflight", &["function.inflight", "function.queue"]), Some("function.inflight"));
        assert_eq!(distance("tagret", "target"), 1);
    }

    #[test]
    fn converts_to_a_validation_error() {
        let e = ParseError { field: "rule".into(), line: 1, column: 31, expected: "a duration such as 30s".into(), found: "\"30\"".into(), fix: "add a unit: s, m or h".into() };
        assert_eq!(e.to_string(), "rule: line 1, column 31: expected a duration such as 30s, found \"30\": add a unit: s, m or h");
        let v: ValidationError = e.into();
        assert_eq!(v.field, "rule");
        assert!(v.message.starts_with("line 1, column 31"));
    }
}
