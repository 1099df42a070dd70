//! The shared staging folder of a conversion that several cooperating workers (or several runs after a
//! kill) write together, coordinated through the file system only.
//!
//! ```text
//! <parent>/.<name>.uc-<key>/   one per job: key = hash of input, output, format and options
//!   lock                       every live worker holds a shared flock(2) on it
//!   epoch                      bumped by a worker that starts while no other worker is alive
//!   records/<host>-<pid>-<epoch>.log   one line per finished unit: `<epoch> <unit> <BLAKE3 hex>`,
//!                              and `<epoch> done` once the worker's share is written and synced
//!   out/                       the tree that is renamed to <parent>/<name> when every unit is done
//! ```
//!
//! A record of the current epoch was written (or re-verified) by a live worker of this run; records of
//! older epochs are re-hashed against the bytes on disk before they count, so a rerun after a kill, a
//! reboot or a full disk reuses every finished part that is really there and redoes the rest. The last
//! worker to finish (the one that can take the lock exclusively) publishes: every unit must have a
//! current record; then `COMPLETE`, one rename, and the staging folder is removed.

use crate::error::{io_err, Result, StoreError};
use crate::source::{input_unit, Progress};
use rayon::prelude::*;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// One worker of a job: its rank and the number of workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    pub rank: usize,
    pub world: usize,
}

impl Default for Worker {
    fn default() -> Self {
        Worker { rank: 0, world: 1 }
    }
}

impl Worker {
    /// Most workers a job may have (a bound, not a limit anyone meets: it keeps a bad value from
    /// allocating a share table for billions of workers).
    pub const MAX_WORLD: usize = 1 << 20;

    /// Checks `rank < world` and `1 ≤ world ≤` [`Worker::MAX_WORLD`].
    pub fn new(rank: usize, world: usize) -> Result<Worker> {
        if world == 0 || rank >= world || world > Worker::MAX_WORLD {
            return Err(StoreError::Format {
                path: PathBuf::from("--rank/--world-size"),
                why: format!(
                    "rank {rank} is not in 0..{world} (at most {} workers)",
                    Worker::MAX_WORLD
                ),
            });
        }
        Ok(Worker { rank, world })
    }
}

/// The units (by index) of worker `w`: units sorted by bytes (largest first) go one by one to the
/// worker with the fewest bytes so far, so shares are balanced by bytes and the same on every worker.
pub fn share(bytes: &[u64], w: Worker) -> Vec<usize> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut order: Vec<usize> = (0..bytes.len()).collect();
    order.sort_by_key(|&i| (Reverse(bytes[i]), i));
    // (load, rank) of every worker, least loaded (then lowest rank) on top.
    let mut load: BinaryHeap<Reverse<(u64, usize)>> =
        (0..w.world).map(|r| Reverse((0, r))).collect();
    let mut mine = Vec::new();
    for i in order {
        let Some(Reverse((b, r))) = load.pop() else {
            break;
        };
        load.push(Reverse((b.saturating_add(bytes[i]), r)));
        if r == w.rank {
            mine.push(i);
        }
    }
    mine.sort_unstable();
    mine
}

/// What one worker did with its share of a job.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShareReport {
    /// Units of the share, and their bytes.
    pub units: usize,
    pub bytes: u64,
    /// Units (and bytes) an earlier run had finished: verified and kept, not redone.
    pub reused: usize,
    pub reused_bytes: u64,
}

/// How a job checks and produces its units (tensors).
pub(crate) trait Units: Sync {
    /// Whether unit `u`'s bytes on disk hash to `digest`.
    fn verify(&self, u: usize, digest: &blake3::Hash) -> Result<bool>;
    /// Produces unit `u`; returns the BLAKE3 of the bytes written.
    fn write(&self, u: usize) -> Result<blake3::Hash>;
    /// Takes unit `u` as finished with `digest` (written here, by another worker, or earlier).
    fn adopt(&self, u: usize, digest: blake3::Hash) -> Result<()>;
}

/// The outcome of a worker's [`Staging::finish_job`].
pub(crate) enum JobEnd {
    /// Another worker is still alive and will finish the job.
    Others,
    /// This worker was the last alive, but units of other shares are missing (count).
    Missing(usize),
    /// Every unit is adopted: the caller publishes.
    Complete,
}

