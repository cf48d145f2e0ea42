//! The ONNX Runtime backend's buffer contract, as for tract: the bound input
//! tensor is written in place every frame (no copy, no reallocation) and the
//! network sees each new input; the logits have the model's shape.
#![cfg(feature = "ort")]

use std::path::{Path, PathBuf};

use dla_runtime::backend::{Backend, OrtBackend, OrtOptions, TractBackend};
use dla_runtime::Model;

/// `$ORT_DYLIB_PATH`, else the onnxruntime wheel of `$DLA_PYTHON` (as the
/// end-to-end tests find it), else the backend's own search.
fn library() -> Option<PathBuf> {
    if std::env::var_os("ORT_DYLIB_PATH").is_some_and(|p| !p.is_empty()) {
        return None;
    }
    let python = std::env::var_os("DLA_PYTHON")?;
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'))",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

#[test]
fn input_is_reused_and_outputs_follow_it() {
    let model =
        Model::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny_seg.onnx"))
            .unwrap();
    let options = OrtOptions {
        threads: 1,
        library: library(),
        ..OrtOptions::default()
    };
    let mut ort = OrtBackend::new(&model, &options).unwrap();
    let mut tract = TractBackend::new(&model, 1).unwrap();
    assert_eq!(ort.name(), "ort-cpu");
    let first = ort.input_mut().as_ptr();
    for i in 0..3 {
        let fill = |x: &mut [f32]| {
            for (j, v) in x.iter_mut().enumerate() {
                *v = ((j * (i + 1)) % 17) as f32 / 8.0 - 1.0;
            }
        };
        fill(ort.input_mut());
        fill(tract.input_mut());
        ort.run().unwrap();
        tract.run().unwrap();
        assert_eq!(ort.input_mut().as_ptr(), first, "run {i} moved the input");
        let (a, b) = (ort.logits(), tract.logits());
        assert_eq!((a.classes, a.height, a.width), (4, 64, 64));
        let max_diff = a
            .data
            .iter()
            .zip(b.data)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max_diff < 1e-3,
            "run {i}: ort and tract differ by {max_diff}"
        );
    }
}

/// ONNX Runtime allows one environment per process: a second backend (an
/// interleaved `bench --vs`, an `eval --vs-backend ort-cpu`) shares the first
/// one's instead of failing, and both run.
#[test]
fn two_backends_share_one_process() {
    let model =
        Model::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny_seg.onnx"))
            .unwrap();
    let options = OrtOptions {
        threads: 1,
        library: library(),
        ..OrtOptions::default()
    };
    let mut a = OrtBackend::new(&model, &options).unwrap();
    let mut b = OrtBackend::new(&model, &options).unwrap();
    a.input_mut().fill(0.5);
    b.input_mut().fill(0.5);
    a.run().unwrap();
    b.run().unwrap();
    assert_eq!(a.logits().data, b.logits().data);
}
