//! The `--bus` flag: one URL naming the bus and its settings, parsed and checked
//! at start-up so a typo fails there, naming the part and the fix.
//!
//! ```text
//! inproc[?capacity=100000&max_payload_bytes=1048576]
//! kafka://host:port[,host:port...][?prefix=sluice&partitions=3&replication=1&linger_ms=20
//!                                   &compression=lz4&idempotence=true&queue_messages=100000...]
//! mqtt://[user:pass@]host:port[?client_id=..&keepalive_secs=30&inflight=100&prefix=..]
//! mqtts://[user:pass@]host:port[?ca=/path/ca.pem&cert=/path/client.pem&key=/path/client.key...]
//! ```
//! Every bus also takes `prefix`, `publish_timeout_ms` and `max_payload_bytes`.
//! MQTT credentials not in the URL come from `SLUICE_BUS_USERNAME` and
//! `SLUICE_BUS_PASSWORD` (so the password need not appear in a process list).

use crate::BusError;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Environment variables consulted for MQTT credentials absent from the URL.
pub const USERNAME_ENV: &str = "SLUICE_BUS_USERNAME";
pub const PASSWORD_ENV: &str = "SLUICE_BUS_PASSWORD";

/// A parsed `--bus` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusUrl {
    InProcess(InProcessConfig),
    Kafka(KafkaConfig),
    Mqtt(MqttConfig),
}

