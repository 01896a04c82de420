//! Who may do what: bearer tokens with roles, checked on every API route, on
//! the gateway for private functions, and on the agent channel.
//!
//! A token reads `sluice_<id>_<secret>`. The replicated state keeps, per id,
//! the SHA-256 of the secret, never the secret itself, so a copied log or
//! snapshot grants nothing. The secrets are 256 random bits, so a fast hash is
//! enough (there is nothing to brute-force), and the stored and presented
//! hashes are compared in constant time.
//!
//! Roles grant permissions; each route asks for one permission
//! (`api::routes`). A token may hold several roles.

pub mod bootstrap;

use crate::http::ApiError;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use sluice_common::Timestamp;
use std::collections::BTreeSet;
use std::fmt;

/// Most tokens a cluster keeps: each is checked by id, so the bound is about
/// the state's size, not speed.
pub const MAX_TOKENS: usize = 1000;
/// Longest token name.
pub const MAX_NAME_LEN: usize = 64;
const PREFIX: &str = "sluice_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;

/// What a holder of a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, tokens and cluster membership included.
    Admin,
    /// Deploys and removes functions and rules; reads everything.
    Deployer,
    /// Calls private functions at the gateway.
    Invoker,
    /// An agent: reads its node's desired set and reports.
    Agent,
    /// Reads state, figures and decisions.
    Reader,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Admin, Role::Deployer, Role::Invoker, Role::Agent, Role::Reader];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deployer => "deployer",
            Role::Invoker => "invoker",
            Role::Agent => "agent",
            Role::Reader => "reader",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the role allows `permission`.
    pub fn grants(self, permission: Permission) -> bool {
        matches!(
            (self, permission),
            (_, Permission::Public)
                | (Role::Admin, _)
                | (Role::Deployer, Permission::Read | Permission::Deploy)
                | (Role::Reader, Permission::Read)
                | (Role::Invoker, Permission::Invoke)
                | (Role::Agent, Permission::AgentChannel)
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Anyone: health checks, the API description.
    Public,
    /// Read state, figures, rules and decisions.
    Read,
    /// Change functions and rules.
    Deploy,
    /// Change the cluster: members, drains, tokens.
    Admin,
    /// An agent's long poll and reports.
    AgentChannel,
    /// Call a private function.
    Invoke,
}

impl Permission {
    /// The roles that grant it, for error messages and the API description.
    pub fn roles(self) -> Vec<Role> {
        Role::ALL.into_iter().filter(|r| r.grants(self)).collect()
    }
}

/// A token as the replicated state holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The public part of the token, also how it is listed and revoked.
    pub id: String,
    /// What it is for, chosen by whoever made it.
    pub name: String,
    pub roles: BTreeSet<Role>,
    /// SHA-256 of the secret, in hex.
    pub secret_sha256: String,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// A freshly made token: the record to store and the only copy of the secret.
#[derive(Debug)]
pub struct NewToken {
    pub record: TokenRecord,
    /// `sluice_<id>_<secret>`, shown once.
    pub token: String,
}

/// Makes a token with fresh randomness from the operating system.
pub fn new_token(name: &str, roles: BTreeSet<Role>, created_at: Timestamp, expires_at: Option<Timestamp>) -> Result<NewToken, ApiError> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill(&mut id)
        .and_then(|()| rng.fill(&mut secret))
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no_randomness", "the operating system gave no random bytes: check /dev/urandom and retry"))?;
    let (id, secret) = (hex(&id), hex(&secret));
    let record = TokenRecord { id: id.clone(), name: name.to_string(), roles, secret_sha256: sha256_hex(secret.as_bytes()), created_at, expires_at };
    Ok(NewToken { record, token: format!("{PREFIX}{id}_{secret}") })
}

