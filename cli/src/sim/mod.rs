//! `sluice sim`: replays an invocation trace through the keep-warm policies,
//! the same model code the coordinator runs (`sluice_common::predict`), with a
//! simulated clock and runtime, and scores each one on the same bins.

pub mod replay;
pub mod synth;
pub mod trace;

use anyhow::{bail, Context, Result};
use clap::Args;
use replay::{Contender, Score};
use sluice_common::predict::PolicyKind;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use trace::Trace;

#[derive(Args, Debug)]
pub struct SimArgs {
    /// A trace: a directory with the Azure Functions 2019 files (invocations.csv,
    /// durations.csv, memory.csv) or a per-invocation CSV
    /// (function,timestamp,duration,memory in s, ms, MB).
    #[arg(long, required_unless_present = "synthetic", conflicts_with = "synthetic")]
    pub trace: Option<PathBuf>,
    /// Instead of a trace, a synthetic one: periodic, bursty, diurnal, random, one-off or mix.
    #[arg(long)]
    pub synthetic: Option<String>,
    /// Functions in a synthetic trace.
    #[arg(long, default_value_t = 200)]
    pub functions: usize,
    /// Minutes in a synthetic trace.
    #[arg(long, default_value_t = 1440)]
    pub minutes: usize,
    /// Seed of a synthetic trace.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Policies to run (repeatable): fixed-<N>m, hybrid, sluice, oracle. Default: fixed-10m, hybrid, sluice and oracle.
    #[arg(long = "policy")]
    pub policies: Vec<String>,
    /// Share of the trace's minutes the policies learn on before scoring starts.
    #[arg(long, default_value_t = 0.5)]
    pub learn: f64,
    /// Print one JSON object keyed by policy name instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The contenders named on the command line, or all built-in ones.
fn contenders(names: &[String]) -> Result<Vec<Contender>> {
    if names.is_empty() {
        return Ok(vec![
            Contender::Policy(PolicyKind::Fixed { bins: 10 }),
            Contender::Policy(PolicyKind::Hybrid),
            Contender::Policy(PolicyKind::Sluice(Default::default())),
            Contender::Oracle,
        ]);
    }
    let mut out = Vec::new();
    for n in names {
        let c = if n == "oracle" { Contender::Oracle } else { Contender::Policy(PolicyKind::parse(n).map_err(anyhow::Error::msg).context("--policy")?) };
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

pub fn run(args: SimArgs, json: bool) -> Result<()> {
    if !(0.0..1.0).contains(&args.learn) {
        bail!("--learn must be at least 0 and below 1 (a share of the trace's minutes), got {}", args.learn);
    }
    let contenders = contenders(&args.policies)?;
    let trace = match (&args.trace, &args.synthetic) {
        (Some(path), _) => trace::load(path)?,
        (None, Some(name)) => {
            let pattern = synth::Pattern::parse(name).with_context(|| format!("--synthetic {name:?}: use periodic, bursty, diurnal, random, one-off or mix"))?;
            if args.functions == 0 || args.functions > 1_000_000 || args.minutes < 2 || args.minutes > 60 * 24 * 60 {
                bail!("--functions must be 1 to 1,000,000 and --minutes 2 to 86,400");
            }
            synth::generate(pattern, args.functions, args.minutes, args.seed)
        }
        (None, None) => bail!("give --trace DIR or --synthetic PATTERN"),
    };
    let score_from = ((trace.bins as f64) * args.learn).round() as usize;
    eprintln!(
        "sim: {} functions, {} minutes; learning on minutes 0..{score_from}, scoring {score_from}..{}{}",
        trace.functions.len(),
        trace.bins,
        trace.bins,
        if trace.memory_filled > 0 { format!("; {} functions without a memory figure take the mean", trace.memory_filled) } else { String::new() }
    );
    let scores = run_all(&trace, &contenders, score_from);
    let out = std::io::stdout();
    let mut out = out.lock();
    if json || args.json {
        let keyed: BTreeMap<String, &Score> = contenders.iter().map(|c| c.name()).zip(scores.iter()).collect();
        serde_json::to_writer_pretty(&mut out, &keyed)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &contenders, &scores)?;
    }
    Ok(())
}

/// Runs every contender, one thread each, with a progress line on stderr when
/// the run is long.
fn run_all(trace: &Trace, contenders: &[Contender], score_from: usize) -> Vec<Score> {
    let done: Vec<AtomicUsize> = contenders.iter().map(|_| AtomicUsize::new(0)).collect();
    let finished = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = contenders
            .iter()
            .zip(&done)
            .map(|(c, d)| {
                let finished = &finished;
                s.spawn(move || {
                    let score = replay::replay(trace, c, score_from, &|n| d.store(n, Ordering::Relaxed));
                    finished.fetch_add(1, Ordering::Relaxed);
                    score
                })
            })
            .collect();
        s.spawn(|| progress(trace, contenders, &done, &finished));
        workers.into_iter().map(|w| w.join().unwrap_or_default()).collect()
    })
}

/// Prints how far each contender is, once a second after the first second.
fn progress(trace: &Trace, contenders: &[Contender], done: &[AtomicUsize], finished: &AtomicUsize) {
    let (start, tty) = (Instant::now(), std::io::stderr().is_terminal());
    let mut printed = false;
    while finished.load(Ordering::Relaxed) < contenders.len() {
        std::thread::sleep(Duration::from_millis(100));
        let elapsed = start.elapsed();
        if elapsed < Duration::from_secs(1) || elapsed.subsec_millis() >= 100 {
            continue;
        }
        let parts: Vec<String> = contenders.iter().zip(done).map(|(c, d)| format!("{} {}/{}", c.name(), d.load(Ordering::Relaxed), trace.functions.len())).collect();
        let line = format!("sim: {}s: {}", elapsed.as_secs(), parts.join(", "));
        if tty {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
        printed = true;
    }
    if printed && tty {
        eprintln!();
    }
}

fn write_table(out: &mut impl Write, contenders: &[Contender], scores: &[Score]) -> Result<()> {
    writeln!(
        out,
        "{:<24} {:>11} {:>8} {:>13} {:>11} {:>12} {:>12} {:>8}",
        "policy", "cold starts", "cold %", "fn p75 cold %", "wasted GB-h", "hot inst-min", "paused i-min", "resumes"
    )?;
    for (c, s) in contenders.iter().zip(scores) {
        writeln!(
            out,
            "{:<24} {:>11} {:>8.3} {:>13.2} {:>11.2} {:>12.0} {:>12.0} {:>8}",
            c.name(),
            s.cold_starts,
            s.cold_pct,
            s.fn_p75_cold_pct,
            s.wasted_gb_h,
            s.instance_minutes.hot,
            s.instance_minutes.paused,
            s.resumes
        )?;
    }
    let find = |name: &str| contenders.iter().position(|c| c.name() == name).map(|i| &scores[i]);
    if let (Some(s), Some(h)) = (find("sluice"), find("hybrid")) {
        let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}x", a / b) } else { "-".into() };
        writeln!(
            out,
            "sluice/hybrid: cold starts {}, fn p75 cold % {}, wasted GB-h {}",
            ratio(s.cold_starts as f64, h.cold_starts as f64),
            ratio(s.fn_p75_cold_pct, h.fn_p75_cold_pct),
            ratio(s.wasted_gb_h, h.wasted_gb_h)
        )?;
    }
    if let Some(s) = scores.first() {
        writeln!(out, "{} invocations scored over {} functions", s.invocations, s.functions_scored)?;
    }
    Ok(())
}
