//! Which functions a rule applies to (`all`, `function:NAME`,
//! `labels:k=v,...`) and the label selectors that scopes and the placement
//! actions share.

use super::bounds;
use super::error::{quote, suggest, Fault, ParseError};
use crate::ids::FunctionName;
use crate::validation::ValidationError;
use std::collections::BTreeMap;

const MAX_SELECTOR_PAIRS: usize = bounds::SELECTOR_PAIRS;
const MAX_LABEL_LEN: usize = bounds::LABEL_LEN;

/// The functions a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleScope {
    /// `all`: every function.
    All,
    /// `function:NAME`: one function.
    Function(FunctionName),
    /// `labels:k=v,...`: functions whose labels match every pair.
    Labels(LabelSelector),
}

/// Label pairs that must all match: keys and values are 1-63 characters of
/// `a-z A-Z 0-9 . _ / -`, at most 16 pairs. Build one with [`LabelSelector::new`]
/// to have those bounds checked; the parser always does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LabelSelector(pub BTreeMap<String, String>);

impl LabelSelector {
    /// A validated selector.
    pub fn new(pairs: BTreeMap<String, String>) -> Result<Self, ValidationError> {
        if pairs.len() > MAX_SELECTOR_PAIRS {
            return Err(ValidationError::new("labels", format!("{} pairs is too many: match on at most {MAX_SELECTOR_PAIRS} labels", pairs.len())));
        }
        for (k, v) in &pairs {
            for part in [k, v] {
                if let Some(why) = label_problem(part) {
                    return Err(ValidationError::new("labels", format!("{:?} is invalid ({why}): {LABEL_FIX}", crate::ids::truncate(part))));
                }
            }
        }
        Ok(Self(pairs))
    }

    /// True when every pair of the selector is in `labels` (an empty selector matches anything).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

const LABEL_FIX: &str = "use 1-63 letters, digits, '.', '_', '/' or '-'";

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')
}

fn label_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some("empty")
    } else if s.len() > MAX_LABEL_LEN {
        Some("too long")
    } else if !s.chars().all(is_label_char) {
        Some("bad character")
    } else {
        None
    }
}

/// Parses a scope: `all`, `function:NAME` or `labels:k=v[,k=v]`; spaces
/// around the parts are allowed.
pub fn parse_scope(text: &str) -> Result<RuleScope, ParseError> {
    scope_fault(text).map_err(|f| f.locate("scope", text))
}

const SCOPE_FIX: &str = "use `all`, `function:NAME` or `labels:key=value[,key=value]`";

/// [`parse_scope`] with the error at a byte offset of `text`.
pub(super) fn scope_fault(text: &str) -> Result<RuleScope, Fault> {
    let start = skip_ws(text, 0);
    let head_len = text[start..].find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(text.len() - start);
    let head = &text[start..start + head_len];
    let after = skip_ws(text, start + head_len);
    match head {
        "" if start == text.len() => Err(Fault::new(start, "a scope", "an empty scope", SCOPE_FIX)),
        "all" => {
            expect_end(text, after)?;
            Ok(RuleScope::All)
        }
        "function" => {
            let at = expect_colon(text, after, "function:NAME, e.g. function:resize")?;
            let len = text[at..].find(char::is_whitespace).unwrap_or(text.len() - at);
            let name = &text[at..at + len];
            let function = FunctionName::new(name).map_err(|e| {
                let found = if name.is_empty() { found_at(text, at) } else { quote(name) };
                Fault::new(at, "a function name", found, e.message)
            })?;
            expect_end(text, skip_ws(text, at + len))?;
            Ok(RuleScope::Function(function))
        }
        "labels" => {
            let at = expect_colon(text, after, "labels:key=value, e.g. labels:tier=batch")?;
            let (selector, _) = parse_selector(text, at, None, "the end of the scope")?;
            Ok(RuleScope::Labels(selector))
        }
        _ => {
            let found = if head.is_empty() { found_at(text, start) } else { quote(head) };
            Err(Fault::new(start, "`all`, `function:` or `labels:`", found, suggest(head, &["all", "function", "labels"], SCOPE_FIX.into())))
        }
    }
}

fn expect_colon(text: &str, at: usize, example: &str) -> Result<usize, Fault> {
    if text[at..].starts_with(':') {
        Ok(skip_ws(text, at + 1))
    } else {
        Err(Fault::new(at, "`:`", found_at(text, at), format!("write {example}")))
    }
}

fn expect_end(text: &str, at: usize) -> Result<(), Fault> {
    if at == text.len() {
        Ok(())
    } else {
        Err(Fault::new(at, "the end of the scope", found_at(text, at), format!("remove what follows; {SCOPE_FIX}")))
    }
}

