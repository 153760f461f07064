//! Diagnostics: log records go to a sink the host installs; nothing process-global is touched.

use std::fmt;
use std::sync::Arc;

/// Severity of a log record, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum LogLevel {
    /// Per-request detail.
    Trace = 0,
    /// Per-connection detail (connection errors from misbehaving peers land here).
    Debug = 1,
    /// Lifecycle: endpoints bound, server stopped.
    Info = 2,
    /// Something the operator should look at, the server keeps working.
    Warn = 3,
    /// A failure: a handler error, an endpoint that stopped accepting.
    Error = 4,
}

impl LogLevel {
    /// The level for a raw number, if it names one.
    pub fn from_u32(n: u32) -> Option<LogLevel> {
        Some(match n {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            _ => return None,
        })
    }
}

/// Receives log records: level, category (`kestrel.connections`, `kestrel.application`...),
/// message. Called on whatever thread logged, I/O threads included: it must not block.
pub type LogSink = Arc<dyn Fn(LogLevel, &str, &str) + Send + Sync>;

/// A sink with its threshold. Formatting happens only for records that pass the threshold.
#[derive(Clone, Default)]
pub(crate) struct Logger {
    sink: Option<(LogSink, LogLevel)>,
}

impl Logger {
    pub(crate) fn new(sink: Option<(LogSink, LogLevel)>) -> Self {
        Logger { sink }
    }

    pub(crate) fn enabled(&self, level: LogLevel) -> bool {
        matches!(&self.sink, Some((_, min)) if level >= *min)
    }

    pub(crate) fn log(&self, level: LogLevel, category: &str, message: fmt::Arguments<'_>) {
        if let Some((sink, min)) = &self.sink {
            if level >= *min {
                let text = message.to_string();
                sink(level, category, &text);
            }
        }
    }
}

/// Logs through a [`Logger`] without formatting when the level is filtered out.
macro_rules! log_at {
    ($logger:expr, $level:ident, $category:expr, $($arg:tt)+) => {
        if $logger.enabled($crate::log::LogLevel::$level) {
            $logger.log($crate::log::LogLevel::$level, $category, format_args!($($arg)+));
        }
    };
}
pub(crate) use log_at;
