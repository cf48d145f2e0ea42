//! Models exported elsewhere (plain `torch.onnx.export`, no model card; see
//! tests/fixtures/export_plain.py): they load with stated defaults, at the
//! size their graph fixes or, for free height and width, at the size asked
//! or the frames' aspect; shapes dla-edge cannot read are refused with the
//! reason.

use std::path::{Path, PathBuf};

use dla_runtime::model::{CardSource, LoadOptions, SizeFrom};
use dla_runtime::Model;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn assumed(model: &Model) -> (SizeFrom, bool) {
    match model.card_source() {
        CardSource::Assumed(a) => (a.size, a.cityscapes),
        other => panic!("expected an assumed card, got {other:?}"),
    }
}

#[test]
fn a_plain_export_runs_with_stated_defaults() {
    // The new exporter's default: weights in plain-dla.onnx.data beside it.
    let model = Model::load(fixture("plain-dla.onnx")).unwrap();
    assert_eq!(assumed(&model), (SizeFrom::Graph, true));
    assert_eq!(model.input_size(), (256, 512));
    assert_eq!(model.output_shape(), [1, 19, 256, 512]);
    let card = model.card();
    assert_eq!(card.name, "plain-dla");
    assert_eq!(card.classes[13].name, "car");
    assert_eq!(
        (card.input.color.as_str(), card.input.scale),
        ("RGB", 255.0)
    );
    assert_eq!(card.input.mean, dla_runtime::model::IMAGENET_MEAN);
    let note = model.assumed().unwrap();
    for needle in [
        "plain-dla.onnx has no model card",
        "512x256 (from the graph)",
        "Cityscapes",
        "dla-tools card",
    ] {
        assert!(note.contains(needle), "{needle:?} missing from: {note}");
    }
    assert!(!note.contains('\n'), "one line: {note}");
    // A carded model says nothing.
    assert_eq!(
        Model::load(fixture("tiny_seg.onnx")).unwrap().assumed(),
        None
    );
}

#[test]
fn a_free_size_graph_runs_at_the_asked_size_or_the_frames_aspect() {
    let path = fixture("plain-dla-dynamic.onnx");
    let model = Model::load(&path).unwrap();
    assert!(model.free_size());
    assert_eq!(assumed(&model), (SizeFrom::Default, false));
    assert_eq!(model.input_size(), (256, 512));
    assert_eq!(model.card().classes.len(), 5);
    assert_eq!(model.card().classes[4].name, "class 4");

    let at = |options: LoadOptions| Model::load_with(&path, &options).unwrap();
    let camera = at(LoadOptions {
        frame_size: Some((1280, 720)),
        ..LoadOptions::default()
    });
    assert_eq!(camera.input_size(), (288, 512));
    assert_eq!(camera.output_shape(), [1, 5, 288, 512]);
    assert_eq!(assumed(&camera).0, SizeFrom::FrameAspect(1280, 720));
    let asked = at(LoadOptions {
        input_size: Some((640, 352)),
        frame_size: Some((1280, 720)),
        ..LoadOptions::default()
    });
    assert_eq!(asked.input_size(), (352, 640));
    assert_eq!(assumed(&asked).0, SizeFrom::Asked);
}

#[test]
fn a_fixed_graph_refuses_another_size() {
    let err = Model::load_with(
        fixture("plain-dla.onnx"),
        &LoadOptions {
            input_size: Some((640, 352)),
            ..LoadOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--input-size says 640x352") && err.contains("fixed at 512x256"),
        "{err}"
    );
}

#[test]
fn shapes_dla_edge_cannot_read_are_refused_with_the_reason() {
    for (file, needles) in [
        (
            "argmax_output.onnx",
            &["class IDs", "without its final argmax"][..],
        ),
        (
            "nhwc_output.onnx",
            &["1x64x64x4", "channels last (NHWC)"][..],
        ),
        ("nhwc_input.onnx", &["1x64x64x3", "channels last, NHWC"][..]),
    ] {
        let err = Model::load(fixture(file)).unwrap_err().to_string();
        assert!(err.contains(file), "{err}");
        for needle in needles {
            assert!(
                err.contains(needle),
                "{file}: {needle:?} missing from: {err}"
            );
        }
    }
}
