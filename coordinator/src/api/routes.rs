//! Every API route in one table: its method, its path pattern, the permission
//! it needs and what it does. The router, the authorisation check and the API
//! description are all read from here, so a route cannot be added without
//! saying who may call it.

use crate::auth::Permission;

/// What a route does; `Api::route` dispatches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteId {
    Health,
    OpenApi,
    Metrics,
    ListFunctions,
    PutFunction,
    GetFunction,
    RemoveFunction,
    ListInstances,
    ListNodes,
    Cluster,
    AddMember,
    RemoveMember,
    Desired,
    Report,
    NodeFigures,
    InstanceFigures,
    FunctionFigures,
    FunctionTimeline,
    RecentBusEvents,
    Drain,
    Undrain,
    ListRules,
    PutRules,
    CheckRules,
    ExplainRules,
    RemoveRule,
    Events,
    ExplainPlacement,
    ListTokens,
    CreateToken,
    RevokeToken,
    ListRegistries,
    SetRegistries,
    PurgeCache,
    GetInvocation,
    FunctionLogs,
    UiPage,
    UiAsset,
}

/// One route. `path` segments in braces match any one segment.
#[derive(Debug)]
pub struct Route {
    pub id: RouteId,
    pub method: &'static str,
    pub path: &'static str,
    pub permission: Permission,
    pub summary: &'static str,
}

const fn route(id: RouteId, method: &'static str, path: &'static str, permission: Permission, summary: &'static str) -> Route {
    Route { id, method, path, permission, summary }
}

use Permission::{Admin, AgentChannel, Deploy, Public, Read};
use RouteId::*;

pub static ROUTES: &[Route] = &[
    route(Health, "GET", "/healthz", Public, "Whether this coordinator takes part in the cluster."),
    route(OpenApi, "GET", "/v1/openapi.json", Public, "This API described in OpenAPI 3.0: routes, parameters, bodies, answers and who may call each."),
    route(Metrics, "GET", "/metrics", Read, "Prometheus metrics of this coordinator."),
    route(ListFunctions, "GET", "/v1/functions", Read, "Functions with their instances by state and request figures."),
    route(PutFunction, "POST", "/v1/functions", Deploy, "Create or update a function."),
    route(GetFunction, "GET", "/v1/functions/{name}", Read, "One function and its instances."),
    route(RemoveFunction, "DELETE", "/v1/functions/{name}", Deploy, "Remove a function and stop its instances."),
    route(ListInstances, "GET", "/v1/instances", Read, "Instances, optionally of one function (?function=)."),
    route(ListNodes, "GET", "/v1/nodes", Read, "Nodes with their health, capacity and reservations."),
    route(Cluster, "GET", "/v1/cluster", Read, "This coordinator's view of the Raft cluster."),
    route(AddMember, "POST", "/v1/cluster/members", Admin, "Add a coordinator (as a learner, then a voter)."),
    route(RemoveMember, "DELETE", "/v1/cluster/members/{id}", Admin, "Remove a coordinator."),
    route(Desired, "GET", "/v1/nodes/{node}/desired", AgentChannel, "An agent's long poll for its node's desired instances."),
    route(Report, "POST", "/v1/nodes/{node}/report", AgentChannel, "An agent's report of its node and instances."),
    route(NodeFigures, "GET", "/v1/metrics/nodes/{node}", Read, "A node's figures over a range (?range=)."),
    route(InstanceFigures, "GET", "/v1/metrics/instances/{id}", Read, "An instance's figures over a range."),
    route(FunctionFigures, "GET", "/v1/metrics/functions/{name}", Read, "A function's figures over a range."),
    route(
        FunctionTimeline,
        "GET",
        "/v1/metrics/functions/{name}/timeline",
        Read,
        "A function's instance counts (ready, desired, predicted) and demand per slot over a range (?range=).",
    ),
    route(RecentBusEvents, "GET", "/v1/metrics/events", Read, "Instance events lately read from the metrics bus (?limit=)."),
    route(Drain, "POST", "/v1/nodes/{node}/drain", Admin, "Drain a node: its instances move elsewhere."),
    route(Undrain, "DELETE", "/v1/nodes/{node}/drain", Admin, "Stop draining a node."),
    route(ListRules, "GET", "/v1/rules", Read, "Scheduling rules."),
    route(PutRules, "PUT", "/v1/rules", Deploy, "Create or replace rules (a TOML rule file or JSON)."),
    route(CheckRules, "POST", "/v1/rules/check", Read, "Check rules without applying them."),
    route(ExplainRules, "GET", "/v1/rules/explain", Read, "When each rule last fired and what it read."),
    route(RemoveRule, "DELETE", "/v1/rules/{name}", Deploy, "Remove a rule."),
    route(Events, "GET", "/v1/events", Read, "Scaling and placement decisions with their reasons."),
    route(ExplainPlacement, "GET", "/v1/explain/placement/{name}", Read, "How a new instance of a function would be placed now."),
    route(ListTokens, "GET", "/v1/tokens", Admin, "Tokens (ids, names, roles, expiry; never secrets)."),
    route(CreateToken, "POST", "/v1/tokens", Admin, "Make a token; its secret is shown once."),
    route(RevokeToken, "DELETE", "/v1/tokens/{id}", Admin, "Revoke a token on every coordinator."),
    route(ListRegistries, "GET", "/v1/registries", Read, "The registries images may come from (empty: any)."),
    route(SetRegistries, "PUT", "/v1/registries", Admin, "Replace the registry allow-list."),
    route(PurgeCache, "POST", "/v1/functions/{name}/cache/purge", Deploy, "Drop a function's cached responses on every gateway (all, or one path)."),
    route(GetInvocation, "GET", "/v1/invocations/{id}", Read, "An asynchronous invocation's state and result."),
    route(FunctionLogs, "GET", "/v1/functions/{name}/logs", Read, "A function's container output from its instances' agents, as JSON lines (?tail=&follow=&since=&instance=)."),
    // The dashboard's files are public; the data it shows comes from the routes above, with the user's token.
    route(UiPage, "GET", "/ui", Public, "The dashboard (HTML); it asks for a token and reads this API."),
    route(UiAsset, "GET", "/ui/{file}", Public, "The dashboard's script, style sheet and icon."),
];