/// Settings every bus shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// First part of every wire topic name, so several installations can share a broker.
    pub prefix: String,
    /// How long a publish may wait for the broker before its ack fails.
    pub publish_timeout: Duration,
    /// Largest payload accepted, in bytes.
    pub max_payload: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { prefix: "sluice".into(), publish_timeout: Duration::from_secs(10), max_payload: 1 << 20 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InProcessConfig {
    /// Messages each group may hold (queued plus delivered and not yet processed).
    pub capacity: usize,
    pub max_payload: usize,
}

impl Default for InProcessConfig {
    fn default() -> Self {
        InProcessConfig { capacity: 100_000, max_payload: Settings::default().max_payload }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    pub settings: Settings,
    /// Partitions of each topic created at connect.
    pub partitions: i32,
    pub replication: i32,
    /// How long the producer waits to fill a batch.
    pub linger: Duration,
    pub compression: Compression,
    /// Idempotent producer: no duplicates or reordering from the producer's own
    /// retries. Needs the broker to support InitProducerId (tansu 0.6 does).
    pub idempotence: bool,
    /// Messages the producer may hold unsent before publishes fail with `Full`.
    pub queue_messages: usize,
}

impl KafkaConfig {
    pub fn new(brokers: Vec<String>) -> Self {
        KafkaConfig {
            brokers,
            settings: Settings::default(),
            partitions: 3,
            replication: 1,
            linger: Duration::from_millis(20),
            compression: Compression::Lz4,
            idempotence: true,
            queue_messages: 100_000,
        }
    }

    /// The bootstrap list, as librdkafka takes it and messages show it.
    pub fn addr(&self) -> String {
        self.brokers.join(",")
    }
}

/// Producer batch compression (the codecs bundled librdkafka has without extra libraries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
}

impl Compression {
    const NAMES: [(&'static str, Compression); 4] = [("none", Compression::None), ("gzip", Compression::Gzip), ("snappy", Compression::Snappy), ("lz4", Compression::Lz4)];

    pub fn as_str(self) -> &'static str {
        Self::NAMES.iter().find(|(_, c)| *c == self).map(|(n, _)| *n).unwrap_or("none")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    /// Set for `mqtts://`.
    pub tls: Option<TlsFiles>,
    pub credentials: Option<Credentials>,
    /// Client id of the publishing connection (default: the node id); a group's
    /// subscription uses `{client_id}.{group}`.
    pub client_id: Option<String>,
    pub keepalive: Duration,
    /// Publishes sent and not yet acknowledged, at most.
    pub inflight: u16,
    pub settings: Settings,
}

impl MqttConfig {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        MqttConfig { host: host.into(), port, tls: None, credentials: None, client_id: None, keepalive: Duration::from_secs(30), inflight: 100, settings: Settings::default() }
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// PEM files for `mqtts://`; without `ca`, the system's roots are trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    /// Client certificate and key, for brokers that require client certificates.
    pub client: Option<(PathBuf, PathBuf)>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<hidden>").finish()
    }
}

const COMMON_KEYS: [&str; 3] = ["prefix", "publish_timeout_ms", "max_payload_bytes"];
const KAFKA_KEYS: [&str; 6] = ["partitions", "replication", "linger_ms", "compression", "idempotence", "queue_messages"];
const MQTT_KEYS: [&str; 3] = ["client_id", "keepalive_secs", "inflight"];
const MQTTS_KEYS: [&str; 3] = ["ca", "cert", "key"];
const FORMS: &str = "use inproc, kafka://host:port[,host:port], mqtt://host:port or mqtts://host:port";

impl BusUrl {
    /// Parses `input`, taking MQTT credentials missing from it from the environment.
    pub fn parse(input: &str) -> Result<Self, BusError> {
        Self::parse_with_env(input, |name| std::env::var(name).ok())
    }

    /// Parses `input`, looking up environment variables with `env` (tests pass a map).
    pub fn parse_with_env(input: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, BusError> {
        let input = input.trim();
        let (scheme, rest) = match input.split_once("://") {
            Some(split) => split,
            None if input.starts_with("inproc") => ("inproc", &input["inproc".len()..]),
            None => return Err(BusError::url(format!("{input:?}"), "has no scheme", FORMS)),
        };
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let location = location.strip_suffix('/').unwrap_or(location);
        if location.contains('/') {
            return Err(BusError::url(format!("path in {location:?}"), "is not used", "remove it; settings go in the query (?prefix=...)"));
        }
        let (userinfo, hosts) = match location.rsplit_once('@') {
            Some((user, hosts)) => (Some(user), hosts),
            None => (None, location),
        };
        let mut query = Query::parse(query)?;
        let url = match scheme {
            "inproc" => {
                if !hosts.is_empty() || userinfo.is_some() {
                    return Err(BusError::url(format!("{location:?}"), "is not used by the in-process bus", "write just inproc"));
                }
                query.allow(&["capacity", "max_payload_bytes"])?;
                let defaults = InProcessConfig::default();
                BusUrl::InProcess(InProcessConfig {
                    capacity: query.number("capacity", 1..=100_000_000, defaults.capacity)?,
                    max_payload: query.number("max_payload_bytes", 1..=MAX_PAYLOAD_CAP, defaults.max_payload)?,
                })
            }
            "kafka" => {
                if userinfo.is_some() {
                    return Err(BusError::url("user:pass@", "is not supported for Kafka (this build has no SASL or TLS)", "remove it and secure the broker's network instead"));
                }
                query.allow(&[&COMMON_KEYS[..], &KAFKA_KEYS[..]].concat())?;
                let brokers = hosts.split(',').map(|h| host_port(h, 9092)).collect::<Result<Vec<_>, _>>()?;
                let mut c = KafkaConfig::new(brokers.into_iter().map(|(h, p)| format!("{h}:{p}")).collect());
                c.settings = query.settings()?;
                c.partitions = query.number("partitions", 1..=10_000, c.partitions)?;
                c.replication = query.number("replication", 1..=100, c.replication)?;
                c.linger = Duration::from_millis(query.number("linger_ms", 0..=10_000, c.linger.as_millis() as u64)?);
                c.compression = query.compression(c.compression)?;
                c.idempotence = query.boolean("idempotence", c.idempotence)?;
                c.queue_messages = query.number("queue_messages", 1..=10_000_000, c.queue_messages)?;
                if c.linger >= c.settings.publish_timeout {
                    return Err(BusError::url("linger_ms", "is not below publish_timeout_ms", "lower linger_ms (a batch must be sent before its messages time out)"));
                }
                BusUrl::Kafka(c)
            }
            "mqtt" | "mqtts" => {
                let tls = scheme == "mqtts";
                if tls {
                    query.allow(&[&COMMON_KEYS[..], &MQTT_KEYS[..], &MQTTS_KEYS[..]].concat())?;
                } else {
                    query.allow(&[&COMMON_KEYS[..], &MQTT_KEYS[..]].concat())?;
                }
                if hosts.contains(',') {
                    return Err(BusError::url(format!("{hosts:?}"), "names several brokers", "MQTT takes one broker: keep one host:port"));
                }
                let (host, port) = host_port(hosts, if tls { 8883 } else { 1883 })?;
                let mut c = MqttConfig::new(host, port);
                c.settings = query.settings()?;
                c.credentials = credentials(userinfo, &env)?;
                c.client_id = query.take("client_id").map(|id| check_client_id(&id).map(|()| id)).transpose()?;
                c.keepalive = Duration::from_secs(query.number("keepalive_secs", 1..=3600, c.keepalive.as_secs())?);
                c.inflight = query.number("inflight", 1..=1000, c.inflight)?;
                if tls {
                    c.tls = Some(query.tls_files()?);
                }
                BusUrl::Mqtt(c)
            }
            other => return Err(BusError::url(format!("scheme {other:?}"), "is unknown", FORMS)),
        };
        Ok(url)
    }
}

impl FromStr for BusUrl {
    type Err = BusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BusUrl::parse(s)
    }
}

/// Shows where the bus is, without settings or password (for logs).
impl fmt::Display for BusUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusUrl::InProcess(_) => f.write_str("inproc"),
            BusUrl::Kafka(c) => write!(f, "kafka://{}", c.addr()),
            BusUrl::Mqtt(c) => {
                let scheme = if c.tls.is_some() { "mqtts" } else { "mqtt" };
                // Encoded as in a URL, so a name holding ':' or '@' reads (and parses) as the same name.
                let user = c.credentials.as_ref().map(|c| format!("{}@", utf8_percent_encode(&c.username, USERINFO))).unwrap_or_default();
                write!(f, "{scheme}://{user}{}", c.addr())
            }
        }
    }
}

