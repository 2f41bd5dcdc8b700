//! What the kernel says about this process: its CPU time, memory, file descriptors and start
//! time (`/proc/self`), and its cgroup's CPU bandwidth ([`cgroup`]). A prober starved of CPU
//! measures its own scheduling delay as network latency; these numbers say when that happens.
//!
//! Reading is separate from exposing: `metrics::process` turns what is read here into the
//! standard `process_*` families and the `netprobe_cgroup_cpu_*` ones at each scrape. Every
//! path is relative to a root ("/" in production, a fixture tree in tests).

use std::path::{Path, PathBuf};

use procfs::process::{LimitValue, Process};
use procfs::{FromBufReadSI, KernelStats};

pub mod cgroup;

/// Where a reader finds `/proc`.
#[derive(Debug, Clone)]
pub struct ProcRoot {
    /// The procfs mount (`/proc`).
    proc: PathBuf,
    /// The process's directory in it (`/proc/self`).
    own: PathBuf,
    /// The boot time, read once: it never changes, and `/proc/stat` is kilobytes on a large
    /// node.
    boot: std::sync::OnceLock<u64>,
}

impl ProcRoot {
    /// This process, through `/proc/self`.
    pub fn system() -> Self {
        Self::at(Path::new("/proc"), "self")
    }

    /// `proc_dir/<pid_dir>`: a fixture tree in tests, another process in tools.
    pub fn at(proc_dir: &Path, pid_dir: &str) -> Self {
        Self {
            proc: proc_dir.to_owned(),
            own: proc_dir.join(pid_dir),
            boot: std::sync::OnceLock::new(),
        }
    }
}

/// The standard process figures, in base units.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    /// The soft `RLIMIT_NOFILE`; `None` when unlimited.
    pub max_fds: Option<u64>,
    /// Unix time at which the process started.
    pub start_time_seconds: f64,
}

/// A file under `/proc` that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
#[error("reading {what} under {}", path.display())]
pub struct ProcError {
    what: &'static str,
    path: PathBuf,
    #[source]
    source: procfs::ProcError,
}

fn context<T>(
    what: &'static str,
    path: &Path,
    result: procfs::ProcResult<T>,
) -> Result<T, ProcError> {
    result.map_err(|source| ProcError {
        what,
        path: path.to_owned(),
        source,
    })
}

impl ProcRoot {
    /// Reads the process's figures now. `ticks_per_second` and `page_size` are the kernel's
    /// units for CPU time and memory in `stat` (`sysconf(_SC_CLK_TCK)` and `_SC_PAGESIZE`).
    pub fn read_process(&self) -> Result<ProcessStats, ProcError> {
        let ticks = procfs::ticks_per_second().max(1) as f64;
        let process = context(
            "the process",
            &self.own,
            Process::new_with_root(self.own.clone()),
        )?;
        let stat = context("stat", &self.own, process.stat())?;
        let limits = context("limits", &self.own, process.limits())?;
        let open_fds = self.open_fds()?;
        let boot = self.boot_time_seconds()?;
        Ok(ProcessStats {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            resident_bytes: stat.rss.saturating_mul(procfs::page_size()),
            virtual_bytes: stat.vsize,
            open_fds,
            max_fds: match limits.max_open_files.soft_limit {
                LimitValue::Value(n) => Some(n),
                LimitValue::Unlimited => None,
            },
            start_time_seconds: boot as f64 + stat.starttime as f64 / ticks,
        })
    }

    /// Entries of `fd/`, counted as client_golang counts them. Not procfs's `fd_count`: its
    /// fast path takes the directory's size for the count, which only procfs guarantees.
    fn open_fds(&self) -> Result<u64, ProcError> {
        let path = self.own.join("fd");
        let io = |e: std::io::Error| ProcError {
            what: "fd",
            path: path.clone(),
            source: procfs::ProcError::Io(e, Some(path.clone())),
        };
        let mut n = 0;
        for entry in std::fs::read_dir(&path).map_err(io)? {
            entry.map_err(io)?;
            n += 1;
        }
        Ok(n)
    }

    /// When the machine booted (`btime` of `/proc/stat`), in Unix seconds: a process's start
    /// time is counted from it.
    fn boot_time_seconds(&self) -> Result<u64, ProcError> {
        if let Some(boot) = self.boot.get() {
            return Ok(*boot);
        }
        let path = self.proc.join("stat");
        let file = std::fs::File::open(&path).map_err(|e| ProcError {
            what: "the boot time",
            path: path.clone(),
            source: procfs::ProcError::Io(e, Some(path.clone())),
        })?;
        let stats = context(
            "the boot time",
            &path,
            KernelStats::from_buf_read(
                std::io::BufReader::new(file),
                procfs::current_system_info(),
            ),
        )?;
        Ok(*self.boot.get_or_init(|| stats.btime))
    }
}

#[cfg(test)]
mod tests;
