//! Property tests of the parsers that read what users, agents and the bus send
//! (function specs in JSON, image references, ids, labels, bus messages),
//! seeded with [`SplitMix64`] so a failure replays, like `rules::proptests`:
//! random and mutated input never panics and errors name a field and say
//! what to do; generated valid values round-trip.

use crate::ids::{FunctionName, InstanceId, NodeId};
use crate::labels;
use crate::rng::SplitMix64;
use crate::spec::{bounds, FunctionSpec, ImageRef};
use crate::wire::{self, ContainerBatch, ContainerFigures, Envelope, Event, EventKind, GatewayBatch, HostFigures};
use serde_json::{json, Value};

/// Text pieces that are likely to upset a parser: structure, quotes,
/// separators, numbers at the edges of their types, and non-ASCII.
const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "/",
    "//",
    "@",
    "@sha256:",
    ":",
    "::",
    ".",
    "..",
    "_",
    "__",
    "-",
    "--",
    "a",
    "z",
    "A",
    "0",
    "9",
    "-1",
    "0.5",
    "1e309",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "null",
    "true",
    "false",
    "localhost",
    "127.0.0.1:5000",
    "[::1]",
    "sha256",
    "é",
    "日本",
    "🦀",
    "\u{0}",
    "\u{7f}",
    "\u{200b}",
    " ",
    "\t",
    "\n",
    "%",
    "%2F",
    "?",
    "#",
    "=",
];

/// `text` with 1-4 random edits: insert a piece, delete a span, replace a span, or duplicate one.
pub(crate) fn mutate(rng: &mut SplitMix64, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(chars.len() as u64 + 1) as usize;
        let span = (1 + rng.below(8) as usize).min(chars.len() - at);
        match rng.below(4) {
            0 => {
                let p: Vec<char> = rng.pick(PIECES).chars().collect();
                chars.splice(at..at, p);
            }
            1 => {
                chars.drain(at..at + span);
            }
            2 => {
                let p: Vec<char> = rng.pick(PIECES).chars().collect();
                chars.splice(at..at + span, p);
            }
            _ => {
                let copy: Vec<char> = chars[at..at + span].to_vec();
                chars.splice(at..at, copy);
            }
        }
    }
    chars.into_iter().collect()
}

/// Up to 12 random pieces.
fn junk(rng: &mut SplitMix64) -> String {
    (0..rng.below(12)).map(|_| rng.pick(PIECES)).collect()
}

fn lower_word(rng: &mut SplitMix64, max: u64) -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = String::new();
    s.push((b'a' + rng.below(26) as u8) as char);
    for _ in 0..rng.below(max) {
        s.push(alphabet[rng.below(alphabet.len() as u64) as usize] as char);
    }
    s
}

/// A valid image reference from its grammar's parts.
fn valid_image(rng: &mut SplitMix64) -> String {
    let mut s = String::new();
    match rng.below(4) {
        0 => s.push_str("127.0.0.1:5000/"),
        1 => s.push_str("registry.example.com/"),
        2 => s.push_str("localhost/"),
        _ => {}
    }
    let components = 1 + rng.below(3);
    for i in 0..components {
        if i > 0 {
            s.push('/');
        }
        s.push_str(&lower_word(rng, 6));
        if rng.chance(0.3) {
            s.push_str(rng.pick(&[".", "_", "__", "-", "---"]));
            s.push_str(&lower_word(rng, 4));
        }
    }
    if rng.chance(0.5) {
        s.push(':');
        s.push_str(rng.pick(&["latest", "v1.2", "1", "_x", "A-b.c"]));
    }
    if rng.chance(0.2) {
        s.push_str("@sha256:");
        s.push_str(&(0..64).map(|_| b"0123456789abcdef"[rng.below(16) as usize] as char).collect::<String>());
    }
    s
}

/// A spec inside every bound, with random choices for each field.
fn valid_spec(rng: &mut SplitMix64) -> Value {
    let in_bounds = |rng: &mut SplitMix64, (lo, hi): (u32, u32)| lo + rng.below(u64::from(hi - lo) + 1) as u32;
    let max = in_bounds(rng, (1, bounds::MAX_INSTANCES));
    let stable = in_bounds(rng, (2, 900));
    let mut env = serde_json::Map::new();
    for _ in 0..rng.below(4) {
        env.insert(format!("{}_{}", lower_word(rng, 5).to_uppercase(), rng.below(100)), json!(junk(rng).replace('\0', "")));
    }
    json!({
        "name": lower_word(rng, 20),
        "image": valid_image(rng),
        "port": 1 + rng.below(65535),
        "env": env,
        "limits": { "cpu_millis": in_bounds(rng, bounds::CPU_MILLIS), "memory_mb": in_bounds(rng, bounds::MEMORY_MB), "pids": in_bounds(rng, bounds::PIDS) },
        "min_instances": rng.below(u64::from(max) + 1),
        "max_instances": max,
        "concurrency": in_bounds(rng, (1, bounds::MAX_CONCURRENCY)),
        "idle_timeout_secs": in_bounds(rng, bounds::IDLE_TIMEOUT_SECS),
        "start_timeout_secs": in_bounds(rng, bounds::START_TIMEOUT_SECS),
        "queue_limit": in_bounds(rng, bounds::QUEUE_LIMIT),
        "health_path": format!("/{}", lower_word(rng, 10)),
        "labels": { "tier": lower_word(rng, 5) },
        "scaling": { "stable_window_secs": stable, "panic_window_secs": in_bounds(rng, (1, stable)), "predict": rng.chance(0.5) },
        "placement": { "strategy": rng.pick(&["binpack", "spread"]), "max_per_node": in_bounds(rng, (1, 1000)), "anti_affinity": [lower_word(rng, 5)] },
        "private": rng.chance(0.5),
    })
}