/// The outcome of looking a request up.
#[derive(Debug)]
pub enum Found<'a> {
    Route(&'static Route, Vec<&'a str>),
    /// The path exists, with other methods.
    WrongMethod(Vec<&'static str>),
    NotFound,
}

/// The route of `method` on `path` (no trailing slash), with the path's
/// parameters in order.
pub fn find<'a>(method: &str, path: &'a str) -> Found<'a> {
    // Only an absolute path is a route: "x/metrics" is not /metrics.
    let Some(rest) = path.strip_prefix('/') else { return Found::NotFound };
    let segments: Vec<&str> = rest.split('/').collect();
    let mut methods = Vec::new();
    for route in ROUTES {
        let Some(params) = matches(route.path, &segments) else { continue };
        if route.method == method {
            return Found::Route(route, params);
        }
        methods.push(route.method);
    }
    if methods.is_empty() {
        Found::NotFound
    } else {
        Found::WrongMethod(methods)
    }
}

fn matches<'a>(pattern: &str, segments: &[&'a str]) -> Option<Vec<&'a str>> {
    let parts: Vec<&str> = pattern.split('/').skip(1).collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (part, seg) in parts.iter().zip(segments) {
        if part.starts_with('{') {
            if seg.is_empty() {
                return None;
            }
            params.push(*seg);
        } else if part != seg {
            return None;
        }
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_found_with_their_parameters() {
        let Found::Route(r, params) = find("GET", "/v1/functions/hello") else { panic!() };
        assert_eq!((r.id, params), (GetFunction, vec!["hello"]));
        let Found::Route(r, params) = find("POST", "/v1/nodes/n1/report") else { panic!() };
        assert_eq!((r.id, params), (Report, vec!["n1"]));
        let Found::Route(r, _) = find("GET", "/v1/rules/explain") else { panic!() };
        assert_eq!(r.id, ExplainRules, "a fixed segment wins over a parameter listed later");
        assert!(matches!(find("PATCH", "/v1/functions"), Found::WrongMethod(m) if m == vec!["GET", "POST"]));
        assert!(matches!(find("GET", "/v1/nope"), Found::NotFound));
        assert!(matches!(find("GET", "/v1/functions//x"), Found::NotFound));
        assert!(matches!(find("GET", "x/metrics"), Found::NotFound), "a relative path is no route");
        assert!(matches!(find("GET", ""), Found::NotFound));
    }

    #[test]
    fn every_route_is_unique_and_every_id_is_routed_once() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(!(a.method == b.method && a.path == b.path), "{} {} twice", a.method, a.path);
                assert_ne!(a.id, b.id, "{:?} routed twice", a.id);
            }
        }
    }
}
