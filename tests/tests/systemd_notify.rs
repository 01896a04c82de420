//! systemd supervision of a real `sluice coordinator` process: the test plays
//! the service manager, binding the unix datagram socket it passes in
//! `NOTIFY_SOCKET` with `WATCHDOG_USEC` of 2 s, and reads what arrives.
//!
//! `READY=1` must come when the API already answers, `WATCHDOG=1` about every
//! second (half the interval) while the process is healthy, and `STOPPING=1`
//! on SIGTERM. The second test wedges the Raft loop for real, by stalling the
//! FUSE disk under its data directory (`sluice_tests::powercut`) while a write
//! is pending: the pings must stop although `/healthz` still answers, and
//! come back when the disk does. The third runs `sluice agent` (on the real
//! Docker Engine) before its coordinator exists: it must say what it waits for
//! and become ready only once the coordinator has its first report. The binary is the static build of
//! scripts/build-images.sh, or `SLUICE_BIN`; FUSE needs `/dev/fuse` and
//! `fusermount3` (scripts/prereqs.sh installs fuse3). Without them the tests fail.

use anyhow::{bail, Context, Result};
use sluice_tests::ports::free_port;
use sluice_tests::powercut::PowerCutDisk;
use sluice_tests::process_cluster::sluice_binary;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WATCHDOG: Duration = Duration::from_secs(2);

/// The service manager's end: the notification socket and what came on it.
struct Manager {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Manager {
    fn bind(dir: &Path) -> Result<Manager> {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).context("binding the notify socket")?;
        Ok(Manager { socket, path })
    }

    /// The next notification within `timeout`, as its lines.
    fn next(&self, timeout: Duration) -> Result<Option<Vec<String>>> {
        self.socket.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Ok(Some(String::from_utf8_lossy(&buf[..n]).lines().map(String::from).collect())),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits up to `timeout` for a notification with `line`; returns it.
    fn wait_for(&self, line: &str, timeout: Duration, process: &Process) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(lines) = self.next(left)? {
                if lines.iter().any(|l| l == line) {
                    return Ok(lines);
                }
            }
        }
        bail!("no {line} within {timeout:?}; the process's log:\n{}", process.log())
    }

    /// When each `WATCHDOG=1` arrived during `window`, and the last status line seen.
    fn pings_during(&self, window: Duration) -> Result<(Vec<Instant>, Option<String>)> {
        let (mut pings, mut status) = (Vec::new(), None);
        let end = Instant::now() + window;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let Some(lines) = self.next(left)? else { break };
            if lines.iter().any(|l| l == "WATCHDOG=1") {
                pings.push(Instant::now());
            }
            if let Some(s) = lines.iter().find_map(|l| l.strip_prefix("STATUS=")) {
                status = Some(s.to_string());
            }
        }
        Ok((pings, status))
    }
}

