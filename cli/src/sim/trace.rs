//! Traces for `sluice sim`, read into per-function series of bins: arrivals,
//! instances needed at once, and busy instance-bins.
//!
//! Two formats: the per-minute Azure Functions 2019 files (`invocations.csv`,
//! `durations.csv`, `memory.csv` in one directory) and a per-invocation CSV
//! (`function,timestamp,duration,memory`: seconds, milliseconds, MB) given as a
//! file or as `invocations.csv` with that header. Errors name the file, line
//! and column and say what was expected.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::Path;

/// One function's series, one entry per bin.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionTrace {
    pub name: String,
    pub memory_mb: f64,
    pub arrivals: Vec<u32>,
    /// Instances the bin's invocations needed at once.
    pub needed: Vec<u32>,
    /// Instance-bins spent serving (≤ needed).
    pub busy: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub bins: usize,
    pub bin_secs: f64,
    pub functions: Vec<FunctionTrace>,
    /// Functions whose memory the trace lacked (the trace's mean was used).
    pub memory_filled: usize,
}

/// Reads a trace directory or a per-invocation CSV file.
pub fn load(path: &Path) -> Result<Trace> {
    if path.is_file() {
        return per_invocation(path);
    }
    let invocations = path.join("invocations.csv");
    let head = std::fs::read_to_string(&invocations).with_context(|| {
        format!(
            "cannot read {}: --trace takes a directory with invocations.csv (and for the Azure format durations.csv and memory.csv) or a per-invocation CSV file",
            invocations.display()
        )
    })?;
    if head.lines().next().is_some_and(|l| l.trim() == "function,timestamp,duration,memory") {
        return per_invocation(&invocations);
    }
    azure(path, &head)
}

/// A header's column index by name.
fn column(header: &[&str], name: &str, file: &Path) -> Result<usize> {
    header.iter().position(|h| h.trim() == name).with_context(|| format!("{}: line 1: no column {name:?}; the Azure 2019 format has it", file.display()))
}

fn azure(dir: &Path, invocations: &str) -> Result<Trace> {
    let inv_path = dir.join("invocations.csv");
    let mut lines = invocations.lines();
    let header: Vec<&str> = lines.next().context("invocations.csv is empty")?.split(',').collect();
    let (owner, app, func) = (column(&header, "HashOwner", &inv_path)?, column(&header, "HashApp", &inv_path)?, column(&header, "HashFunction", &inv_path)?);
    // Minute columns are the numeric ones, in order.
    let minutes: Vec<usize> = header.iter().enumerate().filter(|(_, h)| h.trim().parse::<u32>().is_ok()).map(|(i, _)| i).collect();
    if minutes.is_empty() {
        bail!("{}: line 1: no minute columns (numbered 1..1440)", inv_path.display());
    }
    let durations = keyed_column(&dir.join("durations.csv"), "Average")?;
    let memory = keyed_column(&dir.join("memory.csv"), "AverageAllocatedMb")?;
    let mut functions = Vec::new();
    let mut missing_memory = Vec::new();
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        let cell = |i: usize| cells.get(i).map(|c| c.trim()).unwrap_or("");
        let key = (cell(owner).to_string(), cell(app).to_string(), cell(func).to_string());
        let mut arrivals = Vec::with_capacity(minutes.len());
        for &i in &minutes {
            let v = cell(i).parse::<u32>().with_context(|| format!("{}: line {}, column {}: {:?} is not a count of invocations", inv_path.display(), n + 2, i + 1, cell(i)))?;
            arrivals.push(v);
        }
        // A function without a duration is taken as short (1 s): it needs one instance per minute it is used.
        let duration_s = durations.get(&key).or_else(|| durations.get(&(key.0.clone(), key.1.clone(), String::new()))).copied().unwrap_or(1000.0) / 1000.0;
        let mem = memory.get(&key).or_else(|| memory.get(&(key.0.clone(), key.1.clone(), String::new()))).copied();
        if mem.is_none() {
            missing_memory.push(functions.len());
        }
        let needed = arrivals.iter().map(|&a| if a == 0 { 0 } else { ((f64::from(a) * duration_s / 60.0).ceil() as u32).max(1) }).collect();
        let busy = arrivals.iter().map(|&a| (f64::from(a) * duration_s / 60.0) as f32).collect();
        functions.push(FunctionTrace { name: key.2, memory_mb: mem.unwrap_or(0.0), arrivals, needed, busy });
    }
    fill_memory(&mut functions, &missing_memory);
    Ok(Trace { bins: minutes.len(), bin_secs: 60.0, memory_filled: missing_memory.len(), functions })
}

