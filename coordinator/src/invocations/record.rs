//! What asynchronous invocations look like on the bus (docs/wire-format.md):
//! the request on `invocation` (and `dead-letter`), and state records on
//! `invocation-state`. Each is one JSON object with `v: 1`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The format version of both records.
pub const VERSION: u32 = 1;

/// An accepted invocation: the request as the gateway received it, minus the
/// caller's token and the headers that only steer the submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationRequest {
    pub v: u32,
    pub id: String,
    pub function: String,
    pub method: String,
    /// Path and query below the function, as `/function/{name}` would forward them.
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body, base64: requests need not be text.
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    pub submitted_ms: u64,
}

impl InvocationRequest {
    pub fn body_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        BASE64.decode(&self.body)
    }
}

/// One step of an invocation's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Accepted and on the work queue.
    Queued,
    /// Try `attempt` (from 1) started on `coordinator`.
    Running { attempt: u32, coordinator: String },
    /// Try `attempt` failed; another follows after `retry_in_ms`.
    Failed { attempt: u32, error: String, retry_in_ms: u64 },
    /// The function answered (a status that is not retried).
    Done { attempt: u32, result: Outcome },
    /// Every try failed; the request is on the dead letter topic.
    DeadLettered { attempt: u32, error: String },
}

/// The function's answer, its body bounded (see `Outcome::new`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The body when it is UTF-8 text...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// ...else base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// Whether the body was cut at the limit.
    #[serde(default)]
    pub truncated: bool,
}

impl Outcome {
    /// Keeps at most `limit` bytes of `body`: results travel on the bus and sit
    /// in every coordinator's table, so a large answer must not fill either.
    pub fn new(status: u16, content_type: Option<String>, body: &[u8], limit: usize) -> Self {
        let truncated = body.len() > limit;
        let kept = &body[..body.len().min(limit)];
        let (body, body_base64) = match std::str::from_utf8(kept) {
            Ok(text) => (Some(text.to_string()), None),
            Err(_) => (None, Some(BASE64.encode(kept))),
        };
        Outcome { status, content_type, body, body_base64, truncated }
    }
}

impl State {
    /// Orders the records of one invocation whatever order they arrive in (they
    /// come from several coordinators, and again after a redelivery): an ending
    /// beats everything, then later tries beat earlier ones, and within one try
    /// its failure beats its start.
    pub fn rank(&self) -> (u8, u32, u8) {
        match self {
            State::Queued => (0, 0, 0),
            State::Running { attempt, .. } => (0, *attempt, 1),
            State::Failed { attempt, .. } => (0, *attempt, 2),
            State::Done { attempt, .. } | State::DeadLettered { attempt, .. } => (1, *attempt, 0),
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(self, State::Done { .. } | State::DeadLettered { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running { .. } => "running",
            State::Failed { .. } => "retrying",
            State::Done { .. } => "done",
            State::DeadLettered { .. } => "dead_lettered",
        }
    }
}

/// A state record as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    pub v: u32,
    pub id: String,
    pub function: String,
    pub ts_ms: u64,
    #[serde(flatten)]
    pub state: State,
}

/// Encodes a body for [`InvocationRequest::body`].
pub fn encode_body(body: &[u8]) -> String {
    BASE64.encode(body)
}

/// An invocation id from an idempotency key: the same (function, key) gives
/// the same id on every coordinator, so a retried submission is the same
/// invocation. Hashed, so any key makes a valid bus key and URL segment.
pub fn id_from_key(function: &str, key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{function}\n{key}").as_bytes());
    format!("k{}", hex(&digest.as_ref()[..16]))
}

/// A fresh random invocation id.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).expect("the OS random source works");
    format!("r{}", hex(&bytes))
}

/// Whether `id` could be an invocation id (checked before looking it up).
pub fn is_id(id: &str) -> bool {
    id.len() == 33 && matches!(id.as_bytes()[0], b'k' | b'r') && id[1..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether an answer is worth another try: the instance failed (5xx), or the
/// gateway shed it (429) or timed the request out (408).
pub fn retryable(status: u16) -> bool {
    status >= 500 || status == 429 || status == 408
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_a_key_are_stable_and_distinct_per_function() {
        let a = id_from_key("hello", "order-17");
        assert_eq!(a, id_from_key("hello", "order-17"));
        assert_ne!(a, id_from_key("hello", "order-18"));
        assert_ne!(a, id_from_key("other", "order-17"));
        assert!(is_id(&a) && is_id(&random_id()), "{a}");
        assert_ne!(random_id(), random_id());
        assert!(!is_id("k123") && !is_id(&format!("x{}", &a[1..])) && !is_id(&a.to_uppercase()));
    }

    #[test]
    fn states_rank_endings_over_later_tries_over_earlier_ones() {
        let running = |attempt| State::Running { attempt, coordinator: "c".into() };
        let failed = |attempt| State::Failed { attempt, error: "e".into(), retry_in_ms: 1 };
        let done = State::Done { attempt: 1, result: Outcome::new(200, None, b"ok", 10) };
        let order = [State::Queued, running(1), failed(1), running(2), failed(2), done];
        for pair in order.windows(2) {
            assert!(pair[0].rank() < pair[1].rank(), "{pair:?}");
        }
        assert!(State::DeadLettered { attempt: 3, error: "e".into() }.rank() > running(9).rank());
    }

    #[test]
    fn outcomes_are_bounded_and_keep_binary_bodies() {
        let o = Outcome::new(200, None, b"hello world", 5);
        assert_eq!((o.body.as_deref(), o.truncated), (Some("hello"), true));
        let o = Outcome::new(200, None, &[0xff, 0x00], 10);
        assert_eq!((o.body, o.body_base64.as_deref(), o.truncated), (None, Some("/wA="), false));
    }

    #[test]
    fn records_round_trip_as_documented() {
        let r: StateRecord =
            serde_json::from_str(r#"{"v":1,"id":"k00","function":"hello","ts_ms":5,"state":"done","attempt":3,"result":{"status":200,"body":"hi","truncated":false}}"#).unwrap();
        assert_eq!(r.state, State::Done { attempt: 3, result: Outcome { status: 200, content_type: None, body: Some("hi".into()), body_base64: None, truncated: false } });
        let back: StateRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let q: InvocationRequest = serde_json::from_str(
            r#"{"v":1,"id":"k00","function":"hello","method":"POST","path":"/?x=1","headers":[["content-type","text/plain"]],"body":"d29ybGQ=","submitted_ms":5}"#,
        )
        .unwrap();
        assert_eq!((q.body_bytes().unwrap(), q.callback), (b"world".to_vec(), None));
        assert!(retryable(500) && retryable(429) && !retryable(404) && !retryable(200));
    }
}
