//! `dla-tools bundle` and the bundle's install.sh, as a user runs them: a
//! bundle for this machine (from the dla-edge these tests built), checked
//! file by file, installed into a temporary root and started there, its
//! viewer answering; and, where the aarch64 Rust target, linker and
//! qemu-aarch64 exist, a real cross build for a Raspberry Pi run under qemu.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dla_tools() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin("dla-tools"))
}

fn dla_edge_binary() -> PathBuf {
    // dla-edge is built next to dla-tools by `cargo test --workspace`.
    let path = assert_cmd::cargo::cargo_bin("dla-tools").with_file_name("dla-edge");
    assert!(
        path.is_file(),
        "{} is not built: run `cargo test --workspace`",
        path.display()
    );
    path
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one folder `bundle` made under `out`.
fn bundle_dir(out: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// For a test whose tools are missing: fails when CI said they must be
/// there (`var` set), else says why it skips.
fn skip_unless_required(var: &str, why: &str) {
    assert!(std::env::var_os(var).is_none(), "{var} is set but {why}");
    eprintln!("SKIPPED: {why}");
}

/// `dla-tools bundle --board rpi4 --target host` around the dla-edge these
/// tests built, with `config`, into `out`; returns what it printed.
fn host_bundle(config: &Path, out: &Path) -> String {
    run_ok(
        dla_tools()
            .args(["bundle", "--board", "rpi4", "--target", "host", "--binary"])
            .arg(dla_edge_binary())
            .arg("--config")
            .arg(config)
            .arg("--out")
            .arg(out)
            .current_dir(root().join("tools")),
    )
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

#[test]
fn a_host_bundle_installs_into_a_root_and_runs_there() {
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = work.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "board = \"rpi4\"\n[model]\npath = \"/usr/share/dla-edge/models/dla-tiny-seg-int8.onnx\"\n\
             [backend]\nthreads = 1\n[source]\nsize = \"256x128\"\nfps = 5\n\
             [viewer]\nlisten = \"127.0.0.1:{port}\"\n[gpio]\nchip = \"log\"\n\
             [[rules]]\nclass = \"road\"\nabove = 0.1\npin = 17\n"
        ),
    )
    .unwrap();
    let out = work.path().join("dist");
    let printed = host_bundle(&config, &out);
    let dir = bundle_dir(&out);
    let name = dir.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.starts_with("dla-edge-rpi4-"), "{name}");
    for f in [
        "bin/dla-edge",
        "models/dla-tiny-seg-int8.onnx",
        "models/dla-tiny-seg-int8.onnx.card.json",
        "config.toml",
        "dla-edge.service",
        "install.sh",
        "BUNDLE.json",
        "SHA256SUMS",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing from the bundle");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("BUNDLE.json")).unwrap()).unwrap();
    assert_eq!(manifest["board"], "rpi4");
    // Built elsewhere (--binary): the manifest does not claim its features.
    assert_eq!(manifest["profile"], "given");
    assert!(manifest["features"].is_null(), "{manifest}");
    // Every file but the sums themselves is listed, and the sums are right.
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 7, "{sums}");
    run_ok(
        Command::new("sha256sum")
            .args(["--quiet", "-c", "SHA256SUMS"])
            .current_dir(&dir),
    );
    // The tarball holds the same folder.
    let tarball = out.join(format!("{name}.tar.gz"));
    assert!(
        printed.contains(&tarball.display().to_string()),
        "{printed}"
    );
    let listing = run_ok(Command::new("tar").arg("-tzf").arg(&tarball));
    assert!(
        listing.contains(&format!("{name}/bin/dla-edge")),
        "{listing}"
    );
    assert!(listing.contains(&format!("{name}/install.sh")), "{listing}");
    // The .deb installs to the usual places, config as a conffile.
    if printed.contains("deb: skipped") {
        eprintln!("no dpkg-deb here: .deb not checked");
    } else {
        let deb = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .expect("a .deb");
        let contents = run_ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
        for f in [
            "./usr/bin/dla-edge",
            "./etc/dla-edge/config.toml",
            "./lib/systemd/system/dla-edge.service",
            "./usr/share/dla-edge/models/dla-tiny-seg-int8.onnx",
        ] {
            assert!(contents.contains(f), "{f} not in the .deb:\n{contents}");
        }
        let conffiles = run_ok(
            Command::new("dpkg-deb")
                .args(["-I"])
                .arg(&deb)
                .arg("conffiles"),
        );
        assert_eq!(conffiles.trim(), "/etc/dla-edge/config.toml");
    }

    // Install into a root of its own; without systemd it starts in the background.
    let target = work.path().join("board");
    let installed = run_ok(
        Command::new(dir.join("install.sh"))
            .arg("--root")
            .arg(&target),
    );
    assert!(installed.contains("config.toml: OK"), "{installed}");
    let pid: i32 = std::fs::read_to_string(target.join("var/lib/dla-edge/dla-edge.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let stats = loop {
        if let Some(body) = http_get(port, "/stats.json") {
            let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
            if stats["frames_processed"].as_u64() > Some(0) {
                break stats;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the installed dla-edge never answered; its log:\n{}",
            std::fs::read_to_string(target.join("var/log/dla-edge.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(stats["source"], "demo");
    // SAFETY: kill(2) on the pid the installer started.
    unsafe { libc::kill(pid, libc::SIGTERM) };

    // Installing again keeps the user's config; a damaged bundle is refused.
    let installed_config = target.join("etc/dla-edge/config.toml");
    let mut edited = std::fs::read_to_string(&installed_config).unwrap();
    edited += "# the user's edit\n";
    std::fs::write(&installed_config, &edited).unwrap();
    let again = run_ok(
        Command::new(dir.join("install.sh"))
            .args(["--no-start", "--root"])
            .arg(&target),
    );
    assert!(again.contains("config.toml.new"), "{again}");
    assert_eq!(std::fs::read_to_string(&installed_config).unwrap(), edited);
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("config.toml"))
        .unwrap()
        .write_all(b"# edited\n")
        .unwrap();
    let damaged = Command::new(dir.join("install.sh"))
        .args(["--no-start", "--root"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(!damaged.status.success());
    assert!(String::from_utf8_lossy(&damaged.stderr).contains("damaged"));
}

#[test]
fn bundle_refuses_bad_input_clearly() {
    let work = tempfile::tempdir().unwrap();
    let bad = work.path().join("bad.toml");
    std::fs::write(&bad, "[source\nuri = 1\n").unwrap();
    let out = dla_tools()
        .args(["bundle", "--board", "rpi5", "--target", "host", "--binary"])
        .arg(dla_edge_binary())
        .arg("--config")
        .arg(&bad)
        .arg("--out")
        .arg(work.path().join("dist"))
        .current_dir(root())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.toml"), "{err}");

    let out = dla_tools()
        .args([
            "bundle",
            "--board",
            "rpi5",
            "--binary",
            "/nonexistent/dla-edge",
            "--out",
        ])
        .arg(work.path().join("dist"))
        .current_dir(root())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--binary /nonexistent/dla-edge: no such file"),
        "{err}"
    );

    let out = dla_tools()
        .args(["bundle", "--board", "rpi5", "--out"])
        .arg(work.path().join("dist"))
        .current_dir(work.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not inside a dla-edge source tree"), "{err}");
}

/// What an aarch64 cross build needs, or why it cannot run here.
fn aarch64_tools() -> Result<(), String> {
    let target = "aarch64-unknown-linux-gnu";
    let libdir = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .map_err(|e| e.to_string())?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&libdir.stdout).trim());
    if !libdir.is_dir() {
        return Err(format!(
            "the Rust target is missing (rustup target add {target})"
        ));
    }
    for (tool, package) in [
        ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
        ("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu"),
        ("qemu-aarch64-static", "qemu-user-static"),
    ] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!("{tool} is missing (apt install {package})"));
        }
    }
    Ok(())
}

/// `dla-tools bundle --board BOARD --debug` into `work/dist`: a real cross
/// build, unoptimised for our crates (CI time), as a user runs it. Returns
/// the bundle folder.
fn debug_bundle(board: &str, work: &Path) -> PathBuf {
    let out = work.join("dist");
    run_ok(
        dla_tools()
            .args(["bundle", "--board", board, "--debug", "--out"])
            .arg(&out)
            .current_dir(root()),
    );
    bundle_dir(&out)
}

/// Runs the aarch64 executable `exe` under qemu with Debian's aarch64 libraries.
fn qemu(exe: &Path) -> Command {
    let mut cmd = Command::new("qemu-aarch64-static");
    cmd.args(["-L", "/usr/aarch64-linux-gnu"]).arg(exe);
    cmd
}

#[test]
fn an_aarch64_bundle_runs_under_qemu() {
    if let Err(why) = aarch64_tools() {
        return skip_unless_required(
            "DLA_REQUIRE_AARCH64",
            &format!("cannot cross-build for aarch64 here: {why}"),
        );
    }
    let work = tempfile::tempdir().unwrap();
    let dir = debug_bundle("rpi4", work.path());
    assert!(
        dir.to_str().unwrap().ends_with("-arm64"),
        "{}",
        dir.display()
    );
    let exe = dir.join("bin/dla-edge");
    // ELF e_machine (bytes 18-19, little-endian): 183 is AArch64.
    let elf = std::fs::read(&exe).unwrap();
    assert_eq!((&elf[..4], elf[18], elf[19]), (&b"\x7fELF"[..], 183, 0));
    let version = run_ok(qemu(&exe).arg("--version"));
    assert!(version.starts_with("dla-edge "), "{version}");
    // USB camera support is cross-built in: `cameras` enumerates V4L2
    // devices (there are none here) instead of saying it was left out.
    let cameras = run_ok(qemu(&exe).arg("cameras"));
    assert!(
        cameras.contains("no V4L2 devices") || cameras.contains("/dev/video"),
        "{cameras}"
    );
    let seg_out = work.path().join("seg");
    let printed = run_ok(
        qemu(&exe)
            .args(["segment", "--threads", "1", "--input"])
            .arg(root().join("models/samples/street-0.jpg"))
            .arg("--model")
            .arg(dir.join("models/dla-tiny-seg-int8.onnx"))
            .arg("--out")
            .arg(&seg_out),
    );
    assert!(printed.contains("infer"), "{printed}");
    let labels = image::open(seg_out.join("street-0.labels.png"))
        .unwrap()
        .into_luma8();
    assert!(labels.pixels().all(|p| p.0[0] < 19));
}

/// The newest `GLIBC_x.y` symbol version an ELF file asks for.
fn newest_glibc(exe: &Path) -> Vec<u32> {
    let printed = run_ok(Command::new("aarch64-linux-gnu-readelf").arg("-V").arg(exe));
    printed
        .split("GLIBC_")
        .skip(1)
        .map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit() && c != '.')
                .next()
                .unwrap_or("")
                .split('.')
                .filter_map(|n| n.parse().ok())
                .collect::<Vec<u32>>()
        })
        .filter(|v| !v.is_empty())
        .max()
        .expect("a dynamically linked binary asks for some glibc symbol")
}

