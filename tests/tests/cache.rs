//! The gateway's response cache end to end, against a real `hello` whose
//! answers change (`x-hello-count` counts the requests its process answered):
//! a hit never reaches the function, entries expire, `no-store` and `private`
//! are respected, a redeploy and a purge invalidate, 100 concurrent misses
//! reach the function once, and the figures reach `/metrics` and the windows.

use anyhow::{Context, Result};
use hyper::{Method, StatusCode};
use serde_json::json;
use sluice_cli::client::Reply;
use sluice_tests::{eventually, hello_image, Cluster};
use std::time::Duration;

const TTL_SECS: u64 = 3;

/// An answer: its count, and whether the cache gave it.
#[derive(Debug)]
struct Answer {
    count: u64,
    cache: String,
}

async fn call(c: &Cluster, function: &str, path: &str, headers: &[(&str, &str)]) -> Result<Answer> {
    let r: Reply = c.http.send(Method::GET, &c.function_url(function, path), "", headers).await?;
    anyhow::ensure!(r.status == StatusCode::OK, "{path}: {} {}", r.status, r.text());
    anyhow::ensure!(r.text() == "hello, world", "{path}: {}", r.text());
    let count = r.header("x-hello-count").context("x-hello-count")?.parse()?;
    Ok(Answer { count, cache: r.header("x-sluice-cache").context("x-sluice-cache")? })
}

/// How many requests the function has answered, asked past the cache.
async fn answered(c: &Cluster, function: &str) -> Result<u64> {
    let a = call(c, function, "/count", &[("cache-control", "no-store")]).await?;
    assert_eq!(a.cache, "miss");
    Ok(a.count - 1)
}

fn spec(name: &str, cache: serde_json::Value) -> serde_json::Value {
    json!({"name": name, "image": hello_image(), "min_instances": 1, "max_instances": 1, "concurrency": 4, "queue_limit": 200, "cache": cache})
}

#[tokio::test]
async fn hits_skip_the_function_expire_and_yield_to_no_store_redeploys_and_purges() -> Result<()> {
    let c = Cluster::start("t-cache").await?;
    let result = hits_expiry_and_invalidation(&c).await;
    c.stop().await?;
    result
}

