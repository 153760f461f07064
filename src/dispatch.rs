//! Getting requests to the host's code: on the I/O thread (INLINE), on library-owned handler
//! threads (POOL), or into a queue the host drains (pull).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::exchange::{lock, Exchange};
use crate::log::{log_at, Logger};
use crate::options::{Handler, ThreadHooks};

std::thread_local! {
    /// Set on threads this library owns (I/O and handler threads): calls that would wait for the
    /// library's own threads (stop, free) must not block there.
    static LIBRARY_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the current thread as one of the library's.
pub(crate) fn mark_library_thread() {
    LIBRARY_THREAD.with(|f| f.set(true));
}

/// Whether the current thread is one of the library's.
pub(crate) fn on_library_thread() -> bool {
    LIBRARY_THREAD.with(|f| f.get())
}

/// A FIFO of requests waiting for a handler thread or for the host to pull them.
pub(crate) struct RequestQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    items: VecDeque<Exchange>,
    closed: bool,
    /// Threads waiting in `pop`: a push wakes one only when there is one, since a wake-up is a
    /// system call on the I/O thread's hot path.
    waiting: usize,
}

impl RequestQueue {
    pub(crate) fn new() -> Self {
        RequestQueue {
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                closed: false,
                waiting: 0,
            }),
            ready: Condvar::new(),
        }
    }

    pub(crate) fn push(&self, exchange: Exchange) {
        let mut state = lock(&self.state);
        if state.closed {
            drop(state);
            // Nobody will take it: answer rather than leave the client hanging.
            let _ = exchange.fail();
            return;
        }
        state.items.push_back(exchange);
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Takes the next live request, waiting up to `timeout` (forever when `None`).
    pub(crate) fn pop(&self, timeout: Option<Duration>) -> Result<Exchange> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut state = lock(&self.state);
        loop {
            while let Some(exchange) = state.items.pop_front() {
                // A request whose client already left needs no handler.
                if !exchange.is_aborted() {
                    return Ok(exchange);
                }
            }
            if state.closed {
                return Err(Error::Stopped);
            }
            let wait = match deadline {
                None => None,
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::Timeout);
                    }
                    Some(deadline - now)
                }
            };
            state.waiting += 1;
            state = match wait {
                None => self.ready.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(wait) => {
                    self.ready
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            state.waiting -= 1;
        }
    }

    /// Refuses new requests and wakes every waiter; queued requests are still handed out.
    pub(crate) fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_all();
    }
}

/// Runs the handler and turns an error or a panic into a failed response.
pub(crate) fn run_handler(handler: &dyn Handler, exchange: Exchange, logger: &Logger) {
    let keep = exchange.clone();
    let outcome = catch_unwind(AssertUnwindSafe(|| handler.handle(exchange)));
    let why = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "the handler panicked".to_string(),
    };
    log_at!(
        logger,
        Error,
        "kestrel.application",
        "request {} failed: {}",
        keep.request().id(),
        why
    );
    let _ = keep.fail();
}

/// Starts `count` handler threads serving `queue`.
pub(crate) fn start_pool(
    count: usize,
    queue: Arc<RequestQueue>,
    handler: Arc<dyn Handler>,
    hooks: Option<Arc<dyn ThreadHooks>>,
    logger: Logger,
) -> Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::with_capacity(count);
    for i in 0..count {
        let (work, handler, hooks, logger) = (
            queue.clone(),
            handler.clone(),
            hooks.clone(),
            logger.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("kestrel-handler-{i}"))
            .spawn(move || {
                mark_library_thread();
                if let Some(h) = &hooks {
                    let _ = catch_unwind(AssertUnwindSafe(|| h.on_start()));
                }
                while let Ok(exchange) = work.pop(None) {
                    run_handler(handler.as_ref(), exchange, &logger);
                }
                if let Some(h) = &hooks {
                    let _ = catch_unwind(AssertUnwindSafe(|| h.on_stop()));
                }
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                queue.close();
                for t in threads {
                    let _ = t.join();
                }
                return Err(Error::Io(e));
            }
        }
    }
    Ok(threads)
}
