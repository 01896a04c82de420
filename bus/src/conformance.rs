//! The conformance suite: the checks every bus must pass, written once and run
//! by `bus/tests/` against the in-process bus and real Kafka and MQTT brokers.
//!
//! Each check returns an error saying what went wrong rather than panicking
//! mid-way, and each can fail: it compares what arrived with exactly what was
//! sent. Buses under test use the default payload limit and a fresh topic
//! prefix ([`unique_prefix`]) so runs never see each other's messages.

use crate::{BrokerKind, BusError, Message, MetricsBus, Received, Subscription, Topic};
use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use futures_util::future::join_all;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long messages may take to arrive (a Kafka consumer first joins its group).
const ARRIVAL: Duration = Duration::from_secs(60);
/// How long to listen for messages that should not come.
const QUIET: Duration = Duration::from_secs(2);
/// The payload limit every bus has by default.
const LIMIT: usize = 1 << 20;

/// Shows the bus's logs in test output, filtered by `RUST_LOG` (default: warnings).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// A topic prefix no other run uses.
pub fn unique_prefix() -> String {
    let random = RandomState::new().hash_one((std::process::id(), Instant::now()));
    format!("t{:012x}", random & 0xffff_ffff_ffff)
}

/// The broker address tests use: `KAFKA_ADDR` / `MQTT_ADDR`, as for `scripts/brokers.sh`.
pub fn broker_addr(kind: BrokerKind) -> String {
    let (var, default) = match kind {
        BrokerKind::Kafka => ("KAFKA_ADDR", "127.0.0.1:9092"),
        BrokerKind::Mqtt => ("MQTT_ADDR", "127.0.0.1:1883"),
    };
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

/// Fails the test (never skips it) when nothing answers at `addr`.
pub fn require_broker(kind: BrokerKind, addr: &str) {
    let answers = addr.to_socket_addrs().ok().and_then(|mut a| a.next()).is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(answers, "no {kind} broker answers at {addr}: start it with `scripts/brokers.sh start {}` (these tests need a real broker)", kind.script_name());
}

/// A loopback port nothing listens on.
pub fn unused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    listener.local_addr().expect("a bound port").port()
}

/// The `i`-th message of `key`: its payload names both and fills `len` bytes
/// with a pattern, so a truncated, corrupted or misrouted payload shows.
fn message(topic: Topic, key: &str, i: usize, len: usize) -> Message {
    Message { topic, key: key.to_string(), payload: payload(key, i, len) }
}

fn payload(key: &str, i: usize, len: usize) -> Bytes {
    let mut p = format!("{key}:{i}:").into_bytes();
    let head = p.len();
    p.extend((head..len.max(head)).map(|j| ((i * 31 + j * 7) % 251) as u8));
    Bytes::from(p)
}

/// The (key, index) a payload claims, after checking it is intact.
fn parse(r: &Received) -> Result<(String, usize)> {
    let text = String::from_utf8_lossy(&r.payload[..r.payload.len().min(300)]).into_owned();
    let mut parts = text.splitn(3, ':');
    let (Some(key), Some(i)) = (parts.next(), parts.next().and_then(|i| i.parse::<usize>().ok())) else {
        bail!("a message on {} with key {:?} has a payload that is not the suite's: {:?}", r.topic, r.key, text.chars().take(40).collect::<String>());
    };
    ensure!(key == r.key, "message {i} of key {key:?} arrived under key {:?}", r.key);
    ensure!(r.payload == payload(key, i, r.payload.len()), "message {i} of key {key:?} arrived corrupted ({} bytes)", r.payload.len());
    Ok((key.to_string(), i))
}

/// Awaits every ack; the first failure is the error.
async fn all_acked(acks: Vec<crate::Ack>) -> Result<()> {
    for (n, result) in join_all(acks).await.into_iter().enumerate() {
        result.with_context(|| format!("publish #{n} was not acknowledged"))?;
    }
    Ok(())
}

/// The next message, within `ARRIVAL`.
async fn next(sub: &mut Box<dyn Subscription>, what: &str) -> Result<Received> {
    match tokio::time::timeout(ARRIVAL, sub.next()).await {
        Ok(r) => r.with_context(|| format!("receiving {what}")),
        Err(_) => bail!("{what} did not arrive within {ARRIVAL:?}"),
    }
}