/// A Jetson Nano runs JetPack 4.6 (glibc 2.27), older than this machine's:
/// its bundle is built through cargo-zigbuild and must ask for no newer
/// glibc symbol. CI has no zig (a second aarch64 build would double the
/// bundle tests' time), so this runs where `cargo-zigbuild` is on PATH
/// (`pip install ziglang cargo-zigbuild`), and must under DLA_REQUIRE_ZIGBUILD.
#[test]
fn a_jetson_nano_bundle_needs_no_glibc_newer_than_2_27() {
    let zigbuild = Command::new("cargo-zigbuild")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let ready = aarch64_tools().and_then(|()| {
        zigbuild.then_some(()).ok_or_else(|| {
            "cargo-zigbuild is not on PATH (pip install ziglang cargo-zigbuild)".to_string()
        })
    });
    if let Err(why) = ready {
        return skip_unless_required(
            "DLA_REQUIRE_ZIGBUILD",
            &format!("cannot build for glibc 2.27 here: {why}"),
        );
    }
    let work = tempfile::tempdir().unwrap();
    let dir = debug_bundle("jetson-nano", work.path());
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("BUNDLE.json")).unwrap()).unwrap();
    assert_eq!(manifest["glibc"], "2.27", "{manifest}");
    let exe = dir.join("bin/dla-edge");
    let newest = newest_glibc(&exe);
    let shown: Vec<String> = newest.iter().map(u32::to_string).collect();
    assert!(newest <= vec![2, 27], "asks for GLIBC_{}", shown.join("."));
    let version = run_ok(qemu(&exe).arg("--version"));
    assert!(version.starts_with("dla-edge "), "{version}");
}

