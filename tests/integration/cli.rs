//! The command line as a user meets it: `--help` describes the whole product, `completions`
//! prints scripts that a real bash loads and completes with, and the man pages in docs/man
//! render through groff without a warning. That docs/man and docs/completions are current is
//! checked by `make check-generated` (cli::tests in the library).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::util::bin;

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kube-netprobe")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn help_describes_every_probe_and_both_one_shot_modes() {
    let long = stdout(&run(&["--help"]));
    for part in [
        "DNS:",
        "Pod to pod:",
        "API server:",
        "Storage:",
        "diagnose",
        "slo-report",
        "completions",
    ] {
        assert!(
            long.contains(part),
            "--help does not mention {part}:\n{long}"
        );
    }
    let short = stdout(&run(&["-h"]));
    let about = short.lines().next().unwrap();
    for part in ["DNS", "pod-to-pod", "API server", "storage"] {
        assert!(
            about.contains(part),
            "-h's first line lacks {part}: {about}"
        );
    }
}

#[test]
fn completion_scripts_match_the_repository_and_bash_completes_with_them() {
    for (shell, file) in [
        ("bash", "kube-netprobe.bash"),
        ("zsh", "_kube-netprobe"),
        ("fish", "kube-netprobe.fish"),
    ] {
        let printed = stdout(&run(&["completions", shell]));
        let kept = std::fs::read_to_string(repo("docs/completions").join(file)).unwrap();
        assert_eq!(
            printed, kept,
            "completions {shell} differs from docs/completions/{file}"
        );
    }
    for shell in ["elvish", "powershell"] {
        assert!(!stdout(&run(&["completions", shell])).is_empty(), "{shell}");
    }
    let out = run(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );

    // What bash offers after each partial command line, through the printed script's own
    // completion function (the one `complete -F` registers for kube-netprobe).
    let complete = |line: &str| -> Vec<String> {
        let script = format!(
            r#"source <("$BIN" completions bash) || exit 1
               fn=$(complete -p kube-netprobe | sed -E 's/.*-F ([^ ]+).*/\1/')
               COMP_LINE={line:?}; COMP_POINT=${{#COMP_LINE}}
               read -ra COMP_WORDS <<<"$COMP_LINE"
               [[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")
               COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
               "$fn" kube-netprobe "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
               printf '%s\n' "${{COMPREPLY[@]}}""#
        );
        let out = Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &script])
            .env("BIN", bin())
            .stdin(Stdio::null())
            .output()
            .expect("run bash");
        stdout(&out).lines().map(str::to_owned).collect()
    };
    assert_eq!(complete("kube-netprobe di"), ["diagnose"]);
    assert_eq!(complete("kube-netprobe check-"), ["check-config"]);
    let shells = complete("kube-netprobe completions ");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        assert!(
            shells.iter().any(|s| s == shell),
            "{shell} not offered: {shells:?}"
        );
    }
    let storage = complete("kube-netprobe diagnose --storage-");
    for flag in ["--storage-test", "--storage-class", "--storage-test-image"] {
        assert!(
            storage.iter().any(|s| s == flag),
            "{flag} not offered: {storage:?}"
        );
    }
    assert_eq!(complete("kube-netprobe --log-format "), ["text", "json"]);
}

#[test]
fn man_pages_render_without_warnings_and_cover_every_subcommand() {
    let help = stdout(&run(&["--help"]));
    let subcommands: Vec<&str> = help
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(subcommands.len() >= 6, "{help}");
    for page in std::iter::once("kube-netprobe".to_owned())
        .chain(subcommands.iter().map(|c| format!("kube-netprobe-{c}")))
    {
        let path = repo("docs/man").join(format!("{page}.1"));
        assert!(path.exists(), "no man page {}", path.display());
        // -P -cbou: plain text, without the overstrikes grotty uses for bold and underline.
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-P", "-cbou"])
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .expect("run groff (make deps installs groff-base)");
        let text = stdout(&out);
        assert!(
            out.stderr.is_empty(),
            "{page}.1: groff warns: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{page}.1:\n{text}"
        );
    }
    let main = std::fs::read_to_string(repo("docs/man/kube-netprobe.1")).unwrap();
    for c in &subcommands {
        assert!(
            main.contains(&format!("kube\\-netprobe\\-{}", c.replace('-', "\\-"))),
            "kube-netprobe.1 does not list {c}"
        );
    }
}
