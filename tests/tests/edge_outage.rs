//! A5: an edge host's broker goes away for a while and comes back. The agent
//! keeps running with a bounded outbox, counts what it drops, and once the
//! broker is back sends what it kept, in order, and carries on.
//!
//! The broker is a private mosquitto on its own port (`sluice_tests::mosquitto`),
//! stopped (SIGTERM, so it keeps its sessions) and started again here: the link
//! goes away, the broker's state does not.

use anyhow::{Context, Result};
use serde_json::Value;
use sluice_tests::mosquitto::Mosquitto;
use sluice_tests::ports::free_port;
use sluice_tests::{eventually, Cluster};
use std::time::{Duration, Instant};

/// `name{labels}` from Prometheus text, summed over matching lines.
fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' ')).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

async fn host_samples(c: &Cluster, range_secs: u64) -> Result<u64> {
    let view: Value = c.http.get(&c.api(&format!("/v1/metrics/nodes/{}?range={range_secs}s", c.node_id))).await?.json()?;
    Ok(view["series"].as_array().and_then(|s| s.iter().find(|s| s["metric"] == "cpu_percent")).and_then(|s| s["count"].as_u64()).unwrap_or(0))
}

#[tokio::test]
async fn a5_broker_outage_bounded_buffer_counted_drops_and_resumed_flow() -> Result<()> {
    let port = free_port("127.0.0.1")?;
    let state = tempfile::tempdir()?;
    let mut broker = Some(Mosquitto::start("127.0.0.1", port, state.path()).await?);
    let c = Cluster::start_with("t-edge", |a| {
        a.coordinator.bus = Some(format!("mqtt://127.0.0.1:{port}?prefix=edge"));
        a.host.sample_secs = 0.2;
        a.host.bus_buffer_messages = 20;
    })
    .await?;
    let agent_metrics = c.node.agent_metrics_url();
    let result = async {
        eventually("host figures flow", Duration::from_secs(20), || async { Ok((host_samples(&c, 5).await? > 3).then_some(())) }).await?;

        // The link goes down for 8 s: 40 host and 40 container messages against a buffer of 20.
        drop(broker.take());
        let down_at = Instant::now();
        tokio::time::sleep(Duration::from_secs(8)).await;
        let during = c.http.get(&agent_metrics).await.context("the agent must keep answering while the broker is down")?.text();
        let queued = metric(&during, "sluice_agent_outbox_messages{outbox=\"samples\"}");
        let dropped = metric(&during, "sluice_agent_outbox_dropped_total{outbox=\"samples\"}");
        assert!(queued <= 20.0, "the outbox is bounded: {queued} queued");
        assert!(dropped >= 20.0, "drops are counted: {dropped}");

        broker = Some(Mosquitto::start("127.0.0.1", port, state.path()).await?);
        let up_at = Instant::now();
        // Flow resumes, and the kept backlog, stamped during the outage, arrives.
        eventually("the backlog and new figures arrive", Duration::from_secs(30), || async {
            let since_down = down_at.elapsed().as_secs() + 1;
            let since_up = up_at.elapsed().as_secs();
            let (all, recent) = (host_samples(&c, since_down).await?, host_samples(&c, since_up.max(1)).await?);
            Ok((recent >= 3 && all >= recent + 8).then_some(()))
        })
        .await?;
        let after = c.http.get(&agent_metrics).await?.text();
        assert!(metric(&after, "sluice_agent_outbox_delivered_total{outbox=\"samples\"}") > 0.0);
        let coordinator = c.http.get(&c.api("/metrics")).await?.text();
        assert!(metric(&coordinator, "sluice_ingest_lost_total") >= 20.0, "the coordinator sees the gap the drops left");
        Ok(())
    }
    .await;
    c.stop().await?;
    result
}