/// A `sluice` process, logging to a file; killed when dropped.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Runs `sluice args...`; under `manager`, with `watchdog`, if given.
    fn spawn(args: &[String], manager: Option<(&Manager, Duration)>, log: PathBuf) -> Result<Process> {
        let out = std::fs::File::create(&log)?;
        let binary = sluice_binary()?;
        let mut command = Command::new(&binary);
        command.args(args).env("RUST_LOG", "info").env("NO_COLOR", "1").env_remove("NOTIFY_SOCKET").env_remove("WATCHDOG_USEC").env_remove("WATCHDOG_PID");
        if let Some((manager, watchdog)) = manager {
            command.env("NOTIFY_SOCKET", &manager.path).env("WATCHDOG_USEC", watchdog.as_micros().to_string());
        }
        let child = command.stdout(Stdio::from(out.try_clone()?)).stderr(Stdio::from(out)).spawn().with_context(|| format!("starting {}", binary.display()))?;
        Ok(Process { child, log })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, name: &str) -> Result<()> {
        let status = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -{name} failed");
        Ok(())
    }

    /// Waits for the process to exit successfully (after a SIGTERM).
    fn exits_cleanly(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(exit) = self.child.try_wait()? {
                anyhow::ensure!(exit.success(), "exited with {exit}:\n{}", self.log());
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "still running {within:?} after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A single `sluice coordinator` (auth off) on loopback ports, its API on `api`.
struct Coordinator {
    process: Process,
    api: u16,
    gateway: u16,
}

impl Coordinator {
    fn start(manager: Option<&Manager>, data: &Path, log: PathBuf, api: u16) -> Result<Coordinator> {
        let (gateway, raft) = (free_port("127.0.0.1")?, free_port("127.0.0.1")?);
        let mut args: Vec<String> = ["coordinator", "--auth", "off", "--no-image-pinning", "--predict-policy", "off", "--gateway-threads", "1"].map(String::from).to_vec();
        args.extend(["--api".into(), format!("127.0.0.1:{api}"), "--gateway".into(), format!("127.0.0.1:{gateway}"), "--raft".into(), format!("127.0.0.1:{raft}")]);
        args.extend(["--data-dir".into(), data.display().to_string()]);
        let process = Process::spawn(&args, manager.map(|m| (m, WATCHDOG)), log)?;
        Ok(Coordinator { process, api, gateway })
    }

    fn log(&self) -> String {
        self.process.log()
    }
}

/// One HTTP/1.1 request on a fresh connection; the status code and body.
fn http(port: u16, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).with_context(|| format!("not an HTTP response: {response:?}"))?;
    Ok((code, response))
}

/// Asserts every gap between consecutive pings is about half the watchdog interval.
fn assert_steady(pings: &[Instant], window: Duration, watchdog: Duration) {
    let half = watchdog / 2;
    let expected = (window.as_secs_f64() / half.as_secs_f64()) as usize;
    assert!(pings.len() + 1 >= expected, "{} pings in {window:?}, expected about {expected}", pings.len());
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= half.mul_f64(0.6) && gap <= half.mul_f64(1.5), "a gap of {gap:?} between watchdog pings, expected about {half:?}");
    }
}

#[test]
fn ready_when_serving_then_watchdog_pings_then_stopping_on_sigterm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let manager = Manager::bind(dir.path())?;
    let mut coordinator = Coordinator::start(Some(&manager), &dir.path().join("data"), dir.path().join("coordinator.log"), free_port("127.0.0.1")?)?;

    // The first thing it says is that it is ready; no watchdog ping before that.
    let first = manager.next(Duration::from_secs(30))?.with_context(|| format!("nothing on the notify socket in 30 s:\n{}", coordinator.log()))?;
    assert!(first.iter().any(|l| l == "READY=1"), "the first notification is {first:?}, not READY=1");
    // At once, with no retry: both servers listen, the API answers.
    let (code, body) = http(coordinator.api, "GET", "/healthz", "")?;
    assert_eq!(code, 200, "/healthz right after READY=1: {body}");
    TcpStream::connect(("127.0.0.1", coordinator.gateway)).context("the gateway right after READY=1")?;
    assert!(first.iter().any(|l| l.starts_with("STATUS=")), "READY=1 comes with a status: {first:?}");

    let window = Duration::from_millis(5500);
    let (pings, status) = manager.pings_during(window)?;
    assert_steady(&pings, window, WATCHDOG);
    let status = status.unwrap_or_default();
    assert!(status.starts_with("leader of 1;"), "the status line says it leads a cluster of one: {status:?}");

    coordinator.process.signal("TERM")?;
    manager.wait_for("STOPPING=1", Duration::from_secs(5), &coordinator.process)?;
    coordinator.process.exits_cleanly(Duration::from_secs(15))
}

