//! The response cache from the command line: `sluice deploy --cache-*` flags,
//! and `sluice cache purge F [--path P]`, which every gateway applies.

use crate::Output;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::json;
use sluice_cli::client::Api;
use sluice_common::cache::{CacheMethod, CacheSpec};
use std::process::ExitCode;

/// `sluice deploy`'s cache flags; without `--cache-ttl` the function has no cache.
#[derive(Args, Debug, Default)]
pub struct CacheArgs {
    /// Cache successful answers at the gateway for this long at most (30s, 5m, 1h; plain seconds too).
    #[arg(long, value_name = "DURATION")]
    pub cache_ttl: Option<String>,
    /// Methods whose answers are cached, comma-separated (default GET,HEAD; POST allowed: its body is not in the key).
    #[arg(long, value_delimiter = ',', value_name = "METHOD")]
    pub cache_methods: Vec<String>,
    /// A request header whose value is part of the cache key (repeatable).
    #[arg(long, value_name = "HEADER")]
    pub cache_vary: Vec<String>,
    /// Larger answers pass through uncached (default 1048576).
    #[arg(long, value_name = "BYTES")]
    pub cache_max_entry_bytes: Option<u32>,
}

impl CacheArgs {
    /// The spec's `cache`, checked by the spec's validation afterwards.
    pub fn spec(self) -> Result<Option<CacheSpec>> {
        let Some(ttl) = self.cache_ttl else {
            if !self.cache_methods.is_empty() || !self.cache_vary.is_empty() || self.cache_max_entry_bytes.is_some() {
                bail!("--cache-methods, --cache-vary and --cache-max-entry-bytes need --cache-ttl: say how long answers are kept");
            }
            return Ok(None);
        };
        let ttl = crate::duration::parse_secs("--cache-ttl", &ttl)?;
        let mut spec = CacheSpec::new(u32::try_from(ttl).unwrap_or(u32::MAX));
        if !self.cache_methods.is_empty() {
            spec.methods = self
                .cache_methods
                .iter()
                .map(|m| CacheMethod::parse(&m.trim().to_ascii_uppercase()).with_context(|| format!("--cache-methods {m:?}: use GET, HEAD or POST")))
                .collect::<Result<_>>()?;
        }
        spec.vary_headers = self.cache_vary.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
        if let Some(n) = self.cache_max_entry_bytes {
            spec.max_entry_bytes = n;
        }
        Ok(Some(spec))
    }
}

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Drop a function's cached answers on every gateway: all, or those of one path (any query).
    Purge {
        /// Function name.
        name: String,
        /// The path below the function's name, e.g. /items/1.
        #[arg(long)]
        path: Option<String>,
    },
}

pub async fn run(api: &Api, output: Output, command: CacheCommand) -> Result<ExitCode> {
    let CacheCommand::Purge { name, path } = command;
    let name = sluice_common::FunctionName::new(name)?;
    if let Some(p) = &path {
        sluice_common::cache::validate_purge_path(p).map_err(|e| anyhow::anyhow!("--path: {}", e.message))?;
    }
    let reply = api.call(Method::POST, &format!("/v1/functions/{name}/cache/purge"), Some(&json!({ "path": path }))).await?;
    match output {
        Output::Json => println!("{reply}"),
        Output::Table => match path {
            Some(p) => println!("purged {name} {p} on every gateway"),
            None => println!("purged every cached answer of {name} on every gateway"),
        },
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_make_the_spec() {
        assert_eq!(CacheArgs::default().spec().unwrap(), None);
        let args = CacheArgs {
            cache_ttl: Some("5m".into()),
            cache_methods: vec!["get".into(), "POST".into()],
            cache_vary: vec!["Accept-Language".into()],
            cache_max_entry_bytes: Some(4096),
        };
        let spec = args.spec().unwrap().unwrap();
        assert_eq!((spec.ttl_secs, spec.methods, spec.vary_headers, spec.max_entry_bytes), (300, vec![CacheMethod::Get, CacheMethod::Post], vec!["accept-language".into()], 4096));
        assert!(CacheArgs { cache_vary: vec!["x".into()], ..Default::default() }.spec().is_err(), "cache flags need a TTL");
        assert!(CacheArgs { cache_ttl: Some("1s".into()), cache_methods: vec!["DELETE".into()], ..Default::default() }.spec().is_err());
        for bad in ["", "0s", "5w", "1.5m", "-1"] {
            assert!(CacheArgs { cache_ttl: Some(bad.into()), ..Default::default() }.spec().is_err(), "{bad}");
        }
        assert_eq!(CacheArgs { cache_ttl: Some("45".into()), ..Default::default() }.spec().unwrap().unwrap().ttl_secs, 45);
    }
}
