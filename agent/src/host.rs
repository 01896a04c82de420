//! Host figures: CPU (total and per core), memory, swap, load and disk rates
//! from `sysinfo`, network rates from `/proc/net/dev`. The agent samples them on
//! an interval and shows the latest on its `/metrics`.
//!
//! Network is read directly because `sysinfo` reads about seven sysfs files per
//! interface, and every container adds a veth: with 50 containers that was a
//! quarter of the agent's CPU (B5). One kept-open `/proc/net/dev` holds them all.
//! Only interfaces backed by a device count (not lo, veths or bridges, whose
//! traffic is the same bytes again), unless there are none, as inside a
//! container, where all but lo count. Disks are refreshed for I/O counters only
//! (no statfs, which can block on network and FUSE mounts), and a device mounted
//! twice counts once.
//!
//! Rates come from cumulative counters: each sample keeps the totals, and the
//! next one divides the difference by the time between them (`rate`, pure), so a
//! late or skipped sample gives a correct average instead of a spike.

use crate::container_stats::net_dev_interfaces;
use crate::kept_file::KeptFile;
use sluice_common::metrics::{header, sample};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};
use sysinfo::{CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, RefreshKind, System};

/// One reading of the host: the wire format's host figures, so what the agent
/// shows on `/metrics` and what it publishes are the same numbers.
pub use sluice_common::wire::HostFigures as HostSample;

/// Cumulative I/O counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    disk_read: u64,
    disk_written: u64,
    net_rx: u64,
    net_tx: u64,
}

/// Samples between re-reads of the mount table, for disks mounted since.
const DISK_LIST_EVERY: u32 = 60;

pub struct HostCollector {
    system: System,
    disks: Disks,
    samples: u32,
    net_dev: KeptFile,
    /// Whether each interface seen is backed by a device (`/sys/class/net/<name>/device`).
    physical: HashMap<String, bool>,
    buf: Vec<u8>,
    last: Option<(Totals, Instant)>,
}

impl Default for HostCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl HostCollector {
    pub fn new() -> Self {
        let refresh = RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing().with_cpu_usage()).with_memory(MemoryRefreshKind::everything());
        Self {
            system: System::new_with_specifics(refresh),
            disks: Disks::new_with_refreshed_list_specifics(DiskRefreshKind::nothing().with_io_usage()),
            samples: 0,
            net_dev: KeptFile::new("/proc/net/dev".into()),
            physical: HashMap::new(),
            buf: Vec::new(),
            last: None,
        }
    }

    /// Read and written byte totals over the mounted disks, each device once.
    fn disk_totals(&mut self) -> (u64, u64) {
        let io_only = DiskRefreshKind::nothing().with_io_usage();
        self.samples = self.samples.wrapping_add(1);
        if self.samples.is_multiple_of(DISK_LIST_EVERY) {
            self.disks.refresh_specifics(true, io_only);
        } else {
            for disk in self.disks.list_mut() {
                disk.refresh_specifics(io_only);
            }
        }
        let mut seen = HashSet::new();
        self.disks.list().iter().filter(|d| seen.insert(d.name())).fold((0, 0), |(r, w), d| (r + d.usage().total_read_bytes, w + d.usage().total_written_bytes))
    }

    /// Received and sent byte totals over the host's device-backed interfaces.
    fn network_totals(&mut self) -> (u64, u64) {
        let Some(text) = self.net_dev.read(&mut self.buf) else { return (0, 0) };
        let interfaces: Vec<(&str, u64, u64)> = net_dev_interfaces(text).filter(|(name, ..)| *name != "lo").collect();
        self.physical.retain(|name, _| interfaces.iter().any(|(n, ..)| n == name));
        for (name, ..) in &interfaces {
            if !self.physical.contains_key(*name) {
                let backed = Path::new("/sys/class/net").join(name).join("device").exists();
                self.physical.insert((*name).to_owned(), backed);
            }
        }
        sum_interfaces(&interfaces, |name| self.physical[name])
    }

    /// Reads the host. CPU shares and rates cover the time since the previous
    /// call (the first call's rates are 0: there is nothing to compare with).
    pub fn sample(&mut self) -> HostSample {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let (disk_read, disk_written) = self.disk_totals();
        let (net_rx, net_tx) = self.network_totals();
        let now = Instant::now();
        let totals = Totals { disk_read, disk_written, net_rx, net_tx };
        let elapsed = self.last.map(|(_, at)| now.duration_since(at)).unwrap_or_default();
        let before = self.last.map_or(totals, |(t, _)| t);
        self.last = Some((totals, now));
        let load = System::load_average();
        HostSample {
            cpu_percent: self.system.global_cpu_usage(),
            cpu_per_core: self.system.cpus().iter().map(|c| c.cpu_usage()).collect(),
            memory_total_bytes: self.system.total_memory(),
            memory_used_bytes: self.system.used_memory(),
            swap_total_bytes: self.system.total_swap(),
            swap_used_bytes: self.system.used_swap(),
            load: [load.one, load.five, load.fifteen],
            disk_read_bytes_per_sec: rate(before.disk_read, totals.disk_read, elapsed),
            disk_write_bytes_per_sec: rate(before.disk_written, totals.disk_written, elapsed),
            net_rx_bytes_per_sec: rate(before.net_rx, totals.net_rx, elapsed),
            net_tx_bytes_per_sec: rate(before.net_tx, totals.net_tx, elapsed),
        }
    }
}