/// A throwaway OpenSSH server on 127.0.0.1 that lets the current user in with
/// a fresh key; killed on drop.
struct SshServer {
    child: std::process::Child,
    port: u16,
    key: PathBuf,
    user: String,
    _dir: tempfile::TempDir,
}

impl SshServer {
    fn start() -> Result<SshServer, String> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.is_file() {
            return Err("no /usr/sbin/sshd (apt install openssh-server)".into());
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for key in ["host_key", "id"] {
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(d.join(key)),
            );
        }
        std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).unwrap();
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            // sshd's privilege separation directory.
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let port = free_port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nStrictModes no\nUsePAM no\nPermitRootLogin yes\n\
                 Subsystem sftp internal-sftp\n",
                d = d.display()
            ),
        )
        .unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("sshd did not start listening".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(SshServer {
            child,
            port,
            key: d.join("id"),
            user,
            _dir: dir,
        })
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn flash_installs_over_real_ssh_and_reports_the_first_fps() {
    let server = match SshServer::start() {
        Ok(s) => s,
        Err(why) => {
            return skip_unless_required(
                "DLA_REQUIRE_SSHD",
                &format!("no OpenSSH server to flash to: {why}"),
            )
        }
    };
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = work.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[backend]\nthreads = 1\n[source]\nsize = \"256x128\"\nfps = 10\n\
             [viewer]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();
    let out = work.path().join("dist");
    host_bundle(&config, &out);
    let board_root = work.path().join("board");
    let printed = run_ok(
        dla_tools()
            .args(["flash", "--board", "rpi4", "--wait", "90", "--host"])
            .arg(format!("{}@127.0.0.1", server.user))
            .args(["--port", &server.port.to_string(), "-i"])
            .arg(&server.key)
            .args([
                "--ssh-option",
                "StrictHostKeyChecking=no",
                "--ssh-option",
                "UserKnownHostsFile=/dev/null",
                "--ssh-option",
                "LogLevel=ERROR",
                "--bundle",
            ])
            .arg(bundle_dir(&out))
            .arg("--root")
            .arg(&board_root),
    );
    let pidfile = board_root.join("var/lib/dla-edge/dla-edge.pid");
    if let Ok(pid) = std::fs::read_to_string(&pidfile) {
        // SAFETY: kill(2) on the pid the installer started.
        unsafe { libc::kill(pid.trim().parse().unwrap_or(0), libc::SIGTERM) };
    }
    assert!(
        printed.contains("board: install.sh: installed"),
        "{printed}"
    );
    assert!(
        printed.contains("running: ") && printed.contains(" FPS"),
        "{printed}"
    );
    assert!(board_root.join("usr/bin/dla-edge").is_file());
}

#[test]
fn flash_dry_run_prints_the_steps() {
    let printed = run_ok(
        dla_tools()
            .args([
                "flash",
                "--board",
                "rpi5",
                "--host",
                "pi@10.0.0.7",
                "--dry-run",
            ])
            .current_dir(root()),
    );
    for step in [
        "bundle: dla-tools bundle --board rpi5",
        "check the board: ssh -p 22",
        "pi@10.0.0.7 'uname -m'",
        "copy: scp -P 22",
        "install: ssh",
        "install.sh",
        "tunnel: ssh -p 22",
        "check: GET http://127.0.0.1:",
    ] {
        assert!(printed.contains(step), "missing {step:?} in:\n{printed}");
    }
}

/// A folder holding only `cargo` and `rustc` (links to the real ones), for a
/// PATH on which nothing else a cross build needs can be found.
fn path_with_only_rust(dir: &Path) -> std::ffi::OsString {
    for tool in ["cargo", "rustc"] {
        let real = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let real = PathBuf::from(String::from_utf8_lossy(&real.stdout).trim());
        std::os::unix::fs::symlink(&real, dir.join(tool)).unwrap();
    }
    dir.as_os_str().to_owned()
}

#[test]
fn bundle_names_every_missing_prerequisite_before_building() {
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let path = path_with_only_rust(&bin);
    let bundle = |target: &str| {
        let out = dla_tools()
            .args(["bundle", "--board", "rpi4", "--target", target, "--out"])
            .arg(work.path().join("dist"))
            .env("PATH", &path)
            .env("LIBCLANG_PATH", work.path())
            .current_dir(root())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{err}");
        assert!(
            !err.contains("panicked") && !err.contains("Compiling"),
            "{err}"
        );
        assert!(!work.path().join("dist").exists(), "nothing is written");
        err
    };
    // No aarch64 linker on PATH and a libclang folder without libclang: one
    // line each, both at once, before anything is built.
    let err = bundle("aarch64-unknown-linux-gnu");
    for needle in [
        "cannot build dla-edge for aarch64-unknown-linux-gnu; this machine lacks:",
        "\n  - a linker for aarch64-unknown-linux-gnu: `apt install gcc-aarch64-linux-gnu libc6-dev-arm64-cross`",
        "\n  - libclang (LIBCLANG_PATH=",
        "has none), which bindgen needs for camera support (the v4l feature): `apt install libclang-dev`",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
    }
    // A Rust target that is not installed.
    let err = bundle("aarch64-unknown-linux-musl");
    assert!(
        err.contains("\n  - the Rust standard library for aarch64-unknown-linux-musl: `rustup target add aarch64-unknown-linux-musl`"),
        "{err}"
    );
}
