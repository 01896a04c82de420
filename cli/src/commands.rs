//! The client commands: deploy (with `--build`, through `build`), invoke, ls, rm.

use crate::table;
use crate::Output;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use serde_json::{json, Value};
use sluice_cli::client::{describe_error, Api, Http};
use sluice_common::labels;
use sluice_common::placement::Strategy;
use sluice_common::{Clock, FunctionName, FunctionSpec, ImageRef, SystemClock, Timestamp};
use std::io::Write;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// Function name: lowercase letters, digits and '-', at most 63.
    pub name: String,
    /// Image reference, e.g. 127.0.0.1:5000/sluice/hello:latest (with --build, the tag to build and push).
    #[arg(long, required_unless_present = "build")]
    pub image: Option<String>,
    /// Build the image from this directory and push it first (as `sluice build DIR --push`), then deploy it.
    #[arg(long, value_name = "DIR")]
    pub build: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub registry: crate::build::RegistryArgs,
    /// Port the function serves HTTP on inside its container.
    #[arg(long)]
    pub port: Option<u16>,
    /// Instances kept running even when idle (0 scales to zero).
    #[arg(long)]
    pub min: Option<u32>,
    /// Most instances at once.
    #[arg(long)]
    pub max: Option<u32>,
    /// Requests one instance serves at once.
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// CPU limit per instance in thousandths of a core.
    #[arg(long)]
    pub cpu_millis: Option<u32>,
    /// Memory limit per instance in MiB.
    #[arg(long)]
    pub memory_mb: Option<u32>,
    /// Process limit per instance.
    #[arg(long)]
    pub pids: Option<u32>,
    /// Seconds an instance may idle before it is stopped.
    #[arg(long)]
    pub idle_timeout: Option<u32>,
    /// Seconds a cold start may take before waiting requests get 503.
    #[arg(long)]
    pub start_timeout: Option<u32>,
    /// After deploying, wait until the minimum instances are ready, printing progress to stderr.
    #[arg(long)]
    pub wait: bool,
    /// Seconds --wait waits before giving up, 1 to 3600.
    #[arg(long, default_value_t = 120, requires = "wait", value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub wait_timeout: u32,
    /// Requests that may wait for an instance before 429.
    #[arg(long)]
    pub queue_limit: Option<u32>,
    /// Seconds an instance may take to begin its answer before the caller gets 504 (default 300).
    #[arg(long)]
    pub request_timeout: Option<u32>,
    /// At most this many requests per second at each gateway; beyond it 429 with Retry-After.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Requests admitted at once under --rate-limit after a quiet spell (default: one second's worth).
    #[arg(long, requires = "rate_limit")]
    pub rate_burst: Option<u32>,
    /// Path answering 2xx when the function is ready.
    #[arg(long)]
    pub health_path: Option<String>,
    /// Label KEY=VALUE that rule scopes select the function by (repeatable).
    #[arg(long = "label", short = 'l')]
    pub labels: Vec<String>,
    /// Concurrency one instance should carry on average, in percent of --concurrency (default 70).
    #[arg(long)]
    pub target_utilization: Option<u32>,
    /// Seconds of the stable window the default policy averages concurrency over (default 60).
    #[arg(long)]
    pub stable_window: Option<u32>,
    /// Seconds of the panic window that reacts to surges (default 6).
    #[arg(long)]
    pub panic_window: Option<u32>,
    /// Panic when the panic window asks for this percent of the ready instances (default 200).
    #[arg(long)]
    pub panic_threshold: Option<u32>,
    /// Most of its instances a function loses in one scale-down step, in percent (default 50).
    #[arg(long)]
    pub scale_down_max_percent: Option<u32>,
    /// Least seconds between scale-down steps (default 2).
    #[arg(long)]
    pub scale_down_step: Option<u32>,
    /// No keep-warm prediction for this function: demand, rules and bounds alone.
    #[arg(long)]
    pub no_predict: bool,
    /// Placement: fill the fullest node first (binpack), or the node with the fewest of this function's instances, then the emptiest (spread, the default).
    #[arg(long, value_parser = ["binpack", "spread"])]
    pub strategy: Option<String>,
    /// Only on nodes with this label KEY=VALUE (repeatable; all must match).
    #[arg(long)]
    pub node_selector: Vec<String>,
    /// Most instances of the function on one node.
    #[arg(long)]
    pub max_per_node: Option<u32>,
    /// Never on a node running this function (repeatable).
    #[arg(long)]
    pub anti_affinity: Vec<String>,
    /// Callers at the gateway need a token with the invoker role (default: public).
    #[arg(long)]
    pub private: bool,
    #[command(flatten)]
    pub cache: crate::cache::CacheArgs,
}