/// What a user name must not hold unencoded in the authority part of a URL.
const USERINFO: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b':').add(b'@').add(b'/').add(b'?').add(b'#').add(b'[').add(b']').add(b',');

/// Payloads above this are refused whatever the URL says: brokers' own limits
/// (Kafka's message.max.bytes) sit well below it.
const MAX_PAYLOAD_CAP: usize = 64 << 20;

fn host_port(s: &str, default_port: u16) -> Result<(String, u16), BusError> {
    let fix = "write host:port, e.g. 127.0.0.1:9092";
    // A bracketed IPv6 address has colons of its own.
    let (host, port) = match s.rsplit_once(':') {
        Some((host, port)) if !port.ends_with(']') => (host, Some(port)),
        _ => (s, None),
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '@') {
        return Err(BusError::url(format!("host {s:?}"), "is empty or malformed", fix));
    }
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| BusError::url(format!("port {p:?}"), "is not a port number (1-65535)", fix))?,
    };
    Ok((host.to_string(), port))
}

fn credentials(userinfo: Option<&str>, env: &impl Fn(&str) -> Option<String>) -> Result<Option<Credentials>, BusError> {
    let (mut user, mut pass) = (None, None);
    if let Some(info) = userinfo {
        let (u, p) = match info.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (info, None),
        };
        user = Some(decode("user name", u)?);
        pass = p.map(|p| decode("password", p)).transpose()?;
    }
    let user = user.filter(|u| !u.is_empty()).or_else(|| env(USERNAME_ENV));
    let pass = pass.or_else(|| env(PASSWORD_ENV));
    match (user, pass) {
        (Some(username), password) => Ok(Some(Credentials { username, password: password.unwrap_or_default() })),
        (None, Some(_)) => Err(BusError::url("password", "is given without a user name", format!("write user:pass@host or set {USERNAME_ENV}"))),
        (None, None) => Ok(None),
    }
}

fn check_client_id(id: &str) -> Result<(), BusError> {
    if id.is_empty() || id.len() > 100 || id.chars().any(|c| c.is_control() || c == '/') {
        return Err(BusError::url(format!("client_id={id:?}"), "is not a usable client id", "use 1-100 characters without '/'"));
    }
    Ok(())
}

