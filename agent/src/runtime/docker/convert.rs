//! Reading Docker's answers back into `ContainerInfo`: labels, status,
//! published port, address on its network, and from them the endpoint.

use crate::runtime::{labels, ContainerId, ContainerInfo, ContainerStatus};
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary, ContainerSummaryStateEnum, EndpointSettings, PortMap, PortSummary, PortSummaryTypeEnum,
};
use sluice_common::{Endpoint, FunctionName, InstanceId};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// The instance and function a container's labels name, or why they do not.
pub fn identity(labels: Option<&HashMap<String, String>>) -> Result<(InstanceId, FunctionName), String> {
    let labels = labels.ok_or("no labels")?;
    let instance = labels.get(labels::INSTANCE).ok_or_else(|| format!("label {} missing", labels::INSTANCE))?;
    let function = labels.get(labels::FUNCTION).ok_or_else(|| format!("label {} missing", labels::FUNCTION))?;
    let instance = instance.parse().map_err(|e| format!("label {}: {e}", labels::INSTANCE))?;
    let function = FunctionName::new(function.as_str()).map_err(|e| format!("label {}: {e}", labels::FUNCTION))?;
    Ok((instance, function))
}

/// Status from `GET /containers/json`, whose exit code only appears in the
/// human-readable `Status` text ("Exited (137) 2 seconds ago").
pub fn summary_status(state: Option<ContainerSummaryStateEnum>, status_text: Option<&str>) -> ContainerStatus {
    use ContainerSummaryStateEnum as S;
    match state {
        Some(S::CREATED) => ContainerStatus::Created,
        Some(S::RUNNING) => ContainerStatus::Running,
        Some(S::PAUSED) => ContainerStatus::Paused,
        Some(S::EXITED) => ContainerStatus::Exited { code: status_text.and_then(exit_code_from_text) },
        _ => ContainerStatus::Other,
    }
}

fn exit_code_from_text(text: &str) -> Option<i64> {
    let rest = text.strip_prefix("Exited (")?;
    rest.split(')').next()?.parse().ok()
}

/// Status from `GET /containers/{id}/json`.
pub fn inspect_status(state: Option<ContainerStateStatusEnum>, exit_code: Option<i64>) -> ContainerStatus {
    use ContainerStateStatusEnum as S;
    match state {
        Some(S::CREATED) => ContainerStatus::Created,
        Some(S::RUNNING) => ContainerStatus::Running,
        Some(S::PAUSED) => ContainerStatus::Paused,
        Some(S::EXITED) => ContainerStatus::Exited { code: exit_code },
        _ => ContainerStatus::Other,
    }
}

/// A container's one published TCP port: where its host publishes it, and the
/// container's own port behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub published: u16,
    pub container: u16,
}

/// The first published TCP port in a listing; Sluice publishes exactly one.
pub fn summary_ports(ports: Option<&[PortSummary]>) -> Option<Ports> {
    let p = ports?.iter().find(|p| matches!(p.typ, Some(PortSummaryTypeEnum::TCP) | None) && p.public_port.is_some())?;
    Some(Ports { published: p.public_port?, container: p.private_port })
}

/// The first published TCP port in an inspect answer's port map (keyed `8080/tcp`).
pub fn port_map_ports(ports: Option<&PortMap>) -> Option<Ports> {
    let mut entries: Vec<_> = ports?.iter().filter_map(|(key, bindings)| Some((key.strip_suffix("/tcp")?.parse::<u16>().ok()?, bindings.as_ref()?))).collect();
    // Deterministic choice should a container ever expose several ports.
    entries.sort_by_key(|(container, _)| *container);
    entries.into_iter().find_map(|(container, bindings)| {
        let published = bindings.iter().find_map(|b| b.host_port.as_deref().and_then(|p| p.parse().ok()).filter(|p| *p != 0))?;
        Some(Ports { published, container })
    })
}

/// Where a live container is reached: its published port on `host`, and, when it
/// has an address on its network, that address with its own port (the direct
/// way in from this host, see `Endpoint`).
pub fn endpoint(host: &str, ports: Option<Ports>, addr: Option<IpAddr>, status: ContainerStatus) -> Option<Endpoint> {
    // Docker keeps stale bindings on stopped containers; only a live one is reachable.
    let live = matches!(status, ContainerStatus::Running | ContainerStatus::Paused);
    let ports = ports.filter(|_| live)?;
    Some(Endpoint::published(host, ports.published).with_direct(addr.map(|ip| SocketAddr::new(ip, ports.container))))
}

