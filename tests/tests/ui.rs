//! The dashboard in a real browser: headless Chromium, driven by chromedriver
//! over the W3C WebDriver HTTP API, against a real single-node Sluice (the
//! in-process `sluice up`) with tokens required, on the real Docker Engine and
//! registry (`sluice/hello` at 127.0.0.1:5000, as the other tests use).
//!
//! It deploys `hello` with a rule (`busy`) that fires while hello is called,
//! invokes it through the gateway, and then, in the page: an unknown token is
//! refused and another asked for, a token without the reader role is told it
//! lacks the role (and the browser's console shows each refused request,
//! which proves the console is read); a reader token then
//! shows each page with real data: the node, the function and its figures,
//! the function's timelines with the requests, the ready instance and the
//! rule's firing on their charts, updated live as more requests come, the
//! decisions, and the cluster's leader. After that the console must hold no
//! error (CSP violations, script errors, failed requests).
//!
//! Screenshots of every page are written to `target/ui-screenshots/` at the
//! workspace root (`nodes.png`, `functions.png`, `function.png`, `events.png`,
//! `cluster.png`, `forbidden.png`), and stay there after the run for CI to
//! keep as artifacts (scripts/test.sh prints where).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/prereqs.sh
//! --browser`, which scripts/test.sh runs, installs them); fails, naming the
//! apt-get command, when either is missing.

use anyhow::{bail, ensure, Context, Result};
use base64::Engine;
use serde_json::{json, Value};
use sluice_cli::node::AuthArg;
use sluice_tests::{eventually, hello_image, Cluster, Http, Method};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const NODE: &str = "t-ui";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_real_data_without_console_errors() -> Result<()> {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        ensure!(Path::new(tool).exists(), "{tool} is missing: run `sudo apt-get install -y chromium chromium-driver` (scripts/prereqs.sh --browser does)");
    }
    let c = Cluster::start_with(NODE, |a| a.coordinator.auth = AuthArg::Required).await?;
    let result = scenario(&c).await;
    c.stop().await?;
    result
}

async fn scenario(c: &Cluster) -> Result<()> {
    let admin = c.admin_token()?;
    let http = c.http.clone().with_token(Some(admin));
    let token = |name: &'static str, role: &'static str| {
        let http = http.clone();
        async move {
            let r = http.json(Method::POST, &c.api("/v1/tokens"), &json!({"name": name, "roles": [role]})).await?;
            ensure!(r.status.as_u16() == 201, "token {name}: {} {}", r.status, r.text());
            Ok(r.json()?["token"].as_str().context("the secret")?.to_string())
        }
    };
    let reader = token("dash-reader", "reader").await?;
    let invoker = token("dash-invoker", "invoker").await?;
    let r = http.json(Method::POST, &c.api("/v1/functions"), &json!({"name": "hello", "image": hello_image(), "port": 8080, "min_instances": 0, "max_instances": 2})).await?;
    ensure!(r.status.is_success(), "deploy hello: {} {}", r.status, r.text());
    // A rule that fires while hello is called, to be marked on its timeline (with a
    // cooldown: a rule without one acts while it holds but records no firing).
    let rule = json!({"rules": [{"name": "busy", "scope": "function:hello", "rule": "when rate(function.requests, 10s) > 0 then set_min(1) cooldown 60s"}]});
    let r = http.json(Method::PUT, &c.api("/v1/rules"), &rule).await?;
    ensure!(r.status.is_success(), "rules: {} {}", r.status, r.text());
    // A cold start, then requests spread over a few seconds, so several of the timeline's slots hold some.
    invoke(c, 12).await?;

    let driver = Driver::start().await?;
    let result = browse(c, &driver, &invoker, &reader).await;
    driver.stop().await;
    result
}

