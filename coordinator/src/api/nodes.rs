//! Node routes: listing nodes with their state, draining them, and the agents'
//! side (desired sets and reports).

use super::{Api, MAX_BODY, MAX_REPORTED_INSTANCES};
use crate::http::{self, read_body, ApiError, Body};
use crate::reports;
use crate::state_machine::{Command, Response as Applied};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use sluice_common::{NodeId, NodeInfo, NodeReport, Resources};

/// A node as `GET /v1/nodes` shows it.
#[derive(Debug, Serialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub info: NodeInfo,
    /// `ready`, `suspect`, `down` or `draining`.
    pub state: &'static str,
    pub reserved: Resources,
    pub instances: u32,
    /// Milliseconds since this coordinator (or, on the leader, any) last heard its agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heard_ms_ago: Option<u64>,
}

impl Api {
    pub(super) fn nodes(&self) -> Vec<NodeView> {
        let now = self.store.now();
        let liveness = self.store.raft().liveness.lock().expect("liveness lock poisoned").clone();
        self.store.read(|s| {
            s.nodes
                .values()
                .map(|n| NodeView {
                    info: n.clone(),
                    state: n.state_name(),
                    reserved: s.reserved_on(&n.id),
                    instances: s.live_on(&n.id).count() as u32,
                    heard_ms_ago: liveness.last_heard(&n.id).map(|t| now.since(t).as_millis() as u64),
                })
                .collect()
        })
    }

    pub(super) async fn set_draining(&self, node: NodeId, draining: bool) -> Result<Response<Body>, ApiError> {
        let at = self.store.now();
        match self.execute(Command::SetDraining { node: node.clone(), draining, at }).await? {
            Applied::Ok => Ok(http::json(StatusCode::OK, &serde_json::json!({ "node": node, "draining": draining }))),
            _ => Err(ApiError::not_found(format!("node {node} is not known: `sluice nodes ls` lists nodes"))),
        }
    }

    pub(super) async fn report(&self, node: NodeId, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let peer = req.extensions().get::<http::PeerAddr>().cloned();
        let authorization = req.headers().get(hyper::header::AUTHORIZATION).cloned();
        let bytes = read_body(req.into_body(), MAX_BODY * 64).await?;
        let report: NodeReport = http::parse_json(&bytes)?;
        if report.node != node {
            return Err(ApiError::invalid("node", format!("report is for node {} but was sent to /v1/nodes/{node}: send it to its own node's path", report.node)));
        }
        if report.instances.len() > MAX_REPORTED_INSTANCES {
            return Err(ApiError::invalid("instances", format!("{} instances in one report: send at most {MAX_REPORTED_INSTANCES}", report.instances.len())));
        }
        sluice_common::labels::validate("labels", &report.labels)?;
        if report.images.len() > 1024 {
            return Err(ApiError::invalid("images", format!("{} images in one report: send at most 1024", report.images.len())));
        }
        let at = self.store.now();
        reports::note_heard(&self.store.raft().liveness, &report, at);
        self.agents.note(&report, peer.as_ref(), authorization.as_ref());
        if let Some(cmd) = self.store.read(|s| reports::report_command(s, report, at)) {
            self.store.execute(cmd).await.map_err(|e| ApiError::unavailable(&e))?;
        }
        Ok(http::json(StatusCode::OK, &serde_json::json!({"accepted": true})))
    }
}
