//! One request and its response: the object a handler works on.
//!
//! An [`Exchange`] is shared between the connection task (which waits for the response head and
//! then pulls the body) and the host (which may answer from any thread). All response state lives
//! behind one mutex; writers that must wait for buffer space wait on a condition variable (host
//! threads) or register a callback (I/O threads, which never block).

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, SERVER, TRAILER};
use hyper::StatusCode;
use std::future::Future;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::request::{ConnectionInfo, RequestHead};
use crate::server::ServerContext;

/// Chunk size for file bodies.
const FILE_CHUNK: usize = 64 * 1024;

type WritableCallback = Box<dyn FnOnce(Result<()>) + Send>;
type ReadCallback = Box<dyn FnOnce(Result<Bytes>) + Send>;

/// A request and its response. Cheap to clone; every clone refers to the same exchange.
#[derive(Clone)]
pub struct Exchange {
    shared: Arc<Shared>,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("id", &self.shared.head.id())
            .finish()
    }
}

pub(crate) struct Shared {
    head: RequestHead,
    ctx: Arc<ServerContext>,
    reader: Mutex<Reader>,
    response: Mutex<ResponseState>,
    /// Signalled when buffered response data drains, or on abort.
    space: Condvar,
    aborted: AtomicBool,
    completed: AtomicBool,
    settled: AtomicBool,
    abort_hooks: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

struct Reader {
    incoming: Option<Incoming>,
    pending: Bytes,
    finished: bool,
}

struct ResponseState {
    started: bool,
    status: StatusCode,
    headers: HeaderMap,
    trailers: Option<HeaderMap>,
    head_tx: Option<oneshot::Sender<hyper::Response<ResponseBody>>>,
    chunks: VecDeque<Bytes>,
    buffered: usize,
    ended: bool,
    failed: bool,
    body_waker: Option<Waker>,
    writable: Vec<WritableCallback>,
    /// A response to HEAD: the head is sent, body bytes the host writes are dropped.
    discard_body: bool,
    /// Trailer names the sent head announced (`Trailer` header), lower-case.
    announced_trailers: Vec<HeaderName>,
}

/// Whether the current thread may block: not on a tokio worker (an I/O thread).
pub(crate) fn may_block() -> bool {
    tokio::runtime::Handle::try_current().is_err()
}

impl Exchange {
    pub(crate) fn new(
        request: hyper::Request<Incoming>,
        conn: Arc<ConnectionInfo>,
        ctx: Arc<ServerContext>,
    ) -> (Exchange, oneshot::Receiver<hyper::Response<ResponseBody>>) {
        let (parts, incoming) = request.into_parts();
        let (head_tx, head_rx) = oneshot::channel();
        let finished = incoming.is_end_stream();
        ctx.request_started();
        let shared = Shared {
            head: RequestHead::new(parts, conn),
            ctx,
            reader: Mutex::new(Reader {
                incoming: Some(incoming),
                pending: Bytes::new(),
                finished,
            }),
            response: Mutex::new(ResponseState {
                started: false,
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                trailers: None,
                head_tx: Some(head_tx),
                chunks: VecDeque::new(),
                buffered: 0,
                ended: false,
                failed: false,
                body_waker: None,
                writable: Vec::new(),
                discard_body: false,
                announced_trailers: Vec::new(),
            }),
            space: Condvar::new(),
            aborted: AtomicBool::new(false),
            completed: AtomicBool::new(false),
            settled: AtomicBool::new(false),
            abort_hooks: Mutex::new(Vec::new()),
        };
        (
            Exchange {
                shared: Arc::new(shared),
            },
            head_rx,
        )
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The request head.
    pub fn request(&self) -> &RequestHead {
        &self.shared.head
    }

    /// Whether the client went away or the server aborted the request.
    pub fn is_aborted(&self) -> bool {
        self.shared.aborted.load(Ordering::Acquire)
    }

    /// Whether the response was completed (sent, ended, failed, or completed after an abort).
    pub fn is_completed(&self) -> bool {
        self.shared.completed.load(Ordering::Acquire)
    }

    /// Runs `hook` once when the request is aborted; at once if it already was. The hook runs on
    /// the thread that noticed the abort (usually an I/O thread) and must not block.
    pub fn on_abort(&self, hook: Box<dyn FnOnce() + Send>) {
        let mut hooks = lock(&self.shared.abort_hooks);
        if self.is_aborted() {
            drop(hooks);
            hook();
        } else {
            hooks.push(hook);
        }
    }

    // ----- request body -----

    /// Reads body bytes into `buf`, blocking until some arrive; `Ok(0)` at the end of the body.
    /// The first read answers `Expect: 100-continue`. Not allowed on an I/O thread
    /// ([`Error::WouldBlock`]): use [`Exchange::read_async`] there.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        if !may_block() {
            return Err(Error::WouldBlock);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let shared = &self.shared;
        let mut incoming = match shared.take_ready_or_incoming(buf)? {
            Taken::Ready(n) => return Ok(n),
            Taken::Incoming(incoming) => incoming,
        };
        let chunk = shared.ctx.runtime().block_on(next_chunk(&mut incoming));
        shared.put_back(incoming, chunk, buf)
    }