/// `n` calls of hello through the gateway, four a second.
async fn invoke(c: &Cluster, n: usize) -> Result<()> {
    for _ in 0..n {
        let r = c.http.send(Method::POST, &c.function_url("hello", ""), "dashboard", &[]).await?;
        ensure!(r.status.is_success(), "invoke hello: {} {}", r.status, r.text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

async fn browse(c: &Cluster, d: &Driver, invoker: &str, reader: &str) -> Result<()> {
    std::fs::create_dir_all(screenshots_dir())?;
    d.go(&format!("{}/ui#/nodes", c.node.api_url())).await?;
    // No token yet: the page asks for one and sends nothing.
    d.wait_text("#login-why", "asks for an API token").await?;
    ensure!(d.logs().await?.is_empty(), "the page logged something before any request");

    // A token the API does not know: refused, and asked for again.
    d.give_token("sluice_0123456789ab_notasecret").await?;
    d.wait_text("#login-why", "refused the token").await?;
    // The page's next redraws (every 3 s) keep telling why.
    tokio::time::sleep(Duration::from_secs(4)).await;
    d.wait_text("#login-why", "refused the token").await?;
    let logs = d.logs().await?;
    ensure!(logs.iter().any(|l| l["level"] == "SEVERE" && l["message"].as_str().unwrap_or("").contains("401")), "the refused token's request should be in the console: {logs:?}");

    // A token without the reader role: told so, by name.
    d.give_token(invoker).await?;
    d.wait_text("#forbidden", "lacks the role").await?;
    d.screenshot("forbidden").await?;
    let logs = d.logs().await?;
    ensure!(logs.iter().any(|l| l["level"] == "SEVERE" && l["message"].as_str().unwrap_or("").contains("403")), "the refused request should be in the console: {logs:?}");

    d.click("#forget").await?;
    d.give_token(reader).await?;
    d.wait_text("#nodes", NODE).await?;
    d.wait_text("#nodes", "ready").await?;
    d.screenshot("nodes").await?;
    // A redraw with the invoker's token may have been under way when it was
    // forgotten: its refusal is all the console may hold from before.
    let early = d.logs().await?;
    ensure!(early.iter().all(|l| l["level"] != "SEVERE" || l["message"].as_str().unwrap_or("").contains("403")), "console errors: {early:#?}");

    d.hash("#/functions").await?;
    d.wait_text("#functions", "hello").await?;
    d.screenshot("functions").await?;

    d.hash("#/functions/hello").await?;
    // The requests made above, and the instance their cold start made, are on the 15-minute timeline.
    let peak = |chart: &'static str, series: &'static str| async move {
        let v = d
            .script("const e = document.querySelector(arguments[0]); return e ? e.getAttribute('data-peak') : null", json!([format!("#{chart} [data-series='{series}']")]))
            .await?;
        Ok::<_, anyhow::Error>(v.as_str().and_then(|s| s.parse::<f64>().ok()))
    };
    eventually("requests and a ready instance on the timeline", Duration::from_secs(40), || async {
        let requests = peak("timeline-15m-demand", "requests/s").await?;
        let ready = peak("timeline-15m-instances", "ready").await?;
        Ok((requests.is_some_and(|r| r > 0.0) && ready.is_some_and(|r| r >= 1.0)).then_some(()))
    })
    .await?;
    // And on the day's, per minute (a minute's mean: part of it may predate the instance).
    let day = peak("timeline-1d-instances", "ready").await?;
    ensure!(day.is_some_and(|r| r > 0.0), "no ready instance on the day's timeline: {day:?}");
    let day = peak("timeline-1d-demand", "requests/s").await?;
    ensure!(day.is_some_and(|r| r > 0.0), "no requests on the day's timeline: {day:?}");
    let lines = d.script("return document.querySelectorAll('#timeline-15m-demand polyline').length", json!([])).await?;
    ensure!(lines.as_u64() >= Some(1), "no line drawn on the demand chart: {lines}");
    // The rule's firing: marked on the charts and counted in their legend.
    eventually("the rule's firing on the timeline", Duration::from_secs(20), || async {
        let marks = d.script("return document.querySelectorAll('#timeline-15m-instances line.marker').length", json!([])).await?;
        let legend = d.text("#timeline-15m-instances figcaption").await?.unwrap_or_default();
        Ok((marks.as_u64() >= Some(1) && legend.contains("rules fired")).then_some(()))
    })
    .await?;
    // Live: more requests show up without reloading or navigating.
    let before = requests_shown(d).await?;
    invoke(c, 4).await?;
    eventually("the summary to count the new requests", Duration::from_secs(20), || async { Ok((requests_shown(d).await? >= before + 4).then_some(())) }).await?;
    d.screenshot("function").await?;

    d.hash("#/events").await?;
    d.wait_text("#events", "hello").await?;
    d.screenshot("events").await?;

    d.hash("#/cluster").await?;
    d.wait_text("#members", "(leader)").await?;
    d.screenshot("cluster").await?;

    let logs = d.logs().await?;
    ensure!(logs.iter().all(|l| l["level"] != "SEVERE"), "console errors: {logs:#?}");
    Ok(())
}

/// The `requests N` the function page's summary shows.
async fn requests_shown(d: &Driver) -> Result<u64> {
    let text = d.text("#function-summary").await?.unwrap_or_default();
    let n = text.split(" · ").find_map(|part| part.strip_prefix("requests ")).and_then(|n| n.parse().ok());
    n.with_context(|| format!("no request count in {text:?}"))
}

/// A chromedriver process and one headless Chromium session in it.
struct Driver {
    child: Child,
    http: Http,
    session: String,
}

impl Driver {
    async fn start() -> Result<Driver> {
        let port = sluice_tests::ports::free_port("127.0.0.1")?;
        let child = Command::new(CHROMEDRIVER).arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("starting chromedriver")?;
        let http = Http::new();
        let base = format!("http://127.0.0.1:{port}");
        let mut driver = Driver { child, http, session: base.clone() };
        eventually("chromedriver to answer", Duration::from_secs(20), || async {
            Ok(driver.http.get(&format!("{base}/status")).await.ok().filter(|r| r.json().is_ok_and(|v| v["value"]["ready"] == true)).map(|_| ()))
        })
        .await?;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]},
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let r = driver.http.json(Method::POST, &format!("{base}/session"), &caps).await?;
        let id = r.json()?["value"]["sessionId"].as_str().map(str::to_string);
        match id {
            Some(id) => driver.session = format!("{base}/session/{id}"),
            None => bail!("chromedriver made no session: {}", r.text()),
        }
        Ok(driver)
    }

    async fn call(&self, method: Method, path: &str, body: Value) -> Result<Value> {
        let url = format!("{}{path}", self.session);
        let r = if method == Method::GET { self.http.get(&url).await? } else { self.http.json(method, &url, &body).await? };
        let v = r.json().with_context(|| format!("{path}: not JSON: {}", r.text()))?;
        ensure!(r.status.is_success(), "{path}: {} {}", r.status, v["value"]);
        Ok(v["value"].clone())
    }

    async fn go(&self, url: &str) -> Result<()> {
        self.call(Method::POST, "/url", json!({"url": url})).await.map(drop)
    }

    /// Moves to another view the way a click on the menu does (same page, same tab).
    async fn hash(&self, hash: &str) -> Result<()> {
        self.script("location.hash = arguments[0]", json!([hash])).await.map(drop)
    }

    async fn script(&self, script: &str, args: Value) -> Result<Value> {
        self.call(Method::POST, "/execute/sync", json!({"script": script, "args": args})).await
    }

    async fn text(&self, selector: &str) -> Result<Option<String>> {
        let v = self.script("const e = document.querySelector(arguments[0]); return e ? e.textContent : null", json!([selector])).await?;
        Ok(v.as_str().map(str::to_string))
    }

    /// Waits until the element `selector` exists and its text contains `want`.
    async fn wait_text(&self, selector: &str, want: &str) -> Result<()> {
        let found =
            eventually(&format!("{selector} to show {want:?}"), Duration::from_secs(30), || async { Ok(self.text(selector).await?.filter(|t| t.contains(want)).map(|_| ())) })
                .await;
        if found.is_err() {
            let page = self.text("body").await.ok().flatten().unwrap_or_default();
            bail!("{selector} never showed {want:?}; the page reads: {page}");
        }
        Ok(())
    }

    async fn find(&self, selector: &str) -> Result<String> {
        let v = self.call(Method::POST, "/element", json!({"using": "css selector", "value": selector})).await?;
        Ok(v[ELEMENT].as_str().with_context(|| format!("no element {selector}: {v}"))?.to_string())
    }

    async fn click(&self, selector: &str) -> Result<()> {
        let id = self.find(selector).await?;
        self.call(Method::POST, &format!("/element/{id}/click"), json!({})).await.map(drop)
    }

    /// Types `token` into the page's token form and sends it.
    async fn give_token(&self, token: &str) -> Result<()> {
        self.wait_text("#login-why", "token").await?;
        let id = self.find("#token").await?;
        self.call(Method::POST, &format!("/element/{id}/value"), json!({"text": token})).await?;
        self.click("#token-submit").await
    }

    async fn screenshot(&self, name: &str) -> Result<()> {
        let png = self.call(Method::GET, "/screenshot", Value::Null).await?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().context("a base64 screenshot")?)?;
        std::fs::write(screenshots_dir().join(format!("{name}.png")), bytes)?;
        Ok(())
    }

    /// The browser console's entries since the last call (chromedriver empties its log as it answers).
    async fn logs(&self) -> Result<Vec<Value>> {
        let v = self.call(Method::POST, "/se/log", json!({"type": "browser"})).await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    async fn stop(mut self) {
        let _ = self.http.send(Method::DELETE, &self.session, "", &[]).await;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Driver {
    /// A failed test still ends its chromedriver (and with it, its Chromium).
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}
