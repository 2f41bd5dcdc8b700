//! Stamps the git revision into the binary for `netprobe_build_info{revision}`.

fn main() {
    let revision = std::env::var("NETPROBE_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=NETPROBE_REVISION={revision}");
    println!("cargo:rerun-if-env-changed=NETPROBE_REVISION");
    // Rebuild when HEAD moves (a commit or a checkout), not on every file change.
    for path in [".git/HEAD", ".git/refs/heads"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
