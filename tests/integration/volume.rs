//! Storage volumes of a given kind for the storage suite: a small tmpfs, a read-only bind mount,
//! a loop-device ext4 image (which can be frozen with `fsfreeze`), and a FUSE filesystem of our
//! own with faults (flip a byte on read; block in write, mkdir, create or unlink). Every one is
//! unmounted (and its loop device detached, its freeze thawed) on drop, also when the test
//! panics. All need root.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// A mount point that is unmounted on drop (lazily if busy, so a stuck test cannot wedge the
/// others).
pub struct Mount {
    dir: PathBuf,
    mounted: bool,
    _tmp: Option<tempfile::TempDir>,
}

impl Mount {
    fn new(tmp: tempfile::TempDir) -> Self {
        Self {
            dir: tmp.path().to_owned(),
            mounted: false,
            _tmp: Some(tmp),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            let target = path_str(&self.dir).to_owned();
            let ok = Command::new("umount")
                .arg(&target)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").args(["-l", &target]).status();
            }
        }
    }
}

/// A tmpfs of `size` bytes.
pub fn tmpfs(size: u64) -> Mount {
    tmpfs_with(&format!("size={size}"))
}

/// A tmpfs of `size` bytes with room for `inodes` inodes (its root directory takes one).
pub fn tmpfs_with_inodes(size: u64, inodes: u64) -> Mount {
    tmpfs_with(&format!("size={size},nr_inodes={inodes}"))
}

fn tmpfs_with(options: &str) -> Mount {
    let mut m = Mount::new(tempfile::tempdir().expect("tempdir"));
    run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            &format!("{options},mode=0755"),
            "tmpfs",
            path_str(&m.dir),
        ],
    );
    m.mounted = true;
    m
}

/// A read-only bind mount of a fresh, writable tmpfs of its own (so that the volume's space,
/// which the probe exports, is the test's and not the machine's disk, filled by whatever else
/// runs there).
pub struct ReadOnlyBind {
    // Field order is drop order: the bind mount, then the tmpfs under it.
    pub mount: Mount,
    _source: Mount,
}

pub fn read_only_bind() -> ReadOnlyBind {
    let source = tmpfs(4 << 20);
    let mut mount = Mount::new(tempfile::tempdir().expect("tempdir"));
    run(
        "mount",
        &["--bind", path_str(source.path()), path_str(&mount.dir)],
    );
    mount.mounted = true;
    run("mount", &["-o", "remount,bind,ro", path_str(&mount.dir)]);
    ReadOnlyBind {
        mount,
        _source: source,
    }
}

/// An ext4 filesystem on a loop device backed by a sparse image file.
pub struct LoopExt4 {
    // Field order is drop order: unmount, then detach, then remove the image.
    pub mount: Mount,
    device: LoopDevice,
    _image_dir: tempfile::TempDir,
}

struct LoopDevice(String);

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

impl LoopExt4 {
    pub fn device(&self) -> &str {
        &self.device.0
    }

    /// Freezes the filesystem (`fsfreeze -f`): every call that would modify it (mkdir, the
    /// creating open, write, unlink) blocks in the kernel, in state D, until it is thawed.
    /// The guard thaws on drop; declare it after anything that must not be dropped while the
    /// filesystem is frozen (a daemon blocked in it cannot be reaped, and unmounting waits).
    pub fn freeze(&self) -> Frozen {
        let path = self.mount.path().to_owned();
        run("fsfreeze", &["--freeze", path_str(&path)]);
        Frozen { path, frozen: true }
    }
}

/// A frozen filesystem, thawed on drop. See [`LoopExt4::freeze`].
pub struct Frozen {
    path: PathBuf,
    frozen: bool,
}

