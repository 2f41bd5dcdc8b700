//! This process's cgroup CPU bandwidth: how often the kernel's CFS quota throttled it, and the
//! quota itself. Under a CPU limit, a process that used its quota waits for the next period
//! (100 ms by default) before it runs again; a probe that happens to be timing a request then
//! measures that wait as network or DNS latency.
//!
//! The cgroup is found the way the kernel describes it: `/proc/self/cgroup` names the cgroup
//! (per hierarchy in v1, one path in v2) relative to its hierarchy's root, and
//! `/proc/self/mountinfo` says where that hierarchy (or a subtree of it, in a container) is
//! mounted. A v1 `cpu` controller wins over v2 on hybrid machines, since that is where the
//! kernel enforces the quota there.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use procfs::FromBufRead;
use procfs::ProcessCGroups;
use procfs::process::MountInfos;

/// Which cgroup interface holds the CPU controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The `cpu` hierarchy: `cpu.stat`, `cpu.cfs_quota_us`, `cpu.cfs_period_us`.
    V1,
    /// The unified hierarchy with the `cpu` controller enabled: `cpu.stat`, `cpu.max`.
    V2,
}

impl Version {
    pub fn label(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// The cgroup directory whose CPU files describe this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuCgroup {
    pub version: Version,
    pub dir: PathBuf,
}

/// One reading of the cgroup's CPU bandwidth, in base units.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuBandwidth {
    /// Enforcement periods that elapsed with runnable tasks (`nr_periods`).
    pub periods: u64,
    /// Periods in which the quota ran out (`nr_throttled`).
    pub throttled_periods: u64,
    /// Time the cgroup's tasks spent throttled.
    pub throttled_seconds: f64,
    /// CPU time allowed per period; `None` when unlimited.
    pub quota_seconds: Option<f64>,
    pub period_seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup CPU controller is visible: {0}")]
    NotVisible(String),
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
}

/// Finds the CPU cgroup of the process whose `/proc/<pid>` directory is `proc_own`; the mount
/// points of its mountinfo are taken relative to `fs_root` ("/" outside tests).
pub fn find(proc_own: &Path, fs_root: &Path) -> Result<CpuCgroup, CgroupError> {
    let cgroups: ProcessCGroups = read_parsed(&proc_own.join("cgroup"))?;
    let mounts: MountInfos = read_parsed(&proc_own.join("mountinfo"))?;
    locate(&cgroups, &mounts, fs_root)
}

fn read_parsed<T: FromBufRead>(path: &Path) -> Result<T, CgroupError> {
    let file = std::fs::File::open(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })?;
    T::from_buf_read(std::io::BufReader::new(file)).map_err(|e| CgroupError::Parse {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The directory of the v1 `cpu` hierarchy if the process has one, else of the v2 hierarchy if
/// its `cpu` controller is enabled there.
fn locate(
    cgroups: &ProcessCGroups,
    mounts: &MountInfos,
    fs_root: &Path,
) -> Result<CpuCgroup, CgroupError> {
    let mut seen = Vec::new();
    if let Some(v1) = cgroups
        .0
        .iter()
        .find(|c| c.hierarchy != 0 && c.controllers.iter().any(|c| c == "cpu"))
    {
        let cpu_mounts = mounts
            .0
            .iter()
            .filter(|m| m.fs_type == "cgroup" && m.super_options.contains_key("cpu"));
        match mounted_dir(&v1.pathname, cpu_mounts, fs_root) {
            Some(dir) => {
                return Ok(CpuCgroup {
                    version: Version::V1,
                    dir,
                });
            }
            None => seen.push(format!(
                "cgroup v1 cpu controller at {} but no mount of its hierarchy holds it",
                v1.pathname
            )),
        }
    }
    if let Some(v2) = cgroups
        .0
        .iter()
        .find(|c| c.hierarchy == 0 && c.controllers.is_empty())
    {
        let unified = mounts.0.iter().filter(|m| m.fs_type == "cgroup2");
        match mounted_dir(&v2.pathname, unified, fs_root) {
            Some(dir) => {
                // cpu.stat exists in every v2 cgroup; the bandwidth fields only where the cpu
                // controller is enabled (by the parent's cgroup.subtree_control).
                let stat = dir.join("cpu.stat");
                let enabled = std::fs::read_to_string(&stat)
                    .is_ok_and(|t| t.lines().any(|l| l.starts_with("nr_periods ")));
                if enabled {
                    return Ok(CpuCgroup {
                        version: Version::V2,
                        dir,
                    });
                }
                seen.push(format!(
                    "cgroup v2 at {} has no cpu controller enabled (no nr_periods in {})",
                    dir.display(),
                    stat.display()
                ));
            }
            None => seen.push(format!(
                "cgroup v2 path {} but no cgroup2 mount holds it",
                v2.pathname
            )),
        }
    }
    if seen.is_empty() {
        seen.push("neither a v1 cpu hierarchy nor a v2 cgroup in /proc/self/cgroup".to_owned());
    }
    Err(CgroupError::NotVisible(seen.join("; ")))
}

/// Where `cgroup_path` (relative to its hierarchy's root) is visible: under the first of
/// `mounts` whose root (the subtree of the hierarchy it shows) contains it, when that directory
/// exists. In a container the mount's root is the container's own cgroup, or "/" with a cgroup
/// namespace, where /proc/self/cgroup says "/" too.
fn mounted_dir<'a>(
    cgroup_path: &str,
    mounts: impl Iterator<Item = &'a procfs::process::MountInfo>,
    fs_root: &Path,
) -> Option<PathBuf> {
    let cgroup_path = Path::new(cgroup_path);
    mounts
        .filter_map(|m| {
            let rest = cgroup_path.strip_prefix(&m.root).ok()?;
            let mut dir = fs_root.to_owned();
            dir.extend(relative(&m.mount_point));
            dir.extend(relative(rest));
            Some(dir)
        })
        .find(|dir| dir.is_dir())
}

fn relative(path: &Path) -> impl Iterator<Item = Component<'_>> {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
}

