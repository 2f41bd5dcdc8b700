//! The process figures from a fixture /proc with known values, and from this process's own.

use std::path::Path;

use super::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proc");

#[test]
fn a_fixture_process_reads_in_base_units() {
    let stats = ProcRoot::at(Path::new(FIXTURE), "4242")
        .read_process()
        .unwrap();
    let ticks = procfs::ticks_per_second() as f64;
    assert_eq!(
        stats,
        ProcessStats {
            cpu_seconds: (250.0 + 150.0) / ticks,
            resident_bytes: 5120 * procfs::page_size(),
            virtual_bytes: 104_857_600,
            open_fds: 7,
            max_fds: Some(4321),
            start_time_seconds: 1_796_600_000.0 + 123_456.0 / ticks,
        }
    );
}

#[test]
fn a_missing_process_names_the_directory() {
    let err = ProcRoot::at(Path::new(FIXTURE), "4243")
        .read_process()
        .unwrap_err();
    assert!(
        err.to_string().contains("tests/fixtures/proc/4243"),
        "{err}"
    );
}

#[test]
fn this_process_reads_as_ps_would_see_it() {
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let stats = ProcRoot::system().read_process().unwrap();
    // The soft limit the kernel reports for us, read another way.
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    assert_eq!(stats.max_fds, soft);
    // Started before this test did, and not before the machine booted.
    assert!(stats.start_time_seconds <= before + 1.0, "{stats:?}");
    assert!(
        stats.start_time_seconds >= procfs::boot_time_secs().unwrap() as f64,
        "{stats:?}"
    );
    // stdin, stdout and stderr at least; resident memory is part of the virtual.
    assert!(stats.open_fds >= 3, "{stats:?}");
    assert!(stats.resident_bytes > 0, "{stats:?}");
    assert!(stats.resident_bytes <= stats.virtual_bytes, "{stats:?}");
}
