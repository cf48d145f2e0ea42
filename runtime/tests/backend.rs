//! The tract backend's buffer contract: pre-processing writes into the same
//! input tensor every frame (no per-frame copy), and the segmenter's label map
//! keeps its size and storage across frames.

use std::path::Path;

use dla_runtime::backend::{Backend, TractBackend};
use dla_runtime::{FrameRef, Model, Segmenter, SegmenterOptions};

fn tiny() -> Model {
    Model::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny_seg.onnx"))
        .unwrap()
}

#[test]
fn input_tensor_is_reused_across_runs() {
    let model = tiny();
    let mut backend = TractBackend::new(&model, 1).unwrap();
    let first = backend.input_mut().as_ptr();
    for i in 0..3 {
        backend.input_mut().fill(i as f32);
        backend.run().unwrap();
        assert_eq!(
            backend.input_mut().as_ptr(),
            first,
            "run {i} forced a copy of the input"
        );
    }
    let logits = backend.logits();
    assert_eq!((logits.classes, logits.height, logits.width), (4, 64, 64));
}

#[test]
fn label_buffer_is_stable_across_frames() {
    let model = tiny();
    let mut seg = Segmenter::new(
        &model,
        SegmenterOptions {
            threads: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let data: Vec<u8> = (0..100 * 50 * 3).map(|i| (i % 256) as u8).collect();
    let frame = FrameRef::new(100, 50, &data).unwrap();
    let first = seg.segment(frame).unwrap().labels.as_ptr();
    let again = seg.segment(frame).unwrap();
    assert_eq!(again.labels.as_ptr(), first);
    assert_eq!(again.labels.len(), 100 * 50);
    assert!(again.labels.iter().all(|&l| l < 4));
}

/// In the shipped int8 model, every DequantizeLinear that fed only an Add
/// or a quantized Concat is folded into it, and so is every up-sampler
/// before a quantized Concat: what is left dequantizes the inputs of the
/// up-samplers, and the glue reads `u8`.
#[test]
fn int8_glue_reads_u8_without_dequantize_nodes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/dla-tiny-seg-int8.onnx");
    let model = Model::load(path).unwrap();
    let mut backend = TractBackend::new(&model, 1).unwrap();
    let timings = backend.profile().unwrap();
    let count = |op: &str| timings.iter().filter(|t| t.op == op).count();
    // The up-samplers before a quantized Concat run inside it; the final
    // one is the labels head.
    let upsampled_inputs: usize = timings
        .iter()
        .filter(|t| t.op == "QuantizeConcat")
        .flat_map(|t| &t.info)
        .map(|line| line.matches("up-sampled").count())
        .sum();
    assert_eq!(upsampled_inputs, 6);
    assert_eq!(count("DepthwiseUpsample"), 1, "the labels head");
    assert_eq!(count("DequantizeU8"), upsampled_inputs + 1);
    let reads_u8 = |op: &str| {
        timings
            .iter()
            .filter(|t| t.op == op && t.info.iter().any(|line| line.contains("u8 (scale")))
            .count()
    };
    assert_eq!(reads_u8("AddRelu"), count("AddRelu"), "every Add reads u8");
    assert_eq!(
        reads_u8("QuantizeConcat"),
        9,
        "the 9 Concats with a dequantized input read it as u8"
    );
}

/// A profile runs the plan on the pool's worker, as a plain run does (from
/// outside the pool each parallel loop would be a cross-thread handoff): on
/// 2 threads it times the same nodes, in the same order, as on 1.
#[test]
fn a_profile_on_two_threads_times_every_node() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/dla-tiny-seg-int8.onnx");
    let model = Model::load(path).unwrap();
    let nodes = |threads: usize| -> Vec<String> {
        let mut backend = TractBackend::new(&model, threads).unwrap();
        backend
            .profile()
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect()
    };
    let one = nodes(1);
    assert!(one.len() > 50, "{one:?}");
    assert_eq!(nodes(2), one);
}
