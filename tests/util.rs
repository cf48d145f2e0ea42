//! Harness for the end-to-end tests: find the built binaries, run them in a
//! temporary directory, and reach the Python reference (ONNX Runtime).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// Path of a workspace binary built next to this test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps/<test>");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is not built: run `cargo test --workspace` (or `cargo build --workspace`) first",
        path.display()
    );
    path
}

/// Runs a binary with arguments and returns its output; panics with both
/// streams if it fails.
pub fn run_ok(name: &str, args: &[&str]) -> Output {
    let out = Command::new(bin(name)).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The Python that has onnxruntime: `$DLA_PYTHON`, else the `.venv` that
/// `.ci/run` creates at the workspace root.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("DLA_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = root().join(".venv/bin/python");
    assert!(
        venv.is_file(),
        "no Python with onnxruntime: run .ci/run once (it creates .venv) or set DLA_PYTHON \
         to a python that has onnxruntime, onnx, numpy and pillow"
    );
    venv
}

/// Path as &str for argument lists (test paths are always UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// The libonnxruntime the ONNX Runtime backend tests load: `$ORT_DYLIB_PATH`
/// (`.ci/run` points it into `.venv`), else the one in the onnxruntime wheel of
/// [`python`].
pub fn ort_library() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let out = Command::new(python())
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'))",
        ])
        .output()
        .expect("run python to locate onnxruntime");
    assert!(
        out.status.success(),
        "python has no onnxruntime: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A directory: the backend picks the libonnxruntime.so* in it.
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Runs a binary with `ORT_DYLIB_PATH` set to [`ort_library`]; returns the output
/// whether it succeeded or not.
pub fn run_with_ort(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name))
        .args(args)
        .env("ORT_DYLIB_PATH", ort_library())
        .output()
        .expect("spawn")
}

/// What ONNX Runtime makes of the input dla-edge saw, against the logits
/// dla-edge wrote for it (`segment --save-logits`).
#[derive(Debug, Clone, Copy)]
pub struct Reference {
    /// Fraction of pixels whose argmax class is the same.
    pub agreement: f64,
    /// Largest absolute difference between the two logits tensors.
    pub max_abs_diff: f64,
}

/// Runs `tests/ort_reference.py`: ONNX Runtime on `image` (already at the
/// model's input size), prepared as `model`'s card (or its defaults) says,
/// compared with `logits`. Panics with the script's words if it fails.
pub fn ort_reference(model: &Path, image: &Path, logits: &Path) -> Reference {
    let res = Command::new(python())
        .arg(root().join("tests/ort_reference.py"))
        .args([
            "--model",
            s(model),
            "--image",
            s(image),
            "--logits",
            s(logits),
        ])
        .output()
        .expect("run the ONNX Runtime reference");
    assert!(
        res.status.success(),
        "reference failed for {}: {}",
        image.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    Reference {
        agreement: report["argmax_agreement"].as_f64().unwrap(),
        max_abs_diff: report["max_abs_diff"].as_f64().unwrap(),
    }
}

/// The first `count` sample street images (`models/samples`) resized to
/// `width`x`height` into `dir/small`, as PNGs: inputs at a model's size, so
/// the reference sees exactly the pixels dla-edge does.
pub fn samples_at(dir: &Path, count: usize, (width, height): (u32, u32)) -> PathBuf {
    let small = dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    for i in 0..count {
        let image = image::open(root().join(format!("models/samples/street-{i}.jpg"))).unwrap();
        let image = image.resize_exact(width, height, image::imageops::FilterType::Triangle);
        image
            .to_rgb8()
            .save(small.join(format!("street-{i}.png")))
            .unwrap();
    }
    small
}

/// A loopback port nobody listens on right now (for servers a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `done` every 50 ms; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: std::time::Duration, mut done: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !done() {
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
