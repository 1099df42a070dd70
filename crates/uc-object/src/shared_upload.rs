//! A finished local folder uploaded by one process or by several cooperating ones that see it on a
//! shared file system. The upload is cut into pieces — small files whole, large ones part by part
//! into one multipart upload per file — and each process sends its share; the last one still
//! uploading sends what is missing (the share of a killed process), completes the multipart
//! uploads and puts the markers last. Coordinated through a state folder only:
//!
//! ```text
//! <state>/lock                    every uploading process holds a shared flock(2) on it; the one
//!                                 that can then take it exclusively finishes the upload
//! <state>/ids                     `plan <hash>`, then `<file> <upload id>` per multipart file
//! <state>/sent/<host>-<pid>-<t>   `plan <hash> ids <tag>`, then `<piece> <part id>` per piece
//!                                 sent (records of another set of upload ids never count)
//! <state>/finished                written by the process that finished
//! ```
//!
//! A failure that leaves no other process uploading aborts the multipart uploads and clears the
//! records, so the next run starts the upload over; the pieces a killed process sent are reused by
//! the others and by a rerun.

use crate::error::{io_err, ObjectError, Result};
use crate::location::{runtime, Location};
use crate::upload::{is_marker, marker_rank, put_file, walk, UploadStats, MAX_PARTS, SINGLE_PUT};
use futures::StreamExt;
use object_store::multipart::PartId;
use object_store::PutPayload;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Pieces one process sends at once (many small files are latency-bound: keep many in flight)…
const PIECES_AT_ONCE: usize = 32;
/// …holding at most this many MiB of them in memory (8 parts of 8 MiB).
const MIB_AT_ONCE: u32 = 64;
/// Multipart uploads created, completed or aborted at once.
const CALLS_AT_ONCE: usize = 16;

/// How one process's part in an upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadEnd {
    /// This process finished the upload (every piece there, multipart uploads completed, markers
    /// put last); what it sent.
    Finished(UploadStats),
    /// This process sent its share; another one still uploading finishes.
    Others(UploadStats),
    /// The upload was finished (or its folder removed) by another process before this one joined.
    Gone,
}

/// One file of the upload, and the pieces it is sent in.
struct PlanFile {
    rel: String,
    /// Part size when sent part by part into a multipart upload; `None`: sent whole.
    part: Option<u64>,
    /// Its pieces: `first..first + count` of [`Plan::pieces`].
    first: usize,
    count: usize,
}

/// The multipart upload id of every file sent part by part, and a tag naming this set of ids:
/// records of parts sent into other uploads (an earlier, abandoned set) never count.
struct Ids {
    of: HashMap<usize, String>,
    tag: String,
}

impl Ids {
    fn new(plan: &Plan, of: HashMap<usize, String>) -> Ids {
        let mut sorted: Vec<_> = of.iter().collect();
        sorted.sort();
        let tag =
            blake3::hash(format!("{}{sorted:?}", plan.hash).as_bytes()).to_hex()[..16].to_string();
        Ids { of, tag }
    }

    /// First line of a record file of pieces sent into these uploads.
    fn header(&self, plan: &Plan) -> String {
        format!("plan {} ids {}\n", plan.hash, self.tag)
    }
}

/// One piece: a whole file, or part `part` of a multipart file (bytes `start..start + len`).
struct Piece {
    file: usize,
    part: Option<usize>,
    start: u64,
    len: u64,
}

/// What is sent: files other than markers, in path order and cut into pieces; then the markers.
struct Plan {
    files: Vec<PlanFile>,
    pieces: Vec<Piece>,
    markers: Vec<String>,
    /// Names the plan (paths and sizes), so records of another plan are never taken for this one.
    hash: String,
}