/// Functions without a memory figure take the mean of those with one.
fn fill_memory(functions: &mut [FunctionTrace], missing: &[usize]) {
    let known: Vec<f64> = functions.iter().enumerate().filter(|(i, _)| !missing.contains(i)).map(|(_, f)| f.memory_mb).collect();
    let mean = if known.is_empty() { 128.0 } else { known.iter().sum::<f64>() / known.len() as f64 };
    for &i in missing {
        functions[i].memory_mb = mean;
    }
}

/// `file`'s `value` column keyed by (HashOwner, HashApp, HashFunction); files
/// keyed per app (no HashFunction column) key with an empty function.
fn keyed_column(file: &Path, value: &str) -> Result<HashMap<(String, String, String), f64>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}: the Azure format needs it beside invocations.csv", file.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().with_context(|| format!("{} is empty", file.display()))?.split(',').collect();
    let (owner, app, val) = (column(&header, "HashOwner", file)?, column(&header, "HashApp", file)?, column(&header, value, file)?);
    let func = header.iter().position(|h| h.trim() == "HashFunction");
    let mut out = HashMap::new();
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let get = |i: usize| cells.get(i).copied().unwrap_or("");
        let v = get(val).parse::<f64>().with_context(|| format!("{}: line {}, column {}: {:?} is not a number", file.display(), n + 2, val + 1, get(val)))?;
        let f = func.map(|i| get(i).to_string()).unwrap_or_default();
        out.insert((get(owner).to_string(), get(app).to_string(), f), v);
    }
    Ok(out)
}

/// One invocation of a per-invocation trace.
struct Call {
    start_s: f64,
    duration_s: f64,
    memory_mb: f64,
}

fn per_invocation(file: &Path) -> Result<Trace> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut lines = text.lines();
    let header = lines.next().with_context(|| format!("{} is empty", file.display()))?;
    if header.trim() != "function,timestamp,duration,memory" {
        bail!("{}: line 1: expected the header function,timestamp,duration,memory (seconds, milliseconds, MB), found {header:?}", file.display());
    }
    let mut by_function: BTreeMap<String, Vec<Call>> = BTreeMap::new();
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let at = |i: usize, what: &str| -> Result<f64> {
            let c = cells.get(i).copied().unwrap_or("");
            c.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).with_context(|| format!("{}: line {}, column {}: {c:?} is not a {what}", file.display(), n + 2, i + 1))
        };
        let name = cells.first().filter(|c| !c.is_empty()).with_context(|| format!("{}: line {}, column 1: the function name is empty", file.display(), n + 2))?;
        let call = Call { start_s: at(1, "timestamp in seconds")?, duration_s: at(2, "duration in milliseconds")? / 1000.0, memory_mb: at(3, "memory in MB")? };
        by_function.entry(name.to_string()).or_default().push(call);
    }
    let t0 = by_function.values().flatten().map(|c| c.start_s).fold(f64::INFINITY, f64::min);
    let t1 = by_function.values().flatten().map(|c| c.start_s).fold(0.0, f64::max);
    if by_function.is_empty() {
        bail!("{}: no invocations", file.display());
    }
    let bin_secs = 60.0;
    let bins = (((t1 - t0) / bin_secs).floor() as usize + 1).min(60 * 24 * 60);
    let functions = by_function.into_iter().map(|(name, mut calls)| series(name, &mut calls, t0, bin_secs, bins)).collect();
    Ok(Trace { bins, bin_secs, functions, memory_filled: 0 })
}

