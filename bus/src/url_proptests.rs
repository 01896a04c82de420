//! Property tests of the `--bus` URL parser, seeded with `SplitMix64` so a
//! failure replays: random and mutated URLs never panic and every refusal
//! names the part and the fix; URLs generated from valid parts parse to
//! those parts, and what `Display` prints (the address) parses back to it.

use crate::url::{BusUrl, Compression};
use crate::BusError;
use sluice_common::rng::SplitMix64;
use std::time::Duration;

const PIECES: &[&str] = &[
    "inproc",
    "kafka://",
    "mqtt://",
    "mqtts://",
    "amqp://",
    "://",
    ":",
    "::",
    "@",
    "@@",
    "/",
    "?",
    "&",
    "=",
    ",",
    "%",
    "%2",
    "%40",
    "%3A",
    "%FF",
    "%C3%A9",
    "[",
    "]",
    "[::1]",
    "localhost",
    "a",
    "0",
    "1",
    "65535",
    "65536",
    "-1",
    "18446744073709551616",
    "prefix",
    "partitions",
    "linger_ms",
    "publish_timeout_ms",
    "compression",
    "lz4",
    "zstd",
    "idempotence",
    "client_id",
    "ca",
    "cert",
    "key",
    "capacity",
    "max_payload_bytes",
    "keepalive_secs",
    "inflight",
    "é",
    "🦀",
    "\u{0}",
    " ",
    "\t",
];

fn mutate(rng: &mut SplitMix64, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(chars.len() as u64 + 1) as usize;
        let span = (1 + rng.below(6) as usize).min(chars.len() - at);
        match rng.below(3) {
            0 => drop(chars.splice(at..at, rng.pick(PIECES).chars().collect::<Vec<_>>())),
            1 => drop(chars.drain(at..at + span)),
            _ => drop(chars.splice(at..at + span, rng.pick(PIECES).chars().collect::<Vec<_>>())),
        }
    }
    chars.into_iter().collect()
}

fn host(rng: &mut SplitMix64) -> String {
    rng.pick(&["localhost", "127.0.0.1", "broker-1.example.com", "[::1]", "k"]).to_string()
}

fn parse(s: &str) -> Result<BusUrl, BusError> {
    BusUrl::parse_with_env(s, |_| None)
}

#[test]
fn generated_urls_parse_to_their_parts_and_print_back() {
    let mut rng = SplitMix64::new(0x5eed_2001);
    for _ in 0..5_000 {
        let (h, port) = (host(&mut rng), 1 + rng.below(65535) as u16);
        let prefix = format!("p{}", rng.below(1000));
        let timeout = 1000 + rng.below(60_000);
        match rng.below(3) {
            0 => {
                let capacity = 1 + rng.below(100_000_000) as usize;
                let BusUrl::InProcess(c) = parse(&format!("inproc?capacity={capacity}")).unwrap() else { panic!("not inproc") };
                assert_eq!(c.capacity, capacity);
            }
            1 => {
                let (h2, p2) = (host(&mut rng), 1 + rng.below(65535) as u16);
                let linger = rng.below(timeout.min(10_001));
                let compression = rng.pick(&[Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4]);
                let url = format!("kafka://{h}:{port},{h2}:{p2}?prefix={prefix}&publish_timeout_ms={timeout}&linger_ms={linger}&compression={}", compression.as_str());
                let parsed = parse(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
                let BusUrl::Kafka(c) = &parsed else { panic!("not kafka") };
                assert_eq!(c.brokers, [format!("{h}:{port}"), format!("{h2}:{p2}")]);
                assert_eq!(
                    (c.settings.prefix.as_str(), c.settings.publish_timeout, c.linger, c.compression),
                    (prefix.as_str(), Duration::from_millis(timeout), Duration::from_millis(linger), compression)
                );
                // The printed address parses back to the same brokers.
                let BusUrl::Kafka(again) = parse(&parsed.to_string()).unwrap() else { panic!("not kafka") };
                assert_eq!(again.brokers, c.brokers);
            }
            _ => {
                let scheme = rng.pick(&["mqtt", "mqtts"]);
                let user = format!("u{}", rng.below(100));
                let url = format!("{scheme}://{user}:p%40ss@{h}:{port}?client_id=c{}&keepalive_secs={}", rng.below(10), 1 + rng.below(3600));
                let parsed = parse(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
                let BusUrl::Mqtt(c) = &parsed else { panic!("not mqtt") };
                assert_eq!((c.host.as_str(), c.port, c.tls.is_some()), (h.as_str(), port, scheme == "mqtts"));
                let creds = c.credentials.as_ref().unwrap();
                assert_eq!((creds.username.as_str(), creds.password.as_str()), (user.as_str(), "p@ss"));
                let printed = parsed.to_string();
                assert!(!printed.contains("p@ss") && !printed.contains("p%40ss"), "{printed} shows the password");
                let BusUrl::Mqtt(again) = parse(&printed).unwrap() else { panic!("not mqtt") };
                assert_eq!((again.host, again.port, again.credentials.map(|c| c.username)), (c.host.clone(), c.port, Some(user)));
            }
        }
    }
}

#[test]
fn random_and_mutated_urls_never_panic_and_name_the_part() {
    let mut rng = SplitMix64::new(0x5eed_2002);
    let seeds = [
        "inproc?capacity=10",
        "kafka://a:9092,b:9093?prefix=p1&partitions=6&linger_ms=50&compression=gzip",
        "mqtts://u:p%3Aw@broker:8883?ca=/etc/ca.pem&cert=/c.pem&key=/k.pem&client_id=n1",
    ];
    let mut accepted = 0;
    for _ in 0..20_000 {
        let seed = rng.pick(&seeds);
        let text = if rng.chance(0.2) { (0..rng.below(10)).map(|_| rng.pick(PIECES)).collect() } else { mutate(&mut rng, seed) };
        match parse(&text) {
            Ok(url) => {
                accepted += 1;
                // An accepted URL's address is printable and parses again.
                assert!(parse(&url.to_string()).is_ok(), "{text:?} printed as {url}");
            }
            Err(BusError::InvalidUrl { part, problem, fix }) => assert!(!part.is_empty() && !problem.is_empty() && !fix.is_empty(), "{text:?}"),
            Err(other) => panic!("{text:?}: a URL error is InvalidUrl, not {other}"),
        }
    }
    assert!(accepted > 500, "only {accepted} accepted");
}
