//! The storage prober: a continuous, safe and measured version of the runbook's
//! `dd if=/dev/zero of=/test bs=1M count=100; sync; dd if=/test of=/dev/null`.
//!
//! Each run, on a blocking thread: check free space, write `size` bytes of pseudo-random data (so
//! compression and dedup do not flatter the figures) in `block_size` chunks, fsync, read it back
//! past the page cache (O_DIRECT, or `posix_fadvise(DONTNEED)` where the filesystem refuses
//! O_DIRECT), compare checksums, delete; then `sync_writes` × (4 KiB write + fdatasync), the
//! latency that breaks etcd and databases on a bad volume.
//!
//! The volume is never harmed: everything happens in `<path>/.kube-netprobe/`, opened without
//! following symlinks and removed (files and directory) after every run and at start-up.
//!
//! A hung volume (dead NFS server, wedged CSI driver) blocks its thread in the kernel, where it
//! cannot be cancelled. So a run waits for its thread however long it takes: the watchdog records
//! `timeout` at `storage.timeout` and the stuck gauge keeps growing, while the scheduler sees the
//! run still in flight and counts later ticks as overruns. One thread per volume at most, and the
//! async runtime (DNS, peers, `/metrics`) never waits for it.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use tokio::time::Instant;

use crate::config::{StorageConfig, StorageVolume};
use crate::metrics::StorageMetrics;
use crate::probe::{Health, Transition};
use crate::scheduler::{RunFuture, Target};

/// Every `result` a storage probe can have.
pub const RESULTS: &[&str] = &[
    "success",
    "enospc",
    "erofs",
    "eio",
    "permission_denied",
    "timeout",
    "checksum_mismatch",
    "insufficient_space",
    "error",
];

/// Every `operation` the duration histogram observes.
pub const OPERATIONS: &[&str] = &["write", "fsync", "read", "delete", "sync_write"];

/// The operations that move bytes (`netprobe_storage_bytes_total`).
pub const BYTE_OPERATIONS: &[&str] = &["write", "read", "sync_write"];

/// The operations with a throughput gauge.
pub const THROUGHPUT_OPERATIONS: &[&str] = &["write", "read"];

/// The only directory the probe writes in, under each volume's path.
pub const PROBE_DIR: &str = ".kube-netprobe";
const DATA_FILE: &str = "probe.data";
const SYNC_FILE: &str = "sync.data";
/// One write of the latency pass: the page size, what a WAL append costs at least.
pub const SYNC_WRITE_BYTES: usize = 4096;
/// Buffer alignment for O_DIRECT.
const ALIGN: usize = 4096;

/// How often the stuck gauge is refreshed while a run is in flight.
const STUCK_REFRESH: Duration = Duration::from_millis(500);
/// The thread checks the deadline between operations and reports its own `timeout` (with the
/// timings it has, after cleaning up); the watchdog steps in this much later, for a thread stuck
/// inside one operation.
const WATCHDOG_GRACE: Duration = Duration::from_millis(500);
/// What the scheduler is told a run may take. A run lasts as long as its thread (see the module
/// doc); this only bounds how long the scheduler keeps it in flight before cutting it off, and
/// even then the next run waits for the old thread instead of starting another.
const SCHEDULER_CUT_OFF: Duration = Duration::from_secs(24 * 3600);

// ---------------------------------------------------------------------------------------------
// Pure parts

/// The `result` for a failed system call, from its errno.
pub fn errno_result(error: &io::Error) -> &'static str {
    let Some(raw) = error.raw_os_error() else {
        return match error.kind() {
            io::ErrorKind::PermissionDenied => "permission_denied",
            io::ErrorKind::TimedOut => "timeout",
            _ => "error",
        };
    };
    match Errno::from_raw_os_error(raw) {
        Errno::NOSPC | Errno::DQUOT => "enospc",
        Errno::ROFS => "erofs",
        Errno::IO => "eio",
        Errno::ACCESS | Errno::PERM => "permission_denied",
        Errno::TIMEDOUT => "timeout",
        _ => "error",
    }
}

/// Whether a run may write: `size` bytes plus the reserve must be free.
pub fn enough_space(free: u64, size: u64, reserve: u64) -> bool {
    free >= size.saturating_add(reserve)
}

/// A cheap pseudo-random byte stream (SplitMix64): incompressible enough that no filesystem or
/// device compresses or dedups it, and a few hundred times faster than the device.
#[derive(Debug, Clone)]
pub struct DataStream {
    state: u64,
}

