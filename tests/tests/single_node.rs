//! Single-host Sluice end to end, against the real Docker Engine and registry:
//! cold start, warm reuse, bursts, scale to zero, agent restarts, crashes,
//! bad input and load shedding.

use anyhow::Result;
use hyper::{Method, StatusCode};
use serde_json::json;
use sluice_agent::runtime::ContainerRuntime;
use sluice_tests::{eventually, hello_image, sleep_image, Cluster};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

const START: Duration = Duration::from_secs(30);

#[tokio::test]
async fn first_call_is_a_cold_start_and_the_second_is_warm() -> Result<()> {
    let c = Cluster::start("t-cold-warm").await?;
    c.deploy(json!({"name": "hello", "image": hello_image(), "port": 8080, "min_instances": 0, "max_instances": 3, "concurrency": 4})).await?;
    assert!(c.instances("hello").await?.is_empty(), "min 0 starts nothing before the first call");

    let first = c.http.send(Method::POST, &c.function_url("hello", "/greet?x=1"), "world", &[("x-hello-ask", "42")]).await?;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.text(), "hello, world");
    // The gateway forwards method, the path below the function, query and headers.
    assert_eq!(first.header("x-hello-method").as_deref(), Some("POST"));
    assert_eq!(first.header("x-hello-uri").as_deref(), Some("/greet?x=1"));
    assert_eq!(first.header("x-hello-answer").as_deref(), Some("42"));
    let served_by = first.header("x-sluice-instance").expect("instance header");

    let second = c.http.get(&c.function_url("hello", "")).await?;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.text(), "hello, world");
    assert_eq!(second.header("x-sluice-instance"), Some(served_by), "served warm by the same instance");
    // The function's own status comes back unchanged.
    let teapot = c.http.get(&c.function_url("hello", "/?status=418")).await?;
    assert_eq!(teapot.status.as_u16(), 418);

    let f = c.function("hello").await?;
    assert_eq!(f["function"]["cold_starts"], 1, "{f}");
    assert_eq!(f["function"]["requests"], 3, "{f}");
    // One live instance served everything. (An instance whose start failed on a
    // busy Docker is replaced and shows as gone, with its reason.)
    let instances = c.instances("hello").await?;
    let live = instances.iter().filter(|i| i["state"] != "gone").count();
    assert_eq!(live, 1, "{instances:?}");

    // Every process part serves Prometheus metrics.
    let gateway = c.http.get(&format!("{}/metrics", c.node.gateway_url())).await?.text();
    assert!(gateway.contains("sluice_gateway_requests_total{function=\"hello\"} 3"), "{gateway}");
    assert!(gateway.contains("sluice_gateway_cold_starts_total{function=\"hello\"} 1"), "{gateway}");
    let api = c.http.get(&c.api("/metrics")).await?.text();
    assert!(api.contains("sluice_coordinator_instances{state=\"ready\"} 1"), "{api}");
    let agent = c.http.get(&c.node.agent_metrics_url()).await?.text();
    assert!(agent.contains("sluice_agent_instances{state=\"ready\"} 1"), "{agent}");
    // ...and the agent's host figures, sampled every second.
    assert!(agent.contains("sluice_host_memory_total_bytes ") && agent.contains("sluice_host_cpu_core_percent{core=\"0\"}"), "{agent}");
    c.stop().await
}

#[tokio::test]
async fn fifty_concurrent_calls_to_a_cold_function_start_what_the_policy_asks_not_one_per_call() -> Result<()> {
    let c = Cluster::start("t-burst").await?;
    c.deploy(json!({"name": "sleepy", "image": sleep_image(), "min_instances": 0, "max_instances": 20, "concurrency": 10, "queue_limit": 100})).await?;
    let calls = (0..50).map(|_| {
        let (http, url) = (c.http.clone(), c.function_url("sleepy", "?ms=300"));
        tokio::spawn(async move { http.get(&url).await })
    });
    let mut served_by = HashSet::new();
    for call in calls {
        let r = call.await??;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.text(), "slept 300 ms");
        served_by.insert(r.header("x-sluice-instance").unwrap());
    }
    let started = c.instances("sleepy").await?.len();
    // 50 requests at a target of 70% of concurrency 10 ask for ceil(50 / 7) = 8 instances; never more.
    assert!(started <= 8, "started {started} instances for 50 requests at concurrency 10");
    assert!(served_by.len() <= 8);
    assert_eq!(c.containers("sleepy").await?.len(), started, "one container per instance");
    c.stop().await
}