/// Parses `k=v[, k=v]` starting at byte `pos` of `text`. With `close`
/// (`')'` in an action) the selector ends at that character, which is
/// consumed; without, at the end of the text. Returns the selector and the
/// offset after it. `end` names the end of the text for messages.
pub(super) fn parse_selector(text: &str, mut pos: usize, close: Option<char>, end: &str) -> Result<(LabelSelector, usize), Fault> {
    let mut pairs = BTreeMap::new();
    let found = |at: usize| {
        if at >= text.len() {
            end.to_string()
        } else {
            found_at(text, at)
        }
    };
    loop {
        pos = skip_ws(text, pos);
        let key_at = pos;
        let key = take_label(text, pos);
        if key.is_empty() {
            return Err(Fault::new(pos, "a label key such as zone", found(pos), "write labels as key=value, e.g. zone=eu-west"));
        }
        check_label_len(key, key_at, "key")?;
        pos = skip_ws(text, pos + key.len());
        if !text[pos..].starts_with('=') {
            return Err(Fault::new(pos, format!("`=` after the label key `{key}`"), found(pos), "write labels as key=value, e.g. zone=eu-west"));
        }
        pos = skip_ws(text, pos + 1);
        let value_at = pos;
        let value = take_label(text, pos);
        if value.is_empty() {
            return Err(Fault::new(pos, format!("a value for the label `{key}`"), found(pos), format!("write {key}=VALUE; {LABEL_FIX}")));
        }
        check_label_len(value, value_at, "value")?;
        pos = skip_ws(text, pos + value.len());
        if pairs.contains_key(key) {
            return Err(Fault::new(key_at, "each label key once", quote(key), format!("`{key}` appears twice and a node or function has one value per key: keep one")));
        }
        if pairs.len() == MAX_SELECTOR_PAIRS {
            return Err(Fault::new(key_at, format!("at most {MAX_SELECTOR_PAIRS} labels"), quote(key), "match on fewer labels"));
        }
        pairs.insert(key.to_string(), value.to_string());
        match text[pos..].chars().next() {
            Some(',') => pos += 1,
            Some(c) if Some(c) == close => return Ok((LabelSelector(pairs), pos + c.len_utf8())),
            None if close.is_none() => return Ok((LabelSelector(pairs), pos)),
            _ => {
                let expected = match close {
                    Some(c) => format!("`,` and another label, or `{c}`"),
                    None => "`,` and another label, or the end".to_string(),
                };
                let fix = match close {
                    Some(c) => format!("separate labels with `,` and close the list with `{c}`; {LABEL_FIX}"),
                    None => format!("separate labels with `,`; {LABEL_FIX}"),
                };
                return Err(Fault::new(pos, expected, found(pos), fix));
            }
        }
    }
}

fn check_label_len(s: &str, at: usize, what: &str) -> Result<(), Fault> {
    if s.len() > MAX_LABEL_LEN {
        return Err(Fault::new(at, format!("a label {what} of at most {MAX_LABEL_LEN} characters"), quote(s), format!("shorten the label {what}")));
    }
    Ok(())
}

fn take_label(text: &str, pos: usize) -> &str {
    let len = text[pos..].find(|c: char| !is_label_char(c)).unwrap_or(text.len() - pos);
    &text[pos..pos + len]
}

fn skip_ws(text: &str, pos: usize) -> usize {
    pos + text[pos..].find(|c: char| !c.is_whitespace()).unwrap_or(text.len() - pos)
}

/// The character at `at`, quoted, or "the end" past it.
fn found_at(text: &str, at: usize) -> String {
    match text[at..].chars().next() {
        Some(c) => quote(&c.to_string()),
        None => "the end".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn parses_scopes() {
        assert_eq!(parse_scope("all").unwrap(), RuleScope::All);
        assert_eq!(parse_scope("  all ").unwrap(), RuleScope::All);
        assert_eq!(parse_scope("function:resize").unwrap(), RuleScope::Function(FunctionName::new("resize").unwrap()));
        assert_eq!(parse_scope("labels:tier=batch").unwrap(), RuleScope::Labels(sel(&[("tier", "batch")])));
        assert_eq!(parse_scope("labels: tier = batch , example.com/team=a_b").unwrap(), RuleScope::Labels(sel(&[("tier", "batch"), ("example.com/team", "a_b")])));
    }

    #[test]
    fn refuses_bad_scopes_with_positions() {
        let cases: &[(&str, usize, &str, &str)] = &[
            ("", 1, "a scope", "function:NAME"),
            ("al", 1, "`all`", "did you mean `all`?"),
            ("everything", 1, "`all`", "labels:key=value"),
            ("all x", 5, "the end of the scope", "remove"),
            ("function:", 10, "a function name", "lowercase"),
            ("function:Resize", 10, "a function name", "lowercase"),
            ("function resize", 10, "`:`", "function:NAME"),
            ("labels:", 8, "a label key", "key=value"),
            ("labels:a", 9, "`=`", "key=value"),
            ("labels:a=", 10, "a value", "a=VALUE"),
            ("labels:a=b,a=c", 12, "each label key once", "twice"),
            ("labels:a=b;c=d", 11, "`,`", "separate"),
            ("labels:a=é", 10, "a value", "letters"),
        ];
        for (text, column, expected, fix) in cases {
            let e = parse_scope(text).unwrap_err();
            assert_eq!(e.field, "scope");
            assert_eq!((e.line, e.column), (1, *column), "{text:?}: {e}");
            assert!(e.expected.contains(expected), "{text:?}: {e}");
            assert!(e.fix.contains(fix), "{text:?}: {e}");
        }
        let long = format!("labels:a={}", "v".repeat(64));
        assert!(parse_scope(&long).unwrap_err().expected.contains("at most 63"));
        let many: Vec<String> = (0..17).map(|i| format!("k{i}=v")).collect();
        assert!(parse_scope(&format!("labels:{}", many.join(","))).unwrap_err().expected.contains("at most 16"));
    }

    #[test]
    fn selectors_match_every_pair() {
        let labels: BTreeMap<String, String> = [("zone", "eu"), ("disk", "ssd")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(sel(&[("zone", "eu")]).matches(&labels));
        assert!(sel(&[("zone", "eu"), ("disk", "ssd")]).matches(&labels));
        assert!(!sel(&[("zone", "eu"), ("disk", "hdd")]).matches(&labels));
        assert!(!sel(&[("gpu", "yes")]).matches(&labels));
        assert!(sel(&[]).matches(&labels));
        assert!(LabelSelector::new(sel(&[("a", "b")]).0).is_ok());
        assert!(LabelSelector::new(sel(&[("a", "")]).0).is_err());
        assert!(LabelSelector::new(sel(&[("a b", "c")]).0).is_err());
    }
}
