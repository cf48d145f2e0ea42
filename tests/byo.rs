//! Bring your own model: DLAs exported by a plain `torch.onnx.export`, with
//! no model card (tests/fixtures/export_plain.py: one with a fixed 256x512
//! input and its weights in a `.onnx.data` file beside it, as the new
//! exporter writes by default; one with free height and width), through
//! every command a new user runs, each saying once what it assumed. Labels
//! agree with ONNX Runtime on the same inputs; what quantize and prune write
//! carries the card and loads in dla-edge and in ONNX Runtime.

use std::path::{Path, PathBuf};
use std::process::Command;

use dla_e2e::{ort_reference, python, root, run_ok, s, samples_at};

/// Copies fixture `name` (and its weights file, if any) into `dir`.
fn copy_fixture(name: &str, dir: &Path) -> PathBuf {
    let fixtures = root().join("tests/fixtures");
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap();
        if file == format!("{name}.onnx") || file == format!("{name}.onnx.data") {
            std::fs::copy(&path, dir.join(file)).unwrap();
        }
    }
    dir.join(format!("{name}.onnx"))
}

/// [`run_ok`], with its output as text: (stdout, stderr).
fn ok(name: &str, args: &[&str]) -> (String, String) {
    let out = run_ok(name, args);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one warning a card-less model gets, naming the model.
fn assert_one_card_warning(stderr: &str, model: &Path) {
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "one warning line:\n{stderr}");
    let name = model.file_name().unwrap().to_str().unwrap();
    assert!(
        warnings[0].contains(&format!("{name} has no model card")),
        "{stderr}"
    );
}

/// `dla-edge segment --save-logits` on `images`, then ONNX Runtime on the
/// same pixels: argmax agreement of at least 99.9 % per image.
fn labels_agree_with_onnx_runtime(model: &Path, images: &Path, out: &Path) {
    let (_, stderr) = ok(
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
    assert_one_card_warning(&stderr, model);
    for i in 0..2 {
        let name = format!("street-{i}");
        let agreement = ort_reference(
            model,
            &images.join(format!("{name}.png")),
            &out.join(format!("{name}.logits.npy")),
        )
        .agreement;
        println!(
            "{}, street-{i}: argmax agreement with ONNX Runtime {agreement:.5}",
            model.display()
        );
        assert!(
            agreement >= 0.999,
            "{}: agreement {agreement}",
            model.display()
        );
    }
}

/// A model a tool wrote: it carries a card, and ONNX Runtime loads and runs it.
fn written_model_loads_everywhere(model: &Path, images: &Path, out: &Path) {
    let (inspect, _) = ok("dla-tools", &["inspect", s(model)]);
    assert!(
        inspect.contains("card       in the ONNX metadata"),
        "{inspect}"
    );
    let (_, stderr) = ok(
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
        ],
    );
    assert!(!stderr.contains("no model card"), "{stderr}");
    let res = Command::new(python())
        .args([
            "-c",
            "import sys, numpy as np, onnxruntime as o\n\
s = o.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
x = np.zeros((1, 3, 256, 512), np.float32)\n\
print(s.run(None, {s.get_inputs()[0].name: x})[0].shape)",
        ])
        .arg(model)
        .output()
        .expect("run python");
    assert!(
        res.status.success(),
        "ONNX Runtime cannot run {}: {}",
        model.display(),
        String::from_utf8_lossy(&res.stderr)
    );
}