impl DeployArgs {
    /// Builds and validates the spec here, so mistakes are caught before any request.
    fn spec(self) -> Result<FunctionSpec> {
        let image = self.image.context("--image: name the image to deploy, or give --build DIR")?;
        let mut spec = FunctionSpec::new(FunctionName::new(self.name)?, ImageRef::parse(image)?);
        macro_rules! set {
            ($($arg:ident => $($field:ident).+),* $(,)?) => { $(if let Some(v) = self.$arg { spec.$($field).+ = v; })* };
        }
        set!(port => port, min => min_instances, max => max_instances, concurrency => concurrency,
             cpu_millis => limits.cpu_millis, memory_mb => limits.memory_mb, pids => limits.pids,
             idle_timeout => idle_timeout_secs, start_timeout => start_timeout_secs, queue_limit => queue_limit,
             request_timeout => request_timeout_secs,
             health_path => health_path);
        set!(target_utilization => scaling.target_utilization_percent, stable_window => scaling.stable_window_secs,
             panic_window => scaling.panic_window_secs, panic_threshold => scaling.panic_threshold_percent,
             scale_down_max_percent => scaling.scale_down_max_percent, scale_down_step => scaling.scale_down_step_secs);
        spec.scaling.predict = !self.no_predict;
        spec.private = self.private;
        spec.rate_limit = self.rate_limit.map(|requests_per_second| sluice_common::rate::RateLimit { requests_per_second, burst: self.rate_burst });
        spec.cache = self.cache.spec()?.map(Box::new);
        for kv in self.env {
            let (k, v) = kv.split_once('=').with_context(|| format!("--env {kv:?}: use KEY=VALUE"))?;
            spec.env.insert(k.to_string(), v.to_string());
        }
        for kv in self.labels {
            let (k, v) = labels::parse_pair("--label", &kv)?;
            spec.labels.insert(k, v);
        }
        for kv in self.node_selector {
            let (k, v) = labels::parse_pair("--node-selector", &kv)?;
            spec.placement.node_selector.insert(k, v);
        }
        if let Some(strategy) = self.strategy {
            spec.placement.strategy = if strategy == "binpack" { Strategy::Binpack } else { Strategy::Spread };
        }
        spec.placement.max_per_node = self.max_per_node;
        for f in self.anti_affinity {
            spec.placement.anti_affinity.push(FunctionName::new(f).map_err(|e| anyhow::anyhow!("--anti-affinity: {}", e.message))?);
        }
        spec.validate()?;
        Ok(spec)
    }
}

