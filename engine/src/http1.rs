//! The gateway's HTTP/1.1 front: what web/http1.py checks before a request reaches the
//! handler, in a thin IO layer under hyper.
//!
//! Why a layer under hyper rather than hyper's own options: hyper parses the head before our
//! service sees it and answers what it refuses itself, with an empty body and no way to
//! change that (431 for a long head, 400 for a bad `Content-Length`), and it *accepts* some
//! shapes that web/http1.py (llhttp) refuses as request smuggling: `Content-Length` with
//! `Transfer-Encoding` (hyper drops the length and reads chunked, RFC 9112 §6.1 allows
//! that; hyperium/hyper#3860, #4123), a repeated identical `Content-Length`. Its builder has `max_headers`,
//! `max_buf_size` and `header_read_timeout`, but no hook to answer those cases, no
//! first-byte deadline separate from the head deadline, and its header timeout closes
//! without an answer. So [`Gate`] wraps the socket: it holds back the bytes of each request
//! head until the whole head is there, checks it with `httparse` (the parser hyper uses)
//! and the framing rules below, and only then hands it to hyper. A head it refuses never
//! reaches hyper: reads end there (hyper answers the requests before it, pipelining
//! included, then finishes) and the connection task writes the problem+json answer itself
//! and closes with a lingering close. After a head the layer follows the body's framing
//! (length or chunks) to find the next head; the refused shapes are exactly those where two
//! parsers could disagree on that, so hyper and this layer always agree.
//!
//! Cost: the head is parsed twice (here and in hyper), a few hundred nanoseconds for a
//! usual head; a head that arrives in one read is not copied.
//!
//! The layer also keeps the listener's deadlines (web/connections.py): the first byte of a
//! new connection, the head (408), the idle keep-alive, shortened under pressure.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::connections::{Signal, raw_answer};
use crate::engine::Shared;
use crate::errors::GatewayError;
use crate::metrics::TimedOut;

/// Request line and headers together (web/http1.py ``Limits``).
pub const MAX_HEAD_BYTES: usize = 16_384;
pub const MAX_HEADERS: usize = 100;
/// After an answer that leaves part of a request unread, what still arrives is read and
/// dropped for this long (nginx's lingering close, http1.py ``linger``) …
pub const LINGER: Duration = Duration::from_secs(5);
/// … and up to this many bytes.
pub const LINGER_BYTES: u64 = 64 * 1_048_576;

fn malformed() -> GatewayError {
    GatewayError::Malformed("the request is not valid HTTP/1.1".into())
}

fn headers_too_large() -> GatewayError {
    GatewayError::HeadersTooLarge("the request line and headers are too large".into())
}

/// Where the framing of a chunked body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Size { value: u64, digits: u8 },
    SizeSpace { value: u64 },
    Extension { value: u64, length: usize },
    SizeLf { value: u64 },
    Data(u64),
    DataCr,
    DataLf,
    Trailer { line: usize, total: usize },
    TrailerLf { line: usize, total: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for (or inside) a request head.
    Head,
    Body(u64),
    Chunked(Chunk),
    /// Nothing more is handed over: a refused head, broken body framing, or a request
    /// after which the connection closes (an upgrade, CONNECT).
    Stopped,
}

/// Follows requests through the bytes of one connection and checks every head.
#[derive(Debug)]
pub struct Framing {
    phase: Phase,
    /// Bytes of the current head already searched for its end.
    head_scanned: usize,
    /// The request being read closes the connection after it.
    last: bool,
    /// A head refused: the connection answers it itself, then closes.
    pub refusal: Option<GatewayError>,
}

impl Default for Framing {
    fn default() -> Self {
        Self {
            phase: Phase::Head,
            head_scanned: 0,
            last: false,
            refusal: None,
        }
    }
}

/// What one head's framing headers say about its body.
#[derive(Debug, PartialEq, Eq)]
enum BodyKind {
    Length(u64),
    Chunked,
}

