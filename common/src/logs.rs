//! Container logs as the API and the agents carry them: the query (`tail`,
//! `follow`, `since`, `instance`) with its bounds, and one line of output.
//!
//! The coordinator and the agent parse the same query with the same checks, so
//! a bad value is refused by name wherever it is sent.

use crate::{InstanceId, ValidationError};
use serde::{Deserialize, Serialize};

/// Lines per instance when `tail` is not given.
pub const DEFAULT_TAIL: u32 = 100;
/// Most lines per instance one request may ask for.
pub const MAX_TAIL: u32 = 10_000;
/// Furthest back `since` may reach: Docker keeps logs longer, but a larger
/// window is better read with `tail`.
pub const MAX_SINCE_SECS: u64 = 7 * 24 * 3600;
/// Longest line passed on; the rest is cut so one line cannot fill a client's memory.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Which of a container's outputs a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// One line of a container's output, as an agent sends it (one JSON object a line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub stream: LogStream,
    /// The text without its line break, at most `MAX_LINE_BYTES`.
    pub line: String,
}

impl LogLine {
    /// A line from raw output: the trailing line break dropped, invalid UTF-8
    /// replaced, and cut at `MAX_LINE_BYTES` (on a character boundary).
    pub fn new(stream: LogStream, raw: &[u8]) -> Self {
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let mut line = String::from_utf8_lossy(raw).into_owned();
        if line.len() > MAX_LINE_BYTES {
            let mut end = MAX_LINE_BYTES;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
        }
        Self { stream, line }
    }
}

/// One line of a function's logs, as the coordinator sends it: whose it is, then the line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceLogLine {
    pub instance: InstanceId,
    pub stream: LogStream,
    pub line: String,
}

/// What part of the logs to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// Last lines per instance.
    pub tail: u32,
    /// Keep the answer open and send new lines as they come.
    pub follow: bool,
    /// Only lines of the last this many seconds.
    pub since_secs: Option<u64>,
    /// Only this instance (the coordinator's query; an agent is asked for one container).
    pub instance: Option<InstanceId>,
}

impl Default for LogQuery {
    fn default() -> Self {
        Self { tail: DEFAULT_TAIL, follow: false, since_secs: None, instance: None }
    }
}

impl LogQuery {
    /// Parses a query string's already percent-decoded `(key, value)` pairs.
    /// Unknown keys are refused, so a misspelt `tial=5` does not silently read 100 lines.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, ValidationError> {
        let mut q = LogQuery::default();
        for (key, value) in pairs {
            match key {
                "tail" => q.tail = parse_tail(value)?,
                "follow" => q.follow = parse_follow(value)?,
                "since" => q.since_secs = Some(parse_since(value)?),
                "instance" => q.instance = Some(value.parse()?),
                _ => return Err(ValidationError::new(key, "unknown query parameter: logs take tail, follow, since and instance")),
            }
        }
        Ok(q)
    }

    /// The query string for these settings (without `instance`, which an agent is not sent).
    pub fn to_agent_query(&self) -> String {
        let mut q = format!("tail={}&follow={}", self.tail, self.follow);
        if let Some(s) = self.since_secs {
            q.push_str(&format!("&since={s}s"));
        }
        q
    }
}

/// `tail`: a whole number from 0 to `MAX_TAIL`.
pub fn parse_tail(value: &str) -> Result<u32, ValidationError> {
    match value.parse::<u32>() {
        Ok(n) if n <= MAX_TAIL => Ok(n),
        _ => Err(ValidationError::new("tail", format!("{value:?} is not a line count: use a whole number from 0 to {MAX_TAIL} (default {DEFAULT_TAIL})"))),
    }
}

fn parse_follow(value: &str) -> Result<bool, ValidationError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ValidationError::new("follow", format!("{value:?} is not a switch: use true or false"))),
    }
}

/// `since`: seconds, or a number with s, m or h (`90`, `30s`, `5m`, `2h`), from 1s to 7 days.
pub fn parse_since(value: &str) -> Result<u64, ValidationError> {
    let (digits, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len()));
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => 0,
    };
    match digits.parse::<u64>().ok().filter(|_| scale > 0).map(|n| n.saturating_mul(scale)) {
        Some(secs) if secs > 0 && secs <= MAX_SINCE_SECS => Ok(secs),
        _ => Err(ValidationError::new("since", format!("{value:?} is not a duration: use seconds or a number with s, m or h, from 1s to 168h (e.g. since=10m)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&'static str, &'static str)]) -> Result<LogQuery, ValidationError> {
        LogQuery::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn defaults_and_each_parameter() {
        assert_eq!(parse(&[]).unwrap(), LogQuery { tail: 100, follow: false, since_secs: None, instance: None });
        let q = parse(&[("tail", "5"), ("follow", "true"), ("since", "10m"), ("instance", "i7")]).unwrap();
        assert_eq!(q, LogQuery { tail: 5, follow: true, since_secs: Some(600), instance: Some(InstanceId(7)) });
        assert_eq!(parse(&[("tail", "0"), ("follow", "0"), ("since", "90")]).unwrap().since_secs, Some(90));
        assert_eq!(parse(&[("tail", "10000")]).unwrap().tail, MAX_TAIL);
        assert_eq!(q.to_agent_query(), "tail=5&follow=true&since=600s");
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        for (pairs, field) in [
            (vec![("tail", "10001")], "tail"),
            (vec![("tail", "-1")], "tail"),
            (vec![("tail", "ten")], "tail"),
            (vec![("follow", "yes")], "follow"),
            (vec![("since", "0s")], "since"),
            (vec![("since", "5d")], "since"),
            (vec![("since", "169h")], "since"),
            (vec![("instance", "7")], "instance"),
            (vec![("tial", "5")], "tial"),
        ] {
            let e = LogQuery::from_pairs(pairs.clone()).unwrap_err();
            assert_eq!(e.field, field, "{pairs:?}: {e}");
        }
    }

    #[test]
    fn lines_lose_their_break_and_are_cut_on_a_character() {
        assert_eq!(LogLine::new(LogStream::Stdout, b"hi\r\n").line, "hi");
        let long = "é".repeat(MAX_LINE_BYTES);
        let line = LogLine::new(LogStream::Stderr, long.as_bytes());
        assert_eq!(line.line.len(), MAX_LINE_BYTES);
        assert_eq!(serde_json::to_string(&line.stream).unwrap(), "\"stderr\"");
    }
}
