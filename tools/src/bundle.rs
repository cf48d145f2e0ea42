//! `dla-tools bundle`: builds `dla-edge` for a board and lays out everything
//! the board needs (binary, models, config, systemd unit, install script) as
//! a folder, a `.tar.gz` and a `.deb`.
//!
//! Cross builds use the system's `aarch64-linux-gnu-gcc` as linker, or
//! `cargo zigbuild` when a board's OS has an older glibc than this machine
//! (JetPack 4 and 5). What the bundle holds is listed with SHA-256 sums in
//! `SHA256SUMS`, which `install.sh` checks before it installs anything.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use clap::{Args as ClapArgs, ValueEnum};
use sha2::{Digest, Sha256};

/// Boards with a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Board {
    /// Raspberry Pi 4, Raspberry Pi OS bookworm (64-bit).
    Rpi4,
    /// Raspberry Pi 5, Raspberry Pi OS bookworm (64-bit).
    Rpi5,
    /// Jetson Orin Nano, JetPack 6 (TensorRT through ONNX Runtime).
    JetsonOrinNano,
    /// Jetson Nano, JetPack 4.6 (CPU, int8).
    JetsonNano,
}

/// What a board gets.
pub struct Profile {
    /// Name used in files (`rpi4`, ...), as in `firmware/boards/NAME.toml`.
    pub name: &'static str,
    /// Rust target of the board's OS.
    pub target: &'static str,
    /// Oldest glibc the board's OS has, when older than this machine's
    /// (then the build goes through cargo-zigbuild).
    pub glibc: Option<&'static str>,
    /// Cargo features of dla-firmware.
    pub features: &'static [&'static str],
    /// Model files (from models/) to ship next to the built-in model.
    pub models: &'static [&'static str],
}

impl Board {
    /// The board's profile.
    pub fn profile(self) -> Profile {
        const AARCH64: &str = "aarch64-unknown-linux-gnu";
        match self {
            Board::Rpi4 | Board::Rpi5 => Profile {
                name: if self == Board::Rpi4 { "rpi4" } else { "rpi5" },
                target: AARCH64,
                glibc: None,
                features: &["gpio", "v4l"],
                models: &["dla-tiny-seg-int8.onnx"],
            },
            Board::JetsonOrinNano => Profile {
                name: "jetson-orin-nano",
                target: AARCH64,
                glibc: None,
                features: &["gpio", "v4l", "ort"],
                models: &[],
            },
            Board::JetsonNano => Profile {
                name: "jetson-nano",
                target: AARCH64,
                glibc: Some("2.27"),
                features: &["gpio", "v4l"],
                models: &["dla-tiny-seg-int8.onnx"],
            },
        }
    }
}

/// Arguments of `dla-tools bundle`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "The bundle folder, OUT/dla-edge-BOARD-VERSION-ARCH/, holds:\n  \
    bin/dla-edge  models/  config.toml  dla-edge.service  install.sh  SHA256SUMS  BUNDLE.json\n\
and next to it a .tar.gz of that folder and a .deb (when dpkg-deb exists).\n\n\
Examples:\n  \
    dla-tools bundle --board rpi5 --out dist\n  \
    dla-tools bundle --board rpi4 --config my-rules.toml --model my-model.onnx --out dist\n  \
    dla-tools bundle --board rpi4 --target host --out dist   # for this machine (try it locally)"
)]
pub struct Args {
    /// Board profile: sets target, features, models and the default config.
    #[arg(long, value_enum)]
    board: Board,
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
    /// Configuration to install; default: firmware/boards/BOARD.toml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Extra model files (with their .card.json if they have one) to ship.
    #[arg(long = "model", value_name = "ONNX")]
    models: Vec<PathBuf>,
    /// Rust target to build for instead of the board's; `host` for this machine.
    #[arg(long, value_name = "TRIPLE")]
    target: Option<String>,
    /// Use this dla-edge binary instead of building one.
    #[arg(long, value_name = "FILE")]
    binary: Option<PathBuf>,
    /// Build without optimisation (quick; for trying the bundle, not for boards).
    #[arg(long)]
    debug: bool,
    /// The dla-edge source tree; default: found from the current folder upwards.
    #[arg(long, value_name = "DIR")]
    source: Option<PathBuf>,
}