#[test]
fn valid_specs_validate_and_round_trip_through_json() {
    let mut rng = SplitMix64::new(0x5eed_1001);
    for _ in 0..3_000 {
        let value = valid_spec(&mut rng);
        let spec: FunctionSpec = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value}: {e}"));
        spec.validate().unwrap_or_else(|e| panic!("{value}: {e}"));
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<FunctionSpec>(&text).unwrap(), spec, "{text}");
    }
}

#[test]
fn mutated_spec_json_never_panics_and_accepted_specs_round_trip() {
    let mut rng = SplitMix64::new(0x5eed_1002);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..20_000 {
        let mut seed = valid_spec(&mut rng);
        if rng.chance(0.3) {
            // Structured: one field (top-level or nested) set to a value at or past an edge.
            let edges =
                [json!(0), json!(-1), json!(1), json!(u32::MAX), json!(u64::from(u32::MAX) + 1), json!(1.5), json!(""), json!(null), json!([]), json!({}), json!("x".repeat(300))];
            let edge = edges[rng.below(edges.len() as u64) as usize].clone();
            let object = seed.as_object_mut().unwrap();
            let key = object.keys().nth(rng.below(object.len() as u64) as usize).unwrap().clone();
            match object.get_mut(&key) {
                Some(Value::Object(inner)) if !inner.is_empty() && rng.chance(0.7) => {
                    let k = inner.keys().nth(rng.below(inner.len() as u64) as usize).unwrap().clone();
                    inner.insert(k, edge);
                }
                _ => drop(object.insert(key, edge)),
            }
        }
        let seed = seed.to_string();
        let text = if rng.chance(0.1) {
            junk(&mut rng)
        } else if rng.chance(0.3) {
            seed
        } else {
            mutate(&mut rng, &seed)
        };
        let parsed = serde_json::from_str::<FunctionSpec>(&text);
        match parsed.as_ref().map(|s| s.validate()) {
            Err(e) => {
                assert!(!e.to_string().is_empty(), "{text:?}");
                refused += 1;
            }
            Ok(Err(e)) => {
                // A refused spec names the field and says what to use instead.
                assert!(!e.field.is_empty() && e.message.len() > 10, "{text:?}: {e}");
                refused += 1;
            }
            Ok(Ok(())) => {
                let spec = parsed.unwrap();
                let again: FunctionSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
                assert_eq!(again, spec, "{text:?}");
                accepted += 1;
            }
        }
    }
    assert!(accepted > 1_000 && refused > 5_000, "accepted {accepted}, refused {refused}: the mutations are too mild or too harsh");
}

#[test]
fn image_references_never_panic_and_valid_ones_round_trip() {
    let mut rng = SplitMix64::new(0x5eed_1003);
    for _ in 0..20_000 {
        let good = valid_image(&mut rng);
        let image = ImageRef::parse(good.clone()).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        assert_eq!(image.as_str(), good);
        let json = serde_json::to_string(&image).unwrap();
        assert_eq!(serde_json::from_str::<ImageRef>(&json).unwrap(), image);
        let text = if rng.chance(0.2) { junk(&mut rng) } else { mutate(&mut rng, &good) };
        match ImageRef::parse(text.clone()) {
            Ok(image) => {
                // Whatever is accepted is printable ASCII a registry could be asked for, and parses again.
                assert!(text.len() <= ImageRef::MAX_LEN && text.bytes().all(|b| b.is_ascii_graphic()), "{text:?}");
                assert_eq!(ImageRef::parse(image.to_string()).unwrap(), image);
            }
            Err(e) => assert!(e.field == "image" && e.message.contains("use [registry[:port]/]name[:tag]"), "{text:?}: {e}"),
        }
    }
}