fn decode(part: &str, s: &str) -> Result<String, BusError> {
    percent_decode_str(s).decode_utf8().map(|s| s.into_owned()).map_err(|_| BusError::url(part, "is not UTF-8 once percent-decoded", "percent-encode it from UTF-8 text"))
}

/// The `?k=v&...` settings, each taken once by whoever reads it.
struct Query(BTreeMap<String, String>);

impl Query {
    fn parse(query: &str) -> Result<Self, BusError> {
        let mut map = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| BusError::url(format!("setting {pair:?}"), "has no value", "write name=value"))?;
            let k = decode("setting name", k)?;
            if map.insert(k.clone(), decode(&k, v)?).is_some() {
                return Err(BusError::url(format!("setting {k}"), "is given twice", "keep one"));
            }
        }
        Ok(Query(map))
    }

    fn allow(&self, known: &[&str]) -> Result<(), BusError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(BusError::url(format!("setting {k:?}"), "is unknown for this bus", format!("use one of: {}", known.join(", ")))),
            None => Ok(()),
        }
    }

    fn take(&mut self, key: &str) -> Option<String> {
        self.0.remove(key)
    }

    fn number<T>(&mut self, key: &str, range: std::ops::RangeInclusive<T>, default: T) -> Result<T, BusError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        let Some(v) = self.take(key) else { return Ok(default) };
        v.parse::<T>().ok().filter(|n| range.contains(n)).ok_or_else(|| {
            BusError::url(format!("{key}={v}"), format!("is not a number from {} to {}", range.start(), range.end()), format!("omit it for the default ({default})"))
        })
    }

    fn boolean(&mut self, key: &str, default: bool) -> Result<bool, BusError> {
        match self.take(key).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(v) => Err(BusError::url(format!("{key}={v}"), "is not a boolean", "write true or false")),
        }
    }

    fn compression(&mut self, default: Compression) -> Result<Compression, BusError> {
        let Some(v) = self.take("compression") else { return Ok(default) };
        Compression::NAMES.iter().find(|(n, _)| *n == v).map(|(_, c)| *c).ok_or_else(|| {
            let names: Vec<_> = Compression::NAMES.iter().map(|(n, _)| *n).collect();
            BusError::url(format!("compression={v}"), "is not a codec this build has", format!("use one of: {}", names.join(", ")))
        })
    }

    fn settings(&mut self) -> Result<Settings, BusError> {
        let d = Settings::default();
        let prefix = self.take("prefix").unwrap_or(d.prefix);
        if prefix.is_empty() || prefix.len() > 100 || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(BusError::url(format!("prefix={prefix}"), "is not a usable topic prefix", "use 1-100 letters, digits, '-' or '_'"));
        }
        Ok(Settings {
            prefix,
            publish_timeout: Duration::from_millis(self.number("publish_timeout_ms", 100..=600_000, d.publish_timeout.as_millis() as u64)?),
            max_payload: self.number("max_payload_bytes", 1..=MAX_PAYLOAD_CAP, d.max_payload)?,
        })
    }

    fn tls_files(&mut self) -> Result<TlsFiles, BusError> {
        let ca = self.take("ca").map(PathBuf::from);
        let client = match (self.take("cert"), self.take("key")) {
            (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
            (None, None) => None,
            _ => return Err(BusError::url("cert/key", "is given without the other", "give both cert= and key= (PEM files) or neither")),
        };
        Ok(TlsFiles { ca, client })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<BusUrl, BusError> {
        BusUrl::parse_with_env(s, |_| None)
    }

    fn problem(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn inproc_takes_its_capacity() {
        assert_eq!(parse("inproc").unwrap(), BusUrl::InProcess(InProcessConfig::default()));
        assert_eq!(parse("inproc://").unwrap(), BusUrl::InProcess(InProcessConfig::default()));
        let BusUrl::InProcess(c) = parse("inproc?capacity=10").unwrap() else { panic!() };
        assert_eq!(c.capacity, 10);
        assert!(problem("inproc://host:1").contains("write just inproc"));
    }

    #[test]
    fn kafka_takes_brokers_and_settings() {
        let BusUrl::Kafka(c) = parse("kafka://a:9092,b:9093?prefix=p1&partitions=6&linger_ms=50&compression=gzip&idempotence=false").unwrap() else { panic!() };
        assert_eq!(c.brokers, ["a:9092", "b:9093"]);
        assert_eq!((c.settings.prefix.as_str(), c.partitions, c.linger.as_millis(), c.compression, c.idempotence), ("p1", 6, 50, Compression::Gzip, false));
        let BusUrl::Kafka(d) = parse("kafka://k").unwrap() else { panic!() };
        assert_eq!(d, KafkaConfig::new(vec!["k:9092".into()]));
        assert_eq!(d.settings.publish_timeout, Duration::from_secs(10));
    }

    #[test]
    fn mqtt_takes_credentials_from_the_url_or_the_environment() {
        let BusUrl::Mqtt(c) = parse("mqtt://u%40x:p%3Aw@broker:1884?client_id=n1&keepalive_secs=5").unwrap() else { panic!() };
        assert_eq!(c.credentials, Some(Credentials { username: "u@x".into(), password: "p:w".into() }));
        assert_eq!((c.host.as_str(), c.port, c.client_id.as_deref(), c.keepalive.as_secs()), ("broker", 1884, Some("n1"), 5));
        let env = |k: &str| (k == PASSWORD_ENV).then(|| "secret".to_string());
        let BusUrl::Mqtt(c) = BusUrl::parse_with_env("mqtt://u@broker", env).unwrap() else { panic!() };
        assert_eq!(c.credentials.unwrap().password, "secret");
        assert!(!format!("{:?}", Credentials { username: "u".into(), password: "secret".into() }).contains("secret"));
        assert!(BusUrl::parse_with_env("mqtt://broker", env).unwrap_err().to_string().contains(USERNAME_ENV));
    }

    #[test]
    fn mqtts_takes_pem_files() {
        let BusUrl::Mqtt(c) = parse("mqtts://broker?ca=/etc/ca.pem&cert=/c.pem&key=/k.pem").unwrap() else { panic!() };
        assert_eq!(c.port, 8883);
        assert_eq!(c.tls, Some(TlsFiles { ca: Some("/etc/ca.pem".into()), client: Some(("/c.pem".into(), "/k.pem".into())) }));
        assert!(problem("mqtts://broker?cert=/c.pem").contains("give both cert= and key="));
        assert!(problem("mqtt://broker?ca=/x").contains("unknown for this bus"), "TLS files need mqtts://");
    }

    #[test]
    fn mistakes_name_the_part_and_the_fix() {
        assert!(problem("localhost:9092").contains("has no scheme"));
        assert!(problem("amqp://x").contains("scheme \"amqp\" is unknown"));
        assert!(problem("kafka://x:port").contains("port \"port\" is not a port number"));
        assert!(problem("kafka://x?partitons=3").contains("use one of: prefix,"));
        assert!(problem("kafka://x?partitions=0").contains("partitions=0 is not a number from 1 to 10000"));
        assert!(problem("kafka://x?compression=zstd").contains("use one of: none, gzip, snappy, lz4"));
        assert!(problem("kafka://u:p@x").contains("not supported for Kafka"));
        assert!(problem("kafka://x?prefix=a.b").contains("prefix=a.b is not a usable topic prefix"));
        assert!(problem("kafka://x?linger_ms=5000&publish_timeout_ms=1000").contains("lower linger_ms"));
        assert!(problem("mqtt://a:1,b:2").contains("MQTT takes one broker"));
        assert!(problem("mqtt://a/x").contains("remove it"));
        assert!(problem("mqtt://a?prefix=1&prefix=2").contains("given twice"));
    }

    #[test]
    fn display_hides_the_password() {
        let url = parse("mqtts://u:secret@b:8883").unwrap();
        assert_eq!(url.to_string(), "mqtts://u@b:8883");
        // A user name with URL delimiters prints encoded, so the printed URL names the same user.
        let url = parse("mqtt://%3Aw%40x:p@b").unwrap();
        assert_eq!(url.to_string(), "mqtt://%3Aw%40x@b:1883");
        assert_eq!(parse("kafka://a:1,b:2").unwrap().to_string(), "kafka://a:1,b:2");
    }
}
