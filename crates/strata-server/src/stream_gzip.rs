//! gzip for event streams, flushed after every event.
//!
//! The shared compression layer leaves `text/event-stream` alone: it compresses through a
//! reader that emits output only when its buffer fills, so an event would wait for the next
//! ones. Here each frame the stream yields (one event, or a keep-alive comment) is written to
//! a gzip encoder and sync-flushed, so the client can decode it as soon as it arrives; the
//! gzip trailer follows the last frame.
//!
//! Owns: the per-frame encoder and the response headers it implies. Must not import: the
//! engine (it wraps any response body).

use std::io::Write as _;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use flate2::Compression;
use flate2::write::GzEncoder;
use futures_util::{Stream, StreamExt as _};

/// `resp` with its body gzip-compressed frame by frame when `gzip` (the client accepts
/// it) and it is not already encoded; otherwise `resp` as it is.
pub(crate) fn frames(resp: Response, gzip: bool) -> Response {
    if !gzip || resp.headers().contains_key(header::CONTENT_ENCODING) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .append(header::VARY, HeaderValue::from_static("accept-encoding"));
    Response::from_parts(parts, Body::from_stream(encode(body.into_data_stream())))
}

/// Each item of `frames`, compressed and sync-flushed; then the gzip trailer.
fn encode<S>(frames: S) -> impl Stream<Item = Result<Bytes, axum::Error>> + Send
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Send + Unpin + 'static,
{
    // Event payloads are small and repetitive JSON; a fast level keeps the per-event cost
    // low on a long-lived stream.
    let encoder = GzEncoder::new(Vec::new(), Compression::fast());
    futures_util::stream::unfold(
        (frames, Some(encoder)),
        |(mut frames, encoder)| async move {
            let mut encoder = encoder?;
            match frames.next().await {
                Some(Ok(frame)) => {
                    let out = encoder
                        .write_all(&frame)
                        .and_then(|()| encoder.flush())
                        .map(|()| Bytes::from(std::mem::take(encoder.get_mut())))
                        .map_err(axum::Error::new);
                    Some((out, (frames, Some(encoder))))
                }
                Some(Err(e)) => Some((Err(e), (frames, None))),
                None => {
                    let out = encoder.finish().map(Bytes::from).map_err(axum::Error::new);
                    Some((out, (frames, None)))
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    /// Every frame's output, with what came before it, decodes to every frame so far: a
    /// client reading the stream sees each event when it is sent, not when the stream ends.
    #[tokio::test]
    async fn each_frame_is_decodable_when_it_is_sent() {
        let events = [
            "event: progress\ndata: {\"a\":1}\n\n",
            ": keep-alive\n\n",
            "event: done\ndata: {}\n\n",
        ];
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, axum::Error>>();
        let mut out = Box::pin(encode(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        ));
        let mut received = Vec::new();
        let mut expected = String::new();
        for event in events {
            tx.send(Ok(Bytes::from_static(event.as_bytes()))).unwrap();
            received.extend_from_slice(&out.next().await.unwrap().unwrap());
            expected.push_str(event);
            // A streaming decoder over the bytes so far yields every event so far (it stops
            // with an unexpected end, as the trailer has not come yet).
            let mut decoded = Vec::new();
            let mut decoder = flate2::read::GzDecoder::new(&received[..]);
            let mut buf = [0u8; 256];
            loop {
                match decoder.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => decoded.extend_from_slice(&buf[..n]),
                }
            }
            assert_eq!(String::from_utf8(decoded).unwrap(), expected);
        }
        drop(tx);
        received.extend_from_slice(&out.next().await.unwrap().unwrap());
        assert!(out.next().await.is_none());
        let mut whole = String::new();
        flate2::read::GzDecoder::new(&received[..])
            .read_to_string(&mut whole)
            .unwrap();
        assert_eq!(whole, events.concat());
    }

    #[test]
    fn a_client_that_does_not_ask_gets_the_stream_as_it_is() {
        let resp = Response::new(Body::from("event: done\n\n"));
        assert!(
            frames(resp, false)
                .headers()
                .get(header::CONTENT_ENCODING)
                .is_none()
        );
        let resp = frames(Response::new(Body::from("x")), true);
        assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(resp.headers()[header::VARY], "accept-encoding");
    }
}