impl DataStream {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_word(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_word().to_le_bytes());
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let word = self.next_word().to_le_bytes();
            tail.copy_from_slice(&word[..tail.len()]);
        }
    }
}

/// A streaming 64-bit checksum over little-endian words. Each step (xor, rotate, multiply by an
/// odd constant) is a bijection of the state, so a change confined to one word always changes the
/// result; the length is mixed in at the end. Not cryptographic: it guards against the storage
/// stack, not an adversary.
#[derive(Debug, Clone)]
pub struct Checksum {
    state: u64,
    len: u64,
    pending: [u8; 8],
    pending_len: usize,
}

impl Default for Checksum {
    fn default() -> Self {
        Self {
            state: 0x243F_6A88_85A3_08D3,
            len: 0,
            pending: [0; 8],
            pending_len: 0,
        }
    }
}

impl Checksum {
    fn mix(&mut self, word: u64) {
        self.state = (self.state ^ word)
            .rotate_left(23)
            .wrapping_mul(0x9FB2_1C65_1E98_DF25);
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.pending_len > 0 {
            let take = (8 - self.pending_len).min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len < 8 {
                return;
            }
            self.mix(u64::from_le_bytes(self.pending));
            self.pending_len = 0;
        }
        let mut chunks = data.chunks_exact(8);
        for chunk in &mut chunks {
            self.mix(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let tail = chunks.remainder();
        self.pending[..tail.len()].copy_from_slice(tail);
        self.pending_len = tail.len();
    }

    pub fn finish(mut self) -> u64 {
        if self.pending_len > 0 {
            let mut last = [0u8; 8];
            last[..self.pending_len].copy_from_slice(&self.pending[..self.pending_len]);
            self.mix(u64::from_le_bytes(last));
        }
        let len = self.len;
        self.mix(len);
        self.state
    }
}

/// A heap buffer whose usable slice starts on a 4096-byte boundary, as O_DIRECT requires. Safe
/// code cannot ask the allocator for an alignment, so it over-allocates and slices.
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let raw = vec![0u8; len + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        assert!(start < ALIGN, "a u8 pointer can always be aligned");
        Self { raw, start, len }
    }

    fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

// ---------------------------------------------------------------------------------------------
// One run, on a blocking thread

/// Times the operation a probe thread is in, for the stuck gauge.
#[derive(Debug, Default)]
pub struct OpClock {
    started: Mutex<Option<std::time::Instant>>,
}

impl OpClock {
    fn time<T>(&self, op: impl FnOnce() -> T) -> (T, Duration) {
        let start = std::time::Instant::now();
        *self.started.lock().expect("op clock lock") = Some(start);
        let out = op();
        *self.started.lock().expect("op clock lock") = None;
        (out, start.elapsed())
    }

    /// How long the operation in flight has been running; zero when none is.
    pub fn stuck_for(&self) -> Duration {
        self.started
            .lock()
            .expect("op clock lock")
            .map_or(Duration::ZERO, |start| start.elapsed())
    }
}

/// What one volume probe is asked to do.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    pub path: PathBuf,
    pub size: u64,
    pub block_size: usize,
    pub direct_io: bool,
    pub reserve: u64,
    pub sync_writes: u32,
}

impl ProbeSpec {
    pub fn new(volume: &StorageVolume, storage: &StorageConfig) -> Self {
        Self {
            path: volume.path.clone(),
            size: volume.size.0,
            block_size: usize::try_from(volume.block_size.0).expect("validated: at most 64MiB"),
            direct_io: volume.direct_io,
            reserve: storage.reserve.0,
            sync_writes: storage.sync_writes,
        }
    }
}

/// What one run saw.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageObservation {
    /// One of [`RESULTS`].
    pub result: &'static str,
    /// Durations of the operations that completed, in order (`sync_write` once per write).
    pub operations: Vec<(&'static str, Duration)>,
    /// Bytes moved, per operation of [`BYTE_OPERATIONS`], including those of a failed run.
    pub bytes: Vec<(&'static str, u64)>,
    /// Bytes per second of the write and read phases that completed.
    pub throughput: Vec<(&'static str, f64)>,
    /// Whether the data went past the page cache with O_DIRECT (`false`: dropped the cache with
    /// fadvise); unknown when the run failed before opening its file.
    pub direct_io: Option<bool>,
    /// What went wrong, for the log.
    pub detail: Option<String>,
}

impl StorageObservation {
    fn new() -> Self {
        Self {
            result: "success",
            operations: Vec::new(),
            bytes: Vec::new(),
            throughput: Vec::new(),
            direct_io: None,
            detail: None,
        }
    }

    /// A run the watchdog gave up on: its thread is stuck inside an operation.
    pub fn timed_out(stuck_for: Duration) -> Self {
        Self {
            result: "timeout",
            detail: Some(format!(
                "an operation has been running for {:.1}s",
                stuck_for.as_secs_f64()
            )),
            ..Self::new()
        }
    }

    fn add_bytes(&mut self, operation: &'static str, n: u64) {
        match self.bytes.iter_mut().find(|(op, _)| *op == operation) {
            Some((_, total)) => *total += n,
            None => self.bytes.push((operation, n)),
        }
    }
}

/// Why a run stopped early.
#[derive(Debug)]
struct Failure {
    result: &'static str,
    detail: String,
}

impl Failure {
    fn io(what: &str, error: io::Error) -> Self {
        Self {
            result: errno_result(&error),
            detail: format!("{what}: {error}"),
        }
    }

    fn new(result: &'static str, detail: impl Into<String>) -> Self {
        Self {
            result,
            detail: detail.into(),
        }
    }
}

fn sys<T>(what: &str, r: rustix::io::Result<T>) -> Result<T, Failure> {
    r.map_err(|e| Failure::io(what, e.into()))
}

fn cstr_name(name: &CStr) -> String {
    name.to_string_lossy().into_owned()
}

/// Opens the probe directory without following a symlink. `None` when it does not exist.
fn open_probe_dir(root: &OwnedFd, root_path: &Path) -> Result<Option<OwnedFd>, Failure> {
    match rustix::fs::openat(
        root,
        PROBE_DIR,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(Errno::LOOP | Errno::NOTDIR) => Err(Failure::new(
            "error",
            format!(
                "{} is a symlink or not a directory; refusing to write through it (remove it)",
                root_path.join(PROBE_DIR).display()
            ),
        )),
        Err(e) => Err(Failure::io("open the probe directory", e.into())),
    }
}

/// Removes the probe directory and what is in it. Entries are unlinked, never followed; a
/// directory inside (the probe never makes one) is removed only if empty.
fn remove_probe_dir(root: &OwnedFd, root_path: &Path) -> Result<usize, Failure> {
    let Some(dir) = open_probe_dir(root, root_path)? else {
        return Ok(0);
    };
    let mut removed = 0;
    let entries = sys("list the probe directory", rustix::fs::Dir::read_from(&dir))?;
    for entry in entries {
        let entry = sys("list the probe directory", entry)?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let what = format!("remove {}", cstr_name(name));
        match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
            Err(Errno::ISDIR) => sys(&what, rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR))?,
            other => sys(&what, other)?,
        }
        removed += 1;
    }
    drop(dir);
    match rustix::fs::unlinkat(root, PROBE_DIR, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(removed),
        Err(e) => Err(Failure::io("remove the probe directory", e.into())),
    }
}

fn open_root(path: &Path) -> Result<OwnedFd, Failure> {
    sys(
        "open the volume path",
        rustix::fs::openat(
            rustix::fs::CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ),
    )
}

/// Removes what a crashed run left on the volume; returns how many entries it removed.
pub fn remove_leftovers(path: &Path) -> io::Result<usize> {
    let root = open_root(path).map_err(|f| io::Error::other(f.detail))?;
    remove_probe_dir(&root, path).map_err(|f| io::Error::other(f.detail))
}

/// Creates a probe file; with `direct`, switches it to O_DIRECT and says whether that worked.
fn create(dir: &OwnedFd, name: &str, direct: bool) -> Result<(File, bool), Failure> {
    let fd = sys(
        &format!("create {name}"),
        rustix::fs::openat(
            dir,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ),
    )?;
    let mut is_direct = false;
    if direct {
        let flags = sys("read the file flags", rustix::fs::fcntl_getfl(&fd))?;
        match rustix::fs::fcntl_setfl(&fd, flags | OFlags::DIRECT) {
            Ok(()) => is_direct = true,
            // The filesystem has no O_DIRECT (older tmpfs, some FUSE and network filesystems).
            Err(Errno::INVAL) => {}
            Err(e) => return Err(Failure::io("set O_DIRECT", e.into())),
        }
    }
    Ok((File::from(fd), is_direct))
}

struct Run<'a> {
    spec: &'a ProbeSpec,
    clock: &'a OpClock,
    deadline: std::time::Instant,
    seed: u64,
    obs: StorageObservation,
}

