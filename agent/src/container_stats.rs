//! Per-container figures read straight from the kernel: the container's cgroup
//! files (v1 or v2, cgroupfs or systemd layout) and `/proc/<pid>/net/dev` of a
//! process inside it. No Docker API call per sample: Docker's stats endpoint
//! takes about a second per container, which 50 containers a second cannot afford.
//!
//! Rates come from cumulative counters, as in `host`: each sample keeps the
//! totals and the next divides the difference by the time between them (pure,
//! `rates`). A counter that went down (the container restarted) gives no rate
//! for that sample rather than a negative one.

use crate::kept_file::KeptFile;
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

/// The cgroup paths Docker uses for a container, under each driver.
fn candidates(id: &str) -> [String; 2] {
    [format!("docker/{id}"), format!("system.slice/docker-{id}.scope")]
}

/// Which files a container's figures come from, and how they read.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// cgroup v2: `cpu.stat` (usage_usec), `memory.current`, `memory.max`.
    Unified,
    /// cgroup v1: `cpuacct.usage` (ns), `memory.usage_in_bytes`, `memory.limit_in_bytes`.
    Split,
}

impl Layout {
    /// File names: CPU, memory in use, memory limit, block I/O.
    fn names(self) -> [&'static str; 4] {
        match self {
            Layout::Unified => ["cpu.stat", "memory.current", "memory.max", "io.stat"],
            Layout::Split => ["cpuacct.usage", "memory.usage_in_bytes", "memory.limit_in_bytes", "blkio.throttle.io_service_bytes"],
        }
    }
}

/// A container's cgroup files, found once and kept open (`KeptFile`).
#[derive(Debug)]
struct Files {
    layout: Layout,
    cpu: KeptFile,
    memory: KeptFile,
    memory_stat: KeptFile,
    memory_limit: KeptFile,
    io: KeptFile,
    pids: KeptFile,
    procs: KeptFile,
    /// `/proc/<pid>/net/dev` of a process in the container; found again when it fails.
    net: Option<KeptFile>,
}

impl Files {
    fn find(h: &Hierarchy, id: &str) -> Option<Files> {
        candidates(id).into_iter().find_map(|rel| {
            // The directories holding the CPU, memory, block I/O and pids files.
            let (layout, [cpu, memory, io, pids]) = match h {
                Hierarchy::Unified(root) => (Layout::Unified, [root.join(&rel), root.join(&rel), root.join(&rel), root.join(&rel)]),
                Hierarchy::Split { cpuacct, memory, blkio, pids } => (Layout::Split, [cpuacct.join(&rel), memory.join(&rel), blkio.join(&rel), pids.join(&rel)]),
            };
            if !cpu.is_dir() {
                return None;
            }
            let [cpu_file, memory_file, limit_file, io_file] = layout.names();
            Some(Files {
                layout,
                cpu: KeptFile::new(cpu.join(cpu_file)),
                memory: KeptFile::new(memory.join(memory_file)),
                memory_stat: KeptFile::new(memory.join("memory.stat")),
                memory_limit: KeptFile::new(memory.join(limit_file)),
                io: KeptFile::new(io.join(io_file)),
                pids: KeptFile::new(pids.join("pids.current")),
                procs: KeptFile::new(pids.join("cgroup.procs")),
                net: None,
            })
        })
    }

