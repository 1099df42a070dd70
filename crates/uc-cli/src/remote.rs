//! `s3://`, `gs://`, `az://` and `file://` arguments. A remote input is read through a local folder
//! of lazily filled stand-ins (only the byte ranges a command touches are fetched); a remote output
//! is written into a local work folder, then uploaded with its completion markers last and removed.
//! Cooperating workers share the work folder (it must be on a shared file system: `UC_CACHE_DIR`):
//! each converts its share, waits while another is still converting, then uploads its share of the
//! pieces; the last one completes the upload.

use crate::progress::byte_bar;
use crate::CliError;
use std::fs::File;
use std::path::{Path, PathBuf};
use uc_object::{
    cache_dir, check_free, discard_upload, is_url, upload_shared, FetchStats, Location, Mirror,
    UploadEnd, UploadStats,
};
use uc_store::staging::{share, Worker};

/// The remote ends of one command.
#[derive(Default)]
pub struct Remote {
    input: Option<Mirror>,
    output: Option<Output>,
    uploaded: Option<UploadStats>,
    /// The output was uploaded by an earlier run of this command (or another worker of it).
    already: bool,
}

/// A remote output and the local folder it is written into first.
struct Output {
    dest: Location,
    work: PathBuf,
}

/// How a worker's part in a remote output ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    /// The output is local.
    Local,
    /// This worker finished the upload: the output is complete.
    Finished,
    /// This worker sent its share (or found the upload done); another one finishes.
    Shared,
    /// No other worker converts any more and the local output is not complete: nothing uploaded.
    OthersStopped,
}

impl Upload {
    /// For `--json`: `null` for a local output.
    pub fn json(self) -> serde_json::Value {
        match self {
            Upload::Local => serde_json::Value::Null,
            Upload::Finished => "finished".into(),
            Upload::Shared => "shared".into(),
            Upload::OthersStopped => "others_stopped".into(),
        }
    }
}

/// Stamp written into the work folder once the local conversion finished.
const CONVERTED: &str = "converted";
/// File in the work folder on which every converting worker holds a shared lock.
const CONVERTING: &str = "converting.lock";
/// The work folder's output (what is uploaded) and the upload's state folder.
const OUT: &str = "out";
const UPLOAD: &str = "upload";

impl Remote {
    /// Replaces a remote `input` (and the `output` of worker `w`) by local stand-ins; plain paths
    /// pass unchanged. With `fresh`, what an earlier run of the command left in its work folder
    /// (converted files, recorded parts) is discarded, when no process of the job runs.
    pub fn resolve(
        input: &mut PathBuf,
        output: Option<(&mut PathBuf, Worker, bool)>,
    ) -> Result<Remote, CliError> {
        let mut r = Remote::default();
        if let Some(arg) = input.to_str().filter(|s| is_url(s)) {
            let m = Mirror::open(Location::parse(arg)?, None)?;
            *input = m.path().to_path_buf();
            r.input = Some(m);
        }
        if let Some((out, w, fresh)) = output {
            if let Some(arg) = out.to_str().filter(|s| is_url(s)) {
                if w.world > 1 && std::env::var_os("UC_CACHE_DIR").is_none() {
                    return Err(CliError::Failed(format!(
                        "{} cooperating workers writing to {arg} share a work folder: set \
                         UC_CACHE_DIR to a folder on a file system every worker sees",
                        w.world
                    )));
                }
                let dest = Location::parse(arg)?;
                let work = work_dir(&dest, input, r.input_label());
                if fresh {
                    discard_work(&work, &dest)?;
                }
                match check_free(&dest) {
                    Err(uc_object::ObjectError::Exists { .. }) if done_stamp(&work).is_file() => {
                        r.already = true
                    }
                    // Markers of this very command's upload that failed after putting some.
                    Err(uc_object::ObjectError::Exists { .. })
                        if work.join(CONVERTED).is_file() => {}
                    Err(e) => return Err(e.into()),
                    Ok(()) => {
                        // A stamp of an upload whose objects are gone since: not done any more.
                        let _ = std::fs::remove_file(done_stamp(&work));
                        std::fs::create_dir_all(&work).map_err(CliError::io(&work))?
                    }
                }
                *out = work.join(OUT);
                r.output = Some(Output { dest, work });
            }
        }
        Ok(r)
    }

