//! tract's labels head (`Backend::run_labels` on the shipped DLA models):
//! the final up-sampler run a band at a time into the argmax must give the
//! labels the host's argmax of the whole logits gives, at the network's
//! output size and resized bilinearly to other frame sizes, and the
//! segmenter must take them without computing the logits.

use std::path::Path;

use dla_runtime::backend::{Backend, TractBackend};
use dla_runtime::postprocess::{Postprocessor, Upsampling};
use dla_runtime::source::{DemoSource, Frame, Source, SourceOptions};
use dla_runtime::{FrameRef, Model, Segmenter};

fn model(name: &str) -> Model {
    Model::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)).unwrap()
}

/// A demo scene normalised into the backend's input.
fn fill_input(backend: &mut TractBackend, model: &Model) {
    let (h, w) = model.input_size();
    let mut demo = DemoSource::new(&SourceOptions {
        size: Some((w, h)),
        fps: 1000.0,
        seed: 7,
        ..SourceOptions::default()
    });
    let mut frame = Frame::default();
    demo.next_frame(&mut frame).unwrap();
    let mut pre = dla_runtime::preprocess::Preprocessor::new(&model.card().input);
    let f = FrameRef::new(frame.width, frame.height, &frame.data).unwrap();
    pre.run(f, backend.input_mut()).unwrap();
}

#[test]
fn labels_head_equals_the_host_argmax() {
    for name in ["models/dla-tiny-seg.onnx", "models/dla-tiny-seg-int8.onnx"] {
        let model = model(name);
        let mut backend = TractBackend::new(&model, 2).unwrap();
        assert!(backend.labels_exact(), "{name}: no labels head");
        fill_input(&mut backend, &model);
        backend.run().unwrap();
        let logits = backend.logits();
        let (w, h) = (logits.width, logits.height);
        let mut post = Postprocessor::new(Upsampling::Bilinear);
        let sizes = [(w, h), (2 * w, 2 * h), (1280, 720), (w / 3, h / 3)];
        let want: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&(fw, fh)| post.run(backend.logits(), fw, fh).to_vec())
            .collect();
        for (size, want) in sizes.iter().zip(&want) {
            let mut labels = vec![u8::MAX; size.0 * size.1];
            assert!(backend.run_labels(&mut labels, *size).unwrap());
            assert!(labels == *want, "{name} at {size:?}: labels differ");
            let classes = (0..=u8::MAX).filter(|c| labels.contains(c)).count();
            assert!(classes >= 3, "{name} at {size:?}: {classes} class(es) only");
        }
    }
}

#[test]
fn the_segmenter_takes_the_heads_labels() {
    let model = model("models/dla-tiny-seg-int8.onnx");
    let backend = TractBackend::new(&model, 1).unwrap();
    let mut segmenter = Segmenter::with_backend(&model, Box::new(backend), Upsampling::Bilinear);
    let mut demo = DemoSource::new(&SourceOptions {
        size: Some((640, 320)),
        fps: 1000.0,
        ..SourceOptions::default()
    });
    let mut frame = Frame::default();
    demo.next_frame(&mut frame).unwrap();
    let f = FrameRef::new(frame.width, frame.height, &frame.data).unwrap();
    let labels = segmenter.segment(f).unwrap().labels.to_vec();
    assert!(segmenter.labels_from_backend());
    assert!(segmenter.logits().is_none());
    // The same frame through the logits.
    segmenter.keep_logits(true);
    let again = segmenter.segment(f).unwrap().labels.to_vec();
    assert!(!segmenter.labels_from_backend());
    assert!(labels == again, "labels head and host argmax differ");
}
