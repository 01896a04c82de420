//! B9: samples per second from the metrics bus into the coordinator's windows.
//!
//! Container messages as agents send them (`--nodes` agents x `--containers`
//! containers, 8 figures each, one message per agent per second of data) are
//! published to a Kafka broker under a fresh topic prefix, then read back by a
//! fresh consumer group through the coordinator's own ingest (decode, drop
//! repeats, record into the windows). References in the same run: the same
//! messages through the in-process bus, and the bare windows (records with no
//! bus and no decoding). A sample is one figure of one container at one time.
//!
//! Usage: b9_ingest [--kafka 127.0.0.1:9092] [--nodes 20] [--containers 50] [--seconds 60]

use anyhow::{Context, Result};
use bytes::Bytes;
use sluice_bus::{InProcessBus, KafkaBus, KafkaConfig, Message, MetricsBus, Topic};
use sluice_common::wire::{self, ContainerBatch, ContainerFigures};
use sluice_common::{FunctionName, InstanceId, NodeId, Timestamp};
use sluice_coordinator::ingest::Telemetry;
use sluice_coordinator::windows::{Windows, WindowsConfig};
use std::sync::Arc;
use std::time::Instant;

/// Figures per container record that become samples (cpu, memory, memory %, net x2, block x2, pids).
const FIGURES: u64 = 8;
const T0_MS: u64 = 1_760_000_000_000;

struct Args {
    kafka: String,
    nodes: u64,
    containers: u64,
    seconds: u64,
}

fn args() -> Result<Args> {
    let mut a = Args { kafka: "127.0.0.1:9092".into(), nodes: 20, containers: 50, seconds: 60 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--kafka" => a.kafka = value,
            "--nodes" => a.nodes = value.parse()?,
            "--containers" => a.containers = value.parse()?,
            "--seconds" => a.seconds = value.parse()?,
            other => anyhow::bail!("unknown flag {other}: use --kafka, --nodes, --containers or --seconds"),
        }
    }
    Ok(a)
}

/// Every message of the run, in publishing order (second by second, node by node).
fn messages(a: &Args) -> Vec<Message> {
    let function = FunctionName::new("f").unwrap();
    let mut out = Vec::with_capacity((a.nodes * a.seconds) as usize);
    for second in 0..a.seconds {
        for n in 0..a.nodes {
            let node = NodeId::new(format!("n{n}")).unwrap();
            let containers = (0..a.containers)
                .map(|c| ContainerFigures {
                    instance: InstanceId(n * 1000 + c),
                    function: function.clone(),
                    cpu_percent: Some((second * 7 + c) as f64 % 100.0),
                    memory_used_bytes: 10 << 20,
                    memory_limit_bytes: Some(128 << 20),
                    net_rx_bytes_per_sec: 100.0,
                    net_tx_bytes_per_sec: 50.0,
                    block_read_bytes_per_sec: 0.0,
                    block_write_bytes_per_sec: 4096.0,
                    pids: 3,
                })
                .collect();
            let payload = wire::encode(&node, 1, second + 1, T0_MS + second * 1000, &ContainerBatch { containers });
            out.push(Message { topic: Topic::Container, key: node.to_string(), payload: Bytes::from(payload) });
        }
    }
    out
}

fn telemetry() -> Arc<Telemetry> {
    Telemetry::new(Windows::new(WindowsConfig { max_series: 1_000_000, ..WindowsConfig::default() }))
}

/// Publishes everything, then times reading it all into fresh windows. Returns (seconds, samples stored).
async fn through(bus: Arc<dyn MetricsBus>, msgs: &[Message], group: &str, now: Timestamp) -> Result<(f64, u64)> {
    let mut sub = bus.subscribe(group, &[Topic::Container]).await?;
    let acks: Vec<_> = msgs.iter().map(|m| bus.publish(m.clone())).collect();
    for ack in acks {
        ack.await?;
    }
    let t = telemetry();
    let started = Instant::now();
    for _ in 0..msgs.len() {
        let r = sub.next().await?;
        t.take(r.topic, &r.payload, now);
        sub.processed(&r)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let stored = t.windows().counters().stored;
    Ok((secs, stored))
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let msgs = messages(&a);
    let bytes: usize = msgs.iter().map(|m| m.payload.len()).sum();
    let expected = a.nodes * a.seconds * a.containers * FIGURES;
    println!("b9: {} messages ({:.1} MiB), {} samples", msgs.len(), bytes as f64 / (1 << 20) as f64, expected);

    // Received as the last second's samples are taken: every sample lands in both
    // the fine (1 s) and the coarse (1 min) ring, as live traffic does.
    let now = Timestamp(T0_MS + a.seconds * 1000);
    // Reference 1: the bare windows, recording the same samples with no bus and no decoding.
    let t = telemetry();
    let started = Instant::now();
    for m in &msgs {
        let e = wire::decode::<ContainerBatch>(&m.payload)?;
        sluice_coordinator::ingest::record_containers(&mut t.windows(), &e, now);
    }
    let windows_secs = started.elapsed().as_secs_f64();

    // Reference 2: the in-process bus through the same ingest.
    let (inproc_secs, inproc_stored) = through(Arc::new(InProcessBus::new()), &msgs, "b9", now).await?;

    // Kafka, under a fresh prefix.
    let prefix = format!("b9x{}", std::process::id());
    let mut config = KafkaConfig::new(vec![a.kafka.clone()]);
    config.settings.prefix = prefix.clone();
    let kafka: Arc<dyn MetricsBus> = Arc::new(KafkaBus::connect(&config, "b9").await.context("connecting to Kafka: start it with scripts/brokers.sh start kafka")?);
    let (kafka_secs, kafka_stored) = through(kafka, &msgs, "b9", now).await?;
    anyhow::ensure!(kafka_stored == expected && inproc_stored == expected, "stored {kafka_stored} (kafka) and {inproc_stored} (in-process) of {expected}");

    let rate = |secs: f64| expected as f64 / secs;
    println!("decode + windows only      {:>12.0} samples/s", rate(windows_secs));
    println!("in-process bus + ingest    {:>12.0} samples/s", rate(inproc_secs));
    println!(
        "Kafka (tansu) + ingest     {:>12.0} samples/s   ({:.0} container records/s, {:.1} MiB/s)",
        rate(kafka_secs),
        (a.nodes * a.seconds * a.containers) as f64 / kafka_secs,
        bytes as f64 / (1 << 20) as f64 / kafka_secs
    );
    println!(
        "ratios: kafka/goal(100k) {:.2}   kafka/in-process {:.2}   kafka/windows-only {:.2}",
        rate(kafka_secs) / 100_000.0,
        inproc_secs / kafka_secs,
        windows_secs / kafka_secs
    );
    let json = serde_json::json!({
        "messages": msgs.len(), "samples": expected, "bytes": bytes,
        "windows_only_samples_per_sec": rate(windows_secs),
        "inproc_samples_per_sec": rate(inproc_secs),
        "kafka_samples_per_sec": rate(kafka_secs),
    });
    std::fs::create_dir_all("bench/results")?;
    std::fs::write("bench/results/b9.json", serde_json::to_string_pretty(&json)?)?;
    Ok(())
}
