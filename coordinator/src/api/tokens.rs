//! Token routes (admin only): list, create, revoke. A token's secret is
//! returned once, by the call that made it; the state keeps only its hash.

use super::{Api, MAX_BODY};
use crate::auth::{self, Role, TokenRecord};
use crate::http::{self, read_body, ApiError, Body};
use crate::state_machine::{Command, Response as Applied};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use sluice_common::Timestamp;
use std::collections::BTreeSet;
use std::time::Duration;

/// Longest a token may be made to last (10 years); without `expires_in_secs` it never expires.
pub(super) const MAX_LIFETIME_SECS: u64 = 10 * 365 * 86_400;

/// A token as listed: everything but the hash.
#[derive(Debug, Serialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub roles: BTreeSet<Role>,
    pub created_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

impl From<&TokenRecord> for TokenView {
    fn from(r: &TokenRecord) -> Self {
        Self { id: r.id.clone(), name: r.name.clone(), roles: r.roles.clone(), created_at: r.created_at, expires_at: r.expires_at }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    roles: Vec<String>,
    #[serde(default)]
    expires_in_secs: Option<u64>,
}

impl Api {
    pub(super) async fn list_tokens(&self) -> Result<Response<Body>, ApiError> {
        self.barrier().await?;
        let tokens: Vec<TokenView> = self.store.read(|s| s.auth.tokens.values().map(TokenView::from).collect());
        Ok(http::json(StatusCode::OK, &tokens))
    }

    pub(super) async fn create_token(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let bytes = read_body(req.into_body(), MAX_BODY).await?;
        let ask: CreateRequest = http::parse_json(&bytes)?;
        auth::validate_name(&ask.name)?;
        let all = || Role::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ");
        if ask.roles.is_empty() || ask.roles.len() > Role::ALL.len() {
            return Err(ApiError::invalid("roles", format!("give 1 to {} roles from {}", Role::ALL.len(), all())));
        }
        let mut roles = BTreeSet::new();
        for (i, r) in ask.roles.iter().enumerate() {
            roles.insert(Role::parse(r).ok_or_else(|| ApiError::invalid(format!("roles[{i}]"), format!("{r:?} is not a role: use one of {}", all())))?);
        }
        let now = self.store.now();
        let expires_at = match ask.expires_in_secs {
            None => None,
            Some(secs) if (1..=MAX_LIFETIME_SECS).contains(&secs) => Some(now.plus(Duration::from_secs(secs))),
            Some(_) => return Err(ApiError::invalid("expires_in_secs", format!("use 1 to {MAX_LIFETIME_SECS} seconds, or leave it out for a token that does not expire"))),
        };
        let made = auth::new_token(&ask.name, roles, now, expires_at)?;
        match self.execute(Command::CreateToken { token: made.record.clone() }).await? {
            Applied::Ok => {
                let view = TokenView::from(&made.record);
                Ok(http::json(StatusCode::CREATED, &serde_json::json!({"token": made.token, "info": view})))
            }
            Applied::Rejected { reason } => Err(ApiError::new(StatusCode::CONFLICT, "rejected", reason)),
            other => Err(ApiError::new(StatusCode::CONFLICT, "rejected", format!("{other:?}"))),
        }
    }

    pub(super) async fn revoke_token(&self, id: &str) -> Result<Response<Body>, ApiError> {
        if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::invalid("id", format!("{id:?} is not a token id: `sluice tokens ls` lists them")));
        }
        match self.execute(Command::RevokeToken { id: id.to_string() }).await? {
            Applied::Ok => Ok(http::json(StatusCode::OK, &serde_json::json!({"revoked": id}))),
            _ => Err(ApiError::not_found(format!("no token {id}: `sluice tokens ls` lists them"))),
        }
    }
}
