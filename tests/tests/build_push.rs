//! Images from source to host, against the real registry (which asks for
//! credentials) and Docker: `sluice build --push` builds a directory and pushes
//! it with the registry's credentials, an agent pulls it with its own, `sluice
//! deploy --build` does all three, a wrong password is refused with an error
//! naming the registry (at push, at the coordinator's digest check and at the
//! agent's pull), and the agent's image GC removes an unused image and keeps
//! the one in use.
//!
//! The registry is the one `registry_credentials_file` names
//! (`SLUICE_REGISTRY_CREDENTIALS`, else `scripts/registry.sh`'s); the `sluice`
//! binary is `SLUICE_BIN`'s (else the static build).

use anyhow::{ensure, Context, Result};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_cli::node::HostArgs;
use sluice_common::registry_auth::RegistryCredentials;
use sluice_tests::process_cluster::sluice_binary;
use sluice_tests::{eventually, registry_credentials_file, Cluster};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const START: Duration = Duration::from_secs(60);

fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker").args(args).output()?;
    ensure!(out.status.success(), "docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The registry's credentials file, read; fails with what to run when there is none.
fn registry() -> Result<(PathBuf, RegistryCredentials)> {
    let file = registry_credentials_file().context("no registry credentials file: run scripts/registry.sh start (or set SLUICE_REGISTRY_CREDENTIALS)")?;
    let credentials = RegistryCredentials::read(&file).map_err(anyhow::Error::msg)?;
    Ok((file, credentials))
}

/// Runs the `sluice` CLI with `credentials` as its registry credentials; returns (success, stdout, stderr).
/// It waits off the runtime's thread: the cluster it may talk to runs on that thread.
async fn sluice(args: &[&str], credentials: &Path) -> Result<(bool, String, String)> {
    let mut command = Command::new(sluice_binary()?);
    command.args(args).env("SLUICE_REGISTRY_CREDENTIALS", credentials).env("NO_COLOR", "1");
    let out = tokio::task::spawn_blocking(move || command.output()).await??;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// A build directory: the hello function's static binary (taken from its image)
/// FROM scratch, with `marker` making each directory's image its own, and a
/// `.dockerignore`d file (what reaches Docker is unit-tested in the CLI).
fn function_dir(marker: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let container = docker(&["create", "sluice/hello:latest"]).context("the hello image is missing: run scripts/build-images.sh")?;
    let copied = docker(&["cp", &format!("{container}:/fn"), &dir.path().join("fn").display().to_string()]);
    docker(&["rm", &container])?;
    copied?;
    std::fs::write(dir.path().join("marker"), marker)?;
    std::fs::write(dir.path().join("secret"), "not for the image")?;
    std::fs::write(dir.path().join(".dockerignore"), "secret\n")?;
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\nCOPY fn /fn\nCOPY marker /marker\nUSER 65534:65534\nEXPOSE 8080\nENTRYPOINT [\"/fn\"]\n")?;
    Ok(dir)
}

/// Builds `dir` as `tag` and pushes it with `credentials`; returns the digest it printed.
async fn build_and_push(dir: &Path, tag: &str, credentials: &Path) -> Result<String> {
    let (ok, stdout, stderr) = sluice(&["build", &dir.display().to_string(), "--tag", tag, "--push", "--output", "json"], credentials).await?;
    ensure!(ok, "sluice build failed: {stderr}");
    let built: Value = serde_json::from_str(stdout.trim()).with_context(|| format!("sluice build printed {stdout:?}"))?;
    ensure!(built["image"] == tag && built["pushed"] == true, "{built}");
    built["digest"].as_str().map(str::to_string).context("no digest in the build's JSON")
}

/// Removes the images a test left on this host, once its containers are gone
/// (best effort: an image still in use elsewhere stays). Removals here never prune
/// parents: the builds share their cached first steps, and a concurrent build
/// fails if one goes from under it.
fn forget_images(references: &[String]) {
    for reference in references {
        let _ = Command::new("docker").args(["image", "rm", "--no-prune", reference]).output();
    }
}

async fn answers(c: &Cluster, name: &str) -> Result<String> {
    eventually(&format!("{name} answers"), START, || async {
        let r = c.http.send(Method::POST, &c.function_url(name, ""), "world", &[]).await;
        Ok(r.ok().filter(|r| r.status == StatusCode::OK).map(|r| r.text()))
    })
    .await
}

#[tokio::test]
async fn built_images_are_pushed_and_pulled_with_credentials() -> Result<()> {
    let (file, credentials) = registry()?;
    let c = Cluster::start("t-build").await?;
    let result = build_push_pull(&c, &file, &credentials).await;
    c.stop().await?;
    let (built, deployed) = (format!("{}/sluice-test/built", credentials.registry), format!("{}/sluice-test/deployed", credentials.registry));
    let pid = std::process::id();
    if let Ok(digest) = &result {
        forget_images(&[format!("{built}@{digest}")]);
    }
    forget_images(&[format!("{deployed}:t{pid}")]);
    result.map(|_| ())
}

/// Returns the digest of the first image, which the agent pulled.
async fn build_push_pull(c: &Cluster, file: &Path, credentials: &RegistryCredentials) -> Result<String> {
    let registry = &credentials.registry;
    let tag = format!("{registry}/sluice-test/built:t{}", std::process::id());
    let dir = function_dir("built")?;
    let digest = build_and_push(dir.path(), &tag, file).await?;
    // The agent must pull it: the registry holds it, this host no longer does.
    docker(&["image", "rm", "--no-prune", &tag])?;
    c.deploy(json!({"name": "built", "image": tag, "port": 8080, "min_instances": 1, "max_instances": 1})).await?;
    assert_eq!(c.function("built").await?["function"]["spec"]["image_digest"], digest.as_str(), "the coordinator asked the registry with credentials");
    assert_eq!(answers(c, "built").await?, "hello, world");
    let pulled = docker(&["image", "inspect", "--format", "{{json .RepoDigests}}", &format!("{tag}@{digest}")])?;
    assert!(pulled.contains(&digest), "the agent pulled the pushed image: {pulled}");

    // `sluice deploy --build` builds, pushes and deploys in one go.
    let again = function_dir("deployed")?;
    let tag2 = format!("{registry}/sluice-test/deployed:t{}", std::process::id());
    let api = c.node.api_url();
    let (ok, stdout, stderr) =
        sluice(&["--api", &api, "deploy", "deployed", "--build", &again.path().display().to_string(), "--image", &tag2, "--port", "8080", "--min", "1"], file).await?;
    assert!(ok, "sluice deploy --build failed: {stdout} {stderr}");
    assert!(stdout.contains("deployed deployed"), "{stdout}");
    assert_eq!(answers(c, "deployed").await?, "hello, world");
    Ok(digest)
}

#[tokio::test]
async fn a_wrong_password_is_refused_naming_the_registry() -> Result<()> {
    let (file, credentials) = registry()?;
    let registry = credentials.registry.clone();
    let dir = tempfile::tempdir()?;
    let wrong = dir.path().join("wrong-credentials");
    std::fs::write(&wrong, format!("registry={registry}\nusername={}\npassword=not-{}\n", credentials.username, credentials.password))?;
    let tag = format!("{registry}/sluice-test/refused:t{}", std::process::id());
    let source = function_dir("refused")?;

    // At push.
    let (ok, _, stderr) = sluice(&["build", &source.path().display().to_string(), "--tag", &tag, "--push"], &wrong).await?;
    assert!(!ok, "a push with a wrong password failed");
    assert!(stderr.contains(&format!("registry {registry} refused the credentials")) && stderr.contains("--registry-credentials"), "{stderr}");

    // The image exists, pushed with the right password; this host forgets it.
    build_and_push(source.path(), &tag, &file).await?;
    docker(&["image", "rm", "--no-prune", &tag])?;

    // At the coordinator's digest check, in the API's answer.
    let pinning = Cluster::start_with("t-refused-pin", |args| args.host.registry_credentials = vec![wrong.clone()]).await?;
    let answer = pinning.http.json(Method::POST, &pinning.api("/v1/functions"), &json!({"name": "refused", "image": tag, "port": 8080})).await;
    pinning.stop().await?;
    let answer = answer?;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text());
    assert!(answer.text().contains(&format!("registry {registry} refused the credentials of user")) && answer.text().contains("--registry-credentials"), "{}", answer.text());

    // At the agent's pull, in the instance's reason: a second agent, with the wrong
    // password, is the only one the function may run on.
    let c = Cluster::start("t-refused").await?;
    let result = async {
        let node = "t-refused-wrong";
        sluice_tests::remove_containers(&c.docker, &sluice_common::NodeId::new(node)?).await?;
        let host = HostArgs { registry_credentials: vec![wrong.clone()], labels: vec!["pull=wrong".into()], ..sluice_tests::host_args(node) };
        let agent = c.node.add_agent(&host, vec![c.node.api_url()]).await?;
        let spec = json!({"name": "refused", "image": tag, "port": 8080, "min_instances": 1, "max_instances": 1, "placement": {"node_selector": {"pull": "wrong"}}});
        c.deploy(spec).await?;
        let reason = eventually("the failed pull shows in the instance's reason", START, || async {
            let found = c.instances("refused").await?.into_iter().filter_map(|i| i["reason"].as_str().map(str::to_string)).find(|r| r.contains("refused the credentials"));
            Ok(found)
        })
        .await;
        agent.stop().await;
        sluice_tests::remove_containers(&c.docker, &sluice_common::NodeId::new(node)?).await?;
        let reason = reason?;
        assert!(reason.contains(&format!("registry {registry} refused the credentials of user")) && reason.contains("--registry-credentials"), "{reason}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    c.stop().await?;
    result
}

#[tokio::test]
async fn image_gc_removes_unused_images_and_keeps_those_in_use() -> Result<()> {
    let (file, credentials) = registry()?;
    let registry = &credentials.registry;
    let pid = std::process::id();
    let (kept, dropped) = (format!("{registry}/sluice-test/gc-kept:t{pid}"), format!("{registry}/sluice-test/gc-dropped:t{pid}"));
    let (kept_dir, dropped_dir) = (function_dir("kept")?, function_dir("dropped")?);
    let kept_digest = build_and_push(kept_dir.path(), &kept, &file).await?;
    let dropped_digest = build_and_push(dropped_dir.path(), &dropped, &file).await?;
    docker(&["image", "rm", "--no-prune", &kept, &dropped])?;
    // Collect whatever the disk holds, once an image has gone unused for 2 s.
    let c = Cluster::start_with("t-gc", |args| {
        args.host.image_gc_disk_percent = 0.0;
        args.host.image_gc_unused_secs = 2;
    })
    .await?;
    let result = async {
        for (name, image) in [("gc-kept", &kept), ("gc-dropped", &dropped)] {
            c.deploy(json!({"name": name, "image": image, "port": 8080, "min_instances": 1, "max_instances": 1})).await?;
            answers(&c, name).await?;
        }
        let (kept_ref, dropped_ref) = (format!("{kept}@{kept_digest}"), format!("{dropped}@{dropped_digest}"));
        let removed = c.http.send(Method::DELETE, &c.api("/v1/functions/gc-dropped"), "", &[]).await?;
        assert!(removed.status.is_success(), "{}", removed.text());
        eventually("the image GC removes the unused image", START, || async {
            let gone = Command::new("docker").args(["image", "inspect", &dropped_ref]).output()?.status.code() == Some(1);
            Ok(gone.then_some(()))
        })
        .await?;
        let metrics = c.http.get(&c.node.agent_metrics_url()).await?.text();
        assert!(metrics.lines().any(|l| l.starts_with("sluice_agent_images_removed_total ") && !l.ends_with(" 0")), "the removal is counted: {metrics}");
        // Several passes later the image in use is still there, and still serves.
        tokio::time::sleep(Duration::from_secs(4)).await;
        docker(&["image", "inspect", &kept_ref]).context("the image in use was kept")?;
        assert_eq!(answers(&c, "gc-kept").await?, "hello, world");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    c.stop().await?;
    forget_images(&[format!("{kept}@{kept_digest}"), format!("{dropped}@{dropped_digest}")]);
    result
}
