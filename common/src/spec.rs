//! `FunctionSpec`: what a user deploys, with the bounds Sluice enforces on it.

use crate::cache::CacheSpec;
use crate::ids::{truncate, FunctionName};
use crate::labels::{self, Labels};
use crate::placement::PlacementSpec;
use crate::scaling::Scaling;
use crate::validation::ValidationError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Everything Sluice needs to run a function. Unknown fields are refused, so a
/// request for `privileged` or host mounts fails loudly instead of being ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    pub name: FunctionName,
    pub image: ImageRef,
    /// TCP port the function serves HTTP on inside its container.
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub min_instances: u32,
    #[serde(default = "default_max")]
    pub max_instances: u32,
    /// Requests one instance serves at once; more wait or go to another instance.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Scale-to-zero grace: once demand is gone, the last instance above
    /// `min_instances` stays this long after the function's last request.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u32,
    /// How long a cold start may take before waiting requests get 503.
    #[serde(default = "default_start_timeout")]
    pub start_timeout_secs: u32,
    /// Requests that may wait for an instance; beyond it the gateway answers 429.
    #[serde(default = "default_queue_limit")]
    pub queue_limit: u32,
    /// How long the gateway waits for an instance's answer to begin before it
    /// answers 504 and frees the instance's slot (a hung or frozen instance).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u32,
    /// At most this many requests per second at each gateway; beyond it, 429
    /// with `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::rate::RateLimit>,
    /// `GET` on this path answers 2xx when the function is ready.
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// Labels that rule scopes select functions by.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// How the default policy sizes the function.
    #[serde(default)]
    pub scaling: Scaling,
    /// Where its instances may go and which nodes they prefer.
    #[serde(default)]
    pub placement: PlacementSpec,
    /// Callers at the gateway need a token with the invoker role; without it a
    /// function is public, as in OpenFaaS and Knative.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
    /// The manifest digest `image` named when it was deployed (`sha256:<hex>`),
    /// set by the coordinator: instances run exactly that, even if the tag moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// The gateway's response cache for this function; none by default.
    /// Boxed: a log entry's size is its largest kind's, and most specs have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Box<CacheSpec>>,
}

/// Per-instance resource limits, enforced by the container runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Thousandths of a core.
    #[serde(default = "default_cpu")]
    pub cpu_millis: u32,
    #[serde(default = "default_memory")]
    pub memory_mb: u32,
    #[serde(default = "default_pids")]
    pub pids: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self { cpu_millis: default_cpu(), memory_mb: default_memory(), pids: default_pids() }
    }
}

fn default_port() -> u16 {
    8080
}
fn default_max() -> u32 {
    10
}
fn default_concurrency() -> u32 {
    4
}
fn default_idle_timeout() -> u32 {
    60
}
fn default_start_timeout() -> u32 {
    30
}
fn default_queue_limit() -> u32 {
    100
}
fn default_request_timeout() -> u32 {
    300
}
fn default_health_path() -> String {
    "/_/health".into()
}
fn default_cpu() -> u32 {
    250
}
fn default_memory() -> u32 {
    128
}
fn default_pids() -> u32 {
    256
}

/// Bounds on a spec; chosen so one function cannot exhaust a small edge host.
pub mod bounds {
    pub const MAX_INSTANCES: u32 = 1000;
    pub const MAX_CONCURRENCY: u32 = 1000;
    pub const CPU_MILLIS: (u32, u32) = (10, 64_000);
    pub const MEMORY_MB: (u32, u32) = (6, 65_536);
    pub const PIDS: (u32, u32) = (4, 32_768);
    pub const IDLE_TIMEOUT_SECS: (u32, u32) = (1, 86_400);
    pub const START_TIMEOUT_SECS: (u32, u32) = (1, 600);
    pub const QUEUE_LIMIT: (u32, u32) = (0, 10_000);
    pub const REQUEST_TIMEOUT_SECS: (u32, u32) = (1, 3600);
    pub const ENV_ENTRIES: usize = 64;
    pub const ENV_KEY_LEN: usize = 128;
    pub const ENV_VALUE_LEN: usize = 4096;
    pub const HEALTH_PATH_LEN: usize = 256;
}

fn in_range(field: &str, value: u32, (lo, hi): (u32, u32)) -> Result<(), ValidationError> {
    if value < lo || value > hi {
        return Err(ValidationError::new(field, format!("{value} is out of range: use a value from {lo} to {hi}")));
    }
    Ok(())
}