/// Receives `n` messages, marking each processed.
async fn receive(sub: &mut Box<dyn Subscription>, n: usize, what: &str) -> Result<Vec<Received>> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let r = next(sub, &format!("{what} (had {} of {n})", got.len())).await?;
        sub.processed(&r)?;
        got.push(r);
    }
    Ok(got)
}

/// Fails if anything arrives within `QUIET`.
async fn nothing_more(sub: &mut Box<dyn Subscription>, what: &str) -> Result<()> {
    if let Ok(r) = tokio::time::timeout(QUIET, sub.next()).await {
        let r = r?;
        bail!("{what}: an extra message arrived: {} from {:?}, {:?}", r.topic, r.key, parse(&r).map(|(_, i)| i));
    }
    Ok(())
}

/// Checks each key's messages arrived as 0, 1, 2, ... with none missing or repeated.
fn in_order(received: &[Received], topic: Topic, expected: &[(&str, usize)]) -> Result<()> {
    let mut next: HashMap<String, usize> = HashMap::new();
    for r in received {
        ensure!(r.topic == topic, "a {} message arrived on a subscription to {topic} only", r.topic);
        let (key, i) = parse(r)?;
        let want = next.entry(key.clone()).or_default();
        ensure!(i == *want, "key {key:?}: message {i} arrived where {} was due (order per key must hold, each exactly once)", *want);
        *want += 1;
    }
    for (key, count) in expected {
        let got = next.get(*key).copied().unwrap_or(0);
        ensure!(got == *count, "key {key:?}: {got} of {count} messages arrived");
    }
    Ok(())
}

/// 1,000 messages on one key and 200 on another, published back to back and
/// acknowledged together, arrive complete, intact and in order per key; a
/// subscriber of Host sees no Container message and vice versa.
pub async fn delivery_and_order(bus: &dyn MetricsBus) -> Result<()> {
    let mut hosts = bus.subscribe("hosts", &[Topic::Host]).await.context("subscribing to Host")?;
    let mut containers = bus.subscribe("containers", &[Topic::Container]).await.context("subscribing to Container")?;
    let mut acks = Vec::new();
    for i in 0..1000 {
        acks.push(bus.publish(message(Topic::Host, "node-a", i, 64 + i % 512)));
        if i % 5 == 0 {
            acks.push(bus.publish(message(Topic::Host, "node-b", i / 5, 64 + i % 300)));
        }
        if i % 20 == 0 {
            acks.push(bus.publish(message(Topic::Container, "node-a", i / 20, 100)));
        }
    }
    all_acked(acks).await?;
    let got = receive(&mut hosts, 1200, "Host messages").await?;
    in_order(&got, Topic::Host, &[("node-a", 1000), ("node-b", 200)])?;
    nothing_more(&mut hosts, "Host subscription after all 1,200").await?;
    let got = receive(&mut containers, 50, "Container messages").await?;
    in_order(&got, Topic::Container, &[("node-a", 50)])?;
    nothing_more(&mut containers, "Container subscription after all 50").await
}

/// A group outlives its subscriptions: what was published while it had none
/// reaches the next one, in order; what it processed does not come back; what
/// it received and did not process may (at least once).
pub async fn durable_group(bus: &dyn MetricsBus) -> Result<()> {
    let key = "node-d";
    let mut sub = bus.subscribe("durable", &[Topic::Event]).await?;
    all_acked((0..10).map(|i| bus.publish(message(Topic::Event, key, i, 200))).collect()).await?;
    let mut first = Vec::new();
    for n in 0..10 {
        first.push(next(&mut sub, &format!("first batch, message {n}")).await?);
    }
    in_order(&first, Topic::Event, &[(key, 10)])?;
    // Marks 0..=5 processed at once: "this and everything before it".
    sub.processed(&first[5])?;
    drop(sub);

    all_acked((10..20).map(|i| bus.publish(message(Topic::Event, key, i, 200))).collect()).await?;
    let mut sub = bus.subscribe("durable", &[Topic::Event]).await.context("subscribing the group again")?;
    let mut seen = Vec::new();
    while seen.last() != Some(&19) {
        let r = next(&mut sub, &format!("second subscription, after {seen:?}")).await?;
        sub.processed(&r)?;
        seen.push(parse(&r)?.1);
    }
    let start = seen[0];
    ensure!(start >= 6, "processed message {start} was delivered again (received {seen:?})");
    // 6..10 were received and not processed: delivering them again is at least
    // once; skipping them is tolerated because tansu 0.6 does (a fetch from an
    // offset inside a record batch starts at the next batch).
    ensure!(start <= 10, "messages published while the group had no subscription were lost (received {seen:?})");
    ensure!(seen == (start..20).collect::<Vec<_>>(), "the group's messages arrived out of order, repeated or with gaps: {seen:?}");
    nothing_more(&mut sub, "durable group after message 19").await
}