/// Check one whole head (up to and including its empty line) as llhttp does in
/// web/http1.py: the body's framing, or the error to answer.
fn check_head(head: &[u8]) -> Result<(BodyKind, bool), GatewayError> {
    // Uninitialised: no 3 KiB memset per request.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Err(headers_too_large()),
        // Obs-fold (a line starting with SP or HTAB), a space before the colon, a bad
        // token or version: all are errors for requests in httparse's default config.
        _ => return Err(malformed()),
    }
    let target = request.path.unwrap_or("");
    let size = target.len()
        + request
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len() + 4)
            .sum::<usize>();
    if size > MAX_HEAD_BYTES {
        return Err(headers_too_large());
    }
    // What hyper would refuse with an empty 400 (it parses the target with `http::Uri`).
    if !target.bytes().all(|b| b.is_ascii_graphic()) || http::Uri::try_from(target).is_err() {
        return Err(malformed());
    }
    let mut length: Option<u64> = None;
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut upgrade = request.method == Some("CONNECT");
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            // One, even when repeated with the same value ("Duplicate Content-Length").
            if length.is_some() {
                return Err(malformed());
            }
            let digits = header.value.trim_ascii();
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(malformed());
            }
            let value = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse::<u64>().ok())
                .ok_or_else(malformed)?;
            length = Some(value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            codings.extend(header.value.split(|b| *b == b',').map(<[u8]>::trim_ascii));
        } else if header.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if codings.is_empty() {
        return Ok((BodyKind::Length(length.unwrap_or(0)), upgrade));
    }
    // Transfer-Encoding: never with a length, never on HTTP/1.0 (hyper refuses that), never
    // empty, and `chunked` once and last (anything else has no length we could trust).
    let chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
    let valid = length.is_none()
        && request.version == Some(1)
        && codings.iter().all(|c| !c.is_empty())
        && codings.last().is_some_and(|c| chunked(c))
        && codings.iter().filter(|c| chunked(c)).count() == 1;
    if valid {
        Ok((BodyKind::Chunked, upgrade))
    } else {
        Err(malformed())
    }
}

/// A head not complete yet: an error as soon as httparse sees one.
fn check_partial(head: &[u8]) -> Result<(), GatewayError> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(head, &mut headers) {
        Ok(_) => Ok(()),
        Err(httparse::Error::TooManyHeaders) => Err(headers_too_large()),
        Err(_) => Err(malformed()),
    }
}

impl Framing {
    /// Bytes of a head are being held (the head deadline applies).
    fn in_head(&self) -> bool {
        self.phase == Phase::Head && self.head_scanned > 0
    }

    fn message_done(&mut self) {
        self.phase = if self.last {
            Phase::Stopped
        } else {
            Phase::Head
        };
    }

    fn refuse(&mut self, error: GatewayError) {
        self.refusal = Some(error);
        self.phase = Phase::Stopped;
    }