/// The container's address on the first of its networks that gave it one
/// (networks in name order, so the choice is stable).
pub fn network_address(networks: Option<&HashMap<String, EndpointSettings>>) -> Option<IpAddr> {
    let mut names: Vec<&String> = networks?.keys().collect();
    names.sort();
    names.into_iter().find_map(|n| networks?.get(n)?.ip_address.as_deref()?.parse().ok())
}

/// As `network_address`, for a live container only (a stopped one has none).
fn address(networks: Option<&HashMap<String, EndpointSettings>>, status: ContainerStatus) -> Option<IpAddr> {
    if !matches!(status, ContainerStatus::Running | ContainerStatus::Paused) {
        return None;
    }
    network_address(networks)
}

/// A listing entry as `ContainerInfo`; `host` is where published ports are reached.
pub fn from_summary(summary: &ContainerSummary, host: &str) -> Result<ContainerInfo, String> {
    let id = summary.id.clone().ok_or("no container id")?;
    let (instance, function) = identity(summary.labels.as_ref())?;
    let status = summary_status(summary.state, summary.status.as_deref());
    let addr = address(summary.network_settings.as_ref().and_then(|n| n.networks.as_ref()), status);
    let endpoint = endpoint(host, summary_ports(summary.ports.as_deref()), addr, status);
    Ok(ContainerInfo { id: ContainerId(id), instance, function, status, endpoint, addr })
}