/// What joining a job folder found.
enum Joined {
    /// Joined: the lock (held shared), the epoch, this worker's record log.
    Job(File, u64, File),
    /// The job's output appeared while joining.
    Published,
    /// The folder went away under this worker: try again.
    Retry,
}

/// Whether the job's output is in place: the target exists (a new output), or, for files added to
/// an existing folder, the job folder is gone.
fn published(target: &Path, into_existing: bool) -> bool {
    !into_existing && fs::symlink_metadata(target).is_ok()
}

/// True when the open file `f` is still the file at `path` (not unlinked or replaced): a lock taken
/// on a file that was removed meanwhile protects nothing.
fn same_file(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Removes the job folder `root` when no live worker holds its lock (left by a run killed after it
/// published, or by dead workers of an output that now exists).
fn remove_if_dead(root: &Path) -> Result<()> {
    if !root.exists() {
        return Ok(());
    }
    let live = match File::open(root.join("lock")) {
        Ok(f) => !try_lock(&f).unwrap_or(false),
        Err(_) => false,
    };
    if !live {
        remove_any(root)?;
    }
    Ok(())
}

/// A worker's handle on a job's staging folder (holds the shared lock while it lives).
#[derive(Debug)]
pub struct Staging {
    root: PathBuf,
    target: PathBuf,
    lock: File,
    log: File,
    epoch: u64,
    /// Remove the folder when dropped before [`Staging::keep`] (a single worker's run that failed
    /// with an error leaves nothing behind; a killed one never gets here and is resumed).
    discard: std::sync::atomic::AtomicBool,
}

/// The key of a job writing `output` from `input`: a hash of uc's version, both paths (absolute),
/// the `options` text and one line per planned unit, so a rerun of the same command finds the same
/// staging folder and no other job shares it. Every worker must name the paths alike.
pub(crate) fn job_key(
    input: &Path,
    output: &Path,
    options: &str,
    units: impl IntoIterator<Item = String>,
) -> String {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut h = blake3::Hasher::new();
    let head = format!(
        "uc {}\ninput {:?}\noutput {:?}\n{options}\n",
        env!("CARGO_PKG_VERSION"),
        input.canonicalize().unwrap_or_else(|_| abs(input)),
        abs(output),
    );
    h.update(head.as_bytes());
    for u in units {
        h.update(u.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex()[..16].to_string()
}

/// The staging folder's name for output `target` and job `key`.
fn staging_name(target: &Path, key: &str) -> Result<OsString> {
    let name = target.file_name().ok_or_else(|| StoreError::Format {
        path: target.to_path_buf(),
        why: "output path has no final name component".into(),
    })?;
    let mut s = OsString::from(".");
    s.push(name);
    s.push(format!(".uc-{key}"));
    Ok(s)
}

/// The parent folder of an output path (`.` for a bare name); it must exist.
pub(crate) fn parent_of(target: &Path) -> Result<PathBuf> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let meta = fs::metadata(&parent).map_err(io_err(&parent))?;
    if !meta.is_dir() {
        return Err(StoreError::Format {
            path: parent,
            why: "parent of the output is not a directory".into(),
        });
    }
    Ok(parent)
}

impl Staging {
    /// Joins (or starts) job `key` writing `target` (which must not exist, unless `into_existing`:
    /// then its files are added to that folder). `None`: the target exists (published by another
    /// worker of the job, or something else: the caller tells which). Refuses when live workers of
    /// another job write the same output; removes dead ones' folders; with `fresh`, discards this
    /// job's earlier work (only when no other worker of it is alive).
    pub fn open(
        target: &Path,
        key: &str,
        fresh: bool,
        into_existing: bool,
        discard_on_error: bool,
    ) -> Result<Option<Staging>> {
        let parent = parent_of(target)?;
        let mine = staging_name(target, key)?;
        let root = parent.join(&mine);
        // A folder being removed by a publisher, or recreated around it, is retried a few times.
        for _ in 0..8 {
            crate::atomic::clear_stale_siblings(target, Some(&mine))?;
            if !into_existing && fs::symlink_metadata(target).is_ok() {
                // There already (or published a moment ago): the caller checks whether it is this job's.
                remove_if_dead(&root)?;
                return Ok(None);
            }
            match Staging::join(&root, target, fresh, into_existing)? {
                Joined::Job(lock, epoch, log) => {
                    return Ok(Some(Staging {
                        root,
                        target: target.to_path_buf(),
                        lock,
                        log,
                        epoch,
                        discard: discard_on_error.into(),
                    }))
                }
                Joined::Published => return Ok(None),
                Joined::Retry => continue,
            }
        }
        Err(StoreError::Format {
            path: root,
            why: "the staging folder kept disappearing while joining it".into(),
        })
    }

    /// Creates or joins the job folder `root`: lock, epoch, this worker's record log.
    fn join(root: &Path, target: &Path, fresh: bool, into_existing: bool) -> Result<Joined> {
        match fs::create_dir(root) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Joined::Retry),
            Err(e) => return Err(io_err(root)(e)),
        }
        let lpath = root.join("lock");
        let lock = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lpath)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Joined::Retry),
            Err(e) => return Err(io_err(&lpath)(e)),
        };
        let alone = try_lock(&lock).map_err(io_err(&lpath))?;
        if alone && same_file(&lock, &lpath) {
            if fresh {
                for sub in ["records", "out", "epoch"] {
                    remove_any(&root.join(sub))?;
                }
            }
            let e = read_epoch(root)? + 1;
            let tmp = root.join("epoch.tmp");
            fs::write(&tmp, format!("{e}\n")).map_err(io_err(&tmp))?;
            fs::rename(&tmp, root.join("epoch")).map_err(io_err(root.join("epoch")))?;
        }
        // Shared from here on: the epoch cannot change while any worker holds the lock.
        lock_shared(&lock).map_err(io_err(&lpath))?;
        if !same_file(&lock, &lpath) {
            // The folder was removed while this worker waited: its job was published (or discarded).
            return Ok(if published(target, into_existing) {
                Joined::Published
            } else {
                Joined::Retry
            });
        }
        if !into_existing && published(target, false) {
            // Published just before this worker got the lock. Its publisher removes the folder; if
            // it died first, whoever is last alive does.
            lock.unlock().map_err(io_err(&lpath))?;
            if try_lock(&lock).unwrap_or(false) && same_file(&lock, &lpath) {
                remove_any(root)?;
            }
            return Ok(Joined::Published);
        }
        let epoch = read_epoch(root)?;
        let records = root.join("records");
        crate::atomic::create_dir_if_missing(&records)?;
        crate::atomic::create_dir_if_missing(&root.join("out"))?;
        let lname = records.join(format!(
            "{}-{}-{}.log",
            host_tag(),
            std::process::id(),
            epoch
        ));
        let log = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&lname)
            .map_err(io_err(&lname))?;
        Ok(Joined::Job(lock, epoch, log))
    }

    /// Removes job `key`'s staging folder for `target` when no live worker holds it (a run killed
    /// after it published, before it removed the folder); for runs that find the job already done.
    pub fn clear_dead(target: &Path, key: &str) -> Result<()> {
        let root = parent_of(target)?.join(staging_name(target, key)?);
        remove_if_dead(&root)
    }

    /// Fails with [`StoreError::DiskFull`] unless the file system of `target` has room for `planned`
    /// bytes less what job `key`'s staging folder already holds (a resumed run need not allocate it
    /// again). Checked before anything is created.
    pub fn check_room(target: &Path, key: &str, planned: u64) -> Result<()> {
        let parent = parent_of(target)?;
        let mut have = 0u64;
        let mut dirs = vec![parent.join(staging_name(target, key)?).join("out")];
        while let Some(d) = dirs.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                match e.metadata() {
                    Ok(m) if m.is_dir() => dirs.push(e.path()),
                    Ok(m) => have = have.saturating_add(allocated(&m)),
                    Err(_) => {}
                }
            }
        }
        check_space(&parent, planned.saturating_sub(have))
    }

    /// The folder that becomes the output.
    pub fn out(&self) -> PathBuf {
        self.root.join("out")
    }

    /// Where the output appears.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The staging folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Records that `unit` is finished with `digest` (one appended line; a torn line is ignored on read).
    pub fn record(&self, unit: usize, digest: &blake3::Hash) -> Result<()> {
        let line = format!("{} {unit} {}\n", self.epoch, digest.to_hex());
        (&self.log)
            .write_all(line.as_bytes())
            .map_err(io_err(self.root.join("records")))
    }

    /// Marks this worker's share as done and durable (its records count as current from now on).
    pub fn share_done(&self) -> Result<()> {
        let line = format!("{} done\n", self.epoch);
        (&self.log)
            .write_all(line.as_bytes())
            .map_err(io_err(self.root.join("records")))
    }

    /// Every unit's latest record: (digest, current). A record is current when it was written in this
    /// epoch by a worker that then finished its share (so its bytes were synced); any other record must
    /// be re-hashed before it counts.
    pub fn records(&self) -> Result<HashMap<usize, (blake3::Hash, bool)>> {
        let dir = self.root.join("records");
        let mut all: HashMap<usize, (blake3::Hash, bool)> = HashMap::new();
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let p = e.map_err(io_err(&dir))?.path();
            let text = match fs::read(&p) {
                Ok(t) => t,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::Io { path: p, source: e }),
            };
            let text = String::from_utf8_lossy(&text);
            let done = format!("{} done", self.epoch);
            let finished = text.lines().any(|l| l == done);
            for line in text.lines() {
                let mut it = line.split(' ');
                let (Some(ep), Some(u), Some(h), None) =
                    (it.next(), it.next(), it.next(), it.next())
                else {
                    continue;
                };
                let (Ok(ep), Ok(u), Ok(h)) = (
                    ep.parse::<u64>(),
                    u.parse::<usize>(),
                    blake3::Hash::from_hex(h),
                ) else {
                    continue;
                };
                let current = ep == self.epoch && finished;
                let slot = all.entry(u).or_insert((h, current));
                if current || !slot.1 {
                    *slot = (h, current || slot.1);
                }
            }
        }
        Ok(all)
    }

    /// Does this worker's share of units sized `sizes`: a unit recorded by an earlier run is kept when
    /// its bytes still hash to the record, else (re)written; each is recorded as it finishes. Then the
    /// staged tree is made durable and the share marked done.
    pub(crate) fn run_share(
        &self,
        sizes: &[u64],
        worker: Worker,
        units: &dyn Units,
        progress: Progress,
    ) -> Result<ShareReport> {
        let mine = share(sizes, worker);
        let records = self.records()?;
        let (done, bytes) = (AtomicUsize::new(0), AtomicU64::new(0));
        let (reused, reused_bytes) = (AtomicUsize::new(0), AtomicU64::new(0));
        crate::schedule::try_largest_first(
            &mine,
            |&u| sizes[u],
            |&u| -> Result<()> {
                let d = match records.get(&u) {
                    Some(&(d, _)) if units.verify(u, &d)? => {
                        units.adopt(u, d)?;
                        reused.fetch_add(1, Ordering::Relaxed);
                        reused_bytes.fetch_add(sizes[u], Ordering::Relaxed);
                        d
                    }
                    _ => input_unit(|| units.write(u))?,
                };
                self.record(u, &d)?;
                let b = bytes.fetch_add(sizes[u], Ordering::Relaxed) + sizes[u];
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(n, mine.len(), b);
                Ok(())
            },
        )?;
        crate::durable::sync_tree(&self.out())?;
        self.share_done()?;
        Ok(ShareReport {
            units: mine.len(),
            bytes: mine.iter().map(|&u| sizes[u]).sum(),
            reused: reused.into_inner(),
            reused_bytes: reused_bytes.into_inner(),
        })
    }

    /// After its share: the last worker alive adopts every unit of the job (re-hashing records this
    /// run did not confirm); tells whether the caller must publish.
    pub(crate) fn finish_job(&self, n: usize, units: &dyn Units) -> Result<JobEnd> {
        if !self.try_last()? {
            return Ok(JobEnd::Others);
        }
        let records = self.records()?;
        let missing = AtomicUsize::new(0);
        (0..n).into_par_iter().try_for_each(|u| -> Result<()> {
            match records.get(&u) {
                Some(&(d, true)) => units.adopt(u, d),
                Some(&(d, false)) if units.verify(u, &d)? => units.adopt(u, d),
                _ => {
                    missing.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
            }
        })?;
        Ok(match missing.into_inner() {
            0 => JobEnd::Complete,
            m => JobEnd::Missing(m),
        })
    }

    /// Tries to become the only live worker of the job (the one that publishes). Gives up its shared
    /// lock first; returns false when another worker is still alive (it will be the one).
    pub fn try_last(&self) -> Result<bool> {
        let lpath = self.root.join("lock");
        self.lock.unlock().map_err(io_err(&lpath))?;
        try_lock(&self.lock).map_err(io_err(&lpath))
    }

    /// Keeps the folder when `r` failed because the disk (or an inode or quota limit) is full, so that a
    /// rerun after freeing space reuses the finished parts; any other error leaves the discard as set.
    pub(crate) fn keep_if_disk_full<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(StoreError::Io { source, .. }) = &r {
            if matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EDQUOT)
            ) {
                self.keep();
            }
        }
        r
    }

    /// Keeps the folder when this handle is dropped (the run ended without an error).
    pub fn keep(&self) {
        self.discard.store(false, Ordering::Relaxed);
    }

    /// Removes the staging folder once its `out/` was committed to the target, still holding the
    /// lock (workers waiting for it then see the folder gone). Best effort: the output is published
    /// already, and a worker that races in removes what it created when it sees that.
    pub fn finish(&self) -> Result<()> {
        self.keep();
        for _ in 0..3 {
            if remove_any(&self.root).is_ok() {
                break;
            }
        }
        Ok(())
    }
}