#[tokio::test]
async fn idle_instances_stop_and_the_function_scales_to_zero() -> Result<()> {
    let c = Cluster::start("t-zero").await?;
    // Short windows: demand leaves the stable window in 6 s, then 1 s of grace.
    let scaling = json!({"stable_window_secs": 6, "panic_window_secs": 2});
    c.deploy(json!({"name": "hello", "image": hello_image(), "min_instances": 0, "idle_timeout_secs": 1, "scaling": scaling})).await?;
    let r = c.http.get(&c.function_url("hello", "")).await?;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(c.running_containers("hello").await?.len(), 1);
    eventually("scale to zero", Duration::from_secs(20), || async {
        let live = c.instances("hello").await?.iter().filter(|i| i["state"] != "gone").count();
        let containers = c.containers("hello").await?.len();
        Ok((live == 0 && containers == 0).then_some(()))
    })
    .await?;
    // And it comes back on demand.
    let r = c.http.get(&c.function_url("hello", "")).await?;
    assert_eq!(r.status, StatusCode::OK);
    c.stop().await
}

#[tokio::test]
async fn a_restarted_agent_adopts_its_containers_without_duplicates() -> Result<()> {
    let mut c = Cluster::start("t-adopt").await?;
    c.deploy(json!({"name": "hello", "image": hello_image(), "min_instances": 2, "max_instances": 4})).await?;
    let before = eventually("two ready instances", START, || async {
        let ready: Vec<String> = c.instances("hello").await?.iter().filter(|i| i["state"] == "ready").map(|i| i["id"].to_string()).collect();
        Ok((ready.len() == 2).then_some(ready))
    })
    .await?;
    let containers_before: HashSet<String> = c.containers("hello").await?.into_iter().map(|c| c.id.0).collect();

    c.node.restart_agent().await?;
    // Give the new agent several reconcile rounds to do something wrong.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let containers_after: HashSet<String> = c.containers("hello").await?.into_iter().map(|c| c.id.0).collect();
    assert_eq!(containers_after, containers_before, "same containers, none added or recreated");
    let ready: Vec<String> = c.instances("hello").await?.iter().filter(|i| i["state"] == "ready").map(|i| i["id"].to_string()).collect();
    assert_eq!(ready, before);
    let r = c.http.get(&c.function_url("hello", "")).await?;
    assert_eq!(r.status, StatusCode::OK);
    c.stop().await
}

#[tokio::test]
async fn a_crashed_container_is_replaced() -> Result<()> {
    let c = Cluster::start("t-crash").await?;
    c.deploy(json!({"name": "hello", "image": hello_image(), "min_instances": 1})).await?;
    let first = eventually("a ready instance", START, || async { Ok(c.instances("hello").await?.into_iter().find(|i| i["state"] == "ready").map(|i| i["id"].clone())) }).await?;
    let container = c.running_containers("hello").await?.pop().expect("a running container");
    let killed = std::process::Command::new("docker").args(["kill", &container.id.0]).output()?;
    assert!(killed.status.success(), "docker kill: {}", String::from_utf8_lossy(&killed.stderr));

    let replacement = eventually("a replacement instance", START, || async {
        let insts = c.instances("hello").await?;
        let old_gone = insts.iter().any(|i| i["id"] == first && i["state"] == "gone");
        let new_ready = insts.iter().find(|i| i["id"] != first && i["state"] == "ready").map(|i| i["id"].clone());
        Ok(if old_gone { new_ready } else { None })
    })
    .await?;
    assert_ne!(replacement, first);
    eventually("exactly one running container", Duration::from_secs(10), || async { Ok((c.running_containers("hello").await?.len() == 1).then_some(())) }).await?;
    let r = c.http.get(&c.function_url("hello", "")).await?;
    assert_eq!(r.status, StatusCode::OK);
    c.stop().await
}