/// Byte totals over the device-backed interfaces, or over all of them when none is.
fn sum_interfaces(interfaces: &[(&str, u64, u64)], backed: impl Fn(&str) -> bool) -> (u64, u64) {
    let any_backed = interfaces.iter().any(|(name, ..)| backed(name));
    interfaces.iter().filter(|(name, ..)| !any_backed || backed(name)).fold((0, 0), |(rx, tx), (_, r, t)| (rx + r, tx + t))
}

/// Per-second rate of a counter that went from `before` to `after` in `elapsed`.
/// A counter that went down (an interface or disk went away, or wrapped) gives 0
/// rather than a huge bogus rate.
fn rate(before: u64, after: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() || after < before {
        return 0.0;
    }
    (after - before) as f64 / elapsed.as_secs_f64()
}

/// Appends `s` in Prometheus text format.
pub fn render(s: &HostSample, out: &mut String) {
    header(out, "sluice_host_cpu_percent", "gauge", "Busy share of all cores (0-100).");
    sample(out, "sluice_host_cpu_percent", "", s.cpu_percent);
    header(out, "sluice_host_cpu_core_percent", "gauge", "Busy share of each core (0-100).");
    for (i, c) in s.cpu_per_core.iter().enumerate() {
        sample(out, "sluice_host_cpu_core_percent", &format!("core=\"{i}\""), c);
    }
    for (name, help, value) in [
        ("sluice_host_memory_total_bytes", "Physical memory.", s.memory_total_bytes),
        ("sluice_host_memory_used_bytes", "Physical memory in use.", s.memory_used_bytes),
        ("sluice_host_swap_total_bytes", "Swap space.", s.swap_total_bytes),
        ("sluice_host_swap_used_bytes", "Swap space in use.", s.swap_used_bytes),
    ] {
        header(out, name, "gauge", help);
        sample(out, name, "", value);
    }
    header(out, "sluice_host_load", "gauge", "Load average over 1, 5 and 15 minutes.");
    for (window, value) in ["1m", "5m", "15m"].iter().zip(s.load) {
        sample(out, "sluice_host_load", &format!("window=\"{window}\""), value);
    }
    for (name, help, value) in [
        ("sluice_host_disk_read_bytes_per_second", "Bytes read from disks per second.", s.disk_read_bytes_per_sec),
        ("sluice_host_disk_write_bytes_per_second", "Bytes written to disks per second.", s.disk_write_bytes_per_sec),
        ("sluice_host_network_receive_bytes_per_second", "Bytes received per second on device-backed interfaces.", s.net_rx_bytes_per_sec),
        ("sluice_host_network_transmit_bytes_per_second", "Bytes sent per second on device-backed interfaces.", s.net_tx_bytes_per_sec),
    ] {
        header(out, name, "gauge", help);
        sample(out, name, "", value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_divide_the_growth_by_the_time_and_never_go_negative() {
        assert_eq!(rate(1_000, 3_000, Duration::from_secs(2)), 1_000.0);
        assert_eq!(rate(1_000, 1_000, Duration::from_millis(500)), 0.0);
        assert_eq!(rate(5_000, 10, Duration::from_secs(1)), 0.0, "a counter reset is not a rate");
        assert_eq!(rate(0, 10, Duration::ZERO), 0.0, "the first sample has nothing to compare with");
    }

    #[test]
    fn only_device_backed_interfaces_count_unless_there_are_none() {
        let seen = [("eth0", 100, 10), ("veth1a2b", 50, 5), ("docker0", 20, 2)];
        assert_eq!(sum_interfaces(&seen, |n| n == "eth0"), (100, 10));
        assert_eq!(sum_interfaces(&seen, |_| false), (170, 17), "inside a container nothing is device-backed");
        assert_eq!(sum_interfaces(&[], |_| true), (0, 0));
    }

    #[test]
    fn a_real_sample_is_plausible_and_renders() {
        let mut c = HostCollector::new();
        let _ = c.sample();
        std::thread::sleep(Duration::from_millis(250));
        let s = c.sample();
        assert!(s.memory_total_bytes > 0 && s.memory_used_bytes <= s.memory_total_bytes, "{s:?}");
        assert!(!s.cpu_per_core.is_empty());
        assert!((0.0..=100.0).contains(&s.cpu_percent), "{s:?}");
        assert!(s.net_rx_bytes_per_sec >= 0.0 && s.disk_read_bytes_per_sec >= 0.0);
        let mut text = String::new();
        render(&s, &mut text);
        assert!(text.contains("sluice_host_cpu_percent "), "{text}");
        assert!(text.contains("sluice_host_load{window=\"1m\"}"), "{text}");
    }
}
