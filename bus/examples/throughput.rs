//! Rough publish throughput of a bus, acknowledgements included:
//!
//! ```text
//! cargo run --release -p sluice-bus --example throughput -- kafka://127.0.0.1:9092 [messages] [payload bytes]
//! ```
//! Keeps up to 1,000 publishes awaiting their ack, as an agent's outbox would.
//! Nothing subscribes: this measures what the broker takes, not end to end.

use bytes::Bytes;
use sluice_bus::{connect, BusUrl, Message, Topic};
use std::collections::VecDeque;
use std::time::Instant;

const WINDOW: usize = 1000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url: BusUrl = args.next().unwrap_or_else(|| "inproc".into()).parse()?;
    let messages: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(20_000);
    let size: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(10 << 10);
    let bus = connect(&url, "throughput").await?;
    // Incompressible, so Kafka's lz4 does not flatter the figure.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let payload: Bytes = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect::<Vec<_>>()
        .into();
    let started = Instant::now();
    let mut acks = VecDeque::with_capacity(WINDOW);
    for _ in 0..messages {
        if acks.len() == WINDOW {
            acks.pop_front().expect("a full window").await?;
        }
        acks.push_back(bus.publish(Message { topic: Topic::Host, key: "bench".into(), payload: payload.clone() }));
    }
    for ack in acks {
        ack.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{url}: {messages} messages of {size} bytes acknowledged in {secs:.2} s: {:.0} msg/s, {:.1} MB/s", messages as f64 / secs, (messages * size) as f64 / secs / 1e6);
    Ok(())
}
