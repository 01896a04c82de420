//! Tests of rule files: good files, and errors at their place in the file
//! (TOML syntax, keys, types, the text inside a rule's string, duplicates).

use super::*;

/// The one error of a file that must fail with exactly one.
fn one_error(contents: &str) -> ParseError {
    let mut errors = parse_file(contents).expect_err("the file should be refused");
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors.remove(0)
}

#[track_caller]
fn assert_at(e: &ParseError, field: &str, line: usize, column: usize, expected: &str, fix: &str) {
    assert_eq!((e.field.as_str(), e.line, e.column), (field, line, column), "{e}");
    assert!(e.expected.contains(expected), "expected {expected:?} in {e}");
    assert!(e.fix.contains(fix), "fix {fix:?} in {e}");
}

#[test]
fn reads_a_good_file() {
    let contents = r#"
# Rules for the web tier.
[[rule]]
name = "burst"
scope = "labels:tier=web"
priority = 10
rule = "when avg(function.inflight, 30s) > 0.8 * target for 10s then scale_out(2) cooldown 60s"

[[rule]]
name = 'calm'
rule = '''
when avg(function.inflight, 5m) < 0.3 * target
then scale_in(1)
cooldown 5m'''

[[rule]]
name = "resize-warm"
scope = "function:resize"
priority = -5
rule = """
when rate(function.cold_starts, 1m) > 0.1 \
  then prewarm(2)"""
"#;
    let rules = parse_file(contents).unwrap_or_else(|e| panic!("{e:?}"));
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["burst", "calm", "resize-warm"]);
    assert_eq!(rules[0].priority, 10);
    assert_eq!(rules[0].scope.to_string(), "labels:tier=web");
    assert_eq!((rules[1].scope.clone(), rules[1].priority), (RuleScope::All, 0));
    assert_eq!(rules[1].to_string(), "when avg(function.inflight, 5m) < 0.3 * target then scale_in(1) cooldown 5m");
    assert_eq!(rules[2].priority, -5);
    assert_eq!(rules[2].actions, vec![Action::Prewarm(2)]);
    assert_eq!(rules[2].source.rule, "when rate(function.cold_starts, 1m) > 0.1 then prewarm(2)");
}

#[test]
fn an_empty_file_holds_no_rules() {
    assert_eq!(parse_file("").unwrap(), vec![]);
    assert_eq!(parse_file("# nothing yet\n\n").unwrap(), vec![]);
}

#[test]
fn toml_syntax_errors_are_at_their_line_and_column() {
    let e = one_error("[[rule]]\nname = \"burst\"\nrule = \"when 1 > 0 then pause_idle\nname = \"x\"\n");
    assert_at(&e, "file", 3, 35, "`\"`", "TOML");
    let e = one_error("[[rule]]\nname = = \"burst\"\n");
    assert_at(&e, "file", 2, 8, "the end of the line", "TOML");
    let e = one_error("[[rule]]\nname = \"a\"\nname = \"b\"\nrule = \"when 1 > 0 then pause_idle\"\n");
    assert_at(&e, "file", 3, 1, "", "once per table");
    assert!(!e.expected.is_empty());
}

#[test]
fn unknown_keys_are_refused_at_the_key() {
    let e = one_error("[[rule]]\nname = \"burst\"\n  nmae = \"x\"\nrule = \"when 1 > 0 then pause_idle\"\n");
    assert_at(&e, "rules[0].nmae", 3, 3, "`name`, `scope`, `priority` or `rule`", "did you mean `name`?");
    let e = one_error("[[rule]]\nname = \"burst\"\nrule = \"when 1 > 0 then pause_idle\"\nreplicas = 3\n");
    assert_at(&e, "rules[0].replicas", 4, 1, "`name`", "remove `replicas`");
    let e = one_error("title = \"mine\"\n");
    assert_at(&e, "title", 1, 1, "`[[rule]]` tables only", "remove `title`");
    let e = one_error("[[rules]]\nname = \"a\"\n");
    assert_at(&e, "rules", 1, 3, "`[[rule]]` tables only", "did you mean `[[rule]]`?");
}

#[test]
fn the_shape_and_types_of_tables_are_checked() {
    let e = one_error("[rule]\nname = \"a\"\nrule = \"when 1 > 0 then pause_idle\"\n");
    assert_at(&e, "rule", 1, 1, "`[[rule]]` tables", "[[rule]]");
    let e = one_error("[[rule]]\nname = \"a\"\n");
    assert_at(&e, "rules[0].rule", 1, 1, "a `rule` key", "add `rule = ");
    let e = one_error("[[rule]]\nrule = \"when 1 > 0 then pause_idle\"\n");
    assert_at(&e, "rules[0].name", 1, 1, "a `name` key", "add `name = ");
    let e = one_error("[[rule]]\nname = \"a\"\npriority = \"high\"\nrule = \"when 1 > 0 then pause_idle\"\n");
    assert_at(&e, "rules[0].priority", 3, 12, "an integer", "-1000 to 1000");
    let e = one_error("[[rule]]\nname = 7\nrule = \"when 1 > 0 then pause_idle\"\n");
    assert_at(&e, "rules[0].name", 2, 8, "a string", "quote it");
    assert_eq!(e.found, "an integer");
    let e = one_error("[[rule]]\nname = \"a\"\npriority = 5000\nrule = \"when 1 > 0 then pause_idle\"\n");
    assert_at(&e, "rules[0].priority", 3, 12, "a priority from -1000 to 1000", "higher priority");
    let e = one_error("[[rule]]\nname = \"a\"\npriority = 99999999999\nrule = \"when 1 > 0 then pause_idle\"\n");
    assert_at(&e, "rules[0].priority", 3, 12, "a priority from -1000 to 1000", "-1000 to 1000");
    let e = one_error("rule = [1]\n");
    assert_at(&e, "rules[0]", 1, 9, "a table", "[[rule]]");
}