    /// Reads every figure; None when the CPU or memory files cannot be read
    /// (the container is gone, or its cgroup moved).
    fn read(&mut self, proc_root: &Path, buf: &mut Vec<u8>) -> Option<Reading> {
        let (cpu_ns, inactive_key) = match self.layout {
            Layout::Unified => (stat_value(self.cpu.read(buf)?, "usage_usec")?.saturating_mul(1000), "inactive_file"),
            Layout::Split => (self.cpu.read_u64(buf)?, "total_inactive_file"),
        };
        let used = self.memory.read_u64(buf)?;
        // Like `docker stats`: page cache that could be dropped is not "used".
        let inactive = self.memory_stat.read(buf).and_then(|s| stat_value(s, inactive_key)).unwrap_or(0);
        // v2 writes "max" for no limit, which does not parse: None, as it should.
        let limit = self.memory_limit.read_u64(buf).filter(|l| *l < UNLIMITED);
        let (read_bytes, write_bytes) = match (self.layout, self.io.read(buf)) {
            (_, None) => (0, 0),
            (Layout::Unified, Some(text)) => parse_io_v2(text),
            (Layout::Split, Some(text)) => parse_blkio_v1(text),
        };
        let pids = self.pids.read_u64(buf).unwrap_or(0);
        let (rx_bytes, tx_bytes) = self.net_totals(proc_root, buf).unwrap_or((0, 0));
        Some(Reading { cpu_ns, memory_used: used.saturating_sub(inactive), memory_limit: limit, read_bytes, write_bytes, rx_bytes, tx_bytes, pids })
    }

    /// Network totals of the container's namespace, through any of its processes.
    fn net_totals(&mut self, proc_root: &Path, buf: &mut Vec<u8>) -> Option<(u64, u64)> {
        if let Some(totals) = self.net.as_mut().and_then(|net| net.read(buf)).filter(|t| !t.is_empty()).map(parse_net_dev) {
            return Some(totals);
        }
        // First time, or that process has exited: find another.
        let pid = self.procs.read(buf)?.lines().next()?.trim().to_owned();
        let mut net = KeptFile::new(proc_root.join(pid).join("net/dev"));
        let totals = net.read(buf).map(parse_net_dev);
        self.net = Some(net);
        totals
    }
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

/// `/proc/net/dev` text: each interface's name and its received and sent byte totals.
pub fn net_dev_interfaces(text: &str) -> impl Iterator<Item = (&str, u64, u64)> {
    text.lines().skip(2).filter_map(|line| {
        let (name, rest) = line.split_once(':')?;
        let mut fields = rest.split_whitespace().map(|v| v.parse::<u64>().ok());
        let rx = fields.next()??;
        let tx = fields.nth(7)??;
        Some((name.trim(), rx, tx))
    })
}

/// `/proc/<pid>/net/dev`: (rx, tx) bytes over every interface but loopback.
pub fn parse_net_dev(text: &str) -> (u64, u64) {
    net_dev_interfaces(text).filter(|(name, ..)| *name != "lo").fold((0, 0), |(rx, tx), (_, r, t)| (rx + r, tx + t))
}

/// Memory limits this large mean "none" (v1 writes 2^63 rounded to pages).
const UNLIMITED: u64 = 1 << 60;

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
    files: HashMap<String, Files>,
    /// Scratch space every file is read into.
    buf: Vec<u8>,
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
        Self { hierarchy, proc_root, files: HashMap::new(), buf: Vec::new(), last: HashMap::new(), warned: HashSet::new() }
    }

    /// Reads every container in `watched` at `now`; containers no longer
    /// watched are forgotten.
    pub fn sample(&mut self, watched: &[Watched], now: Instant) -> Vec<ContainerFigures> {
        let Some(h) = &self.hierarchy else { return Vec::new() };
        let ids: HashSet<&str> = watched.iter().map(|w| w.container.as_str()).collect();
        self.files.retain(|id, _| ids.contains(id.as_str()));
        self.last.retain(|id, _| ids.contains(id.as_str()));
        self.warned.retain(|id| ids.contains(id.as_str()));
        let mut out = Vec::with_capacity(watched.len());
        for w in watched {
            let mut reading = self.files.get_mut(&w.container).and_then(|f| f.read(&self.proc_root, &mut self.buf));
            if reading.is_none() {
                // Not found yet, or its cgroup went away: look again once.
                if let Some(mut files) = Files::find(h, &w.container) {
                    reading = files.read(&self.proc_root, &mut self.buf);
                    self.files.insert(w.container.clone(), files);
                }
            }
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
