//! `sluice logs F`: a function's container output, read through the
//! coordinator from each instance's agent. Each line is prefixed by its
//! instance, as `docker compose logs` does; a container's stdout goes to
//! stdout and its stderr to stderr, so the two stay apart.

use crate::Output;
use anyhow::{Context, Result};
use clap::Args;
use http_body_util::BodyExt;
use sluice_cli::client::Api;
use sluice_common::logs::{parse_since, parse_tail, InstanceLogLine, LogStream, DEFAULT_TAIL};
use sluice_common::{FunctionName, InstanceId};
use std::io::Write;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Function name.
    name: String,
    /// Keep printing new lines until Ctrl-C, or until the instances stop.
    #[arg(long, short)]
    follow: bool,
    /// Last lines of each instance, 0 to 10000.
    #[arg(long, default_value_t = DEFAULT_TAIL, value_parser = tail)]
    tail: u32,
    /// Only this instance (i<number>, as `sluice ls` shows).
    #[arg(long, value_parser = instance)]
    instance: Option<InstanceId>,
    /// Only lines of the last DURATION: seconds, or a number with s, m or h (30s, 10m, 2h; at most 168h).
    #[arg(long, value_parser = since)]
    since: Option<u64>,
}

fn tail(value: &str) -> Result<u32, String> {
    parse_tail(value).map_err(|e| e.message)
}

fn instance(value: &str) -> Result<InstanceId, String> {
    value.parse::<InstanceId>().map_err(|e| e.message)
}

fn since(value: &str) -> Result<u64, String> {
    parse_since(value).map_err(|e| e.message)
}

impl LogsArgs {
    /// The API path and query these arguments ask for.
    fn path(&self) -> Result<String> {
        let name = FunctionName::new(self.name.as_str()).map_err(|e| anyhow::anyhow!("function name {:?}: {}", self.name, e.message))?;
        let mut path = format!("/v1/functions/{name}/logs?tail={}&follow={}", self.tail, self.follow);
        if let Some(id) = self.instance {
            path.push_str(&format!("&instance={id}"));
        }
        if let Some(secs) = self.since {
            path.push_str(&format!("&since={secs}s"));
        }
        Ok(path)
    }
}

/// `i3 | text`: the instance, padded so that lines of instances up to i9999 align.
pub fn format_line(line: &InstanceLogLine) -> String {
    format!("{:<5} | {}", line.instance.to_string(), line.line)
}

pub async fn run(api: &Api, output: Output, args: LogsArgs) -> Result<ExitCode> {
    let mut body = api.get_streaming(&args.path()?).await?;
    let mut buf = Vec::new();
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the coordinator's answer broke off")?;
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = buf.drain(..=end).collect();
            if output == Output::Json {
                out.write_all(&raw)?;
                continue;
            }
            let line: InstanceLogLine =
                serde_json::from_slice(&raw).with_context(|| format!("the coordinator sent a line that is not a log line: {}", String::from_utf8_lossy(&raw)))?;
            match line.stream {
                LogStream::Stdout => writeln!(out, "{}", format_line(&line))?,
                LogStream::Stderr => writeln!(err, "{}", format_line(&line))?,
            }
        }
        // Followed lines are shown as they come, not when a buffer fills.
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LogsArgs,
    }

    fn parse(argv: &[&str]) -> Result<LogsArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("logs").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn flags_become_the_api_query() {
        assert_eq!(parse(&["hello"]).unwrap().path().unwrap(), "/v1/functions/hello/logs?tail=100&follow=false");
        let args = parse(&["hello", "-f", "--tail", "5", "--instance", "i3", "--since", "10m"]).unwrap();
        assert_eq!(args.path().unwrap(), "/v1/functions/hello/logs?tail=5&follow=true&instance=i3&since=600s");
    }

    #[test]
    fn bad_flags_are_refused_with_the_fix() {
        for (argv, says) in [
            (vec!["hello", "--tail", "10001"], "from 0 to 10000"),
            (vec!["hello", "--tail=-3"], "from 0 to 10000"),
            (vec!["hello", "--instance", "3"], "i<number>"),
            (vec!["hello", "--since", "2d"], "s, m or h"),
        ] {
            let e = parse(&argv).err().unwrap_or_else(|| panic!("{argv:?} accepted")).to_string();
            assert!(e.contains(says), "{argv:?}: {e}");
        }
        assert!(parse(&["Bad_Name"]).unwrap().path().unwrap_err().to_string().contains("function name"));
    }

    #[test]
    fn lines_are_prefixed_by_their_instance() {
        let line = InstanceLogLine { instance: InstanceId(3), stream: LogStream::Stdout, line: "hello".into() };
        assert_eq!(format_line(&line), "i3    | hello");
        let line = InstanceLogLine { instance: InstanceId(12345), stream: LogStream::Stderr, line: "".into() };
        assert_eq!(format_line(&line), "i12345 | ");
    }
}
