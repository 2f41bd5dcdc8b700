//! Finding and reading the CPU cgroup on fixture trees (tests/fixtures/cgroup/README.md). This
//! machine runs cgroup v1, so the v2 layouts cannot be made real here: they are fixture files
//! as the kernel writes them. The v1 layout is also read on the real kernel by
//! tests/integration/cgroup.rs.

use std::path::{Path, PathBuf};

use super::*;

fn root(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cgroup")
        .join(case)
}

fn find_in(case: &str) -> Result<CpuCgroup, CgroupError> {
    let root = root(case);
    find(&root.join("proc/self"), &root)
}

#[test]
fn v1_in_a_container_is_read_through_the_mount_of_its_own_cgroup() {
    let cgroup = find_in("v1-container").unwrap();
    assert_eq!(
        cgroup,
        CpuCgroup {
            version: Version::V1,
            dir: root("v1-container").join("sys/fs/cgroup/cpu,cpuacct"),
        }
    );
    assert_eq!(
        cgroup.read().unwrap(),
        CpuBandwidth {
            periods: 1200,
            throttled_periods: 300,
            throttled_seconds: 4.5,
            quota_seconds: Some(0.05),
            period_seconds: 0.1,
        }
    );
}

#[test]
fn v2_without_a_cgroup_namespace_follows_the_full_path() {
    let cgroup = find_in("v2-host-path").unwrap();
    assert_eq!(cgroup.version, Version::V2);
    assert!(
        cgroup
            .dir
            .ends_with("kubepods-burstable-pod5f1c2a9e.slice/cri-containerd-3b2f0c.scope"),
        "{cgroup:?}"
    );
    assert_eq!(
        cgroup.read().unwrap(),
        CpuBandwidth {
            periods: 4000,
            throttled_periods: 1000,
            throttled_seconds: 2.5,
            quota_seconds: Some(0.025),
            period_seconds: 0.1,
        }
    );
}

#[test]
fn v2_in_a_cgroup_namespace_without_a_limit_has_no_quota() {
    let cgroup = find_in("v2-namespace-unlimited").unwrap();
    assert_eq!(
        cgroup.dir,
        root("v2-namespace-unlimited").join("sys/fs/cgroup")
    );
    let bandwidth = cgroup.read().unwrap();
    assert_eq!(bandwidth.quota_seconds, None);
    assert_eq!(bandwidth.period_seconds, 0.1);
    assert_eq!(bandwidth.periods, 0);
}

#[test]
fn no_visible_cpu_controller_says_why() {
    for (case, why) in [
        ("v2-no-cpu-controller", "no cpu controller enabled"),
        ("v1-outside-mount", "no mount of its hierarchy holds it"),
        ("none", "neither a v1 cpu hierarchy nor a v2 cgroup"),
    ] {
        match find_in(case) {
            Err(CgroupError::NotVisible(reason)) => {
                assert!(reason.contains(why), "{case}: {reason}")
            }
            other => panic!("{case}: {other:?}"),
        }
    }
}

#[test]
fn a_missing_proc_file_names_it() {
    let err = find(Path::new("/nonexistent/proc/self"), Path::new("/")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/proc/self/cgroup"),
        "{err}"
    );
}

#[test]
fn quota_files_parse_or_name_the_bad_value() {
    assert_eq!(parse_v1_quota("-1\n", "100000\n"), Ok((None, 0.1)));
    assert_eq!(parse_v1_quota("5000\n", "100000\n"), Ok((Some(0.005), 0.1)));
    assert_eq!(
        parse_v1_quota("lots\n", "100000\n"),
        Err("quota \"lots\" is not an integer".to_owned())
    );
    assert_eq!(parse_v2_max("max 100000\n"), Ok((None, 0.1)));
    assert_eq!(parse_v2_max("150000 50000\n"), Ok((Some(0.15), 0.05)));
    assert!(parse_v2_max("max\n").unwrap_err().contains("\"max\""));
    assert!(parse_v2_max("-5 100000\n").unwrap_err().contains("\"-5\""));
}

#[test]
fn a_cpu_stat_without_the_throttling_fields_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cpu.stat"), "nr_periods 3\n").unwrap();
    let err = CpuCgroup {
        version: Version::V1,
        dir: dir.path().to_owned(),
    }
    .read()
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("cpu.stat") && text.contains("no nr_throttled line"),
        "{text}"
    );
}
