//! The storage prober: a continuous, safe and measured version of the runbook's
//! `dd if=/dev/zero of=/test bs=1M count=100; sync; dd if=/test of=/dev/null`.
//!
//! Each run, on a blocking thread: check free space, write `size` bytes of pseudo-random data (so
//! compression and dedup do not flatter the figures) in `block_size` chunks, fsync, read it back
//! past the page cache (O_DIRECT, or `posix_fadvise(DONTNEED)` where the filesystem refuses
//! O_DIRECT), compare checksums, delete; then `sync_writes` × (4 KiB write + fdatasync), the
//! latency that breaks etcd and databases on a bad volume.
//!
//! Memory: a volume holds two `block_size` buffers while it is probed, in the write phase and
//! then in the read-back (one block in the system call, the next being filled or checksummed),
//! plus 4 KiB for the sync pass; the config's memory estimate counts exactly that.
//!
//! The volume is never harmed: everything happens in `<path>/.kube-netprobe/`, opened without
//! following symlinks and removed (files and directory) after every run and at start-up.
//!
//! A hung volume (dead NFS server, frozen filesystem, wedged CSI driver) blocks its thread in the
//! kernel, where it cannot be cancelled, and it may do so in any call: a frozen filesystem in
//! mkdir or at the entry of write, a dead NFS server in open, statfs or the flush of close. So
//! every call a probe thread makes on the volume goes through one [`OpClock`] (opening the path,
//! listing and removing `.kube-netprobe/`, statfs, mkdir, open, write, fsync, read, close,
//! unlink; the start-up cleanup's too), and a watchdog task beside the thread publishes how long
//! the call in flight has been running (`netprobe_storage_stuck_seconds`) for as long as the
//! thread lives. A run whose thread is not done at `storage.timeout` counts as `timeout` and
//! ends; the thread goes on alone. Each volume has one thread at most (a one-permit semaphore the
//! thread holds until it returns): a later run waits, within its own timeout, for the previous
//! thread to end, and counts as `timeout` when it does not, without starting another. A hung
//! volume therefore reads as one `timeout` per interval and a stuck gauge that keeps growing, and
//! the async runtime (DNS, peers, `/metrics`, other volumes) never waits for it.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::JoinError;
use tokio::time::Instant;

use crate::config::{StorageConfig, StorageVolume};
use crate::metrics::StorageMetrics;
pub use crate::observation::storage::{
    BYTE_OPERATIONS, OPERATIONS, RESULTS, StorageObservation, THROUGHPUT_OPERATIONS,
};
use crate::probe::{Health, Transition};
use crate::scheduler::{RunFuture, Target, later};

/// The only directory the probe writes in, under each volume's path.
pub const PROBE_DIR: &str = ".kube-netprobe";
const DATA_FILE: &str = "probe.data";
const SYNC_FILE: &str = "sync.data";
/// One write of the latency pass: the page size, what a WAL append costs at least.
pub const SYNC_WRITE_BYTES: usize = 4096;
/// Buffer alignment for O_DIRECT.
const ALIGN: usize = 4096;

/// How often the stuck gauge is refreshed while a probe thread is alive.
const STUCK_REFRESH: Duration = Duration::from_millis(500);
/// The thread checks the deadline between operations and reports its own `timeout` (with the
/// timings it has, after cleaning up); the watchdog steps in this much later, for a thread stuck
/// inside one call.
const WATCHDOG_GRACE: Duration = Duration::from_millis(500);

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

/// The call a probe thread is in, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    /// What the thread is doing on the volume (`mkdir`, `open`, `write`, ...).
    pub call: &'static str,
    pub since: std::time::Instant,
}

impl InFlight {
    /// "blocked in mkdir for 31.2s", for the log and the observation's detail.
    pub fn describe(&self) -> String {
        format!(
            "blocked in {} for {:.1}s",
            self.call,
            self.since.elapsed().as_secs_f64()
        )
    }
}

/// Times the call a probe thread is in, for the watchdog. Every call a probe makes on the volume
/// goes through [`OpClock::time`] or [`OpClock::call`]: a hang in one that does not is invisible.
#[derive(Debug, Default)]
pub struct OpClock {
    in_flight: Mutex<Option<InFlight>>,
    /// Every call, in order, for the tests that check a run shows each phase.
    #[cfg(test)]
    trace: Mutex<Vec<&'static str>>,
}

