//! Replicated coordinators end to end: real `sluice coordinator` processes in containers on a
//! private Docker network (see `sluice_tests::docker_cluster`), faulted by killing, pausing and
//! disconnecting them.
//!
//! Needs the `sluice/sluice:latest` image: run `scripts/build-images.sh sluice` (again after
//! changing the coordinator, since these tests run the image, not the workspace). A failing test
//! returns an error with every node's status and log tail; set `SLUICE_TEST_KEEP=1` to keep the
//! containers for a closer look.

use anyhow::{anyhow, ensure, Result};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_agent::runtime::{DockerConfig, DockerRuntime};
use sluice_cli::node::HostArgs;
use sluice_common::{NodeId, SystemClock};
use sluice_tests::docker_cluster::{ClusterBus, ClusterOptions, DockerCluster};
use sluice_tests::hello_image;
use sluice_tests::workload::read_v;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Writes a function spec through node `via` and expects it created or updated.
async fn put_function(c: &DockerCluster, via: u64, spec: &Value) -> Result<()> {
    let r = c.request(via, Method::POST, "/v1/functions", Some(spec)).await?;
    ensure!(r.status == StatusCode::CREATED || r.status == StatusCode::OK, "POST /v1/functions via node {via}: {} {}", r.status, r.text());
    Ok(())
}

async fn expect_v(c: &DockerCluster, i: u64, name: &str, want: &str, when: &str) -> Result<()> {
    let got = read_v(c, i, name).await?;
    ensure!(got == want, "node {i} {when}: {name} has V={got}, expected {want}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_coordinators_elect_a_leader_and_replicate_a_write() -> Result<()> {
    let c = DockerCluster::start("smoke3", 3).await?;
    match elect_replicate_fail_over(&c).await {
        Ok(()) => c.destroy().await,
        Err(e) => Err(c.explain(e).await),
    }
}

async fn elect_replicate_fail_over(c: &DockerCluster) -> Result<()> {
    let leader = c.wait_for_leader(Duration::from_secs(10), None).await?;
    let follower = c.ids().into_iter().find(|&i| i != leader).unwrap();

    // A follower takes the write and forwards it to the leader.
    put_function(c, follower, &json!({"name": "k1", "image": hello_image(), "env": {"V": "42"}})).await?;
    for i in c.ids() {
        expect_v(c, i, "k1", "42", "after the write").await?;
    }

    c.kill(leader).await?;
    let killed = Instant::now();
    let new_leader = c.wait_for_leader(Duration::from_secs(3), Some(leader)).await?;
    eprintln!("node {new_leader} leads {:?} after node {leader} was killed", killed.elapsed());
    let survivors: Vec<u64> = c.ids().into_iter().filter(|&i| i != leader).collect();
    for &i in &survivors {
        expect_v(c, i, "k1", "42", "after the leader was killed").await?;
    }

    // Writes work again, through the new leader and through its follower.
    let new_follower = *survivors.iter().find(|&&i| i != new_leader).unwrap();
    put_function(c, new_follower, &json!({"name": "k2", "image": hello_image(), "env": {"V": "7"}})).await?;
    put_function(c, new_leader, &json!({"name": "k1", "image": hello_image(), "env": {"V": "43"}})).await?;
    for &i in &survivors {
        expect_v(c, i, "k2", "7", "after failover").await?;
        expect_v(c, i, "k1", "43", "after failover").await?;
    }

    // The old leader comes back from its own data and catches up (it may refuse or 503 while
    // it starts and learns who leads, hence the retries here and only here).
    c.start_node(leader).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match read_v(c, leader, "k1").await {
            Ok(v) if v == "43" => break,
            last if Instant::now() > deadline => return Err(anyhow!("restarted node {leader} did not catch up within 15 s (last read: {last:?})")),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    expect_v(c, leader, "k2", "7", "after restarting").await
}

/// A cold call through a follower's gateway starts an instance: every gateway
/// publishes its load on the shared metrics bus (here a private mosquitto), and
/// the leader, the only one deciding, reads it.
/// Real agent (in this process, on the real Docker Engine), real function image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_call_through_a_followers_gateway_starts_an_instance() -> Result<()> {
    let options = ClusterOptions { bus: ClusterBus::Mosquitto, ..ClusterOptions::default() };
    let c = DockerCluster::start_with("coldfollower", 3, options).await?;
    let node = NodeId::new("cold-follower")?;
    let docker = DockerRuntime::connect(DockerConfig::default()).await?;
    sluice_tests::remove_containers(&docker, &node).await?;
    let outcome = cold_call_via_follower(&c, &node).await;
    sluice_tests::remove_containers(&docker, &node).await?;
    match outcome {
        Ok(()) => c.destroy().await,
        Err(e) => Err(c.explain(e).await),
    }
}

async fn cold_call_via_follower(c: &DockerCluster, node: &NodeId) -> Result<()> {
    let leader = c.wait_for_leader(Duration::from_secs(10), None).await?;
    let follower = c.ids().into_iter().find(|&i| i != leader).unwrap();
    // Function ports are published on every address, and the agent works out
    // which one to advertise: the host's address in the cluster's network, the
    // one it reaches the coordinators from, where the gateways inside the
    // containers can reach them. (It used to advertise loopback: no gateway in
    // a container could reach that.)
    let host = HostArgs { publish_host: "0.0.0.0".into(), ..sluice_tests::host_args(node.as_str()) };
    let coordinators: Vec<String> = c.ids().into_iter().map(|i| c.api_url(i)).collect();
    let agent = sluice_cli::node::start_agent(&host, coordinators, None, None, Arc::new(SystemClock)).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let agent_task = tokio::spawn(agent.run(sluice_coordinator::node::stopped(stopped)));

    let result = async {
        put_function(c, follower, &json!({"name": "cold", "image": hello_image(), "env": {"V": "1"}})).await?;
        let url = format!("{}/function/cold", c.gateway_url(follower));
        let started = Instant::now();
        let reply = tokio::time::timeout(Duration::from_secs(40), c.http().send(Method::POST, &url, "follower", &[])).await??;
        ensure!(reply.status == StatusCode::OK && reply.text() == "hello, follower", "cold call via follower {follower}: {} {}", reply.status, reply.text());
        let advertised = instance_hosts(c, follower, "cold").await?;
        ensure!(advertised == [c.host_ip()], "instances of cold advertise {advertised:?}, not the host's address in the cluster's network {}", c.host_ip());
        eprintln!("cold call through follower {follower}'s gateway answered in {:?} (leader {leader})", started.elapsed());
        let r = c.request(follower, Method::DELETE, "/v1/functions/cold", None).await?;
        ensure!(r.status == StatusCode::OK, "removing the function: {} {}", r.status, r.text());
        Ok(())
    }
    .await;
    let _ = stop.send(true);
    let _ = agent_task.await;
    result
}

/// The hosts that `function`'s instances advertise their published ports at.
async fn instance_hosts(c: &DockerCluster, at: u64, function: &str) -> Result<Vec<String>> {
    let r = c.request(at, Method::GET, "/v1/instances", None).await?;
    ensure!(r.status == StatusCode::OK, "listing instances: {} {}", r.status, r.text());
    let listed: serde_json::Value = serde_json::from_str(&r.text())?;
    let all = listed.as_array().or_else(|| listed["instances"].as_array()).cloned().unwrap_or_default();
    Ok(all.iter().filter(|i| i["function"] == function).filter_map(|i| i["endpoint"]["host"].as_str().map(str::to_string)).collect())
}
