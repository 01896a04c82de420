//! Per-container figures read straight from the kernel: the container's cgroup
//! files (v1 or v2, cgroupfs or systemd layout) and `/proc/<pid>/net/dev` of a
//! process inside it. No Docker API call per sample: Docker's stats endpoint
//! takes about a second per container, which 50 containers a second cannot afford.
//!
//! Rates come from cumulative counters, as in `host`: each sample keeps the
//! totals and the next divides the difference by the time between them (pure,
//! `rates`). A counter that went down (the container restarted) gives no rate
//! for that sample rather than a negative one.

use sluice_common::wire::ContainerFigures;
use sluice_common::{FunctionName, InstanceId};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::warn;

/// A container to sample, and what it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// Docker's full container id.
    pub container: String,
    pub instance: InstanceId,
    pub function: FunctionName,
}

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v2: one tree.
    Unified(PathBuf),
    /// cgroup v1: a tree per controller.
    Split { cpuacct: PathBuf, memory: PathBuf, blkio: PathBuf, pids: PathBuf },
}

impl Hierarchy {
    /// Reads the mounts from `/proc/self/mountinfo`.
    pub fn detect() -> Option<Hierarchy> {
        Self::from_mountinfo(&fs::read_to_string("/proc/self/mountinfo").ok()?)
    }

    /// Parses mountinfo text: the v1 controllers Sluice reads, else the v2 tree.
    pub fn from_mountinfo(text: &str) -> Option<Hierarchy> {
        let mut unified = None;
        let mut v1: HashMap<&str, PathBuf> = HashMap::new();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let Some(mount_point) = left.split_whitespace().nth(4) else { continue };
            let mut right = right.split_whitespace();
            let (fstype, _source, options) = (right.next(), right.next(), right.next().unwrap_or(""));
            match fstype {
                Some("cgroup2") => unified = Some(PathBuf::from(mount_point)),
                Some("cgroup") => {
                    for controller in options.split(',').filter(|o| ["cpuacct", "memory", "blkio", "pids"].contains(o)) {
                        v1.insert(controller, PathBuf::from(mount_point));
                    }
                }
                _ => {}
            }
        }
        match (v1.remove("cpuacct"), v1.remove("memory"), v1.remove("blkio"), v1.remove("pids")) {
            (Some(cpuacct), Some(memory), Some(blkio), Some(pids)) => Some(Hierarchy::Split { cpuacct, memory, blkio, pids }),
            _ => unified.map(Hierarchy::Unified),
        }
    }
}

/// A container's cgroup directories, found once and reused.
#[derive(Debug, Clone)]
enum Dirs {
    Unified(PathBuf),
    Split { cpuacct: PathBuf, memory: PathBuf, blkio: PathBuf, pids: PathBuf },
}

/// The cgroup paths Docker uses for a container, under each driver.
fn candidates(id: &str) -> [String; 2] {
    [format!("docker/{id}"), format!("system.slice/docker-{id}.scope")]
}

fn find_dirs(h: &Hierarchy, id: &str) -> Option<Dirs> {
    candidates(id).into_iter().find_map(|rel| match h {
        Hierarchy::Unified(root) => {
            let dir = root.join(&rel);
            dir.is_dir().then_some(Dirs::Unified(dir))
        }
        Hierarchy::Split { cpuacct, memory, blkio, pids } => {
            let dir = cpuacct.join(&rel);
            dir.is_dir().then(|| Dirs::Split { cpuacct: dir, memory: memory.join(&rel), blkio: blkio.join(&rel), pids: pids.join(&rel) })
        }
    })
}

/// Cumulative counters and levels read at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    pub cpu_ns: u64,
    pub memory_used: u64,
    pub memory_limit: Option<u64>,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub pids: u64,
}

/// Reads a whole small file, or None.
fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn read_u64(path: &Path) -> Option<u64> {
    read(path)?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat): the value of `key`.