/// The record a known token string stands for (a token written to a file by
/// someone else, brought into a new cluster).
pub fn record_for(token: &str, name: &str, roles: BTreeSet<Role>, created_at: Timestamp) -> Option<TokenRecord> {
    let (id, secret) = split(token)?;
    Some(TokenRecord { id: id.to_string(), name: name.to_string(), roles, secret_sha256: sha256_hex(secret.as_bytes()), created_at, expires_at: None })
}

/// The id of a token string, if it has the shape of one.
pub fn split_id(token: &str) -> Option<&str> {
    split(token).map(|(id, _)| id)
}

/// `sluice_<id>_<secret>` split into its parts, if it has that shape.
fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let is_hex = |s: &str, bytes: usize| s.len() == bytes * 2 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    (is_hex(id, ID_BYTES) && is_hex(secret, SECRET_BYTES)).then_some((id, secret))
}

/// Checks a token name: 1 to 64 of `a-z 0-9 - _ .`.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty() && name.len() <= MAX_NAME_LEN && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid("name", format!("{name:?}: use 1 to {MAX_NAME_LEN} of a-z, 0-9, '-', '_' and '.', e.g. ci-deployer")))
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Authentication is off (`--auth off`): everyone may do everything.
    Anyone,
    /// A token holder.
    Token { id: String, roles: BTreeSet<Role> },
}

impl Principal {
    pub fn may(&self, permission: Permission) -> bool {
        match self {
            Principal::Anyone => true,
            Principal::Token { roles, .. } => roles.iter().any(|r| r.grants(permission)),
        }
    }
}

/// Whether a coordinator checks credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Every route but the public ones needs a token.
    #[default]
    Required,
    /// No checks: only for loopback, or with an explicit override.
    Off,
}

/// Authenticates the `Authorization` header of a request against the tokens
/// in `lookup`, then checks the permission. `None` when the route is public.
pub fn authorize(
    mode: AuthMode,
    header: Option<&hyper::header::HeaderValue>,
    permission: Permission,
    now: Timestamp,
    lookup: impl FnOnce(&str) -> Option<TokenRecord>,
) -> Result<Principal, ApiError> {
    if mode == AuthMode::Off {
        return Ok(Principal::Anyone);
    }
    if permission == Permission::Public {
        return Ok(Principal::Anyone);
    }
    let Some(header) = header else {
        return Err(unauthenticated(
            "no_credentials",
            "this needs a token: send `Authorization: Bearer sluice_...` (the CLI reads --token, $SLUICE_TOKEN or the admin.token file in the data directory)",
        ));
    };
    let presented = header.to_str().ok().and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).unwrap_or("");
    let Some((id, secret)) = split(presented) else {
        return Err(unauthenticated("bad_token", "the Authorization header is not `Bearer sluice_<id>_<secret>`: send a token made by `sluice tokens create`"));
    };
    let record = lookup(id);
    // Hash and compare even for an unknown id, so a guess costs the same either way.
    let stored = record.as_ref().map_or([0u8; 64].as_slice(), |r| r.secret_sha256.as_bytes());
    let matches = constant_time_eq(sha256_hex(secret.as_bytes()).as_bytes(), stored);
    let record = match record {
        Some(r) if matches => r,
        _ => return Err(unauthenticated("bad_token", "this token is unknown or was revoked: ask an admin for a new one (`sluice tokens create`)")),
    };
    if record.expires_at.is_some_and(|at| at <= now) {
        return Err(unauthenticated("token_expired", format!("token {} has expired: ask an admin for a new one (`sluice tokens create`)", record.id)));
    }
    let principal = Principal::Token { id: record.id.clone(), roles: record.roles.clone() };
    if !principal.may(permission) {
        let needed: Vec<&str> = permission.roles().into_iter().map(Role::as_str).collect();
        let held: Vec<&str> = record.roles.iter().map(|r| r.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token {} ({}) may not do this: it needs one of the roles {}", record.id, held.join(", "), needed.join(", ")),
        ));
    }
    Ok(principal)
}