#[tokio::test]
async fn bad_specs_and_names_are_refused_and_reach_docker_never() -> Result<()> {
    let c = Cluster::start("t-bad").await?;
    let long = "a".repeat(64);
    let cases = vec![
        (json!({"name": "Foo_1", "image": hello_image()}), "name"),
        (json!({"name": "../x", "image": hello_image()}), "name"),
        (json!({"name": "a;rm -rf /", "image": hello_image()}), "name"),
        (json!({"name": "héllo", "image": hello_image()}), "name"),
        (json!({"name": long, "image": hello_image()}), "name"),
        (json!({"name": "", "image": hello_image()}), "name"),
        (json!({"name": "ok", "image": "Not An Image"}), "image"),
        (json!({"name": "ok", "image": hello_image(), "privileged": true}), "privileged"),
        (json!({"name": "ok", "image": hello_image(), "max_instances": 0}), "max_instances"),
        (json!({"name": "ok", "image": hello_image(), "min_instances": 5, "max_instances": 2}), "min_instances"),
        (json!({"name": "ok", "image": hello_image(), "limits": {"memory_mb": 1}}), "limits.memory_mb"),
        (json!({"name": "ok", "image": hello_image(), "limits": {"pids": -1}}), "limits.pids"),
        (json!({"name": "ok", "image": hello_image(), "env": {"1BAD": "x"}}), "env.1BAD"),
        (json!({"name": "ok", "image": hello_image(), "port": 0}), "port"),
        (json!(["not", "an", "object"]), "body"),
    ];
    for (spec, field) in cases {
        let r = c.http.json(Method::POST, &c.api("/v1/functions"), &spec).await?;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{spec}: {}", r.text());
        let body = r.json()?;
        assert_eq!(body["error"]["field"], field, "{spec}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let malformed = c.http.send(Method::POST, &c.api("/v1/functions"), "{\"name\": ", &[]).await?;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    let huge = c.http.send(Method::POST, &c.api("/v1/functions"), vec![b' '; 200_000], &[]).await?;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    let bad_path = c.http.get(&c.api("/v1/functions/..%2Fx")).await?;
    assert_eq!(bad_path.status, StatusCode::BAD_REQUEST);
    let bad_invoke = c.http.get(&c.function_url("Bad_Name", "")).await?;
    assert_eq!(bad_invoke.status, StatusCode::BAD_REQUEST);
    let unknown = c.http.get(&c.function_url("nope", "")).await?;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let functions = c.http.get(&c.api("/v1/functions")).await?.json()?;
    assert_eq!(functions, json!([]), "nothing stored");
    assert!(c.docker.list(&c.node_id).await?.is_empty(), "Docker was never asked");
    c.stop().await
}

#[tokio::test]
async fn beyond_the_queue_bound_requests_get_429_and_a_stuck_start_503() -> Result<()> {
    let c = Cluster::start("t-shed").await?;
    c.deploy(json!({"name": "slow", "image": sleep_image(), "max_instances": 1, "concurrency": 1, "queue_limit": 2})).await?;
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (http, url) = (c.http.clone(), c.function_url("slow", "?ms=1000"));
            tokio::spawn(async move { http.get(&url).await })
        })
        .collect();
    let (mut ok, mut shed) = (0, 0);
    for call in calls {
        let r = call.await??;
        match r.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                shed += 1;
                assert_eq!(r.header("retry-after").as_deref(), Some("1"));
                assert_eq!(r.json()?["error"]["code"], "queue_full");
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    // One instance at concurrency 1 plus a queue of 2 holds at most 3 at once.
    assert!((1..=3).contains(&ok), "ok={ok}");
    assert_eq!(ok + shed, 8);

    // A function that never becomes ready: waiting requests get 503 at the start timeout.
    c.deploy(json!({"name": "never", "image": hello_image(), "health_path": "/x?status=503", "start_timeout_secs": 2})).await?;
    let r = c.http.get(&c.function_url("never", "")).await?;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    c.stop().await
}

/// Runs `docker` with `args`, failing with its stderr.
fn docker(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("docker").args(args).output()?;
    anyhow::ensure!(out.status.success(), "docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    Ok(())
}

#[tokio::test]
async fn images_are_pulled_from_the_registry_and_containers_run_locked_down() -> Result<()> {
    let c = Cluster::start("t-secure").await?;
    // An image that exists only in the registry, so the agent must pull it.
    let image = format!("{}/sluice/pulled:t{}", sluice_tests::REGISTRY, std::process::id());
    docker(&["tag", "sluice/hello:latest", &image])?;
    docker(&["push", &image])?;
    docker(&["rmi", &image])?;

    c.deploy(json!({"name": "locked", "image": image, "min_instances": 1, "limits": {"memory_mb": 64, "cpu_millis": 300, "pids": 50}})).await?;
    eventually("a ready instance", START, || async { Ok(c.instances("locked").await?.iter().any(|i| i["state"] == "ready").then_some(())) }).await?;
    // Pulled by the digest the deploy pinned, so Docker knows it by that name.
    let digest = c.function("locked").await?["function"]["spec"]["image_digest"].as_str().map(str::to_string).expect("the deploy pinned a digest");
    let pinned = format!("{}/sluice/pulled@{digest}", sluice_tests::REGISTRY);
    docker(&["image", "inspect", &pinned]).map_err(|e| e.context("the agent did not pull the image"))?;

    let container = c.running_containers("locked").await?.pop().expect("a running container");
    let limits = sluice_common::Limits { memory_mb: 64, cpu_millis: 300, pids: 50 };
    sluice_agent::runtime::docker::check_secure_defaults(&c.docker, &container.id, &limits).await?;
    let r = c.http.get(&c.function_url("locked", "")).await?;
    assert_eq!(r.status, StatusCode::OK);
    c.stop().await?;
    docker(&["rmi", &pinned])
}

#[tokio::test]
async fn requests_to_a_killed_instance_go_to_another_one() -> Result<()> {
    let c = Cluster::start("t-failover").await?;
    c.deploy(json!({"name": "hello", "image": hello_image(), "min_instances": 2, "max_instances": 2})).await?;
    eventually("two ready instances", START, || async { Ok((c.instances("hello").await?.iter().filter(|i| i["state"] == "ready").count() == 2).then_some(())) }).await?;
    // Sequential calls all go to the same (first) instance, over a pooled connection: kill that one.
    let first = c.http.get(&c.function_url("hello", "")).await?;
    let victim = first.header("x-sluice-instance").expect("instance header");
    let container = c.running_containers("hello").await?.into_iter().find(|k| k.instance.to_string() == victim).expect("its container");
    docker(&["kill", &container.id.0])?;
    // Before the agent has even noticed, every call is answered by the survivor.
    for _ in 0..20 {
        let r = c.http.send(Method::POST, &c.function_url("hello", ""), "again", &[]).await?;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_ne!(r.header("x-sluice-instance"), Some(victim.clone()));
    }
    c.stop().await
}

/// `sluice up`'s gateway shares its host with its agent: it reaches the
/// instance at the container's own address (the endpoint's `direct`), never
/// through the port Docker publishes (its userland proxy). Checked on the
/// process's own TCP connections: the pooled keep-alive connection the call
/// left goes to the container's address.
#[tokio::test]
async fn the_gateway_reaches_an_instance_on_its_host_at_the_containers_own_address() -> Result<()> {
    let c = Cluster::start("t-direct").await?;
    c.deploy(json!({"name": "hello", "image": hello_image(), "min_instances": 1, "max_instances": 1})).await?;
    eventually("a ready instance", START, || async { Ok(c.instances("hello").await?.iter().any(|i| i["state"] == "ready").then_some(())) }).await?;
    for _ in 0..3 {
        let r = c.http.get(&c.function_url("hello", "")).await?;
        assert_eq!((r.status, r.text()), (StatusCode::OK, "hello, world".to_string()));
    }
    let instance = c.instances("hello").await?.into_iter().find(|i| i["state"] == "ready").expect("a ready instance");
    let endpoint = &instance["endpoint"];
    let direct: SocketAddr = endpoint["direct"].as_str().expect("the endpoint names the container's own address").parse()?;
    let published: SocketAddr = format!("{}:{}", endpoint["host"].as_str().unwrap_or_default(), endpoint["port"]).parse()?;
    let container = c.running_containers("hello").await?.into_iter().next().expect("its container");
    assert_eq!((Some(direct.ip()), direct.port()), (container.addr, 8080), "the container's address on its network, and its own port");
    let connected = established_remotes()?;
    assert!(connected.contains(&direct), "no connection of this process to {direct}: {connected:?}");
    assert!(!connected.contains(&published), "the gateway went through the published port {published}: {connected:?}");
    c.stop().await
}

/// The remote addresses of this process's established IPv4 TCP connections:
/// its socket descriptors (`/proc/self/fd`) looked up by inode in `/proc/self/net/tcp`.
fn established_remotes() -> Result<HashSet<SocketAddr>> {
    let mut inodes = HashSet::new();
    for fd in std::fs::read_dir("/proc/self/fd")? {
        let Ok(target) = std::fs::read_link(fd?.path()) else { continue };
        if let Some(inode) = target.to_str().and_then(|t| t.strip_prefix("socket:[")).and_then(|t| t.strip_suffix(']')) {
            inodes.insert(inode.to_string());
        }
    }
    let mut remotes = HashSet::new();
    for line in std::fs::read_to_string("/proc/self/net/tcp")?.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode; st 01 is ESTABLISHED.
        let (Some(rem), Some(&"01"), Some(inode)) = (fields.get(2), fields.get(3), fields.get(9)) else { continue };
        if !inodes.contains(*inode) {
            continue;
        }
        let Some((ip, port)) = rem.split_once(':') else { continue };
        // The kernel prints the address as the in-memory (network order) word read natively.
        let ip = std::net::Ipv4Addr::from(u32::from_str_radix(ip, 16)?.to_ne_bytes());
        remotes.insert(SocketAddr::from((ip, u16::from_str_radix(port, 16)?)));
    }
    Ok(remotes)
}