/// Puts back what was in flight before a call (nothing, or the call around a nested one) when
/// the call returns, also by a panic, so the clock never shows a call that is over.
struct Restore<'a> {
    clock: &'a OpClock,
    outer: Option<InFlight>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        *self.clock.lock() = self.outer;
    }
}

impl OpClock {
    fn lock(&self) -> MutexGuard<'_, Option<InFlight>> {
        // A poisoned lock only means a thread panicked between two plain stores.
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `op` as the call named `call`; returns its output and how long it took.
    pub fn time<T>(&self, call: &'static str, op: impl FnOnce() -> T) -> (T, Duration) {
        #[cfg(test)]
        self.trace.lock().unwrap().push(call);
        let since = std::time::Instant::now();
        let outer = self.lock().replace(InFlight { call, since });
        let _restore = Restore { clock: self, outer };
        let out = op();
        (out, since.elapsed())
    }

    /// Runs `op` as the call named `call`.
    pub fn call<T>(&self, call: &'static str, op: impl FnOnce() -> T) -> T {
        self.time(call, op).0
    }

    /// The call in flight, if any.
    pub fn in_flight(&self) -> Option<InFlight> {
        *self.lock()
    }

    /// How long the call in flight has been running; zero when none is.
    pub fn stuck_for(&self) -> Duration {
        self.in_flight()
            .map_or(Duration::ZERO, |op| op.since.elapsed())
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

/// A file, directory or directory listing the probe opened on the volume, whose close goes
/// through the clock like every other call (closing a written file flushes it on NFS and FUSE,
/// where a dead server hangs it), also when a run stops early.
struct Handle<'a, T> {
    inner: Option<T>,
    clock: &'a OpClock,
}

impl<'a, T> Handle<'a, T> {
    fn new(clock: &'a OpClock, inner: T) -> Self {
        Self {
            inner: Some(inner),
            clock,
        }
    }
}

impl<T> std::ops::Deref for Handle<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.inner.as_ref().expect("only taken on drop")
    }
}

impl<T> std::ops::DerefMut for Handle<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.inner.as_mut().expect("only taken on drop")
    }
}

impl<T> Drop for Handle<'_, T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            self.clock.call("close", || drop(inner));
        }
    }
}