impl CpuCgroup {
    /// Reads the counters and the quota now.
    pub fn read(&self) -> Result<CpuBandwidth, CgroupError> {
        let stat_path = self.dir.join("cpu.stat");
        let stat = read_text(&stat_path)?;
        let fields = parse_keyed(&stat);
        let field = |key: &str| {
            fields.get(key).copied().ok_or_else(|| CgroupError::Parse {
                path: stat_path.clone(),
                reason: format!("no {key} line"),
            })
        };
        let periods = field("nr_periods")?;
        let throttled_periods = field("nr_throttled")?;
        let (throttled_seconds, (quota_seconds, period_seconds)) = match self.version {
            Version::V1 => {
                let quota = self.dir.join("cpu.cfs_quota_us");
                let period = self.dir.join("cpu.cfs_period_us");
                (
                    field("throttled_time")? as f64 / 1e9,
                    parse_v1_quota(&read_text(&quota)?, &read_text(&period)?).map_err(
                        |reason| CgroupError::Parse {
                            path: quota.clone(),
                            reason,
                        },
                    )?,
                )
            }
            Version::V2 => {
                let max = self.dir.join("cpu.max");
                (
                    field("throttled_usec")? as f64 / 1e6,
                    parse_v2_max(&read_text(&max)?)
                        .map_err(|reason| CgroupError::Parse { path: max, reason })?,
                )
            }
        };
        Ok(CpuBandwidth {
            periods,
            throttled_periods,
            throttled_seconds,
            quota_seconds,
            period_seconds,
        })
    }
}

fn read_text(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// `key value` lines (cpu.stat) with integer values; other lines are skipped, so that fields
/// newer kernels add (nr_bursts, burst_time, ...) change nothing.
fn parse_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (key, value) = l.split_once(' ')?;
            Some((key, value.trim().parse().ok()?))
        })
        .collect()
}

/// v1: `cpu.cfs_quota_us` (-1: unlimited) and `cpu.cfs_period_us`, in microseconds.
fn parse_v1_quota(quota: &str, period: &str) -> Result<(Option<f64>, f64), String> {
    let quota: i64 = quota
        .trim()
        .parse()
        .map_err(|_| format!("quota {:?} is not an integer", quota.trim()))?;
    let period: u64 = period
        .trim()
        .parse()
        .map_err(|_| format!("period {:?} is not a whole number", period.trim()))?;
    let quota = (quota >= 0).then(|| quota as f64 / 1e6);
    Ok((quota, period as f64 / 1e6))
}

/// v2: `cpu.max` is `$MAX $PERIOD` in microseconds, `max` meaning unlimited.
fn parse_v2_max(text: &str) -> Result<(Option<f64>, f64), String> {
    let mut fields = text.split_whitespace();
    let (Some(max), Some(period), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(format!("{:?} is not \"$MAX $PERIOD\"", text.trim()));
    };
    let period: u64 = period
        .parse()
        .map_err(|_| format!("period {period:?} is not a whole number"))?;
    let quota = match max {
        "max" => None,
        n => Some(
            n.parse::<u64>()
                .map_err(|_| format!("quota {n:?} is neither max nor a whole number"))?
                as f64
                / 1e6,
        ),
    };
    Ok((quota, period as f64 / 1e6))
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod tests;
