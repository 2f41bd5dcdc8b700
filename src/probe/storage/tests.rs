//! Unit tests of the storage prober: a run on a real directory, its calls, its watchdog.

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
        assert_eq!(label.as_str(), result, "{errno:?}");
        assert!(StorageResult::ALL.contains(&label));
    }
    assert_eq!(errno_result(&io::Error::other("x")).as_str(), "error");
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
    assert_eq!(obs.result.as_str(), "success", "{:?}", obs.detail);
    let ops: Vec<&str> = obs.operations.iter().map(|(op, _)| op.as_str()).collect();
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
    let bytes: Vec<(&str, u64)> = obs.bytes.iter().map(|(op, n)| (op.as_str(), *n)).collect();
    assert_eq!(
        bytes,
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
    assert_eq!(obs.result.as_str(), "insufficient_space");
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
    assert_eq!(obs.result.as_str(), "error");
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
    assert_eq!(obs.result.as_str(), "timeout");
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
    assert_eq!(obs.result.as_str(), "success", "{:?}", obs.detail);
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
                    result: StorageResult::eio,
                    operations: vec![(StorageOperation::delete, Duration::from_millis(1))],
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
