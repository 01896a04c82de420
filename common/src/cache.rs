//! `CacheSpec`: a function's opt-in response cache at the gateway, and its bounds.
//!
//! The gateway keys an entry on the method, the path and query, and the values
//! of the headers named in `vary_headers`; it keeps it `ttl_secs` at most (less
//! when the function's `Cache-Control` says so), and only if it is at most
//! `max_entry_bytes`. How many bytes one gateway keeps in all is a coordinator
//! setting (`--gateway-cache-mb`), not a function's: the functions share it.

use crate::ids::truncate;
use crate::validation::ValidationError;
use serde::{Deserialize, Serialize};

/// Bounds on a cache spec.
pub mod bounds {
    /// A day: past it, a purge is the better tool.
    pub const TTL_SECS: (u32, u32) = (1, 86_400);
    /// 64 MiB: one entry must fit a gateway's default total many times over.
    pub const MAX_ENTRY_BYTES: (u32, u32) = (1, 64 << 20);
    pub const VARY_HEADERS: usize = 8;
    pub const HEADER_NAME_LEN: usize = 64;
}

/// Methods whose responses may be cached. POST is there for functions that are
/// queried by POST without side effects; its body is not part of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CacheMethod {
    Get,
    Head,
    Post,
}

impl CacheMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMethod::Get => "GET",
            CacheMethod::Head => "HEAD",
            CacheMethod::Post => "POST",
        }
    }

    /// The method of `name` (as HTTP spells it), if it is one a cache may hold.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "GET" => Some(CacheMethod::Get),
            "HEAD" => Some(CacheMethod::Head),
            "POST" => Some(CacheMethod::Post),
            _ => None,
        }
    }
}

/// A function's response cache. Absent (the default): nothing is cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    /// Longest an entry is served; a function's `max-age` or `s-maxage` shortens it.
    pub ttl_secs: u32,
    /// Methods whose responses are cached (default GET and HEAD).
    #[serde(default = "default_methods")]
    pub methods: Vec<CacheMethod>,
    /// Request headers whose values are part of the key, lowercase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vary_headers: Vec<String>,
    /// Larger responses are passed through and not kept (default 1 MiB).
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: u32,
}

fn default_methods() -> Vec<CacheMethod> {
    vec![CacheMethod::Get, CacheMethod::Head]
}

fn default_max_entry_bytes() -> u32 {
    1 << 20
}

impl CacheSpec {
    /// A cache of `ttl_secs` with the defaults for everything else.
    pub fn new(ttl_secs: u32) -> Self {
        Self { ttl_secs, methods: default_methods(), vary_headers: Vec::new(), max_entry_bytes: default_max_entry_bytes() }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        let (lo, hi) = bounds::TTL_SECS;
        if self.ttl_secs < lo || self.ttl_secs > hi {
            return Err(ValidationError::new("ttl_secs", format!("{} is out of range: use {lo} to {hi} seconds", self.ttl_secs)));
        }
        if self.methods.is_empty() {
            return Err(ValidationError::new("methods", "empty: name at least one of GET, HEAD, POST, or leave the cache out"));
        }
        for (i, m) in self.methods.iter().enumerate() {
            if self.methods[..i].contains(m) {
                return Err(ValidationError::new("methods", format!("{} is named twice: name each method once", m.as_str())));
            }
        }
        if self.vary_headers.len() > bounds::VARY_HEADERS {
            return Err(ValidationError::new("vary_headers", format!("{} headers: use at most {}", self.vary_headers.len(), bounds::VARY_HEADERS)));
        }
        for (i, h) in self.vary_headers.iter().enumerate() {
            let ok = !h.is_empty() && h.len() <= bounds::HEADER_NAME_LEN && h.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(ValidationError::new(
                    format!("vary_headers[{i}]"),
                    format!("{:?} is not a header name as the key takes it: use lowercase letters, digits and '-' (at most {})", truncate(h), bounds::HEADER_NAME_LEN),
                ));
            }
            if self.vary_headers[..i].contains(h) {
                return Err(ValidationError::new(format!("vary_headers[{i}]"), format!("{h} is named twice: name each header once")));
            }
            // The gateway's token check reads it, and a key on it would keep one copy per caller.
            if h == "authorization" || h == "cookie" {
                return Err(ValidationError::new(format!("vary_headers[{i}]"), format!("{h} would keep one entry per caller: responses to such requests are not cached")));
            }
        }
        let (lo, hi) = bounds::MAX_ENTRY_BYTES;
        if self.max_entry_bytes < lo || self.max_entry_bytes > hi {
            return Err(ValidationError::new("max_entry_bytes", format!("{} is out of range: use {lo} to {hi} bytes", self.max_entry_bytes)));
        }
        Ok(())
    }

    pub fn caches(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m.as_str() == method)
    }
}

/// A purge path: absolute, printable, as a function sees its paths (`/a/b`, no query).
pub fn validate_purge_path(path: &str) -> Result<(), ValidationError> {
    let ok = path.starts_with('/') && path.len() <= 2048 && !path.contains('?') && path.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new("path", format!("{:?} is invalid: use the path below the function's name, e.g. /items/1 (no query, printable ASCII)", truncate(path))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_json() {
        let c: CacheSpec = serde_json::from_str(r#"{"ttl_secs":30}"#).unwrap();
        assert_eq!(c, CacheSpec::new(30));
        assert!(c.caches("GET") && c.caches("HEAD") && !c.caches("POST"));
        c.validate().unwrap();
        let c: CacheSpec = serde_json::from_str(r#"{"ttl_secs":5,"methods":["GET","POST"],"vary_headers":["accept-language"],"max_entry_bytes":100}"#).unwrap();
        c.validate().unwrap();
        assert!(serde_json::from_str::<CacheSpec>(r#"{"ttl_secs":5,"methods":["DELETE"]}"#).is_err());
        assert!(serde_json::from_str::<CacheSpec>(r#"{"ttl_secs":5,"stale":true}"#).is_err());
    }

    type Mutation = fn(&mut CacheSpec);

    #[test]
    fn each_bound_names_its_field() {
        let cases: Vec<(&str, Mutation)> = vec![
            ("ttl_secs", |c| c.ttl_secs = 0),
            ("ttl_secs", |c| c.ttl_secs = 86_401),
            ("methods", |c| c.methods.clear()),
            ("methods", |c| c.methods = vec![CacheMethod::Get, CacheMethod::Get]),
            ("vary_headers", |c| c.vary_headers = (0..9).map(|i| format!("x-{i}")).collect()),
            ("vary_headers[0]", |c| c.vary_headers = vec!["Accept".into()]),
            ("vary_headers[1]", |c| c.vary_headers = vec!["accept".into(), "accept".into()]),
            ("vary_headers[0]", |c| c.vary_headers = vec!["authorization".into()]),
            ("max_entry_bytes", |c| c.max_entry_bytes = 0),
            ("max_entry_bytes", |c| c.max_entry_bytes = (64 << 20) + 1),
        ];
        for (field, mutate) in cases {
            let mut c = CacheSpec::new(10);
            mutate(&mut c);
            assert_eq!(c.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn purge_paths() {
        validate_purge_path("/items/1").unwrap();
        for bad in ["items", "/a?b=1", "/a b", ""] {
            assert_eq!(validate_purge_path(bad).unwrap_err().field, "path", "{bad}");
        }
    }
}
