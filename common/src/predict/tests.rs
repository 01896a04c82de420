//! The models on synthetic series with known answers.

use super::*;

/// Feeds `model` the bins `0..bins`, with one call needing one instance in
/// each bin for which `active` says so.
fn feed(model: &mut dyn KeepWarm, bins: u64, mut active: impl FnMut(u64) -> bool) {
    for b in 0..bins {
        let a = u32::from(active(b));
        model.observe(b, a, a);
    }
}

#[test]
fn a_periodic_function_is_prewarmed_just_before_each_call_and_not_held_between() {
    let mut m = Sluice::new(SluiceParams::default(), 256.0);
    // Called every 30 minutes for 8 hours: bins 0, 30, ..., 450.
    feed(&mut m, 451, |b| b % 30 == 0);
    // The next call is at bin 480: held from a little before it.
    for bin in 476..=480 {
        assert!(m.hold(bin).total() >= 1, "bin {bin}: {:?}", m.hold(bin));
    }
    // In the middle of the period nothing is held.
    for bin in 455..470 {
        assert_eq!(m.hold(bin).total(), 0, "bin {bin}: {:?}", m.hold(bin));
    }
    // Prewarmed ahead of the call, the instance waits paused until a call is likely.
    assert!(matches!(m.hold(476).why, Why::Likely { .. }));
}

#[test]
fn hybrid_holds_a_window_around_the_period() {
    let mut m = Hybrid::new();
    feed(&mut m, 451, |b| b % 30 == 0);
    // Idle times are all 29: window from 0.9 x 29 to 1.1 x 30.
    assert_eq!(m.hold(451 + 25).total(), 0);
    assert!(m.hold(450 + 27).total() == 1 && m.hold(450 + 30).total() == 1);
    assert_eq!(m.hold(450 + 34).total(), 0);
}

#[test]
fn with_no_pattern_sluice_falls_back_to_a_bounded_keep_alive() {
    // One call, no history: a keep-alive from the prior, hot at first, then
    // paused, then nothing, and never a gap followed by more holding.
    let mut m = Sluice::new(SluiceParams::default(), 256.0);
    m.observe(0, 1, 1);
    let held: Vec<bool> = (1..=240).map(|b| m.hold(b).total() > 0).collect();
    let kept = held.iter().take_while(|h| **h).count();
    assert!((5..240).contains(&kept), "kept {kept}");
    assert!(held[kept..].iter().all(|h| !h), "held again after letting go: {held:?}");
    assert_eq!(m.hold(1).hot, 1);
    assert_eq!(m.hold(kept as u64).paused, 1);
}

#[test]
fn random_calls_get_a_keep_alive_not_a_prewarm() {
    // Memoryless calls (hazard constant): what is held starts right after the
    // last call and is (but for noise in the samples) one run: a keep-alive.
    let mut rng = crate::rng::SplitMix64::new(7);
    let active: Vec<bool> = (0..2000).map(|_| rng.chance(0.02)).collect();
    let mut m = Sluice::new(SluiceParams::default(), 128.0);
    feed(&mut m, 2000, |b| active[b as usize]);
    let last = active.iter().rposition(|a| *a).unwrap() as u64;
    let after: Vec<bool> = (1..=240).map(|k| m.hold(last + k).total() > 0).collect();
    let first_run = after.iter().take_while(|h| **h).count();
    let total = after.iter().filter(|h| **h).count();
    assert!(after[0] && first_run * 10 >= total * 8, "held {total}, of which {first_run} right after the call: {after:?}");
    let last_held = after.iter().rposition(|h| *h).unwrap_or(0);
    assert!(last_held < 239, "held to the end of the range: {after:?}");
}

#[test]
fn a_larger_function_is_held_for_less() {
    let kept = |memory_mb: f64| {
        let mut m = Sluice::new(SluiceParams::default(), memory_mb);
        feed(&mut m, 600, |b| b % 97 == 0 || b % 41 == 0);
        (1..=240).filter(|k| m.hold(583 + k).total() > 0).count()
    };
    assert!(kept(4096.0) < kept(128.0), "4 GB: {}, 128 MB: {}", kept(4096.0), kept(128.0));
}

#[test]
fn a_rising_load_is_met_before_it_arrives() {
    let mut m = Sluice::new(SluiceParams::default(), 128.0);
    for (b, n) in [2, 4, 6].into_iter().enumerate() {
        m.observe(b as u64, n * 10, n);
    }
    // Last need 6, rising by 2 a bin: hold 8 hot.
    assert_eq!(m.hold(3), Hold { hot: 8, paused: 0, why: Why::Busy { needed: 8 } });
    // A single step up is not a ramp: the peak, not more.
    let mut m = Sluice::new(SluiceParams::default(), 128.0);
    m.observe(0, 10, 1);
    m.observe(1, 80, 8);
    assert_eq!(m.hold(2).hot, 8);
}

#[test]
fn model_state_is_bounded_whatever_the_history() {
    for kind in [PolicyKind::Fixed { bins: 10 }, PolicyKind::Hybrid, PolicyKind::Sluice(SluiceParams::default())] {
        let mut m = kind.model(256.0);
        let before = m.bytes();
        let mut rng = crate::rng::SplitMix64::new(3);
        for b in 0..200_000u64 {
            let n = if rng.chance(0.3) { 1 + rng.below(50) as u32 } else { 0 };
            m.observe(b, n, n.div_ceil(10));
        }
        assert_eq!(m.bytes(), before, "{}", kind.name());
        assert!(m.bytes() <= 2048, "{}: {} bytes", kind.name(), m.bytes());
    }
}

#[test]
fn fixed_keep_alive_holds_exactly_n_bins() {
    let mut m = FixedKeepAlive::new(10);
    m.observe(5, 3, 2);
    assert_eq!(m.hold(15).hot, 2);
    assert_eq!(m.hold(16), Hold::NOTHING);
}

#[test]
fn policy_names_parse_and_bad_ones_say_what_is_accepted() {
    assert_eq!(PolicyKind::parse("fixed-10m"), Ok(PolicyKind::Fixed { bins: 10 }));
    assert_eq!(PolicyKind::parse("hybrid").map(|p| p.name()), Ok("hybrid".into()));
    assert_eq!(PolicyKind::parse("sluice:worth=1").map(|p| p.name()), Ok("sluice:worth=1,prior=3".into()));
    for bad in ["fixed-0m", "fixed-10", "lru", "sluice:worth=-1", "sluice:x=1"] {
        assert!(PolicyKind::parse(bad).is_err(), "{bad}");
    }
}