impl Drop for Staging {
    /// Removes the folder of a failed run when asked to and no other worker is alive.
    fn drop(&mut self) {
        if self.discard.load(Ordering::Relaxed) && self.try_last().unwrap_or(false) {
            let _ = remove_any(&self.root);
        }
    }
}

/// Bytes a file occupies on disk (a sparse file's holes excluded).
pub(crate) fn allocated(m: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    m.blocks().saturating_mul(512).min(m.len())
}

/// This machine's name for record file names (workers on several hosts share the folder).
fn host_tag() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer outlives the call and its length is passed.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name: String = String::from_utf8_lossy(&buf[..n])
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    if ok && !name.is_empty() {
        name
    } else {
        "host".into()
    }
}

fn read_epoch(root: &Path) -> Result<u64> {
    let p = root.join("epoch");
    match fs::read_to_string(&p) {
        Ok(s) => Ok(s.trim().parse().unwrap_or(0)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StoreError::Io { path: p, source: e }),
    }
}

/// Removes a file or a folder tree; a missing one is fine.
pub(crate) fn remove_any(p: &Path) -> Result<()> {
    let r = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(StoreError::Io {
            path: p.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Non-blocking exclusive lock (`flock(2)` on Unix): Ok(false) when another process holds a lock.
pub(crate) fn try_lock(f: &File) -> std::io::Result<bool> {
    match f.try_lock() {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Blocking shared lock, retried when a signal interrupts the wait.
fn lock_shared(f: &File) -> std::io::Result<()> {
    loop {
        match f.lock_shared() {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Fails with [`StoreError::DiskFull`] when the file system holding `dir` has fewer than `needed`
/// bytes free for an unprivileged writer.
pub(crate) fn check_space(dir: &Path, needed: u64) -> Result<()> {
    let available = free_bytes(dir)?;
    if needed > available {
        return Err(StoreError::DiskFull {
            path: dir.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(())
}

/// Free bytes of the file system holding `dir` ([`uc_torch::free_space`]).
fn free_bytes(dir: &Path) -> Result<u64> {
    uc_torch::free_space(dir).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_unit_once_and_balance_bytes() {
        let bytes: Vec<u64> = (0..50u64).map(|i| (i * 7919) % 1000 + 1).collect();
        for world in 1..6 {
            let mut seen = vec![0; bytes.len()];
            let mut loads = Vec::new();
            for rank in 0..world {
                let s = share(&bytes, Worker { rank, world });
                loads.push(s.iter().map(|&i| bytes[i]).sum::<u64>());
                for i in s {
                    seen[i] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1));
            let (lo, hi) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
            assert!(hi - lo <= 1000, "{loads:?}");
        }
    }
}