async fn hits_expiry_and_invalidation(c: &Cluster) -> Result<()> {
    c.deploy(spec("cached", json!({"ttl_secs": TTL_SECS}))).await?;
    let first = call(c, "cached", "/a", &[]).await?;
    assert_eq!(first.cache, "miss");
    let second = call(c, "cached", "/a", &[]).await?;
    assert_eq!((second.cache.as_str(), second.count), ("hit", first.count), "a hit is the stored answer");
    let r = c.http.get(&c.function_url("cached", "/a")).await?;
    assert!(r.header("age").is_some() && r.header("x-sluice-instance").is_some(), "{:?}", r.headers);
    // Method, path and query make the key.
    assert_eq!(call(c, "cached", "/b", &[]).await?.cache, "miss");
    assert_eq!(call(c, "cached", "/a?x=1", &[]).await?.cache, "miss");
    let head = c.http.send(Method::HEAD, &c.function_url("cached", "/a"), "", &[]).await?;
    assert_eq!(head.header("x-sluice-cache").as_deref(), Some("miss"), "HEAD is its own key");
    // Two hits so far, neither of which reached the function: it answered /a, /b, /a?x=1 and HEAD /a.
    assert_eq!(answered(c, "cached").await?, first.count + 3);

    // A client's no-store skips the cache both ways; no-cache fetches and stores the fresh answer.
    let bypass = call(c, "cached", "/a", &[("cache-control", "no-store")]).await?;
    assert!(bypass.cache == "miss" && bypass.count > first.count);
    assert_eq!(call(c, "cached", "/a", &[]).await?.count, first.count, "the bypass stored nothing");
    let refreshed = call(c, "cached", "/a", &[("cache-control", "no-cache")]).await?;
    assert!(refreshed.cache == "miss" && refreshed.count > bypass.count);
    assert_eq!(call(c, "cached", "/a", &[]).await?.count, refreshed.count, "the refresh stored its answer");

    // The function's no-store and private are kept to: every call reaches it.
    for cc in ["no-store", "private, max-age=60"] {
        let one = call(c, "cached", "/own", &[("x-hello-cache-control", cc)]).await?;
        let two = call(c, "cached", "/own", &[("x-hello-cache-control", cc)]).await?;
        assert!(one.cache == "miss" && two.cache == "miss" && two.count > one.count, "{cc}: {one:?} {two:?}");
    }

    // Entries expire after the TTL.
    let stored = call(c, "cached", "/ttl", &[]).await?;
    assert_eq!(call(c, "cached", "/ttl", &[]).await?.count, stored.count);
    tokio::time::sleep(Duration::from_secs(TTL_SECS) + Duration::from_millis(300)).await;
    let expired = call(c, "cached", "/ttl", &[]).await?;
    assert!(expired.cache == "miss" && expired.count > stored.count, "{expired:?}");

    // Deploying again, even the same spec, invalidates every entry.
    let before = call(c, "cached", "/ttl", &[]).await?;
    assert_eq!(before.cache, "hit");
    c.deploy(spec("cached", json!({"ttl_secs": TTL_SECS}))).await?;
    let after = call(c, "cached", "/ttl", &[]).await?;
    assert!(after.cache == "miss" && after.count > before.count, "{after:?}");

    // A purge of one path drops that path only; a purge of all, everything.
    for p in ["/p", "/q"] {
        call(c, "cached", p, &[]).await?;
        assert_eq!(call(c, "cached", p, &[]).await?.cache, "hit");
    }
    let url = c.api("/v1/functions/cached/cache/purge");
    let purge = |body: serde_json::Value| {
        let (http, url) = (c.http.clone(), url.clone());
        async move { http.json(Method::POST, &url, &body).await }
    };
    let r = purge(json!({"path": "/p"})).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(call(c, "cached", "/p", &[]).await?.cache, "miss");
    assert_eq!(call(c, "cached", "/q", &[]).await?.cache, "hit");
    assert_eq!(purge(json!({})).await?.status, StatusCode::OK);
    assert_eq!(call(c, "cached", "/q", &[]).await?.cache, "miss");
    let r = purge(json!({"path": "no-slash"})).await?;
    assert!(r.status == StatusCode::BAD_REQUEST && r.text().contains("\"path\""), "{}", r.text());
    let r = c.http.json(Method::POST, &c.api("/v1/functions/nope/cache/purge"), &json!({})).await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Figures: on the gateway's /metrics, and in the function's windows.
    let metrics = c.http.get(&format!("{}/metrics", c.node.gateway_url())).await?.text();
    let value = |name: &str| -> Option<f64> {
        let prefix = format!("{name}{{function=\"cached\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(prefix.as_str())?.parse().ok())
    };
    assert!(value("sluice_gateway_cache_hits_total").is_some_and(|v| v >= 8.0), "{metrics}");
    assert!(value("sluice_gateway_cache_misses_total").is_some_and(|v| v >= 10.0), "{metrics}");
    assert!(value("sluice_gateway_cache_bytes").is_some_and(|v| v > 0.0), "{metrics}");
    assert!(metrics.contains("sluice_gateway_cache_evictions_total{function=\"cached\"} 0"), "{metrics}");
    eventually("cache figures in the function's windows", Duration::from_secs(10), || async {
        let v = c.http.get(&c.api("/v1/metrics/functions/cached?range=60s")).await?.json()?;
        Ok((v["combined"]["cache_bytes"].as_f64().is_some_and(|b| b > 0.0) && v["combined"]["cache_hits_per_sec"].as_f64().is_some()).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_hundred_concurrent_misses_reach_the_function_once() -> Result<()> {
    let c = Cluster::start("t-cache-coalesce").await?;
    let result = coalescing(&c).await;
    c.stop().await?;
    result
}

async fn coalescing(c: &Cluster) -> Result<()> {
    c.deploy(spec("slow", json!({"ttl_secs": 60}))).await?;
    let before = answered(c, "slow").await?;
    // Each answer takes 500 ms: the 100 requests are all in before the first is answered.
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let (http, url) = (c.http.clone(), c.function_url("slow", "/one"));
            tokio::spawn(async move { http.send(Method::GET, &url, "", &[("x-hello-delay-ms", "500")]).await })
        })
        .collect();
    let (mut misses, mut counts) = (0, std::collections::BTreeSet::new());
    for call in calls {
        let r = call.await??;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        misses += usize::from(r.header("x-sluice-cache").as_deref() == Some("miss"));
        counts.insert(r.header("x-hello-count").context("count")?);
    }
    assert_eq!((misses, counts.len()), (1, 1), "one request went to the function, the others got its answer");
    assert_eq!(answered(c, "slow").await?, before + 2, "the function answered the count probe and one of the hundred");
    Ok(())
}