/// Finds the workspace that holds `firmware/`, from `start` upwards.
fn find_source(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|d| d.join("firmware/Cargo.toml").is_file() && d.join("Cargo.toml").is_file())
        .map(Path::to_path_buf)
}

fn host_triple() -> anyhow::Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV (is Rust installed?)")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV printed no host triple")
}

/// Debian's name for a target's architecture.
fn deb_arch(target: &str) -> &'static str {
    match target.split('-').next() {
        Some("aarch64") => "arm64",
        Some("x86_64") => "amd64",
        Some("armv7") | Some("arm") => "armhf",
        Some("riscv64gc") => "riscv64",
        _ => "all",
    }
}

fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the standard library for `target` is installed.
fn target_installed(target: &str) -> bool {
    Command::new("rustc")
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|dir| dir.is_dir())
}

/// Whether `name` is a libclang clang-sys can load: `libclang.so*` or
/// `libclang-17.so*`, not `libclang-cpp` nor the `libclang_rt` runtimes.
fn is_libclang(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("libclang") else {
        return false;
    };
    rest.starts_with(".so")
        || rest
            .strip_prefix('-')
            .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()) && v.contains(".so"))
}

/// Whether libclang (for bindgen) is installed where clang-sys looks:
/// `$LIBCLANG_PATH` when set, else the system's library folders.
fn have_libclang() -> bool {
    let found_in = |dir: &Path| {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| is_libclang(&e.file_name().to_string_lossy()))
        })
    };
    if let Some(dir) = std::env::var_os("LIBCLANG_PATH") {
        return found_in(Path::new(&dir));
    }
    let roots = ["/usr/lib", "/usr/lib64", "/usr/local/lib"];
    roots.iter().any(|root| {
        let root = Path::new(root);
        found_in(root)
            || std::fs::read_dir(root).is_ok_and(|entries| {
                entries.flatten().any(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name.starts_with("llvm-") && found_in(&e.path().join("lib")))
                        || (name.ends_with("-linux-gnu") && found_in(&e.path()))
                })
            })
    })
}