fn through_every_command(name: &str, classes: usize) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let model = copy_fixture(name, dir);
    let images = samples_at(dir, 2, (512, 256));

    let (inspect, stderr) = ok("dla-tools", &["inspect", s(&model)]);
    assert!(inspect.contains("card       none"), "{inspect}");
    assert!(
        inspect.contains(&format!("classes    {classes}  (default")),
        "{inspect}"
    );
    assert_one_card_warning(&stderr, &model);

    labels_agree_with_onnx_runtime(&model, &images, &dir.join("segment"));

    let (_, stderr) = ok(
        "dla-edge",
        &[
            "stream",
            "--model",
            s(&model),
            "--source",
            s(&images),
            "--max-frames",
            "2",
            "--no-http",
            "--json",
        ],
    );
    assert_one_card_warning(&stderr, &model);

    let int8 = dir.join(format!("{name}-int8.onnx"));
    ok(
        "dla-tools",
        &[
            "quantize",
            s(&model),
            s(&int8),
            "--calib",
            s(&images),
            "--eval",
            "synth:2",
        ],
    );
    written_model_loads_everywhere(&int8, &images, &dir.join("int8"));
    let (eval, _) = ok(
        "dla-tools",
        &[
            "eval",
            "--model",
            s(&int8),
            "--vs",
            s(&model),
            "--data",
            "synth:2",
            "--json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(eval.trim()).unwrap();
    let agreement = report["agreement_summary"]["argmax_agreement"]
        .as_f64()
        .unwrap_or_else(|| panic!("no argmax agreement in: {eval}"));
    // An untrained network's int8 labels are not fp32's everywhere; the
    // check is that eval compared the two models pixel by pixel.
    println!("{name}: int8 vs fp32 argmax agreement {agreement:.4}");
    assert!((0.3..=1.0).contains(&agreement), "{eval}");
    assert_eq!(report["agreement"]["pixels"], 2 * 256 * 512, "{eval}");

    let pruned = dir.join(format!("{name}-pruned.onnx"));
    ok(
        "dla-tools",
        &[
            "prune",
            s(&model),
            s(&pruned),
            "--target-gmacs",
            "80%",
            "--calib",
            "synth:4",
            "--eval",
            "synth:2",
        ],
    );
    written_model_loads_everywhere(&pruned, &images, &dir.join("pruned"));
}

#[test]
fn a_plain_export_with_a_fixed_size_runs_through_every_command() {
    through_every_command("plain-dla", 19);
}

#[test]
fn a_plain_export_with_free_height_and_width_runs_through_every_command() {
    through_every_command("plain-dla-dynamic", 5);
}

/// The card a model reads from its sidecar, as the tools found it in the
/// ONNX file each of them wrote.
fn embedded_card(model: &Path) -> serde_json::Value {
    let (json, _) = ok("dla-tools", &["inspect", s(model), "--card-json"]);
    let start = json
        .find("\n{")
        .expect("inspect --card-json prints the card")
        + 1;
    serde_json::from_str(&json[start..]).unwrap()
}

#[test]
fn a_sidecar_card_travels_through_quantize_prune_and_distill() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let model = copy_fixture("plain-dla", dir);
    let images = samples_at(dir, 2, (512, 256));
    // The user's card: their own normalisation and name, as a sidecar.
    ok(
        "dla-tools",
        &[
            "card",
            s(&model),
            "--name",
            "street",
            "--mean",
            "0.5,0.5,0.5",
            "--std",
            "0.25,0.25,0.25",
        ],
    );
    assert!(dir.join("plain-dla.onnx.card.json").is_file());

    let int8 = dir.join("street-int8.onnx");
    ok(
        "dla-tools",
        &[
            "quantize",
            s(&model),
            s(&int8),
            "--calib",
            s(&images),
            "--eval",
            "synth:2",
        ],
    );
    let pruned = dir.join("street-pruned.onnx");
    ok(
        "dla-tools",
        &[
            "prune",
            s(&model),
            s(&pruned),
            "--target-gmacs",
            "80%",
            "--calib",
            "synth:4",
            "--eval",
            "synth:2",
        ],
    );
    let distilled = dir.join("street-distilled.onnx");
    ok(
        "dla-tools",
        &[
            "distill",
            s(&pruned),
            s(&distilled),
            "--teacher",
            s(&model),
            "--data",
            "synth:8",
            "--epochs",
            "1",
            "--eval",
            "synth:2",
        ],
    );
    for (written, name) in [
        (&int8, "street-int8"),
        (&pruned, "street-pruned"),
        // Distilling keeps the name of the model it fits.
        (&distilled, "street-pruned"),
    ] {
        // Copied away from the sidecar: the card is in the file itself.
        let alone = tempfile::tempdir().unwrap();
        let copy = alone.path().join(written.file_name().unwrap());
        std::fs::copy(written, &copy).unwrap();
        let card = embedded_card(&copy);
        assert_eq!(card["name"], name, "{}", written.display());
        assert_eq!(card["input"]["mean"], serde_json::json!([0.5, 0.5, 0.5]));
        assert_eq!(card["input"]["std"], serde_json::json!([0.25, 0.25, 0.25]));
        written_model_loads_everywhere(&copy, &images, &alone.path().join("out"));
    }
}
