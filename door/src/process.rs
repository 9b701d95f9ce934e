//! What every long-running binary of the network does the same way: logs to stderr filtered by
//! `RUST_LOG` (a default level otherwise), and waits for SIGTERM or SIGINT to shut down gracefully.

/// Logs to stderr, filtered by `RUST_LOG`, else at `default` (e.g. `"info"`). Call once.
pub fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Resolves at SIGTERM or SIGINT (Ctrl-C where there are no Unix signals).
#[cfg(unix)]
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Resolves at SIGTERM or SIGINT (Ctrl-C where there are no Unix signals).
#[cfg(not(unix))]
pub async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
