//! End-to-end: the shipped model through the real binaries, checked against
//! ONNX Runtime and against the synthetic ground truth.

use dla_e2e::{ort_reference, python, root, run_ok, s, Reference};

/// Renders `count` scenes of `size` (WxH) drawn from `seed`.
fn synth(dir: &std::path::Path, count: &str, seed: &str, size: &str) {
    let args = [
        "synth",
        "--out",
        s(dir),
        "--count",
        count,
        "--seed",
        seed,
        "--size",
        size,
    ];
    run_ok("dla-tools", &args);
}

#[test]
fn shipped_model_matches_onnx_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = tmp.path().join("out");
    synth(&data, "3", "4242", "512x256");
    let model = root().join("models/dla-tiny-seg.onnx");
    run_ok(
        "dla-edge",
        &[
            "segment",
            "--model",
            s(&model),
            "--input",
            s(&data.join("images")),
            "--out",
            s(&out),
            "--visualize",
            "labels",
            "--save-logits",
        ],
    );
    for i in 0..3 {
        let image = data.join(format!("images/{i:06}.png"));
        let logits = out.join(format!("{i:06}.logits.npy"));
        let Reference {
            agreement,
            max_abs_diff: max_diff,
        } = ort_reference(&model, &image, &logits);
        println!("image {i}: argmax agreement {agreement:.6}, max |logit diff| {max_diff:.2e}");
        assert!(
            agreement >= 0.9999,
            "image {i}: argmax agreement {agreement} < 99.99 %"
        );
        assert!(
            max_diff <= 1e-3,
            "image {i}: max |logit diff| {max_diff} > 1e-3"
        );
    }
}

#[test]
fn shipped_model_segments_held_out_scenes_correctly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = tmp.path().join("out");
    synth(&data, "4", "777", "512x256");
    run_ok(
        "dla-edge",
        &[
            "segment",
            "--input",
            s(&data.join("images")),
            "--out",
            s(&out),
            "--visualize",
            "labels",
        ],
    );
    let (mut right, mut counted) = (0u64, 0u64);
    for i in 0..4 {
        let truth = image::open(data.join(format!("labels/{i:06}.png")))
            .unwrap()
            .into_luma8();
        let pred = image::open(out.join(format!("{i:06}.labels.png")))
            .unwrap()
            .into_luma8();
        for (t, p) in truth.pixels().zip(pred.pixels()) {
            if t.0[0] != 255 {
                counted += 1;
                right += u64::from(t.0[0] == p.0[0]);
            }
        }
    }
    let accuracy = right as f64 / counted as f64;
    println!("pixel accuracy on 4 held-out scenes: {accuracy:.4}");
    assert!(
        accuracy > 0.9,
        "the shipped model should label synthetic scenes well, got {accuracy}"
    );
}

#[test]
fn synth_is_deterministic_and_documents_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for dir in [&a, &b] {
        synth(dir, "2", "5", "128x64");
    }
    for sub in ["images/000001.png", "labels/000001.png"] {
        assert_eq!(
            std::fs::read(a.join(sub)).unwrap(),
            std::fs::read(b.join(sub)).unwrap(),
            "{sub}"
        );
    }
    let recipe: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(recipe["seed"], 5);
    assert_eq!(recipe["width"], 128);
    assert_eq!(recipe["classes"].as_array().unwrap().len(), 19);
    let labels = image::open(a.join("labels/000000.png"))
        .unwrap()
        .into_luma8();
    assert!(labels.pixels().all(|p| p.0[0] < 19 || p.0[0] == 255));
}

#[test]
fn inspect_reports_the_shipped_model() {
    let model = root().join("models/dla-tiny-seg.onnx");
    let out = run_ok("dla-tools", &["inspect", s(&model)]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("1x3x256x512"), "{text}");
    assert!(text.contains("3.80 GMAC"), "{text}");
    assert!(text.contains("ConvTranspose 7"), "{text}");
    assert!(text.contains("person"), "{text}");
}

/// Quantises the shipped DLA-tiny for `target` with the report's held-out
/// evaluation (synthetic scenes of the held-out seed 2) and returns the report.
fn quantize(
    out: &std::path::Path,
    target: &str,
    eval: &str,
    sqnr_images: &str,
) -> serde_json::Value {
    let report = out.with_extension("json");
    let model = root().join("models/dla-tiny-seg.onnx");
    run_ok(
        "dla-tools",
        &[
            "quantize",
            s(&model),
            s(out),
            "--target",
            target,
            "--calib",
            "synth:16",
            "--eval",
            eval,
            "--sqnr-images",
            sqnr_images,
            "--report",
            s(&report),
        ],
    );
    serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap()
}

#[test]
fn int8_for_tract_keeps_accuracy_and_runs_in_dla_edge() {
    let tmp = tempfile::tempdir().unwrap();
    let int8 = tmp.path().join("int8.onnx");
    // 8 held-out scenes keep this test short (the held-out report runs the
    // int8 model on our own int8 operators, runtime/src/ops).
    let report = quantize(&int8, "tract", "synth:8:2", "2");
    assert_eq!(report["layers"].as_array().unwrap().len(), 58);
    let held_out = &report["held_out"];
    let agreement = held_out["argmax_agreement"].as_f64().unwrap();
    let drop = held_out["miou_drop_points"].as_f64().unwrap();
    println!("tract int8: agreement {agreement:.5}, mIoU drop {drop:.3} points");
    assert!(agreement >= 0.995, "argmax agreement with fp32 {agreement}");
    assert!(drop <= 0.3, "mIoU drop {drop} points");
    let (before, after) = (
        report["bytes_before"].as_f64().unwrap(),
        report["bytes_after"].as_f64().unwrap(),
    );
    assert!(before / after > 3.4, "{before} -> {after} bytes");
    // The integer form: QLinearConv only, no com.microsoft ops, no float Conv.
    let inspect = run_ok("dla-tools", &["inspect", s(&int8)]);
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(text.contains("QLinearConv 58"), "{text}");
    assert!(!text.contains(" Conv "), "{text}");
    // The runtime segments with it like with any model.
    let out = tmp.path().join("out");
    run_ok(
        "dla-edge",
        &[
            "segment",
            "--model",
            s(&int8),
            "--input",
            s(&root().join("models/samples/street-0.jpg")),
            "--out",
            s(&out),
            "--visualize",
            "labels",
        ],
    );
    assert!(out.join("street-0.labels.png").is_file());
}

#[test]
fn int8_for_onnx_runtime_agrees_in_onnx_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let qdq = tmp.path().join("qdq.onnx");
    let report = quantize(&qdq, "ort", "none", "0");
    assert!(report["held_out"].is_null());
    let data = tmp.path().join("val");
    synth(&data, "8", "2", "512x256");
    let out = std::process::Command::new(python())
        .arg(root().join("tests/ort_quant_eval.py"))
        .arg("--fp32")
        .arg(root().join("models/dla-tiny-seg.onnx"))
        .arg("--model")
        .arg(&qdq)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let judged: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &judged["models"][s(&qdq)];
    let agreement = m["argmax_agreement"].as_f64().unwrap();
    println!("onnxruntime on our QDQ model: {judged}");
    assert!(
        agreement >= 0.995,
        "argmax agreement in onnxruntime {agreement}"
    );
    assert!(m["miou_drop_points"].as_f64().unwrap() <= 0.3, "{m}");
}