/// Two groups on one topic each get every message.
pub async fn two_groups(bus: &dyn MetricsBus) -> Result<()> {
    let mut one = bus.subscribe("one", &[Topic::Gateway]).await?;
    let mut two = bus.subscribe("two", &[Topic::Gateway]).await?;
    all_acked((0..100).map(|i| bus.publish(message(Topic::Gateway, "node-g", i, 300))).collect()).await?;
    for (name, sub) in [("one", &mut one), ("two", &mut two)] {
        let got = receive(sub, 100, &format!("group {name}'s messages")).await?;
        in_order(&got, Topic::Gateway, &[("node-g", 100)]).with_context(|| format!("group {name}"))?;
        nothing_more(sub, &format!("group {name} after all 100")).await?;
    }
    Ok(())
}

/// Payloads up to the limit pass intact; larger ones are refused with the
/// payload-limit error, naming the setting to change.
pub async fn payload_limits(bus: &dyn MetricsBus) -> Result<()> {
    let mut sub = bus.subscribe("payloads", &[Topic::Container]).await?;
    let key = "node-p";
    bus.publish(message(Topic::Container, key, 0, 512 << 10)).await.context("a 512 KiB payload")?;
    bus.publish(message(Topic::Container, key, 1, LIMIT)).await.context("a payload of exactly the limit (1 MiB)")?;
    match bus.publish(message(Topic::Container, key, 2, 2 << 20)).await {
        Err(e @ BusError::TooLarge { size, limit: LIMIT }) if size == 2 << 20 => {
            ensure!(e.to_string().contains("max_payload_bytes"), "the payload-limit error does not name the setting: {e}")
        }
        other => bail!("a 2 MiB payload was not refused with the payload-limit error: {other:?}"),
    }
    let got = receive(&mut sub, 2, "the large payloads").await?;
    in_order(&got, Topic::Container, &[(key, 2)])?;
    ensure!(got[1].payload.len() == LIMIT, "the 1 MiB payload arrived with {} bytes", got[1].payload.len());
    nothing_more(&mut sub, "payload subscription (the 2 MiB one must not arrive)").await
}

/// With no broker at the address: connecting still succeeds (agents start
/// without their broker) and promptly; a publish fails within its timeout plus
/// a few seconds, without hanging or panicking; subscribing fails, bounded too.
pub async fn unreachable_broker<F, Fut>(connect: F, publish_timeout: Duration) -> Result<()>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Arc<dyn MetricsBus>, BusError>>,
{
    let grace = Duration::from_secs(3);
    let started = Instant::now();
    let bus = match tokio::time::timeout(Duration::from_secs(10), connect()).await {
        Ok(bus) => bus.context("connect must succeed while the broker is down (it connects in the background)")?,
        Err(_) => bail!("connect did not return within 10 s with the broker down"),
    };
    let connected_in = started.elapsed();
    let published = Instant::now();
    let outcome = tokio::time::timeout(publish_timeout + grace * 3, bus.publish(message(Topic::Host, "node-u", 0, 100))).await;
    let took = published.elapsed();
    match outcome {
        Err(_) => bail!("the ack of a publish to a dead broker hung for {took:?}"),
        Ok(Ok(())) => bail!("a publish to a dead broker was acknowledged"),
        Ok(Err(BusError::Unreachable { .. } | BusError::Timeout)) => {}
        Ok(Err(other)) => bail!("a publish to a dead broker failed with an unexpected error: {other}"),
    }
    ensure!(took <= publish_timeout + grace, "the failed publish took {took:?}, over the {publish_timeout:?} timeout plus {grace:?}");
    let subscribing = tokio::time::timeout(publish_timeout + Duration::from_secs(20), bus.subscribe("dead", &[Topic::Host])).await;
    ensure!(matches!(subscribing, Ok(Err(_))), "subscribing with the broker down must fail promptly");
    eprintln!("unreachable broker: connect took {connected_in:?}, the publish failed after {took:?}");
    Ok(())
}

