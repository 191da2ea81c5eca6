//! Work on many independent items spread over the CPUs: what the daemon
//! does once per domain at start-up (reading and parsing thousands of
//! definitions and live status files) would otherwise use one CPU.

use std::num::NonZeroUsize;

/// Below this many items one thread does all: starting threads costs more.
const MIN_ITEMS: usize = 64;
/// Threads at most, whatever the CPU count.
const MAX_THREADS: usize = 8;

/// `f` of every item, in the items' order, computed on up to one thread
/// per CPU.
pub fn map<T, R, F>(items: Vec<T>, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    let threads = std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(MAX_THREADS);
    if threads < 2 || items.len() < MIN_ITEMS {
        return items.into_iter().map(f).collect();
    }
    let per_thread = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut items = items.into_iter();
    loop {
        let chunk: Vec<T> = items.by_ref().take(per_thread).collect();
        if chunk.is_empty() {
            break;
        }
        chunks.push(chunk);
    }
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || chunk.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| match worker.join() {
                Ok(results) => results,
                // A panic in `f` is a bug: carry it to the caller as if
                // one thread had done all.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_items_order_whatever_the_count() {
        for count in [0, 1, MIN_ITEMS - 1, MIN_ITEMS, 1000, 1001] {
            let items: Vec<usize> = (0..count).collect();
            let expected: Vec<usize> = items.iter().map(|i| i * 3).collect();
            assert_eq!(map(items, |i| i * 3), expected, "{count} items");
        }
    }

    #[test]
    fn many_items_are_shared_among_threads() {
        if std::thread::available_parallelism().map_or(1, NonZeroUsize::get) < 2 {
            return;
        }
        let items: Vec<usize> = (0..1000).collect();
        let threads: std::collections::HashSet<_> = map(items, |_| std::thread::current().id())
            .into_iter()
            .collect();
        assert!(threads.len() >= 2, "{threads:?}");
        assert!(!threads.contains(&std::thread::current().id()));
    }
}
