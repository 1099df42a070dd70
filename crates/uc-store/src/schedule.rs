//! How units of work (tensors, staged units, verify runs) are spread over the thread pool: largest
//! first, each unit a task of its own, so no thread is left idle while another works through a run
//! of units it cannot hand over.
//!
//! A plain `par_iter` cuts a list into as many pieces as there are threads and goes through each piece
//! in order; a thread that finishes early can take only what the other has not started, and a piece in
//! progress is not split. Converting the 2 GB checkpoint of the README's Performance section, one of
//! two threads idled for the last 0.3 s of 0.8. Sorted by size and stolen one unit at a time, the last
//! unit to finish is a small one.

use crate::error::Result;
use rayon::prelude::*;
use std::cmp::Reverse;

/// Runs `f` on every item, in parallel, largest (by `size`) first, each item stealable on its own;
/// stops at the first error.
pub(crate) fn try_largest_first<T: Sync>(
    items: &[T],
    size: impl Fn(&T) -> u64,
    f: impl Fn(&T) -> Result<()> + Sync + Send,
) -> Result<()> {
    largest_first(items, size)
        .par_iter()
        .with_max_len(1)
        .try_for_each(|&t| f(t))
}

/// Like [`try_largest_first`], collecting `f`'s results in the items' own order.
pub(crate) fn map_largest_first<T: Sync, R: Send>(
    items: &[T],
    size: impl Fn(&T) -> u64,
    f: impl Fn(&T) -> R + Sync + Send,
) -> Vec<R> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| Reverse(size(&items[i])));
    let mut done: Vec<(usize, R)> = order
        .par_iter()
        .with_max_len(1)
        .map(|&i| (i, f(&items[i])))
        .collect();
    done.sort_unstable_by_key(|&(i, _)| i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// The items as references, largest first (equal sizes keep their order).
fn largest_first<T>(items: &[T], size: impl Fn(&T) -> u64) -> Vec<&T> {
    let mut order: Vec<&T> = items.iter().collect();
    order.sort_by_key(|&t| Reverse(size(t)));
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn every_item_once_results_in_order_errors_stop() {
        let items: Vec<u64> = (0..200).map(|i| (i * 37) % 101).collect();
        let seen = Mutex::new(Vec::new());
        try_largest_first(
            &items,
            |&x| x,
            |&x| {
                seen.lock().unwrap().push(x);
                Ok(())
            },
        )
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort_unstable();
        let mut want = items.clone();
        want.sort_unstable();
        assert_eq!(seen, want);

        let doubled = map_largest_first(&items, |&x| x, |&x| x * 2);
        assert_eq!(doubled, items.iter().map(|x| x * 2).collect::<Vec<_>>());

        let err = try_largest_first(
            &items,
            |&x| x,
            |&x| {
                if x == 7 {
                    Err(crate::StoreError::Format {
                        path: "p".into(),
                        why: "seven".into(),
                    })
                } else {
                    Ok(())
                }
            },
        );
        assert!(matches!(err, Err(crate::StoreError::Format { why, .. }) if why == "seven"));
    }

    #[test]
    fn one_thread_takes_the_largest_first() {
        let items = [3u64, 9, 1, 9, 5];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let seen = Mutex::new(Vec::new());
        pool.install(|| {
            try_largest_first(
                &items,
                |&x| x,
                |x| {
                    seen.lock().unwrap().push(*x);
                    Ok(())
                },
            )
        })
        .unwrap();
        assert_eq!(seen.into_inner().unwrap(), vec![9, 9, 5, 3, 1]);
    }
}