    /// Reads up to `max` body bytes without blocking the caller: `done` runs on an I/O thread with
    /// the bytes (empty at the end of the body) or the error. Always completes asynchronously.
    pub fn read_async(&self, max: usize, done: ReadCallback) -> Result<()> {
        let shared = self.shared.clone();
        let mut reader = lock(&shared.reader);
        if reader.incoming.is_none() && !reader.finished {
            return Err(Error::InvalidState("another read is in progress".into()));
        }
        let max = max.max(1);
        if !reader.pending.is_empty() || reader.finished {
            let n = reader.pending.len().min(max);
            let chunk = reader.pending.split_to(n);
            drop(reader);
            shared.ctx.runtime().spawn(async move { done(Ok(chunk)) });
            return Ok(());
        }
        let Some(mut incoming) = reader.incoming.take() else {
            return Err(Error::InvalidState("another read is in progress".into()));
        };
        drop(reader);
        let runtime = shared.ctx.runtime().clone();
        runtime.spawn(async move {
            let chunk = next_chunk(&mut incoming).await;
            let mut reader = lock(&shared.reader);
            reader.incoming = Some(incoming);
            let result = match shared.settle_chunk(&mut reader, chunk) {
                Ok(()) => {
                    let n = reader.pending.len().min(max);
                    Ok(reader.pending.split_to(n))
                }
                Err(e) => Err(e),
            };
            drop(reader);
            if result.is_err() {
                shared.abort();
            }
            done(result);
        });
        Ok(())
    }

    // ----- response head -----