#[test]
fn ids_and_labels_never_panic_and_valid_ones_round_trip() {
    let mut rng = SplitMix64::new(0x5eed_1004);
    for _ in 0..20_000 {
        let good = lower_word(&mut rng, 40);
        assert_eq!(FunctionName::new(good.clone()).unwrap().as_str(), good);
        let text = mutate(&mut rng, &good);
        if let Ok(name) = NodeId::new(text.clone()) {
            assert_eq!(serde_json::from_value::<NodeId>(json!(name)).unwrap(), name);
        } else {
            assert!(serde_json::from_value::<NodeId>(json!(text)).is_err(), "{text:?}: deserializing must check as new() does");
        }
        let n = rng.next_u64();
        let id: InstanceId = InstanceId(n).to_string().parse().unwrap();
        assert_eq!(id, InstanceId(n));
        match mutate(&mut rng, &format!("i{n}")).parse::<InstanceId>() {
            Ok(id) => assert!(id.to_string().len() > 1),
            Err(e) => assert!(e.message.contains("i<number>"), "{e}"),
        }
        let pair = mutate(&mut rng, "zone=eu-west_1");
        if let Ok((k, v)) = labels::parse_pair("label", &pair) {
            assert_eq!(format!("{k}={v}"), pair);
        }
    }
}

fn finite(rng: &mut SplitMix64) -> f64 {
    // Quarters are exact in binary, so JSON carries them without rounding.
    (rng.below(4_000_001) as f64 - 2_000_000.0) / 4.0
}

fn node(rng: &mut SplitMix64) -> NodeId {
    NodeId::new(lower_word(rng, 10)).unwrap()
}

fn function(rng: &mut SplitMix64) -> FunctionName {
    FunctionName::new(lower_word(rng, 10)).unwrap()
}

#[test]
fn wire_messages_round_trip_and_mutated_ones_never_panic() {
    let mut rng = SplitMix64::new(0x5eed_1005);
    for _ in 0..5_000 {
        let (n, boot, seq, ts) = (node(&mut rng), rng.next_u64(), rng.next_u64(), rng.next_u64());
        let host = HostFigures {
            cpu_percent: finite(&mut rng) as f32,
            cpu_per_core: vec![finite(&mut rng) as f32; rng.below(4) as usize],
            load: [finite(&mut rng); 3],
            memory_used_bytes: rng.next_u64(),
            ..Default::default()
        };
        let containers = ContainerBatch {
            containers: (0..rng.below(3))
                .map(|_| ContainerFigures {
                    instance: InstanceId(rng.next_u64()),
                    function: function(&mut rng),
                    cpu_percent: rng.chance(0.5).then(|| finite(&mut rng)),
                    memory_used_bytes: rng.next_u64(),
                    memory_limit_bytes: rng.chance(0.5).then(|| rng.next_u64()),
                    net_rx_bytes_per_sec: finite(&mut rng),
                    net_tx_bytes_per_sec: 0.0,
                    block_read_bytes_per_sec: 0.25,
                    block_write_bytes_per_sec: 1e6,
                    pids: rng.below(1000),
                })
                .collect(),
        };
        let kinds = [EventKind::InstanceStarted, EventKind::InstanceReady, EventKind::InstancePaused, EventKind::InstanceStopped, EventKind::InstanceFailed];
        let event = Event { kind: rng.pick(&kinds), instance: InstanceId(rng.next_u64()), function: function(&mut rng), detail: rng.chance(0.5).then(|| junk(&mut rng)) };
        let messages = [
            wire::encode(&n, boot, seq, ts, &host),
            wire::encode(&n, boot, seq, ts, &containers),
            wire::encode(&n, boot, seq, ts, &GatewayBatch::default()),
            wire::encode(&n, boot, seq, ts, &event),
        ];
        let back: Envelope<HostFigures> = wire::decode(&messages[0]).unwrap();
        assert_eq!((back.node, back.boot, back.seq, back.ts_ms, back.body), (n.clone(), boot, seq, ts, host));
        assert_eq!(wire::decode::<ContainerBatch>(&messages[1]).unwrap().body, containers);
        assert_eq!(wire::decode::<GatewayBatch>(&messages[2]).unwrap().body, GatewayBatch::default());
        assert_eq!(wire::decode::<Event>(&messages[3]).unwrap().body, event);
        // Mutated text and random bytes: an error that says what it found, never a panic.
        let text = String::from_utf8_lossy(&messages[rng.below(4) as usize]).into_owned();
        let mut bytes = mutate(&mut rng, &text).into_bytes();
        if rng.chance(0.2) {
            let at = rng.below(bytes.len() as u64 + 1) as usize;
            bytes.insert(at, rng.next_u64() as u8);
        }
        for result in [
            wire::decode::<HostFigures>(&bytes).err().map(|e| e.to_string()),
            wire::decode::<ContainerBatch>(&bytes).err().map(|e| e.to_string()),
            wire::decode::<GatewayBatch>(&bytes).err().map(|e| e.to_string()),
            wire::decode::<Event>(&bytes).err().map(|e| e.to_string()),
        ]
        .into_iter()
        .flatten()
        {
            assert!(result.contains("Sluice v1 message") || result.contains("version") || result.contains("topic"), "{result}");
        }
    }
}
