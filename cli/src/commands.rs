//! The client commands: deploy, invoke, ls, rm.

use sluice_cli::client::{describe_error, Api, Http};
use crate::table;
use crate::Output;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use serde_json::{json, Value};
use sluice_common::{Clock, FunctionName, FunctionSpec, ImageRef, SystemClock, Timestamp};
use std::io::Write;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// Function name: lowercase letters, digits and '-', at most 63.
    pub name: String,
    /// Image reference, e.g. 127.0.0.1:5000/sluice/hello:latest.
    #[arg(long)]
    pub image: String,
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
    /// Requests that may wait for an instance before 429.
    #[arg(long)]
    pub queue_limit: Option<u32>,
    /// Path answering 2xx when the function is ready.
    #[arg(long)]
    pub health_path: Option<String>,
}

impl DeployArgs {
    /// Builds and validates the spec here, so mistakes are caught before any request.
    fn spec(self) -> Result<FunctionSpec> {
        let mut spec = FunctionSpec::new(FunctionName::new(self.name)?, ImageRef::parse(self.image)?);
        macro_rules! set {
            ($($arg:ident => $($field:ident).+),* $(,)?) => { $(if let Some(v) = self.$arg { spec.$($field).+ = v; })* };
        }
        set!(port => port, min => min_instances, max => max_instances, concurrency => concurrency,
             cpu_millis => limits.cpu_millis, memory_mb => limits.memory_mb, pids => limits.pids,
             idle_timeout => idle_timeout_secs, start_timeout => start_timeout_secs, queue_limit => queue_limit,
             health_path => health_path);
        for kv in self.env {
            let (k, v) = kv.split_once('=').with_context(|| format!("--env {kv:?}: use KEY=VALUE"))?;
            spec.env.insert(k.to_string(), v.to_string());
        }
        spec.validate()?;
        Ok(spec)
    }
}

pub async fn deploy(api: &Api, output: Output, args: DeployArgs) -> Result<ExitCode> {
    let spec = args.spec()?;
    let name = spec.name.clone();
    let reply = api.call(Method::POST, "/v1/functions", Some(&serde_json::to_value(&spec)?)).await?;
    match output {
        Output::Json => println!("{reply}"),
        Output::Table => println!("deployed {name}: invoke it with `sluice invoke {name}`"),
    }
    Ok(ExitCode::SUCCESS)
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

pub async fn invoke(gateway: &str, args: InvokeArgs) -> Result<ExitCode> {
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
    let reply = Http::new().send(method, &url, body, &headers).await?;
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
                text(&s["name"]),
                text(&s["image"]),
                format!("{}-{}", s["min_instances"], s["max_instances"]),
                text(&s["concurrency"]),
                count(f, "ready").to_string(),
                (count(f, "pending") + count(f, "starting")).to_string(),
                text(&f["requests"]),
                text(&f["in_flight"]),
                text(&f["queued"]),
                text(&f["cold_starts"]),
            ]
        })
        .collect();
    println!("{}", table::render(&["FUNCTION", "IMAGE", "MIN-MAX", "CONC", "READY", "STARTING", "REQUESTS", "IN-FLIGHT", "QUEUED", "COLD"], &rows));
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
                text(&i["function"]),
                text(&i["state"]),
                text(&i["node"]),
                endpoint,
                age(now.since(created)),
                i["reason"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    println!("\n{}", table::render(&["INSTANCE", "FUNCTION", "STATE", "NODE", "ENDPOINT", "AGE", "REASON"], &rows));
    Ok(ExitCode::SUCCESS)
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

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn age(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}