/// Whether zig, which cargo-zigbuild links with, is on PATH or in Python.
fn have_zig() -> bool {
    have("zig", "version")
        || Command::new("python3")
            .args(["-c", "import ziglang"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Everything the build of dla-edge for `target` needs and this machine
/// lacks, one line each with how to install it: checked before building, so
/// the user learns of all of them at once, not one per failed build.
fn missing_for_build(
    target: &str,
    host: &str,
    glibc: Option<&str>,
    features: &[&str],
) -> Vec<String> {
    let cross = target != host;
    let mut missing = Vec::new();
    if cross && !target_installed(target) {
        missing.push(format!(
            "the Rust standard library for {target}: `rustup target add {target}` (or build \
             on the board and pass --binary)"
        ));
    }
    match glibc {
        Some(v) => {
            if !have("cargo-zigbuild", "--version") {
                missing.push(format!(
                    "cargo-zigbuild, to link against this board's glibc {v}: `pip install \
                     cargo-zigbuild` (or pass --target {target} to use this machine's glibc)"
                ));
            }
            if !have_zig() {
                missing.push("zig, which cargo-zigbuild links with: `pip install ziglang`".into());
            }
        }
        None if cross && target == "aarch64-unknown-linux-gnu" => {
            if !have("aarch64-linux-gnu-gcc", "--version") {
                missing.push(format!(
                    "a linker for {target}: `apt install gcc-aarch64-linux-gnu libc6-dev-arm64-cross`"
                ));
            }
            // OpenH264 (RTSP cameras' H.264 decoder) is C++, built from source.
            if !have("aarch64-linux-gnu-g++", "--version") {
                missing.push(format!(
                    "a C++ compiler for {target}, for the H.264 decoder of RTSP cameras: \
                     `apt install g++-aarch64-linux-gnu`"
                ));
            }
        }
        None => {}
    }
    if features.contains(&"v4l") {
        if !have_libclang() {
            let place = std::env::var("LIBCLANG_PATH")
                .map(|p| format!(" (LIBCLANG_PATH={p} has none)"))
                .unwrap_or_default();
            missing.push(format!(
                "libclang{place}, which bindgen needs for camera support (the v4l feature): \
                 `apt install libclang-dev`"
            ));
        }
        let headers = Path::new("/usr")
            .join(gnu_triple(target))
            .join("include/linux/videodev2.h");
        if cross && glibc.is_none() && target == "aarch64-unknown-linux-gnu" && !headers.is_file() {
            missing.push(format!(
                "the V4L2 headers for {target} ({}): `apt install linux-libc-dev-arm64-cross`",
                headers.display()
            ));
        }
    }
    missing
}

/// `aarch64-unknown-linux-gnu` -> `aarch64-linux-gnu`: the GNU triple
/// Debian's cross toolchains and sysroots are named by.
fn gnu_triple(target: &str) -> String {
    target.replacen("-unknown-", "-", 1)
}

/// Builds dla-edge and returns the path cargo reports for it.
fn build(
    source: &Path,
    target: &str,
    host: &str,
    glibc: Option<&str>,
    features: &[&str],
    debug: bool,
) -> anyhow::Result<PathBuf> {
    let cross = target != host;
    let missing = missing_for_build(target, host, glibc, features);
    if !missing.is_empty() {
        bail!(
            "cannot build dla-edge for {target}; this machine lacks:\n  - {}",
            missing.join("\n  - ")
        );
    }
    let mut cmd = Command::new("cargo");
    if features.contains(&"v4l") {
        // bindgen parses the kernel's V4L2 headers with clang: for a cross
        // build, those of the target's sysroot (Debian's cross packages put
        // them there), not this machine's.
        let sysroot = format!("/usr/{}", gnu_triple(target));
        let var = format!("BINDGEN_EXTRA_CLANG_ARGS_{}", target.replace('-', "_"));
        if cross && std::env::var_os(&var).is_none() && Path::new(&sysroot).join("include").is_dir()
        {
            cmd.env(var, format!("--sysroot={sysroot}"));
        }
    }
    match glibc {
        Some(v) => {
            cmd.arg("zigbuild")
                .args(["--target", &format!("{target}.{v}")]);
        }
        None => {
            cmd.arg("build");
            if cross {
                cmd.args(["--target", target]);
                if target.starts_with("aarch64-") {
                    cmd.env(
                        "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
                        "aarch64-linux-gnu-gcc",
                    )
                    .env("CC_aarch64_unknown_linux_gnu", "aarch64-linux-gnu-gcc")
                    .env("CXX_aarch64_unknown_linux_gnu", "aarch64-linux-gnu-g++");
                }
            }
        }
    }
    // The whole workspace's feature set, as `cargo build` in the checkout
    // uses: building dla-firmware alone would unify tract's features
    // differently and compile it all again.
    cmd.args([
        "--workspace",
        "--bin",
        "dla-edge",
        "--locked",
        "--message-format=json-render-diagnostics",
    ])
    .current_dir(source);
    if !debug {
        cmd.arg("--release");
    }
    if !features.is_empty() {
        let features: Vec<String> = features
            .iter()
            .map(|f| format!("dla-firmware/{f}"))
            .collect();
        cmd.args(["--features", &features.join(",")]);
    }
    log::info!("building: {cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo")?;
    let mut executable = None;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.context("reading cargo's output")?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "dla-edge" {
            if let Some(exe) = msg["executable"].as_str() {
                executable = Some(PathBuf::from(exe));
            }
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("building dla-edge for {target} failed ({status}); cargo's errors are above");
    }
    executable.context("cargo built no dla-edge executable")
}

fn sha256(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| path.display().to_string())?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| path.display().to_string())
}

/// Files of `dir`, relative, sorted (for SHA256SUMS and the archives).
fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| d.display().to_string())? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir)?.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

const INSTALL_SH: &str = include_str!("bundle/install.sh");

/// Runs `dla-tools bundle`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    bundle(args).map(|_| ())
}