impl Run<'_> {
    fn check_deadline(&self) -> Result<(), Failure> {
        if std::time::Instant::now() >= self.deadline {
            Err(Failure::new("timeout", "the run went past storage.timeout"))
        } else {
            Ok(())
        }
    }

    fn timed<T>(
        &mut self,
        operation: &'static str,
        what: &str,
        op: impl FnOnce() -> io::Result<T>,
    ) -> Result<(T, Duration), Failure> {
        let (out, took) = self.clock.time(op);
        let out = out.map_err(|e| Failure::io(what, e))?;
        if !operation.is_empty() {
            self.obs.operations.push((operation, took));
        }
        Ok((out, took))
    }

    fn run(&mut self) -> Result<(), Failure> {
        let root = open_root(&self.spec.path)?;
        // Leftovers of a crash would count against the free space and collide with our names.
        remove_probe_dir(&root, &self.spec.path)?;
        let stat = sys("statvfs", rustix::fs::fstatvfs(&root))?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        if !enough_space(free, self.spec.size, self.spec.reserve) {
            return Err(Failure::new(
                "insufficient_space",
                format!(
                    "{free} bytes free, the probe needs {} plus a reserve of {}",
                    self.spec.size, self.spec.reserve
                ),
            ));
        }
        sys(
            "create the probe directory",
            rustix::fs::mkdirat(&root, PROBE_DIR, Mode::from_raw_mode(0o700)),
        )?;
        let outcome = open_probe_dir(&root, &self.spec.path).and_then(|dir| {
            let dir = dir.ok_or_else(|| Failure::new("error", "the probe directory vanished"))?;
            self.bulk(&dir).and_then(|()| self.sync_pass(&dir))
        });
        // Always leave the volume as it was, whatever happened above.
        let cleaned = remove_probe_dir(&root, &self.spec.path);
        outcome?;
        cleaned.map(|_| ())
    }

    /// Write, fsync, read back, verify, delete.
    fn bulk(&mut self, dir: &OwnedFd) -> Result<(), Failure> {
        let (file, direct) = create(dir, DATA_FILE, self.spec.direct_io)?;
        self.obs.direct_io = Some(direct);
        let block = self.spec.block_size;
        let (written, write_time) = self.write_out(&file, block)?;
        self.obs.operations.push(("write", write_time));
        self.obs
            .throughput
            .push(("write", rate(self.spec.size, write_time)));
        self.check_deadline()?;
        self.timed("fsync", "fsync", || file.sync_all())?;
        if !direct {
            // Drop the clean pages so the read comes from the device, not from memory.
            let size = self.spec.size;
            self.timed("", "posix_fadvise(DONTNEED)", || {
                rustix::fs::fadvise(
                    &file,
                    0,
                    NonZeroU64::new(size),
                    rustix::fs::Advice::DontNeed,
                )
                .map_err(io::Error::from)
            })?;
        }

        let (read, offset, read_time) = self.read_back(&file, block)?;
        self.obs.operations.push(("read", read_time));
        self.obs
            .throughput
            .push(("read", rate(self.spec.size, read_time)));
        drop(file);
        let (expected, got) = (written.finish(), read.finish());
        self.timed("delete", "delete", || {
            rustix::fs::unlinkat(dir, DATA_FILE, AtFlags::empty()).map_err(io::Error::from)
        })?;
        if offset != self.spec.size {
            return Err(Failure::new(
                "checksum_mismatch",
                format!("read back {offset} of {} bytes", self.spec.size),
            ));
        }
        if expected != got {
            return Err(Failure::new(
                "checksum_mismatch",
                format!("read back different data (checksum {got:016x}, wrote {expected:016x})"),
            ));
        }
        Ok(())
    }

    /// Writes `size` bytes of the data stream in `block`-sized writes, back to back: a second
    /// thread generates and checksums the next block while this one writes the previous, so the
    /// device never waits for the CPU (as it does not with fio or dd). Returns the checksum of
    /// what was written and the time spent in `pwrite` alone.
    fn write_out(&mut self, file: &File, block: usize) -> Result<(Checksum, Duration), Failure> {
        let (size, seed) = (self.spec.size, self.seed);
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(AlignedBuf, usize)>(2);
        let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<AlignedBuf>(2);
        for _ in 0..2 {
            empty_tx
                .send(AlignedBuf::new(block))
                .expect("the channel holds both buffers");
        }
        std::thread::scope(|scope| {
            let filler = scope.spawn(move || {
                let mut data = DataStream::new(seed);
                let mut sum = Checksum::default();
                let mut offset = 0u64;
                while offset < size {
                    // Err: the writer stopped (an error); nothing more to prepare.
                    let Ok(mut buf) = empty_rx.recv() else { break };
                    let len = block.min((size - offset) as usize);
                    data.fill(&mut buf.as_mut_slice()[..len]);
                    sum.update(&buf.as_slice()[..len]);
                    if full_tx.send((buf, len)).is_err() {
                        break;
                    }
                    offset += len as u64;
                }
                sum
            });
            let mut write_time = Duration::ZERO;
            let mut offset = 0u64;
            let outcome = loop {
                if offset >= size {
                    break Ok(());
                }
                if let Err(e) = self.check_deadline() {
                    break Err(e);
                }
                let Ok((buf, len)) = full_rx.recv() else {
                    break Err(Failure::new("error", "the data thread stopped"));
                };
                let chunk = &buf.as_slice()[..len];
                let (out, took) = self.clock.time(|| file.write_all_at(chunk, offset));
                write_time += took;
                if let Err(e) = out {
                    break Err(Failure::io("write", e));
                }
                self.obs.add_bytes("write", len as u64);
                offset += len as u64;
                // Two buffers in all, so this never blocks; after the last block nobody reads it.
                let _ = empty_tx.send(buf);
            };
            // Unblocks the data thread if it waits for a buffer after an error.
            drop(empty_tx);
            drop(full_rx);
            let sum = filler
                .join()
                .map_err(|_| Failure::new("error", "the data thread panicked"))?;
            outcome.map(|()| (sum, write_time))
        })
    }

    /// Reads the file back block by block, checksumming on a second thread so that the reads go
    /// back to back (as fio's and dd's do) instead of leaving the device idle while a block is
    /// checksummed. Returns the checksum, the bytes read and the time spent in `pread` alone.
    fn read_back(
        &mut self,
        file: &File,
        block: usize,
    ) -> Result<(Checksum, u64, Duration), Failure> {
        let size = self.spec.size;
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(AlignedBuf, usize)>(2);
        let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<AlignedBuf>(2);
        std::thread::scope(|scope| {
            let summer = scope.spawn(move || {
                let mut sum = Checksum::default();
                for (buf, n) in full_rx {
                    sum.update(&buf.as_slice()[..n]);
                    // The reader may have stopped; then the buffer is simply dropped.
                    let _ = empty_tx.send(buf);
                }
                sum
            });
            let mut spare = Some(AlignedBuf::new(block));
            let mut next = Some(AlignedBuf::new(block));
            let mut read_time = Duration::ZERO;
            let mut offset = 0u64;
            let outcome = loop {
                if offset >= size {
                    break Ok(());
                }
                if let Err(e) = self.check_deadline() {
                    break Err(e);
                }
                let Some(mut buf) = next
                    .take()
                    .or_else(|| spare.take())
                    .or_else(|| empty_rx.recv().ok())
                else {
                    break Err(Failure::new("error", "the checksum thread stopped"));
                };
                let len = block.min((size - offset) as usize);
                let chunk = &mut buf.as_mut_slice()[..len];
                let (out, took) = self.clock.time(|| read_full_at(file, chunk, offset));
                read_time += took;
                let n = match out {
                    Ok(n) => n,
                    Err(e) => break Err(Failure::io("read", e)),
                };
                self.obs.add_bytes("read", n as u64);
                offset += n as u64;
                if full_tx.send((buf, n)).is_err() {
                    break Err(Failure::new("error", "the checksum thread stopped"));
                }
                if n < len {
                    break Ok(());
                }
            };
            drop(full_tx);
            let sum = summer
                .join()
                .map_err(|_| Failure::new("error", "the checksum thread panicked"))?;
            outcome.map(|()| (sum, offset, read_time))
        })
    }

    /// `sync_writes` × (4 KiB append + fdatasync): the latency a WAL sees.
    fn sync_pass(&mut self, dir: &OwnedFd) -> Result<(), Failure> {
        if self.spec.sync_writes == 0 {
            return Ok(());
        }
        let (file, _) = create(dir, SYNC_FILE, self.spec.direct_io)?;
        let mut buf = AlignedBuf::new(SYNC_WRITE_BYTES);
        DataStream::new(!self.seed).fill(buf.as_mut_slice());
        for i in 0..u64::from(self.spec.sync_writes) {
            self.check_deadline()?;
            let offset = i * SYNC_WRITE_BYTES as u64;
            let block = buf.as_slice();
            self.timed("sync_write", "sync write", || {
                file.write_all_at(block, offset)?;
                file.sync_data()
            })?;
            self.obs.add_bytes("sync_write", SYNC_WRITE_BYTES as u64);
        }
        drop(file);
        sys(
            "delete the sync file",
            rustix::fs::unlinkat(dir, SYNC_FILE, AtFlags::empty()),
        )
    }
}

