//! What every long-running binary of the network does the same way: takes its memory in small
//! pages (no transparent huge pages), logs to stderr filtered by `RUST_LOG` (a default level
//! otherwise), and waits for SIGTERM or SIGINT to shut down gracefully.

/// Asks Linux never to back this process's memory (and its children's) with transparent huge
/// pages; call first thing in `main`. The allocator asks for huge pages where the system allows
/// them, and the first touch of each 2 MiB page zeroes all of it in the page fault, on whichever
/// thread touched it: while a switch's caches and an issuer's holds fill, answers stalled behind
/// those faults (the load bench at 8,000/s for 4 s: p99 260–340 ms with them, 7–9 ms without,
/// six runs each). Databases and caches on Linux advise the same. Whether it was set; elsewhere
/// than Linux, nothing to do (false).
pub fn no_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        rustix::thread::disable_transparent_huge_pages(true).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

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

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_takes_no_transparent_huge_pages() {
        assert!(super::no_huge_pages());
        assert_eq!(rustix::thread::transparent_huge_pages_are_disabled().ok(), Some(true));
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
            assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
        }
    }
}
