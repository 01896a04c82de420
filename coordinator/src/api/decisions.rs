//! Decision routes: rules (apply, check, list, remove, explain), the decision
//! events, and placement explanations.

use super::{parse_param, query_param, Api, MAX_BODY};
use crate::controller;
use crate::decide::{self, rules};
use crate::events;
use crate::http::{self, read_body, ApiError, Body};
use crate::state_machine::{Command, Response as Applied};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use sluice_common::rules::{Action as RuleAction, Rule, RuleName, RuleSource};
use sluice_common::FunctionName;
use std::collections::{BTreeSet, HashMap};

/// Most rules the cluster holds.
pub const MAX_RULES: usize = 1000;

/// `PUT /v1/rules` and `POST /v1/rules/check`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesBody {
    rules: Vec<RuleSource>,
}

impl Api {
    pub(super) fn rules(&self) -> Vec<Rule> {
        self.store.read(|s| s.rules.values().cloned().collect())
    }

    /// Parses and checks a body of rules; errors name `rules[i].<field>`.
    async fn parse_rules(&self, req: Request<Incoming>) -> Result<Vec<Rule>, ApiError> {
        let bytes = read_body(req.into_body(), MAX_BODY * 4).await?;
        let body: RulesBody = http::parse_json(&bytes)?;
        if body.rules.len() > MAX_RULES {
            return Err(ApiError::invalid("rules", format!("{} rules: send at most {MAX_RULES}", body.rules.len())));
        }
        let mut names = BTreeSet::new();
        let mut rules = Vec::with_capacity(body.rules.len());
        for (i, source) in body.rules.into_iter().enumerate() {
            let rule = Rule::from_source(source).map_err(|e| {
                let e = sluice_common::ValidationError::from(e);
                ApiError::invalid(format!("rules[{i}].{}", e.field), e.message)
            })?;
            let steps = rule.actions.iter().any(|a| matches!(a, RuleAction::ScaleOut(_) | RuleAction::ScaleIn(_)));
            if steps && rule.cooldown.is_zero() {
                return Err(ApiError::invalid(
                    format!("rules[{i}].rule"),
                    format!(
                        "rule {}: scale_out and scale_in add or remove instances each time the rule fires, so it needs a cooldown: end the rule with e.g. `cooldown 30s`",
                        rule.name
                    ),
                ));
            }
            if !names.insert(rule.name.clone()) {
                return Err(ApiError::invalid(format!("rules[{i}].name"), format!("{} appears twice: give each rule its own name", rule.name)));
            }
            rules.push(rule);
        }
        Ok(rules)
    }

    pub(super) async fn put_rules(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let rules = self.parse_rules(req).await?;
        let new: usize = self.store.read(|s| rules.iter().filter(|r| !s.rules.contains_key(&r.name)).count() + s.rules.len());
        if new > MAX_RULES {
            return Err(ApiError::invalid("rules", format!("the cluster would hold {new} rules: keep at most {MAX_RULES} (remove some with `sluice rules rm`)")));
        }
        let names: Vec<RuleName> = rules.iter().map(|r| r.name.clone()).collect();
        self.execute(Command::PutRules { rules }).await?;
        Ok(http::json(StatusCode::OK, &serde_json::json!({ "applied": names })))
    }

    pub(super) async fn check_rules(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let rules = self.parse_rules(req).await?;
        Ok(http::json(StatusCode::OK, &serde_json::json!({ "valid": true, "rules": rules })))
    }

    pub(super) async fn remove_rule(&self, name: &str) -> Result<Response<Body>, ApiError> {
        let name = RuleName::new(name).map_err(|e| ApiError::invalid("name", e.message))?;
        match self.execute(Command::RemoveRule { name: name.clone() }).await? {
            Applied::Ok => Ok(http::json(StatusCode::OK, &serde_json::json!({ "removed": name }))),
            _ => Err(ApiError::not_found(format!("rule {name} does not exist: `sluice rules ls` lists rules"))),
        }
    }

    pub(super) async fn explain_rules(&self, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let only = query_param(req, "name").map(RuleName::new).transpose().map_err(|e| ApiError::invalid("name", e.message))?;
        self.barrier().await?;
        let now = self.store.now();
        let out = self.store.read(|s| {
            let windows = self.telemetry.windows();
            if let Some(name) = &only {
                if !s.rules.contains_key(name) {
                    return Err(ApiError::not_found(format!("rule {name} does not exist: `sluice rules ls` lists rules")));
                }
            }
            Ok(rules::explain(s, &windows, only.as_ref(), now))
        })?;
        Ok(http::json(StatusCode::OK, &out))
    }

    pub(super) async fn events(&self, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let function = query_param(req, "function").map(FunctionName::new).transpose()?;
        let limit = parse_param::<usize>(req, "limit")?.unwrap_or(100);
        if limit == 0 || limit > events::CAPACITY {
            return Err(ApiError::invalid("limit", format!("use a number from 1 to {}", events::CAPACITY)));
        }
        Ok(http::json(StatusCode::OK, &self.store.events(function.as_ref(), limit)))
    }

    pub(super) async fn explain_placement(&self, function: FunctionName) -> Result<Response<Body>, ApiError> {
        self.barrier().await?;
        let now = self.store.now();
        let lead = self.store.leadership();
        let liveness = &self.store.raft().liveness;
        let verdicts = self.store.read(|state| {
            let lead = (lead.term.unwrap_or(0), lead.since.unwrap_or(now));
            controller::with_inputs(state, &self.telemetry, liveness, lead, now, &self.decide, &HashMap::new(), |inputs| decide::explain_placement(inputs, &function))
        });
        match verdicts {
            Some(v) => Ok(http::json(StatusCode::OK, &serde_json::json!({ "function": function, "nodes": v }))),
            None => Err(super::no_function(&function)),
        }
    }
}