fn unauthenticated(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// Equal lengths and bytes, in time that depends on the length only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn roles(r: &[Role]) -> BTreeSet<Role> {
        r.iter().copied().collect()
    }

    fn check(token: &str, records: &[TokenRecord], permission: Permission, now: u64) -> Result<Principal, ApiError> {
        let header = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        authorize(AuthMode::Required, Some(&header), permission, Timestamp(now), |id| records.iter().find(|r| r.id == id).cloned())
    }

    #[test]
    fn a_token_is_checked_by_its_secret_and_its_roles() {
        let t = new_token("ci", roles(&[Role::Deployer]), Timestamp(0), None).unwrap();
        let records = [t.record.clone()];
        assert!(check(&t.token, &records, Permission::Deploy, 1).is_ok());
        assert!(check(&t.token, &records, Permission::Read, 1).is_ok());
        assert_eq!(check(&t.token, &records, Permission::Admin, 1).unwrap_err().status, StatusCode::FORBIDDEN);
        assert_eq!(check(&t.token, &records, Permission::Invoke, 1).unwrap_err().status, StatusCode::FORBIDDEN);
        // The same id with another secret, and an unknown id.
        let forged = format!("{}{}", &t.token[..t.token.len() - 1], if t.token.ends_with('0') { '1' } else { '0' });
        assert_eq!(check(&forged, &records, Permission::Read, 1).unwrap_err().code, "bad_token");
        let other = new_token("x", roles(&[Role::Admin]), Timestamp(0), None).unwrap();
        assert_eq!(check(&other.token, &records, Permission::Read, 1).unwrap_err().status, StatusCode::UNAUTHORIZED);
        // The stored record does not hold the secret.
        assert!(!serde_json::to_string(&t.record).unwrap().contains(t.token.rsplit('_').next().unwrap()));
    }

    #[test]
    fn missing_malformed_and_expired_tokens_are_unauthenticated() {
        let t = new_token("soon", roles(&[Role::Reader]), Timestamp(0), Some(Timestamp(1000))).unwrap();
        let records = [t.record.clone()];
        assert!(check(&t.token, &records, Permission::Read, 999).is_ok());
        assert_eq!(check(&t.token, &records, Permission::Read, 1000).unwrap_err().code, "token_expired");
        for bad in ["", "sluice_", "sluice_zz_zz", "Basic abc", "sluice_0123456789ab_short"] {
            assert_eq!(check(bad, &records, Permission::Read, 1).unwrap_err().code, "bad_token", "{bad:?}");
        }
        let none = authorize(AuthMode::Required, None, Permission::Read, Timestamp(0), |_| None).unwrap_err();
        assert_eq!((none.status, none.code), (StatusCode::UNAUTHORIZED, "no_credentials"));
        // Public routes and a coordinator with auth off ask nothing.
        assert!(authorize(AuthMode::Required, None, Permission::Public, Timestamp(0), |_| None).is_ok());
        assert!(authorize(AuthMode::Off, None, Permission::Admin, Timestamp(0), |_| None).is_ok());
    }

    #[test]
    fn roles_grant_what_they_say() {
        use Permission::*;
        let table = [
            (Role::Admin, vec![Public, Read, Deploy, Admin, AgentChannel, Invoke]),
            (Role::Deployer, vec![Public, Read, Deploy]),
            (Role::Reader, vec![Public, Read]),
            (Role::Invoker, vec![Public, Invoke]),
            (Role::Agent, vec![Public, AgentChannel]),
        ];
        for (role, allowed) in table {
            for p in [Public, Read, Deploy, Admin, AgentChannel, Invoke] {
                assert_eq!(role.grants(p), allowed.contains(&p), "{role} {p:?}");
            }
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
    }

    #[test]
    fn a_known_token_string_gives_the_same_record() {
        let t = new_token("a", roles(&[Role::Admin]), Timestamp(5), None).unwrap();
        assert_eq!(record_for(&t.token, "a", roles(&[Role::Admin]), Timestamp(5)), Some(t.record));
        assert_eq!(record_for("not a token", "a", roles(&[Role::Admin]), Timestamp(5)), None);
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
