//! The container image built without a container engine (scripts/image on top of
//! scripts/oci-image), from the binary under test: the archive is byte-for-byte reproducible and
//! named by its manifest's digest, its config runs what the Dockerfile's final stage runs, its
//! layer carries the binary with every shared library and the loader it needs, the CA bundle,
//! the nonroot user and /tmp, and (as root) the binary starts from the unpacked layer alone.
//!
//! Whether containerd accepts the archive (`ctr images import`) and runs it is tested on the real
//! cluster (tests/integration/cluster/, `make e2e`): every node imports it and runs the chart.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::util::{Checks, bin};

/// The name the tests give their images.
const NAME: &str = "localhost/kube-netprobe:integration-test";
/// Where the Dockerfile copies the binary, and distroless nonroot's user.
const BINARY: &str = "/usr/local/bin/kube-netprobe";
const NONROOT_UID: &str = "65532";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd` with stdin closed; panics with its stderr unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().expect("sha256sum output");
    format!("sha256:{hex}")
}

/// sha256 of the gunzipped `path`, streamed through `gzip -dc | sha256sum`.
fn gunzipped_sha256(path: &Path) -> String {
    let mut gzip = Command::new("gzip")
        .arg("-dc")
        .arg(path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run gzip");
    let sum = Command::new("sha256sum")
        .stdin(gzip.stdout.take().expect("gzip stdout"))
        .output()
        .expect("run sha256sum");
    assert!(
        gzip.wait().expect("wait for gzip").success(),
        "gzip -dc {}",
        path.display()
    );
    let text = String::from_utf8_lossy(&sum.stdout);
    format!(
        "sha256:{}",
        text.split_whitespace().next().expect("sha256sum output")
    )
}

/// `scripts/image --binary <binary under test> --name NAME --out <out>`; returns the digest it
/// prints after checking that its one line of output is `<out> <digest>`.
fn build_image(out: &Path) -> String {
    let output = run(Command::new(repo().join("scripts/image"))
        .arg("--binary")
        .arg(bin())
        .args(["--name", NAME])
        .arg("--out")
        .arg(out)
        .env_remove("SOURCE_DATE_EPOCH"));
    let stdout = String::from_utf8(output.stdout).expect("utf-8 output");
    let (path, digest) = stdout
        .strip_suffix('\n')
        .and_then(|line| line.split_once(' '))
        .unwrap_or_else(|| panic!("scripts/image printed {stdout:?}, not `<path> <digest>\\n`"));
    assert_eq!(path, out.to_str().unwrap(), "path printed by scripts/image");
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "scripts/image printed {digest:?} as the digest"
    );
    digest.to_string()
}

/// An image archive unpacked into a temporary directory.
struct Image {
    dir: tempfile::TempDir,
    oci_layout: Value,
    index: Value,
    manifest: Value,
    config: Value,
}

impl Image {
    fn unpack(archive: &Path) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        run(Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(dir.path()));
        let json = |path: PathBuf| -> Value {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let oci_layout = json(dir.path().join("oci-layout"));
        let index = json(dir.path().join("index.json"));
        let mut image = Self {
            dir,
            oci_layout,
            index,
            manifest: Value::Null,
            config: Value::Null,
        };
        let manifests = image.index["manifests"]
            .as_array()
            .expect("index.json manifests");
        assert_eq!(manifests.len(), 1, "index.json: {}", image.index);
        image.manifest = json(image.blob(&manifests[0]["digest"]));
        image.config = json(image.blob(&image.manifest["config"]["digest"]));
        image
    }

    /// The file of the blob whose digest is the string `digest`.
    fn blob(&self, digest: &Value) -> PathBuf {
        let digest = digest.as_str().unwrap_or_default();
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("digest {digest:?} is not sha256:..."));
        self.dir.path().join("blobs/sha256").join(hex)
    }

    fn manifest_digest(&self) -> &str {
        self.index["manifests"][0]["digest"]
            .as_str()
            .unwrap_or_default()
    }

    fn layer(&self) -> PathBuf {
        let layers = self.manifest["layers"].as_array().expect("manifest layers");
        assert_eq!(layers.len(), 1, "one layer: {}", self.manifest);
        self.blob(&layers[0]["digest"])
    }
}

/// One entry of `tar -tzv`: type and permissions as `ls` shows them, owner, date, link target.
#[derive(Debug)]
struct Entry {
    perms: String,
    owner: String,
    date: String,
    link: Option<String>,
}

/// The layer's entries by absolute path (`/tmp`, not `tmp/`), from `tar -tzvf --numeric-owner`.
fn list_layer(layer: &Path) -> BTreeMap<String, Entry> {
    let out = run(Command::new("tar")
        .arg("--numeric-owner")
        .arg("-tzvf")
        .arg(layer)
        .env("TZ", "UTC"));
    let mut entries = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // drwxrwxrwt 0/0               0 1970-01-01 00:00 tmp/
        let mut rest = line;
        let mut fields = Vec::new();
        for _ in 0..5 {
            rest = rest.trim_start();
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        let name = rest.trim_start().to_string();
        assert!(!name.is_empty(), "unexpected tar -tv line {line:?}");
        let (name, link) = match name.split_once(" -> ") {
            Some((n, l)) => (n.to_string(), Some(l.to_string())),
            None => (name, None),
        };
        let path = format!("/{}", name.trim_end_matches('/'));
        let entry = Entry {
            perms: fields[0].to_string(),
            owner: fields[1].to_string(),
            date: format!("{} {}", fields[3], fields[4]),
            link,
        };
        assert!(
            entries.insert(path.clone(), entry).is_none(),
            "{path} twice in the layer"
        );
    }
    entries
}

/// The content of `path` (absolute) in the gzipped layer.
fn layer_file(layer: &Path, path: &str) -> String {
    let out = run(Command::new("tar")
        .arg("-xzOf")
        .arg(layer)
        .arg(path.trim_start_matches('/')));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `ldd` says the binary loads: absolute paths (the vDSO has none).
fn ldd_libraries(binary: &str) -> Vec<String> {
    let out = run(Command::new("ldd").arg(binary));
    let text = String::from_utf8_lossy(&out.stdout);
    let libs: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once(" => ") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| path.to_string())
        })
        .collect();
    assert!(!libs.is_empty(), "ldd {binary} listed no library:\n{text}");
    libs
}

/// The ELF interpreter (PT_INTERP) of a 64-bit little-endian ELF file.
fn elf_interpreter(path: &str) -> String {
    let mut file = std::fs::File::open(path).expect("open binary");
    let mut header = [0u8; 64];
    file.read_exact(&mut header).expect("read ELF header");
    assert_eq!(&header[..6], b"\x7fELF\x02\x01", "{path}: not ELF64 LE");
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as u64;
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (
        u64_at(&header, 0x20),
        u16_at(&header, 0x36),
        u16_at(&header, 0x38),
    );
    for i in 0..phnum {
        let mut ph = vec![0u8; phentsize as usize];
        file.seek(SeekFrom::Start(phoff + i * phentsize)).unwrap();
        file.read_exact(&mut ph).expect("read program header");
        if u32::from_le_bytes(ph[..4].try_into().unwrap()) == 3 {
            let (offset, size) = (u64_at(&ph, 8), u64_at(&ph, 32));
            let mut interp = vec![0u8; size as usize];
            file.seek(SeekFrom::Start(offset)).unwrap();
            file.read_exact(&mut interp).expect("read PT_INTERP");
            return String::from_utf8_lossy(&interp)
                .trim_end_matches('\0')
                .to_string();
        }
    }
    panic!("{path} has no PT_INTERP: not a dynamic executable");
}

/// ENTRYPOINT, CMD, USER and EXPOSE of the Dockerfile's final stage, parsed here on purpose
/// rather than with scripts/image's parser.
#[derive(Debug, Default)]
struct FinalStage {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    user: Option<String>,
    expose: BTreeSet<String>,
}

fn dockerfile_final_stage() -> FinalStage {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("read Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let last_from = lines
        .iter()
        .rposition(|l| l.to_ascii_uppercase().starts_with("FROM "))
        .expect("a FROM in the Dockerfile");
    let mut stage = FinalStage::default();
    for line in &lines[last_from + 1..] {
        let (instruction, args) = line.split_once(' ').unwrap_or((line, ""));
        let args = args.trim();
        let exec_form = || -> Vec<String> {
            serde_json::from_str(args)
                .unwrap_or_else(|e| panic!("Dockerfile: {line:?} is not in exec (JSON) form: {e}"))
        };
        match instruction.to_ascii_uppercase().as_str() {
            "ENTRYPOINT" => stage.entrypoint = Some(exec_form()),
            "CMD" => stage.cmd = Some(exec_form()),
            "USER" => stage.user = Some(args.to_string()),
            "EXPOSE" => stage.expose.extend(args.split_whitespace().map(|p| {
                if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                }
            })),
            _ => {}
        }
    }
    stage
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[test]
fn image_is_reproducible_and_named_by_its_manifest_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second) = (dir.path().join("first.tar"), dir.path().join("second.tar"));
    let digest = build_image(&first);
    assert_eq!(build_image(&second), digest, "digest of a second build");
    let cmp = Command::new("cmp")
        .arg(&first)
        .arg(&second)
        .output()
        .expect("run cmp");
    assert!(
        cmp.status.success(),
        "two builds of one binary differ: {}",
        String::from_utf8_lossy(&cmp.stdout)
    );

    let image = Image::unpack(&first);
    let mut checks = Checks::default();
    checks.eq(
        "oci-layout",
        &image.oci_layout["imageLayoutVersion"],
        &Value::from("1.0.0"),
    );
    checks.eq(
        "index.json manifest digest",
        image.manifest_digest(),
        digest.as_str(),
    );
    let manifest_blob = image.blob(&image.index["manifests"][0]["digest"]);
    checks.eq(
        "sha256 of the manifest blob",
        sha256(&manifest_blob),
        digest.clone(),
    );
    let entry = &image.index["manifests"][0];
    checks.eq(
        "index.json manifest mediaType",
        entry["mediaType"].as_str(),
        Some("application/vnd.oci.image.manifest.v1+json"),
    );
    checks.eq(
        "index.json manifest size",
        entry["size"].as_u64(),
        std::fs::metadata(&manifest_blob).ok().map(|m| m.len()),
    );
    checks.eq(
        "io.containerd.image.name",
        entry["annotations"]["io.containerd.image.name"].as_str(),
        Some(NAME),
    );
    checks.eq(
        "org.opencontainers.image.ref.name",
        entry["annotations"]["org.opencontainers.image.ref.name"].as_str(),
        NAME.rsplit_once(':').map(|(_, tag)| tag),
    );
    // Every blob the manifest names is there, with that digest and size.
    let layer_descriptor = &image.manifest["layers"][0];
    for (what, descriptor) in [
        ("config", &image.manifest["config"]),
        ("layer", layer_descriptor),
    ] {
        let path = image.blob(&descriptor["digest"]);
        checks.eq(
            &format!("sha256 of the {what} blob"),
            sha256(&path),
            descriptor["digest"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        checks.eq(
            &format!("size of the {what} blob"),
            std::fs::metadata(&path).ok().map(|m| m.len()),
            descriptor["size"].as_u64(),
        );
    }
    checks.eq(
        "layer mediaType",
        layer_descriptor["mediaType"].as_str(),
        Some("application/vnd.oci.image.layer.v1.tar+gzip"),
    );
    checks.eq(
        "config rootfs.diff_ids",
        strings(&image.config["rootfs"]["diff_ids"]),
        Some(vec![gunzipped_sha256(&image.layer())]),
    );
    checks.eq(
        "config architecture/os",
        (
            image.config["architecture"].as_str(),
            image.config["os"].as_str(),
        ),
        (Some("amd64"), Some("linux")),
    );
    checks.eq(
        "config created",
        image.config["created"].as_str(),
        Some("1970-01-01T00:00:00Z"),
    );
    checks.finish(&format!(
        "index.json: {}\nmanifest: {}",
        image.index, image.manifest
    ));
}

#[test]
fn image_config_runs_what_the_dockerfile_runs() {
    let stage = dockerfile_final_stage();
    assert!(
        stage.entrypoint.is_some()
            && stage.cmd.is_some()
            && stage.user.is_some()
            && !stage.expose.is_empty(),
        "Dockerfile's final stage lacks ENTRYPOINT, CMD, USER or EXPOSE: {stage:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("image.tar");
    build_image(&archive);
    let image = Image::unpack(&archive);
    let config = &image.config["config"];
    let mut checks = Checks::default();
    checks.eq(
        "Entrypoint",
        strings(&config["Entrypoint"]),
        stage.entrypoint,
    );
    checks.eq("Cmd", strings(&config["Cmd"]), stage.cmd);
    checks.eq(
        "User",
        config["User"].as_str().map(str::to_string),
        stage.user,
    );
    let exposed: Option<BTreeSet<String>> = config["ExposedPorts"]
        .as_object()
        .map(|ports| ports.keys().cloned().collect());
    checks.eq("ExposedPorts", exposed, Some(stage.expose));
    checks.finish(&format!("image config: {}", image.config));
}

#[test]
fn image_layer_holds_the_binary_its_libraries_and_what_distroless_provides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("image.tar");
    build_image(&archive);
    let image = Image::unpack(&archive);
    let layer = image.layer();
    let entries = list_layer(&layer);
    let mut checks = Checks::default();
    let mut expect = |path: &str, perms: &dyn Fn(&str) -> bool, want: &str| match entries.get(path)
    {
        None => checks.that(false, format!("{path} missing from the layer")),
        Some(e) => checks.that(
            perms(&e.perms),
            format!("{path} is {} ({:?}), want {want}", e.perms, e.link),
        ),
    };
    expect(BINARY, &|p| p == "-rwxr-xr-x", "-rwxr-xr-x");
    let regular = |p: &str| p.starts_with('-');
    // What the loader maps: ldd's list, and the ELF interpreter (ldd lists it too, today).
    let mut loaded: BTreeSet<String> = ldd_libraries(bin()).into_iter().collect();
    loaded.insert(elf_interpreter(bin()));
    for lib in &loaded {
        expect(lib, &regular, "a regular file (the binary loads it)");
    }
    expect(
        "/etc/ssl/certs/ca-certificates.crt",
        &regular,
        "a regular file",
    );
    expect("/etc/passwd", &|p| p == "-rw-r--r--", "-rw-r--r--");
    expect("/etc/group", &|p| p == "-rw-r--r--", "-rw-r--r--");
    expect("/tmp", &|p| p == "drwxrwxrwt", "drwxrwxrwt (1777)");
    expect("/home/nonroot", &|p| p.starts_with('d'), "a directory");

    // Reproducible metadata and complete trees: owner 0/0, dated the epoch, every parent there.
    for (path, entry) in &entries {
        checks.that(
            entry.owner == "0/0" && entry.date == "1970-01-01 00:00",
            format!("{path}: owner {} date {}", entry.owner, entry.date),
        );
        let parent = Path::new(path)
            .parent()
            .and_then(Path::to_str)
            .unwrap_or("/");
        checks.that(
            parent == "/"
                || entries
                    .get(parent)
                    .is_some_and(|e| e.perms.starts_with('d')),
            format!("{path}: parent {parent} is not a directory entry"),
        );
    }

    let certs = layer_file(&layer, "/etc/ssl/certs/ca-certificates.crt");
    checks.that(
        certs.matches("-----BEGIN CERTIFICATE-----").count() > 10,
        "the CA bundle holds no certificates",
    );
    let passwd = layer_file(&layer, "/etc/passwd");
    checks.that(
        passwd.lines().any(|l| {
            let f: Vec<&str> = l.split(':').collect();
            f.len() == 7 && f[2] == NONROOT_UID && f[3] == NONROOT_UID && f[5] == "/home/nonroot"
        }),
        format!(
            "/etc/passwd has no {NONROOT_UID}:{NONROOT_UID} user with home /home/nonroot:\n{passwd}"
        ),
    );
    let group = layer_file(&layer, "/etc/group");
    checks.that(
        group
            .lines()
            .any(|l| l.split(':').nth(2) == Some(NONROOT_UID)),
        format!("/etc/group has no group {NONROOT_UID}:\n{group}"),
    );
    let listing: Vec<String> = entries
        .iter()
        .map(|(path, e)| format!("{} {path}", e.perms))
        .collect();
    checks.finish(&format!("layer:\n  {}", listing.join("\n  ")));
}

#[test]
#[ignore = "needs root to chroot into the unpacked layer"]
fn image_binary_starts_from_the_unpacked_layer_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("image.tar");
    build_image(&archive);
    let image = Image::unpack(&archive);
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).expect("mkdir rootfs");
    run(Command::new("tar")
        .arg("-xzf")
        .arg(image.layer())
        .arg("-C")
        .arg(&rootfs));
    // As the image's user, with nothing of this machine's file system in reach.
    let in_image = |args: &[&str]| {
        Command::new("chroot")
            .arg(format!("--userspec={NONROOT_UID}:{NONROOT_UID}"))
            .arg(&rootfs)
            .arg(BINARY)
            .args(args)
            .env_clear()
            // The image's PATH (also where the host finds chroot).
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .output()
            .expect("run chroot")
    };
    let want = run(Command::new(bin()).arg("--version")).stdout;
    let out = in_image(&["--version"]);
    assert!(
        out.status.success() && out.stdout == want,
        "{BINARY} --version in the image: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The check above can fail: without one of its libraries the binary does not start.
    let interpreter = elf_interpreter(bin());
    let lib = ldd_libraries(bin())
        .into_iter()
        .find(|l| *l != interpreter)
        .expect("a shared library besides the interpreter");
    std::fs::remove_file(rootfs.join(lib.trim_start_matches('/'))).expect("remove library");
    let out = in_image(&["--version"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file_name = Path::new(&lib).file_name().unwrap().to_string_lossy();
    assert!(
        !out.status.success() && stderr.contains(&*file_name),
        "without {lib}, --version in the image gave {} and stderr {stderr:?}",
        out.status
    );
}

#[test]
fn oci_image_names_a_missing_binary_and_a_malformed_argument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("image.tar");
    let missing = dir.path().join("no-such-kube-netprobe");
    let oci_image = |args: &[&str]| {
        Command::new(repo().join("scripts/oci-image"))
            .arg("--out")
            .arg(&out)
            .args(["--name", NAME])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/oci-image")
    };
    let binary = format!("{}:{BINARY}", missing.display());
    let cases: [(&[&str], &str); 3] = [
        (&["--binary", &binary], missing.to_str().unwrap()),
        (&["--expose", "9753"], "--expose"),
        (
            &["--entrypoint", "/usr/local/bin/kube-netprobe"],
            "--entrypoint",
        ),
    ];
    let mut checks = Checks::default();
    for (args, named) in cases {
        let result = oci_image(args);
        let stderr = String::from_utf8_lossy(&result.stderr);
        checks.eq(
            &format!("{args:?}: exit code"),
            result.status.code(),
            Some(2),
        );
        checks.that(
            stderr.contains(named),
            format!("{args:?}: stderr does not name {named:?}: {stderr:?}"),
        );
        checks.that(
            result.stdout.is_empty(),
            format!(
                "{args:?}: printed {:?}",
                String::from_utf8_lossy(&result.stdout)
            ),
        );
        checks.that(!out.exists(), format!("{args:?}: wrote {}", out.display()));
    }
    // scripts/image too.
    let result = Command::new(repo().join("scripts/image"))
        .arg("--binary")
        .arg(&missing)
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/image");
    let stderr = String::from_utf8_lossy(&result.stderr);
    checks.eq("scripts/image exit code", result.status.code(), Some(2));
    checks.that(
        stderr.contains(missing.to_str().unwrap()),
        format!("scripts/image does not name the missing binary: {stderr:?}"),
    );
    checks.finish("");
}