pub fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// v1 blkio.throttle.io_service_bytes: (read, write) summed over devices.
pub fn parse_blkio_v1(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0, 0);
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match (f.next(), f.next(), f.next().and_then(|v| v.parse::<u64>().ok())) {
            (Some(_dev), Some("Read"), Some(v)) => r += v,
            (Some(_dev), Some("Write"), Some(v)) => w += v,
            _ => {}
        }
    }
    (r, w)
}

/// v2 io.stat: (rbytes, wbytes) summed over devices.
pub fn parse_io_v2(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0, 0);
    for field in text.split_whitespace() {
        if let Some(v) = field.strip_prefix("rbytes=").and_then(|v| v.parse::<u64>().ok()) {
            r += v;
        } else if let Some(v) = field.strip_prefix("wbytes=").and_then(|v| v.parse::<u64>().ok()) {
            w += v;
        }
    }
    (r, w)
}

/// `/proc/<pid>/net/dev`: (rx, tx) bytes over every interface but loopback.
pub fn parse_net_dev(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0, 0);
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else { continue };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        if f.len() >= 9 {
            rx += f[0];
            tx += f[8];
        }
    }
    (rx, tx)
}

/// Memory limits this large mean "none" (v1 writes 2^63 rounded to pages).
const UNLIMITED: u64 = 1 << 60;

fn read_dirs(dirs: &Dirs, proc_root: &Path) -> Option<Reading> {
    let (mut r, procs_dir) = match dirs {
        Dirs::Unified(d) => {
            let cpu_us = stat_value(&read(&d.join("cpu.stat"))?, "usage_usec")?;
            let current = read_u64(&d.join("memory.current"))?;
            // Like `docker stats`: page cache that could be dropped is not "used".
            let inactive = read(&d.join("memory.stat")).and_then(|s| stat_value(&s, "inactive_file")).unwrap_or(0);
            let limit = read(&d.join("memory.max")).and_then(|s| s.trim().parse::<u64>().ok());
            let (rb, wb) = read(&d.join("io.stat")).map_or((0, 0), |s| parse_io_v2(&s));
            let reading = Reading {
                cpu_ns: cpu_us * 1000,
                memory_used: current.saturating_sub(inactive),
                memory_limit: limit,
                read_bytes: rb,
                write_bytes: wb,
                pids: read_u64(&d.join("pids.current")).unwrap_or(0),
                ..Reading::default()
            };
            (reading, d.clone())
        }
        Dirs::Split { cpuacct, memory, blkio, pids } => {
            let usage = read_u64(&memory.join("memory.usage_in_bytes"))?;
            let inactive = read(&memory.join("memory.stat")).and_then(|s| stat_value(&s, "total_inactive_file")).unwrap_or(0);
            let (rb, wb) = read(&blkio.join("blkio.throttle.io_service_bytes")).map_or((0, 0), |s| parse_blkio_v1(&s));
            let reading = Reading {
                cpu_ns: read_u64(&cpuacct.join("cpuacct.usage"))?,
                memory_used: usage.saturating_sub(inactive),
                memory_limit: read_u64(&memory.join("memory.limit_in_bytes")),
                read_bytes: rb,
                write_bytes: wb,
                pids: read_u64(&pids.join("pids.current")).unwrap_or(0),
                ..Reading::default()
            };
            (reading, pids.clone())
        }
    };
    r.memory_limit = r.memory_limit.filter(|l| *l < UNLIMITED);
    // Any process of the container shares its network namespace.
    if let Some(pid) = read(&procs_dir.join("cgroup.procs")).and_then(|s| s.lines().next().map(str::to_owned)) {
        if let Some(text) = read(&proc_root.join(pid.trim()).join("net/dev")) {
            (r.rx_bytes, r.tx_bytes) = parse_net_dev(&text);
        }
    }
    Some(r)
}