impl Plan {
    fn of(local: &Path, by_parts: bool) -> Result<Plan> {
        let mut all = Vec::new();
        walk(local, local, &mut all)?;
        all.sort();
        let mut h = blake3::Hasher::new();
        for (rel, size) in &all {
            h.update(format!("{rel}\0{size}\n").as_bytes());
        }
        let (mut markers, rest): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|(r, _)| is_marker(r));
        markers.sort_by_key(|(r, _)| (marker_rank(r), r.clone()));
        let mut files = Vec::with_capacity(rest.len());
        let mut pieces = Vec::new();
        for (file, (rel, size)) in rest.into_iter().enumerate() {
            let first = pieces.len();
            let part =
                (by_parts && size > SINGLE_PUT).then(|| SINGLE_PUT.max(size.div_ceil(MAX_PARTS)));
            match part {
                Some(chunk) => {
                    for (k, start) in (0..size).step_by(chunk as usize).enumerate() {
                        let len = chunk.min(size - start);
                        pieces.push(Piece {
                            file,
                            part: Some(k),
                            start,
                            len,
                        });
                    }
                }
                None => pieces.push(Piece {
                    file,
                    part: None,
                    start: 0,
                    len: size,
                }),
            }
            let count = pieces.len() - first;
            files.push(PlanFile {
                rel,
                part,
                first,
                count,
            });
        }
        Ok(Plan {
            files,
            pieces,
            markers: markers.into_iter().map(|(r, _)| r).collect(),
            hash: h.finalize().to_hex()[..16].to_string(),
        })
    }

    /// First line of the ids file.
    fn header(&self) -> String {
        format!("plan {}\n", self.hash)
    }

    /// The `<index> <text>` lines after `header` (else `None`; a torn last line is skipped).
    fn lines<'a>(text: &'a str, header: &str, count: usize) -> Option<Vec<(usize, &'a str)>> {
        let body = text.strip_prefix(header)?;
        let mut out = Vec::new();
        for line in body.split_inclusive('\n') {
            let Some((i, rest)) = line.strip_suffix('\n').and_then(|l| l.split_once(' ')) else {
                continue;
            };
            if let Ok(i) = i.parse::<usize>() {
                if i < count {
                    out.push((i, rest));
                }
            }
        }
        Some(out)
    }
}

/// Uploads every file under `local` to `dest` (same relative paths) as one of the processes that
/// share `state` (a folder whose parent exists; the caller removes it once the upload finished).
/// `mine` picks this process's pieces from their sizes (every process must pick alike: a share of
/// a fixed split); `progress` gets the bytes sent so far and the bytes this process is to send.
pub fn upload_shared(
    local: &Path,
    dest: &Location,
    state: &Path,
    mine: &dyn Fn(&[u64]) -> Vec<usize>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<UploadEnd> {
    if state.starts_with(local) {
        return Err(ObjectError::Failed {
            url: dest.url().to_string(),
            why: format!(
                "the upload's state folder {} lies inside the folder uploaded",
                state.display()
            ),
        });
    }
    match fs::create_dir(state) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(UploadEnd::Gone),
        Err(e) => return Err(io_err(state)(e)),
    }
    let lock_path = state.join("lock");
    let lock = match OpenOptions::new()
        .create(true)
        .append(true)
        .open(&lock_path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(UploadEnd::Gone),
        Err(e) => return Err(io_err(&lock_path)(e)),
    };
    lock.lock_shared().map_err(io_err(&lock_path))?;
    if !same_file(&lock, &lock_path) || state.join("finished").exists() {
        return Ok(UploadEnd::Gone);
    }
    let job = Job::new(local, dest, state)?;
    let share = job.upload_ids().and_then(|ids| {
        job.send_share(&ids, mine, progress)?;
        Ok(ids)
    });
    lock.unlock().map_err(io_err(&lock_path))?;
    // The last one still uploading (exclusive lock) finishes — or, after a failure, cleans up.
    let last = lock.try_lock().is_ok();
    let ids = match share {
        Ok(ids) => ids,
        Err(e) => {
            if last {
                job.abandon();
            }
            return Err(e);
        }
    };
    if !last {
        return Ok(UploadEnd::Others(job.stats()));
    }
    match job.finish(&ids, progress) {
        Ok(()) => {
            let f = state.join("finished");
            fs::write(&f, b"").map_err(io_err(&f))?;
            Ok(UploadEnd::Finished(job.stats()))
        }
        Err(e) => {
            job.abandon();
            Err(e)
        }
    }
}

