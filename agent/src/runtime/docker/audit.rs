//! Checks that a container Docker actually runs carries Sluice's secure defaults.
//!
//! Docker silently drops or rewrites some options on some engines; auditing the
//! inspected container, not the request, is what proves the defaults hold.

use super::body::{TMPFS_PATH, USER};
use super::DockerRuntime;
use crate::runtime::{ContainerId, RuntimeError};
use bollard::models::HostConfig;
use sluice_common::Limits;

/// A container that does not carry Sluice's secure defaults, or could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum SecureDefaultsError {
    #[error("could not inspect container {id}: {source}")]
    Inspect { id: String, source: RuntimeError },
    #[error("container {id} breaks Sluice's secure defaults: {}; check the Docker engine version and the agent's create request", .violations.join("; "))]
    Violations { id: String, violations: Vec<String> },
}

/// Every way `host` and `user` differ from what Sluice requires for `limits`.
/// Empty means the container is confined as intended.
pub fn violations(host: &HostConfig, user: Option<&str>, limits: &Limits) -> Vec<String> {
    let mut found = Vec::new();
    let mut require = |ok: bool, what: String| {
        if !ok {
            found.push(what);
        }
    };
    require(host.privileged != Some(true), "runs privileged".into());
    require(host.cap_drop.as_ref().is_some_and(|c| c.iter().any(|x| x.eq_ignore_ascii_case("ALL"))), format!("CapDrop is {:?}, not [\"ALL\"]", host.cap_drop));
    require(host.cap_add.as_ref().is_none_or(|c| c.is_empty()), format!("adds capabilities {:?}", host.cap_add));
    require(
        host.security_opt.as_ref().is_some_and(|o| o.iter().any(|x| x == "no-new-privileges" || x == "no-new-privileges:true")),
        format!("SecurityOpt {:?} lacks no-new-privileges", host.security_opt),
    );
    let memory = i64::from(limits.memory_mb) * 1024 * 1024;
    require(host.memory == Some(memory), format!("Memory is {:?}, want {memory}", host.memory));
    require(host.memory_swap == Some(memory), format!("MemorySwap is {:?}, want {memory} (no swap)", host.memory_swap));
    let cpus = i64::from(limits.cpu_millis) * 1_000_000;
    require(host.nano_cpus == Some(cpus), format!("NanoCpus is {:?}, want {cpus}", host.nano_cpus));
    let pids = i64::from(limits.pids);
    require(host.pids_limit == Some(pids), format!("PidsLimit is {:?}, want {pids}", host.pids_limit));
    require(host.readonly_rootfs == Some(true), "root filesystem is writable".into());
    require(host.tmpfs.as_ref().is_some_and(|t| t.get(TMPFS_PATH).is_some_and(|o| o.contains("noexec"))), format!("no noexec tmpfs on {TMPFS_PATH}"));
    require(host.binds.as_ref().is_none_or(|b| b.is_empty()), format!("binds host paths {:?}", host.binds));
    require(host.network_mode.as_deref() != Some("host"), "uses the host network".into());
    require(host.pid_mode.as_deref() != Some("host"), "uses the host PID namespace".into());
    let user_ok = user.is_some_and(|u| u == USER);
    require(user_ok, format!("runs as user {user:?}, want {USER:?}"));
    found
}

/// Inspects container `id` and fails unless it carries every secure default for `limits`.
pub async fn check_secure_defaults(docker: &DockerRuntime, id: &ContainerId, limits: &Limits) -> Result<(), SecureDefaultsError> {
    let inspect = docker.client().inspect_container(&id.0, None).await.map_err(|e| SecureDefaultsError::Inspect { id: id.0.clone(), source: super::map_error(e, &id.0) })?;
    let host = inspect.host_config.unwrap_or_default();
    let user = inspect.config.as_ref().and_then(|c| c.user.as_deref());
    let found = violations(&host, user, limits);
    if found.is_empty() {
        Ok(())
    } else {
        Err(SecureDefaultsError::Violations { id: id.0.clone(), violations: found })
    }
}

#[cfg(test)]
mod tests {
    use super::super::body::{create_body, Placement};
    use super::*;
    use sluice_common::{DesiredInstance, DesiredState, FunctionName, FunctionSpec, ImageRef, InstanceId, NodeId};

    fn requested() -> (HostConfig, Option<String>, Limits) {
        let spec = FunctionSpec::new(FunctionName::new("f").unwrap(), ImageRef::parse("f").unwrap());
        let limits = spec.limits;
        let inst = DesiredInstance { id: InstanceId(1), spec, state: DesiredState::Running };
        let body = create_body(&NodeId::new("n").unwrap(), &inst, &Placement { publish_host: "127.0.0.1", log_max_size: "1m" });
        (body.host_config.unwrap(), body.user, limits)
    }

    #[test]
    fn what_sluice_requests_passes() {
        let (host, user, limits) = requested();
        assert_eq!(violations(&host, user.as_deref(), &limits), Vec::<String>::new());
    }

    #[test]
    fn each_weakening_is_caught() {
        type Weaken = Box<dyn Fn(&mut HostConfig, &mut Option<String>)>;
        let cases: Vec<(&str, Weaken)> = vec![
            ("privileged", Box::new(|h, _| h.privileged = Some(true))),
            ("CapDrop", Box::new(|h, _| h.cap_drop = None)),
            ("adds capabilities", Box::new(|h, _| h.cap_add = Some(vec!["NET_ADMIN".into()]))),
            ("no-new-privileges", Box::new(|h, _| h.security_opt = Some(vec![]))),
            ("Memory", Box::new(|h, _| h.memory = None)),
            ("MemorySwap", Box::new(|h, _| h.memory_swap = Some(-1))),
            ("NanoCpus", Box::new(|h, _| h.nano_cpus = Some(0))),
            ("PidsLimit", Box::new(|h, _| h.pids_limit = None)),
            ("writable", Box::new(|h, _| h.readonly_rootfs = Some(false))),
            ("tmpfs", Box::new(|h, _| h.tmpfs = None)),
            ("binds", Box::new(|h, _| h.binds = Some(vec!["/:/host".into()]))),
            ("host network", Box::new(|h, _| h.network_mode = Some("host".into()))),
            ("user", Box::new(|_, u| *u = Some("0".into()))),
            ("user", Box::new(|_, u| *u = None)),
        ];
        for (want, weaken) in cases {
            let (mut host, mut user, limits) = requested();
            weaken(&mut host, &mut user);
            let found = violations(&host, user.as_deref(), &limits);
            assert_eq!(found.len(), 1, "{want}: {found:?}");
            assert!(found[0].contains(want), "{want}: {found:?}");
        }
    }
}
