//! Durability without an `fsync` per file: writers start write-back of large writes as they go, and an
//! output folder is made durable once, just before its `COMPLETE` marker or `latest` file is written.
//!
//! On Linux [`sync_tree`] is one `syncfs(2)` of the file system holding the folder (it flushes every
//! file and directory written there, in one journal commit); elsewhere it `fsync`s every file and folder
//! of the tree in parallel. [`start_writeback`] (`sync_file_range(2)` with `SYNC_FILE_RANGE_WRITE`) lets
//! the disk work while the conversion continues, so the final sync has little left to do.

use crate::error::{io_err, Result};
use crate::source::input_unit;
use std::fs::File;
use std::path::Path;

/// Bytes written to a file between two calls of [`start_writeback`] in the streaming writers.
pub(crate) const WRITEBACK_CHUNK: usize = 8 << 20;

/// Files at least this large start their write-back as soon as they are written (smaller ones are left
/// to the final sync, which flushes them in one pass).
pub(crate) const WRITEBACK_MIN: u64 = 1 << 20;

/// Bytes of a lazily filled file copied as one unit of input reads by [`copy_file`].
const COPY_PIECE: u64 = 64 << 20;

/// Copies `src` to `dst` (in the kernel where it can) and starts the copy's write-back. A lazily
/// filled `src` ([`uc_torch::lazy`]) is copied a piece at a time, each piece filled first and a unit
/// of input reads of its own ([`input_unit`]), so a remote input's cache can drop the pieces copied;
/// call it outside any unit.
pub(crate) fn copy_file(src: &Path, dst: &Path) -> Result<()> {
    if uc_torch::lazy::lookup(src).is_some() {
        copy_in_pieces(src, dst)?;
    } else {
        std::fs::copy(src, dst).map_err(io_err(dst))?;
    }
    if let Ok(f) = File::open(dst) {
        start_writeback(&f, 0, 0);
    }
    Ok(())
}

fn copy_in_pieces(src: &Path, dst: &Path) -> Result<()> {
    use std::io::Read;
    let mut from = File::open(src).map_err(io_err(src))?;
    let len = from.metadata().map_err(io_err(src))?.len();
    let mut to = File::create(dst).map_err(io_err(dst))?;
    let mut at = 0;
    while at < len {
        let end = len.min(at + COPY_PIECE);
        input_unit(|| {
            uc_torch::lazy::need(src, &[at..end])?;
            // In the kernel where it can (`copy_file_range`), like `std::fs::copy`.
            let n = std::io::copy(&mut (&mut from).take(end - at), &mut to).map_err(io_err(dst))?;
            if n != end - at {
                return Err(crate::StoreError::Truncated {
                    path: src.to_path_buf(),
                    why: format!("{n} of bytes {at}..{end} could be read"),
                });
            }
            Ok(())
        })?;
        at = end;
    }
    Ok(())
}

/// Asks the kernel to start writing `len` bytes at `offset` of `f` to disk (`len` 0: to the end),
/// without waiting for it. The request goes to one background thread, because `sync_file_range`
/// itself blocks while the device queue is full and writers must not stall on it. Best effort: a hint,
/// errors are ignored (the final [`sync_tree`] reports real ones).
pub(crate) fn start_writeback(f: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::sync::mpsc::{channel, Sender};
        use std::sync::OnceLock;
        static FLUSHER: OnceLock<Sender<(File, u64, u64)>> = OnceLock::new();
        let Ok(dup) = f.try_clone() else { return };
        let tx = FLUSHER.get_or_init(|| {
            let (tx, rx) = channel::<(File, u64, u64)>();
            // Without the thread the receiver is gone, sends fail and writers make the call themselves.
            let _ = std::thread::Builder::new()
                .name("uc-writeback".into())
                .spawn(move || {
                    for (f, off, len) in rx {
                        writeback_now(&f, off, len);
                    }
                });
            tx
        });
        let sent = tx.send((dup, offset, len)).is_ok();
        if !sent {
            writeback_now(f, offset, len);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (f, offset, len);
}

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)` on the calling thread.
#[cfg(target_os = "linux")]
fn writeback_now(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain syscall on an open descriptor; no memory is passed.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Makes every file and folder under `dir` (and `dir` itself) durable.
pub(crate) fn sync_tree(dir: &Path) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let d = File::open(dir).map_err(io_err(dir))?;
        // An output is made durable once its input was read: while the disk takes it, another
        // thread drops the input mappings' page tables (a read after that faults the bytes back in).
        let forget = std::thread::Builder::new()
            .name("uc-forget-pages".into())
            .spawn(uc_torch::mapped::forget_pages);
        // SAFETY: a plain syscall on an open descriptor.
        let synced = unsafe { libc::syncfs(d.as_raw_fd()) } == 0;
        let err = std::io::Error::last_os_error();
        if let Ok(t) = forget {
            let _ = t.join();
        }
        if !synced {
            return Err(crate::StoreError::Io {
                path: dir.to_path_buf(),
                source: err,
            });
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        use rayon::prelude::*;
        let mut paths = vec![dir.to_path_buf()];
        let mut i = 0;
        while i < paths.len() {
            if paths[i].is_dir() {
                let p = paths[i].clone();
                for e in std::fs::read_dir(&p).map_err(io_err(&p))? {
                    paths.push(e.map_err(io_err(&p))?.path());
                }
            }
            i += 1;
        }
        paths.par_iter().try_for_each(|p| {
            let f = File::open(p).map_err(io_err(p))?;
            match f.sync_all() {
                // Windows cannot flush a directory handle; its entries are journaled with the files.
                Err(_) if p.is_dir() => Ok(()),
                r => r.map_err(io_err(p)),
            }
        })
    }
}

/// Makes the files `files` (all in `dir`) durable: one `syncfs(2)` on Linux, an `fsync` each elsewhere.
pub(crate) fn sync_files(dir: &Path, files: &[&Path]) -> Result<()> {
    if cfg!(target_os = "linux") {
        return sync_tree(dir);
    }
    files
        .iter()
        .try_for_each(|p| File::open(p).and_then(|f| f.sync_all()).map_err(io_err(p)))
}
