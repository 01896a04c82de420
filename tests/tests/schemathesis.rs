//! S1 in its short mode: `scripts/schemathesis.sh --short` fuzzes a real
//! `sluice up` (tokens required) from its served OpenAPI document with a few
//! hundred generated cases, and fails on any server error or answer that does
//! not match the document. The script installs schemathesis with pip when it
//! is missing; if that cannot be done the test fails, saying why, rather than
//! being skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The target directory this test was built into (`<target>/debug/deps/<test>`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    exe.ancestors().nth(3).expect("the test binary is in <target>/<profile>/deps").to_path_buf()
}

#[test]
fn schemathesis_finds_no_server_error_or_schema_violation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_path_buf();
    let target = target_dir();
    // The script runs the `sluice` binary; build it in this profile (cargo has released its lock by now).
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo).args(["build", "-p", "sluice-cli", "--bin", "sluice"]).env("CARGO_TARGET_DIR", &target).current_dir(&root).status();
    assert!(built.is_ok_and(|s| s.success()), "cargo build -p sluice-cli failed: the script needs the sluice binary");
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(root.join("scripts/schemathesis.sh"))
        .arg("--short")
        .env("SLUICE", target.join("debug/sluice"))
        .env("PROFILE", "debug")
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&root)
        .output()
        .expect("bash runs scripts/schemathesis.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/schemathesis.sh --short failed ({}); if schemathesis could not be installed, install python3-venv and allow pip to reach PyPI.\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    let summary = stdout.lines().find(|l| l.starts_with("S1 summary")).unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    // "S1 summary (short run): N generated cases, N passed, 0 not, over 30 API operations in S s"
    let number_before = |word: &str| -> u64 {
        let words: Vec<&str> = summary.split_whitespace().collect();
        let at = words.iter().position(|w| w.trim_end_matches(',') == word).unwrap_or_else(|| panic!("no {word:?} in {summary:?}"));
        words[at - 1].parse().unwrap_or_else(|_| panic!("no number before {word:?} in {summary:?}"))
    };
    assert!(number_before("generated") >= 200, "too few cases: {summary}");
    assert_eq!(number_before("not"), 0, "{summary}");
    assert_eq!(number_before("API"), sluice_coordinator::api::routes::ROUTES.len() as u64, "every route is fuzzed: {summary}");
    eprintln!("{summary} (test took {:?})", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(600), "the short run should stay short");
}
