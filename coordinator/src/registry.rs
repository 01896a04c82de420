//! What may run: the cluster's allow-list of image registries, and pinning an
//! image reference to the manifest digest it names at deploy time, through the
//! registry's HTTP API (distribution v2), so that what runs is what was
//! deployed even if the tag is pushed again later.

use crate::http::ApiError;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sluice_common::connector::Connector;
use sluice_common::registry_auth::{self, RegistryCredentials};
use sluice_common::spec::{is_digest, ImageParts};
use sluice_common::ImageRef;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info};

/// Most registries an allow-list holds.
pub const MAX_ALLOWED: usize = 32;
/// How long one question to a registry may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest manifest read when the registry does not say its digest in a header.
const MAX_MANIFEST: usize = 4 * 1024 * 1024;
/// Every manifest kind a multi-platform or single image may have; the digest of
/// whichever the registry serves is what `docker pull name@digest` fetches.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";

/// How a coordinator treats deployed images.
#[derive(Debug, Clone)]
pub struct ImagesConfig {
    /// Ask each deployed image's registry for its digest and run exactly that.
    pub pin: bool,
    /// Registries spoken to over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// What is sent to registries that ask for credentials (`--registry-credentials`).
    pub credentials: Vec<RegistryCredentials>,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self { pin: true, insecure_registries: Vec::new(), credentials: Vec::new() }
    }
}

/// Checks `entry` as an allow-list entry: `host[:port]`, lowercase.
pub fn validate_entry(entry: &str) -> Result<(), String> {
    let (host, port) = match entry.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (entry, None),
    };
    let host_ok = !host.is_empty() && host.len() <= 253 && host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(format!("{entry:?} is not a registry: use host[:port] in lowercase, e.g. registry.example.com or 127.0.0.1:5000 (docker.io for Docker Hub)"))
    }
}

/// Refuses an image from a registry the allow-list does not name. An empty
/// list allows every registry.
pub fn check_allowed(allowed: &[String], image: &ImageRef) -> Result<(), ApiError> {
    let registry = image.parts().registry_or_default().to_ascii_lowercase();
    if allowed.is_empty() || allowed.contains(&registry) {
        return Ok(());
    }
    Err(ApiError::invalid(
        "image",
        format!(
            "registry {registry} is not on the cluster's allow-list ({}): push the image to one of those, or an admin allows it with `sluice registries allow {registry}`",
            allowed.join(", ")
        ),
    ))
}

/// Why a digest could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("registry {registry} has no image {image}: push it first (e.g. docker push {image}), or check the name and tag")]
    NotFound { registry: String, image: String },
    #[error("registry {registry} cannot be reached ({reason}): check that it runs and that this coordinator can reach it, then deploy again")]
    Unreachable { registry: String, reason: String },
    #[error(
        "registry {registry} asks for credentials for {image}, which this coordinator does not have: give the coordinator a --registry-credentials file for {registry}, or make the repository public to the cluster's hosts"
    )]
    Unauthorized { registry: String, image: String },
    #[error("registry {registry} refused the credentials of user {username:?} for {image}: check the username and password in the --registry-credentials file for {registry}")]
    BadCredentials { registry: String, image: String, username: String },
    #[error("registry {registry} answered {status} for {image}: {said}")]
    Refused { registry: String, image: String, status: StatusCode, said: String },
}

impl From<ResolveError> for ApiError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::NotFound { .. } => ApiError::invalid("image", e.to_string()),
            _ => ApiError::new(StatusCode::BAD_GATEWAY, "registry_unavailable", e.to_string()),
        }
    }
}

/// Asks registries which manifest a reference names.
pub struct Resolver {
    client: Client<Connector, Empty<Bytes>>,
    /// Registries spoken to over plain HTTP besides loopback ones (`--insecure-registry`).
    insecure: Vec<String>,
    /// Sent as HTTP Basic auth to the registry each names (what `docker-registry` with htpasswd takes).
    credentials: Vec<RegistryCredentials>,
}

impl Resolver {
    /// A resolver trusting the system's CA certificates for `https://` registries.
    pub fn new(insecure: Vec<String>, credentials: Vec<RegistryCredentials>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        debug!(added, "system CA certificates for image registries");
        let tls = rustls::ClientConfig::builder_with_provider(sluice_common::tls::provider())
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .ok()
            .map(Arc::new);
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(4).build(Connector::new(Some(TIMEOUT), tls));
        Self { client, insecure, credentials }
    }

    /// The digest (`sha256:...`) that `image` names now. A reference with a
    /// digest is checked to exist and keeps its digest.
    pub async fn digest(&self, image: &ImageRef) -> Result<String, ResolveError> {
        let parts = image.parts();
        let registry = parts.registry_or_default().to_string();
        let url = manifest_url(&parts, self.plain_http(&registry));
        let head = self.ask(Method::HEAD, &url, image, &registry).await?;
        let digest = match head.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()) {
            Some(d) => d.to_string(),
            // Some registries say it only on GET: hash the manifest itself.
            None => {
                let got = self.ask(Method::GET, &url, image, &registry).await?;
                let body = Limited::new(got.into_body(), MAX_MANIFEST).collect().await.map_err(|e| unreachable(&registry, e.to_string()))?.to_bytes();
                let sum = ring::digest::digest(&ring::digest::SHA256, &body);
                format!("sha256:{}", sum.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
            }
        };
        if !is_digest(&digest) {
            return Err(ResolveError::Refused { registry, image: image.to_string(), status: StatusCode::OK, said: format!("a digest that is not sha256:<hex>: {digest:?}") });
        }
        if let Some(pinned) = parts.digest.filter(|d| *d != digest) {
            return Err(ResolveError::Refused { registry, image: image.to_string(), status: StatusCode::OK, said: format!("it serves {digest} for {pinned}") });
        }
        info!(image = %image, %digest, "image pinned");
        Ok(digest)
    }

