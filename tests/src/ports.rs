//! Ports for the processes a test starts. The kernel hands out a free port for
//! `bind(0)`, but once the probe socket closes it may hand the same port out
//! again, so one cluster could get a coordinator's API and another's Raft
//! listener on one port (seen in CI). Every port given out here is remembered
//! for the life of the test process and never given out twice.

use anyhow::{bail, Result};
use std::collections::BTreeSet;
use std::sync::Mutex;

static GIVEN_OUT: Mutex<BTreeSet<(String, u16)>> = Mutex::new(BTreeSet::new());

/// A port free on `ip` now, and one this test process has not been given before.
pub fn free_port(ip: &str) -> Result<u16> {
    let mut given_out = GIVEN_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Holding every probe open until a new port turns up keeps the kernel
    // from offering the same already-given port on each try.
    let mut probes = Vec::new();
    for _ in 0..1000 {
        let probe = std::net::TcpListener::bind((ip, 0))?;
        let port = probe.local_addr()?.port();
        if given_out.insert((ip.to_string(), port)) {
            return Ok(port);
        }
        probes.push(probe);
    }
    bail!("no port on {ip} that this test process has not used already; run fewer tests in one process")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_port_is_given_out_twice() {
        // 2000 draws from the ~14000 ports bind(0) picks from would repeat one
        // almost surely (the birthday bound) if nothing remembered them.
        let mut seen = BTreeSet::new();
        for _ in 0..2000 {
            let port = free_port("127.0.0.1").unwrap();
            assert!(seen.insert(port), "port {port} given out twice");
        }
    }
}