/// Figures from two readings `seconds` apart. CPU is None without a usable
/// earlier reading; other rates are zero then.
pub fn rates(w: &Watched, now: &Reading, before: Option<(&Reading, f64)>) -> ContainerFigures {
    let per_sec = |new: u64, old: u64, secs: f64| if new >= old && secs > 0.0 { (new - old) as f64 / secs } else { 0.0 };
    let usable = before.filter(|(b, secs)| *secs > 0.0 && now.cpu_ns >= b.cpu_ns);
    ContainerFigures {
        instance: w.instance,
        function: w.function.clone(),
        cpu_percent: usable.map(|(b, secs)| 100.0 * (now.cpu_ns - b.cpu_ns) as f64 / 1e9 / secs),
        memory_used_bytes: now.memory_used,
        memory_limit_bytes: now.memory_limit,
        net_rx_bytes_per_sec: usable.map_or(0.0, |(b, s)| per_sec(now.rx_bytes, b.rx_bytes, s)),
        net_tx_bytes_per_sec: usable.map_or(0.0, |(b, s)| per_sec(now.tx_bytes, b.tx_bytes, s)),
        block_read_bytes_per_sec: usable.map_or(0.0, |(b, s)| per_sec(now.read_bytes, b.read_bytes, s)),
        block_write_bytes_per_sec: usable.map_or(0.0, |(b, s)| per_sec(now.write_bytes, b.write_bytes, s)),
        pids: now.pids,
    }
}

/// Samples a set of containers, remembering each one's last reading.
#[derive(Debug)]
pub struct ContainerCollector {
    hierarchy: Option<Hierarchy>,
    proc_root: PathBuf,
    dirs: HashMap<String, Dirs>,
    last: HashMap<String, (Reading, Instant)>,
    /// Containers already warned about, so a broken one logs once.
    warned: HashSet<String>,
}

impl Default for ContainerCollector {
    fn default() -> Self {
        Self::new(Hierarchy::detect(), PathBuf::from("/proc"))
    }
}

impl ContainerCollector {
    /// A collector over `hierarchy` (None: no cgroups found; every sample is empty).
    pub fn new(hierarchy: Option<Hierarchy>, proc_root: PathBuf) -> Self {
        if hierarchy.is_none() {
            warn!("no cgroup hierarchy found in /proc/self/mountinfo; container figures are off");
        }
        Self { hierarchy, proc_root, dirs: HashMap::new(), last: HashMap::new(), warned: HashSet::new() }
    }

    /// Reads every container in `watched` at `now`; containers no longer
    /// watched are forgotten.
    pub fn sample(&mut self, watched: &[Watched], now: Instant) -> Vec<ContainerFigures> {
        let Some(h) = &self.hierarchy else { return Vec::new() };
        let ids: HashSet<&str> = watched.iter().map(|w| w.container.as_str()).collect();
        self.dirs.retain(|id, _| ids.contains(id.as_str()));
        self.last.retain(|id, _| ids.contains(id.as_str()));
        self.warned.retain(|id| ids.contains(id.as_str()));
        let mut out = Vec::with_capacity(watched.len());
        for w in watched {
            let reading = match self.dirs.get(&w.container) {
                Some(d) => read_dirs(d, &self.proc_root),
                None => None,
            };
            // Not found yet, or the cached directories went away: look again once.
            let reading = reading.or_else(|| {
                let d = find_dirs(h, &w.container)?;
                let r = read_dirs(&d, &self.proc_root);
                self.dirs.insert(w.container.clone(), d);
                r
            });
            let Some(reading) = reading else {
                if self.warned.insert(w.container.clone()) {
                    warn!(container = %w.container, instance = %w.instance, "cannot read the container's cgroup files; its figures are left out until they can be read");
                }
                continue;
            };
            let before = self.last.get(&w.container).map(|(r, at)| (r, now.saturating_duration_since(*at).as_secs_f64()));
            out.push(rates(w, &reading, before));
            self.last.insert(w.container.clone(), (reading, now));
        }
        out
    }
}

#[cfg(test)]
mod tests;
