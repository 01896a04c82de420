//! TLS in front of the coordinator's listeners (Raft, API, gateway) and on its
//! Raft dials: the handshake, the count of peers refused, and the identity of
//! the clients accepted.
//!
//! A peer that fails the handshake (no certificate where one is required, one
//! from another CA, an expired one, plain TCP on a TLS port) is refused: the
//! connection is closed before a byte of it is read. Each refusal is counted in
//! `sluice_tls_handshake_failures_total{listener}` and logged, at most once per
//! listener every `WARN_EVERY` so that a peer retrying in a loop cannot flood
//! the log; the line says how many more were refused since the previous one.

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use sluice_common::metrics;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, warn};

/// How long a peer has to complete the handshake: a connection that says
/// nothing must not hold a task and a socket for ever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Least time between two logged refusals on one listener.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Where a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Raft,
    Api,
    Gateway,
}

impl Listener {
    const ALL: [Listener; 3] = [Listener::Raft, Listener::Api, Listener::Gateway];

    pub fn name(self) -> &'static str {
        match self {
            Listener::Raft => "raft",
            Listener::Api => "api",
            Listener::Gateway => "gateway",
        }
    }
}

/// Refused handshakes per listener, and the rate limit of their log lines.
#[derive(Debug, Default)]
pub struct HandshakeFailures {
    counts: [AtomicU64; 3],
    /// Per listener: when a refusal was last logged, and how many were not since.
    logged: Mutex<[(Option<Instant>, u64); 3]>,
}

impl HandshakeFailures {
    /// Counts a refused handshake from `peer` and logs it unless one was logged lately.
    pub fn record(&self, listener: Listener, peer: SocketAddr, reason: &dyn std::fmt::Display) {
        let i = listener as usize;
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let mut logged = self.logged.lock().expect("handshake log lock poisoned");
        let (last, quiet) = &mut logged[i];
        if last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            *quiet += 1;
            debug!(listener = listener.name(), peer = %peer, reason = %reason, "TLS handshake refused");
            return;
        }
        warn!(
            listener = listener.name(),
            peer = %peer,
            reason = %reason,
            more_since_last_logged = *quiet,
            "TLS handshake refused: the peer needs a valid certificate from this cluster's CA (see `sluice certs issue`)"
        );
        *last = Some(Instant::now());
        *quiet = 0;
    }

    pub fn count(&self, listener: Listener) -> u64 {
        self.counts[listener as usize].load(Ordering::Relaxed)
    }

    /// The counter in Prometheus text format, every listener included (zeros too).
    pub fn render(&self, out: &mut String) {
        let name = "sluice_tls_handshake_failures_total";
        metrics::header(out, name, "counter", "Connections refused because the peer failed the TLS handshake (no or an invalid certificate).");
        for listener in Listener::ALL {
            metrics::sample(out, name, &format!("listener=\"{}\"", listener.name()), self.count(listener));
        }
    }
}

/// The certificate identity of a TLS client the API verified: its first DNS
/// name. In a request's extensions, for mapping an agent's certificate to what
/// it may do; absent when the client showed no certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPeer {
    pub name: String,
}

/// The server side of TLS on one listener.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    listener: Listener,
    failures: Arc<HandshakeFailures>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("listener", &self.listener).finish_non_exhaustive()
    }
}

impl ServerTls {
    pub fn new(config: Arc<ServerConfig>, listener: Listener, failures: Arc<HandshakeFailures>) -> Self {
        Self { acceptor: TlsAcceptor::from(config), listener, failures }
    }

    /// The handshake with `peer`; `None` (counted and logged) when it fails or
    /// takes longer than `HANDSHAKE_TIMEOUT`. With the stream comes the
    /// client's certificate identity, if it showed one.
    pub async fn accept(&self, stream: TcpStream, peer: SocketAddr) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Option<TlsPeer>)> {
        let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await;
        match outcome {
            Ok(Ok(stream)) => {
                let name = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).and_then(sluice_common::tls::peer_name);
                Some((stream, name.map(|name| TlsPeer { name })))
            }
            Ok(Err(e)) => {
                self.failures.record(self.listener, peer, &e);
                None
            }
            Err(_) => {
                self.failures.record(self.listener, peer, &format!("no handshake within {HANDSHAKE_TIMEOUT:?}"));
                None
            }
        }
    }
}

/// Both sides of mutual TLS on Raft links: the acceptor requires a client
/// certificate from the CA, the dialer shows its own and checks the peer's.
#[derive(Clone)]
pub struct RaftTls {
    pub server: ServerTls,
    connector: TlsConnector,
}

impl std::fmt::Debug for RaftTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftTls").finish_non_exhaustive()
    }
}