    /// How many bytes at the start of ``data`` may go to hyper. ``data`` starts where the
    /// last call stopped handing over (a head not yet complete is passed again, longer).
    pub fn scan(&mut self, data: &[u8]) -> usize {
        let mut pos = 0;
        while pos < data.len() {
            match self.phase {
                Phase::Stopped => return pos,
                Phase::Head => {
                    let head = &data[pos..];
                    let first_look = self.head_scanned == 0;
                    let mut from = self.head_scanned;
                    let mut end = None;
                    let mut new_line = false;
                    while let Some(offset) = memchr::memchr(b'\n', &head[from..]) {
                        let at = from + offset;
                        new_line = true;
                        // Every line ends with CRLF (llhttp: "Expected CRLF").
                        if at == 0 || head[at - 1] != b'\r' {
                            self.refuse(malformed());
                            return pos;
                        }
                        if at >= 3 && &head[at - 3..at] == b"\r\n\r" {
                            end = Some(at + 1);
                            break;
                        }
                        from = at + 1;
                    }
                    let Some(end) = end else {
                        self.head_scanned = head.len();
                        if head.len() > MAX_HEAD_BYTES {
                            self.refuse(headers_too_large());
                        } else if first_look || new_line {
                            // What is there already may be wrong (a TLS hello, garbage): say
                            // so now, as llhttp does, not at the head deadline. Once per line
                            // at most, so that a head sent a byte at a time costs no more
                            // than hyper's own re-parse of it.
                            if let Err(error) = check_partial(head) {
                                self.refuse(error);
                            }
                        }
                        return pos;
                    };
                    self.head_scanned = 0;
                    match check_head(&head[..end]) {
                        Ok((kind, last)) => {
                            pos += end;
                            self.last = last;
                            match kind {
                                BodyKind::Length(0) => self.message_done(),
                                BodyKind::Length(n) => self.phase = Phase::Body(n),
                                BodyKind::Chunked => {
                                    self.phase = Phase::Chunked(Chunk::Size {
                                        value: 0,
                                        digits: 0,
                                    })
                                }
                            }
                        }
                        Err(error) => {
                            self.refuse(error);
                            return pos;
                        }
                    }
                }
                Phase::Body(left) => {
                    let take = left.min((data.len() - pos) as u64);
                    pos += take as usize;
                    if take == left {
                        self.message_done();
                    } else {
                        self.phase = Phase::Body(left - take);
                    }
                }
                Phase::Chunked(Chunk::Data(left)) => {
                    let take = left.min((data.len() - pos) as u64);
                    pos += take as usize;
                    self.phase = Phase::Chunked(if take == left {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left - take)
                    });
                }
                Phase::Chunked(state) => {
                    let byte = data[pos];
                    pos += 1;
                    match self.chunk_step(state, byte) {
                        Some(Some(next)) => self.phase = Phase::Chunked(next),
                        Some(None) => self.message_done(),
                        None => {
                            // Hand hyper the bad byte: it fails the body and answers 400.
                            self.phase = Phase::Stopped;
                            return pos;
                        }
                    }
                }
            }
        }
        pos
    }

    /// One byte of chunked framing: the next state, ``Some(None)`` at the end of the body,
    /// ``None`` when the framing is broken. Stricter than hyper's decoder, never looser.
    fn chunk_step(&self, state: Chunk, byte: u8) -> Option<Option<Chunk>> {
        const MAX_LINE: usize = 4096;
        const MAX_TRAILERS: usize = MAX_HEAD_BYTES;
        let hex = |b: u8| (b as char).to_digit(16).map(u64::from);
        let next = match state {
            Chunk::Size { value, digits } => match byte {
                b if hex(b).is_some() && digits < 16 => Chunk::Size {
                    value: value * 16 + hex(b).unwrap_or(0),
                    digits: digits + 1,
                },
                b' ' | b'\t' if digits > 0 => Chunk::SizeSpace { value },
                b';' if digits > 0 => Chunk::Extension { value, length: 0 },
                b'\r' if digits > 0 => Chunk::SizeLf { value },
                _ => return None,
            },
            Chunk::SizeSpace { value } => match byte {
                b' ' | b'\t' => state,
                b';' => Chunk::Extension { value, length: 0 },
                b'\r' => Chunk::SizeLf { value },
                _ => return None,
            },
            Chunk::Extension { value, length } => match byte {
                b'\r' => Chunk::SizeLf { value },
                b'\n' => return None,
                _ if length < MAX_LINE => Chunk::Extension {
                    value,
                    length: length + 1,
                },
                _ => return None,
            },
            Chunk::SizeLf { value } => match byte {
                b'\n' if value == 0 => Chunk::Trailer { line: 0, total: 0 },
                b'\n' => Chunk::Data(value),
                _ => return None,
            },
            Chunk::Data(_) => unreachable!("data is skipped in bulk"),
            Chunk::DataCr => match byte {
                b'\r' => Chunk::DataLf,
                _ => return None,
            },
            Chunk::DataLf => match byte {
                b'\n' => Chunk::Size {
                    value: 0,
                    digits: 0,
                },
                _ => return None,
            },
            Chunk::Trailer { line, total } => match byte {
                b'\r' => Chunk::TrailerLf { line, total },
                b'\n' => return None,
                _ if total < MAX_TRAILERS => Chunk::Trailer {
                    line: line + 1,
                    total: total + 1,
                },
                _ => return None,
            },
            Chunk::TrailerLf { line, total } => match byte {
                b'\n' if line == 0 => return Some(None),
                b'\n' => Chunk::Trailer { line: 0, total },
                _ => return None,
            },
        };
        Some(Some(next))
    }
}

/// The socket of one gateway connection as hyper sees it (see the module's comment).
pub struct Gate {
    stream: TcpStream,
    shared: Arc<Shared>,
    framing: Framing,
    /// Read and not yet handed over: ``[..ready]`` is checked, the rest is a head being read.
    held: BytesMut,
    ready: usize,
    /// A deadline ended the reading.
    ended: bool,
    /// The client closed its side.
    eof: bool,
    /// No byte of a request came yet (the first-byte deadline applies).
    fresh: bool,
    opened: Instant,
    idle_since: Option<Instant>,
    /// The listener was under pressure at some point since ``idle_since`` (or since
    /// ``opened`` for a fresh connection): the short keep-alive holds until the next request.
    pressed: bool,
    head_started: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    armed: Option<Instant>,
}

impl Gate {
    pub fn new(stream: TcpStream, shared: Arc<Shared>) -> Self {
        Self {
            stream,
            shared,
            framing: Framing::default(),
            held: BytesMut::new(),
            ready: 0,
            ended: false,
            eof: false,
            fresh: true,
            opened: Instant::now(),
            idle_since: None,
            pressed: false,
            head_started: None,
            timer: None,
            armed: None,
        }
    }

