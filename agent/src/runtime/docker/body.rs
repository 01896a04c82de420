//! The container Sluice asks Docker for: labels, port, limits and secure defaults.
//!
//! Kept pure so the exact request can be unit-tested and audited without a daemon.

use crate::runtime::labels;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum};
use sluice_common::{DesiredInstance, NodeId};
use std::collections::HashMap;

/// `nobody:nogroup`: functions never run as root inside their container.
pub const USER: &str = "65534:65534";

/// The only writable path in the container. Small, and not executable, so a
/// compromised function cannot drop and run a binary.
pub const TMPFS_PATH: &str = "/tmp";
/// Mount options of that tmpfs: 16 MiB, nothing executable, no setuid, no devices.
pub const TMPFS_OPTIONS: &str = "rw,noexec,nosuid,nodev,size=16m";

const MIB: i64 = 1024 * 1024;

/// The host settings that are fixed for every container, whatever its spec says.
pub struct Placement<'a> {
    /// Host address the container's port is published on.
    pub publish_host: &'a str,
    /// json-file log rotation size, e.g. `10m`.
    pub log_max_size: &'a str,
}

/// `<port>/tcp`, Docker's key for a container port.
pub fn port_key(port: u16) -> String {
    format!("{port}/tcp")
}

/// The labels that let `list` find and identify the container later.
pub fn labels_for(node: &NodeId, instance: &DesiredInstance) -> HashMap<String, String> {
    HashMap::from([
        (labels::MANAGED.to_string(), "true".to_string()),
        (labels::NODE.to_string(), node.to_string()),
        (labels::FUNCTION.to_string(), instance.spec.name.to_string()),
        (labels::INSTANCE.to_string(), instance.id.to_string()),
    ])
}

/// The full create request for `instance` on `node`.
pub fn create_body(node: &NodeId, instance: &DesiredInstance, place: &Placement<'_>) -> ContainerCreateBody {
    let spec = &instance.spec;
    let port = port_key(spec.port);
    let env = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // HostPort "" asks Docker for an ephemeral port, so instances never collide.
    let binding = PortBinding { host_ip: Some(place.publish_host.to_string()), host_port: Some(String::new()) };
    let memory = i64::from(spec.limits.memory_mb) * MIB;
    let host_config = HostConfig {
        port_bindings: Some(HashMap::from([(port.clone(), Some(vec![binding]))])),
        privileged: Some(false),
        cap_drop: Some(vec!["ALL".to_string()]),
        security_opt: Some(vec!["no-new-privileges".to_string()]),
        memory: Some(memory),
        // Equal to `memory`: no swap, so a function over its limit is OOM-killed
        // instead of slowing the whole host down.
        memory_swap: Some(memory),
        nano_cpus: Some(i64::from(spec.limits.cpu_millis) * 1_000_000),
        pids_limit: Some(i64::from(spec.limits.pids)),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(TMPFS_PATH.to_string(), TMPFS_OPTIONS.to_string())])),
        // The agent decides what happens to a crashed instance; Docker must not
        // restart it behind its back.
        restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
        // Named explicitly so the rotation options are valid whatever the daemon's default driver is.
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".to_string()),
            config: Some(HashMap::from([("max-size".to_string(), place.log_max_size.to_string()), ("max-file".to_string(), "2".to_string())])),
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.runnable_image().to_string()),
        user: Some(USER.to_string()),
        env: Some(env),
        exposed_ports: Some(vec![port]),
        labels: Some(labels_for(node, instance)),
        host_config: Some(host_config),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::{DesiredState, FunctionName, FunctionSpec, ImageRef, InstanceId, Limits};

    fn instance() -> DesiredInstance {
        let mut spec = FunctionSpec::new(FunctionName::new("hello").unwrap(), ImageRef::parse("sluice/hello:latest").unwrap());
        spec.port = 9000;
        spec.env.insert("GREETING".into(), "hi=there".into());
        spec.limits = Limits { cpu_millis: 250, memory_mb: 64, pids: 32 };
        DesiredInstance { id: InstanceId(3), spec, state: DesiredState::Running }
    }

    fn body() -> ContainerCreateBody {
        create_body(&NodeId::new("n1").unwrap(), &instance(), &Placement { publish_host: "127.0.0.1", log_max_size: "10m" })
    }

    #[test]
    fn labels_identify_the_instance() {
        let labels = body().labels.unwrap();
        assert_eq!(labels[labels::MANAGED], "true");
        assert_eq!(labels[labels::NODE], "n1");
        assert_eq!(labels[labels::FUNCTION], "hello");
        assert_eq!(labels[labels::INSTANCE], "i3");
    }

    #[test]
    fn publishes_the_spec_port_on_an_ephemeral_host_port() {
        let b = body();
        assert_eq!(b.exposed_ports.unwrap(), vec!["9000/tcp".to_string()]);
        let bindings = b.host_config.unwrap().port_bindings.unwrap();
        let binding = &bindings["9000/tcp"].as_ref().unwrap()[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port.as_deref(), Some(""));
    }

    #[test]
    fn passes_env_and_image() {
        let b = body();
        assert_eq!(b.env.unwrap(), vec!["GREETING=hi=there".to_string()]);
        assert_eq!(b.image.as_deref(), Some("sluice/hello:latest"));
    }

    #[test]
    fn applies_limits_and_secure_defaults() {
        let b = body();
        assert_eq!(b.user.as_deref(), Some(USER));
        let h = b.host_config.unwrap();
        assert_eq!(h.memory, Some(64 * MIB));
        assert_eq!(h.memory_swap, Some(64 * MIB));
        assert_eq!(h.nano_cpus, Some(250_000_000));
        assert_eq!(h.pids_limit, Some(32));
        assert_eq!(h.privileged, Some(false));
        assert_eq!(h.cap_drop.unwrap(), vec!["ALL".to_string()]);
        assert_eq!(h.security_opt.unwrap(), vec!["no-new-privileges".to_string()]);
        assert_eq!(h.readonly_rootfs, Some(true));
        assert!(h.tmpfs.unwrap()["/tmp"].contains("noexec"));
        assert_eq!(h.restart_policy.unwrap().name, Some(RestartPolicyNameEnum::NO));
        assert_eq!(h.log_config.unwrap().config.unwrap()["max-size"], "10m");
        assert!(h.binds.is_none() && h.mounts.is_none() && h.cap_add.is_none(), "no host mounts or extra capabilities");
    }
}
