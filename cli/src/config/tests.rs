use super::reload::{changes, Change};
use super::*;
use crate::node::{AgentArgs, CoordinatorCommand, UpCommand};
use clap::{Args, FromArgMatches};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

/// Held by every test that resolves a command line: clap reads the process's
/// environment, and one test sets a variable in it.
static ENVIRONMENT: Mutex<()> = Mutex::new(());

/// The node commands as `sluice` has them.
fn cli() -> clap::Command {
    clap::Command::new("sluice")
        .subcommand(UpCommand::augment_args(clap::Command::new("up")))
        .subcommand(CoordinatorCommand::augment_args(clap::Command::new("coordinator")))
        .subcommand(AgentArgs::augment_args(clap::Command::new("agent")))
}

/// Resolves `sluice ARGS...` with default files in `dir`.
fn resolve(dir: &Path, args: &[&str]) -> Result<Resolved, Failure> {
    let argv = std::iter::once("sluice").chain(args.iter().copied()).map(Into::into).collect();
    Resolver::new(cli(), argv).with_default_dir(dir).resolve()
}

fn coordinator(resolved: &Resolved) -> CoordinatorCommand {
    CoordinatorCommand::from_arg_matches(resolved.matches.subcommand_matches("coordinator").unwrap()).unwrap()
}

fn errors(result: Result<Resolved, Failure>) -> Vec<String> {
    match result {
        Err(Failure::Config(errors)) => errors.iter().map(ToString::to_string).collect(),
        other => panic!("expected config errors, got {other:?}"),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_good_file_gives_every_kind_of_setting_at_its_place() {
    let text = "[coordinator]\ngateway_threads = 3\ntick_secs = 0.5\njoin = true\ninsecure_registry = [\"10.0.0.5:5000\", \"r:1\"]\n\n[agent]\nnode = \"edge-1\"\n";
    let file = parse(Path::new("c.toml"), text).unwrap();
    let coordinator = &file.tables[&Table::Coordinator];
    let shown: Vec<(&str, &Value, (usize, usize))> = coordinator.iter().map(|s| (s.key.as_str(), &s.value, s.at)).collect();
    assert_eq!(
        shown,
        vec![
            ("gateway_threads", &Value::Values(vec!["3".into()]), (2, 1)),
            ("tick_secs", &Value::Values(vec!["0.5".into()]), (3, 1)),
            ("join", &Value::Switch(true), (4, 1)),
            ("insecure_registry", &Value::Values(vec!["10.0.0.5:5000".into(), "r:1".into()]), (5, 1)),
        ]
    );
    assert_eq!(file.tables[&Table::Agent][0].as_flags(), vec!["--node=edge-1".to_string()]);
}

#[test]
fn bad_files_are_refused_at_line_and_column_with_the_fix() {
    let text =
        "[coordinator]\ngateway_thread = 2\napi = \"nowhere\"\ngateway-threads = 2\nauth = \"maybe\"\njoin = \"yes\"\ngateway_threads = [1]\nlog_level = \"info,x=loud\"\n[agnt]\n";
    let errors: Vec<String> = parse(Path::new("c.toml"), text).unwrap_err().iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 8, "{errors:#?}");
    assert_eq!(errors[0], "c.toml:2:1: unknown key `gateway_thread` in [coordinator]: did you mean `gateway_threads`?");
    assert_eq!(errors[1], "c.toml:3:7: `api`: invalid value \"nowhere\" for --api: invalid socket address syntax (the default is \"127.0.0.1:7070\")");
    assert_eq!(errors[2], "c.toml:4:1: unknown key `gateway-threads` in [coordinator]: write it `gateway_threads`: keys have _ where the flag has -");
    assert_eq!(errors[3], "c.toml:5:8: `auth`: invalid value \"maybe\" for --auth: use one of required, off (the default is \"required\")");
    assert_eq!(errors[4], "c.toml:6:8: `join` is a switch, not string: write join = true or join = false");
    assert_eq!(errors[5], "c.toml:7:19: `gateway_threads` takes one value, not a list: write gateway_threads = \"0\"");
    assert!(errors[6].starts_with("c.toml:8:13: `log_level`: invalid value \"info,x=loud\" for --log-level: "), "{}", errors[6]);
    assert_eq!(errors[7], "c.toml:9:2: unknown table `agnt`: did you mean `[agent]`?");
}

#[test]
fn a_label_is_checked_as_the_flag_checks_it() {
    let errors = parse(Path::new("a.toml"), "[agent]\nlabel = [\"zone=a\", \"ssd\"]\n").unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].to_string().starts_with("a.toml:2:20: `label`: invalid value \"ssd\" for --label: \"ssd\" is not key=value"), "{}", errors[0]);
}