#[test]
fn a_bad_rule_is_reported_at_its_token_in_the_file() {
    let contents = "# Scaling rules.\n[[rule]]\nname = \"burst\"\nrule = \"when avg(function.inflight, 30s) > 0.8 * target then scale_out(2)\"\n\n[[rule]]\nrule = \"when avg(function.inflight, 30) > 0.8 * target then scale_in(1)\"\nname = \"calm\"\n";
    let e = one_error(contents);
    assert_at(&e, "rules[1].rule", 7, 37, "a duration such as 30s", "add a unit");
    assert_eq!(e.found, "\"30\"");

    // Escapes before the bad token are followed: `\t` is two characters in the file.
    let e = one_error("[[rule]]\nname = \"a\"\nrule = \"when\\tavg(function.inflght, 30s) > 1 then pause_idle\"\n");
    assert_at(&e, "rules[0].rule", 3, 19, "a signal", "did you mean `function.inflight`?");
    let e = one_error("[[rule]]\nname = \"a\"\nrule = \"when\\u0020avg(function.inflght, 30s) > 1 then pause_idle\"\n");
    assert_at(&e, "rules[0].rule", 3, 23, "a signal", "did you mean");

    // Inside a multi-line string, the line is the file's.
    let e = one_error("[[rule]]\nname = \"a\"\nrule = \"\"\"\nwhen avg(host.cpu, 1m) > 80\n  then scale_out(0)\"\"\"\n");
    assert_at(&e, "rules[0].rule", 5, 18, "a whole number from 1 to 1000", "scale_out(N)");
    let e = one_error("[[rule]]\nname = \"a\"\nrule = '''\r\nwhen avg(host.cpu, 1m) > 80\r\n  then scale_out(0)'''\r\n");
    assert_at(&e, "rules[0].rule", 5, 18, "a whole number from 1 to 1000", "scale_out(N)");

    // The end of the text is the closing quote.
    let e = one_error("[[rule]]\nname = \"a\"\nrule = \"when 1 > 0 then\"\n");
    assert_at(&e, "rules[0].rule", 3, 24, "an action", "scale_out(1)");

    // Names and scopes too.
    let e = one_error("[[rule]]\nname = \"Burst\"\nrule = \"when 1 > 0 then pause_idle\"\n");
    assert_at(&e, "rules[0].name", 2, 9, "a rule name", "lowercase");
    let e = one_error("[[rule]]\nname = \"a\"\nscope = \"labels:tier=web,tier=api\"\nrule = \"when 1 > 0 then pause_idle\"\n");
    assert_at(&e, "rules[0].scope", 3, 26, "each label key once", "appears twice");
}

#[test]
fn duplicate_names_are_refused_at_the_second() {
    let contents = "[[rule]]\nname = \"burst\"\nrule = \"when 1 > 0 then pause_idle\"\n[[rule]]\nname = \"burst\"\nrule = \"when 2 > 0 then pause_idle\"\n";
    let e = one_error(contents);
    assert_at(&e, "rules[1].name", 5, 8, "a name not used by another rule", "line 2");
}

#[test]
fn every_bad_rule_is_reported() {
    let contents = "\
[[rule]]
name = \"one\"
scope = \"labels:\"
rule = \"when 1 > 0 then pause_idle\"

[[rule]]
name = \"two\"
rule = \"when 1 > 0 then pause_idle\"

[[rule]]
name = \"three\"
priority = 5000
rule = \"when 1 > 0 thn pause_idle\"

[[rule]]
name = \"four\"
rule = \"when avgg(host.cpu, 1m) > 1 then pause_idle\"
";
    let errors = parse_file(contents).unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_at(&errors[0], "rules[0].scope", 3, 17, "a label key", "key=value");
    assert_at(&errors[1], "rules[2].priority", 12, 12, "a priority", "-1000 to 1000");
    assert_at(&errors[2], "rules[3].rule", 17, 14, "a number, a parameter or an aggregation", "did you mean `avg`?");
}

#[test]
fn at_most_a_thousand_rules() {
    let one = |i: usize| format!("[[rule]]\nname = \"r{i}\"\nrule = \"when 1 > 0 then pause_idle\"\n");
    let fine: String = (0..bounds::RULES_PER_FILE).map(one).collect();
    assert_eq!(parse_file(&fine).unwrap().len(), bounds::RULES_PER_FILE);
    let too_many: String = (0..=bounds::RULES_PER_FILE).map(one).collect();
    let e = one_error(&too_many);
    assert_at(&e, "rules[1000]", 3001, 1, "at most 1000 rules", "split the rules");
}
