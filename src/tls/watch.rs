//! Optional certificate file watching: poll the files' metadata, reload the endpoint when it
//! changes. Polling (rather than inotify) works the same for every file system and for the
//! rename-into-place that certificate tools do; the interval bounds the delay.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::acceptor::TlsAcceptor;
use crate::log::log_at;
use crate::server::{Phase, ServerContext};

/// What identifies a version of a file: modification time, size and inode. `None` when missing.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())))
        })
        .collect()
}

/// Reloads `acceptor` whenever one of its certificate files changes, until the server stops. A
/// failed reload is logged and leaves the current certificates in place; it is retried when the
/// files change again.
pub(crate) async fn watch_files(
    acceptor: Arc<TlsAcceptor>,
    interval: Duration,
    ctx: Arc<ServerContext>,
) {
    let files: Vec<PathBuf> = match acceptor.options() {
        Some(options) => options
            .certificates
            .iter()
            .flat_map(|c| c.source.files())
            .map(PathBuf::from)
            .collect(),
        None => return,
    };
    if files.is_empty() {
        return;
    }
    let files = Arc::new(files);
    // Metadata reads may block (network file systems): off the I/O threads.
    let poll = move || {
        let files = files.clone();
        tokio::task::spawn_blocking(move || stamps(&files))
    };
    let Ok(mut last) = poll().await else { return };
    let mut phase = ctx.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = async { phase.wait_for(|p| *p != Phase::Running).await.map(|_| ()) } => return,
        }
        let Ok(now) = poll().await else { return };
        if now == last {
            continue;
        }
        last = now;
        let reloading = acceptor.clone();
        let outcome = tokio::task::spawn_blocking(move || reloading.prepare_reload()).await;
        match outcome {
            Ok(Ok(prepared)) => {
                acceptor.install(prepared, &ctx.logger, "certificate files changed, reloaded")
            }
            Ok(Err(e)) => log_at!(
                ctx.logger,
                Error,
                "kestrel.tls",
                "{}: certificate files changed but cannot be used, keeping the current ones: {}",
                acceptor.endpoint(),
                e
            ),
            Err(_) => return,
        }
    }
}