/// Opens the probe directory without following a symlink. `None` when it does not exist.
fn open_probe_dir<'a>(
    clock: &'a OpClock,
    root: &OwnedFd,
    root_path: &Path,
) -> Result<Option<Handle<'a, OwnedFd>>, Failure> {
    let opened = clock.call("open", || {
        rustix::fs::openat(
            root,
            PROBE_DIR,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    });
    match opened {
        Ok(fd) => Ok(Some(Handle::new(clock, fd))),
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
fn remove_probe_dir(clock: &OpClock, root: &OwnedFd, root_path: &Path) -> Result<usize, Failure> {
    let Some(dir) = open_probe_dir(clock, root, root_path)? else {
        return Ok(0);
    };
    let mut removed = 0;
    let mut entries = Handle::new(
        clock,
        sys(
            "list the probe directory",
            clock.call("open", || rustix::fs::Dir::read_from(&*dir)),
        )?,
    );
    while let Some(entry) = clock.call("readdir", || entries.next()) {
        let entry = sys("list the probe directory", entry)?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let what = format!("remove {}", cstr_name(name));
        match clock.call("unlink", || {
            rustix::fs::unlinkat(&*dir, name, AtFlags::empty())
        }) {
            Err(Errno::ISDIR) => sys(
                &what,
                clock.call("rmdir", || {
                    rustix::fs::unlinkat(&*dir, name, AtFlags::REMOVEDIR)
                }),
            )?,
            other => sys(&what, other)?,
        }
        removed += 1;
    }
    drop((entries, dir));
    match clock.call("rmdir", || {
        rustix::fs::unlinkat(root, PROBE_DIR, AtFlags::REMOVEDIR)
    }) {
        Ok(()) | Err(Errno::NOENT) => Ok(removed),
        Err(e) => Err(Failure::io("remove the probe directory", e.into())),
    }
}

fn open_root<'a>(clock: &'a OpClock, path: &Path) -> Result<Handle<'a, OwnedFd>, Failure> {
    let fd = sys(
        "open the volume path",
        clock.call("open", || {
            rustix::fs::openat(
                rustix::fs::CWD,
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        }),
    )?;
    Ok(Handle::new(clock, fd))
}

/// Removes what a crashed run left on the volume; returns how many entries it removed.
pub fn remove_leftovers(path: &Path, clock: &OpClock) -> io::Result<usize> {
    let root = open_root(clock, path).map_err(|f| io::Error::other(f.detail))?;
    remove_probe_dir(clock, &root, path).map_err(|f| io::Error::other(f.detail))
}

/// Creates a probe file; with `direct`, switches it to O_DIRECT and says whether that worked.
fn create<'a>(
    clock: &'a OpClock,
    dir: &OwnedFd,
    name: &str,
    direct: bool,
) -> Result<(Handle<'a, File>, bool), Failure> {
    let fd = sys(
        &format!("create {name}"),
        clock.call("open", || {
            rustix::fs::openat(
                dir,
                name,
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        }),
    )?;
    let file = Handle::new(clock, File::from(fd));
    let mut is_direct = false;
    if direct {
        let flags = sys(
            "read the file flags",
            clock.call("fcntl", || rustix::fs::fcntl_getfl(&*file)),
        )?;
        match clock.call("fcntl", || {
            rustix::fs::fcntl_setfl(&*file, flags | OFlags::DIRECT)
        }) {
            Ok(()) => is_direct = true,
            // The filesystem has no O_DIRECT (older tmpfs, some FUSE and network filesystems).
            Err(Errno::INVAL) => {}
            Err(e) => return Err(Failure::io("set O_DIRECT", e.into())),
        }
    }
    Ok((file, is_direct))
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

    /// Runs one measured operation (its name is also the clock's) and records its duration.
    fn timed<T>(
        &mut self,
        operation: &'static str,
        what: &str,
        op: impl FnOnce() -> io::Result<T>,
    ) -> Result<(T, Duration), Failure> {
        let (out, took) = self.clock.time(operation, op);
        let out = out.map_err(|e| Failure::io(what, e))?;
        self.obs.operations.push((operation, took));
        Ok((out, took))
    }

    fn run(&mut self) -> Result<(), Failure> {
        let clock = self.clock;
        let root = open_root(clock, &self.spec.path)?;
        // Leftovers of a crash would count against the free space and collide with our names.
        remove_probe_dir(clock, &root, &self.spec.path)?;
        let stat = sys(
            "statvfs",
            clock.call("statfs", || rustix::fs::fstatvfs(&*root)),
        )?;
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
            clock.call("mkdir", || {
                rustix::fs::mkdirat(&*root, PROBE_DIR, Mode::from_raw_mode(0o700))
            }),
        )?;
        let outcome = open_probe_dir(clock, &root, &self.spec.path).and_then(|dir| {
            let dir = dir.ok_or_else(|| Failure::new("error", "the probe directory vanished"))?;
            self.bulk(&dir).and_then(|()| self.sync_pass(&dir))
        });
        // Always leave the volume as it was, whatever happened above.
        let cleaned = remove_probe_dir(clock, &root, &self.spec.path);
        drop(root);
        outcome?;
        cleaned.map(|_| ())
    }

    /// Write, fsync, read back, verify, delete.
    fn bulk(&mut self, dir: &OwnedFd) -> Result<(), Failure> {
        let (file, direct) = create(self.clock, dir, DATA_FILE, self.spec.direct_io)?;
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
            sys(
                "posix_fadvise(DONTNEED)",
                self.clock.call("fadvise", || {
                    rustix::fs::fadvise(
                        &*file,
                        0,
                        NonZeroU64::new(size),
                        rustix::fs::Advice::DontNeed,
                    )
                }),
            )?;
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
                let (out, took) = self
                    .clock
                    .time("write", || file.write_all_at(chunk, offset));
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
                let (out, took) = self
                    .clock
                    .time("read", || read_full_at(file, chunk, offset));
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
        let (file, _) = create(self.clock, dir, SYNC_FILE, self.spec.direct_io)?;
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
            self.clock.call("unlink", || {
                rustix::fs::unlinkat(dir, SYNC_FILE, AtFlags::empty())
            }),
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

/// What a run does on its thread: [`probe_volume`] with the volume's spec, or a stand-in in the
/// unit tests of the watchdog.
type ProbeFn = dyn Fn(&OpClock, std::time::Instant, u64) -> StorageObservation + Send + Sync;

/// One volume: probes it and records what it saw.
pub struct StorageTarget {
    volume: String,
    path: PathBuf,
    probe: Arc<ProbeFn>,
    interval: Duration,
    timeout: Duration,
    metrics: StorageMetrics,
    /// The call in flight on the volume's probe thread.
    clock: Arc<OpClock>,
    /// One permit, held by the volume's probe thread (a run's, or the start-up cleanup's) until
    /// the thread returns, however long it hangs: there is never a second thread on a volume.
    thread: Arc<Semaphore>,
    runs: AtomicU64,
    health: Health,
}

impl std::fmt::Debug for StorageTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageTarget")
            .field("volume", &self.volume)
            .field("path", &self.path)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("in_flight", &self.clock.in_flight())
            .finish_non_exhaustive()
    }
}