/// Stops and starts a shared broker with `scripts/brokers.sh`; a broker it
/// stopped is started again when this is dropped, even if the test failed.
pub struct BrokerScript {
    kind: BrokerKind,
    stopped: AtomicBool,
}

impl BrokerScript {
    pub fn new(kind: BrokerKind) -> Self {
        BrokerScript { kind, stopped: AtomicBool::new(false) }
    }

    fn run(&self, action: &str) -> Result<()> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/brokers.sh");
        let status = std::process::Command::new("bash").args([script, action, self.kind.script_name()]).status().with_context(|| format!("running {script}"))?;
        ensure!(status.success(), "scripts/brokers.sh {action} {} failed ({status})", self.kind.script_name());
        Ok(())
    }

    pub fn stop(&self) -> Result<()> {
        self.stopped.store(true, Ordering::SeqCst);
        self.run("stop")
    }

    pub fn start(&self) -> Result<()> {
        self.run("start")?;
        self.stopped.store(false, Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for BrokerScript {
    fn drop(&mut self) {
        if self.stopped.load(Ordering::SeqCst) {
            if let Err(e) = self.run("start") {
                eprintln!("could not restart the {} broker after the test: {e:#}; run scripts/brokers.sh start {}", self.kind, self.kind.script_name());
            }
        }
    }
}

/// What a broker keeps across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Everything (mosquitto with persistence): the subscription opened before
    /// the restart keeps receiving.
    KeepsData,
    /// Nothing (tansu with memory storage: topics, groups and producer ids are
    /// gone). Publishing must resume; the subscription is closed before the
    /// restart — a librdkafka consumer that lives through it can crash (see
    /// `tests/broker_restart.rs`) — and one opened afterwards must receive what
    /// is published to it.
    ComesBackEmpty,
}

/// The broker goes away and comes back: publishes meanwhile fail or wait (and
/// never hang), and once it is back new publishes are acknowledged and delivered.
pub async fn survives_restart(bus: &dyn MetricsBus, broker: &BrokerScript, publish_timeout: Duration, restart: Restart) -> Result<()> {
    let key = "node-r";
    let mut sub = bus.subscribe("restart", &[Topic::Host]).await?;
    all_acked((0..5).map(|i| bus.publish(message(Topic::Host, key, i, 100))).collect()).await?;
    let got = receive(&mut sub, 5, "messages before the restart").await?;
    in_order(&got, Topic::Host, &[(key, 5)])?;
    let kept = match restart {
        Restart::KeepsData => Some(sub),
        Restart::ComesBackEmpty => {
            drop(sub);
            // A Kafka subscription closes on a thread of its own (commit, leave
            // the group); it must be done before the broker goes, or it lives
            // through the restart.
            tokio::time::sleep(Duration::from_secs(3)).await;
            None
        }
    };

    broker.stop()?;
    let during: Vec<_> = (5..10).map(|i| bus.publish(message(Topic::Host, key, i, 100))).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.start()?;
    let bound = publish_timeout + Duration::from_secs(10);
    let mut acked = Vec::new();
    for (n, ack) in (5..).zip(during) {
        match tokio::time::timeout(bound, ack).await {
            Err(_) => bail!("the ack of publish {n} made while the broker was down hung past {bound:?}"),
            Ok(outcome) => {
                eprintln!("publish {n} made while the broker was down: {outcome:?}");
                if outcome.is_ok() {
                    acked.push(n);
                }
            }
        }
    }

    // Once it is back, publishes go through (after reconnecting, and for a
    // broker that came back empty, recreating its topics).
    let deadline = Instant::now() + Duration::from_secs(60);
    let during_acked = acked.len();
    let mut i = 10;
    while acked.len() < during_acked + 5 {
        ensure!(Instant::now() < deadline, "publishing did not resume within 60 s of the broker's restart (acknowledged: {acked:?})");
        match bus.publish(message(Topic::Host, key, i, 100)).await {
            Ok(()) => acked.push(i),
            Err(e) => {
                eprintln!("publish {i} after the restart: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        i += 1;
    }
    let (mut sub, expected) = match kept {
        Some(sub) => (sub, acked.clone()),
        // What an empty broker does with messages it took before the topics
        // were created again is its business; those published to a new
        // subscription must arrive.
        None => {
            let sub = bus.subscribe("restart-after", &[Topic::Host]).await.context("subscribing after the restart")?;
            let fresh: Vec<_> = (i..i + 5).collect();
            all_acked(fresh.iter().map(|n| bus.publish(message(Topic::Host, key, *n, 100))).collect()).await?;
            (sub, fresh)
        }
    };
    // Every one expected arrives (for a broker that keeps its data: every one
    // acknowledged, during the outage too), in order; others may come as well.
    let mut seen = Vec::new();
    while !expected.iter().all(|a| seen.contains(a)) {
        let r = next(&mut sub, &format!("messages after the restart (expected {expected:?}, received {seen:?})")).await?;
        sub.processed(&r)?;
        seen.push(parse(&r)?.1);
    }
    // Redelivery across the reconnect may repeat messages, never reorder them.
    let mut since = seen.iter().copied().skip_while(|n| *n < 5).collect::<Vec<_>>();
    since.dedup();
    ensure!(since.windows(2).all(|w| w[0] < w[1]), "messages around the restart arrived out of order: {seen:?}");
    eprintln!("restart: acknowledged {acked:?}; received {seen:?}");
    Ok(())
}

/// The invocation work queue: two buses (two coordinators) subscribed with one
/// group each get a share of the messages, none of them both, and what one
/// received and did not process before its subscription closed (a coordinator
/// killed mid-invocation) reaches the other (`handover`; MQTT keeps it in the
/// closed session instead, for that session's return).
pub async fn work_queue(a: &dyn MetricsBus, b: &dyn MetricsBus, handover: bool) -> Result<()> {
    let mut sub_a = a.subscribe("work", &[Topic::Invocation]).await?;
    let mut sub_b = b.subscribe("work", &[Topic::Invocation]).await?;
    // Kafka assigns partitions once both have joined, a rebalance or two later: before
    // that a message may reach both (handed back by a rebalance: at least once).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let keys: Vec<String> = (0..30).map(|k| format!("inv-{k}")).collect();
    all_acked(keys.iter().map(|k| a.publish(message(Topic::Invocation, k, 0, 64))).collect()).await?;
    let (mut at_a, mut at_b) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + ARRIVAL;
    while at_a.len() + at_b.len() < keys.len() && Instant::now() < deadline {
        tokio::select! {
            r = sub_a.next() => at_a.push(r?),
            r = sub_b.next() => at_b.push(r?),
            () = tokio::time::sleep(QUIET) => {}
        }
    }
    let keys_of = |v: &[Received]| v.iter().map(|r| r.key.clone()).collect::<std::collections::BTreeSet<_>>();
    let (ka, kb) = (keys_of(&at_a), keys_of(&at_b));
    ensure!(ka.union(&kb).count() == keys.len(), "of 30 invocations, {} arrived at a and {} at b, {} in all", ka.len(), kb.len(), ka.union(&kb).count());
    ensure!(ka.intersection(&kb).count() == 0, "one group's members both got {:?}", ka.intersection(&kb).collect::<Vec<_>>());
    // Not checked: that both got some. Which member holds which partitions is the
    // broker's and the group leader's choice, and tansu 0.6 sometimes leaves one
    // member all of them; each invocation still goes to one.
    for r in &at_b {
        sub_b.processed(r)?;
    }
    if !handover || ka.is_empty() {
        return Ok(());
    }
    // a "dies" holding its invocations unprocessed: b gets them.
    drop(sub_a);
    let mut handed = std::collections::BTreeSet::new();
    let deadline = Instant::now() + ARRIVAL;
    while !ka.is_subset(&handed) && Instant::now() < deadline {
        if let Ok(r) = tokio::time::timeout(QUIET, sub_b.next()).await {
            let r = r?;
            sub_b.processed(&r)?;
            handed.insert(r.key.clone());
        }
    }
    ensure!(ka.is_subset(&handed), "of the {} invocations the closed member held, {} reached the other", ka.len(), ka.intersection(&handed).count());
    Ok(())
}