/// Reads until `buf` is full or the file ends; returns how much it read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn rate(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64().max(1e-9)
}

/// Probes one volume once, on the calling (blocking) thread. `seed` varies the data per run.
pub fn probe_volume(
    spec: &ProbeSpec,
    clock: &OpClock,
    deadline: std::time::Instant,
    seed: u64,
) -> StorageObservation {
    let mut run = Run {
        spec,
        clock,
        deadline,
        seed,
        obs: StorageObservation::new(),
    };
    let outcome = run.run();
    let mut obs = run.obs;
    if let Err(failure) = outcome {
        obs.result = failure.result;
        obs.detail = Some(failure.detail);
    }
    obs
}

// ---------------------------------------------------------------------------------------------
// The target

/// Clears the "thread alive" flag when the probe thread ends, also by a panic.
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// One volume: probes it and records what it saw.
#[derive(Debug)]
pub struct StorageTarget {
    volume: String,
    spec: Arc<ProbeSpec>,
    interval: Duration,
    timeout: Duration,
    metrics: StorageMetrics,
    clock: Arc<OpClock>,
    /// Set while a probe thread of this volume runs; at most one does.
    alive: Arc<AtomicBool>,
    runs: AtomicU64,
    health: Health,
}

impl StorageTarget {
    pub fn new(volume: &StorageVolume, storage: &StorageConfig, metrics: StorageMetrics) -> Self {
        metrics.add_volume(&volume.name);
        Self {
            volume: volume.name.clone(),
            spec: Arc::new(ProbeSpec::new(volume, storage)),
            interval: storage.interval.get(),
            timeout: storage.timeout.get(),
            metrics,
            clock: Arc::default(),
            alive: Arc::default(),
            runs: AtomicU64::new(0),
            health: Health::default(),
        }
    }

