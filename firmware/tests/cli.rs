//! `dla-edge` as a user runs it: every bad input gives a clear error that
//! names the file, a non-zero exit, and never a panic.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn dla_edge() -> Command {
    Command::cargo_bin("dla-edge").expect("dla-edge binary is built for tests")
}

/// `dla-edge segment --threads 1 --input INPUT --model MODEL --out OUT`,
/// ready for more flags.
fn segment(input: impl AsRef<Path>, model: impl AsRef<Path>, out: impl AsRef<Path>) -> Command {
    let mut cmd = dla_edge();
    cmd.args(["segment", "--threads", "1", "--input"])
        .arg(input.as_ref())
        .arg("--model")
        .arg(model.as_ref())
        .arg("--out")
        .arg(out.as_ref());
    cmd
}

/// A valid test image of `w` x `h` pixels.
fn write_image(dir: &Path, name: &str, w: u32, h: u32) -> PathBuf {
    let p = dir.join(name);
    let data: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
    image::save_buffer(&p, &data, w, h, image::ExtendedColorType::Rgb8).unwrap();
    p
}

/// Runs `segment` with `model` on a good image and expects a clean failure
/// whose message contains every one of `needles`.
fn assert_model_refused(model: &Path, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let img = write_image(dir.path(), "a.png", 64, 64);
    let mut pred = predicate::str::contains(model.file_name().unwrap().to_str().unwrap()).boxed();
    for n in needles {
        pred = pred.and(predicate::str::contains(*n)).boxed();
    }
    segment(&img, model, dir.path().join("out"))
        .assert()
        .failure()
        .stderr(pred.and(predicate::str::contains("panicked").not()));
}

#[test]
fn help_teaches_the_segment_command() {
    dla_edge()
        .args(["segment", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--visualize").and(predicate::str::contains("Examples")));
}

#[test]
fn segments_with_a_small_model_and_writes_all_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let img = write_image(dir.path(), "scene.png", 96, 80);
    let out = dir.path().join("out");
    segment(&img, fixture("tiny_seg.onnx"), &out)
        .assert()
        .success()
        .stdout(predicate::str::contains("infer").and(predicate::str::contains("pre")));
    for suffix in ["overlay", "mask", "labels"] {
        let written = image::open(out.join(format!("scene.{suffix}.png"))).unwrap();
        assert_eq!(
            (written.width(), written.height()),
            (96, 80),
            "{suffix} keeps the frame size"
        );
    }
    let labels = image::open(out.join("scene.labels.png"))
        .unwrap()
        .into_luma8();
    assert!(
        labels.pixels().all(|p| p.0[0] < 4),
        "class IDs must be below the class count"
    );
}

#[test]
fn missing_model_file() {
    assert_model_refused(&fixture("does-not-exist.onnx"), &["cannot read"]);
}

#[test]
fn empty_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.onnx");
    std::fs::write(&p, b"").unwrap();
    assert_model_refused(&p, &["empty"]);
}

#[test]
fn truncated_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("truncated.onnx");
    let bytes = std::fs::read(fixture("tiny_seg.onnx")).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert_model_refused(&p, &["not a valid ONNX file"]);
}

#[test]
fn non_onnx_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("picture.onnx");
    write_image(dir.path(), "picture.png", 8, 8);
    std::fs::copy(dir.path().join("picture.png"), &p).unwrap();
    assert_model_refused(&p, &["ONNX"]);
}

#[test]
fn model_without_card_runs_with_one_warning_that_says_what_was_assumed() {
    let dir = tempfile::tempdir().unwrap();
    let img = write_image(dir.path(), "a.png", 64, 64);
    let out = segment(&img, fixture("no_card.onnx"), dir.path().join("out"))
        .assert()
        .success()
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "one warning line:\n{stderr}");
    for needle in [
        "no_card.onnx has no model card",
        "input 64x64 (from the graph)",
        "ImageNet mean/std",
        "4 numbered classes",
        "dla-tools card",
    ] {
        assert!(
            warnings[0].contains(needle),
            "{needle:?} missing:\n{stderr}"
        );
    }
    assert!(dir.path().join("out/a.labels.png").is_file());
}

#[test]
fn model_shapes_that_cannot_be_read_are_refused_with_the_reason() {
    assert_model_refused(
        &fixture("argmax_output.onnx"),
        &["class IDs", "final argmax"],
    );
    assert_model_refused(&fixture("nhwc_output.onnx"), &["channels last (NHWC)"]);
    assert_model_refused(&fixture("nhwc_input.onnx"), &["channels last, NHWC"]);
}