impl Frozen {
    pub fn thaw(&mut self) {
        if std::mem::take(&mut self.frozen) {
            run("fsfreeze", &["--unfreeze", path_str(&self.path)]);
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if std::mem::take(&mut self.frozen) {
            let _ = Command::new("fsfreeze")
                .args(["--unfreeze", path_str(&self.path)])
                .status();
        }
    }
}

pub fn loop_ext4(size_mib: u64) -> LoopExt4 {
    let image_dir = tempfile::tempdir().expect("tempdir");
    let image = image_dir.path().join("ext4.img");
    run(
        "truncate",
        &["-s", &format!("{size_mib}M"), path_str(&image)],
    );
    // Direct I/O on the backing file where its filesystem allows it, so that reads reach the
    // disk instead of the host's page cache (memory speed, where per-call overheads dominate and
    // the probe-vs-fio comparison says little).
    let direct = Command::new("losetup")
        .args(["-f", "--show", "--direct-io=on", path_str(&image)])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    let device =
        LoopDevice(direct.unwrap_or_else(|| run("losetup", &["-f", "--show", path_str(&image)])));
    run("mkfs.ext4", &["-q", "-F", &device.0]);
    let mut mount = Mount::new(tempfile::tempdir().expect("tempdir"));
    run("mount", &[&device.0, path_str(&mount.dir)]);
    mount.mounted = true;
    LoopExt4 {
        mount,
        device,
        _image_dir: image_dir,
    }
}

// ---------------------------------------------------------------------------------------------
// Filling a filesystem at the moment the probe starts writing

/// Fills the filesystem mounted at `mount` the moment the probe opens its directory there (after
/// its free-space check, before its first write), using fanotify permission events: the probe's
/// open waits until the filesystem is full. Deterministic "another file filled the disk
/// mid-run". Stops on drop.
pub struct FillOnProbe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    filled: Arc<AtomicBool>,
}

impl FillOnProbe {
    pub fn start(mount: &Path, probe_dir: &str) -> Self {
        use nix::sys::fanotify::{
            EventFFlags, Fanotify, FanotifyResponse, InitFlags, MarkFlags, MaskFlags, Response,
        };
        // Opened before the mark: our own open would wait for ourselves.
        let mut filler = File::create(mount.join("filler")).expect("create the filler");
        let fan = Fanotify::init(
            InitFlags::FAN_CLASS_CONTENT | InitFlags::FAN_NONBLOCK | InitFlags::FAN_CLOEXEC,
            EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE,
        )
        .expect("fanotify_init");
        fan.mark(
            MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_MOUNT,
            MaskFlags::FAN_OPEN_PERM | MaskFlags::FAN_ONDIR,
            nix::fcntl::AT_FDCWD,
            Some(mount),
        )
        .expect("fanotify_mark");
        let target = mount.join(probe_dir);
        let stop = Arc::new(AtomicBool::new(false));
        let filled = Arc::new(AtomicBool::new(false));
        let (stop2, filled2) = (stop.clone(), filled.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Acquire) {
                let events = match fan.read_events() {
                    Ok(events) => events,
                    Err(nix::errno::Errno::EAGAIN) => {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    Err(e) => panic!("fanotify read: {e}"),
                };
                for event in events {
                    let Some(fd) = event.fd() else { continue };
                    let path = std::fs::read_link(format!(
                        "/proc/self/fd/{}",
                        std::os::fd::AsRawFd::as_raw_fd(&fd)
                    ))
                    .unwrap_or_default();
                    if path == target && !filled2.load(Ordering::Acquire) {
                        let chunk = vec![0x5a_u8; 64 << 10];
                        while filler.write_all(&chunk).is_ok() {}
                        let _ = filler.sync_all();
                        filled2.store(true, Ordering::Release);
                    }
                    let _ = fan.write_response(FanotifyResponse::new(fd, Response::FAN_ALLOW));
                }
            }
            // Dropping the group answers whatever is still pending with "allow".
        });
        Self {
            stop,
            thread: Some(thread),
            filled,
        }
    }

    pub fn filled(&self) -> bool {
        self.filled.load(Ordering::Acquire)
    }
}

impl Drop for FillOnProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A FUSE filesystem of our own

/// What the FUSE filesystem does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every read returns the data with one byte flipped.
    FlipOnRead,
    /// Every request of this kind blocks until released (see [`FaultyFs::release`]), then fails
    /// with EIO, as do the later ones: a dead server behind a hard mount.
    Hang(Call),
}