impl FunctionSpec {
    /// A spec with defaults for everything but the name and image.
    pub fn new(name: FunctionName, image: ImageRef) -> Self {
        Self {
            name,
            image,
            port: default_port(),
            env: BTreeMap::new(),
            limits: Limits::default(),
            min_instances: 0,
            max_instances: default_max(),
            concurrency: default_concurrency(),
            idle_timeout_secs: default_idle_timeout(),
            start_timeout_secs: default_start_timeout(),
            queue_limit: default_queue_limit(),
            request_timeout_secs: default_request_timeout(),
            rate_limit: None,
            health_path: default_health_path(),
            labels: Labels::new(),
            scaling: Scaling::default(),
            placement: PlacementSpec::default(),
            private: false,
            image_digest: None,
            cache: None,
        }
    }

    /// The image instances run: `image` pinned to `image_digest` when it is set.
    pub fn runnable_image(&self) -> ImageRef {
        match &self.image_digest {
            Some(digest) => ImageRef(format!("{}@{digest}", self.image.parts().name())),
            None => self.image.clone(),
        }
    }

    /// Checks every bound; the name and image were checked when parsed.
    pub fn validate(&self) -> Result<(), ValidationError> {
        use bounds::*;
        if self.port == 0 {
            return Err(ValidationError::new("port", "0 is not a port: use the TCP port your function listens on, 1-65535"));
        }
        in_range("max_instances", self.max_instances, (1, MAX_INSTANCES))?;
        if self.min_instances > self.max_instances {
            return Err(ValidationError::new(
                "min_instances",
                format!("{} is above max_instances ({}): lower min_instances or raise max_instances", self.min_instances, self.max_instances),
            ));
        }
        in_range("concurrency", self.concurrency, (1, MAX_CONCURRENCY))?;
        in_range("idle_timeout_secs", self.idle_timeout_secs, IDLE_TIMEOUT_SECS)?;
        in_range("start_timeout_secs", self.start_timeout_secs, START_TIMEOUT_SECS)?;
        in_range("queue_limit", self.queue_limit, QUEUE_LIMIT)?;
        in_range("request_timeout_secs", self.request_timeout_secs, REQUEST_TIMEOUT_SECS)?;
        if let Some(limit) = &self.rate_limit {
            limit.validate().map_err(|e| e.within("rate_limit"))?;
        }
        self.limits.validate().map_err(|e| e.within("limits"))?;
        self.validate_env()?;
        self.validate_health_path()?;
        labels::validate("labels", &self.labels)?;
        self.scaling.validate().map_err(|e| e.within("scaling"))?;
        self.placement.validate().map_err(|e| e.within("placement"))?;
        if let Some(cache) = &self.cache {
            cache.validate().map_err(|e| e.within("cache"))?;
        }
        match &self.image_digest {
            Some(d) if !is_digest(d) => Err(ValidationError::new("image_digest", "use sha256:<64 lowercase hex>, or leave it out: the coordinator sets it")),
            _ => Ok(()),
        }
    }

    fn validate_env(&self) -> Result<(), ValidationError> {
        use bounds::*;
        if self.env.len() > ENV_ENTRIES {
            return Err(ValidationError::new("env", format!("{} entries: use at most {ENV_ENTRIES}", self.env.len())));
        }
        for (key, value) in &self.env {
            let field = format!("env.{}", truncate(key));
            let key_ok = !key.is_empty() && key.len() <= ENV_KEY_LEN && !key.as_bytes()[0].is_ascii_digit() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !key_ok {
                return Err(ValidationError::new(
                    field,
                    format!("variable names use letters, digits and '_', do not start with a digit, and have at most {ENV_KEY_LEN} characters"),
                ));
            }
            if value.len() > ENV_VALUE_LEN || value.contains('\0') {
                return Err(ValidationError::new(field, format!("values have at most {ENV_VALUE_LEN} bytes and no NUL character")));
            }
        }
        Ok(())
    }

    fn validate_health_path(&self) -> Result<(), ValidationError> {
        let p = &self.health_path;
        let ok = p.starts_with('/') && p.len() <= bounds::HEALTH_PATH_LEN && p.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(ValidationError::new(
                "health_path",
                format!("{:?} is invalid: use an absolute URL path such as /_/health (printable ASCII, no spaces, at most {} characters)", truncate(p), bounds::HEALTH_PATH_LEN),
            ));
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.into())
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.into())
    }

    pub fn start_timeout(&self) -> Duration {
        Duration::from_secs(self.start_timeout_secs.into())
    }
}