    /// Note the bytes handed over by a scan of ``got`` new bytes of which ``ok`` pass.
    fn after_scan(&mut self, got: usize) {
        if got > 0 {
            self.fresh = false;
            self.idle_since = None;
            self.pressed = false;
        }
        if self.framing.in_head() {
            self.head_started.get_or_insert_with(Instant::now);
        } else {
            self.head_started = None;
        }
    }

    /// The socket has nothing to read: end the reading if a deadline passed, else wait for
    /// the earliest one too.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.framing.phase != Phase::Head {
            return Poll::Pending; // a body: the service's read timeout applies
        }
        let guard = &self.shared.guard;
        let (deadline, reason) = if let Some(started) = self.head_started {
            (started + guard.policy.head, Some(TimedOut::Head))
        } else {
            self.pressed |= guard.under_pressure(&self.shared.metrics);
            let (limit, reason) = guard.idle_deadline(self.pressed, self.fresh);
            let since = if self.fresh {
                self.opened
            } else {
                *self.idle_since.get_or_insert_with(Instant::now)
            };
            (since + limit, reason)
        };
        if Instant::now() < deadline {
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if self.armed != Some(deadline) {
                timer.as_mut().reset(deadline);
                self.armed = Some(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        // Passed: reads end here (hyper closes an idle connection at once).
        if let Some(reason) = reason {
            guard.closed_early(reason, &self.shared.metrics);
        }
        if reason == Some(TimedOut::Head) {
            self.framing.refuse(GatewayError::RequestTimeout(
                "the request head did not arrive in time".into(),
            ));
        }
        self.ended = true;
        Poll::Ready(Ok(()))
    }

    /// After hyper is done with the connection: answer a refused head, then close, lingering
    /// when part of a request may still be on its way.
    pub async fn finish(mut self, signal: &Signal) {
        let refusal = self.framing.refusal.take();
        let partial = !(self.framing.phase == Phase::Head && self.held.is_empty());
        if let Some(error) = &refusal {
            let trace_id = crate::proxy::trace_id(None);
            let answer = raw_answer(error, Some(&trace_id), true);
            let _ = tokio::time::timeout(LINGER, self.stream.write_all(&answer)).await;
        }
        if (refusal.is_some() || partial) && !self.eof && !signal.stopping() {
            self.linger(signal).await;
        }
    }

    /// Close our side now, the connection once the client stops sending, after
    /// [`LINGER`] or [`LINGER_BYTES`], or at a stop.
    async fn linger(&mut self, signal: &Signal) {
        let _ = self.stream.shutdown().await;
        let mut deadline = std::pin::pin!(tokio::time::sleep(LINGER));
        let mut scratch = vec![0u8; 16_384];
        let mut dropped = 0u64;
        let stream = &mut self.stream;
        std::future::poll_fn(|cx| {
            signal.register(cx);
            if signal.stopping() || deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            while dropped < LINGER_BYTES {
                let mut buf = ReadBuf::new(&mut scratch);
                match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                        dropped += buf.filled().len() as u64;
                    }
                    Poll::Ready(_) => return Poll::Ready(()),
                }
            }
            Poll::Ready(())
        })
        .await;
    }
}

impl AsyncRead for Gate {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            // Checked bytes first.
            if this.ready > 0 {
                let n = this.ready.min(out.remaining());
                out.put_slice(&this.held[..n]);
                this.held.advance(n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            if this.ended || this.eof || this.framing.phase == Phase::Stopped {
                return Poll::Ready(Ok(())); // end of input for hyper
            }
            if this.held.is_empty() {
                // The usual case: read straight into hyper's buffer, keep back only the
                // start of a head that is not complete yet.
                let before = out.filled().len();
                match Pin::new(&mut this.stream).poll_read(cx, out) {
                    Poll::Pending => return this.poll_deadline(cx),
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Ready(Ok(())) => {}
                }
                let got = out.filled().len() - before;
                if got == 0 {
                    this.eof = true;
                    return Poll::Ready(Ok(()));
                }
                let ok = this.framing.scan(&out.filled()[before..]);
                if ok < got {
                    this.held.extend_from_slice(&out.filled()[before + ok..]);
                    out.set_filled(before + ok);
                }
                this.after_scan(got);
                if ok > 0 {
                    return Poll::Ready(Ok(()));
                }
            } else {
                // A head arrives in pieces: collect it, check it once whole.
                this.held.reserve(4096);
                let start = this.held.len();
                let spare = this.held.spare_capacity_mut();
                let mut buf = ReadBuf::uninit(spare);
                match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                    Poll::Pending => return this.poll_deadline(cx),
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Ready(Ok(())) => {}
                }
                let got = buf.filled().len();
                if got == 0 {
                    // The client went away inside a head: nothing to answer.
                    this.held.clear();
                    this.eof = true;
                    return Poll::Ready(Ok(()));
                }
                // SAFETY: `got` bytes of the spare capacity were just initialised by the read.
                unsafe { this.held.set_len(start + got) };
                this.ready = this.framing.scan(&this.held);
                this.after_scan(got);
            }
        }
    }
}

