//! `dla-tools prune` on the shipped model, as a user runs it: the pruned
//! model is smaller, loads everywhere, agrees with ONNX Runtime, goes on
//! through `quantize` and runs in `dla-edge`; reconstruction recovers what
//! plain pruning loses.

use std::path::Path;

use dla_e2e::{ort_reference, root, run_ok, s};

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn shipped() -> std::path::PathBuf {
    root().join("models/dla-tiny-seg.onnx")
}

/// Segments `images` with `model` in dla-edge (logits saved) and checks each
/// against ONNX Runtime on the same input.
fn agrees_with_onnx_runtime(model: &Path, images: &Path, out: &Path, count: usize) {
    run_ok(
        "dla-edge",
        &[
            "segment",
            "--model",
            s(model),
            "--input",
            s(images),
            "--out",
            s(out),
            "--visualize",
            "labels",
            "--save-logits",
        ],
    );
    for i in 0..count {
        let agreement = ort_reference(
            model,
            &images.join(format!("{i:06}.png")),
            &out.join(format!("{i:06}.logits.npy")),
        )
        .agreement;
        println!("image {i}: argmax agreement with onnxruntime {agreement:.6}");
        assert!(agreement >= 0.9999, "image {i}: {agreement} < 99.99 %");
    }
}

#[test]
fn pruned_model_is_smaller_agrees_with_onnx_runtime_and_quantizes() {
    let tmp = tempfile::tempdir().unwrap();
    let pruned = tmp.path().join("pruned.onnx");
    let json = tmp.path().join("prune.json");
    run_ok(
        "dla-tools",
        &[
            "prune",
            s(&shipped()),
            s(&pruned),
            "--ratio",
            "0.15",
            "--importance",
            "l1",
            "--eval",
            "none",
            "--bench-runs",
            "0",
            "--report",
            s(&json),
        ],
    );
    let r = report(&json);
    let (before, after) = (
        r["gmacs_before"].as_f64().unwrap(),
        r["gmacs_after"].as_f64().unwrap(),
    );
    println!("GMACs {before:.3} -> {after:.3}");
    assert!((3.7..3.9).contains(&before), "{before}");
    assert!(after < 0.9 * before, "{before} -> {after}");
    assert!(r["params_after"].as_u64() < r["params_before"].as_u64());
    let removed = r["groups_removed"].as_f64().unwrap() / r["groups"].as_f64().unwrap();
    assert!((0.15..0.2).contains(&removed), "{removed}");
    // Widths stay multiples of 8 (or as they were), and the classifier keeps its 19 classes.
    for l in r["layers"].as_array().unwrap() {
        for pair in [&l["inputs"], &l["outputs"]] {
            let (was, now) = (pair[0].as_u64().unwrap(), pair[1].as_u64().unwrap());
            assert!(now == was || now % 8 == 0, "{l}");
            assert!(
                now * 2 >= was,
                "below the default minimum width (half): {l}"
            );
        }
    }
    let fc = r["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "/fc/fc.0/Conv")
        .unwrap();
    assert_eq!(fc["outputs"][1], 19);

    // The runtime sees a model of its own: card renamed, compute as pruned.
    let inspect = run_ok("dla-tools", &["inspect", s(&pruned)]);
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(text.contains("dla-tiny-seg-pruned"), "{text}");
    assert!(text.contains("ConvTranspose 7"), "{text}");

    // Our runtime and ONNX Runtime agree on the pruned graph.
    let data = tmp.path().join("data");
    run_ok(
        "dla-tools",
        &[
            "synth",
            "--out",
            s(&data),
            "--count",
            "2",
            "--seed",
            "77",
            "--size",
            "512x256",
        ],
    );
    agrees_with_onnx_runtime(&pruned, &data.join("images"), &tmp.path().join("seg"), 2);

    // prune -> quantize -> run.
    let int8 = tmp.path().join("pruned-int8.onnx");
    run_ok(
        "dla-tools",
        &[
            "quantize",
            s(&pruned),
            s(&int8),
            "--calib",
            "synth:8",
            "--eval",
            "none",
            "--sqnr-images",
            "0",
        ],
    );
    let out = tmp.path().join("int8-seg");
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
fn reconstruction_recovers_what_plain_pruning_loses() {
    let tmp = tempfile::tempdir().unwrap();
    let pruned = tmp.path().join("rec.onnx");
    let json = tmp.path().join("rec.json");
    run_ok(
        "dla-tools",
        &[
            "prune",
            s(&shipped()),
            s(&pruned),
            "--target-gmacs",
            "85%",
            "--importance",
            "l1",
            "--reconstruct",
            "--steps",
            "2",
            "--calib",
            "synth:6",
            "--distill",
            "1",
            "--distill-data",
            "synth:16",
            "--eval",
            "synth:4:2",
            "--bench-runs",
            "3",
            "--report",
            s(&json),
        ],
    );
    let r = report(&json);
    let share = r["gmacs_after"].as_f64().unwrap() / r["gmacs_before"].as_f64().unwrap();
    assert!((0.8..=0.86).contains(&share), "{share}");
    assert_eq!(r["steps"].as_u64(), Some(2));
    assert_eq!(r["target_reached"].as_bool(), Some(true));
    let plain = r["held_out_without_reconstruction"]["argmax_agreement"]
        .as_f64()
        .unwrap();
    let rebuilt = r["held_out"]["argmax_agreement"].as_f64().unwrap();
    println!(
        "argmax agreement with the unpruned model: plain {plain:.4}, reconstructed {rebuilt:.4}"
    );
    assert!(rebuilt >= 0.95, "{rebuilt}");
    assert!(
        rebuilt > plain + 0.05,
        "plain {plain}, reconstructed {rebuilt}"
    );
    // Every refitted layer fits the original outputs better than the plain cut.
    let refitted: Vec<&serde_json::Value> = r["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| !l["refit"].is_null())
        .collect();
    assert!(!refitted.is_empty());
    // By default rare classes weigh more, and layers feeding a ReLU are
    // judged (and fitted a second time) after it; the classifier is not.
    assert_eq!(r["class_balance"].as_f64(), Some(0.5));
    assert_eq!(r["refit"].as_str(), Some("relu"));
    let after_relu = |name: &str| {
        refitted
            .iter()
            .find(|l| l["name"].as_str().is_some_and(|n| n.contains(name)))
            .map(|l| l["refit"]["after_relu"].as_bool().unwrap())
    };
    assert_eq!(
        after_relu("/fc/"),
        Some(false),
        "the classifier has no ReLU"
    );
    assert!(
        refitted
            .iter()
            .any(|l| l["refit"]["after_relu"].as_bool() == Some(true)),
        "no layer was fitted after its ReLU"
    );
    // A bottleneck's last conv feeds a residual Add: it is fitted (and
    // judged) on the sum, after the Add's ReLU; the classifier is not.
    let on_sum = |name: &str| {
        refitted
            .iter()
            .find(|l| l["name"].as_str().is_some_and(|n| n.contains(name)))
            .map(|l| l["refit"]["on_residual_sum"].as_bool().unwrap())
    };
    assert_eq!(on_sum("/fc/"), Some(false));
    assert!(
        refitted.iter().any(|l| {
            l["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("conv3/Conv"))
                && l["refit"]["on_residual_sum"].as_bool() == Some(true)
                && l["refit"]["after_relu"].as_bool() == Some(true)
        }),
        "no bottleneck conv3 was fitted on its residual sum"
    );
    // Every refit is at least as good as the plain cut. After a ReLU,
    // "after" is an upper bound (a loose one): where the cut was already
    // almost exact (a layer that lost nothing itself), it may sit a hair
    // above "before".
    let mut total = (0.0, 0.0);
    for l in refitted {
        let (b, a) = (
            l["refit"]["before"].as_f64().unwrap(),
            l["refit"]["after"].as_f64().unwrap(),
        );
        let bounded = l["refit"]["after_relu"].as_bool() == Some(true);
        assert!(a <= b + 1e-6 || (bounded && a <= b + 1e-3), "{l}");
        total = (total.0 + b, total.1 + a);
    }
    assert!(
        total.1 < 0.9 * total.0,
        "before {}, after {}",
        total.0,
        total.1
    );
    // Then the classifier was fitted to the unpruned model's class
    // probabilities, at every stride-4 position of the 6 calibration images
    // (128 x 64 each), and it got closer to them than its least-squares fit.
    let c = &r["classifier"];
    assert_eq!(c["layer"].as_str(), Some("/fc/fc.0/Conv"), "{c}");
    assert_eq!(c["positions"].as_u64(), Some(6 * 128 * 64));
    let (kl0, kl1) = (
        c["kl_before"].as_f64().unwrap(),
        c["kl_after"].as_f64().unwrap(),
    );
    assert!(kl1 < kl0 && kl1 >= 0.0, "KL {kl0} -> {kl1}");
    // Last, every Conv was distilled at once, on 14 images (2 held back),
    // 4 images a step; its weights stayed only if the held-back KL fell and
    // the held-back agreement did not.
    let d = &r["distill"];
    assert_eq!(d["logits"].as_str(), Some("/fc/fc.0/Conv_output_0"), "{d}");
    assert_eq!(d["train_images"].as_u64(), Some(14), "{d}");
    assert_eq!(d["validation_images"].as_u64(), Some(2), "{d}");
    assert_eq!(d["steps"].as_u64(), Some(4), "{d}");
    let (v0, v1) = (
        d["validation_kl_before"].as_f64().unwrap(),
        d["validation_kl_after"].as_f64().unwrap(),
    );
    assert!(v0 > 0.0 && v1 > 0.0, "{d}");
    let (g0, g1) = (
        d["validation_agreement_before"].as_f64().unwrap(),
        d["validation_agreement_after"].as_f64().unwrap(),
    );
    assert_eq!(d["kept"].as_bool(), Some(v1 < v0 && g1 >= g0), "{d}");
    // The latency comparison ran both models in this process.
    let lat = &r["latency"];
    assert!(lat["median_ms_unpruned"].as_f64().unwrap() > 0.0);
    assert!(lat["median_ms_pruned"].as_f64().unwrap() > 0.0);
}

/// `dla-tools distill` fits every Conv of a model pruned without
/// reconstruction (a poor start) to the unpruned model's class
/// probabilities: the held-back KL falls and held-out agreement rises.
#[test]
fn distillation_recovers_a_plainly_pruned_model() {
    let tmp = tempfile::tempdir().unwrap();
    let pruned = tmp.path().join("plain.onnx");
    let distilled = tmp.path().join("distilled.onnx");
    let json = tmp.path().join("distill.json");
    run_ok(
        "dla-tools",
        &[
            "prune",
            s(&shipped()),
            s(&pruned),
            "--ratio",
            "0.1",
            "--importance",
            "l1",
            "--eval",
            "none",
            "--bench-runs",
            "0",
        ],
    );
    run_ok(
        "dla-tools",
        &[
            "distill",
            s(&pruned),
            s(&distilled),
            "--teacher",
            s(&shipped()),
            "--data",
            "synth:16",
            "--epochs",
            "2",
            "--lr",
            "1e-3",
            "--eval",
            "synth:4:2",
            "--report",
            s(&json),
        ],
    );
    let r = report(&json);
    let d = &r["distillation"];
    let (v0, v1) = (
        d["validation_kl_before"].as_f64().unwrap(),
        d["validation_kl_after"].as_f64().unwrap(),
    );
    println!("held-back KL {v0:.4} -> {v1:.4}");
    assert!(v1 < 0.8 * v0, "{d}");
    assert_eq!(d["kept"].as_bool(), Some(true));
    assert_eq!(d["train_kl"].as_array().unwrap().len(), 2);
    let before = r["held_out_before"]["argmax_agreement"].as_f64().unwrap();
    let after = r["held_out"]["argmax_agreement"].as_f64().unwrap();
    println!("held-out agreement with the unpruned model {before:.4} -> {after:.4}");
    assert!(after > before + 0.02, "{before} -> {after}");
    // The fitted model is an ordinary model to the runtime.
    let out = run_ok("dla-tools", &["inspect", s(&distilled)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Conv"), "{text}");
}