#[test]
fn toml_syntax_errors_and_strangers_are_placed_too() {
    let syntax = parse(Path::new("s.toml"), "[coordinator]\napi = 127.0.0.1:7070\n").unwrap_err();
    assert_eq!(syntax[0].at.map(|(line, _)| line), Some(2), "{syntax:?}");
    assert!(syntax[0].message.contains("fix the TOML syntax"), "{}", syntax[0]);
    let stranger = parse(Path::new("s.toml"), "[coordinator]\nfrobnicate = 1\n").unwrap_err();
    assert_eq!(stranger[0].to_string(), "s.toml:2:1: unknown key `frobnicate` in [coordinator]: the keys of [coordinator] are the long flags of `sluice coordinator` with _ for - (`sluice coordinator --help`; examples/config/coordinator.toml lists them all)");
    let not_a_table = parse(Path::new("s.toml"), "agent = 1\n").unwrap_err();
    assert_eq!(not_a_table[0].to_string(), "s.toml:1:1: `agent` must be a table: write `[agent]` on its own line, then its settings");
}

#[test]
fn the_file_is_below_the_environment_which_is_below_the_flags() {
    let _env = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "c.toml", "[coordinator]\ndata_dir = \"/from/file\"\ngateway_threads = 3\nid = 7\n");
    let config = file.to_str().unwrap();
    std::env::set_var("SLUICE_DATA_DIR", "/from/env");
    let with_env = resolve(dir.path(), &["coordinator", "--config", config, "--id", "9"]);
    std::env::remove_var("SLUICE_DATA_DIR");
    let args = coordinator(&with_env.unwrap()).coordinator;
    assert_eq!(args.data_dir.as_deref(), Some(Path::new("/from/env")), "the environment beats the file");
    assert_eq!(args.id, 9, "a flag beats the file");
    assert_eq!(args.gateway_threads, 3, "the file beats the default");
    let flag_over_env = resolve(dir.path(), &["coordinator", "--config", config, "--data-dir", "/from/flag"]).unwrap();
    assert_eq!(coordinator(&flag_over_env).coordinator.data_dir.as_deref(), Some(Path::new("/from/flag")));
    let file_alone = resolve(dir.path(), &["coordinator", "--config", config]).unwrap();
    assert_eq!(coordinator(&file_alone).coordinator.data_dir.as_deref(), Some(Path::new("/from/file")));
    assert_eq!(file_alone.node.unwrap().effective["id"], vec!["7".to_string()]);
}

#[test]
fn default_files_are_read_when_present_and_silently_skipped_when_not() {
    let _env = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let none = resolve(dir.path(), &["coordinator"]).unwrap();
    assert_eq!(none.node.as_ref().unwrap().files, Vec::<std::path::PathBuf>::new());
    assert_eq!(coordinator(&none).coordinator.gateway_threads, 0);
    let path = write(dir.path(), "coordinator.toml", "[coordinator]\ngateway_threads = 5\n");
    let read = resolve(dir.path(), &["coordinator"]).unwrap();
    assert_eq!(coordinator(&read).coordinator.gateway_threads, 5);
    assert_eq!(read.node.unwrap().files, vec![path.clone()]);
    write(dir.path(), "coordinator.toml", "[agent]\nnode = \"x\"\n");
    assert_eq!(
        errors(resolve(dir.path(), &["coordinator"])),
        vec![format!("{}: no [coordinator] table: put the settings under a line `[coordinator]` (see examples/config/)", path.display())]
    );
}

#[test]
fn a_missing_config_file_is_an_error_that_names_it() {
    let _env = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let found = errors(resolve(dir.path(), &["agent", "--config", missing.to_str().unwrap()]));
    assert_eq!(found, vec![format!("{}: no such file: check the path given to --config, or leave --config out to read the default file if there is one", missing.display())]);
}

#[test]
fn up_takes_each_setting_from_coordinator_else_agent_and_reports_the_rest() {
    let _env = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "up.toml",
        "[coordinator]\nbus = \"inproc\"\nlocal_node = \"n\"\n\n[agent]\nbus = \"mqtt://h:1883\"\nnode = \"edge\"\nlabel = [\"zone=a\", \"disk=ssd\"]\ntoken_file = \"/t\"\n",
    );
    std::env::remove_var("SLUICE_BUS");
    let resolved = resolve(dir.path(), &["up", "--config", file.to_str().unwrap()]).unwrap();
    let up = UpCommand::from_arg_matches(resolved.matches.subcommand_matches("up").unwrap()).unwrap().up;
    assert_eq!(up.coordinator.bus.as_deref(), Some("inproc"));
    assert_eq!(up.host.node, "edge");
    assert_eq!(up.host.labels, vec!["zone=a".to_string(), "disk=ssd".to_string()]);
    let unused: Vec<(String, (usize, usize))> = resolved.node.unwrap().unused.into_iter().map(|(_, s)| (s.key, s.at)).collect();
    assert_eq!(unused, vec![("local_node".to_string(), (3, 1)), ("token_file".to_string(), (9, 1))]);
}

