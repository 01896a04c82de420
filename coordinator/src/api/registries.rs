//! The registry allow-list route (admin): images may come only from the
//! registries it names; an empty list allows any.

use super::{Api, MAX_BODY};
use crate::http::{self, read_body, ApiError, Body};
use crate::registry::{validate_entry, MAX_ALLOWED};
use crate::state_machine::Command;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRequest {
    allowed: Vec<String>,
}

impl Api {
    pub(super) async fn set_registries(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let bytes = read_body(req.into_body(), MAX_BODY).await?;
        let ask: SetRequest = http::parse_json(&bytes)?;
        if ask.allowed.len() > MAX_ALLOWED {
            return Err(ApiError::invalid("allowed", format!("{} registries: allow at most {MAX_ALLOWED}", ask.allowed.len())));
        }
        let mut allowed: Vec<String> = Vec::with_capacity(ask.allowed.len());
        for (i, entry) in ask.allowed.iter().enumerate() {
            validate_entry(entry).map_err(|why| ApiError::invalid(format!("allowed[{i}]"), why))?;
            if !allowed.contains(entry) {
                allowed.push(entry.clone());
            }
        }
        self.execute(Command::SetAllowedRegistries { registries: allowed.clone() }).await?;
        Ok(http::json(StatusCode::OK, &serde_json::json!({ "allowed": allowed })))
    }
}
