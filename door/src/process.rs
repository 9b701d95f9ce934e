//! What every long-running binary of the network does the same way: takes its memory in small
//! pages (no transparent huge pages) and its bounded tables' memory at start, logs to stderr
//! filtered by `RUST_LOG` (a default level otherwise), and waits for SIGTERM or SIGINT to shut
//! down gracefully.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};

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

/// The room to give at start to a map that holds at most `bound` entries, one more inserted
/// before the oldest is evicted, so that it never stops to grow (rehash every entry) under load.
/// Twice that: a map cleans the slots its removals leave marked in place only while it is at
/// most half full, and grows otherwise.
pub fn map_room(bound: usize) -> usize {
    2 * (bound + 1)
}

/// A map with room for `room` entries, its memory written once now. The allocator only reserves
/// a table's memory until it is first written: each of its pages would then be faulted in (and
/// zeroed) on whichever thread first wrote a slot there — on the hot path, while the map fills
/// (3 % of the load bench's CPU over a 10 s run) — and the process would grow as long. Part of
/// the room is filled with `filler(i)` entries, enough that every page of the table gets several,
/// and emptied again. `filler` must give distinct keys that spread over the table (where the hash
/// is the key's own bits, keys that look random: see [`spread`]).
pub fn touched_map<K: Eq + Hash, V, S: BuildHasher>(
    room: usize,
    hasher: S,
    mut filler: impl FnMut(u64) -> (K, V),
) -> HashMap<K, V, S> {
    let mut map = HashMap::with_capacity_and_hasher(room, hasher);
    let capacity = map.capacity();
    // About eight entries a page: a page is then left unwritten with odds of e^-8 or less.
    let per_page = (PAGE / std::mem::size_of::<(K, V)>().max(1)).max(1);
    let fill = capacity.saturating_mul(8) / per_page;
    for i in 0..fill.min(capacity) as u64 {
        let (k, v) = filler(i);
        map.insert(k, v);
    }
    map.clear();
    map
}

/// An empty queue with room for `room` items, its memory written once now (as [`touched_map`]).
pub fn touched_deque<T: Clone>(room: usize, filler: T) -> VecDeque<T> {
    let mut q = VecDeque::with_capacity(room);
    q.resize(room, filler);
    q.clear();
    q
}

/// `i` mixed into a number that looks random (SplitMix64's finalizer): distinct for distinct `i`,
/// for the keys of a map whose hash is the key's own bits.
pub fn spread(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The memory page the tables are touched by.
const PAGE: usize = 4096;

/// This process's resident memory in KiB (`VmRSS` of `/proc/self/status`), where Linux says.
pub fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
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
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_touched_map_is_in_memory_from_the_start_and_empty() {
        let before = resident_kib().expect("VmRSS");
        let map = touched_map(1 << 20, std::collections::hash_map::RandomState::new(), |i| (i, [0u64; 4]));
        let grown = resident_kib().expect("VmRSS").saturating_sub(before);
        // 2^21 slots of 40 bytes and their control bytes: 82 MiB held now, not as entries come.
        let table_kib = (map.capacity() * 8 / 7 * (std::mem::size_of::<(u64, [u64; 4])>() + 1) / 1024) as u64;
        assert!(grown >= table_kib * 9 / 10, "grew {grown} KiB for a table of {table_kib} KiB");
        assert!(map.is_empty());
        assert!(map.capacity() >= 1 << 20);
    }

    #[test]
    fn spread_keys_are_distinct() {
        let keys: std::collections::HashSet<u64> = (0..100_000).map(spread).collect();
        assert_eq!(keys.len(), 100_000);
    }

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