    /// Sets the status code (200..=999). Only before the response started.
    pub fn set_status(&self, status: u16) -> Result<()> {
        let code = StatusCode::from_u16(status)
            .ok()
            .filter(|c| !c.is_informational())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "status {status} is not a final status code (200..=999)"
                ))
            })?;
        let mut state = self.shared.open_head()?;
        state.status = code;
        Ok(())
    }

    /// Adds a header (repeats allowed). Only before the response started.
    pub fn add_header(&self, name: &[u8], value: &[u8]) -> Result<()> {
        let (name, value) = header_pair(name, value)?;
        self.shared.open_head()?.headers.append(name, value);
        Ok(())
    }

    /// Sets a header, replacing every earlier value. Only before the response started.
    pub fn set_header(&self, name: &[u8], value: &[u8]) -> Result<()> {
        let (name, value) = header_pair(name, value)?;
        self.shared.open_head()?.headers.insert(name, value);
        Ok(())
    }

    /// Removes every value of a header; `Ok(false)` when there was none.
    pub fn remove_header(&self, name: &[u8]) -> Result<bool> {
        let name = header_name(name)?;
        Ok(self.shared.open_head()?.headers.remove(name).is_some())
    }

    /// Adds a trailer, sent after the body. HTTP/2 always carries trailers. HTTP/1.1 carries the
    /// trailers added before the response started (they are announced in a `Trailer` header) to
    /// clients that sent `TE: trailers`; others are dropped, as the protocol requires.
    pub fn add_trailer(&self, name: &[u8], value: &[u8]) -> Result<()> {
        let (name, value) = header_pair(name, value)?;
        let mut state = self.shared.open()?;
        if state.ended {
            return Err(Error::AlreadyCompleted);
        }
        if state.started
            && self.shared.head.version().starts_with("HTTP/1")
            && !state.announced_trailers.contains(&name)
        {
            return Err(Error::InvalidState(format!(
                "on HTTP/1.1 a trailer must be added before the response starts, or announced in \
                 a Trailer header ({name} was not)"
            )));
        }
        state
            .trailers
            .get_or_insert_with(HeaderMap::new)
            .append(name, value);
        Ok(())
    }

    // ----- completing -----

    /// Completes the response with `body` as the whole body (Content-Length set).
    pub fn send(&self, body: Bytes) -> Result<()> {
        let shared = &self.shared;
        let mut state = shared.completing()?;
        if state.started {
            return Err(Error::InvalidState(
                "the response already started; write and end it".into(),
            ));
        }
        let trailers = state.trailers.take();
        let undelivered = shared.start(&mut state, ResponseBody::full(body, trailers));
        shared.mark_completed();
        drop(state);
        drop(undelivered);
        Ok(())
    }

    /// Completes the response with `len` bytes of `file` from `offset` (the rest of the file when
    /// `len` is `None`). The file is read on I/O threads as the client accepts data.
    pub fn send_file(&self, file: std::fs::File, offset: u64, len: Option<u64>) -> Result<()> {
        let meta = file.metadata().map_err(Error::Io)?;
        if !meta.is_file() {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let size = meta.len();
        if offset > size {
            return Err(Error::InvalidArgument(format!(
                "offset {offset} is past the end of the file ({size} bytes)"
            )));
        }
        let len = len.unwrap_or(size - offset);
        if len > size - offset {
            return Err(Error::InvalidArgument(format!(
                "range {offset}+{len} is past the end of the file ({size} bytes)"
            )));
        }
        let shared = &self.shared;
        let mut state = shared.completing()?;
        if state.started {
            return Err(Error::InvalidState(
                "the response already started; write and end it".into(),
            ));
        }
        state.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        let trailers = state.trailers.take();
        let body = ResponseBody(BodyKind::File {
            file: Arc::new(file),
            offset,
            remaining: len,
            reading: None,
            trailers,
        });
        let undelivered = shared.start(&mut state, body);
        shared.mark_completed();
        drop(state);
        drop(undelivered);
        Ok(())
    }

    /// Writes body bytes, starting the response (head first) if needed.
    ///
    /// Off I/O threads, waits until the data fits in the response buffer (backpressure). On an I/O
    /// thread it never waits: while the buffer is not full the write is taken whole (so the buffer
    /// may exceed its bound by this one write); when it is full the write returns
    /// [`Error::WouldBlock`] and writes nothing, and [`Exchange::on_writable`] tells when to try
    /// again. Both use the same test, so a refused write is always followed by a wait.
    pub fn write(&self, data: &[u8]) -> Result<()> {
        let blocking = may_block();
        let limit = self.shared.ctx.response_buffer;
        if blocking && data.len() > limit {
            for piece in data.chunks(limit) {
                self.write_bytes(Bytes::copy_from_slice(piece), true)?;
            }
            return Ok(());
        }
        self.write_bytes_with(data.len(), || Bytes::copy_from_slice(data), blocking)
    }

    /// Like [`Exchange::write`] with bytes the caller already owns (no copy).
    pub fn write_bytes(&self, data: Bytes, blocking: bool) -> Result<()> {
        let len = data.len();
        self.write_bytes_with(len, move || data, blocking)
    }

    fn write_bytes_with(
        &self,
        len: usize,
        make: impl FnOnce() -> Bytes,
        blocking: bool,
    ) -> Result<()> {
        let shared = &self.shared;
        let limit = shared.ctx.response_buffer;
        let mut state = shared.streaming()?;
        if len == 0 || state.discard_body {
            return Ok(());
        }
        loop {
            if shared.is_aborted() {
                return Err(Error::Cancelled);
            }
            let fits = if blocking {
                state.buffered == 0 || state.buffered + len <= limit
            } else {
                // The same test as on_writable's: otherwise a write larger than the room left
                // would be refused, then called back at once, forever.
                state.buffered < limit
            };
            if fits {
                break;
            }
            if !blocking {
                return Err(Error::WouldBlock);
            }
            state = shared.space.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.buffered += len;
        state.chunks.push_back(make());
        if let Some(waker) = state.body_waker.take() {
            waker.wake();
        }
        Ok(())
    }

    /// Calls `callback` once the response buffer has room (at once, on this thread, if it has),
    /// with `Err(Cancelled)` if the request is aborted first. For I/O-thread writers.
    pub fn on_writable(&self, callback: WritableCallback) -> Result<()> {
        let limit = self.shared.ctx.response_buffer;
        let mut state = self.shared.open()?;
        if state.buffered < limit {
            drop(state);
            callback(Ok(()));
            return Ok(());
        }
        state.writable.push(callback);
        Ok(())
    }

    /// Starts the response if needed and, off I/O threads, waits until every written byte was
    /// handed to the connection.
    pub fn flush(&self) -> Result<()> {
        let shared = &self.shared;
        let mut state = shared.streaming()?;
        if !may_block() {
            return Ok(());
        }
        while state.buffered > 0 {
            if shared.is_aborted() {
                return Err(Error::Cancelled);
            }
            state = shared.space.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    }

    /// Completes the response: ends a streamed body (then trailers follow), or sends the head
    /// with an empty body if nothing was written.
    pub fn end(&self) -> Result<()> {
        self.finish(
            |state| state.ended = true,
            |state| ResponseBody::full(Bytes::new(), state.trailers.take()),
        )
    }

    /// Completes the request as failed: 500 with an empty body when nothing was sent yet,
    /// otherwise the response is cut off (HTTP/1.1: the connection closes; HTTP/2: the stream is
    /// reset) so the client cannot mistake it for a whole one.
    pub fn fail(&self) -> Result<()> {
        self.finish(
            |state| state.failed = true,
            |state| {
                state.status = StatusCode::INTERNAL_SERVER_ERROR;
                state.headers.clear();
                state.trailers = None;
                ResponseBody::full(Bytes::new(), None)
            },
        )
    }

    /// Completes the exchange: a started (streamed) response is marked by `streamed` and its body
    /// woken to see the mark; one not started yet is started with the body `unstarted` makes.
    fn finish(
        &self,
        streamed: impl FnOnce(&mut ResponseState),
        unstarted: impl FnOnce(&mut ResponseState) -> ResponseBody,
    ) -> Result<()> {
        let shared = &self.shared;
        let mut state = shared.completing()?;
        let mut undelivered = None;
        if state.started {
            streamed(&mut state);
            if let Some(waker) = state.body_waker.take() {
                waker.wake();
            }
        } else {
            let body = unstarted(&mut state);
            undelivered = shared.start(&mut state, body);
        }
        shared.mark_completed();
        drop(state);
        drop(undelivered);
        Ok(())
    }
}

enum Taken {
    Ready(usize),
    Incoming(Incoming),
}

impl Shared {
    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Marks the request aborted and wakes everything waiting on it. Idempotent.
    pub(crate) fn abort(&self) {
        if self.aborted.swap(true, Ordering::AcqRel) {
            return;
        }
        self.settle();
        let callbacks = {
            let mut state = lock(&self.response);
            if let Some(tx) = state.head_tx.take() {
                // Nothing was sent. If the client is still there (the abort came from a request
                // body that broke its framing), it gets a 400 and the connection closes; if it is
                // gone, the send fails and nothing happens.
                let _ = tx.send(bad_request());
            }
            // A streamed body waiting for data wakes up to see the abort and end the stream.
            if let Some(waker) = state.body_waker.take() {
                waker.wake();
            }
            std::mem::take(&mut state.writable)
        };
        self.space.notify_all();
        for callback in callbacks {
            callback(Err(Error::Cancelled));
        }
        let hooks = std::mem::take(&mut *lock(&self.abort_hooks));
        for hook in hooks {
            hook();
        }
    }

    fn settle(&self) {
        if !self.settled.swap(true, Ordering::AcqRel) {
            self.ctx.request_settled();
        }
    }

    fn mark_completed(&self) {
        self.completed.store(true, Ordering::Release);
        self.settle();
    }

    /// The response state, if the exchange is still open for changes.
    fn open(&self) -> Result<MutexGuard<'_, ResponseState>> {
        if self.completed.load(Ordering::Acquire) {
            return Err(Error::AlreadyCompleted);
        }
        if self.is_aborted() {
            return Err(Error::Cancelled);
        }
        Ok(lock(&self.response))
    }

    /// The response state, if the head can still change.
    fn open_head(&self) -> Result<MutexGuard<'_, ResponseState>> {
        let state = self.open()?;
        if state.started {
            return Err(Error::InvalidState(
                "the response head was already sent".into(),
            ));
        }
        Ok(state)
    }

    /// The response state for writing body bytes: open, not ended, and started as a streamed
    /// response (the head goes out now if it has not yet).
    fn streaming(self: &Arc<Self>) -> Result<MutexGuard<'_, ResponseState>> {
        let mut state = self.open()?;
        if state.ended {
            return Err(Error::AlreadyCompleted);
        }
        if !state.started {
            let body = ResponseBody(BodyKind::Stream {
                shared: self.clone(),
                done: false,
            });
            if let Some(undelivered) = self.start(&mut state, body) {
                drop(state);
                drop(undelivered);
                return Err(Error::Cancelled);
            }
        }
        Ok(state)
    }

    /// The response state for an operation that completes the exchange. After an abort it
    /// completes at once and reports [`Error::Cancelled`].
    fn completing(&self) -> Result<MutexGuard<'_, ResponseState>> {
        let state = lock(&self.response);
        if self.completed.load(Ordering::Acquire) {
            return Err(Error::AlreadyCompleted);
        }
        if self.is_aborted() {
            self.completed.store(true, Ordering::Release);
            return Err(Error::Cancelled);
        }
        Ok(state)
    }

    /// Hands the response head to the connection. Returns the response if the connection is
    /// already gone: the caller must drop it only after releasing `state`'s lock, because
    /// dropping a streamed body aborts the exchange, which takes that lock.
    #[must_use]
    fn start(
        &self,
        state: &mut ResponseState,
        mut body: ResponseBody,
    ) -> Option<hyper::Response<ResponseBody>> {
        state.started = true;
        let mut headers = std::mem::take(&mut state.headers);
        if self.head.method() == "HEAD" {
            // The same head as for GET, no body: HTTP/2 would otherwise send the bytes, and
            // HTTP/1.1 would drop a streamed body unread (which reads as an abort).
            if let Some(len) = body.exact_len() {
                headers
                    .entry(CONTENT_LENGTH)
                    .or_insert_with(|| HeaderValue::from(len));
            }
            if let BodyKind::Stream { done, .. } = &mut body.0 {
                *done = true; // not an abort: see ResponseBody's Drop
            }
            state.discard_body = true;
            state.trailers = None;
            body = ResponseBody::full(Bytes::new(), None);
        }
        let mut response = hyper::Response::new(body);
        *response.status_mut() = state.status;
        if let Some(trailers) = &state.trailers {
            // HTTP/1.1 sends only trailers announced in the head (and only to clients that sent
            // `TE: trailers`); HTTP/2 ignores the announcement.
            if !headers.contains_key(TRAILER) {
                let names: Vec<&str> = trailers.keys().map(|k| k.as_str()).collect();
                if let Ok(value) = HeaderValue::from_str(&names.join(", ")) {
                    headers.insert(TRAILER, value);
                }
            }
        }
        state.announced_trailers = headers
            .get_all(TRAILER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        if self.ctx.server_header && !headers.contains_key(SERVER) {
            headers.insert(SERVER, HeaderValue::from_static("kestrel"));
        }
        *response.headers_mut() = headers;
        match state.head_tx.take() {
            Some(tx) => tx.send(response).err(),
            None => Some(response),
        }
    }

    fn take_ready_or_incoming(&self, buf: &mut [u8]) -> Result<Taken> {
        let mut reader = lock(&self.reader);
        if !reader.pending.is_empty() {
            return Ok(Taken::Ready(copy_out(&mut reader.pending, buf)));
        }
        if reader.finished {
            return Ok(Taken::Ready(0));
        }
        if self.is_aborted() {
            return Err(Error::Cancelled);
        }
        reader
            .incoming
            .take()
            .map(Taken::Incoming)
            .ok_or_else(|| Error::InvalidState("another read is in progress".into()))
    }

    fn put_back(&self, incoming: Incoming, chunk: Chunk, buf: &mut [u8]) -> Result<usize> {
        let mut reader = lock(&self.reader);
        reader.incoming = Some(incoming);
        let settled = self.settle_chunk(&mut reader, chunk);
        let n = copy_out(&mut reader.pending, buf);
        drop(reader);
        settled.map(|()| n).inspect_err(|_| self.abort())
    }

    /// Files a chunk read from the body. An error means the request cannot go on: the caller
    /// aborts the exchange once it has released the reader lock (abort runs host callbacks).
    fn settle_chunk(&self, reader: &mut Reader, chunk: Chunk) -> Result<()> {
        match chunk {
            Chunk::Data(data) => {
                reader.pending = data;
                Ok(())
            }
            Chunk::End => {
                // A torn-down connection also ends the stream; that is an abort, not an end.
                if self.is_aborted() || self.head.connection().torn_down.load(Ordering::Acquire) {
                    return Err(Error::Cancelled);
                }
                reader.finished = true;
                Ok(())
            }
            // The body cannot be completed (client gone, stream reset, bad framing): the request
            // is over even if hyper has not dropped it yet.
            Chunk::Failed => Err(Error::Cancelled),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.settle();
    }
}

fn copy_out(pending: &mut Bytes, buf: &mut [u8]) -> usize {
    let n = pending.len().min(buf.len());
    buf[..n].copy_from_slice(&pending.split_to(n));
    n
}

enum Chunk {
    Data(Bytes),
    End,
    Failed,
}

/// The next non-empty data chunk; trailers of the request are skipped.
async fn next_chunk(incoming: &mut Incoming) -> Chunk {
    loop {
        match incoming.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => return Chunk::Data(data),
                _ => continue,
            },
            Some(Err(_)) => return Chunk::Failed,
            None => return Chunk::End,
        }
    }
}