#[test]
fn a_sighup_sees_what_changed_in_effect() {
    let _env = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "c.toml", "[coordinator]\nlog_level = \"info\"\napi = \"127.0.0.1:7070\"\ngateway_threads = 2\n");
    std::env::remove_var("RUST_LOG");
    let args = ["coordinator", "--config", file.to_str().unwrap(), "--gateway-threads", "1"];
    let before = resolve(dir.path(), &args).unwrap().node.unwrap();
    write(dir.path(), "c.toml", "[coordinator]\nlog_level = \"debug\"\napi = \"127.0.0.1:7072\"\ngateway_threads = 4\n");
    let after = resolve(dir.path(), &args).unwrap().node.unwrap();
    let change = |key: &str, from: &str, to: &str| Change { key: key.into(), from: from.into(), to: to.into() };
    // gateway_threads is held by its flag: the file's new value changes nothing.
    assert_eq!(changes(&before, &after), vec![change("api", "127.0.0.1:7070", "127.0.0.1:7072"), change("log_level", "info", "debug")]);
}

#[test]
fn check_says_ok_in_one_line_or_lists_the_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", "[coordinator]\ngateway_threads = 1\n[agent]\nnode = \"x\"\nlabel = [\"a=b\"]\n");
    assert_eq!(check::check(&good, None), Ok(format!("{}: OK, [coordinator] 1 setting(s), [agent] 2 setting(s)", good.display())));
    let coordinator_only = write(dir.path(), "c.toml", "[coordinator]\nid = 2\n");
    assert_eq!(
        check::check(&coordinator_only, Some(Table::Agent)),
        Err(vec![format!("{}: no [agent] table: put the settings under a line `[agent]` (see examples/config/)", coordinator_only.display())])
    );
    let bad = write(dir.path(), "bad.toml", "[agent]\nmax_instances = -3\n");
    let errors = check::check(&bad, None).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with(&format!("{}:2:17: `max_instances`: invalid value \"-3\" for --max-instances: ", bad.display())), "{errors:?}");
}

/// The example files, with their commented-out settings (`# key = value`) written in.
fn example_with_every_setting(table: Table) -> (String, String) {
    let path = format!("{}/../examples/config/{}.toml", env!("CARGO_MANIFEST_DIR"), table.name());
    let text = std::fs::read_to_string(&path).unwrap();
    let is_setting = |line: &str| line.split_once(" = ").is_some_and(|(key, _)| !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    let uncommented = text.lines().map(|line| line.strip_prefix("# ").filter(|rest| is_setting(rest)).unwrap_or(line)).collect::<Vec<_>>().join("\n");
    (text, uncommented)
}

#[test]
fn the_example_files_list_exactly_the_flags_and_parse() {
    for table in Table::ALL {
        let (text, every) = example_with_every_setting(table);
        let name = format!("examples/config/{}.toml", table.name());
        let as_written = parse(Path::new(&name), &text).unwrap_or_else(|e| panic!("{e:#?}"));
        assert_eq!(as_written.tables.keys().copied().collect::<Vec<_>>(), vec![table]);
        let all = parse(Path::new(&name), &every).unwrap_or_else(|e| panic!("{name} with its commented settings written in: {e:#?}"));
        let listed: Vec<&str> = all.tables[&table].iter().map(|s| s.key.as_str()).collect();
        let flags: BTreeSet<String> = settings_of(table).into_keys().collect();
        assert_eq!(listed.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>(), flags, "{name} must list every flag of `sluice {}` once", table.name());
        assert_eq!(listed.len(), flags.len(), "{name} lists a setting twice");
    }
}

#[test]
fn the_example_files_set_each_setting_to_its_default() {
    for table in Table::ALL {
        let (text, _) = example_with_every_setting(table);
        let file = parse(Path::new("example"), &text).unwrap();
        let flags = settings_of(table);
        for setting in &file.tables[&table] {
            let mut default: Vec<String> = flags[&setting.key].get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
            let written = match &setting.value {
                Value::Switch(on) => {
                    // A switch is off unless given (clap fills in "false" only when it builds the command).
                    default = vec!["false".into()];
                    vec![on.to_string()]
                }
                Value::Values(values) => values.clone(),
            };
            let same = |a: &String, b: &String| a == b || a.parse::<f64>().ok().zip(b.parse::<f64>().ok()).is_some_and(|(x, y)| x == y);
            assert!(
                written.len() == default.len() && written.iter().zip(&default).all(|(w, d)| same(w, d)),
                "{}: {} = {written:?}, but the flag's default is {default:?}",
                table.name(),
                setting.key
            );
        }
    }
}
