//! What a coordinator acknowledged survives a power cut that loses every
//! write not yet synced to disk.
//!
//! A real `sluice coordinator` process (a cluster of one, the static build of
//! scripts/build-images.sh or `SLUICE_BIN`) keeps its data directory on a FUSE
//! disk that holds writes in memory until they are synced
//! (`sluice_tests::powercut`). Functions are created while the process is
//! SIGKILLed; the disk then loses power (everything unsynced is dropped), the
//! coordinator starts again on what survived, and every function whose
//! creation was acknowledged must be there. The first test is the control: the
//! disk really does lose what was written and not synced, so a coordinator
//! that acknowledged before its fsync would fail the second.
//!
//! Needs FUSE (`/dev/fuse`, `fusermount3`; scripts/prereqs.sh installs fuse3):
//! without it the tests fail, saying so, rather than skip.

use anyhow::{bail, Context, Result};
use serde_json::json;
use sluice_tests::ports::free_port;
use sluice_tests::powercut::PowerCutDisk;
use sluice_tests::process_cluster::sluice_binary;
use sluice_tests::{Http, Method};
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The tests take turns. A process spawned by one test (its coordinator)
/// starts as a copy of this test process, with every open file of the other
/// test, and keeps them until it execs; a FUSE disk the other test unmounts in
/// that moment is busy (EBUSY), and that test fails for nothing it checks.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[test]
fn the_disk_loses_what_was_not_synced() -> Result<()> {
    let _turn = SERIAL.blocking_lock();
    let dir = tempfile::tempdir()?;
    let mut disk = PowerCutDisk::mount(dir.path())?;
    let kept = disk.path().join("kept");
    let lost = disk.path().join("lost");
    {
        let mut f = std::fs::File::create(&kept)?;
        f.write_all(b"synced")?;
        f.sync_data()?;
        // Written after the sync, and never synced.
        f.write_all(b" and more")?;
        std::fs::write(&lost, b"never synced")?;
    }
    assert_eq!(std::fs::read(&kept)?, b"synced and more", "writes are seen at once, as through a page cache");
    assert_eq!(std::fs::read(&lost)?, b"never synced");

    disk.unmount()?;
    disk.cut()?;
    disk.remount()?;
    assert_eq!(std::fs::read(&kept)?, b"synced", "only what was synced survives");
    // The sync of `kept` committed the names created before it, not `lost` (created after).
    assert!(!lost.exists(), "a file created after the last sync is gone");
    Ok(())
}

/// A `sluice coordinator` whose data directory is `data`, on loopback ports.
struct Coordinator {
    child: Child,
    api: String,
}

impl Coordinator {
    fn start(binary: &std::path::Path, data: &std::path::Path, log: &std::path::Path, api: u16) -> Result<Self> {
        let port = || free_port("127.0.0.1");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = Command::new(binary)
            .args(["coordinator", "--api", &format!("127.0.0.1:{api}"), "--gateway", &format!("127.0.0.1:{}", port()?), "--raft", &format!("127.0.0.1:{}", port()?)])
            .args(["--data-dir", &data.display().to_string(), "--predict-policy", "off", "--gateway-threads", "1", "--auth", "off", "--no-image-pinning"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self { child, api: format!("http://127.0.0.1:{api}") })
    }

    async fn wait_leader(&self, http: &Http, log: &std::path::Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = http.get(&format!("{}/v1/cluster", self.api)).await {
                if r.json().is_ok_and(|v| v["leader"].as_u64().is_some()) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the coordinator did not lead within 30 s:\n{}", std::fs::read_to_string(log).unwrap_or_default())
    }

    /// SIGKILL: nothing is flushed or synced on the way out.
    fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_power_cut() -> Result<()> {
    let _turn = SERIAL.lock().await;
    sluice_tests::init_logs();
    let binary = sluice_binary()?;
    let dir = tempfile::tempdir()?;
    let mount = dir.path().join("disk");
    std::fs::create_dir(&mount)?;
    let log = dir.path().join("coordinator.log");
    let mut disk = PowerCutDisk::mount(&mount)?;
    let data = mount.join("data");
    let api = free_port("127.0.0.1")?;
    let http = Http::fresh_connections(Duration::from_millis(500));

    let mut coordinator = Coordinator::start(&binary, &data, &log, api)?;
    coordinator.wait_leader(&http, &log).await?;
    let cluster_id = async {
        for _ in 0..100 {
            let status = http.get(&format!("{}/v1/cluster", coordinator.api)).await?.json()?;
            if let Some(id) = status["cluster_id"].as_str() {
                return Ok(id.to_string());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(String::new())
    }
    .await?;

    // Writes one after another until the process is killed under them.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let writer = {
        let (http, url, acknowledged) = (http.clone(), format!("{}/v1/functions", coordinator.api), acknowledged.clone());
        tokio::spawn(async move {
            for i in 0.. {
                let name = format!("f{i}");
                let spec = json!({"name": name, "image": "127.0.0.1:5000/sluice/hello:latest"});
                match http.json(Method::POST, &url, &spec).await {
                    Ok(r) if r.status.is_success() => {
                        acknowledged.lock().unwrap().insert(name);
                    }
                    _ => return,
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().unwrap().len() < 40 {
        if Instant::now() > deadline || writer.is_finished() {
            bail!("the coordinator acknowledged {} writes in 30 s:\n{}", acknowledged.lock().unwrap().len(), std::fs::read_to_string(&log)?);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    coordinator.kill()?;
    let _ = writer.await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    tracing::info!(acknowledged = acknowledged.len(), syncs = disk.syncs(), "power cut");

    disk.unmount()?;
    disk.cut()?;
    disk.remount()?;

    let coordinator = Coordinator::start(&binary, &data, &log, api)?;
    coordinator.wait_leader(&http, &log).await?;
    let functions = http.get(&format!("{}/v1/functions", coordinator.api)).await?.json()?;
    let present: BTreeSet<String> = functions.as_array().into_iter().flatten().filter_map(|f| f["name"].as_str().or(f["spec"]["name"].as_str()).map(String::from)).collect();
    let missing: Vec<&String> = acknowledged.difference(&present).collect();
    assert!(missing.is_empty(), "acknowledged before the power cut, gone after it: {missing:?} (of {} acknowledged)", acknowledged.len());
    let status = http.get(&format!("{}/v1/cluster", coordinator.api)).await?.json()?;
    assert_eq!(status["cluster_id"].as_str(), Some(cluster_id.as_str()).filter(|id| !id.is_empty()), "the same cluster came back");
    Ok(())
}