    async fn ask(&self, method: Method, url: &str, image: &ImageRef, registry: &str) -> Result<hyper::Response<hyper::body::Incoming>, ResolveError> {
        let credentials = registry_auth::for_registry(&self.credentials, registry);
        let mut request = Request::builder().method(method).uri(url).header(ACCEPT, MANIFEST_TYPES);
        if let Some(c) = credentials {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
            request = request.header(AUTHORIZATION, format!("Basic {basic}"));
        }
        let request = request.body(Empty::new()).map_err(|e| unreachable(registry, e.to_string()))?;
        let response = match tokio::time::timeout(TIMEOUT, self.client.request(request)).await {
            Err(_) => return Err(unreachable(registry, format!("no answer within {TIMEOUT:?}"))),
            Ok(Err(e)) => return Err(unreachable(registry, sluice_common::connector::error_chain(&e))),
            Ok(Ok(r)) => r,
        };
        let (registry, image) = (registry.to_string(), image.to_string());
        match response.status() {
            s if s.is_success() => Ok(response),
            StatusCode::NOT_FOUND => Err(ResolveError::NotFound { registry, image }),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(match credentials {
                Some(c) => ResolveError::BadCredentials { registry, image, username: c.username.clone() },
                None => ResolveError::Unauthorized { registry, image },
            }),
            status => {
                let kind = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                Err(ResolveError::Refused { registry, image, status, said: format!("unexpected answer ({kind})") })
            }
        }
    }

    /// Loopback registries and those named insecure speak plain HTTP, as Docker allows.
    fn plain_http(&self, registry: &str) -> bool {
        let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) || self.insecure.iter().any(|r| r == registry)
    }
}

/// `http(s)://host/v2/<repository>/manifests/<digest or tag>`, with Docker Hub's names.
fn manifest_url(parts: &ImageParts<'_>, plain_http: bool) -> String {
    let (host, repository) = match parts.registry {
        None | Some("docker.io") => ("registry-1.docker.io", if parts.repository.contains('/') { parts.repository.to_string() } else { format!("library/{}", parts.repository) }),
        Some(r) => (r, parts.repository.to_string()),
    };
    let reference = parts.digest.or(parts.tag).unwrap_or("latest");
    format!("{}://{host}/v2/{repository}/manifests/{reference}", if plain_http { "http" } else { "https" })
}

fn unreachable(registry: &str, reason: String) -> ResolveError {
    ResolveError::Unreachable { registry: registry.to_string(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn manifest_urls() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(manifest_url(&image("127.0.0.1:5000/sluice/hello:v1").parts(), true), "http://127.0.0.1:5000/v2/sluice/hello/manifests/v1");
        assert_eq!(manifest_url(&image("nginx").parts(), false), "https://registry-1.docker.io/v2/library/nginx/manifests/latest");
        assert_eq!(manifest_url(&image("docker.io/grafana/grafana:11").parts(), false), "https://registry-1.docker.io/v2/grafana/grafana/manifests/11");
        assert_eq!(manifest_url(&image(&format!("r.example.com/a/b:1@{d}")).parts(), false), format!("https://r.example.com/v2/a/b/manifests/{d}"));
    }

    #[test]
    fn the_allow_list_names_registries() {
        let allowed = vec!["127.0.0.1:5000".to_string(), "docker.io".to_string()];
        assert!(check_allowed(&allowed, &image("127.0.0.1:5000/sluice/hello")).is_ok());
        assert!(check_allowed(&allowed, &image("nginx:1")).is_ok(), "no registry named is Docker Hub");
        let e = check_allowed(&allowed, &image("evil.example.com/miner:latest")).unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (StatusCode::BAD_REQUEST, Some("image")));
        assert!(e.message.contains("evil.example.com") && e.message.contains("sluice registries allow"), "{}", e.message);
        assert!(check_allowed(&[], &image("evil.example.com/miner")).is_ok(), "an empty list allows all");
        for ok in ["127.0.0.1:5000", "docker.io", "registry.example.com", "localhost:5000"] {
            assert!(validate_entry(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Registry.Example.com", "a b", "host:0", "host:99999", "http://x", "a/b"] {
            assert!(validate_entry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_and_named_registries_speak_plain_http() {
        let r = Resolver::new(vec!["10.0.0.9:5000".into()], Vec::new());
        assert!(r.plain_http("127.0.0.1:5000") && r.plain_http("localhost:5000") && r.plain_http("10.0.0.9:5000"));
        assert!(!r.plain_http("registry.example.com") && !r.plain_http("10.0.0.9:5001"));
    }
}