impl StorageTarget {
    pub fn new(volume: &StorageVolume, storage: &StorageConfig, metrics: StorageMetrics) -> Self {
        let spec = ProbeSpec::new(volume, storage);
        let path = spec.path.clone();
        Self::with_probe(
            &volume.name,
            path,
            storage.interval.get(),
            storage.timeout.get(),
            metrics,
            Arc::new(move |clock, deadline, seed| probe_volume(&spec, clock, deadline, seed)),
        )
    }

    fn with_probe(
        volume: &str,
        path: PathBuf,
        interval: Duration,
        timeout: Duration,
        metrics: StorageMetrics,
        probe: Arc<ProbeFn>,
    ) -> Self {
        metrics.add_volume(volume);
        Self {
            volume: volume.to_owned(),
            path,
            probe,
            interval,
            timeout,
            metrics,
            clock: Arc::default(),
            thread: Arc::new(Semaphore::new(1)),
            runs: AtomicU64::new(0),
            health: Health::default(),
        }
    }

    /// Takes over the probe thread of the target this one replaces (same volume, new settings,
    /// after a config reload): a thread still blocked on the volume keeps the volume's one
    /// permit, so the new target waits for it instead of starting a second, and the stuck gauge
    /// keeps following it.
    pub fn succeed(mut self, previous: &StorageTarget) -> Self {
        self.thread = previous.thread.clone();
        self.clock = previous.clock.clone();
        self
    }

    /// Removes what a crashed predecessor left, on the volume's one thread (a hung volume hangs
    /// it, the stuck gauge shows it, and the first runs wait for it and count as `timeout`).
    /// Call it before the target is scheduled.
    pub fn remove_leftovers(&self) {
        let Ok(permit) = self.thread.clone().try_acquire_owned() else {
            tracing::debug!(volume = %self.volume, "a probe thread already runs; no start-up cleanup");
            return;
        };
        let (path, volume) = (self.path.clone(), self.volume.clone());
        let work = {
            let path = path.clone();
            move |clock: &OpClock| remove_leftovers(&path, clock)
        };
        // Nobody waits for the result (the receiver is dropped at once): it goes to the log.
        drop(self.start_thread(permit, work, move |joined| match joined {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(
                %volume, dir = %path.join(PROBE_DIR).display(), entries = n,
                "removed leftovers of an earlier run"
            ),
            Ok(Err(e)) => tracing::debug!(%volume, error = %e, "no leftovers removed"),
            Err(e) => tracing::warn!(%volume, error = %e, "the start-up cleanup failed"),
        }));
    }