/// A kind of FUSE request, to hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Write,
    Mkdir,
    /// The creating open (`open(O_CREAT)`): the probe's open of its files.
    Create,
    Unlink,
}

/// The requests blocked in the filesystem, for the hang tests.
#[derive(Default)]
struct Blocked {
    /// Caller thread ids blocked right now.
    now: HashSet<u32>,
    /// The most caller threads blocked at once.
    most: usize,
    ever: bool,
}

#[derive(Debug)]
enum Node {
    Dir(HashMap<String, u64>),
    File(Vec<u8>),
}

struct MemFs {
    fault: Fault,
    nodes: Mutex<HashMap<u64, Node>>,
    next: Mutex<u64>,
    released: Arc<(Mutex<bool>, Condvar)>,
    blocked: Arc<Mutex<Blocked>>,
}

const TTL: Duration = Duration::ZERO;

impl MemFs {
    /// Whether a `call` request fails (with EIO) instead of being served; blocks first until
    /// released when the fault hangs `call`.
    fn hangs(&self, call: Call, req: &fuser::Request) -> bool {
        if self.fault != Fault::Hang(call) {
            return false;
        }
        let (lock, released) = &*self.released;
        let mut done = lock.lock().unwrap();
        if !*done {
            let caller = req.pid();
            {
                let mut blocked = self.blocked.lock().unwrap();
                blocked.now.insert(caller);
                blocked.most = blocked.most.max(blocked.now.len());
                blocked.ever = true;
            }
            while !*done {
                done = released.wait(done).unwrap();
            }
            self.blocked.lock().unwrap().now.remove(&caller);
        }
        true
    }