/// A release bundle for `board` with its defaults into `out` (for `flash`);
/// returns the bundle folder.
pub fn make(board: Board, out: &Path) -> anyhow::Result<PathBuf> {
    bundle(&Args {
        board,
        out: out.to_path_buf(),
        config: None,
        models: Vec::new(),
        target: None,
        binary: None,
        debug: false,
        source: None,
    })
}

fn bundle(args: &Args) -> anyhow::Result<PathBuf> {
    let profile = args.board.profile();
    let cwd = std::env::current_dir().context("current folder")?;
    let source = match &args.source {
        Some(s) => s.clone(),
        None => find_source(&cwd).with_context(|| {
            format!(
                "{} is not inside a dla-edge source tree (with firmware/): run from the \
                 checkout or pass --source DIR",
                cwd.display()
            )
        })?,
    };
    let host = host_triple()?;
    let target = match args.target.as_deref() {
        None => profile.target.to_string(),
        Some("host") => host.clone(),
        Some(t) => t.to_string(),
    };
    // A target given by hand is built against this machine's glibc.
    let glibc = if args.target.is_none() && target != host {
        profile.glibc
    } else {
        None
    };
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| source.join(format!("firmware/boards/{}.toml", profile.name)));
    // Refuse a broken config now, not on the board.
    let config_text = std::fs::read_to_string(&config)
        .with_context(|| format!("--config {}: cannot read", config.display()))?;
    toml::from_str::<toml::Table>(&config_text)
        .map_err(|e| anyhow::anyhow!("--config {}: {e}", config.display()))?;

    let binary = match &args.binary {
        Some(b) => {
            if !b.is_file() {
                bail!("--binary {}: no such file", b.display());
            }
            b.clone()
        }
        None => build(&source, &target, &host, glibc, profile.features, args.debug)?,
    };

    let version = env!("CARGO_PKG_VERSION");
    let arch = deb_arch(&target);
    let name = format!("dla-edge-{}-{version}-{arch}", profile.name);
    let dir = args.out.join(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("--out {}", dir.display()))?;

    copy(&binary, &dir.join("bin/dla-edge"))?;
    set_mode(&dir.join("bin/dla-edge"), 0o755)?;
    let mut models: Vec<PathBuf> = profile
        .models
        .iter()
        .map(|m| source.join("models").join(m))
        .collect();
    models.extend(args.models.iter().cloned());
    for model in &models {
        let file = model
            .file_name()
            .with_context(|| format!("{}: not a file", model.display()))?;
        copy(model, &dir.join("models").join(file))?;
        let card = PathBuf::from(format!("{}.card.json", model.display()));
        if card.is_file() {
            copy(
                &card,
                &dir.join("models")
                    .join(card.file_name().expect("has a name")),
            )?;
        }
    }
    std::fs::write(dir.join("config.toml"), &config_text)?;
    copy(
        &source.join("firmware/systemd/dla-edge.service"),
        &dir.join("dla-edge.service"),
    )?;
    std::fs::write(dir.join("install.sh"), INSTALL_SH)?;
    set_mode(&dir.join("install.sh"), 0o755)?;
    let manifest = serde_json::json!({
        "board": profile.name,
        "version": version,
        "target": target,
        "glibc": glibc,
        // A given binary's features are whatever it was built with.
        "features": if args.binary.is_some() { None } else { Some(profile.features) },
        "profile": if args.binary.is_some() { "given" } else if args.debug { "debug" } else { "release" },
        "models": models.iter().filter_map(|m| m.file_name()).map(|f| f.to_string_lossy()).collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.join("BUNDLE.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    let mut sums = String::new();
    for f in files_under(&dir)? {
        sums += &format!("{}  {}\n", sha256(&dir.join(&f))?, f.display());
    }
    std::fs::write(dir.join("SHA256SUMS"), sums)?;

    let tarball = args.out.join(format!("{name}.tar.gz"));
    write_tarball(&dir, &name, &tarball)?;
    println!("bundle: {}", dir.display());
    println!("tarball: {}", tarball.display());
    match write_deb(&dir, profile.name, version, arch, &args.out)? {
        Some(deb) => println!("deb: {}", deb.display()),
        None => println!("deb: skipped (no dpkg-deb on this machine: apt install dpkg)"),
    }
    Ok(dir)
}

fn write_tarball(dir: &Path, name: &str, tarball: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::create(tarball).with_context(|| tarball.display().to_string())?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.append_dir_all(name, dir)
        .with_context(|| format!("archiving {}", dir.display()))?;
    tar.into_inner()?.finish()?.flush()?;
    Ok(())
}

/// Lays the bundle out as a Debian package and builds it with dpkg-deb.
fn write_deb(
    dir: &Path,
    board: &str,
    version: &str,
    arch: &str,
    out: &Path,
) -> anyhow::Result<Option<PathBuf>> {
    if !have("dpkg-deb", "--version") {
        return Ok(None);
    }
    let stage = out.join(format!(".deb-{board}"));
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    copy(&dir.join("bin/dla-edge"), &stage.join("usr/bin/dla-edge"))?;
    set_mode(&stage.join("usr/bin/dla-edge"), 0o755)?;
    if dir.join("models").is_dir() {
        for f in files_under(&dir.join("models"))? {
            copy(
                &dir.join("models").join(&f),
                &stage.join("usr/share/dla-edge/models").join(&f),
            )?;
        }
    }
    copy(
        &dir.join("config.toml"),
        &stage.join("etc/dla-edge/config.toml"),
    )?;
    copy(
        &dir.join("dla-edge.service"),
        &stage.join("lib/systemd/system/dla-edge.service"),
    )?;
    let debian = stage.join("DEBIAN");
    std::fs::create_dir_all(&debian)?;
    std::fs::write(
        debian.join("control"),
        format!(
            "Package: dla-edge\nVersion: {version}\nArchitecture: {arch}\n\
             Maintainer: dla-edge <dev@dla-edge.invalid>\nSection: video\nPriority: optional\n\
             Description: live semantic segmentation on edge boards ({board})\n \
             dla-edge runs Deep Layer Aggregation segmentation models on a camera stream,\n \
             serves a live web viewer and drives GPIO pins from rules.\n"
        ),
    )?;
    std::fs::write(debian.join("conffiles"), "/etc/dla-edge/config.toml\n")?;
    let postinst = "#!/bin/sh\nset -e\n\
        getent group gpio >/dev/null || groupadd --system gpio\n\
        getent passwd dla-edge >/dev/null || useradd --system --no-create-home \
        --home-dir /var/lib/dla-edge --shell /usr/sbin/nologin --user-group dla-edge\n\
        usermod -a -G video,gpio dla-edge || true\n\
        if [ -d /run/systemd/system ]; then systemctl daemon-reload; \
        systemctl enable --now dla-edge.service || true; fi\n";
    let prerm = "#!/bin/sh\nset -e\n\
        if [ -d /run/systemd/system ]; then systemctl disable --now dla-edge.service || true; fi\n";
    for (name, text) in [("postinst", postinst), ("prerm", prerm)] {
        std::fs::write(debian.join(name), text)?;
        set_mode(&debian.join(name), 0o755)?;
    }
    let deb = out.join(format!("dla-edge_{version}_{arch}.deb"));
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb)
        .stdout(Stdio::null())
        .status()
        .context("running dpkg-deb")?;
    std::fs::remove_dir_all(&stage)?;
    if !status.success() {
        bail!("dpkg-deb failed ({status})");
    }
    Ok(Some(deb))
}

#[cfg(test)]
mod tests {
    use super::is_libclang;

    #[test]
    fn only_a_loadable_libclang_counts() {
        for name in [
            "libclang.so",
            "libclang.so.1",
            "libclang-14.so.1",
            "libclang-17.so",
        ] {
            assert!(is_libclang(name), "{name}");
        }
        // clang's C++ library and runtimes are installed without libclang.
        for name in [
            "libclang-cpp.so.14",
            "libclang_rt.asan.a",
            "libclangBasic.a",
            "libc.so",
        ] {
            assert!(!is_libclang(name), "{name}");
        }
    }
}
