//! Property tests of what the API parses before anything else runs: the
//! route lookup, query parameters, `range`, member ids, Raft addresses and
//! bearer tokens. Seeded with `SplitMix64` so a failure replays. Random and
//! mutated input never panics and refusals are 4xx errors naming the field;
//! valid generated input is found or parsed to what was generated.

use super::routes::{find, Found, ROUTES};
use super::{parse_member_id, query_value, validate_raft_addr};
use crate::auth::{self, AuthMode, Permission, Role};
use crate::windows_api::{parse_range, MAX_RANGE};
use hyper::header::HeaderValue;
use sluice_common::rng::SplitMix64;
use sluice_common::Timestamp;
use std::collections::BTreeSet;
use std::time::Duration;

const PIECES: &[&str] = &[
    "/",
    "//",
    "v1",
    "functions",
    "nodes",
    "metrics",
    "rules",
    "explain",
    "check",
    "cluster",
    "members",
    "tokens",
    "drain",
    "report",
    "desired",
    "openapi.json",
    "healthz",
    "{name}",
    "..",
    ".",
    "%2F",
    "%00",
    "?",
    "&",
    "=",
    "#",
    "a",
    "hello",
    "i42",
    "i",
    "0",
    "-1",
    "18446744073709551616",
    "s",
    "m",
    "h",
    "d",
    "90s",
    "é",
    "🦀",
    " ",
    "\u{0}",
    "_",
    "sluice_",
    "Bearer ",
];

fn text(rng: &mut SplitMix64, n: u64) -> String {
    (0..rng.below(n)).map(|_| rng.pick(PIECES)).collect()
}

/// A path segment that a route's braces accept (no '/', not empty).
fn segment(rng: &mut SplitMix64) -> String {
    let s: String = text(rng, 4).replace('/', "");
    if s.is_empty() {
        "x".into()
    } else {
        s
    }
}

#[test]
fn routes_are_found_with_the_parameters_they_were_given() {
    let mut rng = SplitMix64::new(0x5eed_4001);
    for _ in 0..20_000 {
        let route = &ROUTES[rng.below(ROUTES.len() as u64) as usize];
        let mut given = Vec::new();
        let path: String = route
            .path
            .split('/')
            .skip(1)
            .map(|part| {
                if part.starts_with('{') {
                    given.push(segment(&mut rng));
                    format!("/{}", given.last().unwrap())
                } else {
                    format!("/{part}")
                }
            })
            .collect();
        let Found::Route(found, params) = find(route.method, &path) else { panic!("{} {path} not found", route.method) };
        // A fixed segment listed first may win over a parameter (GET /v1/rules/explain); then it has fewer parameters.
        if found.id != route.id {
            assert!(params.len() < given.len(), "{} {path}: {:?} instead of {:?}", route.method, found.id, route.id);
        } else {
            assert_eq!(params, given.iter().map(String::as_str).collect::<Vec<_>>(), "{path}");
        }
    }
}

#[test]
fn random_paths_never_panic_and_answers_are_consistent() {
    let mut rng = SplitMix64::new(0x5eed_4002);
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "", "get"];
    for _ in 0..50_000 {
        let path = if rng.chance(0.5) { format!("/v1/{}", text(&mut rng, 6)) } else { text(&mut rng, 8) };
        let method = rng.pick(&methods);
        match find(method, &path) {
            Found::Route(route, params) => {
                assert_eq!(route.method, method);
                // Putting the parameters back into the pattern gives the path.
                let mut params = params.into_iter();
                let rebuilt: String = route.path.split('/').skip(1).map(|p| format!("/{}", if p.starts_with('{') { params.next().unwrap() } else { p })).collect();
                assert_eq!(rebuilt, path);
                assert!(params.next().is_none());
            }
            Found::WrongMethod(allowed) => assert!(!allowed.is_empty() && !allowed.contains(&method), "{method} {path}: {allowed:?}"),
            Found::NotFound => {}
        }
    }
}