impl Limits {
    pub fn validate(&self) -> Result<(), ValidationError> {
        in_range("cpu_millis", self.cpu_millis, bounds::CPU_MILLIS)?;
        in_range("memory_mb", self.memory_mb, bounds::MEMORY_MB)?;
        in_range("pids", self.pids, bounds::PIDS)
    }
}

/// A Docker image reference: `[registry[:port]/]repo/path[:tag][@sha256:digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ImageRef(String);

impl ImageRef {
    pub const MAX_LEN: usize = 255;

    pub fn parse(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        check_image(&value).map_err(|why| {
            ValidationError::new(
                "image",
                format!("{:?} is not a valid image reference ({why}): use [registry[:port]/]name[:tag], e.g. 127.0.0.1:5000/sluice/hello:latest", truncate(&value)),
            )
        })?;
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An image reference in its parts, as the registry API and allow-lists need them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageParts<'a> {
    /// `host[:port]`, if the reference names one.
    pub registry: Option<&'a str>,
    /// The path within the registry, e.g. `sluice/hello`.
    pub repository: &'a str,
    pub tag: Option<&'a str>,
    /// `sha256:<hex>`.
    pub digest: Option<&'a str>,
}

impl ImageParts<'_> {
    /// `[registry/]repository`, without tag or digest.
    pub fn name(&self) -> String {
        match self.registry {
            Some(r) => format!("{r}/{}", self.repository),
            None => self.repository.to_string(),
        }
    }

    /// The registry an image comes from: Docker Hub (`docker.io`) when none is named.
    pub fn registry_or_default(&self) -> &str {
        self.registry.unwrap_or(DEFAULT_REGISTRY)
    }
}

/// The registry of references that name none, as Docker resolves them.
pub const DEFAULT_REGISTRY: &str = "docker.io";

impl ImageRef {
    /// The reference's parts. It was checked when parsed, so this only splits.
    pub fn parts(&self) -> ImageParts<'_> {
        let (rest, digest) = match self.0.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (self.0.as_str(), None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        match name.split_once('/') {
            Some((first, repository)) if first.contains('.') || first.contains(':') || first == "localhost" => ImageParts { registry: Some(first), repository, tag, digest },
            _ => ImageParts { registry: None, repository: name, tag, digest },
        }
    }
}

/// `sha256:` and 64 lowercase hex digits.
pub fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(String::deserialize(d)?).map_err(|e| serde::de::Error::custom(e.message))
    }
}

/// Follows the grammar of distribution/reference, without regular expressions.
fn check_image(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("empty");
    }
    if value.len() > ImageRef::MAX_LEN {
        return Err("too long");
    }
    let (rest, digest) = match value.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (value, None),
    };
    if let Some(d) = digest {
        let hex = d.strip_prefix("sha256:").ok_or("digest must be sha256:<64 hex>")?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("digest must be sha256:<64 hex>");
        }
    }
    // A tag follows the last ':' only if no '/' comes after it (else it is a registry port).
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
            && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err("bad tag");
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts[0];
    let has_registry = parts.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        let (host, port) = match first.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (first, None),
        };
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') {
            return Err("bad registry host");
        }
        if let Some(p) = port {
            // Digits only: u16's parser would also take a sign ("+5000"), which registries refuse.
            if !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().map_or(true, |n| n == 0) {
                return Err("bad registry port");
            }
        }
        parts.remove(0);
    }
    if parts.is_empty() {
        return Err("missing repository name");
    }
    for component in parts {
        if !path_component_ok(component) {
            return Err("repository names use lowercase letters, digits and single separators . _ __ -");
        }
    }
    Ok(())
}

fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        // separators: '.', '_', '__', or one or more '-'
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FunctionSpec {
        FunctionSpec::new(FunctionName::new("hello").unwrap(), ImageRef::parse("sluice/hello:latest").unwrap())
    }

    #[test]
    fn image_references() {
        for ok in [
            "hello",
            "sluice/hello:latest",
            "127.0.0.1:5000/sluice/hello:v1.2",
            "localhost/x",
            "registry.example.com/a/b__c/d-e.f:1",
            "a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(ImageRef::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Hello", "a//b", "a:", "a:-x", "/a", "a/", "a b", "a;rm", "1.2.3.4:99999/a", "1.2.3.4:+5000/a", "a@sha256:zz", "a..b"] {
            let e = ImageRef::parse(bad).unwrap_err();
            assert_eq!(e.field, "image", "{bad}");
        }
    }

    #[test]
    fn image_parts_and_pinning() {
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let table = [
            ("hello", (None, "hello", None, None)),
            ("sluice/hello:v1", (None, "sluice/hello", Some("v1"), None)),
            ("127.0.0.1:5000/sluice/hello:latest", (Some("127.0.0.1:5000"), "sluice/hello", Some("latest"), None)),
            ("localhost/x", (Some("localhost"), "x", None, None)),
        ];
        for (image, (registry, repository, tag, d)) in table {
            let image = ImageRef::parse(image).unwrap();
            assert_eq!(image.parts(), ImageParts { registry, repository, tag, digest: d }, "{image}");
        }
        let pinned = ImageRef::parse(format!("r.example.com:443/a/b:1@{digest}")).unwrap();
        assert_eq!(pinned.parts(), ImageParts { registry: Some("r.example.com:443"), repository: "a/b", tag: Some("1"), digest: Some(digest) });
        assert_eq!(ImageRef::parse("a/b").unwrap().parts().registry_or_default(), "docker.io");

        let mut s = FunctionSpec::new(FunctionName::new("f").unwrap(), ImageRef::parse("127.0.0.1:5000/sluice/hello:latest").unwrap());
        assert_eq!(s.runnable_image().as_str(), "127.0.0.1:5000/sluice/hello:latest");
        s.image_digest = Some(digest.into());
        assert_eq!(s.runnable_image().as_str(), format!("127.0.0.1:5000/sluice/hello@{digest}"));
        assert!(ImageRef::parse(s.runnable_image().as_str()).is_ok());
        s.validate().unwrap();
        s.image_digest = Some("sha256:short".into());
        assert_eq!(s.validate().unwrap_err().field, "image_digest");
    }

    #[test]
    fn defaults_are_valid() {
        spec().validate().unwrap();
    }

    type Mutation = Box<dyn Fn(&mut FunctionSpec)>;

    #[test]
    fn each_bound_names_its_field() {
        let cases: Vec<(&str, Mutation)> = vec![
            ("port", Box::new(|s| s.port = 0)),
            ("max_instances", Box::new(|s| s.max_instances = 0)),
            ("max_instances", Box::new(|s| s.max_instances = 1001)),
            ("min_instances", Box::new(|s| s.min_instances = 11)),
            ("concurrency", Box::new(|s| s.concurrency = 0)),
            ("idle_timeout_secs", Box::new(|s| s.idle_timeout_secs = 0)),
            ("start_timeout_secs", Box::new(|s| s.start_timeout_secs = 601)),
            ("queue_limit", Box::new(|s| s.queue_limit = 10_001)),
            ("request_timeout_secs", Box::new(|s| s.request_timeout_secs = 0)),
            ("rate_limit.requests_per_second", Box::new(|s| s.rate_limit = Some(crate::rate::RateLimit { requests_per_second: 0, burst: None }))),
            ("limits.memory_mb", Box::new(|s| s.limits.memory_mb = 1)),
            ("limits.cpu_millis", Box::new(|s| s.limits.cpu_millis = 1_000_000)),
            ("limits.pids", Box::new(|s| s.limits.pids = 0)),
            (
                "env.1X",
                Box::new(|s| {
                    s.env.insert("1X".into(), "v".into());
                }),
            ),
            (
                "env.A",
                Box::new(|s| {
                    s.env.insert("A".into(), "\0".into());
                }),
            ),
            ("health_path", Box::new(|s| s.health_path = "health".into())),
            ("health_path", Box::new(|s| s.health_path = "/a b".into())),
            (
                "labels.tier",
                Box::new(|s| {
                    s.labels.insert("tier".into(), "a b".into());
                }),
            ),
            ("scaling.panic_window_secs", Box::new(|s| s.scaling.panic_window_secs = 0)),
            ("placement.max_per_node", Box::new(|s| s.placement.max_per_node = Some(0))),
            ("cache.ttl_secs", Box::new(|s| s.cache = Some(Box::new(crate::cache::CacheSpec::new(0))))),
        ];
        for (field, mutate) in cases {
            let mut s = spec();
            mutate(&mut s);
            let e = s.validate().unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<FunctionSpec>(r#"{"name":"a","image":"b","privileged":true}"#).unwrap_err();
        assert!(err.to_string().contains("privileged"), "{err}");
    }
}
