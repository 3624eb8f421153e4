//! Requests refused before they reach the router, answered in the envelope.
//!
//! hyper answers a request it cannot parse by itself, with an empty body:
//! `400` for a malformed request line or header, `414` for a URI over 65,534
//! bytes (a long enough `?q=`), `431` for headers beyond its read buffer. It
//! offers no hook for that response, so the connection's writes are watched
//! instead: a head that is exactly hyper's automatic one (`connection:
//! close`, `content-length: 0`, `date`, nothing else, no body) is replaced by
//! the same status with the error envelope. Any other write passes through
//! untouched. An over-long URI is answered `413`, as the API answers a `q`
//! over its limit, so that an oversize query gets one status whatever its
//! size.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::http::StatusCode;
use prometheus::IntCounterVec;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::envelope;

/// A connection whose automatic error responses are rewritten.
pub struct EnvelopeOnParseErrors<S> {
    inner: S,
    /// A rewritten response and how much of it is written. The caller was
    /// told its whole head was written, so this goes out before anything
    /// else (flush and shutdown wait for it).
    replacement: Option<(Vec<u8>, usize)>,
    /// `ideaflow_http_requests_total`, to count these answers too.
    answers: Option<IntCounterVec>,
}

impl<S> EnvelopeOnParseErrors<S> {
    pub fn new(inner: S, answers: Option<IntCounterVec>) -> Self {
        EnvelopeOnParseErrors {
            inner,
            replacement: None,
            answers,
        }
    }
}

impl<S: AsyncWrite + Unpin> EnvelopeOnParseErrors<S> {
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written == bytes.len() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for EnvelopeOnParseErrors<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for EnvelopeOnParseErrors<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        match enveloped(buf) {
            Some((status, response)) => {
                if let Some(answers) = &this.answers {
                    answers
                        .with_label_values(&["unparsed", status.as_str()])
                        .inc();
                }
                this.replacement = Some((response, 0));
                // Pending is fine: flush (which hyper always calls) finishes it.
                if let Poll::Ready(Err(e)) = this.poll_replacement(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(buf.len()))
            }
            None => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The enveloped response (and its status) for `written` if it is one of
/// hyper's automatic error responses, whole.
fn enveloped(written: &[u8]) -> Option<(StatusCode, Vec<u8>)> {
    let head = written.strip_suffix(b"\r\n\r\n")?;
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?.strip_prefix("HTTP/1.1 ")?;
    let (mut connection, mut length, mut date) = (false, false, None);
    for line in lines {
        match line {
            "connection: close" if !connection => connection = true,
            "content-length: 0" if !length => length = true,
            _ if line.starts_with("date: ") && date.is_none() => date = Some(line),
            _ => return None,
        }
    }
    let date = date.filter(|_| connection && length)?;
    let (status, code, message) = match status_line.get(..3)? {
        "400" => (
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request is not valid HTTP/1.1: check its request line and headers",
        ),
        "414" => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "the request's URI is over 65,534 bytes; shorten its query string",
        ),
        "431" => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            "the request's headers are too large; send fewer or shorter headers",
        ),
        _ => return None,
    };
    let body = envelope(code, message, &serde_json::Value::Null).to_string();
    let response = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n{date}\r\n\r\n{body}",
            status.as_str(),
            status.canonical_reason().unwrap_or_default(),
            body.len(),
        )
        .into_bytes();
    Some((status, response))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const AUTOMATIC_414: &[u8] = b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\ndate: Tue, 24 Nov 2026 19:34:43 GMT\r\n\r\n";

    fn split(response: &[u8]) -> (String, serde_json::Value) {
        let text = String::from_utf8(response.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len(), "{text}");
        (head.to_owned(), serde_json::from_str(body).unwrap())
    }

    #[test]
    fn hypers_automatic_responses_get_the_envelope() {
        let (head, body) = split(&enveloped(AUTOMATIC_414).unwrap().1);
        assert!(
            head.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
            "{head}"
        );
        assert!(
            head.contains("\r\ndate: Tue, 24 Nov 2026 19:34:43 GMT"),
            "{head}"
        );
        assert_eq!(body["error_code"], "request_too_large");
        for k in ["message", "timestamp", "details"] {
            assert!(body.get(k).is_some(), "{body}");
        }
        let bad = b"HTTP/1.1 400 Bad Request\r\ndate: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let (head, body) = split(&enveloped(bad).unwrap().1);
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert_eq!(body["error_code"], "bad_request");
    }

    #[test]
    fn other_writes_pass_untouched() {
        for other in [
            // Our own responses have a body and a content type.
            &b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\ndate: x\r\n\r\n{}"[..],
            // A body in the same write.
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\nmore",
            // An extra header, or one twice.
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\nx-a: b\r\ndate: x\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\nconnection: close\r\ndate: x\r\n\r\n",
            // A status hyper does not answer by itself.
            b"HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n",
            b"data: {\"epoch\": 1}\n\n",
            b"",
        ] {
            assert!(enveloped(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }

    #[tokio::test]
    async fn the_replacement_reaches_the_peer_whole() {
        let (client, mut server) = tokio::io::duplex(16);
        let answers =
            IntCounterVec::new(prometheus::Opts::new("a", "a"), &["route", "status"]).unwrap();
        let mut conn = EnvelopeOnParseErrors::new(client, Some(answers.clone()));
        let writer = tokio::spawn(async move {
            // A small pipe: the replacement goes out over many polls.
            conn.write_all(AUTOMATIC_414).await.unwrap();
            conn.flush().await.unwrap();
            conn.shutdown().await.unwrap();
        });
        let mut received = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut server, &mut received)
            .await
            .unwrap();
        writer.await.unwrap();
        let (head, body) = split(&received);
        assert!(head.starts_with("HTTP/1.1 413 "), "{head}");
        assert_eq!(body["error_code"], "request_too_large");
        assert_eq!(answers.with_label_values(&["unparsed", "413"]).get(), 1);
    }
}