    fn attr(&self, ino: u64, node: &Node) -> fuser::FileAttr {
        let (kind, size, perm, nlink) = match node {
            Node::Dir(_) => (fuser::FileType::Directory, 0, 0o755, 2),
            Node::File(data) => (fuser::FileType::RegularFile, data.len() as u64, 0o600, 1),
        };
        fuser::FileAttr {
            ino: fuser::INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn add(&self, parent: u64, name: &OsStr, node: Node) -> Result<fuser::FileAttr, fuser::Errno> {
        let mut nodes = self.nodes.lock().unwrap();
        let name = name.to_string_lossy().into_owned();
        let ino = {
            let mut next = self.next.lock().unwrap();
            *next += 1;
            *next
        };
        match nodes.get_mut(&parent) {
            Some(Node::Dir(children)) => {
                if children.contains_key(&name) {
                    return Err(fuser::Errno::EEXIST);
                }
                children.insert(name, ino);
            }
            _ => return Err(fuser::Errno::ENOTDIR),
        }
        let attr = self.attr(ino, &node);
        nodes.insert(ino, node);
        Ok(attr)
    }

    fn remove(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), fuser::Errno> {
        let mut nodes = self.nodes.lock().unwrap();
        let name = name.to_string_lossy().into_owned();
        let ino = match nodes.get(&parent) {
            Some(Node::Dir(children)) => *children.get(&name).ok_or(fuser::Errno::ENOENT)?,
            _ => return Err(fuser::Errno::ENOTDIR),
        };
        match (nodes.get(&ino), dir) {
            (Some(Node::Dir(children)), true) if !children.is_empty() => {
                return Err(fuser::Errno::ENOTEMPTY);
            }
            (Some(Node::Dir(_)), false) => return Err(fuser::Errno::EISDIR),
            (Some(Node::File(_)), true) => return Err(fuser::Errno::ENOTDIR),
            _ => {}
        }
        nodes.remove(&ino);
        if let Some(Node::Dir(children)) = nodes.get_mut(&parent) {
            children.remove(&name);
        }
        Ok(())
    }
}

impl fuser::Filesystem for MemFs {
    fn lookup(
        &self,
        _req: &fuser::Request,
        parent: fuser::INodeNo,
        name: &OsStr,
        reply: fuser::ReplyEntry,
    ) {
        let nodes = self.nodes.lock().unwrap();
        let found = match nodes.get(&parent.0) {
            Some(Node::Dir(children)) => children.get(&*name.to_string_lossy()).copied(),
            _ => None,
        };
        match found.and_then(|ino| nodes.get(&ino).map(|n| self.attr(ino, n))) {
            Some(attr) => reply.entry(&TTL, &attr, fuser::Generation(0)),
            None => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn getattr(
        &self,
        _req: &fuser::Request,
        ino: fuser::INodeNo,
        _fh: Option<fuser::FileHandle>,
        reply: fuser::ReplyAttr,
    ) {
        let nodes = self.nodes.lock().unwrap();
        match nodes.get(&ino.0) {
            Some(node) => reply.attr(&TTL, &self.attr(ino.0, node)),
            None => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &fuser::Request,
        ino: fuser::INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<fuser::FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: fuser::ReplyAttr,
    ) {
        let mut nodes = self.nodes.lock().unwrap();
        let Some(node) = nodes.get_mut(&ino.0) else {
            return reply.error(fuser::Errno::ENOENT);
        };
        if let (Some(size), Node::File(data)) = (size, &mut *node) {
            data.resize(size as usize, 0);
        }
        reply.attr(&TTL, &self.attr(ino.0, node));
    }

    fn mkdir(
        &self,
        req: &fuser::Request,
        parent: fuser::INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: fuser::ReplyEntry,
    ) {
        if self.hangs(Call::Mkdir, req) {
            return reply.error(fuser::Errno::EIO);
        }
        match self.add(parent.0, name, Node::Dir(HashMap::new())) {
            Ok(attr) => reply.entry(&TTL, &attr, fuser::Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &fuser::Request,
        parent: fuser::INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        if self.hangs(Call::Create, req) {
            return reply.error(fuser::Errno::EIO);
        }
        match self.add(parent.0, name, Node::File(Vec::new())) {
            // Direct I/O: every read and write reaches this filesystem, none is served from
            // the page cache.
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                fuser::Generation(0),
                fuser::FileHandle(0),
                fuser::FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn open(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        _flags: fuser::OpenFlags,
        reply: fuser::ReplyOpen,
    ) {
        reply.opened(fuser::FileHandle(0), fuser::FopenFlags::FOPEN_DIRECT_IO);
    }

    fn unlink(
        &self,
        req: &fuser::Request,
        parent: fuser::INodeNo,
        name: &OsStr,
        reply: fuser::ReplyEmpty,
    ) {
        if self.hangs(Call::Unlink, req) {
            return reply.error(fuser::Errno::EIO);
        }
        match self.remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(
        &self,
        _req: &fuser::Request,
        parent: fuser::INodeNo,
        name: &OsStr,
        reply: fuser::ReplyEmpty,
    ) {
        match self.remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &fuser::Request,
        ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: fuser::ReplyData,
    ) {
        let nodes = self.nodes.lock().unwrap();
        let Some(Node::File(data)) = nodes.get(&ino.0) else {
            return reply.error(fuser::Errno::EISDIR);
        };
        let start = (offset as usize).min(data.len());
        let end = (start + size as usize).min(data.len());
        let mut out = data[start..end].to_vec();
        let middle = out.len() / 2;
        if self.fault == Fault::FlipOnRead
            && let Some(byte) = out.get_mut(middle)
        {
            *byte ^= 0x01;
        }
        reply.data(&out);
    }

    fn write(
        &self,
        req: &fuser::Request,
        ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        if self.hangs(Call::Write, req) {
            return reply.error(fuser::Errno::EIO);
        }
        let mut nodes = self.nodes.lock().unwrap();
        let Some(Node::File(file)) = nodes.get_mut(&ino.0) else {
            return reply.error(fuser::Errno::EISDIR);
        };
        let end = offset as usize + data.len();
        if file.len() < end {
            file.resize(end, 0);
        }
        file[offset as usize..end].copy_from_slice(data);
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: fuser::ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        _datasync: bool,
        reply: fuser::ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &fuser::Request,
        ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        offset: u64,
        mut reply: fuser::ReplyDirectory,
    ) {
        let nodes = self.nodes.lock().unwrap();
        let Some(Node::Dir(children)) = nodes.get(&ino.0) else {
            return reply.error(fuser::Errno::ENOTDIR);
        };
        let mut entries: Vec<(u64, fuser::FileType, String)> = vec![
            (ino.0, fuser::FileType::Directory, ".".into()),
            (ino.0, fuser::FileType::Directory, "..".into()),
        ];
        let mut names: Vec<_> = children.iter().collect();
        names.sort();
        for (name, child) in names {
            let kind = match nodes.get(child) {
                Some(Node::Dir(_)) => fuser::FileType::Directory,
                _ => fuser::FileType::RegularFile,
            };
            entries.push((*child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(fuser::INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &fuser::Request, _ino: fuser::INodeNo, reply: fuser::ReplyStatfs) {
        // 1 GiB, all free: the space guard lets the probe through.
        reply.statfs(
            262_144, 262_144, 262_144, 1_000_000, 999_999, 4096, 255, 4096,
        );
    }

    fn access(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        _mask: fuser::AccessFlags,
        reply: fuser::ReplyEmpty,
    ) {
        reply.ok();
    }
}

/// A FUSE filesystem served by this test process, with a fault.
pub struct FaultyFs {
    // Dropped (unmounted) after the blocked writes were released, see Drop.
    session: Option<fuser::BackgroundSession>,
    released: Arc<(Mutex<bool>, Condvar)>,
    blocked: Arc<Mutex<Blocked>>,
    dir: tempfile::TempDir,
}

impl FaultyFs {
    pub fn mount(fault: Fault) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let released = Arc::new((Mutex::new(false), Condvar::new()));
        let blocked = Arc::new(Mutex::new(Blocked::default()));
        let mut nodes = HashMap::new();
        nodes.insert(1, Node::Dir(HashMap::new()));
        let fs = MemFs {
            fault,
            nodes: Mutex::new(nodes),
            next: Mutex::new(1),
            released: released.clone(),
            blocked: blocked.clone(),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("kube-netprobe-test".into()),
            fuser::MountOption::RW,
        ];
        // Three threads: a request blocked in one must not stop `statfs` or `ls` in the others,
        // and a second request blocked (a probe thread piling up) must be seen, not queued.
        config.n_threads = Some(3);
        let session = fuser::spawn_mount(fs, dir.path(), &config)
            .unwrap_or_else(|e| panic!("mount the FUSE filesystem: {e}"));
        Self {
            session: Some(session),
            released,
            blocked,
            dir,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Whether a request is (or was) blocked in the filesystem by the hang fault.
    pub fn blocked(&self) -> bool {
        self.blocked.lock().unwrap().ever
    }

    /// The most caller threads that were blocked in the filesystem at once.
    pub fn most_threads_blocked(&self) -> usize {
        self.blocked.lock().unwrap().most
    }

    /// Lets blocked requests fail with EIO, and the later ones fail at once.
    pub fn release(&self) {
        release(&self.released);
    }

    /// Releases blocked requests when dropped; see the hang tests for why it matters.
    pub fn release_on_drop(&self) -> ReleaseOnDrop {
        ReleaseOnDrop(self.released.clone())
    }
}

fn release(released: &(Mutex<bool>, Condvar)) {
    let (lock, cond) = released;
    *lock.lock().unwrap() = true;
    cond.notify_all();
}

/// See [`FaultyFs::release_on_drop`].
pub struct ReleaseOnDrop(Arc<(Mutex<bool>, Condvar)>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        release(&self.0);
    }
}

impl Drop for FaultyFs {
    fn drop(&mut self) {
        self.release();
        // A lazy unmount first, so dropping the session never waits on a busy mount.
        let _ = Command::new("umount")
            .args(["-l", path_str(self.dir.path())])
            .status();
        drop(self.session.take());
    }
}
