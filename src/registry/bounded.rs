//! Bounds on what a source sends: a blob stream held to the size its descriptor gives, and a
//! stream of chunks given up after a silence.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf, Take};

use super::http::Transient;

/// Passes a stream's chunks through, each awaited at most `timeout`: after a longer silence the
/// stream fails with `silence` (kind `TimedOut`) and ends. `failed` words the stream's own errors;
/// the first one ends it too.
pub fn until_silent<S, E>(
    stream: S,
    timeout: Duration,
    silence: String,
    failed: impl Fn(E) -> io::Error + Send + 'static,
) -> impl Stream<Item = io::Result<bytes::Bytes>> + Send + 'static
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
{
    let state = (Box::pin(stream), failed);
    futures_util::stream::unfold(Some(state), move |state| {
        let silence = silence.clone();
        async move {
            let (mut stream, failed) = state?;
            match tokio::time::timeout(timeout, stream.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some((stream, failed)))),
                Ok(Some(Err(err))) => Some((Err(failed(err)), None)),
                Ok(None) => None,
                Err(_) => Some((Err(io::Error::new(io::ErrorKind::TimedOut, silence)), None)),
            }
        }
    })
}

/// Refuses a blob at once when the length its source announces (`Content-Length`) is larger than
/// the `size` its descriptor gives, before any of it is read.
pub fn refuse_announced_excess(what: &str, size: u64, announced: Option<u64>) -> anyhow::Result<()> {
    match announced.filter(|&length| length > size) {
        Some(length) => anyhow::bail!(
            "{what} is larger than the {size} bytes its descriptor gives (the registry announces {length})"
        ),
        None => Ok(()),
    }
}

/// Passes a blob's bytes through and fails as soon as they pass `size` (having read at most one
/// byte more), or end short of it. Errors stay: once failed, every later read fails the same way,
/// so a consumer that drains the rest (to check a digest) cannot mistake the failure for an end.
/// A failure that may pass (see [`super::is_transient`]) stays one, so that the pull is retried.
pub struct SizedReader<R> {
    inner: Take<R>,
    size: u64,
    read: u64,
    what: String,
    failed: Option<Failure>,
}

#[derive(Clone)]
struct Failure {
    kind: io::ErrorKind,
    message: String,
    transient: bool,
}

impl Failure {
    fn to_error(&self) -> io::Error {
        if self.transient {
            Transient::io(self.kind, self.message.clone())
        } else {
            io::Error::new(self.kind, self.message.clone())
        }
    }
}

impl<R: AsyncRead + Unpin> SizedReader<R> {
    /// `what` names the blob in errors ("layer sha256:…").
    pub fn new(inner: R, size: u64, what: impl Into<String>) -> Self {
        SizedReader { inner: inner.take(size.saturating_add(1)), size, read: 0, what: what.into(), failed: None }
    }

    fn fail(&mut self, kind: io::ErrorKind, message: String, transient: bool) -> io::Error {
        let failure = Failure { kind, message, transient };
        let err = failure.to_error();
        self.failed = Some(failure);
        err
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for SizedReader<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(failure) = &this.failed {
            return Poll::Ready(Err(failure.to_error()));
        }
        let before = buf.filled().len();
        let asked = buf.remaining();
        if let Err(err) = ready!(Pin::new(&mut this.inner).poll_read(cx, buf)) {
            return Poll::Ready(Err(this.fail(err.kind(), err.to_string(), Transient::carried_by(&err))));
        }
        let n = (buf.filled().len() - before) as u64;
        this.read += n;
        if this.read > this.size {
            // A read that fails hands out nothing.
            buf.set_filled(before);
            let message = format!("{} is larger than the {} bytes its descriptor gives", this.what, this.size);
            return Poll::Ready(Err(this.fail(io::ErrorKind::InvalidData, message, false)));
        }
        if n == 0 && asked > 0 && this.read < this.size {
            let message = format!("{} ended after {} bytes; its descriptor gives {}", this.what, this.read, this.size);
            return Poll::Ready(Err(this.fail(io::ErrorKind::UnexpectedEof, message, false)));
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endless stream of one byte value, counting what was read from it.
    struct Endless(std::sync::Arc<std::sync::atomic::AtomicU64>);

    impl AsyncRead for Endless {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let n = buf.remaining();
            buf.put_slice(&vec![7u8; n]);
            self.0.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn exact_size_passes() {
        let mut out = Vec::new();
        SizedReader::new(&b"twelve bytes"[..], 12, "layer x").read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"twelve bytes");
    }

    #[tokio::test]
    async fn endless_blob_stops_one_byte_past_its_size() {
        let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut reader = SizedReader::new(Endless(counted.clone()), 100_000, "layer sha256:ab");
        let err = reader.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(err.to_string(), "layer sha256:ab is larger than the 100000 bytes its descriptor gives");
        assert_eq!(counted.load(std::sync::atomic::Ordering::SeqCst), 100_001);
        // The failure stays: draining the rest fails again, reading nothing more.
        let again = reader.read(&mut [0u8; 10]).await.unwrap_err();
        assert_eq!(again.to_string(), err.to_string());
        assert_eq!(counted.load(std::sync::atomic::Ordering::SeqCst), 100_001);
    }

    #[tokio::test]
    async fn silent_stream_is_given_up() {
        let chunks = futures_util::stream::iter([Ok::<_, io::Error>(bytes::Bytes::from_static(b"a"))])
            .chain(futures_util::stream::pending());
        let mut stream =
            Box::pin(until_silent(chunks, Duration::from_millis(50), "silent for 0.05 s".to_string(), |e| e));
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"a");
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!((err.kind(), err.to_string()), (io::ErrorKind::TimedOut, "silent for 0.05 s".to_string()));
        assert!(stream.next().await.is_none());
    }

    /// A registry that fails mid-layer in a way that may pass (reset, 5xx on a retried range)
    /// leaves an error the pull's retry recognizes, on the first read and on every later one.
    #[tokio::test]
    async fn a_failure_that_may_pass_stays_one() {
        struct Failing;
        impl AsyncRead for Failing {
            fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Err(Transient::io(
                    io::ErrorKind::ConnectionReset,
                    "registry r reset the connection".into(),
                )))
            }
        }
        let mut reader = SizedReader::new(Failing, 10, "layer z");
        let first = reader.read(&mut [0u8; 4]).await.unwrap_err();
        let again = reader.read(&mut [0u8; 4]).await.unwrap_err();
        for err in [first, again] {
            assert_eq!(err.to_string(), "registry r reset the connection");
            assert!(super::super::is_transient(&anyhow::Error::from(err)));
        }
        let short = SizedReader::new(&b"short"[..], 6, "layer y").read_to_end(&mut Vec::new()).await.unwrap_err();
        assert!(!super::super::is_transient(&anyhow::Error::from(short)));
    }

    #[test]
    fn an_announced_length_past_the_descriptor_is_refused_before_reading() {
        let err = refuse_announced_excess("layer w", 100, Some(101)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "layer w is larger than the 100 bytes its descriptor gives (the registry announces 101)"
        );
        assert!(refuse_announced_excess("layer w", 100, Some(100)).is_ok());
        assert!(refuse_announced_excess("layer w", 100, None).is_ok());
    }

    #[tokio::test]
    async fn short_blob_is_refused() {
        let err = SizedReader::new(&b"short"[..], 6, "layer y").read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(err.to_string(), "layer y ended after 5 bytes; its descriptor gives 6");
    }
}