pub async fn deploy(api: &Api, output: Output, mut args: DeployArgs) -> Result<ExitCode> {
    let wait = args.wait.then(|| std::time::Duration::from_secs(args.wait_timeout.into()));
    // Checked before a build that may take minutes.
    FunctionName::new(args.name.clone())?;
    if let Some(dir) = args.build.take() {
        let built = crate::build::build(&dir, args.image.as_deref(), true, &args.registry, output).await?;
        args.image = Some(built.image.to_string());
    }
    let spec = args.spec()?;
    let name = spec.name.clone();
    let reply = api.call(Method::POST, "/v1/functions", Some(&serde_json::to_value(&spec)?)).await?;
    match output {
        Output::Json => println!("{reply}"),
        Output::Table => println!("deployed {name}: invoke it with `sluice invoke {name}`"),
    }
    if let Some(timeout) = wait {
        wait_ready(api, &name, spec.min_instances, timeout).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// How often `--wait` looks at the function's instances.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// `b3: 1/2 ready (1 starting)`: the progress line of `--wait`.
pub fn progress(name: &FunctionName, min: u32, instances: &Value) -> (u64, String) {
    let count = |state: &str| instances[state].as_u64().unwrap_or(0);
    let (ready, starting) = (count("ready"), count("pending") + count("starting"));
    (ready, format!("{name}: {ready}/{min} ready ({starting} starting)"))
}

/// Waits until `min` instances of `name` are ready, printing each change of
/// progress to stderr; past `timeout` an error says what to look at.
async fn wait_ready(api: &Api, name: &FunctionName, min: u32, timeout: std::time::Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let f = api.call(Method::GET, &format!("/v1/functions/{name}"), None).await?;
        let (ready, line) = progress(name, min, &f["function"]["instances"]);
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if ready >= u64::from(min) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{last} after {}s: see why with `sluice events --function {name}` (placement and start failures), `sluice ls` (instance states and reasons), `sluice logs {name}` (the containers' output) and `sluice nodes ls` (free capacity); or wait longer with --wait-timeout",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

#[derive(Args, Debug)]
pub struct InvokeArgs {
    /// Function name.
    pub name: String,
    /// Request body; makes the default method POST.
    #[arg(long, short = 'd')]
    pub data: Option<String>,
    /// HTTP method (default GET, or POST with --data).
    #[arg(long, short = 'X')]
    pub method: Option<String>,
    /// Path below the function, with an optional query, e.g. /items?id=3.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Extra header "Name: value" (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Print the status line and response headers too.
    #[arg(long, short = 'i')]
    pub include: bool,
}

pub async fn invoke(gateway: &str, token: Option<String>, tls_ca: Option<&std::path::Path>, args: InvokeArgs) -> Result<ExitCode> {
    let name = FunctionName::new(args.name)?;
    let method = match (&args.method, &args.data) {
        (Some(m), _) => Method::from_bytes(m.to_ascii_uppercase().as_bytes()).with_context(|| format!("--method {m:?} is not an HTTP method"))?,
        (None, Some(_)) => Method::POST,
        (None, None) => Method::GET,
    };
    if !args.path.starts_with('/') {
        bail!("--path {:?}: start it with '/', e.g. /items", args.path);
    }
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h.split_once(':').with_context(|| format!("--header {h:?}: use \"Name: value\""))?;
        headers.push((k.trim(), v.trim()));
    }
    let path = if args.path == "/" { String::new() } else { args.path.clone() };
    let url = format!("{gateway}/function/{name}{path}");
    let body = Bytes::from(args.data.unwrap_or_default());
    let reply = Http::with_ca(tls_ca)?.with_token(token).send(method, &url, body, &headers).await?;
    let mut stdout = std::io::stdout().lock();
    if args.include {
        writeln!(stdout, "{}", reply.status)?;
        for (k, v) in &reply.headers {
            writeln!(stdout, "{k}: {}", v.to_str().unwrap_or("<binary>"))?;
        }
        writeln!(stdout)?;
    }
    if reply.status.is_success() {
        stdout.write_all(&reply.body)?;
        if !reply.body.ends_with(b"\n") {
            writeln!(stdout)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let value: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    eprintln!("error: {}", describe_error(reply.status, &value, &reply.body));
    Ok(ExitCode::FAILURE)
}

pub async fn ls(api: &Api, output: Output) -> Result<ExitCode> {
    let functions = api.call(Method::GET, "/v1/functions", None).await?;
    let instances = api.call(Method::GET, "/v1/instances", None).await?;
    if output == Output::Json {
        println!("{}", json!({"functions": functions, "instances": instances}));
        return Ok(ExitCode::SUCCESS);
    }
    let count = |f: &Value, state: &str| f["instances"][state].as_u64().unwrap_or(0);
    let rows: Vec<Vec<String>> = functions
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let s = &f["spec"];
            vec![
                table::cell(&s["name"]),
                table::cell(&s["image"]),
                short_digest(&s["image_digest"]),
                format!("{}-{}", s["min_instances"], s["max_instances"]),
                table::cell(&s["concurrency"]),
                count(f, "ready").to_string(),
                count(f, "paused").to_string(),
                (count(f, "pending") + count(f, "starting")).to_string(),
                table::cell(&f["requests"]),
                table::cell(&f["in_flight"]),
                table::cell(&f["queued"]),
                table::cell(&f["cold_starts"]),
            ]
        })
        .collect();
    println!("{}", table::render(&["FUNCTION", "IMAGE", "DIGEST", "MIN-MAX", "CONC", "READY", "PAUSED", "STARTING", "REQUESTS", "IN-FLIGHT", "QUEUED", "COLD"], &rows));
    let now = SystemClock.now();
    let rows: Vec<Vec<String>> = instances
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let endpoint = match (&i["endpoint"]["host"], &i["endpoint"]["port"]) {
                (Value::String(h), Value::Number(p)) => format!("{h}:{p}"),
                _ => "-".into(),
            };
            let created = Timestamp(i["created_at"].as_u64().unwrap_or(0));
            vec![
                format!("i{}", i["id"]),
                table::cell(&i["function"]),
                table::cell(&i["state"]),
                table::cell(&i["node"]),
                endpoint,
                age(now.since(created)),
                i["reason"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    println!("\n{}", table::render(&["INSTANCE", "FUNCTION", "STATE", "NODE", "ENDPOINT", "AGE", "REASON"], &rows));
    Ok(ExitCode::SUCCESS)
}

/// `sha256:0123456789ab` (the first 12 hex digits, as `docker images` shows
/// ids), or `-` for an image deployed without pinning; `--output json` has it whole.
fn short_digest(d: &Value) -> String {
    match d.as_str() {
        Some(d) => d.chars().take("sha256:".len() + 12).collect(),
        None => "-".into(),
    }
}

pub async fn rm(api: &Api, output: Output, name: &str) -> Result<ExitCode> {
    let name = FunctionName::new(name)?;
    let reply = api.call(Method::DELETE, &format!("/v1/functions/{name}"), None).await?;
    match output {
        Output::Json => println!("{reply}"),
        Output::Table => println!("removed {name}; its instances are stopping"),
    }
    Ok(ExitCode::SUCCESS)
}

fn age(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_progress_counts_ready_against_the_minimum() {
        let name = FunctionName::new("b3").unwrap();
        assert_eq!(progress(&name, 2, &json!({"ready": 1, "starting": 1})), (1, "b3: 1/2 ready (1 starting)".into()));
        assert_eq!(progress(&name, 2, &json!({"pending": 2})), (0, "b3: 0/2 ready (2 starting)".into()));
        assert_eq!(progress(&name, 1, &json!({})).0, 0);
    }
}
