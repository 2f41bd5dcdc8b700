//! The `storage` section: volumes whose write, fsync and read paths are probed.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ByteSize, HumanDuration, check_timing, expanded_path, expanded_string};

/// The `storage` section. No volumes by default: the probe writes, so it runs only where asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub interval: HumanDuration,
    /// A run that takes longer counts as `timeout`; the stuck gauge keeps growing meanwhile.
    pub timeout: HumanDuration,
    /// Free space that must remain beyond `size` for a run to start (`insufficient_space`).
    pub reserve: ByteSize,
    /// How many 4 KiB write + fdatasync pairs the latency pass makes; 0 turns it off.
    pub sync_writes: u32,
    pub volumes: Vec<StorageVolume>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            interval: HumanDuration::from_secs(60),
            timeout: HumanDuration::from_secs(30),
            reserve: ByteSize(64 << 20),
            sync_writes: 16,
            volumes: Vec::new(),
        }
    }
}

/// One entry of `storage.volumes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageVolume {
    /// The `volume` label.
    #[serde(deserialize_with = "expanded_string")]
    pub name: String,
    /// A directory on the volume; probe files go to `<path>/.kube-netprobe/`.
    #[serde(deserialize_with = "expanded_path")]
    pub path: PathBuf,
    /// Bytes written and read back per run.
    #[serde(default = "default_size")]
    pub size: ByteSize,
    /// Size of each write and read.
    #[serde(default = "default_block_size")]
    pub block_size: ByteSize,
    /// Bypass the page cache with O_DIRECT (falling back to dropping the cache where the
    /// filesystem refuses O_DIRECT).
    #[serde(default = "default_direct_io")]
    pub direct_io: bool,
}

fn default_size() -> ByteSize {
    ByteSize(16 << 20)
}

fn default_block_size() -> ByteSize {
    ByteSize(1 << 20)
}

fn default_direct_io() -> bool {
    true
}

/// O_DIRECT wants offsets, lengths and buffers aligned to the logical block size; 4096 covers
/// every device in use (512e and 4Kn alike).
pub const DIRECT_IO_ALIGN: u64 = 4096;

/// The largest `block_size`. A volume holds two buffers of it while it is probed (the block in
/// the system call and the next one being filled or checksummed); the memory estimate counts both.
pub const MAX_BLOCK_SIZE: u64 = 64 << 20;

/// The largest `size`: what one run writes and reads back.
pub const MAX_SIZE: u64 = 1 << 30;

/// The largest `reserve`.
pub const MAX_RESERVE: u64 = 1 << 40;

/// Most `volumes`.
pub const MAX_VOLUMES: usize = 16;

/// Most `sync_writes`: each is a device round trip, and the pass must fit in the timeout.
pub const MAX_SYNC_WRITES: u32 = 10_000;