#[test]
fn the_watchdog_goes_quiet_while_the_raft_loop_is_wedged_on_its_disk() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mount = dir.path().join("disk");
    std::fs::create_dir(&mount)?;
    let disk = PowerCutDisk::mount(&mount)?;
    let manager = Manager::bind(dir.path())?;
    let coordinator = Coordinator::start(Some(&manager), &mount.join("data"), dir.path().join("coordinator.log"), free_port("127.0.0.1")?)?;
    manager.wait_for("READY=1", Duration::from_secs(30), &coordinator.process)?;
    // Healthy first: it leads, has written its first entries, and pings.
    let (pings, _) = manager.pings_during(Duration::from_secs(3))?;
    anyhow::ensure!(pings.len() >= 2, "only {} pings in 3 s before the stall:\n{}", pings.len(), coordinator.log());
    let (code, body) = http(coordinator.api, "POST", "/v1/functions", r#"{"name":"before","image":"127.0.0.1:5000/sluice/hello:latest"}"#)?;
    assert!((200..300).contains(&code), "a write before the stall: {body}");

    let stall = disk.stall();
    // A write now hangs the Raft loop in its disk write or fsync; its client
    // gives up, the loop stays stuck.
    let _ = http(coordinator.api, "POST", "/v1/functions", r#"{"name":"during","image":"127.0.0.1:5000/sluice/hello:latest"}"#);
    // A ping answered just before the write may still be on its way: let it land.
    manager.pings_during(WATCHDOG / 2)?;
    let (pings, status) = manager.pings_during(Duration::from_secs(4))?;
    let (code, body) = http(coordinator.api, "GET", "/healthz", "")?;
    drop(stall);
    assert_eq!(pings.len(), 0, "watchdog pings while the Raft loop was stuck on its disk; status {status:?}");
    assert!(status.as_deref().is_some_and(|s| s.starts_with("unhealthy:")), "the status says why: {status:?}");
    assert_eq!(code, 200, "the process itself still served /healthz: {body}");

    // The disk answers again, and so does the loop: the pings come back.
    manager.wait_for("WATCHDOG=1", Duration::from_secs(5), &coordinator.process)?;
    drop(coordinator);
    Ok(())
}

#[test]
fn an_agent_is_ready_once_a_coordinator_has_accepted_its_first_report() -> Result<()> {
    // The agent's loop turns once a second: pings every 2 s always see it move.
    let watchdog = Duration::from_secs(4);
    let dir = tempfile::tempdir()?;
    let manager = Manager::bind(dir.path())?;
    let api = free_port("127.0.0.1")?;
    let node = format!("notify-{}", std::process::id());
    let args: Vec<String> = ["agent", "--coordinator", &format!("http://127.0.0.1:{api}"), "--node", &node, "--agent-metrics", "127.0.0.1:0"].map(String::from).to_vec();
    let mut agent = Process::spawn(&args, Some((&manager, watchdog)), dir.path().join("agent.log"))?;

    // No coordinator yet: the agent says what it waits for, and is not ready.
    let first = manager.next(Duration::from_secs(30))?.with_context(|| format!("nothing from the agent in 30 s:\n{}", agent.log()))?;
    assert!(first.iter().any(|l| l.starts_with("STATUS=waiting for a coordinator")), "the agent's first notification: {first:?}");
    let end = Instant::now() + Duration::from_secs(3);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if let Some(lines) = manager.next(left)? {
            assert!(!lines.iter().any(|l| l == "READY=1" || l == "WATCHDOG=1"), "ready with no coordinator to report to: {lines:?}");
        }
    }

    let coordinator = Coordinator::start(None, &dir.path().join("data"), dir.path().join("coordinator.log"), api)?;
    let ready = manager.wait_for("READY=1", Duration::from_secs(30), &agent)?;
    let (code, nodes) = http(coordinator.api, "GET", "/v1/nodes", "")?;
    assert!(code == 200 && nodes.contains(&format!("\"{node}\"")), "READY=1 ({ready:?}) before the coordinator knew the node: {nodes}\n{}", coordinator.log());

    let window = Duration::from_secs(7);
    let (pings, status) = manager.pings_during(window)?;
    assert_steady(&pings, window, watchdog);
    assert!(status.as_deref().is_some_and(|s| s.starts_with("serving;")), "the agent's status: {status:?}");

    agent.signal("TERM")?;
    manager.wait_for("STOPPING=1", Duration::from_secs(5), &agent)?;
    agent.exits_cleanly(Duration::from_secs(15))
}