    /// Runs `work` on the volume's probe thread (`permit` is the volume's one permit; the thread
    /// keeps it until it returns) and watches it from the runtime: the stuck gauge follows the
    /// clock while the thread lives and drops to 0 when it ends. The result goes to the returned
    /// receiver, or to `late` when the receiver is gone or closed (the run already counted a
    /// timeout).
    fn start_thread<T: Send + 'static>(
        &self,
        permit: OwnedSemaphorePermit,
        work: impl FnOnce(&OpClock) -> T + Send + 'static,
        late: impl FnOnce(Result<T, JoinError>) + Send + 'static,
    ) -> oneshot::Receiver<Result<T, JoinError>> {
        let (tx, rx) = oneshot::channel();
        let clock = self.clock.clone();
        let mut job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&clock)
        });
        let (clock, metrics, volume) = (
            self.clock.clone(),
            self.metrics.clone(),
            self.volume.clone(),
        );
        tokio::spawn(async move {
            let mut refresh = tokio::time::interval(STUCK_REFRESH);
            let joined = loop {
                tokio::select! {
                    joined = &mut job => break joined,
                    _ = refresh.tick() => {
                        metrics.set_stuck(&volume, clock.stuck_for().as_secs_f64());
                    }
                }
            };
            metrics.set_stuck(&volume, 0.0);
            if let Err(unclaimed) = tx.send(joined) {
                late(unclaimed);
            }
        });
        rx
    }

    fn seed(&self) -> u64 {
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        rand::random::<u64>() ^ run
    }

    async fn run_once(&self) {
        let deadline = later(Instant::now(), self.timeout);
        let watchdog = later(deadline, WATCHDOG_GRACE);
        // The volume's previous thread may still be in the kernel (or the start-up cleanup still
        // going): wait for it within this run's own time, and never start a second one.
        let permit =
            match tokio::time::timeout_at(watchdog, self.thread.clone().acquire_owned()).await {
                Ok(permit) => permit.expect("the semaphore is never closed"),
                Err(_) => return self.previous_still_blocked(),
            };
        if Instant::now() >= deadline {
            // It ended, but too late to probe within this run's timeout.
            drop(permit);
            return self.time_out(StorageObservation::timed_out(
                "the previous probe thread of the volume ended only at this run's timeout",
            ));
        }
        let (probe, seed) = (self.probe.clone(), self.seed());
        let thread_deadline = deadline.into_std();
        let (metrics, volume) = (self.metrics.clone(), self.volume.clone());
        let mut result = self.start_thread(
            permit,
            move |clock| probe(clock, thread_deadline, seed),
            move |joined| match joined {
                Ok(obs) => {
                    // Its timeout is counted; what it measured on the way still happened.
                    metrics.record_operations(&volume, &obs);
                    tracing::info!(
                        %volume, result = obs.result,
                        "a stuck probe finished after its timeout"
                    );
                }
                Err(e) => tracing::warn!(
                    %volume, error = %e,
                    "a stuck probe thread failed after its timeout"
                ),
            },
        );
        let joined = match tokio::time::timeout_at(watchdog, &mut result).await {
            Ok(joined) => joined,
            Err(_) => {
                // From here on the thread's result goes to `late`, unless it was sent just now.
                result.close();
                match result.try_recv() {
                    Ok(joined) => Ok(joined),
                    Err(_) => {
                        let detail = self.clock.in_flight().map_or_else(
                            || "the run went past storage.timeout".to_owned(),
                            |op| op.describe(),
                        );
                        return self.time_out(StorageObservation::timed_out(detail));
                    }
                }
            }
        };
        let obs = match joined {
            Ok(Ok(obs)) => obs,
            Ok(Err(e)) => StorageObservation {
                result: "error",
                detail: Some(format!("the probe thread failed: {e}")),
                ..StorageObservation::new()
            },
            Err(_) => StorageObservation {
                result: "error",
                detail: Some("the probe thread's watchdog stopped".to_owned()),
                ..StorageObservation::new()
            },
        };
        self.record(&obs);
    }

    /// A run that could not start: the previous thread is still blocked at its own timeout.
    fn previous_still_blocked(&self) {
        let detail = match self.clock.in_flight() {
            Some(op) => format!(
                "the previous probe thread of the volume is still {}; not starting another",
                op.describe()
            ),
            None => {
                "the previous probe thread of the volume is still running; not starting another"
                    .to_owned()
            }
        };
        tracing::debug!(volume = %self.volume, %detail, "storage run skipped");
        self.time_out(StorageObservation::timed_out(detail));
    }

    /// Counts a timeout, with the stuck gauge refreshed first so that a scrape that sees the
    /// count sees how long the call has been hanging.
    fn time_out(&self, obs: StorageObservation) {
        self.metrics
            .set_stuck(&self.volume, self.clock.stuck_for().as_secs_f64());
        self.record(&obs);
    }

    fn record(&self, obs: &StorageObservation) {
        self.metrics.record(&self.volume, obs);
        let ok = obs.result == "success";
        match self.health.update(ok) {
            Transition::StartedFailing { suppressed } => tracing::warn!(
                volume = %self.volume, path = %self.path.display(), result = obs.result,
                detail = obs.detail.as_deref().unwrap_or(""), suppressed,
                "storage probe failing"
            ),
            Transition::Recovered { suppressed } => {
                tracing::info!(volume = %self.volume, suppressed, "storage probe recovered")
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
        format!("storage {} ({})", self.volume, self.path.display())
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn deadline(&self) -> Duration {
        // A run waits at most this long, for the previous thread and then for its own.
        self.timeout.saturating_add(WATCHDOG_GRACE)
    }

    fn run(self: Arc<Self>, _deadline: Instant) -> RunFuture {
        Box::pin(async move { self.run_once().await })
    }

    fn cut_off(&self) {
        // Only when the runtime was too busy to run the watchdog on time; the thread, if any,
        // goes on and its result goes to the log.
        self.time_out(StorageObservation::timed_out(
            "the run was cut off by the scheduler",
        ));
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
        assert_eq!(
            remove_leftovers(dir.path(), &OpClock::default()).unwrap(),
            2
        );
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

    #[test]
    fn the_clock_names_the_call_in_flight_and_forgets_it_after() {
        let clock = OpClock::default();
        assert_eq!(clock.in_flight(), None);
        clock.call("mkdir", || {
            assert_eq!(clock.in_flight().map(|op| op.call), Some("mkdir"));
            // A nested call is shown while it runs, then the outer one again.
            clock.call("close", || {
                assert_eq!(clock.in_flight().map(|op| op.call), Some("close"));
            });
            assert_eq!(clock.in_flight().map(|op| op.call), Some("mkdir"));
            std::thread::sleep(Duration::from_millis(20));
            assert!(clock.stuck_for() >= Duration::from_millis(20));
            assert!(
                clock
                    .in_flight()
                    .unwrap()
                    .describe()
                    .starts_with("blocked in mkdir for ")
            );
        });
        assert_eq!(clock.in_flight(), None);
        // A call that panics does not stay in flight.
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            clock.call("write", || panic!("boom"))
        }));
        assert!(unwound.is_err());
        assert_eq!(clock.in_flight(), None);
        assert_eq!(clock.stuck_for(), Duration::ZERO);
    }

    /// The calls a run and a start-up cleanup make on the volume, as the clock sees them: each
    /// phase a hung volume can block in is there. (That none escapes the clock is what the FUSE
    /// and fsfreeze integration tests show, by hanging them.)
    #[test]
    fn every_phase_goes_through_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let clock = OpClock::default();
        let obs = probe_volume(&spec(dir.path()), &clock, far(), 3);
        assert_eq!(obs.result, "success", "{:?}", obs.detail);
        let calls = std::mem::take(&mut *clock.trace.lock().unwrap());
        let mut expected = vec![
            // The path, leftovers (none), free space, the directory, the data file.
            "open", "open", "statfs", "mkdir", "open", "open", "fcntl", "fcntl",
        ];
        expected.extend(["write"; 4]);
        expected.extend(["fsync"]);
        if obs.direct_io == Some(false) {
            // No O_DIRECT here: the cached pages are dropped before reading.
            expected.push("fadvise");
        }
        expected.extend(["read"; 4]);
        expected.extend(["close", "delete"]);
        // The latency pass.
        expected.extend([
            "open",
            "fcntl",
            "fcntl",
            "sync_write",
            "sync_write",
            "sync_write",
        ]);
        expected.extend(["close", "unlink", "close"]);
        // The clean-up: list (".", ".."), close the listing and the directory, remove it, close
        // the root.
        expected.extend([
            "open", "open", "readdir", "readdir", "readdir", "close", "close",
        ]);
        expected.extend(["rmdir"]);
        expected.extend(["close"]);
        assert_eq!(calls, expected);

        // The start-up cleanup of leftovers.
        let probe_dir = dir.path().join(PROBE_DIR);
        std::fs::create_dir(&probe_dir).unwrap();
        std::fs::write(probe_dir.join(DATA_FILE), b"crashed").unwrap();
        assert_eq!(remove_leftovers(dir.path(), &clock).unwrap(), 1);
        let calls = std::mem::take(&mut *clock.trace.lock().unwrap());
        let unlinks = calls.iter().filter(|c| **c == "unlink").count();
        assert_eq!(unlinks, 1, "{calls:?}");
        assert_eq!(calls.first(), Some(&"open"));
        assert_eq!(calls.last(), Some(&"close"));
    }

    /// Reads one sample from the text exposition.
    fn sample(metrics: &crate::metrics::Metrics, series: &str) -> f64 {
        let text = metrics.encode_prometheus_text();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} not in {text}"))
            .parse()
            .unwrap()
    }

    fn probes(metrics: &crate::metrics::Metrics, result: &str) -> f64 {
        sample(
            metrics,
            &format!("netprobe_storage_probes_total{{volume=\"v\",result=\"{result}\"}}"),
        )
    }

    fn stuck(metrics: &crate::metrics::Metrics) -> f64 {
        sample(metrics, "netprobe_storage_stuck_seconds{volume=\"v\"}")
    }

    /// The watchdog's bookkeeping around a thread that hangs: the run counts `timeout` at its
    /// timeout with the gauge past it; the next run starts no thread, waits its own timeout and
    /// counts another; once the thread returns, its timings are kept but not its result, the
    /// gauge drops to 0 and the next run probes again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_thread_is_counted_per_run_and_never_doubled() {
        let metrics = crate::metrics::Metrics::with_detail(crate::config::Detail::PerTarget);
        let timeout = Duration::from_millis(300);
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Mutex::new(released);
        let threads = Arc::new(AtomicU64::new(0));
        let probe = {
            let threads = threads.clone();
            move |clock: &OpClock, _deadline: std::time::Instant, _seed: u64| {
                if threads.fetch_add(1, Ordering::SeqCst) == 0 {
                    // The first run hangs in mkdir until released, then fails.
                    let _ = clock.call("mkdir", || released.lock().unwrap().recv());
                    return StorageObservation {
                        result: "eio",
                        operations: vec![("delete", Duration::from_millis(1))],
                        ..StorageObservation::new()
                    };
                }
                StorageObservation::new()
            }
        };
        let target = StorageTarget::with_probe(
            "v",
            PathBuf::from("/nowhere"),
            Duration::from_secs(10),
            timeout,
            metrics.storage.clone(),
            Arc::new(probe),
        );

        let started = Instant::now();
        target.run_once().await;
        let took = started.elapsed();
        assert!(
            took >= timeout && took < timeout + WATCHDOG_GRACE + Duration::from_millis(400),
            "the first run took {took:?}"
        );
        assert_eq!(probes(&metrics, "timeout"), 1.0);
        assert!(
            stuck(&metrics) >= timeout.as_secs_f64(),
            "{}",
            stuck(&metrics)
        );
        assert_eq!(
            sample(&metrics, "netprobe_storage_probe_success{volume=\"v\"}"),
            0.0
        );

        // The thread is still in mkdir: the next run waits its own timeout and counts another
        // timeout, without a second thread.
        let started = Instant::now();
        target.run_once().await;
        assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
        assert_eq!(threads.load(Ordering::SeqCst), 1);
        assert_eq!(probes(&metrics, "timeout"), 2.0);
        let gauge = stuck(&metrics);
        assert!(gauge >= 2.0 * timeout.as_secs_f64(), "stuck {gauge}");
        assert!(
            target
                .clock
                .in_flight()
                .unwrap()
                .describe()
                .starts_with("blocked in mkdir"),
        );

        // Released: its timings are recorded, its result is not (the timeout was counted), and
        // the gauge drops to 0 on the watchdog's own.
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while stuck(&metrics) != 0.0 {
            assert!(
                Instant::now() < deadline,
                "the stuck gauge stayed at {}",
                stuck(&metrics)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while sample(
            &metrics,
            "netprobe_storage_operation_duration_seconds_count{volume=\"v\",operation=\"delete\"}",
        ) != 1.0
        {
            assert!(
                Instant::now() < deadline,
                "the late timings were not recorded"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(probes(&metrics, "eio"), 0.0);

        target.run_once().await;
        assert_eq!(threads.load(Ordering::SeqCst), 2);
        assert_eq!(probes(&metrics, "success"), 1.0);
        assert_eq!(probes(&metrics, "timeout"), 2.0);
        assert_eq!(stuck(&metrics), 0.0);
    }
}
