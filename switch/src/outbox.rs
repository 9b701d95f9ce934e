//! A connection's writing half: the frames queued for it leave in as few writes as they can.
//!
//! Answers released together (a group commit makes a batch of them durable at once) and requests
//! forwarded together are queued by many tasks within one pass of the runtime; written as each
//! arrived, every one of them cost a send of its own — and on loopback, the receiver's TCP work
//! and wake-up with it.

use codecs::framing::{Frame, FrameCodec};
use futures_util::SinkExt;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::codec::FramedWrite;

/// Writes what arrives on `rx` until it closes or a write fails. After the first frame of a
/// wake-up the task yields once, so that every task ready to queue on this connection does so
/// first; then everything queued goes out in one flush.
pub async fn write_queued<W, T>(writer: &mut FramedWrite<W, FrameCodec>, rx: &mut mpsc::Receiver<T>)
where
    W: AsyncWrite + Unpin,
    T: Into<Frame>,
{
    while let Some(first) = rx.recv().await {
        if writer.feed(first.into()).await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
        while let Ok(next) = rx.try_recv() {
            if writer.feed(next.into()).await.is_err() {
                return;
            }
        }
        if SinkExt::<Frame>::flush(writer).await.is_err() {
            return;
        }
    }
}
