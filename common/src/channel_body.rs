//! `ChannelBody`: a streamed HTTP body that a task fills through a channel.
//!
//! Streamed answers (followed logs) are produced by a task reading another
//! stream; the body only holds the channel's receiving end, which is `Sync`
//! as a boxed body must be whatever the producer holds. When the client goes,
//! the body is dropped and the producer sees `Sender::closed`.

use hyper::body::{Body, Bytes, Frame};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Chunks in flight between producer and client; a slow client holds up the producer.
pub const CHANNEL_CHUNKS: usize = 64;

/// The body end of a channel of chunks; it ends when every sender is dropped.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    /// A body and the sender that feeds it.
    pub fn channel() -> (mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        (tx, Self { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_arrive_in_order_and_the_body_ends_with_its_senders() {
        let (tx, mut body) = ChannelBody::channel();
        tokio::spawn(async move {
            for chunk in ["a\n", "b\n"] {
                tx.send(Bytes::from(chunk)).await.unwrap();
            }
        });
        let mut got = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            got.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(got, ["a\n", "b\n"]);
    }
}
