//! A private mosquitto for one test: its own address and port, its sessions
//! kept on disk, stopped with SIGTERM (so it saves them) when dropped. Other
//! tests' brokers are untouched. The binary is Debian's mosquitto, which
//! scripts/brokers.sh installs; without it the test fails and says so.

use crate::eventually;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Mosquitto {
    child: Child,
    ip: String,
    port: u16,
}

impl Mosquitto {
    /// Starts one listening on `ip:port`, keeping its state in `dir`, and waits until it accepts.
    pub async fn start(ip: &str, port: u16, dir: &Path) -> Result<Mosquitto> {
        let user = Command::new("id").arg("-un").output().context("running id -un")?.stdout;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} {ip}\nallow_anonymous true\nuser {}\npersistence true\npersistence_location {}/\nmax_queued_messages 100000\n",
                String::from_utf8_lossy(&user).trim(),
                dir.display()
            ),
        )?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run mosquitto: install it with scripts/brokers.sh start mqtt (or apt-get install mosquitto)")?;
        let broker = Mosquitto { child, ip: ip.to_string(), port };
        let addr = (broker.ip.clone(), port);
        eventually("mosquitto accepts connections", Duration::from_secs(10), || {
            let addr = addr.clone();
            async move { Ok(tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())) }
        })
        .await?;
        Ok(broker)
    }

    /// The `--bus` URL that reaches it.
    pub fn url(&self, prefix: &str) -> String {
        format!("mqtt://{}:{}?prefix={prefix}", self.ip, self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}