#[test]
fn query_values_are_found_by_exact_key() {
    let mut rng = SplitMix64::new(0x5eed_4003);
    for _ in 0..20_000 {
        let junk = text(&mut rng, 8);
        let key = rng.pick(&["function", "range", "limit", "after", "wait_ms", "name"]);
        // Never panics, and a value found never holds a separator.
        if let Some(v) = query_value(Some(&junk), key) {
            assert!(!v.contains('&'), "{junk:?}");
        }
        let value = segment(&mut rng).replace(['&', '='], "");
        let query = format!("{junk}&{key}x=1&{key}={value}&{key}=second");
        let first_is_ours = !junk.split('&').any(|kv| kv.split_once('=').is_some_and(|(k, _)| k == key));
        if first_is_ours {
            assert_eq!(query_value(Some(&query), key), Some(value.as_str()), "{query:?}");
        }
        assert_eq!(query_value(None, key), None);
    }
}

#[test]
fn ranges_never_panic_and_valid_ones_are_exact() {
    let mut rng = SplitMix64::new(0x5eed_4004);
    for _ in 0..20_000 {
        let junk = text(&mut rng, 4);
        match parse_range(Some(&junk)) {
            Ok(d) => assert!(d >= Duration::from_secs(1) && d <= MAX_RANGE, "{junk:?} gave {d:?}"),
            Err(e) => assert_eq!((e.status.as_u16(), e.field.as_deref()), (400, Some("range")), "{junk:?}"),
        }
        let (unit, scale) = rng.pick(&[("", 1u64), ("s", 1), ("m", 60), ("h", 3600)]);
        let n = rng.below(100_000);
        let want = Duration::from_secs(n * scale);
        match parse_range(Some(&format!("{n}{unit}"))) {
            Ok(d) => assert_eq!(d, want),
            Err(_) => assert!(n == 0 || want > MAX_RANGE, "{n}{unit} refused"),
        }
    }
}

#[test]
fn member_ids_and_raft_addresses_never_panic() {
    let mut rng = SplitMix64::new(0x5eed_4005);
    for _ in 0..20_000 {
        let n = rng.next_u64();
        assert_eq!(parse_member_id(&n.to_string()).ok(), (n > 0).then_some(n));
        let junk = text(&mut rng, 5);
        if let Err(e) = parse_member_id(&junk) {
            assert_eq!(e.field.as_deref(), Some("id"));
        }
        let addr = format!("10.0.{}.{}:{}", rng.below(256), rng.below(256), 1 + rng.below(65535));
        assert!(validate_raft_addr(&addr).is_ok(), "{addr}");
        if let Err(e) = validate_raft_addr(&format!("{junk}{}", text(&mut rng, 3))) {
            assert!(e.field.as_deref() == Some("raft_addr") && e.message.contains("use host:port"), "{e:?}");
        }
    }
}

#[test]
fn bearer_headers_never_panic_and_only_the_token_passes() {
    let mut rng = SplitMix64::new(0x5eed_4006);
    let made = auth::new_token("fuzz", BTreeSet::from([Role::Reader]), Timestamp(0), None).unwrap();
    let lookup = |id: &str| (id == made.record.id).then(|| made.record.clone());
    assert_eq!(auth::split_id(&made.token), Some(made.record.id.as_str()));
    assert_eq!(auth::record_for(&made.token, "fuzz", made.record.roles.clone(), Timestamp(0)).as_ref(), Some(&made.record));
    let mut passed = 0;
    for _ in 0..20_000 {
        // Edit the real header: a flipped, dropped or added character, or junk around it.
        let mut header: Vec<u8> = format!("Bearer {}", made.token).into_bytes();
        match rng.below(4) {
            0 => {
                let at = rng.below(header.len() as u64) as usize;
                header[at] = rng.pick(b"0a_fF ZBs\x7f");
            }
            1 => {
                header.remove(rng.below(header.len() as u64) as usize);
            }
            2 => header.insert(rng.below(header.len() as u64 + 1) as usize, rng.pick(b"0a_ \t")),
            _ => header = text(&mut rng, 6).into_bytes(),
        }
        let Ok(value) = HeaderValue::from_bytes(&header) else { continue };
        let text = String::from_utf8_lossy(&header).into_owned();
        let _ = auth::split_id(&text);
        match auth::authorize(AuthMode::Required, Some(&value), Permission::Read, Timestamp(1), lookup) {
            Ok(_) => {
                // Only the token itself passes (surrounding whitespace aside).
                assert_eq!(text.strip_prefix("Bearer ").map(str::trim), Some(made.token.as_str()), "{text:?} passed");
                passed += 1;
            }
            Err(e) => assert_eq!(e.status.as_u16(), 401, "{text:?}: {e:?}"),
        }
    }
    assert!(passed > 0, "no edit kept the token valid (a trailing space should)");
}
