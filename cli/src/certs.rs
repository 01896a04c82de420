//! `sluice certs`: the certificates of a cluster's mutual TLS.
//!
//! `init` makes the cluster CA (`ca.pem`, `ca.key`); `issue` makes a node's
//! certificate and key signed by it, with the node's name as its first DNS
//! name (the identity coordinators see) and the IPs and names peers reach it
//! at. Every certificate serves both ends of a connection (serverAuth and
//! clientAuth), so one file pair per host does for its coordinator and its
//! agent alike. Keys are ECDSA P-256, written readable by their owner only.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The CA's subject: `issue` rebuilds the issuer from it and the CA's key.
const CA_NAME: &str = "Sluice cluster CA";
const DAY: Duration = Duration::from_secs(24 * 3600);
/// How long the CA is valid: issue a new CA (and certificates) before then.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a node certificate is valid.
const NODE_VALIDITY: Duration = Duration::from_secs(2 * 365 * 24 * 3600);

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Create the cluster CA: DIR/ca.pem (give it to every node) and DIR/ca.key (keep it off the nodes).
    Init {
        /// Where to write ca.pem and ca.key (created if missing).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a certificate and key for a node (a coordinator, an agent, or both on one host).
    Issue(IssueArgs),
}

#[derive(Args, Debug, Clone)]
pub struct IssueArgs {
    /// The directory `sluice certs init` wrote ca.pem and ca.key to.
    #[arg(long)]
    pub ca_dir: PathBuf,
    /// The node's name, a DNS name such as coord-1 or agent-1: its identity, and the file names.
    #[arg(long)]
    pub name: String,
    /// An IP address peers reach the node at (its --advertise-raft and API host; repeatable).
    #[arg(long = "ip")]
    pub ips: Vec<String>,
    /// Another DNS name peers reach the node by (repeatable).
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// Where to write NAME.pem and NAME.key (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(command: CertsCommand) -> Result<ExitCode> {
    match command {
        CertsCommand::Init { dir } => {
            let (cert, key) = init(&dir)?;
            println!("wrote {} (copy it to every node) and {} (keep it secret, off the nodes)", cert.display(), key.display());
        }
        CertsCommand::Issue(args) => {
            let (cert, key) = issue(&args)?;
            println!("wrote {} and {} (copy both to the node {:?}, with ca.pem)", cert.display(), key.display(), args.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates the cluster CA in `dir`; returns the paths of its certificate and key.
pub fn init(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    for path in [&cert_path, &key_path] {
        if path.exists() {
            bail!(
                "{} already exists: this directory has a CA; remove ca.pem and ca.key first, or choose another --dir (a new CA invalidates every certificate issued by the old one)",
                path.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("--dir {}: cannot create it; choose a writable directory", dir.display()))?;
    let key = KeyPair::generate().context("generating the CA's key")?;
    let cert = ca_params(now()).self_signed(&key).context("signing the CA certificate")?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    Ok((cert_path, key_path))
}

/// Issues a certificate and key for `args.name`; returns their paths.
pub fn issue(args: &IssueArgs) -> Result<(PathBuf, PathBuf)> {
    let name = dns_name("--name", &args.name)?;
    let mut sans = vec![SanType::DnsName(name.clone())];
    for dns in &args.dns {
        sans.push(SanType::DnsName(dns_name("--dns", dns)?));
    }
    for ip in &args.ips {
        let ip: IpAddr = ip.trim().parse().map_err(|_| anyhow::anyhow!("--ip {ip:?}: not an IP address; give one such as 10.0.0.1 (repeat --ip for several)"))?;
        sans.push(SanType::IpAddress(ip));
    }
    let (ca_cert_path, ca_key_path) = (args.ca_dir.join("ca.pem"), args.ca_dir.join("ca.key"));
    if !ca_cert_path.is_file() || !ca_key_path.is_file() {
        bail!("--ca-dir {}: no ca.pem and ca.key there; create the CA with `sluice certs init --dir {}` first", args.ca_dir.display(), args.ca_dir.display());
    }
    let ca_key_pem = std::fs::read_to_string(&ca_key_path).with_context(|| format!("reading {}", ca_key_path.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).with_context(|| format!("{}: not a private key made by `sluice certs init`", ca_key_path.display()))?;
    // rcgen signs with the issuer's subject and key, which is all a CA made by
    // `init` is; the chain is checked against the real ca.pem below.
    let issuer = ca_params(now()).self_signed(&ca_key).context("loading the CA")?;

    let (cert_path, key_path) = (args.out.join(format!("{}.pem", args.name)), args.out.join(format!("{}.key", args.name)));
    for path in [&cert_path, &key_path] {
        if path.exists() {
            bail!("{} already exists: remove it to issue a new certificate for {:?}, or choose another --out", path.display(), args.name);
        }
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&args.name);
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    valid_for(&mut params, now(), NODE_VALIDITY);
    let key = KeyPair::generate().context("generating the node's key")?;
    let cert = params.signed_by(&key, &issuer, &ca_key).context("signing the node certificate")?;
    check_chain(cert.der(), &ca_cert_path)?;

    std::fs::create_dir_all(&args.out).with_context(|| format!("--out {}: cannot create it; choose a writable directory", args.out.display()))?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    Ok((cert_path, key_path))
}

fn ca_params(now: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(CA_NAME);
    // Signs node certificates only, no intermediate CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    valid_for(&mut params, now, CA_VALIDITY);
    params
}

/// Valid from a day before `now` (for hosts whose clocks are behind) for `lasts`.
fn valid_for(params: &mut CertificateParams, now: Duration, lasts: Duration) {
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + now.saturating_sub(DAY);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + now + lasts;
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn dns_name(flag: &str, name: &str) -> Result<rcgen::Ia5String> {
    let valid = rustls::pki_types::DnsName::try_from(name).is_ok() && name.parse::<IpAddr>().is_err();
    if !valid {
        bail!("{flag} {name:?}: not a DNS name; use letters, digits, '-' and '.', such as coord-1 or agent-1.example (IP addresses go in --ip)");
    }
    rcgen::Ia5String::try_from(name).with_context(|| format!("{flag} {name:?}: not a DNS name"))
}

/// Checks that `cert` chains to the CA in `ca`, as every peer will: a ca.key
/// that is not ca.pem's key fails here rather than on every connection.
fn check_chain(cert: &CertificateDer<'_>, ca: &Path) -> Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    for ca_cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
        roots.add(ca_cert.with_context(|| format!("{}: not a PEM certificate", ca.display()))?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), sluice_common::tls::provider()).build()?;
    verifier
        .verify_client_cert(cert, &[], UnixTime::now())
        .map_err(|e| anyhow::anyhow!("the new certificate does not check against {} ({e}): ca.pem and ca.key must be the pair `sluice certs init` wrote", ca.display()))?;
    Ok(())
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}; check the directory is writable and the file does not exist", path.display()))?;
    file.write_all(contents).with_context(|| format!("writing {}", path.display()))
}

fn now() -> Duration {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::tls::{ClientCerts, TlsFiles};

    fn args(ca_dir: &Path, name: &str, ips: &[&str], out: &Path) -> IssueArgs {
        IssueArgs { ca_dir: ca_dir.into(), name: name.into(), ips: ips.iter().map(|s| s.to_string()).collect(), dns: vec![], out: out.into() }
    }

    #[test]
    fn issued_certificates_load_as_tls_configurations_and_name_their_node() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init(&ca).unwrap();
        let (cert, key) = issue(&args(&ca, "coord-1", &["127.0.0.1"], dir.path())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(ca.join("ca.key")).unwrap().permissions().mode() & 0o777, 0o600);
        let files = TlsFiles { flag: "--tls", cert: cert.clone(), key, ca: ca.join("ca.pem") };
        files.server_config(ClientCerts::Required).unwrap();
        files.client_config().unwrap();
        let der = CertificateDer::from_pem_file(&cert).unwrap();
        assert_eq!(sluice_common::tls::peer_name(&der).as_deref(), Some("coord-1"));
    }

    #[test]
    fn mistakes_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let e = issue(&args(&ca, "n1", &[], dir.path())).unwrap_err().to_string();
        assert!(e.contains("sluice certs init --dir"), "{e}");
        init(&ca).unwrap();
        let e = init(&ca).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        let e = issue(&args(&ca, "n1", &["10.0.0.300"], dir.path())).unwrap_err().to_string();
        assert!(e.contains("--ip \"10.0.0.300\": not an IP address"), "{e}");
        let e = issue(&args(&ca, "not a name", &[], dir.path())).unwrap_err().to_string();
        assert!(e.contains("--name \"not a name\": not a DNS name"), "{e}");
        issue(&args(&ca, "n1", &[], dir.path())).unwrap();
        let e = issue(&args(&ca, "n1", &[], dir.path())).unwrap_err().to_string();
        assert!(e.contains("n1.pem already exists"), "{e}");
    }

    #[test]
    fn a_certificate_with_another_nodes_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init(&ca).unwrap();
        let (cert, _) = issue(&args(&ca, "a", &[], dir.path())).unwrap();
        let (_, other_key) = issue(&args(&ca, "b", &[], dir.path())).unwrap();
        let files = TlsFiles { flag: "--tls", cert, key: other_key, ca: ca.join("ca.pem") };
        let e = files.client_config().unwrap_err().to_string();
        assert!(e.contains("give a certificate and its own key"), "{e}");
    }

    #[test]
    fn a_ca_key_that_is_not_the_cas_is_caught_when_issuing() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        init(&one).unwrap();
        init(&two).unwrap();
        std::fs::remove_file(one.join("ca.key")).unwrap();
        std::fs::copy(two.join("ca.key"), one.join("ca.key")).unwrap();
        let e = issue(&args(&one, "n1", &[], dir.path())).unwrap_err().to_string();
        assert!(e.contains("must be the pair"), "{e}");
    }
}