/// An inspect answer as `ContainerInfo`.
pub fn from_inspect(inspect: &ContainerInspectResponse, host: &str) -> Result<ContainerInfo, String> {
    let id = inspect.id.clone().ok_or("no container id")?;
    let (instance, function) = identity(inspect.config.as_ref().and_then(|c| c.labels.as_ref()))?;
    let state = inspect.state.as_ref();
    let status = inspect_status(state.and_then(|s| s.status), state.and_then(|s| s.exit_code));
    let ports = port_map_ports(inspect.network_settings.as_ref().and_then(|n| n.ports.as_ref()));
    let addr = address(inspect.network_settings.as_ref().and_then(|n| n.networks.as_ref()), status);
    Ok(ContainerInfo { id: ContainerId(id), instance, function, status, endpoint: endpoint(host, ports, addr, status), addr })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::PortBinding;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn identity_needs_valid_labels() {
        let ok = labels(&[(labels::INSTANCE, "i3"), (labels::FUNCTION, "hello")]);
        assert_eq!(identity(Some(&ok)).unwrap(), (InstanceId(3), FunctionName::new("hello").unwrap()));
        let cases = [
            (labels(&[(labels::FUNCTION, "hello")]), "missing"),
            (labels(&[(labels::INSTANCE, "3"), (labels::FUNCTION, "hello")]), "instance"),
            (labels(&[(labels::INSTANCE, "i3"), (labels::FUNCTION, "Bad Name")]), "function"),
        ];
        for (l, want) in cases {
            let err = identity(Some(&l)).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
        assert!(identity(None).is_err());
    }

    #[test]
    fn statuses_from_listing() {
        use ContainerSummaryStateEnum as S;
        let table = [
            (Some(S::CREATED), None, ContainerStatus::Created),
            (Some(S::RUNNING), Some("Up 3 seconds"), ContainerStatus::Running),
            (Some(S::PAUSED), Some("Up 3 seconds (Paused)"), ContainerStatus::Paused),
            (Some(S::EXITED), Some("Exited (137) 2 seconds ago"), ContainerStatus::Exited { code: Some(137) }),
            (Some(S::EXITED), Some("Exited (0) About a minute ago"), ContainerStatus::Exited { code: Some(0) }),
            (Some(S::EXITED), Some("weird"), ContainerStatus::Exited { code: None }),
            (Some(S::DEAD), None, ContainerStatus::Other),
            (Some(S::RESTARTING), None, ContainerStatus::Other),
            (None, None, ContainerStatus::Other),
        ];
        for (state, text, want) in table {
            assert_eq!(summary_status(state, text), want, "{state:?} {text:?}");
        }
    }

    #[test]
    fn statuses_from_inspect() {
        use ContainerStateStatusEnum as S;
        assert_eq!(inspect_status(Some(S::EXITED), Some(3)), ContainerStatus::Exited { code: Some(3) });
        assert_eq!(inspect_status(Some(S::RUNNING), Some(0)), ContainerStatus::Running);
        assert_eq!(inspect_status(Some(S::REMOVING), None), ContainerStatus::Other);
    }

    #[test]
    fn ports_from_listing_and_inspect() {
        let summary = [
            PortSummary { ip: Some("127.0.0.1".into()), private_port: 8080, public_port: None, typ: Some(PortSummaryTypeEnum::TCP) },
            PortSummary { ip: Some("127.0.0.1".into()), private_port: 8080, public_port: Some(49153), typ: Some(PortSummaryTypeEnum::TCP) },
        ];
        assert_eq!(summary_ports(Some(&summary)), Some(Ports { published: 49153, container: 8080 }));
        assert_eq!(summary_ports(Some(&[])), None);

        let binding = |p: &str| Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(p.into()) }]);
        let map: PortMap = HashMap::from([("53/udp".to_string(), binding("1")), ("8080/tcp".to_string(), binding("49154"))]);
        assert_eq!(port_map_ports(Some(&map)), Some(Ports { published: 49154, container: 8080 }));
        let unbound: PortMap = HashMap::from([("8080/tcp".to_string(), None), ("9000/tcp".to_string(), binding("0"))]);
        assert_eq!(port_map_ports(Some(&unbound)), None);
    }

    #[test]
    fn stopped_containers_have_no_endpoint() {
        let summary = ContainerSummary {
            id: Some("abc".into()),
            labels: Some(labels(&[(labels::INSTANCE, "i1"), (labels::FUNCTION, "f")])),
            state: Some(ContainerSummaryStateEnum::EXITED),
            status: Some("Exited (1) 1 second ago".into()),
            ports: Some(vec![PortSummary { ip: None, private_port: 8080, public_port: Some(4000), typ: None }]),
            ..Default::default()
        };
        let info = from_summary(&summary, "127.0.0.1").unwrap();
        assert_eq!(info.status, ContainerStatus::Exited { code: Some(1) });
        assert_eq!(info.endpoint, None);

        let running = ContainerSummary { state: Some(ContainerSummaryStateEnum::RUNNING), ..summary };
        let info = from_summary(&running, "127.0.0.1").unwrap();
        assert_eq!(info.endpoint, Some(Endpoint::published("127.0.0.1", 4000)));
    }

    #[test]
    fn a_live_container_with_an_address_is_also_reachable_directly_at_its_own_port() {
        let networks = HashMap::from([
            ("zeta".to_string(), EndpointSettings { ip_address: Some("10.1.0.9".into()), ..Default::default() }),
            ("bridge".to_string(), EndpointSettings { ip_address: Some("172.17.0.4".into()), ..Default::default() }),
        ]);
        let summary = ContainerSummary {
            id: Some("abc".into()),
            labels: Some(labels(&[(labels::INSTANCE, "i1"), (labels::FUNCTION, "f")])),
            state: Some(ContainerSummaryStateEnum::PAUSED),
            ports: Some(vec![PortSummary { ip: None, private_port: 9000, public_port: Some(4000), typ: None }]),
            network_settings: Some(bollard::models::ContainerSummaryNetworkSettings { networks: Some(networks) }),
            ..Default::default()
        };
        let info = from_summary(&summary, "10.0.0.5").unwrap();
        // The published port for gateways elsewhere; the first network's address, with the container's port, from here.
        let want = Endpoint::published("10.0.0.5", 4000).with_direct(Some("172.17.0.4:9000".parse().unwrap()));
        assert_eq!(info.endpoint, Some(want));
        assert_eq!(info.addr, Some("172.17.0.4".parse().unwrap()));
        let exited = ContainerSummary { state: Some(ContainerSummaryStateEnum::EXITED), ..summary };
        assert_eq!(from_summary(&exited, "10.0.0.5").unwrap().endpoint, None);
    }
}
