//! Rule files: TOML with one `[[rule]]` table per rule. Errors point into
//! the file: TOML syntax at its line and column, a wrong key at the key, a
//! bad rule text at the offending character inside the string.

use super::error::{did_you_mean, line_col, quote, Fault, ParseError};
use super::{bounds, build, Part, Rule, RuleSource};
use std::collections::HashMap;
use std::ops::Range;
use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;

const KEYS: &[&str] = &["name", "scope", "priority", "rule"];
const TABLE_FIX: &str = "write each rule as a `[[rule]]` table with `name` and `rule`, and optionally `scope` and `priority`";

/// A key and its value in a parsed TOML table.
type Entry<'t, 'i> = (&'t Spanned<DeString<'i>>, &'t Spanned<DeValue<'i>>);

/// Reads a rule file: an array of `[[rule]]` tables, each with `name`,
/// `rule` and optionally `scope` (default `"all"`) and `priority` (default 0).
/// An empty file holds no rules. On failure, returns the first error of
/// every rule that has one (and any file-level errors), in file order.
pub fn parse_file(contents: &str) -> Result<Vec<Rule>, Vec<ParseError>> {
    let doc = match DeTable::parse(contents) {
        Ok(doc) => doc,
        Err(e) => return Err(vec![syntax_error(contents, &e)]),
    };
    let mut errors = Vec::new();
    let tables = rule_tables(contents, doc.get_ref(), &mut errors);
    let mut rules = Vec::new();
    // Each name and the file offset of its first use.
    let mut names: HashMap<String, usize> = HashMap::new();
    for (index, table) in tables.iter().enumerate() {
        let field = |key: &str| match key {
            "" => format!("rules[{index}]"),
            key => format!("rules[{index}].{key}"),
        };
        if index == bounds::RULES_PER_FILE {
            let expected = format!("at most {} rules in a file", bounds::RULES_PER_FILE);
            let found = format!("{} rules", tables.len());
            let fix = "split the rules over several files, or merge similar rules";
            let fault = Fault::new(0, expected, found, fix);
            errors.push(fault.locate_at(&field(""), contents, table.span().start));
            break;
        }
        match rule_from_table(contents, table) {
            Ok((rule, name_span)) => match names.get(rule.name.as_str()) {
                Some(first) => {
                    let (line, _) = line_col(contents, *first);
                    let fix = format!("the rule at line {line} already has this name: give each rule its own name");
                    let expected = "a name not used by another rule";
                    let fault = Fault::new(0, expected, quote(rule.name.as_str()), fix);
                    errors.push(fault.locate_at(&field("name"), contents, name_span.start));
                }
                None => {
                    names.insert(rule.name.as_str().to_string(), name_span.start);
                    rules.push(rule);
                }
            },
            Err(e) => errors.push(e.fault.locate_at(&field(&e.key), contents, e.at)),
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(errors)
    }
}

/// The `[[rule]]` tables of a file's top level; anything else there is an error.
fn rule_tables<'t, 'i>(contents: &str, doc: &'t DeTable<'i>, errors: &mut Vec<ParseError>) -> Vec<&'t Spanned<DeValue<'i>>> {
    let mut tables = Vec::new();
    for (key, value) in in_file_order(doc) {
        let at = key.span().start;
        match (key.get_ref().as_ref(), value.get_ref()) {
            ("rule", DeValue::Array(items)) => tables.extend(items.iter()),
            ("rule", other) => {
                let found = match other {
                    DeValue::Table(_) => "a single `[rule]` table".to_string(),
                    other => a_type(other),
                };
                let fault = Fault::new(0, "`[[rule]]` tables", found, TABLE_FIX);
                errors.push(fault.locate_at("rule", contents, value.span().start));
            }
            (name, _) => {
                let fix = match did_you_mean(name, &["rule"]) {
                    Some(_) => format!("did you mean `[[rule]]`? {TABLE_FIX}"),
                    None => format!("remove `{name}`; {TABLE_FIX}"),
                };
                let fault = Fault::new(0, "`[[rule]]` tables only", quote(name), fix);
                errors.push(fault.locate_at(name, contents, at));
            }
        }
    }
    tables
}

/// A table's entries in the order they are in the file (the table keeps them by key).
fn in_file_order<'t, 'i>(table: &'t DeTable<'i>) -> Vec<Entry<'t, 'i>> {
    let mut entries: Vec<Entry<'t, 'i>> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

/// A TOML syntax error, at its place in the file.
fn syntax_error(contents: &str, e: &toml::de::Error) -> ParseError {
    let at = e.span().map_or(0, |s| s.start);
    let message = e.message();
    let (what, expected) = match message.split_once(", expected ") {
        Some((what, "nothing")) => (what, "the end of the line".to_string()),
        Some((what, expected)) => (what, expected.to_string()),
        None => (message, "valid TOML".to_string()),
    };
    let found = match e.span().map(|s| contents.get(s).unwrap_or_default()).filter(|s| !s.is_empty()) {
        Some(text) => quote(text),
        None => match contents.get(at..).and_then(|rest| rest.chars().next()) {
            None => "the end of the file".to_string(),
            Some('\n' | '\r') => "the end of the line".to_string(),
            Some(c) => quote(&c.to_string()),
        },
    };
    let fix = if what == "duplicate key" {
        "each key may appear once per table: remove the repeated key, or start the next rule with `[[rule]]`".to_string()
    } else {
        format!("fix the TOML syntax ({what}); strings are quoted, e.g. rule = \"when ... then ...\"")
    };
    Fault::new(at, expected, found, fix).locate("file", contents)
}

/// An error in one `[[rule]]` table: the key it is under (empty for the
/// table itself), its file offset and what is wrong.
struct TableError {
    key: String,
    at: usize,
    fault: Fault,
}

impl TableError {
    fn new(key: &str, at: usize, fault: Fault) -> Self {
        Self { key: key.to_string(), at, fault }
    }
}

/// A value of a rule table, with its span.
type Value<'t, 'i> = &'t Spanned<DeValue<'i>>;

/// A `[[rule]]` table as a validated rule and the span of its name, or the
/// table's first error.
fn rule_from_table(contents: &str, table: &Spanned<DeValue<'_>>) -> Result<(Rule, Range<usize>), TableError> {
    let start = table.span().start;
    let DeValue::Table(entries) = table.get_ref() else {
        let found = a_type(table.get_ref());
        let fault = Fault::new(0, "a table with `name` and `rule`", found, TABLE_FIX);
        return Err(TableError::new("", start, fault));
    };
    let [name, scope, priority, rule] = typed_values(entries)?;
    let (Some(name), Some(rule)) = (name, rule) else {
        let (missing, example) = match name {
            None => ("name", "name = \"burst\""),
            Some(_) => ("rule", "rule = \"when ... then ...\""),
        };
        let fault = Fault::new(0, format!("a `{missing}` key"), format!("a rule without `{missing}`"), format!("add `{example}` to this table"));
        return Err(TableError::new(missing, start, fault));
    };
    let text = |v: Value<'_, '_>| v.get_ref().as_str().unwrap_or_default().to_string();
    let source = RuleSource { name: text(name), scope: scope.map_or_else(|| "all".to_string(), text), priority: priority.map_or(Ok(0), priority_value)?, rule: text(rule) };
    build(source).map(|rule| (rule, name.span())).map_err(|(part, fault)| {
        let value = match part {
            Part::Name => Some(name),
            Part::Scope => scope,
            Part::Priority => priority,
            Part::Rule => Some(rule),
        };
        let at = match value {
            Some(v) if part == Part::Priority => v.span().start,
            Some(v) => string_offset(contents, v, fault.at),
            // The default scope or priority, which is always valid.
            None => start,
        };
        TableError::new(part.field(), at, fault)
    })
}

/// The table's values in the order of `KEYS`, each of the right type; an
/// unknown key or a wrong type is an error at that key or value.
fn typed_values<'t, 'i>(entries: &'t DeTable<'i>) -> Result<[Option<Value<'t, 'i>>; 4], TableError> {
    let mut values = [None; 4];
    for (key, value) in in_file_order(entries) {
        let name = key.get_ref().as_ref();
        let Some(slot) = KEYS.iter().position(|k| *k == name) else {
            let fix = match did_you_mean(name, KEYS) {
                Some(k) => format!("did you mean `{k}`?"),
                None => format!("remove `{name}`: a rule has only `name`, `scope`, `priority` and `rule`"),
            };
            let expected = "`name`, `scope`, `priority` or `rule`";
            let fault = Fault::new(0, expected, quote(name), fix);
            return Err(TableError::new(name, key.span().start, fault));
        };
        let (fits, expected, fix) = match KEYS[slot] {
            "priority" => (matches!(value.get_ref(), DeValue::Integer(_)), "an integer", "write a whole number from -1000 to 1000, e.g. priority = 10"),
            "scope" => (value.get_ref().is_str(), "a string", "quote it: scope = \"all\", \"function:NAME\" or \"labels:key=value\""),
            "name" => (value.get_ref().is_str(), "a string", "quote it: name = \"burst\""),
            _ => (value.get_ref().is_str(), "a string", "quote it: rule = \"when ... then ...\""),
        };
        if !fits {
            let fault = Fault::new(0, expected, a_type(value.get_ref()), fix);
            return Err(TableError::new(KEYS[slot], value.span().start, fault));
        }
        values[slot] = Some(value);
    }
    Ok(values)
}

/// A priority that fits an `i32`; the range check is `build`'s.
fn priority_value(value: Value<'_, '_>) -> Result<i32, TableError> {
    let parsed = match value.get_ref() {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok().and_then(|v| i32::try_from(v).ok()),
        _ => None,
    };
    parsed.ok_or_else(|| {
        let (lo, hi) = bounds::PRIORITY;
        let found = value.get_ref().as_integer().map_or_else(|| a_type(value.get_ref()), |i| quote(i.as_str()));
        let fault = Fault::new(0, format!("a priority from {lo} to {hi}"), found, format!("use a priority from {lo} to {hi}"));
        TableError::new("priority", value.span().start, fault)
    })
}

/// "a string", "an integer": a TOML value's type for messages.
fn a_type(value: &DeValue<'_>) -> String {
    let name = value.type_str();
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {name}")
}

/// The file offset of byte `at` of a string value's contents. Escapes and
/// line-ending backslashes are followed, so the offset lands on the
/// character as written; if the written form cannot be matched with the
/// value, the string's start.
fn string_offset(contents: &str, value: &Spanned<DeValue<'_>>, at: usize) -> usize {
    let span = value.span();
    let (Some(raw), Some(decoded)) = (contents.get(span.clone()), value.get_ref().as_str()) else {
        return span.start;
    };
    match map_string(raw, decoded) {
        Some(map) => {
            let i = map.partition_point(|(d, _)| *d <= at).saturating_sub(1);
            span.start + map.get(i).map_or(0, |(_, r)| *r)
        }
        None => span.start,
    }
}

/// For a TOML string as written (`raw`, with its quotes) and its value,
/// pairs of (byte in the value, byte in `raw`) for each character of the
/// value, plus one for the end. `None` if they do not match up.
fn map_string(raw: &str, decoded: &str) -> Option<Vec<(usize, usize)>> {
    let (quote_len, basic, multiline) = if raw.starts_with("\"\"\"") {
        (3, true, true)
    } else if raw.starts_with("'''") {
        (3, false, true)
    } else if raw.starts_with('"') {
        (1, true, false)
    } else if raw.starts_with('\'') {
        (1, false, false)
    } else {
        return None;
    };
    if !raw.ends_with(&raw[..quote_len]) {
        return None;
    }
    let end = raw.len().checked_sub(quote_len).filter(|e| *e >= quote_len)?;
    let mut i = quote_len;
    if multiline {
        // A newline right after the opening quotes is not part of the value.
        let body = raw.get(i..end)?;
        if body.starts_with("\r\n") {
            i += 2;
        } else if body.starts_with('\n') {
            i += 1;
        }
    }
    let mut value = decoded.char_indices().peekable();
    let mut map = Vec::new();
    while i < end {
        let rest = raw.get(i..end)?;
        let c = rest.chars().next()?;
        if basic && c == '\\' {
            let next = rest[1..].chars().next()?;
            let (len, ch) = match next {
                'b' => (2, Some('\u{8}')),
                't' => (2, Some('\t')),
                'n' => (2, Some('\n')),
                'f' => (2, Some('\u{c}')),
                'r' => (2, Some('\r')),
                'e' => (2, Some('\u{1b}')),
                '"' => (2, Some('"')),
                '\\' => (2, Some('\\')),
                'x' => (4, hex_char(rest.get(2..4)?)),
                'u' => (6, hex_char(rest.get(2..6)?)),
                'U' => (10, hex_char(rest.get(2..10)?)),
                // A line-ending backslash drops the newline and the whitespace after it.
                ' ' | '\t' | '\r' | '\n' if multiline => {
                    let skip = rest[1..].find(|c: char| !matches!(c, ' ' | '\t' | '\r' | '\n')).map_or(rest.len(), |n| n + 1);
                    (skip, None)
                }
                _ => return None,
            };
            if let Some(ch) = ch {
                let (d, got) = value.next()?;
                if got != ch {
                    return None;
                }
                map.push((d, i));
            } else if len == 0 {
                return None;
            }
            i += len;
            continue;
        }
        if c == '\r' && rest.starts_with("\r\n") && value.peek().map(|(_, v)| *v) == Some('\n') {
            // A newline written as CRLF may be read as LF.
            i += 1;
            continue;
        }
        let (d, got) = value.next()?;
        if got != c {
            return None;
        }
        map.push((d, i));
        i += c.len_utf8();
    }
    if value.next().is_some() {
        return None;
    }
    map.push((decoded.len(), end));
    Some(map)
}

fn hex_char(digits: &str) -> Option<char> {
    u32::from_str_radix(digits, 16).ok().and_then(char::from_u32)
}

#[cfg(test)]
mod tests {
    use super::map_string;

    #[test]
    fn maps_string_values_to_their_written_form() {
        let offsets = |raw: &str, value: &str| map_string(raw, value).map(|m| m.into_iter().map(|(_, r)| r).collect::<Vec<_>>());
        assert_eq!(offsets("'ab'", "ab"), Some(vec![1, 2, 3]));
        assert_eq!(offsets("\"a\\tb\"", "a\tb"), Some(vec![1, 2, 4, 5]));
        assert_eq!(offsets("\"\\u00e9x\"", "éx"), Some(vec![1, 7, 8]));
        assert_eq!(offsets("\"\"\"\nab\"\"\"", "ab"), Some(vec![4, 5, 6]));
        assert_eq!(offsets("\"\"\"a\\\n   b\"\"\"", "ab"), Some(vec![3, 9, 10]));
        assert_eq!(offsets("'''\r\na\r\nb'''", "a\nb"), Some(vec![5, 7, 8, 9]));
        assert_eq!(offsets("'ab'", "xy"), None);
        assert_eq!(offsets("\"", ""), None);
    }
}
