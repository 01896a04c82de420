//! `sleep`: waits `?ms=N` milliseconds (default 100, at most 60000) then answers `slept N ms`,
//! for exercising concurrency limits and slow functions.

use hyper::{Request, StatusCode};
use sluice_example_functions::{parse_ms, run, text, Resp};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    run("sleep", sleep)
}

async fn sleep<B>(req: Request<B>) -> Resp {
    match parse_ms(req.uri().query()) {
        Ok(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, format!("slept {ms} ms"))
        }
        Err(msg) => text(StatusCode::BAD_REQUEST, msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn sleeps_the_asked_time() {
        let started = std::time::Instant::now();
        let resp = sleep(Request::get("/?ms=40").body(()).unwrap()).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(started.elapsed() >= Duration::from_millis(40));
        assert_eq!(
            resp.into_body().collect().await.unwrap().to_bytes(),
            "slept 40 ms"
        );
    }

    #[tokio::test]
    async fn bad_ms_is_400() {
        let resp = sleep(Request::get("/?ms=99999").body(()).unwrap()).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }
}
