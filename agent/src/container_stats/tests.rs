//! The parsers on literal file contents, and whole samples over fake cgroup
//! trees of both versions.

use super::*;
use std::time::Duration;

const MOUNTINFO_V1: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
";

const MOUNTINFO_V2: &str = "\
25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup rw,nosuid,nodev - cgroup2 cgroup2 rw,nsdelegate
";

fn watched(id: &str) -> Watched {
    Watched { container: id.into(), instance: InstanceId(3), function: FunctionName::new("burn").unwrap() }
}

#[test]
fn mountinfo_gives_either_hierarchy() {
    assert_eq!(
        Hierarchy::from_mountinfo(MOUNTINFO_V1),
        Some(Hierarchy::Split {
            cpuacct: "/sys/fs/cgroup/cpu,cpuacct".into(),
            memory: "/sys/fs/cgroup/memory".into(),
            blkio: "/sys/fs/cgroup/blkio".into(),
            pids: "/sys/fs/cgroup/pids".into(),
        })
    );
    assert_eq!(Hierarchy::from_mountinfo(MOUNTINFO_V2), Some(Hierarchy::Unified("/sys/fs/cgroup".into())));
    assert_eq!(Hierarchy::from_mountinfo("1 2 0:1 / / rw - ext4 /dev/vda rw"), None);
}

#[test]
fn file_parsers() {
    assert_eq!(parse_blkio_v1("8:0 Read 4096\n8:0 Write 100\n8:16 Read 4\n8:0 Total 4196\nTotal 4200\n"), (4100, 100));
    assert_eq!(parse_io_v2("8:0 rbytes=10 wbytes=20 rios=1 wios=2\n8:16 rbytes=5 wbytes=0\n"), (15, 20));
    let net = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n    lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0\n  eth0: 1500 10 0 0 0 0 0 0 700 5 0 0 0 0 0 0\n";
    assert_eq!(parse_net_dev(net), (1500, 700));
    assert_eq!(stat_value("usage_usec 123\nuser_usec 100\n", "usage_usec"), Some(123));
    assert_eq!(stat_value("total_inactive_file 7\ninactive_file 3\n", "inactive_file"), Some(3));
}

#[test]
fn rates_from_two_readings_and_none_across_a_restart() {
    let w = watched("c");
    let a = Reading { cpu_ns: 1_000_000_000, rx_bytes: 100, pids: 2, ..Reading::default() };
    let b = Reading { cpu_ns: 1_500_000_000, rx_bytes: 300, pids: 3, ..Reading::default() };
    let f = rates(&w, &b, Some((&a, 1.0)));
    assert_eq!((f.cpu_percent, f.net_rx_bytes_per_sec, f.pids), (Some(50.0), 200.0, 3));
    assert_eq!(rates(&w, &b, None).cpu_percent, None, "first sample");
    let restarted = Reading { cpu_ns: 10, ..Reading::default() };
    let f = rates(&w, &restarted, Some((&b, 1.0)));
    assert_eq!((f.cpu_percent, f.net_rx_bytes_per_sec), (None, 0.0));
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        fs::write(dir.join(name), text).unwrap();
    }
}

fn fake_proc(root: &Path, pid: &str, rx: u64) {
    let net = format!("h1\nh2\n  eth0: {rx} 1 0 0 0 0 0 0 50 1 0 0 0 0 0 0\n");
    write(&root.join(pid).join("net"), &[("dev", &net)]);
}

#[test]
fn a_v2_systemd_tree_samples_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = tmp.path().join("cgroup");
    let dir = cg.join("system.slice/docker-abc.scope");
    let files = |usage: &str| {
        [
            ("cpu.stat", usage.to_string()),
            ("memory.current", "5000\n".into()),
            ("memory.stat", "anon 1\ninactive_file 1000\n".into()),
            ("memory.max", "max\n".into()),
            ("io.stat", "8:0 rbytes=0 wbytes=4096\n".into()),
            ("pids.current", "4\n".into()),
            ("cgroup.procs", "42\n".into()),
        ]
    };
    let first = files("usage_usec 1000000\n");
    write(&dir, &first.iter().map(|(a, b)| (*a, b.as_str())).collect::<Vec<_>>());
    fake_proc(&tmp.path().join("proc"), "42", 0);
    let mut c = ContainerCollector::new(Some(Hierarchy::Unified(cg)), tmp.path().join("proc"));
    let t0 = Instant::now();
    let s = c.sample(&[watched("abc")], t0);
    assert_eq!((s.len(), s[0].cpu_percent, s[0].memory_used_bytes, s[0].memory_limit_bytes, s[0].pids), (1, None, 4000, None, 4));
    fs::write(dir.join("cpu.stat"), "usage_usec 1250000\n").unwrap();
    fake_proc(&tmp.path().join("proc"), "42", 2000);
    let s = c.sample(&[watched("abc")], t0 + Duration::from_millis(500));
    assert_eq!(s[0].cpu_percent, Some(50.0));
    assert_eq!(s[0].net_rx_bytes_per_sec, 4000.0);
    // Gone from the watch list: forgotten.
    assert!(c.sample(&[], t0 + Duration::from_secs(1)).is_empty());
    assert!(c.last.is_empty());
}

#[test]
fn a_v1_cgroupfs_tree_samples_and_a_missing_container_is_left_out() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let h = Hierarchy::Split { cpuacct: root.join("cpuacct"), memory: root.join("memory"), blkio: root.join("blkio"), pids: root.join("pids") };
    write(&root.join("cpuacct/docker/abc"), &[("cpuacct.usage", "2000000000\n")]);
    write(&root.join("memory/docker/abc"), &[("memory.usage_in_bytes", "8192\n"), ("memory.stat", "total_inactive_file 192\n"), ("memory.limit_in_bytes", "67108864\n")]);
    write(&root.join("blkio/docker/abc"), &[("blkio.throttle.io_service_bytes", "Total 0\n")]);
    write(&root.join("pids/docker/abc"), &[("pids.current", "2\n"), ("cgroup.procs", "7\n")]);
    fake_proc(&root.join("proc"), "7", 10);
    let mut c = ContainerCollector::new(Some(h), root.join("proc"));
    let s = c.sample(&[watched("abc"), watched("gone")], Instant::now());
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].memory_used_bytes, s[0].memory_limit_bytes, s[0].pids), (8000, Some(64 << 20), 2));
}
