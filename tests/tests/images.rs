//! What may run, end to end against the real registry and Docker: a deploy pins
//! the image to the digest its tag names, instances run exactly that even after
//! the tag is pushed again, a redeploy takes the new digest, and the cluster's
//! registry allow-list refuses images from anywhere else.

use anyhow::{Context, Result};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_tests::{eventually, Cluster, REGISTRY};
use std::time::Duration;

const START: Duration = Duration::from_secs(60);

fn docker(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("docker").args(args).output()?;
    anyhow::ensure!(out.status.success(), "docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Pushes local image `from` as `to` and returns the digest the registry gave it.
fn push_as(from: &str, to: &str) -> Result<String> {
    docker(&["tag", from, to])?;
    let said = docker(&["push", to])?;
    // The last line of a push reads "<tag>: digest: sha256:... size: N".
    said.lines().rev().find_map(|l| l.split("digest: ").nth(1)).and_then(|r| r.split_whitespace().next()).map(str::to_string).with_context(|| format!("no digest in: {said}"))
}

async fn spec_of(c: &Cluster, name: &str) -> Result<Value> {
    Ok(c.function(name).await?["function"]["spec"].clone())
}

#[tokio::test]
async fn a_deploy_pins_its_image_and_instances_run_exactly_that() -> Result<()> {
    let c = Cluster::start("t-pin").await?;
    let result = pinning(&c).await;
    c.stop().await?;
    result
}

async fn pinning(c: &Cluster) -> Result<()> {
    let tag = format!("{REGISTRY}/sluice/pin:t{}", std::process::id());
    let hello = push_as("sluice/hello:latest", &tag)?;
    c.deploy(json!({"name": "pinned", "image": tag, "port": 8080, "min_instances": 1, "max_instances": 1})).await?;
    assert_eq!(spec_of(c, "pinned").await?["image_digest"], hello.as_str(), "the deploy pinned the digest the tag named");
    let answers = |c: &Cluster| {
        let (http, url) = (c.http.clone(), c.function_url("pinned", ""));
        async move { http.send(Method::POST, &url, "world", &[]).await.map(|r| (r.status, r.text())) }
    };
    let first = eventually("the pinned instance answers", START, || async { Ok(answers(c).await.ok().filter(|(s, _)| *s == StatusCode::OK)) }).await?;
    assert_eq!(first.1, "hello, world");

    // The tag moves to another image; the running instance dies and is replaced.
    let sleep = push_as("sluice/sleep:latest", &tag)?;
    assert_ne!(sleep, hello);
    let old = c.running_containers("pinned").await?.pop().context("a running container")?;
    docker(&["kill", &old.id.0])?;
    eventually("a replacement answers", START, || async {
        let fresh = c.running_containers("pinned").await?.into_iter().any(|k| k.id != old.id);
        Ok(match fresh {
            true => answers(c).await.ok().filter(|(s, _)| *s == StatusCode::OK),
            false => None,
        })
    })
    .await
    .map(|(_, text)| assert_eq!(text, "hello, world", "the replacement runs the deployed image, not what the tag names now"))?;
    let replacement = c.running_containers("pinned").await?.pop().context("the replacement")?;
    let image_id = docker(&["inspect", "--format", "{{.Image}}", &replacement.id.0])?;
    assert_eq!(image_id, docker(&["image", "inspect", "--format", "{{.Id}}", "sluice/hello:latest"])?, "the container runs hello's image");

    // A redeploy asks the registry again: the function now runs what the tag names.
    c.deploy(json!({"name": "pinned", "image": tag, "port": 8080, "min_instances": 1, "max_instances": 1})).await?;
    assert_eq!(spec_of(c, "pinned").await?["image_digest"], sleep.as_str());

    // A tag the registry does not have is refused at deploy, naming the field.
    let r = c.http.json(Method::POST, &c.api("/v1/functions"), &json!({"name": "ghost", "image": format!("{REGISTRY}/sluice/no-such-image:1")})).await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.json()?["error"]["field"], "image");
    assert!(r.text().contains("push it first"), "{}", r.text());
    Ok(())
}

#[tokio::test]
async fn the_registry_allow_list_refuses_images_from_elsewhere() -> Result<()> {
    let c = Cluster::start("t-allow").await?;
    let result = allow_list(&c).await;
    c.stop().await?;
    result
}

async fn allow_list(c: &Cluster) -> Result<()> {
    let put = |allowed: Value| {
        let (http, url) = (c.http.clone(), c.api("/v1/registries"));
        async move { http.json(Method::PUT, &url, &json!({ "allowed": allowed })).await }
    };
    let image = sluice_tests::hello_image();
    assert_eq!(put(json!(["registry.example.com"])).await?.status, StatusCode::OK);
    let refused = c.http.json(Method::POST, &c.api("/v1/functions"), &json!({"name": "outsider", "image": image})).await?;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text());
    assert!(refused.text().contains("allow-list") && refused.text().contains(REGISTRY), "{}", refused.text());
    assert_eq!(c.http.get(&c.api("/v1/functions/outsider")).await?.status, StatusCode::NOT_FOUND, "nothing was deployed");
    // A bad entry is refused with its position, and changes nothing.
    let bad = put(json!(["127.0.0.1:5000", "Not A Host"])).await?;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()?["error"]["field"], "allowed[1]");
    assert_eq!(c.http.get(&c.api("/v1/registries")).await?.json()?["allowed"], json!(["registry.example.com"]));
    // Allowed, it deploys.
    assert_eq!(put(json!(["registry.example.com", REGISTRY])).await?.status, StatusCode::OK);
    c.deploy(json!({"name": "insider", "image": image})).await?;
    Ok(())
}