impl RaftTls {
    pub fn new(server: Arc<ServerConfig>, client: Arc<ClientConfig>, failures: Arc<HandshakeFailures>) -> Self {
        Self { server: ServerTls::new(server, Listener::Raft, failures), connector: TlsConnector::from(client) }
    }

    /// The handshake to the peer at `addr` (`host:port`): its certificate must
    /// be from the CA and name `host` (an IP or DNS name). The caller bounds
    /// how long it may take.
    pub async fn connect(&self, addr: &str, stream: TcpStream) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let host = host_of(addr);
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host:?} from the peer address {addr:?} is neither an IP nor a DNS name ({e}); use host:port addresses"))?;
        self.connector.connect(name, stream).await.map_err(|e| format!("TLS handshake failed: {e}; the peer needs a certificate from this cluster's CA naming {host}"))
    }
}

/// `host` of `host:port`, without the brackets of an IPv6 address.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{self, Body};
    use hyper::{Request, Response};
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    use sluice_common::tls::{ClientCerts, TlsFiles};
    use std::path::Path;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A CA in `dir` (ca.pem) that signs `names`' certificates (NAME.pem, NAME.key).
    fn pki(dir: &Path, names: &[&str]) {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        for name in names {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec![name.to_string(), "127.0.0.1".to_string()]).unwrap();
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
    }

    fn files(dir: &Path, name: &str, ca_dir: &Path) -> TlsFiles {
        TlsFiles { flag: "--tls", cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")), ca: ca_dir.join("ca.pem") }
    }

    /// `GET /` over TLS as `client` shows it; the answer's body, or the error.
    async fn get(addr: SocketAddr, client: Arc<ClientConfig>) -> Result<String, std::io::Error> {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(client).connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await?;
        tls.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await?;
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await?;
        Ok(answer.rsplit("\r\n\r\n").next().unwrap_or_default().to_string())
    }

    #[tokio::test]
    async fn the_api_names_verified_clients_serves_anonymous_ones_and_refuses_other_cas() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
        pki(&ours, &["coord-1", "agent-1"]);
        pki(&theirs, &["rogue"]);
        let failures = Arc::new(HandshakeFailures::default());
        let server = ServerTls::new(files(&ours, "coord-1", &ours).server_config(ClientCerts::Optional).unwrap(), Listener::Api, failures.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = |req: Request<hyper::body::Incoming>| async move {
            let name = req.extensions().get::<TlsPeer>().map_or("anonymous".to_string(), |p| p.name.clone());
            Response::new(http::full(name)) as Response<Body>
        };
        tokio::spawn(http::serve_tls("api", listener, Some(server), handler, std::future::pending()));

        assert_eq!(get(addr, files(&ours, "agent-1", &ours).client_config().unwrap()).await.unwrap(), "agent-1");
        let anonymous = sluice_common::tls::ca_client_config("--tls-ca", &ours.join("ca.pem")).unwrap();
        assert_eq!(get(addr, anonymous).await.unwrap(), "anonymous");
        assert_eq!(failures.count(Listener::Api), 0);
        // A certificate from another CA, from a client that trusts ours: the server refuses it.
        let rogue = get(addr, files(&theirs, "rogue", &ours).client_config().unwrap()).await;
        assert!(!matches!(&rogue, Ok(body) if !body.is_empty()), "served: {rogue:?}");
        // The server may send its alert just before it counts.
        for _ in 0..100 {
            if failures.count(Listener::Api) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(failures.count(Listener::Api), 1);
    }

    #[test]
    fn hosts_of_peer_addresses() {
        assert_eq!(host_of("10.0.0.1:7071"), "10.0.0.1");
        assert_eq!(host_of("[::1]:7071"), "::1");
        assert_eq!(host_of("coord-1.example:7071"), "coord-1.example");
    }

    #[test]
    fn refusals_are_counted_per_listener_and_rendered() {
        let failures = HandshakeFailures::default();
        let peer: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        for _ in 0..3 {
            failures.record(Listener::Raft, peer, &"bad certificate");
        }
        failures.record(Listener::Api, peer, &"bad certificate");
        assert_eq!((failures.count(Listener::Raft), failures.count(Listener::Api), failures.count(Listener::Gateway)), (3, 1, 0));
        // Two of the three raft refusals came within WARN_EVERY of the first: not logged, but counted.
        assert_eq!(failures.logged.lock().unwrap()[Listener::Raft as usize].1, 2);
        let mut out = String::new();
        failures.render(&mut out);
        assert!(out.contains("sluice_tls_handshake_failures_total{listener=\"raft\"} 3\n"), "{out}");
        assert!(out.contains("sluice_tls_handshake_failures_total{listener=\"gateway\"} 0\n"), "{out}");
    }
}
