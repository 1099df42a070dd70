//! The read-only file mappings of input this process holds, so that the pages of bytes it is done
//! with can be dropped from its page tables: per tensor as it is written ([`forget`]), and all at
//! once while the output is synced ([`forget_pages`]). The page cache keeps the bytes; a later read
//! faults them back in.
//!
//! Why: mapped pages count in the process's resident set until unmapped, so converting a large
//! checkpoint made a process as large as its input (1.4 GB for the 2 GB checkpoint of the README's
//! Performance section; a 16 TB one would reach the page cache's size), the first the OOM killer
//! picks, though every such page can be dropped; and closing 1.9 GB of mappings took the last
//! 50–67 ms of that conversion, on one core, after its output was already on disk.

use memmap2::Mmap;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

/// Registered mappings by start address: (end address, mapping). Dropped ones are pruned as it grows.
static LIVE: Mutex<BTreeMap<usize, (usize, Weak<Mmap>)>> = Mutex::new(BTreeMap::new());

fn live() -> std::sync::MutexGuard<'static, BTreeMap<usize, (usize, Weak<Mmap>)>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records `map`, a read-only shared mapping of a file, for [`forget`] and [`forget_pages`].
pub fn register(map: &Arc<Mmap>) {
    let (start, end) = (map.as_ptr() as usize, map.as_ptr() as usize + map.len());
    let mut live = live();
    if live.len() >= 64 && live.len().is_power_of_two() {
        live.retain(|_, (_, w)| w.strong_count() > 0);
    }
    // Entries starting inside the new mapping are of mappings closed since (open ones cannot overlap).
    let stale: Vec<usize> = live.range(start..end).map(|(&k, _)| k).collect();
    for k in stale {
        live.remove(&k);
    }
    live.insert(start, (end, Arc::downgrade(map)));
}

/// Drops this process's page-table entries for the pages holding `bytes`, when they lie in a
/// registered mapping still open (anything else — a heap buffer — is left alone). The pages at either
/// end go too, though they may hold a neighbour's bytes: a small tensor's page, or the large folio the
/// kernel maps whole around it, would otherwise stay to the end (another reader faults them back in).
/// A hint: errors are ignored; Linux only.
pub fn forget(bytes: &[u8]) {
    #[cfg(target_os = "linux")]
    {
        if bytes.is_empty() {
            return;
        }
        let start = bytes.as_ptr() as usize;
        let end = start + bytes.len();
        let map = match live().range(..=start).next_back() {
            Some((_, (map_end, w))) if end <= *map_end => w.upgrade(),
            _ => None,
        };
        if let Some(map) = map {
            let offset = start - map.as_ptr() as usize;
            // SAFETY: see "Why forgetting is sound" below; the range lies inside `map` (the call
            // widens it to whole pages, which lie inside the mapping's pages).
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, bytes.len())
            };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

/// Drops this process's page-table entries for every registered mapping still open.
pub fn forget_pages() {
    #[cfg(target_os = "linux")]
    {
        let maps: Vec<Arc<Mmap>> = live().values().filter_map(|(_, w)| w.upgrade()).collect();
        for m in maps {
            // SAFETY: see "Why forgetting is sound" below.
            let _ = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }
}

// Why forgetting is sound (both calls above): every registered `Mmap` maps a file
// read-only and shared, and `MADV_DONTNEED` on such a mapping leaves the bytes any borrower sees
// unchanged — they are the file's, read from it again on the next access — unlike on private or
// anonymous memory, where it zeroes them.

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mapped(data: &[u8]) -> (tempfile::NamedTempFile, Arc<Mmap>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(data).unwrap();
        f.flush().unwrap();
        // SAFETY: a test file nobody else writes.
        let map = Arc::new(unsafe { Mmap::map(f.as_file()) }.unwrap());
        register(&map);
        (f, map)
    }

    /// `forget_pages` drops every registered mapping's pages: the tests run one at a time.
    static ONE: Mutex<()> = Mutex::new(());

    #[test]
    fn bytes_read_after_forgetting_are_the_files() {
        let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
        let data: Vec<u8> = (0..5 * 4096 + 17).map(|i| (i % 253) as u8).collect();
        let (_f, map) = mapped(&data);
        assert!(map[..] == data[..]);
        forget(&map[100..3 * 4096 + 5]);
        forget(&map[..]);
        forget(&map[7..9]);
        assert!(map[..] == data[..]);
        forget_pages();
        assert!(map[..] == data[..]);
        // Bytes outside every mapping are left alone.
        let heap = data.clone();
        forget(&heap);
        assert!(heap == data);
        // The register does not keep a mapping open.
        let weak = Arc::downgrade(&map);
        drop(map);
        assert!(weak.upgrade().is_none());
        forget_pages();
    }

    /// Whether the page holding `addr` is in this process's page tables (`/proc/self/pagemap`).
    #[cfg(target_os = "linux")]
    fn present(addr: usize, page: usize) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let mut pm = std::fs::File::open("/proc/self/pagemap").unwrap();
        pm.seek(SeekFrom::Start((addr / page * 8) as u64)).unwrap();
        let mut e = [0u8; 8];
        pm.read_exact(&mut e).unwrap();
        u64::from_le_bytes(e) >> 63 == 1
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn forgetting_a_few_bytes_drops_their_whole_page_and_no_other() {
        let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: sysconf reads a constant of the running system.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let data = vec![7u8; 4 * page];
        let (_f, map) = mapped(&data);
        let at = |i: usize| map.as_ptr() as usize + i * page;
        let touched: u32 = (0..4).map(|i| map[i * page] as u32).sum();
        assert_eq!(touched, 28);
        assert!((0..4).all(|i| present(at(i), page)));
        // Ten bytes inside page 1 (a small tensor): that page leaves, its neighbours stay.
        forget(&map[page + 10..page + 20]);
        assert!(!present(at(1), page));
        assert!(present(at(0), page) && present(at(2), page) && present(at(3), page));
        assert_eq!(map[page + 10], 7);
        assert!(present(at(1), page));
    }
}
