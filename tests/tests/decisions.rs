//! The decision layer against real Docker: rules that fire on measured
//! container CPU and latency and scale a function out (and `explain` says
//! why), a drain that moves every instance between two agents without a
//! failed request, and a node cut off past its lost-after whose instances are
//! replaced elsewhere and trimmed back to the desired count when it returns.

use anyhow::{bail, Result};
use serde_json::{json, Value};
use sluice_tests::cut::CutRelay;
use sluice_tests::{eventually, sleep_image, Cluster, Method};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const START: Duration = Duration::from_secs(60);

/// Keeps `clients` callers on `url` until the flag drops; counts answers by status.
fn load(c: &Cluster, url: String, clients: usize, running: Arc<AtomicBool>) -> (Arc<AtomicU64>, Arc<AtomicU64>, Vec<tokio::task::JoinHandle<()>>) {
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let tasks = (0..clients)
        .map(|_| {
            let (http, url, running, ok, failed) = (c.http.clone(), url.clone(), running.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while running.load(Ordering::Relaxed) {
                    match http.get(&url).await {
                        Ok(r) if r.status.is_success() => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => {
                            eprintln!("failed request: {} {}", r.status, r.text());
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            eprintln!("failed request: {e:#}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    (ok, failed, tasks)
}

async fn put_rules(c: &Cluster, rules: Value) -> Result<()> {
    let r = c.http.json(Method::PUT, &c.api("/v1/rules"), &json!({ "rules": rules })).await?;
    if !r.status.is_success() {
        bail!("rules refused: {} {}", r.status, r.text());
    }
    Ok(())
}

async fn serving(c: &Cluster, function: &str) -> Result<Vec<Value>> {
    Ok(c.instances(function).await?.into_iter().filter(|i| matches!(i["state"].as_str(), Some("pending" | "starting" | "ready"))).collect())
}

async fn ready_count(c: &Cluster, function: &str) -> Result<usize> {
    Ok(c.instances(function).await?.iter().filter(|i| i["state"] == "ready").count())
}

/// Scales out by one rule and checks that the events and `explain` name it.
async fn a_rule_scales_out(c: &Cluster, function: &str, rule: &str, query: &str) -> Result<()> {
    let running = Arc::new(AtomicBool::new(true));
    let (_, failed, tasks) = load(c, c.function_url(function, query), 2, running.clone());
    let grown = eventually("the rule adds an instance", Duration::from_secs(90), || async { Ok((ready_count(c, function).await? >= 2).then_some(())) }).await;
    let explain: Value = c.http.get(&c.api(&format!("/v1/rules/explain?name={rule}"))).await?.json()?;
    let events: Value = c.http.get(&c.api(&format!("/v1/events?function={function}"))).await?.json()?;
    running.store(false, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    grown.map_err(|e| e.context(format!("explain: {explain}\nevents: {events}")))?;
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed");
    let e = &explain[0];
    assert_eq!(e["function"], function, "{explain}");
    assert!(e["last_fired"].is_u64(), "explain shows when it fired: {explain}");
    assert!(e["values"][0]["left"].as_f64().is_some(), "and the value it read: {explain}");
    let fired =
        events.as_array().unwrap().iter().any(|ev| ev["reason"]["kind"] == "rule" && ev["reason"]["rule"] == rule && ev["action"].as_str().unwrap_or("").starts_with("start"));
    assert!(fired, "an instance was started for rule {rule}: {events}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_on_container_cpu_and_one_on_latency_scale_a_function_out() -> Result<()> {
    let c = Cluster::start("t-rules").await?;
    let result = async {
        // Two callers never need a second instance by concurrency (target 0.7 x 8).
        c.deploy(json!({"name": "burn", "image": sleep_image(), "concurrency": 8, "max_instances": 4})).await?;
        c.deploy(json!({"name": "slow", "image": sleep_image(), "concurrency": 8, "max_instances": 4})).await?;
        put_rules(
            &c,
            json!([
                {"name": "hot-cpu", "scope": "function:burn", "rule": "when avg(container.cpu, 10s) > 12 for 3s then scale_out(1) cooldown 5m"},
                {"name": "slow-p95", "scope": "function:slow", "rule": "when max(function.latency_p95, 10s) > 0.15 for 2s then scale_out(1) cooldown 5m"},
            ]),
        )
        .await?;
        // A busy request burns a core for 300 ms: the container sits at its 250-millicore cap.
        a_rule_scales_out(&c, "burn", "hot-cpu", "?ms=300&busy=1").await?;
        a_rule_scales_out(&c, "slow", "slow-p95", "?ms=300").await?;
        // The rules are listed, and bad ones are refused with their position.
        let listed: Value = c.http.get(&c.api("/v1/rules")).await?.json()?;
        assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
        let bad = c.http.json(Method::PUT, &c.api("/v1/rules"), &json!({"rules": [{"name": "x", "rule": "when avg(function.requests, 10s) > 1 then scale_to(2)"}]})).await?;
        assert_eq!(bad.status.as_u16(), 400);
        assert!(bad.text().contains("rules[0].rule") && bad.text().contains("column"), "{}", bad.text());
        Ok(())
    }
    .await;
    c.stop().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_moves_every_instance_to_the_other_agent_without_a_failed_request() -> Result<()> {
    let c = Cluster::start("t-drain-a").await?;
    let other = c.add_agent("t-drain-b", None).await?;
    let result = async {
        c.deploy(json!({"name": "web", "image": sleep_image(), "min_instances": 4, "max_instances": 8, "placement": {"strategy": "spread"}})).await?;
        eventually("4 ready instances", START, || async { Ok((ready_count(&c, "web").await? >= 4).then_some(())) }).await?;
        let on = |node: &'static str| {
            let c = &c;
            async move { Ok::<usize, anyhow::Error>(serving(c, "web").await?.iter().filter(|i| i["node"] == node).count()) }
        };
        assert!(on("t-drain-a").await? > 0, "spread put instances on the node to drain");
        let running = Arc::new(AtomicBool::new(true));
        let (ok, failed, tasks) = load(&c, c.function_url("web", "?ms=20"), 4, running.clone());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let r = c.http.send(Method::POST, &c.api("/v1/nodes/t-drain-a/drain"), "", &[]).await?;
        assert!(r.status.is_success(), "{}", r.text());
        let moved = eventually("every instance moved off t-drain-a", START, || async {
            let left = on("t-drain-a").await?;
            let ready_on_b = c.instances("web").await?.iter().filter(|i| i["node"] == "t-drain-b" && i["state"] == "ready").count();
            Ok((left == 0 && ready_on_b >= 4).then_some(()))
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        running.store(false, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        moved?;
        assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed during the drain ({} served)", ok.load(Ordering::Relaxed));
        let nodes: Value = c.http.get(&c.api("/v1/nodes")).await?.json()?;
        let a = nodes.as_array().unwrap().iter().find(|n| n["id"] == "t-drain-a").unwrap();
        assert_eq!(a["state"], "draining", "{nodes}");
        let events: Value = c.http.get(&c.api("/v1/events?function=web")).await?.json()?;
        assert!(events.as_array().unwrap().iter().any(|e| e["reason"]["kind"] == "drain"), "moves are events: {events}");
        Ok(())
    }
    .await;
    other.stop().await;
    sluice_tests::remove_containers(&c.docker, &sluice_common::NodeId::new("t-drain-b")?).await?;
    c.stop().await?;
    result
}

/// A4: an agent cut off from the coordinator past its lost-after. Its node is
/// marked down and its instances replaced on the other node; when the link
/// heals, the cut-off agent stops what is no longer its, and every function has
/// exactly its desired count within 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_a_node_cut_off_past_its_lost_after_is_replaced_and_trimmed_when_it_returns() -> Result<()> {
    let c = Cluster::start_with("t-lost-a", |a| {
        a.coordinator.suspect_after_secs = 2;
        a.coordinator.lost_after_secs = 5;
    })
    .await?;
    let relay = CutRelay::start(c.node.coordinator.api_addr).await?;
    let cut_node = sluice_common::NodeId::new("t-lost-b")?;
    let agent = c.add_agent("t-lost-b", Some(relay.url())).await?;
    let result = async {
        // Binpack fills the cut-off node first only if it is first in order; spread puts two on each.
        c.deploy(json!({"name": "keep", "image": sleep_image(), "min_instances": 4, "max_instances": 4})).await?;
        eventually("4 ready, some on t-lost-b", START, || async {
            let s = serving(&c, "keep").await?;
            let ready = s.iter().filter(|i| i["state"] == "ready").count();
            Ok((ready == 4 && s.iter().any(|i| i["node"] == "t-lost-b")).then_some(()))
        })
        .await?;
        let on_b = c.running_containers_of_node("keep", &cut_node).await?;
        assert!(on_b > 0);

        relay.cut();
        let cut_at = Instant::now();
        eventually("t-lost-b marked down and its instances replaced", Duration::from_secs(30), || async {
            let nodes: Value = c.http.get(&c.api("/v1/nodes")).await?.json()?;
            let down = nodes.as_array().unwrap().iter().any(|n| n["id"] == "t-lost-b" && n["state"] == "down");
            let s = serving(&c, "keep").await?;
            let ready_elsewhere = s.iter().filter(|i| i["node"] != "t-lost-b" && i["state"] == "ready").count();
            Ok((down && ready_elsewhere == 4).then_some(()))
        })
        .await?;
        assert!(cut_at.elapsed() >= Duration::from_secs(5), "not before its lost-after");
        // Cut off, its containers kept running.
        assert_eq!(c.running_containers_of_node("keep", &cut_node).await?, on_b, "a cut-off agent stops nothing");

        relay.heal();
        let healed = Instant::now();
        eventually("exactly 4 running containers of keep", Duration::from_secs(10), || async {
            let a = c.running_containers("keep").await?.len();
            let b = c.running_containers_of_node("keep", &cut_node).await?;
            Ok((a + b == 4 && b == 0).then_some(()))
        })
        .await?;
        eprintln!("desired count back {:?} after healing", healed.elapsed());
        eventually("t-lost-b ready again", Duration::from_secs(10), || async {
            let nodes: Value = c.http.get(&c.api("/v1/nodes")).await?.json()?;
            Ok(nodes.as_array().unwrap().iter().any(|n| n["id"] == "t-lost-b" && n["state"] == "ready").then_some(()))
        })
        .await?;
        let states: BTreeMap<String, usize> = c.instances("keep").await?.iter().fold(BTreeMap::new(), |mut m, i| {
            *m.entry(i["state"].as_str().unwrap_or("?").to_string()).or_default() += 1;
            m
        });
        assert_eq!(states.get("ready"), Some(&4), "{states:?}");
        Ok(())
    }
    .await;
    agent.stop().await;
    sluice_tests::remove_containers(&c.docker, &cut_node).await?;
    c.stop().await?;
    result
}

#[tokio::test]
async fn the_decision_routes_refuse_bad_input_with_the_field_and_the_fix() -> Result<()> {
    let c = Cluster::start("t-dec-input").await?;
    let result = async {
        let cases: [(Method, &str, &str, u16, &str); 8] = [
            (Method::POST, "/v1/nodes/Bad_Name/drain", "", 400, "node"),
            (Method::POST, "/v1/nodes/nowhere/drain", "", 404, "sluice nodes ls"),
            (Method::GET, "/v1/rules/explain?name=NO", "", 400, "name"),
            (Method::GET, "/v1/rules/explain?name=missing", "", 404, "sluice rules ls"),
            (Method::DELETE, "/v1/rules/missing", "", 404, "sluice rules ls"),
            (Method::GET, "/v1/events?limit=0", "", 400, "limit"),
            (Method::GET, "/v1/explain/placement/nope", "", 404, "sluice deploy"),
            (Method::PUT, "/v1/rules", r#"{"rules":[{"name":"a","rule":"when avg(function.inflight, 10s) > 1 then scale_out(1)"}]}"#, 400, "cooldown"),
        ];
        for (method, path, body, status, hint) in cases {
            let r = c.http.send(method.clone(), &c.api(path), body.to_string(), &[("content-type", "application/json")]).await?;
            assert_eq!(r.status.as_u16(), status, "{method} {path}: {}", r.text());
            assert!(r.text().contains(hint), "{method} {path}: {}", r.text());
        }
        let rules: Value = c.http.get(&c.api("/v1/rules")).await?.json()?;
        assert_eq!(rules, json!([]), "nothing was stored");
        Ok(())
    }
    .await;
    c.stop().await?;
    result
}
