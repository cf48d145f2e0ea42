//! Criterion benches for the three stages of segmenting a frame with the
//! shipped DLA-tiny at 256x512: pre-processing a 720p camera frame,
//! inference (1 thread and all cores), and post-processing back to 720p.
//!
//! `cargo bench -p dla-runtime --bench segment`

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use dla_runtime::backend::{default_threads, Backend, TractBackend};
use dla_runtime::postprocess::{Postprocessor, Upsampling};
use dla_runtime::preprocess::Preprocessor;
use dla_runtime::synth::SynthGenerator;
use dla_runtime::{FrameRef, Model};

fn model() -> Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/dla-tiny-seg.onnx");
    Model::load(path).expect("shipped model loads")
}

fn bench_stages(c: &mut Criterion) {
    let model = model();
    let camera = SynthGenerator::new(3, 1280, 720).frame(0);
    let frame = FrameRef::new(camera.width, camera.height, &camera.rgb).unwrap();
    let mut pre = Preprocessor::new(&model.card().input);
    let mut backend = TractBackend::new(&model, 1).unwrap();

    c.bench_function("preprocess 1280x720 -> 512x256", |b| {
        b.iter(|| pre.run(black_box(frame), backend.input_mut()).unwrap())
    });

    let mut group = c.benchmark_group("infer dla-tiny 256x512");
    group.sample_size(10);
    group.bench_function("tract 1 thread", |b| b.iter(|| backend.run().unwrap()));
    let threads = default_threads();
    if threads > 1 {
        let mut multi = TractBackend::new(&model, threads).unwrap();
        pre.run(frame, multi.input_mut()).unwrap();
        group.bench_function(format!("tract {threads} threads"), |b| {
            b.iter(|| multi.run().unwrap())
        });
    }
    group.finish();

    for upsampling in [Upsampling::Nearest, Upsampling::Bilinear] {
        let mut post = Postprocessor::new(upsampling);
        c.bench_function(
            &format!("postprocess {upsampling:?} 256x512 -> 1280x720"),
            |b| {
                b.iter(|| {
                    black_box(post.run(backend.logits(), 1280, 720));
                })
            },
        );
    }
}

criterion_group!(benches, bench_stages);
criterion_main!(benches);