impl StorageConfig {
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        check_timing("storage", self.interval, self.timeout)?;
        super::check_count("storage.volumes", self.volumes.len(), MAX_VOLUMES)?;
        if self.reserve.0 > MAX_RESERVE {
            return Err((
                "storage.reserve".into(),
                format!("{} is more than {}", self.reserve, ByteSize(MAX_RESERVE)),
            ));
        }
        if self.sync_writes > MAX_SYNC_WRITES {
            return Err((
                "storage.sync_writes".into(),
                format!("{} is more than {MAX_SYNC_WRITES}", self.sync_writes),
            ));
        }
        let mut names = HashSet::new();
        for (i, v) in self.volumes.iter().enumerate() {
            let key = |field: &str| format!("storage.volumes[{i}].{field}");
            if !is_label_safe(&v.name) {
                return Err((
                    key("name"),
                    format!(
                        "`{}` is not a volume name: use 1 to 63 letters, digits, `-`, `_` or `.`",
                        v.name
                    ),
                ));
            }
            if !names.insert(v.name.as_str()) {
                return Err((key("name"), format!("`{}` is listed twice", v.name)));
            }
            if !v.path.is_absolute() {
                return Err((
                    key("path"),
                    format!("`{}` must be an absolute path", v.path.display()),
                ));
            }
            let (size, block) = (v.size.0, v.block_size.0);
            if block == 0 || block > MAX_BLOCK_SIZE {
                return Err((
                    key("block_size"),
                    format!(
                        "{} is out of range: from 1B to {}",
                        v.block_size,
                        ByteSize(MAX_BLOCK_SIZE)
                    ),
                ));
            }
            if v.direct_io && !block.is_multiple_of(DIRECT_IO_ALIGN) {
                return Err((
                    key("block_size"),
                    format!(
                        "{} must be a multiple of 4096 with direct_io (O_DIRECT needs aligned blocks)",
                        v.block_size
                    ),
                ));
            }
            if size > MAX_SIZE {
                return Err((
                    key("size"),
                    format!("{} is more than {}", v.size, ByteSize(MAX_SIZE)),
                ));
            }
            if size == 0 || !size.is_multiple_of(block) {
                return Err((
                    key("size"),
                    format!(
                        "{} must be a non-zero multiple of block_size ({})",
                        v.size, v.block_size
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Names that are safe as label values and as log fields, and readable on a dashboard.
fn is_label_safe(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn err(text: &str) -> String {
        Config::parse(text, "c.yaml").unwrap_err().to_string()
    }

    #[test]
    fn defaults_and_a_volume() {
        let c = Config::parse(
            "storage:\n  volumes:\n    - { name: scratch, path: /var/lib/x }\n",
            "c.yaml",
        )
        .unwrap();
        let v = &c.storage.volumes[0];
        assert_eq!(
            (v.size.0, v.block_size.0, v.direct_io),
            (16 << 20, 1 << 20, true)
        );
        assert_eq!(c.storage.interval.get().as_secs(), 60);
        assert_eq!(c.storage.reserve.0, 64 << 20);
        assert!(
            Config::parse("", "c.yaml")
                .unwrap()
                .storage
                .volumes
                .is_empty()
        );
        let again = Config::parse(&c.to_yaml(), "again.yaml").unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn bad_volumes_are_named() {
        let v = |body: &str| format!("storage:\n  volumes:\n    - {{ {body} }}\n");
        assert_eq!(
            err(&v("name: a, path: /x, size: 3MiB, block_size: 2MiB")),
            "c.yaml: storage.volumes[0].size: 3MiB must be a non-zero multiple of block_size (2MiB)"
        );
        assert_eq!(
            err(&v("name: a, path: /x, size: 6000, block_size: 1000")),
            "c.yaml: storage.volumes[0].block_size: 1000B must be a multiple of 4096 with direct_io (O_DIRECT needs aligned blocks)"
        );
        assert!(
            Config::parse(
                &v("name: a, path: /x, size: 6000, block_size: 1000, direct_io: false"),
                "c.yaml"
            )
            .is_ok()
        );
        assert_eq!(
            err(&v("name: a, path: relative/dir")),
            "c.yaml: storage.volumes[0].path: `relative/dir` must be an absolute path"
        );
        assert_eq!(
            err(&v("name: \"a b\", path: /x")),
            "c.yaml: storage.volumes[0].name: `a b` is not a volume name: use 1 to 63 letters, digits, `-`, `_` or `.`"
        );
        assert_eq!(
            err("storage:\n  volumes:\n    - { name: a, path: /x }\n    - { name: a, path: /y }\n"),
            "c.yaml: storage.volumes[1].name: `a` is listed twice"
        );
        assert!(
            err(&v("name: a, path: /x, dirct_io: true"))
                .contains("unknown field `dirct_io`, expected one of"),
        );
        assert_eq!(
            err("storage:\n  interval: 10s\n  timeout: 10s\n"),
            "c.yaml: storage.timeout: 10s must be shorter than storage.interval (10s), so that a probe ends before the next one starts"
        );
    }
}
