//! One run on the volume, on its blocking thread: every call through the [`OpClock`] the
//! watchdog reads, the probe directory opened without following symlinks, the data written,
//! synced, read back past the page cache and checked, then removed.

use super::*;

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

    pub(super) fn next_word(&mut self) -> u64 {
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
    pub(super) fn mix(&mut self, word: u64) {
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
pub(super) struct AlignedBuf {
    pub(super) raw: Vec<u8>,
    pub(super) start: usize,
    pub(super) len: usize,
}

impl AlignedBuf {
    pub(super) fn new(len: usize) -> Self {
        let raw = vec![0u8; len + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        assert!(start < ALIGN, "a u8 pointer can always be aligned");
        Self { raw, start, len }
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
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
    pub(super) trace: Mutex<Vec<&'static str>>,
}

/// Puts back what was in flight before a call (nothing, or the call around a nested one) when
/// the call returns, also by a panic, so the clock never shows a call that is over.
pub(super) struct Restore<'a> {
    pub(super) clock: &'a OpClock,
    pub(super) outer: Option<InFlight>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        *self.clock.lock() = self.outer;
    }
}

impl OpClock {
    pub(super) fn lock(&self) -> MutexGuard<'_, Option<InFlight>> {
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

/// Why a run stopped early.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) result: StorageResult,
    pub(super) detail: String,
}

impl Failure {
    pub(super) fn io(what: &str, error: io::Error) -> Self {
        Self {
            result: errno_result(&error),
            detail: format!("{what}: {error}"),
        }
    }

    pub(super) fn new(result: StorageResult, detail: impl Into<String>) -> Self {
        Self {
            result,
            detail: detail.into(),
        }
    }
}

pub(super) fn sys<T>(what: &str, r: rustix::io::Result<T>) -> Result<T, Failure> {
    r.map_err(|e| Failure::io(what, e.into()))
}

pub(super) fn cstr_name(name: &CStr) -> String {
    name.to_string_lossy().into_owned()
}

/// A file, directory or directory listing the probe opened on the volume, whose close goes
/// through the clock like every other call (closing a written file flushes it on NFS and FUSE,
/// where a dead server hangs it), also when a run stops early.
pub(super) struct Handle<'a, T> {
    pub(super) inner: Option<T>,
    pub(super) clock: &'a OpClock,
}

impl<'a, T> Handle<'a, T> {
    pub(super) fn new(clock: &'a OpClock, inner: T) -> Self {
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
pub(super) fn open_probe_dir<'a>(
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
            StorageResult::error,
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
pub(super) fn remove_probe_dir(
    clock: &OpClock,
    root: &OwnedFd,
    root_path: &Path,
) -> Result<usize, Failure> {
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

pub(super) fn open_root<'a>(
    clock: &'a OpClock,
    path: &Path,
) -> Result<Handle<'a, OwnedFd>, Failure> {
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
pub(super) fn create<'a>(
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

pub(super) struct Run<'a> {
    pub(super) spec: &'a ProbeSpec,
    pub(super) clock: &'a OpClock,
    pub(super) deadline: std::time::Instant,
    pub(super) seed: u64,
    pub(super) obs: StorageObservation,
}

impl Run<'_> {
    pub(super) fn check_deadline(&self) -> Result<(), Failure> {
        if std::time::Instant::now() >= self.deadline {
            Err(Failure::new(
                StorageResult::timeout,
                "the run went past storage.timeout",
            ))
        } else {
            Ok(())
        }
    }

    /// Runs one measured operation (its name is also the clock's) and records its duration.
    pub(super) fn timed<T>(
        &mut self,
        operation: StorageOperation,
        what: &str,
        op: impl FnOnce() -> io::Result<T>,
    ) -> Result<(T, Duration), Failure> {
        let (out, took) = self.clock.time(operation.as_str(), op);
        let out = out.map_err(|e| Failure::io(what, e))?;
        self.obs.operations.push((operation, took));
        Ok((out, took))
    }

    pub(super) fn run(&mut self) -> Result<(), Failure> {
        let clock = self.clock;
        let root = open_root(clock, &self.spec.path)?;
        // Leftovers of a crash would count against the free space and collide with our names.
        remove_probe_dir(clock, &root, &self.spec.path)?;
        let stat = sys(
            "statvfs",
            clock.call("statfs", || rustix::fs::fstatvfs(&*root)),
        )?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        self.obs.space = Some(VolumeSpace {
            free_bytes: free,
            size_bytes: stat.f_blocks.saturating_mul(stat.f_frsize),
            free_inodes: stat.f_favail,
            inodes: stat.f_files,
        });
        if !enough_space(free, self.spec.size, self.spec.reserve) {
            return Err(Failure::new(
                StorageResult::insufficient_space,
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
            let dir = dir.ok_or_else(|| {
                Failure::new(StorageResult::error, "the probe directory vanished")
            })?;
            self.bulk(&dir).and_then(|()| self.sync_pass(&dir))
        });
        // Always leave the volume as it was, whatever happened above.
        let cleaned = remove_probe_dir(clock, &root, &self.spec.path);
        drop(root);
        outcome?;
        cleaned.map(|_| ())
    }

    /// Write, fsync, read back, verify, delete.
    pub(super) fn bulk(&mut self, dir: &OwnedFd) -> Result<(), Failure> {
        let (file, direct) = create(self.clock, dir, DATA_FILE, self.spec.direct_io)?;
        self.obs.direct_io = Some(direct);
        let block = self.spec.block_size;
        let (written, write_time) = self.write_out(&file, block)?;
        self.obs
            .operations
            .push((StorageOperation::write, write_time));
        self.obs
            .throughput
            .push((StorageOperation::write, rate(self.spec.size, write_time)));
        self.check_deadline()?;
        self.timed(StorageOperation::fsync, "fsync", || file.sync_all())?;
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
        self.obs
            .operations
            .push((StorageOperation::read, read_time));
        self.obs
            .throughput
            .push((StorageOperation::read, rate(self.spec.size, read_time)));
        drop(file);
        let (expected, got) = (written.finish(), read.finish());
        self.timed(StorageOperation::delete, "delete", || {
            rustix::fs::unlinkat(dir, DATA_FILE, AtFlags::empty()).map_err(io::Error::from)
        })?;
        if offset != self.spec.size {
            return Err(Failure::new(
                StorageResult::checksum_mismatch,
                format!("read back {offset} of {} bytes", self.spec.size),
            ));
        }
        if expected != got {
            return Err(Failure::new(
                StorageResult::checksum_mismatch,
                format!("read back different data (checksum {got:016x}, wrote {expected:016x})"),
            ));
        }
        Ok(())
    }

    /// Writes `size` bytes of the data stream in `block`-sized writes, back to back: a second
    /// thread generates and checksums the next block while this one writes the previous, so the
    /// device never waits for the CPU (as it does not with fio or dd). Returns the checksum of
    /// what was written and the time spent in `pwrite` alone.
    pub(super) fn write_out(
        &mut self,
        file: &File,
        block: usize,
    ) -> Result<(Checksum, Duration), Failure> {
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
                    break Err(Failure::new(
                        StorageResult::error,
                        "the data thread stopped",
                    ));
                };
                let chunk = &buf.as_slice()[..len];
                let (out, took) = self
                    .clock
                    .time("write", || file.write_all_at(chunk, offset));
                write_time += took;
                if let Err(e) = out {
                    break Err(Failure::io("write", e));
                }
                self.obs.add_bytes(StorageOperation::write, len as u64);
                offset += len as u64;
                // Two buffers in all, so this never blocks; after the last block nobody reads it.
                let _ = empty_tx.send(buf);
            };
            // Unblocks the data thread if it waits for a buffer after an error.
            drop(empty_tx);
            drop(full_rx);
            let sum = filler
                .join()
                .map_err(|_| Failure::new(StorageResult::error, "the data thread panicked"))?;
            outcome.map(|()| (sum, write_time))
        })
    }

    /// Reads the file back block by block, checksumming on a second thread so that the reads go
    /// back to back (as fio's and dd's do) instead of leaving the device idle while a block is
    /// checksummed. Returns the checksum, the bytes read and the time spent in `pread` alone.
    pub(super) fn read_back(
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
                    break Err(Failure::new(
                        StorageResult::error,
                        "the checksum thread stopped",
                    ));
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
                self.obs.add_bytes(StorageOperation::read, n as u64);
                offset += n as u64;
                if full_tx.send((buf, n)).is_err() {
                    break Err(Failure::new(
                        StorageResult::error,
                        "the checksum thread stopped",
                    ));
                }
                if n < len {
                    break Ok(());
                }
            };
            drop(full_tx);
            let sum = summer
                .join()
                .map_err(|_| Failure::new(StorageResult::error, "the checksum thread panicked"))?;
            outcome.map(|()| (sum, offset, read_time))
        })
    }

    /// `sync_writes` × (4 KiB append + fdatasync): the latency a WAL sees.
    pub(super) fn sync_pass(&mut self, dir: &OwnedFd) -> Result<(), Failure> {
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
            self.timed(StorageOperation::sync_write, "sync write", || {
                file.write_all_at(block, offset)?;
                file.sync_data()
            })?;
            self.obs
                .add_bytes(StorageOperation::sync_write, SYNC_WRITE_BYTES as u64);
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
pub(super) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
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

pub(super) fn rate(bytes: u64, took: Duration) -> f64 {
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
