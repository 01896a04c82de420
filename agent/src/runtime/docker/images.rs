//! Which images are known to be present, so a cold start skips the image check.

use sluice_common::ImageRef;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Remembers images Docker confirmed present, for `ttl`. Only positive answers are
/// kept: a missing image is checked again on every start, so a push is noticed at once.
#[derive(Debug)]
pub struct ImageCache {
    ttl: Duration,
    seen: Mutex<HashMap<ImageRef, Instant>>,
}

impl ImageCache {
    /// An empty cache trusting answers for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, seen: Mutex::new(HashMap::new()) }
    }

    /// True if `image` was confirmed present less than `ttl` ago.
    pub fn is_fresh(&self, image: &ImageRef) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(image).is_some_and(|at| at.elapsed() < self.ttl)
    }

    /// Forgets `image` (the image GC removed it), so the next start checks again.
    pub fn forget(&self, image: &str) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).retain(|i, _| i.as_str() != image);
    }

    /// Notes that Docker just confirmed `image` present.
    pub fn remember(&self, image: &ImageRef) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded by the number of distinct images deployed; drop stale entries as we go.
        seen.retain(|_, at| at.elapsed() < self.ttl);
        seen.insert(image.clone(), Instant::now());
    }
}

/// Splits a reference into Docker's `fromImage` and `tag` pull parameters. Without
/// a tag Docker would pull every tag of the repository, so `latest` is made explicit.
pub fn pull_params(image: &ImageRef) -> (String, String) {
    let s = image.as_str();
    if s.contains('@') {
        // A digest names exactly one image; Docker takes it whole in fromImage.
        return (s.to_string(), String::new());
    }
    match s.rfind(':') {
        Some(i) if !s[i..].contains('/') => (s[..i].to_string(), s[i + 1..].to_string()),
        _ => (s.to_string(), "latest".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn pull_parameters() {
        let table = [
            ("sluice/hello:v1", ("sluice/hello", "v1")),
            ("sluice/hello", ("sluice/hello", "latest")),
            ("127.0.0.1:5000/sluice/hello", ("127.0.0.1:5000/sluice/hello", "latest")),
            ("127.0.0.1:5000/sluice/hello:2", ("127.0.0.1:5000/sluice/hello", "2")),
        ];
        for (input, (from, tag)) in table {
            assert_eq!(pull_params(&image(input)), (from.to_string(), tag.to_string()), "{input}");
        }
        let digest = "a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(pull_params(&image(digest)), (digest.to_string(), String::new()));
    }

    #[tokio::test(start_paused = true)]
    async fn remembers_for_ttl_only() {
        let cache = ImageCache::new(Duration::from_secs(30));
        let a = image("a");
        assert!(!cache.is_fresh(&a));
        cache.remember(&a);
        assert!(cache.is_fresh(&a));
        assert!(!cache.is_fresh(&image("b")));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(!cache.is_fresh(&a));
    }
}
