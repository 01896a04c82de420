//! Credentials for image registries: one small file per registry, the form
//! `scripts/registry.sh` writes (mode 0600), read by coordinators (to ask for
//! digests), agents (to pull) and `sluice build` (to push). Passwords live in
//! files so that they never show on a command line or in `ps`.
//!
//! ```text
//! # comments and blank lines are ignored
//! registry=127.0.0.1:5000
//! username=sluice
//! password=...
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

/// The username and password one registry (`host[:port]`) takes.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    pub registry: String,
    pub username: String,
    pub password: String,
}

/// The password stays out of logs and panics.
impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials").field("registry", &self.registry).field("username", &self.username).finish_non_exhaustive()
    }
}

impl RegistryCredentials {
    /// Reads and checks the file at `path`; the error names the file and the fix.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!("registry credentials file {}: {e}; give a file with registry=, username= and password= lines (scripts/registry.sh writes one)", path.display())
        })?;
        Self::parse(&text).map_err(|why| format!("registry credentials file {}: {why}", path.display()))
    }

    /// Reads every file, stopping at the first that is wrong.
    pub fn read_all(paths: &[PathBuf]) -> Result<Vec<Self>, String> {
        paths.iter().map(|p| Self::read(p)).collect()
    }

    /// Parses the `key=value` lines of a credentials file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (mut registry, mut username, mut password) = (None, None, None);
        for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once('=').ok_or_else(|| format!("line {n} is not key=value"))?;
            let slot = match key.trim() {
                "registry" => &mut registry,
                "username" => &mut username,
                "password" => &mut password,
                other => return Err(format!("line {n}: unknown key {other:?}; the keys are registry, username and password")),
            };
            *slot = Some(value.trim().to_string());
        }
        let need = |v: Option<String>, key: &str| v.filter(|v| !v.is_empty()).ok_or_else(|| format!("no {key}= line (registry, username and password are all needed)"));
        let registry = need(registry, "registry")?.to_ascii_lowercase();
        if registry.contains('/') || registry.contains(char::is_whitespace) {
            return Err(format!("registry {registry:?} is not host[:port], e.g. 127.0.0.1:5000"));
        }
        Ok(Self { registry, username: need(username, "username")?, password: need(password, "password")? })
    }
}

/// The credentials for `registry` (`host[:port]`, as an image reference names it), if any.
pub fn for_registry<'a>(all: &'a [RegistryCredentials], registry: &str) -> Option<&'a RegistryCredentials> {
    all.iter().find(|c| c.registry.eq_ignore_ascii_case(registry))
}

/// Whether a registry's or Docker's message says the credentials were missing or refused.
pub fn is_auth_failure(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["unauthorized", "authentication required", "no basic auth credentials"].iter().any(|s| m.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_file_registry_sh_writes() {
        let c = RegistryCredentials::parse("# by registry.sh\nregistry=127.0.0.1:5000\n\nusername=sluice\npassword=s3=cret\n").unwrap();
        assert_eq!((c.registry.as_str(), c.username.as_str(), c.password.as_str()), ("127.0.0.1:5000", "sluice", "s3=cret"));
        assert!(!format!("{c:?}").contains("s3=cret"), "Debug hides the password");
        assert_eq!(for_registry(std::slice::from_ref(&c), "127.0.0.1:5000"), Some(&c));
        assert_eq!(for_registry(&[c], "127.0.0.1:5001"), None);
    }

    #[test]
    fn refuses_incomplete_or_unknown_lines() {
        for (text, says) in [
            ("registry=r\nusername=u\n", "no password="),
            ("registry=r\nusername=u\npassword=\n", "no password="),
            ("registry=r\nuser=u\npassword=p\n", "unknown key \"user\""),
            ("registry r\n", "line 1 is not key=value"),
            ("registry=http://r/x\nusername=u\npassword=p\n", "not host[:port]"),
        ] {
            let e = RegistryCredentials::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn recognises_auth_failures() {
        assert!(is_auth_failure("Head \"http://127.0.0.1:5001/v2/x/manifests/1\": no basic auth credentials"));
        assert!(is_auth_failure("unauthorized: authentication required"));
        assert!(!is_auth_failure("manifest unknown"));
    }
}