#[test]
fn model_input_not_1x3xhxw() {
    assert_model_refused(&fixture("one_channel.onnx"), &["channels is 1, expected 3"]);
    assert_model_refused(&fixture("rank3_input.onnx"), &["rank 3"]);
}

#[test]
fn model_with_unsupported_operator() {
    assert_model_refused(
        &fixture("unsupported_op.onnx"),
        &["unsupported operator FancySegment"],
    );
}

#[test]
fn model_size_not_multiple_of_32() {
    assert_model_refused(&fixture("size_not_multiple.onnx"), &["multiples of 32"]);
}

#[test]
fn model_card_class_count_mismatch() {
    assert_model_refused(
        &fixture("class_mismatch.onnx"),
        &["4 channels", "5 classes"],
    );
}

#[test]
fn undecodable_image_is_named_and_others_still_processed() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    write_image(&images, "good.png", 64, 64);
    std::fs::write(
        images.join("broken.png"),
        b"\x89PNG\r\n\x1a\nthis is not a png",
    )
    .unwrap();
    let out = dir.path().join("out");
    segment(&images, fixture("tiny_seg.onnx"), &out)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("broken.png").and(predicate::str::contains("cannot decode")),
        );
    assert!(
        out.join("good.overlay.png").is_file(),
        "the good image is still segmented"
    );
}

#[test]
fn zero_sized_and_empty_images() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    // A PNG whose header declares a 0x0 image.
    let mut zero = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    zero.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 8, 2, 0, 0, 0, 0, 0, 0, 0]);
    let zero_path = dir.path().join("zero.png");
    std::fs::write(&zero_path, zero).unwrap();
    for (img, needle) in [(&empty, "empty"), (&zero_path, "zero.png")] {
        segment(img, fixture("tiny_seg.onnx"), dir.path().join("out"))
            .assert()
            .failure()
            .stderr(
                predicate::str::contains(needle).and(predicate::str::contains("panicked").not()),
            );
    }
}

#[test]
fn missing_input_and_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    dla_edge()
        .args(["segment", "--input"])
        .arg(dir.path().join("nope.png"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("nope.png").and(predicate::str::contains("no such file")));
    dla_edge()
        .args(["segment", "--input"])
        .arg(dir.path())
        .assert()
        .failure()
        .stderr(predicate::str::contains("no images"));
}

#[test]
fn alpha_outside_range_is_rejected() {
    dla_edge()
        .args(["segment", "--input", "x.png", "--alpha", "1.5"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("outside 0..=1"));
}

#[test]
fn a_model_without_metadata_runs_with_a_sidecar_or_explicit_card() {
    let dir = tempfile::tempdir().unwrap();
    let img = write_image(dir.path(), "a.png", 64, 64);
    let card = r#"{"schema": 1, "name": "exported-elsewhere",
        "input": {"height": 64, "width": 64, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        "classes": [{"id": 0, "name": "a", "color": [255, 0, 0]}, {"id": 1, "name": "b", "color": [0, 255, 0]},
                    {"id": 2, "name": "c", "color": [0, 0, 255]}, {"id": 3, "name": "d", "color": [9, 9, 9]}]}"#;
    // Sidecar next to a copy of the model.
    let model = dir.path().join("plain.onnx");
    std::fs::copy(fixture("no_card.onnx"), &model).unwrap();
    std::fs::write(dir.path().join("plain.onnx.card.json"), card).unwrap();
    segment(&img, &model, dir.path().join("out1"))
        .assert()
        .success()
        .stdout(predicate::str::contains("exported-elsewhere"));
    // Explicit --card for the original, card-less fixture.
    let explicit = dir.path().join("card.json");
    std::fs::write(&explicit, card).unwrap();
    segment(&img, fixture("no_card.onnx"), dir.path().join("out2"))
        .arg("--card")
        .arg(&explicit)
        .assert()
        .success();
    // A malformed card names its file and the JSON problem.
    std::fs::write(&explicit, "{\"schema\": 1,").unwrap();
    segment(&img, fixture("no_card.onnx"), dir.path().join("out3"))
        .arg("--card")
        .arg(&explicit)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("card.json").and(predicate::str::contains("invalid JSON")),
        );
}
