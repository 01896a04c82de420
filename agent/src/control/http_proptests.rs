//! Property tests of the agent's coordinator URLs, seeded with `SplitMix64`
//! so a failure replays: `parse_base` never panics on any text, refuses with
//! a reason, and what it accepts is an `http://` URL it accepts again
//! unchanged; `resolve_location` never panics, keeps full URLs, and puts
//! paths and bare addresses on an origin.

use super::http::{parse_base, resolve_location};
use sluice_common::rng::SplitMix64;

const PIECES: &[&str] = &[
    "http://",
    "https://",
    "ftp://",
    "//",
    "/",
    ":",
    "::",
    "@",
    "?",
    "#",
    "%",
    "%2F",
    "[",
    "]",
    "[::1]",
    "127.0.0.1",
    "localhost",
    "7070",
    "0",
    "65536",
    "99999999999",
    "/v1",
    "/v1/nodes/n/report",
    "a=b",
    "é",
    "🦀",
    " ",
    "\u{0}",
    "\n",
    "\\",
];

fn text(rng: &mut SplitMix64) -> String {
    (0..rng.below(8)).map(|_| rng.pick(PIECES)).collect()
}

#[test]
fn base_urls_never_panic_and_accepted_ones_are_stable() {
    let mut rng = SplitMix64::new(0x5eed_3001);
    let mut accepted = 0;
    for _ in 0..20_000 {
        let url = if rng.chance(0.5) { format!("http://{}", text(&mut rng)) } else { text(&mut rng) };
        match parse_base(&url, false) {
            Ok(base) => {
                accepted += 1;
                assert!(base.starts_with("http://") && !base.ends_with('/'), "{url:?} gave {base:?}");
                assert_eq!(parse_base(&base, false).ok().as_deref(), Some(base.as_str()), "{url:?}: not stable");
            }
            Err(e) => assert!(e.url == url && !e.reason.is_empty(), "{url:?}"),
        }
    }
    assert!(accepted > 1_000, "only {accepted} accepted");
}

#[test]
fn locations_never_panic_and_land_on_an_origin() {
    let mut rng = SplitMix64::new(0x5eed_3002);
    for _ in 0..20_000 {
        let port = rng.below(65536);
        let base = format!("http://127.0.0.1:{port}{}", rng.pick(&["", "/", "/prefix"]));
        let path = format!("/v1/nodes/n{}/report", rng.below(10));
        let location = text(&mut rng);
        let resolved = resolve_location(&base, &location, &path);
        assert!(resolved.contains("://"), "{base:?} + {location:?} gave {resolved:?}");
        // A path goes on the base's origin, whatever the base's own path.
        let on_base = resolve_location(&base, &format!("/x{location}"), &path);
        assert!(on_base.starts_with(&format!("http://127.0.0.1:{port}/x")), "{on_base:?}");
        // A bare leader address gets the request's path.
        assert_eq!(resolve_location(&base, &format!("http://10.0.0.{}:7070", port % 256), &path), format!("http://10.0.0.{}:7070{path}", port % 256));
    }
}
