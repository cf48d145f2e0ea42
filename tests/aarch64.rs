//! The aarch64 build, cross-compiled here and run under qemu on one CPU model
//! per kernel path: `cortex-a72` (Raspberry Pi 4: NEON, no dot product, so
//! `smull`/`smlal`), `cortex-a76` (Pi 5, Jetson Orin class: `sdot`) and `max`
//! (everything qemu emulates). On each, the shipped int8 model labels the
//! sample images exactly as this machine's build does, and the fp32 model
//! agrees with ONNX Runtime as on x86.
//!
//! Needs the Rust aarch64 target, `aarch64-linux-gnu-gcc` and
//! `qemu-aarch64-static`; skipped without them unless `DLA_REQUIRE_AARCH64`
//! is set (`.ci/run` sets it where it could install the target).

use std::path::{Path, PathBuf};
use std::process::Command;

use dla_e2e::{ort_reference, root, run_ok, s, samples_at, Reference};

const TARGET: &str = "aarch64-unknown-linux-gnu";
const CPUS: [&str; 3] = ["cortex-a72", "cortex-a76", "max"];

/// Why an aarch64 build cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    let libdir = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if !libdir.is_some_and(|d| d.is_dir()) {
        return Some(format!(
            "the Rust target is missing (rustup target add {TARGET})"
        ));
    }
    for (tool, package) in [
        ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
        ("qemu-aarch64-static", "qemu-user-static"),
    ] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is missing (apt install {package})"));
        }
    }
    None
}

/// Cross-builds dla-edge for a Raspberry Pi as a user does, with
/// `dla-tools bundle --board rpi4 --debug` (the same build as the bundle
/// test's, so cargo builds it once), and returns the bundle's executable.
fn cross_build(work: &Path) -> PathBuf {
    let out = work.join("dist");
    run_ok(
        "dla-tools",
        &["bundle", "--board", "rpi4", "--debug", "--out", s(&out)],
    );
    let bundle = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .expect("bundle wrote a folder");
    bundle.join("bin/dla-edge")
}

/// `dla-edge segment` of the aarch64 build under qemu on `cpu`.
fn segment_on(exe: &Path, cpu: &str, args: &[&str]) -> String {
    let out = Command::new("qemu-aarch64-static")
        .args(["-cpu", cpu, "-L", "/usr/aarch64-linux-gnu"])
        .arg(exe)
        .arg("segment")
        .args(args)
        .output()
        .expect("run qemu-aarch64-static");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "segment on {cpu} failed:\n{stderr}");
    format!("{}{stderr}", String::from_utf8_lossy(&out.stdout))
}

fn labels(path: &Path) -> image::GrayImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_luma8()
}

/// The four sample images (`models/samples/street-N.jpg`), by name.
fn sample_names() -> Vec<String> {
    (0..4).map(|i| format!("street-{i}")).collect()
}

/// The shipped int8 model labels the samples on `cpu` as in `x86` (the
/// labels this machine's build wrote), pixel for pixel.
fn int8_labels_match(exe: &Path, cpu: &str, x86: &Path, work: &Path) {
    let model = root().join("models/dla-tiny-seg-int8.onnx");
    let out = work.join(format!("int8-{cpu}"));
    let samples = root().join("models/samples");
    let args = ["--visualize", "labels", "--model", s(&model)];
    let printed = segment_on(
        exe,
        cpu,
        &[&args[..], &["--input", s(&samples), "--out", s(&out)]].concat(),
    );
    for name in sample_names() {
        let file = format!("{name}.labels.png");
        let (arm, want) = (labels(&out.join(&file)), labels(&x86.join(&file)));
        let differ = arm
            .pixels()
            .zip(want.pixels())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differ, 0,
            "{cpu}, {name}: {differ} labels differ\n{printed}"
        );
    }
}

/// The fp32 model's logits on `cpu` agree with ONNX Runtime on the images
/// in `small` (at the model's input size, so the reference needs no resize).
fn fp32_agrees_with_onnx_runtime(exe: &Path, cpu: &str, small: &Path, work: &Path) {
    let model = root().join("models/dla-tiny-seg.onnx");
    let out = work.join(format!("fp32-{cpu}"));
    let args = [
        "--visualize",
        "labels",
        "--save-logits",
        "--model",
        s(&model),
    ];
    segment_on(
        exe,
        cpu,
        &[&args[..], &["--input", s(small), "--out", s(&out)]].concat(),
    );
    for entry in std::fs::read_dir(small).unwrap() {
        let image = entry.unwrap().path();
        let name = image.file_stem().unwrap().to_str().unwrap().to_string();
        let Reference {
            agreement,
            max_abs_diff: max_diff,
        } = ort_reference(&model, &image, &out.join(format!("{name}.logits.npy")));
        println!("{cpu}, {name}: argmax agreement {agreement:.6}, max |logit diff| {max_diff:.2e}");
        assert!(agreement >= 0.9999, "{cpu}, {name}: agreement {agreement}");
        assert!(
            max_diff <= 1e-3,
            "{cpu}, {name}: max |logit diff| {max_diff}"
        );
    }
}

#[test]
fn aarch64_kernels_label_like_x86_and_onnx_runtime() {
    if let Some(why) = missing_tools() {
        assert!(
            std::env::var_os("DLA_REQUIRE_AARCH64").is_none(),
            "DLA_REQUIRE_AARCH64 is set but {why}"
        );
        eprintln!("SKIPPED: cannot run an aarch64 build here: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let exe = cross_build(work);
    // This machine's int8 labels of the samples.
    let x86 = work.join("x86");
    let int8 = root().join("models/dla-tiny-seg-int8.onnx");
    let samples = root().join("models/samples");
    run_ok(
        "dla-edge",
        &[
            "segment",
            "--visualize",
            "labels",
            "--model",
            s(&int8),
            "--input",
            s(&samples),
            "--out",
            s(&x86),
        ],
    );
    // Two samples at the model's input size for the ONNX Runtime reference.
    let small = samples_at(work, 2, (512, 256));
    for cpu in CPUS {
        int8_labels_match(&exe, cpu, &x86, work);
        fp32_agrees_with_onnx_runtime(&exe, cpu, &small, work);
    }
}