fn header_name(name: &[u8]) -> Result<HeaderName> {
    HeaderName::from_bytes(name).map_err(|_| {
        Error::InvalidHeader(format!(
            "{:?} is not a valid header name",
            String::from_utf8_lossy(name)
        ))
    })
}

fn header_pair(name: &[u8], value: &[u8]) -> Result<(HeaderName, HeaderValue)> {
    let name = header_name(name)?;
    let value = HeaderValue::from_bytes(value).map_err(|_| {
        Error::InvalidHeader(format!(
            "the value of {name} contains a forbidden byte (CR, LF, NUL or another control)"
        ))
    })?;
    Ok((name, value))
}

/// Locks a mutex, recovering from poisoning: no code path panics while holding these locks, and
/// a host thread must never be taken down by another's panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The body hyper pulls from: whole, streamed from the exchange, or read from a file.
pub(crate) struct ResponseBody(BodyKind);

enum BodyKind {
    Full {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Stream {
        shared: Arc<Shared>,
        done: bool,
    },
    /// Read at explicit offsets (never the descriptor's own position, which a duplicated host
    /// descriptor shares) on tokio's blocking pool, one chunk at a time.
    File {
        file: Arc<std::fs::File>,
        offset: u64,
        remaining: u64,
        reading: Option<tokio::task::JoinHandle<std::io::Result<Vec<u8>>>>,
        trailers: Option<HeaderMap>,
    },
}

/// Why a response body stopped early.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The handler failed after the response started.
    Failed,
    /// The request was aborted while the response streamed.
    Aborted,
    /// Reading the file failed.
    File(std::io::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Failed => f.write_str("the handler failed the response"),
            BodyError::Aborted => f.write_str("the request was aborted"),
            BodyError::File(e) => write!(f, "reading the response file failed: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// The answer to a request whose body broke its framing.
fn bad_request() -> hyper::Response<ResponseBody> {
    let mut response = ResponseBody::status(StatusCode::BAD_REQUEST);
    response
        .headers_mut()
        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

impl ResponseBody {
    fn exact_len(&self) -> Option<u64> {
        match &self.0 {
            BodyKind::Full { data, .. } => Some(data.as_ref().map_or(0, |d| d.len() as u64)),
            BodyKind::File { remaining, .. } => Some(*remaining),
            BodyKind::Stream { .. } => None,
        }
    }

    pub(crate) fn full(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        ResponseBody(BodyKind::Full {
            data: (!data.is_empty()).then_some(data),
            trailers,
        })
    }

    pub(crate) fn status(status: StatusCode) -> hyper::Response<ResponseBody> {
        let mut response = hyper::Response::new(ResponseBody::full(Bytes::new(), None));
        *response.status_mut() = status;
        response
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BodyError>>> {
        match &mut self.0 {
            BodyKind::Full { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            BodyKind::Stream { shared, done } => {
                if *done {
                    return Poll::Ready(None);
                }
                if shared.is_aborted() {
                    *done = true;
                    return Poll::Ready(Some(Err(BodyError::Aborted)));
                }
                let limit = shared.ctx.response_buffer;
                let mut state = lock(&shared.response);
                if let Some(chunk) = state.chunks.pop_front() {
                    let was_full = state.buffered >= limit;
                    state.buffered -= chunk.len();
                    let callbacks = if was_full && state.buffered < limit {
                        std::mem::take(&mut state.writable)
                    } else {
                        Vec::new()
                    };
                    drop(state);
                    shared.space.notify_all();
                    for callback in callbacks {
                        callback(Ok(()));
                    }
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if state.failed {
                    *done = true;
                    return Poll::Ready(Some(Err(BodyError::Failed)));
                }
                if state.ended {
                    let trailers = state.trailers.take();
                    drop(state);
                    *done = true;
                    return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                }
                state.body_waker = Some(cx.waker().clone());
                Poll::Pending
            }
            BodyKind::File {
                file,
                offset,
                remaining,
                reading,
                trailers,
            } => {
                if *remaining == 0 {
                    return Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))));
                }
                let task = reading.get_or_insert_with(|| {
                    let (file, at) = (file.clone(), *offset);
                    let want = (*remaining).min(FILE_CHUNK as u64) as usize;
                    tokio::task::spawn_blocking(move || {
                        use std::os::unix::fs::FileExt;
                        let mut chunk = vec![0u8; want];
                        let n = file.read_at(&mut chunk, at)?;
                        chunk.truncate(n);
                        Ok(chunk)
                    })
                });
                let outcome = match Pin::new(task).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(joined) => joined,
                };
                *reading = None;
                let chunk = match outcome {
                    Ok(Ok(chunk)) if !chunk.is_empty() => chunk,
                    Ok(Ok(_)) => {
                        *remaining = 0;
                        let e = std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the file shrank while being sent",
                        );
                        return Poll::Ready(Some(Err(BodyError::File(e))));
                    }
                    Ok(Err(e)) => {
                        *remaining = 0;
                        return Poll::Ready(Some(Err(BodyError::File(e))));
                    }
                    Err(join) => {
                        *remaining = 0;
                        let e = std::io::Error::other(join.to_string());
                        return Poll::Ready(Some(Err(BodyError::File(e))));
                    }
                };
                *offset += chunk.len() as u64;
                *remaining -= chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            BodyKind::Full { data, trailers } => data.is_none() && trailers.is_none(),
            BodyKind::Stream { done, .. } => *done,
            BodyKind::File {
                remaining,
                trailers,
                ..
            } => *remaining == 0 && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            BodyKind::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            BodyKind::Stream { .. } => SizeHint::default(),
            BodyKind::File { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A streamed body dropped before its end means the client (or the server) gave up on it.
        if let BodyKind::Stream {
            shared,
            done: false,
        } = &self.0
        {
            shared.abort();
        }
    }
}