impl AsyncWrite for Gate {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(data: &[u8]) -> (usize, Framing) {
        let mut framing = Framing::default();
        let n = framing.scan(data);
        (n, framing)
    }

    fn code(data: &[u8]) -> Option<&'static str> {
        scan_all(data).1.refusal.map(|e| e.code())
    }

    #[test]
    fn refuses_what_llhttp_refuses() {
        let malformed = [
            &b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\na",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\na",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\na",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\nHost: x\n\n",
            b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
            b"GARBAGE\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
            b"GET /\xe6\x88\xb7 HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        ];
        for data in malformed {
            assert_eq!(
                code(data),
                Some("request.malformed"),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn accepts_what_llhttp_accepts() {
        let fine = [
            &b"POST / HTTP/1.1\r\nContent-Length: 1 \r\n\r\na"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n",
            b"GET http://h/p?q HTTP/1.1\r\nHost: h\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
        ];
        for data in fine {
            let (n, framing) = scan_all(data);
            assert_eq!(framing.refusal, None, "{}", String::from_utf8_lossy(data));
            assert_eq!(n, data.len(), "{}", String::from_utf8_lossy(data));
            assert_eq!(framing.phase, Phase::Head);
        }
    }

    #[test]
    fn follows_pipelined_requests_and_stops_at_a_bad_one() {
        let good = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz";
        let mut data = good.to_vec();
        data.extend_from_slice(
            b"GET /c HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nz",
        );
        let (n, framing) = scan_all(&data);
        assert_eq!(n, good.len());
        assert_eq!(framing.refusal.map(|e| e.code()), Some("request.malformed"));
    }

    #[test]
    fn a_head_that_is_wrong_already_is_refused_before_it_ends() {
        assert_eq!(
            code(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            Some("request.malformed")
        );
        assert_eq!(
            code(b"GET / HTTP/1.1\r\nBad Name: x"),
            Some("request.malformed")
        );
        assert_eq!(
            code(b"GET / HTTP/1.1\r\nBad Name: x\r\n"),
            Some("request.malformed")
        );
        assert_eq!(code(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn a_head_in_pieces_is_held_until_whole() {
        let data = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\n";
        let mut framing = Framing::default();
        assert_eq!(framing.scan(data), 27);
        assert!(framing.in_head());
        // Passed again from the head's start, longer.
        let mut rest = b"GET /2 HTTP/1.1\r\n".to_vec();
        assert_eq!(framing.scan(&rest), 0);
        rest.extend_from_slice(b"Host: y\r\n\r\n");
        assert_eq!(framing.scan(&rest), rest.len());
        assert!(!framing.in_head());
    }

    #[test]
    fn heads_over_the_limits_get_431() {
        let long = format!("GET / HTTP/1.1\r\nX-Big: {}", "y".repeat(MAX_HEAD_BYTES));
        assert_eq!(code(long.as_bytes()), Some("request.headers_too_large"));
        let whole = format!(
            "GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "y".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(code(whole.as_bytes()), Some("request.headers_too_large"));
        let many: String = (0..=MAX_HEADERS)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(code(many.as_bytes()), Some("request.headers_too_large"));
        let enough: String = (0..MAX_HEADERS).map(|i| format!("X-H{i}: v\r\n")).collect();
        assert_eq!(
            code(format!("GET / HTTP/1.1\r\n{enough}\r\n").as_bytes()),
            None
        );
    }

    #[test]
    fn broken_chunks_stop_after_the_bad_byte() {
        let data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n";
        let (n, framing) = scan_all(data);
        assert_eq!(n, data.len() - "z\r\nab\r\n".len());
        assert_eq!(framing.phase, Phase::Stopped);
        assert_eq!(framing.refusal, None, "hyper answers a broken body itself");
    }

    #[test]
    fn an_upgrade_is_the_last_request() {
        let data = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let (n, framing) = scan_all(data);
        assert_eq!(n, data.len() - "GET / HTTP/1.1\r\n\r\n".len());
        assert_eq!(framing.phase, Phase::Stopped);
    }
}
