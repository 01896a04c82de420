//! Network faults between containers on a test network, with the host's
//! iptables: the `DOCKER-USER` chain sees traffic bridged between containers
//! (br_netfilter), so a rule there cuts one container off from another.
//!
//! A cut can be both ways, or one way for Raft messages only: dropping A's
//! packets to B's Raft port breaks A's link to B, while B's link to A (B's
//! packets to A's port, and A's acknowledgements of them) still works. Every
//! rule carries a comment naming its owner, so `heal` (and `Drop`) remove
//! exactly the rules one test added, even after a crash of the test.

use anyhow::{bail, Context, Result};
use std::process::Command;

const CHAIN: &str = "DOCKER-USER";

/// The cuts one test has made; healed on drop.
pub struct Nemesis {
    tag: String,
    raft_port: u16,
}

impl Nemesis {
    /// Cuts tagged `sluice-<name>`; any left over from an earlier run are removed.
    pub fn new(name: &str, raft_port: u16) -> Result<Self> {
        let nemesis = Self { tag: format!("sluice-{name}"), raft_port };
        nemesis.check()?;
        nemesis.heal()?;
        Ok(nemesis)
    }

    fn check(&self) -> Result<()> {
        let out = Command::new("iptables").args(["-S", CHAIN]).output().context("iptables not found: run `apt-get install -y iptables`")?;
        if !out.status.success() {
            bail!("iptables cannot read the {CHAIN} chain ({}): network faults need root and Docker's iptables chains", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// Drops everything between `a` and `b`, both ways.
    pub fn cut(&self, a: &str, b: &str) -> Result<()> {
        self.add(&["-s", a, "-d", b])?;
        self.add(&["-s", b, "-d", a])
    }

    /// `from` can no longer send Raft messages to `to`; `to` still reaches `from`.
    pub fn cut_one_way(&self, from: &str, to: &str) -> Result<()> {
        let port = self.raft_port.to_string();
        self.add(&["-s", from, "-d", to, "-p", "tcp", "--dport", &port])
    }

    /// Splits the nodes into groups that cannot talk across.
    pub fn partition(&self, groups: &[Vec<String>]) -> Result<()> {
        for (i, g) in groups.iter().enumerate() {
            for other in &groups[i + 1..] {
                for a in g {
                    for b in other {
                        self.cut(a, b)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes every rule this nemesis added.
    pub fn heal(&self) -> Result<()> {
        let out = Command::new("iptables").args(["-S", CHAIN]).output().context("running iptables -S")?;
        let rules = String::from_utf8_lossy(&out.stdout);
        for rule in rules.lines().filter(|r| r.contains(&self.tag)) {
            // `-A CHAIN ...` back into `-D CHAIN ...`, split as iptables printed it.
            let Some(spec) = rule.strip_prefix("-A ") else { continue };
            let args = shell_words(spec);
            let status = Command::new("iptables").arg("-D").args(&args).status().context("running iptables -D")?;
            if !status.success() {
                bail!("could not remove iptables rule {rule:?}");
            }
        }
        Ok(())
    }

    fn add(&self, matches: &[&str]) -> Result<()> {
        let out =
            Command::new("iptables").args(["-I", CHAIN]).args(matches).args(["-m", "comment", "--comment", &self.tag, "-j", "DROP"]).output().context("running iptables -I")?;
        if !out.status.success() {
            bail!("iptables -I {CHAIN} {} failed: {}", matches.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}

impl Drop for Nemesis {
    fn drop(&mut self) {
        let _ = self.heal();
    }
}

/// Splits an `iptables -S` line into arguments, honouring double quotes.
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    #[test]
    fn iptables_lines_split_into_arguments() {
        let line = r#"DOCKER-USER -s 172.30.1.11/32 -d 172.30.1.12/32 -p tcp -m tcp --dport 7071 -m comment --comment "sluice-r2 x" -j DROP"#;
        let words = super::shell_words(line);
        assert_eq!(words[0], "DOCKER-USER");
        assert!(words.contains(&"sluice-r2 x".to_string()));
        assert_eq!(words.last().unwrap(), "DROP");
    }
}