    /// A name for a remote input that every process of a job shares (URL and object versions).
    pub fn input_label(&self) -> Option<String> {
        let m = self.input.as_ref()?;
        Some(format!("{} {}", m.location().url(), m.fingerprint()))
    }

    /// Whether this command's output was uploaded before (by an earlier run or another worker).
    pub fn already(&self) -> bool {
        self.already
    }

    /// Whether an earlier run of this very command converted everything and only the upload failed.
    pub fn converted_earlier(&self) -> bool {
        self.output
            .as_ref()
            .is_some_and(|u| u.work.join(CONVERTED).is_file() && u.work.join(OUT).is_dir())
    }

    /// Held while this process converts into a remote output's work folder: a shared lock that
    /// tells a worker whose share is done whether another is still converting.
    pub fn converting(&self) -> Result<Option<File>, CliError> {
        let Some(u) = &self.output else {
            return Ok(None);
        };
        let path = u.work.join(CONVERTING);
        let f = File::create(&path).map_err(CliError::io(&path))?;
        f.lock_shared().map_err(CliError::io(&path))?;
        Ok(Some(f))
    }

    /// After worker `w`'s local conversion (`complete`: the local output is complete — this worker
    /// or an earlier run published it): uploads a remote output once it is complete, at once or
    /// after waiting while another worker still converts, as [`Remote::publish`] does.
    pub fn upload(&mut self, w: Worker, complete: bool) -> Result<Upload, CliError> {
        if self.output.is_none() {
            return Ok(Upload::Local);
        }
        if !complete && !self.await_conversion() {
            return Ok(Upload::OthersStopped);
        }
        Ok(match self.publish(w)? {
            true => Upload::Finished,
            false => Upload::Shared,
        })
    }