/// Bins one function's calls: arrivals by start, needed as the most calls
/// running at once in the bin, busy as the time spent running in it.
fn series(name: String, calls: &mut [Call], t0: f64, bin_secs: f64, bins: usize) -> FunctionTrace {
    calls.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    let (mut arrivals, mut needed, mut busy) = (vec![0u32; bins], vec![0u32; bins], vec![0f32; bins]);
    // Ends of running calls, earliest first (as negated milliseconds in a max-heap).
    let mut running: BinaryHeap<i64> = BinaryHeap::new();
    for c in calls.iter() {
        let start = c.start_s - t0;
        let end = start + c.duration_s;
        let start_ms = (start * 1000.0) as i64;
        while running.peek().is_some_and(|e| -*e <= start_ms) {
            running.pop();
        }
        running.push(-((end * 1000.0) as i64));
        let first = ((start / bin_secs) as usize).min(bins - 1);
        arrivals[first] += 1;
        // Every bin the call spans needs it, so count it in each (at most a day of bins).
        let last = ((end / bin_secs) as usize).min(bins - 1);
        needed[first] = needed[first].max(running.len() as u32);
        for (b, slot) in busy.iter_mut().enumerate().take(last + 1).skip(first) {
            let lo = start.max(b as f64 * bin_secs);
            let hi = end.min((b + 1) as f64 * bin_secs);
            *slot += ((hi - lo).max(0.0) / bin_secs) as f32;
            if b > first {
                needed[b] = needed[b].max(1);
            }
        }
    }
    let memory_mb = calls.iter().map(|c| c.memory_mb).sum::<f64>() / calls.len().max(1) as f64;
    FunctionTrace { name, memory_mb, arrivals, needed, busy }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_invocation_bins_arrivals_overlap_and_busy_time() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("calls.csv");
        // a: two overlapping calls in minute 0, one in minute 2; b: one call.
        std::fs::write(&f, "function,timestamp,duration,memory\na,0,30000,100\na,10,30000,300\na,130,1000,200\nb,61,500,50\n").unwrap();
        let t = load(&f).unwrap();
        assert_eq!(t.bins, 3);
        let a = &t.functions[0];
        assert_eq!((a.name.as_str(), a.arrivals.clone(), a.needed.clone()), ("a", vec![2, 0, 1], vec![2, 0, 1]));
        assert!((a.busy[0] - 1.0).abs() < 1e-3, "{:?}", a.busy);
        assert!((a.memory_mb - 200.0).abs() < 1e-9);
        assert_eq!(t.functions[1].arrivals, vec![0, 1, 0]);
    }

    #[test]
    fn bad_rows_name_the_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("calls.csv");
        std::fs::write(&f, "function,timestamp,duration,memory\na,0,10,100\na,x,10,100\n").unwrap();
        let e = format!("{:#}", load(&f).unwrap_err());
        assert!(e.contains("line 3, column 2") && e.contains("timestamp"), "{e}");
    }

    #[test]
    fn azure_format_joins_durations_and_memory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("invocations.csv"), "HashOwner,HashApp,HashFunction,Trigger,1,2,3\no,a,f,http,0,120,1\no,a,g,timer,1,0,0\n").unwrap();
        std::fs::write(d.join("durations.csv"), "HashOwner,HashApp,HashFunction,Average,Count\no,a,f,1500,3\n").unwrap();
        std::fs::write(d.join("memory.csv"), "HashFunction,HashOwner,HashApp,SampleCount,AverageAllocatedMb\nf,o,a,5,256\n").unwrap();
        let t = load(d).unwrap();
        assert_eq!(t.bins, 3);
        let f = &t.functions[0];
        // 120 calls of 1.5 s in a minute: 3 instance-minutes of work.
        assert_eq!(f.needed, vec![0, 3, 1]);
        assert_eq!(f.memory_mb, 256.0);
        assert_eq!(t.memory_filled, 1);
        assert_eq!(t.functions[1].memory_mb, 256.0);
    }
}
