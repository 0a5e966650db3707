//! Server-Sent Events as OpenAI-compatible upstreams send them: an incremental parser that
//! turns arbitrary byte chunks into the `data` payloads of complete events, and the framing
//! strata writes them back with.
//!
//! Must not import: the network client, the cache.

use bytes::{Bytes, BytesMut};

/// The payload that ends an OpenAI stream.
pub const DONE: &[u8] = b"[DONE]";

/// An incremental SSE parser: feed it bytes as they arrive, take complete events' data.
#[derive(Debug, Default)]
pub struct Parser {
    buf: BytesMut,
    data: Vec<u8>,
    has_data: bool,
}

impl Parser {
    /// Adds received bytes; returns the data of every event they complete, in order
    /// (multi-line data joined with `\n`; comments and other fields skipped).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line = self.buf.split_to(nl + 1);
            line.truncate(nl);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if line.is_empty() {
                if self.has_data {
                    out.push(Bytes::from(std::mem::take(&mut self.data)));
                    self.has_data = false;
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix(b"data:") {
                let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(rest);
                self.has_data = true;
            }
        }
        out
    }

    /// The data of an event the stream ended inside (no blank line after it), if any.
    pub fn finish(&mut self) -> Option<Bytes> {
        if let Some(rest) = self.buf.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(rest);
            self.has_data = true;
        }
        self.buf.clear();
        self.has_data.then(|| {
            self.has_data = false;
            Bytes::from(std::mem::take(&mut self.data))
        })
    }
}

/// One event as strata sends it: `data: {payload}\n\n`.
pub fn frame(payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let stream = b"data: {\"a\":1}\n\n: keep-alive\n\ndata: {\"b\":\ndata: 2}\r\n\r\nevent: x\ndata: [DONE]\n\n";
        for cut in 0..stream.len() {
            let mut p = Parser::default();
            let mut got = p.feed(&stream[..cut]);
            got.extend(p.feed(&stream[cut..]));
            assert_eq!(
                got,
                vec![
                    Bytes::from_static(b"{\"a\":1}"),
                    Bytes::from_static(b"{\"b\":\n2}"),
                    Bytes::from_static(b"[DONE]"),
                ],
                "cut at {cut}"
            );
            assert_eq!(p.finish(), None);
        }
    }

    #[test]
    fn an_unterminated_last_event_is_kept() {
        let mut p = Parser::default();
        assert!(p.feed(b"data: {\"x\":1}").is_empty());
        assert_eq!(p.finish(), Some(Bytes::from_static(b"{\"x\":1}")));
        assert_eq!(frame(b"{}"), Bytes::from_static(b"data: {}\n\n"));
    }
}