    /// Removes what a crashed predecessor left, on a blocking thread that counts as this
    /// volume's one thread (a hung volume hangs it, and the first run then waits).
    pub fn remove_leftovers(&self) {
        self.alive.store(true, Ordering::Release);
        let guard = AliveGuard(self.alive.clone());
        let (path, volume) = (self.spec.path.clone(), self.volume.clone());
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            match remove_leftovers(&path) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    %volume, dir = %path.join(PROBE_DIR).display(), entries = n,
                    "removed leftovers of an earlier run"
                ),
                Err(e) => tracing::debug!(%volume, error = %e, "no leftovers removed"),
            }
        });
    }

    fn seed(&self) -> u64 {
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        rand::random::<u64>() ^ run
    }

    /// Keeps the run in flight until an older thread ends (after the scheduler cut a run off).
    async fn wait_for_previous(&self) {
        tracing::warn!(
            volume = %self.volume,
            "the previous probe thread of this volume is still running (stuck I/O); not starting another"
        );
        while self.alive.load(Ordering::Acquire) {
            self.metrics
                .set_stuck(&self.volume, self.clock.stuck_for().as_secs_f64());
            tokio::time::sleep(STUCK_REFRESH).await;
        }
        self.metrics.set_stuck(&self.volume, 0.0);
    }

    async fn run_once(&self) {
        if self.alive.load(Ordering::Acquire) {
            return self.wait_for_previous().await;
        }
        self.alive.store(true, Ordering::Release);
        let guard = AliveGuard(self.alive.clone());
        let (spec, clock) = (self.spec.clone(), self.clock.clone());
        let deadline = std::time::Instant::now() + self.timeout;
        let seed = self.seed();
        let mut job = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            probe_volume(&spec, &clock, deadline, seed)
        });
        let watchdog = Instant::now() + self.timeout + WATCHDOG_GRACE;
        let mut refresh = tokio::time::interval(STUCK_REFRESH);
        let mut timed_out = false;
        loop {
            tokio::select! {
                joined = &mut job => {
                    self.metrics.set_stuck(&self.volume, 0.0);
                    let obs = joined.unwrap_or_else(|e| StorageObservation {
                        result: "error",
                        detail: Some(format!("the probe thread failed: {e}")),
                        ..StorageObservation::new()
                    });
                    if timed_out {
                        // Its timeout is counted; what it measured on the way still happened.
                        self.metrics.record_operations(&self.volume, &obs);
                        tracing::info!(
                            volume = %self.volume, result = obs.result,
                            "a stuck probe finished after its timeout"
                        );
                    } else {
                        self.record(&obs);
                    }
                    return;
                }
                _ = refresh.tick() => {
                    let stuck = self.clock.stuck_for();
                    self.metrics.set_stuck(&self.volume, stuck.as_secs_f64());
                    if !timed_out && Instant::now() >= watchdog {
                        timed_out = true;
                        self.record(&StorageObservation::timed_out(stuck));
                    }
                }
            }
        }
    }

    fn record(&self, obs: &StorageObservation) {
        self.metrics.record(&self.volume, obs);
        let ok = obs.result == "success";
        match self.health.update(ok) {
            Transition::StartedFailing => tracing::warn!(
                volume = %self.volume, path = %self.spec.path.display(), result = obs.result,
                detail = obs.detail.as_deref().unwrap_or(""),
                "storage probe failing"
            ),
            Transition::Recovered => {
                tracing::info!(volume = %self.volume, "storage probe recovered")
            }
            Transition::Unchanged => {}
        }
    }
}