/// Discards the state folder of an upload no process runs any more (the caller makes sure): aborts
/// the multipart uploads it recorded (`local`, the folder they upload, names their objects) and
/// removes it, so that the next upload starts over.
pub fn discard_upload(local: &Path, dest: &Location, state: &Path) -> Result<()> {
    if !state.exists() {
        return Ok(());
    }
    if local.is_dir() {
        Job::new(local, dest, state)?.abandon();
    }
    fs::remove_dir_all(state).map_err(io_err(state))
}

/// True when the open file `f` is still the file at `path` (not unlinked or replaced).
fn same_file(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// One process's view of a shared upload.
struct Job<'a> {
    local: &'a Path,
    dest: &'a Location,
    state: &'a Path,
    plan: Plan,
    /// Bytes and objects this process sent.
    sent: AtomicU64,
    objects: AtomicU64,
}

impl<'a> Job<'a> {
    fn new(local: &'a Path, dest: &'a Location, state: &'a Path) -> Result<Job<'a>> {
        Ok(Job {
            local,
            dest,
            state,
            plan: Plan::of(local, dest.parts().is_some())?,
            sent: AtomicU64::new(0),
            objects: AtomicU64::new(0),
        })
    }

    fn stats(&self) -> UploadStats {
        UploadStats {
            files: self.objects.load(Ordering::Relaxed),
            bytes: self.sent.load(Ordering::Relaxed),
        }
    }

    /// Sends this process's pieces that no record shows sent into the uploads `ids`.
    fn send_share(
        &self,
        ids: &Ids,
        mine: &dyn Fn(&[u64]) -> Vec<usize>,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<()> {
        let done = self.sent_records(ids)?;
        let sizes: Vec<u64> = self.plan.pieces.iter().map(|p| p.len).collect();
        let todo: Vec<usize> = mine(&sizes)
            .into_iter()
            .filter(|i| *i < sizes.len() && !done.contains_key(i))
            .collect();
        self.send(&todo, ids, progress).map(drop)
    }

    /// Sends what is still missing, completes the multipart uploads, then puts the markers.
    fn finish(&self, ids: &Ids, progress: &(dyn Fn(u64, u64) + Sync)) -> Result<()> {
        let mut done = self.sent_records(ids)?;
        let missing: Vec<usize> = (0..self.plan.pieces.len())
            .filter(|i| !done.contains_key(i))
            .collect();
        done.extend(self.send(&missing, ids, progress)?);
        let completions = self.plan.files.iter().enumerate().filter_map(|(i, f)| {
            let id = ids.of.get(&i)?;
            let parts: Option<Vec<PartId>> = (f.first..f.first + f.count)
                .map(|p| {
                    done.get(&p).map(|c| PartId {
                        content_id: c.clone(),
                    })
                })
                .collect();
            Some(async move {
                let url = self.dest.url_of(&f.rel);
                let parts = parts.ok_or_else(|| ObjectError::Failed {
                    url: url.clone(),
                    why: format!("a part is not recorded in {}", self.state.display()),
                })?;
                let mp = self.dest.parts().ok_or_else(|| no_parts(&url))?;
                mp.complete_multipart(&self.dest.key(&f.rel), id, parts)
                    .await
                    .map_err(|e| ObjectError::from_store(&url, e))?;
                self.objects.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
        });
        let results: Vec<Result<()>> = runtime().block_on(
            futures::stream::iter(completions)
                .buffer_unordered(CALLS_AT_ONCE)
                .collect(),
        );
        results.into_iter().collect::<Result<()>>()?;
        for rel in &self.plan.markers {
            let size = runtime().block_on(put_file(self.local, rel, self.dest, &|_| {}))?;
            self.sent.fetch_add(size, Ordering::Relaxed);
            self.objects.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Sends `pieces`, recording each in this process's record file once the store has it;
    /// returns their part ids.
    fn send(
        &self,
        pieces: &[usize],
        ids: &Ids,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<Vec<(usize, String)>> {
        let mut sent = Vec::with_capacity(pieces.len());
        if pieces.is_empty() {
            return Ok(sent);
        }
        let total: u64 = pieces.iter().map(|&i| self.plan.pieces[i].len).sum();
        let (log_path, mut log) = self.record_file(ids)?;
        let base = self.sent.load(Ordering::Relaxed);
        let memory = tokio::sync::Semaphore::new(MIB_AT_ONCE as usize);
        runtime().block_on(async {
            let memory = &memory;
            let mut sends = futures::stream::iter(pieces)
                .map(|&i| async move {
                    let mib = self.plan.pieces[i]
                        .len
                        .div_ceil(1 << 20)
                        .clamp(1, MIB_AT_ONCE as u64);
                    // Never closed: a permit always comes.
                    let _held = memory.acquire_many(mib as u32).await.ok();
                    self.send_piece(i, ids).await.map(|id| (i, id))
                })
                .buffer_unordered(PIECES_AT_ONCE);
            while let Some(r) = sends.next().await {
                let (i, id) = r?;
                log.write_all(format!("{i} {id}\n").as_bytes())
                    .map_err(io_err(&log_path))?;
                let n = self.plan.pieces[i].len;
                let now = self.sent.fetch_add(n, Ordering::Relaxed) + n;
                progress(now - base, total);
                sent.push((i, id));
            }
            Ok(sent)
        })
    }

    /// Sends piece `i`; returns its part id (`-` for a whole file).
    async fn send_piece(&self, i: usize, ids: &Ids) -> Result<String> {
        let p = &self.plan.pieces[i];
        let f = &self.plan.files[p.file];
        let Some(k) = p.part else {
            put_file(self.local, &f.rel, self.dest, &|_| {}).await?;
            self.objects.fetch_add(1, Ordering::Relaxed);
            return Ok("-".into());
        };
        let url = self.dest.url_of(&f.rel);
        let path = self.local.join(&f.rel);
        let mut buf = vec![0u8; p.len as usize];
        File::open(&path)
            .and_then(|h| h.read_exact_at(&mut buf, p.start))
            .map_err(io_err(&path))?;
        let mp = self.dest.parts().ok_or_else(|| no_parts(&url))?;
        let id = ids.of.get(&p.file).ok_or_else(|| ObjectError::Failed {
            url: url.clone(),
            why: format!(
                "no multipart upload id recorded in {}",
                self.state.display()
            ),
        })?;
        let part = mp
            .put_part(&self.dest.key(&f.rel), id, k, PutPayload::from(buf))
            .await
            .map_err(|e| ObjectError::from_store(&url, e))?;
        Ok(part.content_id)
    }

    /// The multipart upload id of every file sent part by part: read from the state folder, or
    /// created by the first process to get here (under `ids.lock`).
    fn upload_ids(&self) -> Result<Ids> {
        let lock_path = self.state.join("ids.lock");
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;
        if let Some(ids) = self.recorded_ids() {
            return Ok(Ids::new(&self.plan, ids));
        }
        let Some(mp) = self.dest.parts() else {
            return Ok(Ids::new(&self.plan, HashMap::new()));
        };
        let wanted = self
            .plan
            .files
            .iter()
            .enumerate()
            .filter(|(_, f)| f.part.is_some());
        let made: Vec<Result<(usize, String)>> = runtime().block_on(
            futures::stream::iter(wanted)
                .map(|(i, f)| async move {
                    let url = self.dest.url_of(&f.rel);
                    let id = mp
                        .create_multipart(&self.dest.key(&f.rel))
                        .await
                        .map_err(|e| ObjectError::from_store(&url, e))?;
                    Ok((i, id))
                })
                .buffer_unordered(CALLS_AT_ONCE)
                .collect(),
        );
        let (ok, failed): (Vec<_>, Vec<_>) = made.into_iter().partition(|r| r.is_ok());
        let ids: HashMap<usize, String> = ok.into_iter().flatten().collect();
        if let Some(Err(e)) = failed.into_iter().next() {
            self.abort(&ids);
            return Err(e);
        }
        let mut text = self.plan.header();
        for (i, id) in &ids {
            text.push_str(&format!("{i} {id}\n"));
        }
        let path = self.state.join("ids");
        let tmp = self.state.join("ids.tmp");
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(io_err(&path))?;
        Ok(Ids::new(&self.plan, ids))
    }

    /// The ids file of this plan, when it is there and whole.
    fn recorded_ids(&self) -> Option<HashMap<usize, String>> {
        let text = fs::read_to_string(self.state.join("ids")).ok()?;
        let ids: HashMap<usize, String> =
            Plan::lines(&text, &self.plan.header(), self.plan.files.len())?
                .into_iter()
                .map(|(i, id)| (i, id.to_string()))
                .collect();
        let wanted = self.plan.files.iter().filter(|f| f.part.is_some()).count();
        (ids.len() == wanted).then_some(ids)
    }

    /// Every piece recorded as sent into the uploads `ids` (by any process, this run or an
    /// earlier one): its part id.
    fn sent_records(&self, ids: &Ids) -> Result<HashMap<usize, String>> {
        let header = ids.header(&self.plan);
        let dir = self.state.join("sent");
        let mut out = HashMap::new();
        let entries = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        for e in entries {
            let p = e.map_err(io_err(&dir))?.path();
            let text = fs::read_to_string(&p).map_err(io_err(&p))?;
            for (i, id) in Plan::lines(&text, &header, self.plan.pieces.len()).unwrap_or_default() {
                out.insert(i, id.to_string());
            }
        }
        Ok(out)
    }

    /// A new record file of this process for pieces sent into `ids`, its header written.
    fn record_file(&self, ids: &Ids) -> Result<(PathBuf, File)> {
        let dir = self.state.join("sent");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().replace(['/', ' '], "_"))
            .unwrap_or_else(|_| "host".into());
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path: PathBuf = dir.join(format!("{host}-{}-{t}", std::process::id()));
        let mut f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.write_all(ids.header(&self.plan).as_bytes())
            .map_err(io_err(&path))?;
        Ok((path, f))
    }

    /// After a failure with no other process uploading: aborts the multipart uploads (best
    /// effort: a store that is gone keeps its parts until its own cleanup) and clears the records.
    fn abandon(&self) {
        if let Some(ids) = self.recorded_ids() {
            self.abort(&ids);
        }
        let _ = fs::remove_file(self.state.join("ids"));
        let _ = fs::remove_dir_all(self.state.join("sent"));
    }

    fn abort(&self, ids: &HashMap<usize, String>) {
        let Some(mp) = self.dest.parts() else { return };
        let aborts = ids.iter().map(|(i, id)| {
            let key = self.dest.key(&self.plan.files[*i].rel);
            async move {
                let _ = mp.abort_multipart(&key, id).await;
            }
        });
        runtime().block_on(
            futures::stream::iter(aborts)
                .buffer_unordered(CALLS_AT_ONCE)
                .collect::<Vec<()>>(),
        );
    }
}

fn no_parts(url: &str) -> ObjectError {
    ObjectError::Failed {
        url: url.to_string(),
        why: "this store has no part-by-part uploads".into(),
    }
}
