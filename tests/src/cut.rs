//! A TCP relay that a test can cut and heal: an agent's link to its
//! coordinator, partitioned while both sides keep running.
//!
//! Cutting closes every relayed connection and refuses new ones (accepted and
//! closed at once, as a dead path looks to the client); healing relays again.

use anyhow::Result;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

pub struct CutRelay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    accept: JoinHandle<()>,
}

impl CutRelay {
    /// Relays connections made to a new loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<CutRelay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (c, l) = (cut.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let mut client = client;
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut links = l.lock().expect("links lock");
                links.retain(|h| !h.is_finished());
                links.push(link.abort_handle());
            }
        });
        Ok(CutRelay { addr, cut, links, accept })
    }

    /// `http://` URL of the relay.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().expect("links lock").drain(..) {
            link.abort();
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for CutRelay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
