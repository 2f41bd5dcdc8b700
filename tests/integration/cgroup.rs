//! The prober's own health under a real CPU limit: the daemon runs in a cgroup v1 `cpu` cgroup
//! of the test's own with a quota of 5 ms per 100 ms and a busy config (many DNS lookups every
//! 100 ms against a DNS server of the test's), and its `/metrics` must show the throttling the
//! kernel counted for that cgroup, the quota and the period, and the standard `process_*`
//! families as the kernel sees the process. This machine's kernel runs cgroup v1 (its cgroup v2
//! hierarchy has no controllers), so v2 is covered by the fixture trees of the unit tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::dns_server::{Behaviour, DnsServer};
use crate::util::{Daemon, bin, is_root};

const QUOTA_US: u64 = 5_000;
const PERIOD_US: u64 = 100_000;
const MAX_FDS: u64 = 4321;
const WAIT: Duration = Duration::from_secs(60);

#[test]
#[ignore = "needs root: creates a cgroup v1 cpu cgroup with a CPU quota"]
fn a_daemon_under_a_small_cpu_quota_reports_its_throttling_and_the_quota() {
    assert!(is_root(), "creating a cgroup needs root");
    let started = now();
    let cgroup = TestCgroup::create();
    cgroup.write("cpu.cfs_period_us", &PERIOD_US.to_string());
    cgroup.write("cpu.cfs_quota_us", &QUOTA_US.to_string());

    let dns = DnsServer::start();
    dns.set_fallback(Some(Behaviour::NxDomain));
    let queries: String = (0..20)
        .map(|i| format!("    - {{ name: busy-{i}.example.com, type: A, expect: NXDOMAIN }}\n"))
        .collect();
    let config = format!(
        "listen: 127.0.0.1:0\nnode_name: throttled-node\n\
         dns:\n  interval: 100ms\n  timeout: 90ms\n  servers: [\"{}\"]\n  queries:\n{queries}",
        dns.addr()
    );
    // The shell joins the cgroup and sets the open-files limit, then becomes the daemon: every
    // thread the daemon starts is in the cgroup from its first instruction.
    let mut program = Command::new("sh");
    program.args([
        "-c",
        "ulimit -n \"$1\" && echo $$ > \"$2\" && shift 2 && exec \"$@\"",
        "sh",
        &MAX_FDS.to_string(),
        &cgroup.dir.join("cgroup.procs").to_string_lossy(),
        bin(),
    ]);
    let mut daemon = Daemon::start_in(program, &config, &[], [127, 0, 0, 1].into());
    assert!(
        cgroup.procs().contains(&daemon.pid()),
        "the daemon (pid {}) is not in {}: {:?}",
        daemon.pid(),
        cgroup.dir.display(),
        cgroup.procs()
    );

    // CPU time is counted in clock ticks: the first scrapes may come before the first tick.
    let ((), m) = daemon.wait_until("the kernel to throttle the daemon", WAIT, |m| {
        let throttled = m.get("netprobe_cgroup_cpu_throttled_periods_total", &[]);
        let cpu = m.get("process_cpu_seconds_total", &[]);
        match (throttled, cpu) {
            (Some(n), Some(cpu)) if n > 0.0 && cpu > 0.0 => Ok(()),
            _ => Err(format!(
                "nr_throttled {throttled:?}, CPU seconds {cpu:?}, \
                 netprobe_cgroup_cpu_available {:?}",
                m.get("netprobe_cgroup_cpu_available", &[])
            )),
        }
    });
    let kernel = cgroup.stat();
    let get = |name: &str| {
        m.get(name, &[])
            .unwrap_or_else(|| panic!("{name} missing:\n{}", m.text))
    };
    assert_eq!(get("netprobe_cgroup_cpu_available"), 1.0);
    assert_eq!(get("netprobe_cgroup_cpu_quota_seconds"), 0.005);
    assert_eq!(get("netprobe_cgroup_cpu_period_seconds"), 0.1);
    // Counters the kernel kept for this cgroup, read after the scrape: never behind it.
    let throttled = get("netprobe_cgroup_cpu_throttled_periods_total");
    let periods = get("netprobe_cgroup_cpu_periods_total");
    let throttled_seconds = get("netprobe_cgroup_cpu_throttled_seconds_total");
    assert!(
        throttled <= periods,
        "{throttled} throttled of {periods} periods"
    );
    assert!(throttled <= kernel["nr_throttled"] as f64, "{kernel:?}");
    assert!(periods <= kernel["nr_periods"] as f64, "{kernel:?}");
    assert!(
        throttled_seconds > 0.0 && throttled_seconds <= kernel["throttled_time"] as f64 / 1e9,
        "{throttled_seconds} s throttled; kernel {kernel:?}"
    );

    // The process as the kernel sees it.
    assert_eq!(get("process_max_fds"), MAX_FDS as f64);
    let open_fds = get("process_open_fds");
    assert!(open_fds >= 3.0 && open_fds <= MAX_FDS as f64, "{open_fds}");
    // Whole seconds of boot time plus clock ticks: within a second of the truth.
    let start = get("process_start_time_seconds");
    assert!(
        start >= started - 1.0 && start <= now() + 1.0,
        "start time {start}, test started at {started}"
    );
    let rss = get("process_resident_memory_bytes");
    assert!(rss > 0.0 && rss <= get("process_virtual_memory_bytes"));

    let log = daemon.stderr_text();
    assert!(
        log.contains("reading CPU throttling from this process's cgroup")
            && log.contains("version=\"v1\""),
        "{log}"
    );

    // The guard removes the cgroup once the daemon is gone.
    let dir = cgroup.dir.clone();
    drop(daemon);
    drop(cgroup);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A cgroup in the cgroup v1 `cpu` hierarchy, below this test process's own cpu cgroup. On
/// drop (also when the test fails), the processes still in it move to the parent cgroup, then
/// it is removed.
struct TestCgroup {
    dir: PathBuf,
}

impl TestCgroup {
    fn create() -> Self {
        let parent = own_v1_cpu_cgroup();
        let dir = parent.join(format!("netprobe-test-{}", std::process::id()));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("create cgroup {}: {e}", dir.display()));
        Self { dir }
    }

    fn write(&self, file: &str, value: &str) {
        let path = self.dir.join(file);
        std::fs::write(&path, value)
            .unwrap_or_else(|e| panic!("write {value} to {}: {e}", path.display()));
    }

    fn procs(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn stat(&self) -> std::collections::HashMap<String, u64> {
        std::fs::read_to_string(self.dir.join("cpu.stat"))
            .expect("read cpu.stat")
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_owned(), v.trim().parse().ok()?))
            })
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let parent_procs = self
            .dir
            .parent()
            .expect("a cgroup has a parent")
            .join("cgroup.procs");
        // A process may be exiting while it is moved; retry within a bound until it is empty
        // and removed.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            for pid in self.procs() {
                let _ = std::fs::write(&parent_procs, pid.to_string());
            }
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) if std::time::Instant::now() >= deadline => {
                    eprintln!("could not remove cgroup {}: {e}", self.dir.display());
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// This process's cgroup in the v1 `cpu` hierarchy, from /proc/self/cgroup and the hierarchy's
/// mount in /proc/self/mountinfo (read here without the code under test).
fn own_v1_cpu_cgroup() -> PathBuf {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    let path = cgroups
        .lines()
        .find_map(|l| {
            let mut fields = l.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            controllers.split(',').any(|c| c == "cpu").then_some(path)
        })
        .unwrap_or_else(|| {
            panic!(
                "no cgroup v1 cpu controller in /proc/self/cgroup (this test needs one):\n{cgroups}"
            )
        });
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let mount = mountinfo
        .lines()
        .find_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let (fstype, options) = (fields.get(sep + 1)?, fields.get(sep + 3)?);
            let is_cpu = *fstype == "cgroup" && options.split(',').any(|o| o == "cpu");
            (is_cpu && fields[3] == "/").then(|| PathBuf::from(fields[4]))
        })
        .expect("the cgroup v1 cpu hierarchy mounted from its root");
    let dir = mount.join(Path::new(path).strip_prefix("/").unwrap_or(Path::new(path)));
    assert!(dir.is_dir(), "{} is not a directory", dir.display());
    dir
}
