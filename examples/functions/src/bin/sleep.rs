//! `sleep`: waits `?ms=N` milliseconds (default 100, at most 60000) then answers `slept N ms`,
//! for exercising concurrency limits and slow functions. With `&busy=1` it burns a core for
//! that time instead (`busy N ms`), for exercising CPU metrics and CPU-based scaling.

use hyper::{Request, StatusCode};
use sluice_example_functions::{parse_ms, query_param, run, text, Resp};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    run("sleep", sleep)
}

async fn sleep<B>(req: Request<B>) -> Resp {
    let busy = query_param(req.uri().query(), "busy") == Some("1");
    match parse_ms(req.uri().query()) {
        Ok(ms) if busy => {
            // On a blocking thread, so the server keeps answering health checks.
            let spun = tokio::task::spawn_blocking(move || spin(Duration::from_millis(ms))).await;
            match spun {
                Ok(()) => text(StatusCode::OK, format!("busy {ms} ms")),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("spinning failed: {e}")),
            }
        }
        Ok(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, format!("slept {ms} ms"))
        }
        Err(msg) => text(StatusCode::BAD_REQUEST, msg),
    }
}

/// Keeps one core busy for `time`.
fn spin(time: Duration) {
    let until = Instant::now() + time;
    while Instant::now() < until {
        std::hint::spin_loop();
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
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "slept 40 ms");
    }

    #[tokio::test]
    async fn busy_burns_cpu_for_the_asked_time() {
        let started = std::time::Instant::now();
        let resp = sleep(Request::get("/?ms=30&busy=1").body(()).unwrap()).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "busy 30 ms");
    }

    #[tokio::test]
    async fn bad_ms_is_400() {
        let resp = sleep(Request::get("/?ms=99999").body(()).unwrap()).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }
}