impl Target for StorageTarget {
    fn probe(&self) -> &'static str {
        "storage"
    }

    fn describe(&self) -> String {
        format!("storage {} ({})", self.volume, self.spec.path.display())
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn deadline(&self) -> Duration {
        SCHEDULER_CUT_OFF
    }

    fn run(self: Arc<Self>, _deadline: Instant) -> RunFuture {
        Box::pin(async move { self.run_once().await })
    }

    fn cut_off(&self) {
        // The watchdog recorded the timeout long ago; the next run waits for the thread.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_maps_to_the_closed_set() {
        for (errno, result) in [
            (Errno::NOSPC, "enospc"),
            (Errno::DQUOT, "enospc"),
            (Errno::ROFS, "erofs"),
            (Errno::IO, "eio"),
            (Errno::ACCESS, "permission_denied"),
            (Errno::PERM, "permission_denied"),
            (Errno::TIMEDOUT, "timeout"),
            (Errno::NOENT, "error"),
            (Errno::LOOP, "error"),
        ] {
            let label = errno_result(&io::Error::from(errno));
            assert_eq!(label, result, "{errno:?}");
            assert!(RESULTS.contains(&label));
        }
        assert_eq!(errno_result(&io::Error::other("x")), "error");
    }

    #[test]
    fn the_guard_keeps_the_reserve() {
        let mib = 1 << 20;
        assert!(enough_space(80 * mib, 16 * mib, 64 * mib));
        assert!(!enough_space(80 * mib - 1, 16 * mib, 64 * mib));
        assert!(!enough_space(4 * mib, 16 * mib, 0));
        assert!(enough_space(16 * mib, 16 * mib, 0));
        assert!(!enough_space(u64::MAX - 1, u64::MAX, 1));
    }

    #[test]
    fn data_is_not_constant_and_depends_on_the_seed() {
        let mut a = vec![0u8; 1 << 16];
        DataStream::new(1).fill(&mut a);
        let mut b = vec![0u8; 1 << 16];
        DataStream::new(2).fill(&mut b);
        assert_ne!(a, b);
        // Every byte value shows up at about the same rate: nothing for compression to take.
        let mut counts = [0usize; 256];
        for byte in &a {
            counts[*byte as usize] += 1;
        }
        let expected = a.len() / 256;
        assert!(
            counts.iter().all(|c| c.abs_diff(expected) < expected / 2),
            "{counts:?}"
        );
        // The same seed gives the same stream, however it is chunked.
        let mut c = vec![0u8; 1 << 16];
        let mut stream = DataStream::new(1);
        for chunk in c.chunks_mut(4096) {
            stream.fill(chunk);
        }
        assert_eq!(a, c);
    }

    #[test]
    fn checksum_catches_flips_and_ignores_chunking() {
        let mut data = vec![0u8; 10_001];
        DataStream::new(7).fill(&mut data);
        let whole = {
            let mut c = Checksum::default();
            c.update(&data);
            c.finish()
        };
        let chunked = {
            let mut c = Checksum::default();
            for chunk in data.chunks(333) {
                c.update(chunk);
            }
            c.finish()
        };
        assert_eq!(whole, chunked);
        for i in [0, 1, 4096, 9_999, 10_000] {
            let mut bad = data.clone();
            bad[i] ^= 0x01;
            let mut c = Checksum::default();
            c.update(&bad);
            assert_ne!(c.finish(), whole, "flip at {i}");
        }
        let mut short = Checksum::default();
        short.update(&data[..10_000]);
        assert_ne!(short.finish(), whole);
    }

    #[test]
    fn aligned_buffers_are_aligned() {
        for len in [4096, 1 << 20, 12_288] {
            let buf = AlignedBuf::new(len);
            assert_eq!(buf.as_slice().as_ptr() as usize % ALIGN, 0);
            assert_eq!(buf.as_slice().len(), len);
        }
    }

    fn spec(path: &Path) -> ProbeSpec {
        ProbeSpec {
            path: path.to_owned(),
            size: 256 << 10,
            block_size: 64 << 10,
            direct_io: true,
            reserve: 0,
            sync_writes: 3,
        }
    }

    fn far() -> std::time::Instant {
        std::time::Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn a_run_succeeds_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("user-file"), b"keep me").unwrap();
        let clock = OpClock::default();
        let obs = probe_volume(&spec(dir.path()), &clock, far(), 42);
        assert_eq!(obs.result, "success", "{:?}", obs.detail);
        let ops: Vec<&str> = obs.operations.iter().map(|(op, _)| *op).collect();
        assert_eq!(
            ops,
            [
                "write",
                "fsync",
                "read",
                "delete",
                "sync_write",
                "sync_write",
                "sync_write"
            ]
        );
        assert_eq!(
            obs.bytes,
            [
                ("write", 256 << 10),
                ("read", 256 << 10),
                ("sync_write", 3 * 4096)
            ]
        );
        assert!(obs.direct_io.is_some());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["user-file"]);
        assert_eq!(clock.stuck_for(), Duration::ZERO);
    }

    #[test]
    fn the_guard_skips_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path());
        s.reserve = u64::MAX / 2;
        let obs = probe_volume(&s, &OpClock::default(), far(), 1);
        assert_eq!(obs.result, "insufficient_space");
        assert!(obs.operations.is_empty());
        assert!(!dir.path().join(PROBE_DIR).exists());
    }

    #[test]
    fn leftovers_are_removed_and_symlinks_refused() {
        let dir = tempfile::tempdir().unwrap();
        let probe_dir = dir.path().join(PROBE_DIR);
        std::fs::create_dir(&probe_dir).unwrap();
        std::fs::write(probe_dir.join(DATA_FILE), b"crashed").unwrap();
        // A symlink inside is removed as a link; its target survives.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), probe_dir.join("link")).unwrap();
        assert_eq!(remove_leftovers(dir.path()).unwrap(), 2);
        assert!(!probe_dir.exists());
        assert!(outside.path().join("precious").exists());

        // The probe directory itself as a symlink: refused, nothing written through it.
        std::os::unix::fs::symlink(outside.path(), &probe_dir).unwrap();
        let obs = probe_volume(&spec(dir.path()), &OpClock::default(), far(), 1);
        assert_eq!(obs.result, "error");
        assert!(obs.detail.unwrap().contains("symlink"));
        let outside_names: Vec<_> = std::fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(outside_names, ["precious"]);
    }

    #[test]
    fn a_passed_deadline_is_a_timeout_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let past = std::time::Instant::now();
        let obs = probe_volume(&spec(dir.path()), &OpClock::default(), past, 1);
        assert_eq!(obs.result, "timeout");
        assert!(!dir.path().join(PROBE_DIR).exists());
    }
}