    /// After this worker's share (its [`Remote::converting`] lock released): waits while another
    /// worker is still converting; true when the local output is then complete (published by the
    /// last converting worker), false when no one converts any more and it is not.
    fn await_conversion(&self) -> bool {
        let Some(u) = &self.output else {
            return false;
        };
        let out = u.work.join(OUT);
        loop {
            if out.is_dir() {
                return true;
            }
            let Ok(f) = File::open(u.work.join(CONVERTING)) else {
                return out.is_dir();
            };
            if f.try_lock().is_ok() {
                return out.is_dir();
            }
            drop(f);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// After the local output is complete: uploads worker `w`'s share of a remote output (every
    /// worker that converted joins); the last one uploading sends what is missing, puts the
    /// markers last and removes the work folder. True when this process finished the upload. On
    /// failure the converted files stay, so rerunning the command only uploads again.
    pub fn publish(&mut self, w: Worker) -> Result<bool, CliError> {
        let Some(u) = &self.output else {
            return Ok(true);
        };
        if done_stamp(&u.work).is_file() {
            return Ok(false);
        }
        let stamp = u.work.join(CONVERTED);
        match std::fs::write(&stamp, b"") {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            r => r.map_err(CliError::io(&stamp))?,
        }
        let pb = byte_bar("upload");
        let progress = |sent, total| {
            pb.set_length(total);
            pb.set_position(sent);
        };
        let state = u.work.join(UPLOAD);
        let pick = |sizes: &[u64]| share(sizes, w);
        let end =
            upload_shared(&u.work.join(OUT), &u.dest, &state, &pick, &progress).map_err(|e| {
                CliError::Failed(format!(
                    "{e}\nnothing marks {} complete; the converted files stay in {} and rerunning \
                     the same command uploads them again",
                    u.dest.url(),
                    u.work.display()
                ))
            })?;
        pb.finish_and_clear();
        match end {
            UploadEnd::Gone => Ok(false),
            UploadEnd::Others(stats) => {
                self.uploaded = Some(stats);
                Ok(false)
            }
            UploadEnd::Finished(stats) => {
                let done = done_stamp(&u.work);
                std::fs::write(&done, u.dest.url()).map_err(CliError::io(&done))?;
                let _ = std::fs::remove_dir_all(&u.work);
                self.uploaded = Some(stats);
                Ok(true)
            }
        }
    }

    /// How a local path of this command is shown: the URL it stands for, when it stands for one.
    pub fn show(&self, p: &Path) -> String {
        if let Some(u) = &self.output {
            if let Ok(rest) = p.strip_prefix(u.work.join(OUT)) {
                return join_url(u.dest.url(), rest);
            }
        }
        if let Some(m) = &self.input {
            if let Ok(rest) = p.strip_prefix(m.path()) {
                return join_url(m.location().url(), rest);
            }
        }
        p.display().to_string()
    }

    /// Rewrites stand-in paths in an error into URLs.
    pub fn explain(&self, e: CliError) -> CliError {
        if self.input.is_none() && self.output.is_none() {
            return e;
        }
        let mut msg = e.to_string();
        if let Some(m) = &self.input {
            msg = m.explain(&msg);
        }
        if let Some(u) = &self.output {
            let work = u.work.join(OUT).display().to_string();
            msg = msg.replace(&work, u.dest.url());
        }
        CliError::Failed(msg)
    }

    /// Fetch and upload figures for `--json` (null when nothing is remote).
    pub fn json(&self) -> serde_json::Value {
        let fetch = self.input.as_ref().map(|m| fetch_json(&m.stats()));
        let upload = self
            .uploaded
            .map(|u| serde_json::json!({"objects": u.files, "bytes": u.bytes}));
        if fetch.is_none() && upload.is_none() {
            return serde_json::Value::Null;
        }
        serde_json::json!({"fetch": fetch, "upload": upload})
    }

    /// One line on what the remote ends cost, for humans.
    pub fn summary(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(m) = &self.input {
            let s = m.stats();
            parts.push(format!(
                "fetched {} in {} requests from {} ({:.3} × the {} needed)",
                crate::progress::human(s.bytes_fetched),
                s.requests,
                m.location().url(),
                s.ratio(),
                crate::progress::human(s.bytes_needed)
            ));
            if s.bytes_released > 0 {
                parts.push(format!(
                    "dropped {} of fetched input to stay within UC_CACHE_MAX (at most {} held)",
                    crate::progress::human(s.bytes_released),
                    crate::progress::human(s.peak_cached)
                ));
            }
        }
        if let (Some(u), Some(s)) = (&self.output, self.uploaded) {
            parts.push(format!(
                "uploaded {} to {} ({} objects completed by this process)",
                crate::progress::human(s.bytes),
                u.dest.url(),
                s.files
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

fn fetch_json(s: &FetchStats) -> serde_json::Value {
    serde_json::json!({
        "requests": s.requests,
        "bytes_fetched": s.bytes_fetched,
        "bytes_needed": s.bytes_needed,
        "ratio": s.ratio(),
        "peak_cached": s.peak_cached,
        "bytes_released": s.bytes_released,
    })
}

fn join_url(base: &str, rest: &Path) -> String {
    let rest = rest.to_string_lossy();
    if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}/{rest}")
    }
}

/// The local folder a remote output is written into first: under [`cache_dir`], named by a hash of
/// the command line and of what the input holds (a remote input's `label`: URL and object versions;
/// else every file's size and modification time), so that only a rerun of the same command on the
/// same input finds it again.
fn work_dir(dest: &Location, input: &Path, label: Option<String>) -> PathBuf {
    let mut h = blake3::Hasher::new();
    for a in job_args() {
        h.update(a.as_bytes());
        h.update(b"\0");
    }
    h.update(dest.url().as_bytes());
    match label {
        Some(l) => {
            h.update(l.as_bytes());
        }
        None => fingerprint(input, &mut h),
    }
    cache_dir().join(format!(".uc-upload-{}", &h.finalize().to_hex()[..16]))
}

/// The command line without the worker's own rank flags, `--json` and `--fresh` (the same for
/// every worker and every run of a job, whatever each prints or discards).
fn job_args() -> Vec<String> {
    let mut out = Vec::new();
    let mut args = std::env::args();
    while let Some(a) = args.next() {
        if a == "--rank" || a == "--world-size" {
            args.next();
        } else if !(a.starts_with("--rank=")
            || a.starts_with("--world-size=")
            || a == "--json"
            || a == "--fresh")
        {
            out.push(a);
        }
    }
    out
}

/// `--fresh`: removes the work folder of an earlier run of this command (aborting the multipart
/// uploads it recorded), unless a process of the job still converts or uploads in it.
fn discard_work(work: &Path, dest: &Location) -> Result<(), CliError> {
    if !work.exists() {
        return Ok(());
    }
    let mut held = Vec::new();
    for lock in [work.join(CONVERTING), work.join(UPLOAD).join("lock")] {
        if let Ok(f) = File::open(&lock) {
            if f.try_lock().is_err() {
                return Err(CliError::Failed(format!(
                    "--fresh: a process of this job still runs in {} ({} is locked); stop it first",
                    work.display(),
                    lock.display()
                )));
            }
            held.push(f);
        }
    }
    discard_upload(&work.join(OUT), dest, &work.join(UPLOAD))?;
    std::fs::remove_dir_all(work).map_err(CliError::io(work))?;
    let _ = std::fs::remove_file(done_stamp(work));
    drop(held);
    Ok(())
}

/// The file left beside the work folder once its upload finished (so that late workers and
/// reruns find the job done rather than the prefix taken).
fn done_stamp(work: &Path) -> PathBuf {
    let mut name = work.file_name().unwrap_or_default().to_os_string();
    name.push(".done");
    work.with_file_name(name)
}

/// Hashes every file's path, size and modification time under `dir`.
fn fingerprint(dir: &Path, h: &mut blake3::Hasher) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            fingerprint(&p, h);
        } else {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            h.update(format!("{}\0{}\0{:?}\n", p.display(), m.len(), t).as_bytes());
        }
    }
}

/// Finishes a command whose output is uploaded already, or whose local output an earlier run
/// completed (then uploads it); reports either.
pub fn upload_only(remote: &mut Remote, json: bool, w: Worker) -> Result<(), CliError> {
    let url = remote.output.as_ref().map(|u| u.dest.url().to_string());
    if remote.already {
        if json {
            say!("{}", serde_json::json!({"output": url, "already": true}));
        } else {
            say!(
                "{} already holds this command's output (uploaded earlier); nothing to do",
                url.unwrap_or_default()
            );
        }
        return Ok(());
    }
    if !remote.publish(w)? {
        if json {
            say!(
                "{}",
                serde_json::json!({"output": url, "uploaded_by_another": true, "remote": remote.json()})
            );
        } else {
            say!(
                "another worker finishes the upload of {}{}",
                url.unwrap_or_default(),
                remote
                    .summary()
                    .map(|l| format!("; {l}"))
                    .unwrap_or_default()
            );
        }
        return Ok(());
    }
    if json {
        say!(
            "{}",
            serde_json::json!({"output": remote.output.as_ref().map(|u| u.dest.url()), "resumed_upload": true, "remote": remote.json()})
        );
    } else if let Some(line) = remote.summary() {
        say!("the local output of an earlier run of this command was complete; {line}");
    }
    Ok(())
}

/// Runs a reading command on `checkpoint`, through a local stand-in when it is a URL.
pub fn reading(
    mut checkpoint: PathBuf,
    run: impl FnOnce(&Path, &Remote) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let remote = Remote::resolve(&mut checkpoint, None)?;
    run(&checkpoint, &remote).map_err(|e| remote.explain(e))
}
