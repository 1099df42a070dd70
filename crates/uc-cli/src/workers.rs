//! `--world-size` / `--rank` of cooperating workers, or the rank and size the cluster's launcher put in
//! the environment (torchrun, Slurm, Open MPI, PMI), checked against each other.

use crate::remote::Upload;
use crate::CliError;
use clap::Args as ClapArgs;
use uc_store::staging::Worker;

/// Launcher variables, in the order they are tried: (size, rank, launcher).
const LAUNCHERS: [(&str, &str, &str); 4] = [
    ("WORLD_SIZE", "RANK", "torchrun"),
    ("SLURM_NTASKS", "SLURM_PROCID", "Slurm"),
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "Open MPI"),
    ("PMI_SIZE", "PMI_RANK", "PMI"),
];

#[derive(ClapArgs, Debug)]
pub struct WorkerArgs {
    /// Number of cooperating workers running this same command on the same input and output (a
    /// shared file system). Default: the launcher's (WORLD_SIZE, SLURM_NTASKS, OMPI_COMM_WORLD_SIZE,
    /// PMI_SIZE), else 1. `uc convert` splits `--format native` only. With a URL output the work
    /// folder (`UC_CACHE_DIR`) must be shared too; workers then also split the upload.
    #[arg(long = "world-size", value_name = "N", requires = "rank")]
    world_size: Option<usize>,
    /// This worker's rank in 0..N. Default: the launcher's (RANK, SLURM_PROCID, OMPI_COMM_WORLD_RANK,
    /// PMI_RANK), else 0.
    #[arg(long, value_name = "R", requires = "world_size")]
    rank: Option<usize>,
    /// Discard what an earlier, killed run of this same command left in its staging folder and start
    /// over (by default it is verified and reused); for a URL output also its work folder (converted
    /// files, recorded parts: their multipart uploads are aborted). Refused while a process of the
    /// job still runs.
    #[arg(long)]
    fresh: bool,
}

impl WorkerArgs {
    /// The worker from the flags, else from the first launcher whose variables are set.
    pub fn worker(&self) -> Result<Worker, CliError> {
        self.worker_from(|k| std::env::var(k).ok())
    }

    /// Whether to discard an earlier run's work.
    pub fn fresh(&self) -> bool {
        self.fresh
    }

    fn worker_from(&self, env: impl Fn(&str) -> Option<String>) -> Result<Worker, CliError> {
        if let (Some(world), Some(rank)) = (self.world_size, self.rank) {
            return check(rank, world, "--rank/--world-size");
        }
        for (size, rank, who) in LAUNCHERS {
            let (Some(s), Some(r)) = (env(size), env(rank)) else {
                continue;
            };
            let parse = |k: &str, v: &str| {
                v.trim().parse::<usize>().map_err(|_| {
                    CliError::Failed(format!("{who} sets {k}={v:?}, which is not a number"))
                })
            };
            return check(
                parse(rank, &r)?,
                parse(size, &s)?,
                &format!("{who} ({rank}/{size})"),
            );
        }
        Ok(Worker::default())
    }
}

/// What a worker that did not publish the local output says: its share, and who publishes (or,
/// for a remote output, how its upload ended).
pub fn unpublished(
    w: Worker,
    tensors: usize,
    bytes: u64,
    missing: usize,
    secs: f64,
    out: &std::path::Path,
    upload: Upload,
) -> String {
    let head = format!(
        "worker {}/{}: share of {tensors} tensors ({}) done in {secs:.2} s",
        w.rank,
        w.world,
        crate::progress::human(bytes)
    );
    let out = out.display();
    match upload {
        Upload::Finished => format!("{head}; this worker finished the upload: {out} is complete"),
        Upload::Shared => format!("{head}; another worker finishes the upload of {out}"),
        Upload::OthersStopped => format!(
            "{head}; no other worker is converting any more and the output is not complete: run \
             the same command again for the ranks that did not finish — {out} appears when they have"
        ),
        Upload::Local if missing > 0 => format!(
            "{head}; {missing} tensors of other shares are not finished (a worker still to start, or \
             one that was killed: run it again) — {out} appears when they are"
        ),
        Upload::Local => format!("{head}; the last worker to finish publishes {out}"),
    }
}

/// The worker's label for the progress bar.
pub fn label(what: &str, w: Worker) -> String {
    if w.world > 1 {
        format!("{what} (worker {}/{})", w.rank, w.world)
    } else {
        what.to_string()
    }
}

fn check(rank: usize, world: usize, from: &str) -> Result<Worker, CliError> {
    Worker::new(rank, world).map_err(|_| {
        CliError::Failed(format!(
            "{from}: rank {rank} is not in 0..{world} (at most {} workers)",
            Worker::MAX_WORLD
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(world_size: Option<usize>, rank: Option<usize>) -> WorkerArgs {
        WorkerArgs {
            world_size,
            rank,
            fresh: false,
        }
    }

    #[test]
    fn flags_then_launchers_then_one_worker() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1.to_string())
        };
        let w = |rank, world| Worker { rank, world };
        let slurm = env(&[("SLURM_NTASKS", "3"), ("SLURM_PROCID", "2")]);
        assert_eq!(args(Some(2), Some(1)).worker_from(slurm).unwrap(), w(1, 2));
        assert_eq!(args(None, None).worker_from(slurm).unwrap(), w(2, 3));
        let both = env(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "0"),
            ("PMI_SIZE", "2"),
            ("PMI_RANK", "1"),
        ]);
        assert_eq!(args(None, None).worker_from(both).unwrap(), w(0, 4));
        let mpi = env(&[("OMPI_COMM_WORLD_SIZE", "2"), ("OMPI_COMM_WORLD_RANK", "1")]);
        assert_eq!(args(None, None).worker_from(mpi).unwrap(), w(1, 2));
        assert_eq!(args(None, None).worker_from(env(&[])).unwrap(), w(0, 1));
        let bad = env(&[("WORLD_SIZE", "2"), ("RANK", "2")]);
        assert!(matches!(
            args(None, None).worker_from(bad),
            Err(CliError::Failed(_))
        ));
        let nan = env(&[("WORLD_SIZE", "two"), ("RANK", "0")]);
        assert!(matches!(
            args(None, None).worker_from(nan),
            Err(CliError::Failed(_))
        ));
        assert!(matches!(
            args(Some(2), Some(5)).worker_from(env(&[])),
            Err(CliError::Failed(_))
        ));
        let huge = args(Some(usize::MAX), Some(0)).worker_from(env(&[]));
        assert!(matches!(huge, Err(CliError::Failed(_))));
    }
}
