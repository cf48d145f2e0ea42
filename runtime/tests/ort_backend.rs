//! The ONNX Runtime backend's buffer contract, as for tract: the bound input
//! tensor is written in place every frame (no copy, no reallocation) and the
//! network sees each new input; the logits have the model's shape. And the
//! labels-only run (`--argmax engine`) agrees with our own argmax.
#![cfg(feature = "ort")]

use std::path::{Path, PathBuf};

use dla_runtime::backend::{ArgmaxAt, Backend, Logits, OrtBackend, OrtOptions, TractBackend};
use dla_runtime::postprocess::{argmax_into, Postprocessor, Upsampling};
use dla_runtime::preprocess::Preprocessor;
use dla_runtime::synth::SynthGenerator;
use dla_runtime::{FrameRef, Model, Segmenter};

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

fn dla_tiny() -> Model {
    Model::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/dla-tiny-seg.onnx")).unwrap()
}

fn with_argmax(argmax: ArgmaxAt) -> OrtOptions {
    OrtOptions {
        threads: 2,
        library: library(),
        argmax,
        ..OrtOptions::default()
    }
}

/// `--argmax engine`: ONNX Runtime's own ArgMax (the path a GPU takes, here on
/// the CPU provider) gives exactly the labels our argmax takes from the same
/// session's logits, on a real scene through the real model.
#[test]
fn argmax_in_the_engine_matches_the_host_argmax() {
    let model = dla_tiny();
    let mut ort = OrtBackend::new(&model, &with_argmax(ArgmaxAt::Engine)).unwrap();
    assert_eq!(ort.argmax_in_engine(), Some(true));
    fill_with_a_scene(&model, &mut ort);

    let [_, _, oh, ow] = model.output_shape();
    let mut engine = vec![0u8; oh * ow];
    assert!(ort.run_labels(&mut engine, (ow, oh)).unwrap());
    ort.run().unwrap();
    let (mut best, mut host) = (vec![0f32; oh * ow], vec![0u8; oh * ow]);
    argmax_into(ort.logits(), &mut best, &mut host);
    assert_eq!(engine, host);
    let mut seen = [false; 256];
    engine.iter().for_each(|&c| seen[c as usize] = true);
    assert!(
        seen.iter().filter(|&&s| s).count() >= 4,
        "a street scene should have several classes"
    );

    // A buffer of the wrong size is an error, not a panic.
    assert!(ort.run_labels(&mut [0u8; 16], (ow, oh)).is_err());
}

/// At another frame size the engine resizes the logits bilinearly before its
/// argmax; the labels agree with our own bilinear argmax on the same logits
/// (up to float rounding at near-ties), for sizes up and down and back, so
/// the size input and output are rebound when the size changes.
#[test]
fn frame_size_labels_from_the_engine_match_the_host_bilinear_argmax() {
    let model = dla_tiny();
    let mut ort = OrtBackend::new(&model, &with_argmax(ArgmaxAt::Engine)).unwrap();
    fill_with_a_scene(&model, &mut ort);
    ort.run().unwrap();
    let logits = ort.logits().data.to_vec();
    let [_, classes, oh, ow] = model.output_shape();
    let mut post = Postprocessor::new(Upsampling::Bilinear);
    for (w, h) in [(640, 360), (300, 140), (640, 360), (1280, 720)] {
        let mut engine = vec![0u8; w * h];
        assert!(ort.run_labels(&mut engine, (w, h)).unwrap(), "{w}x{h}");
        let host = post.run(
            Logits {
                data: &logits,
                classes,
                height: oh,
                width: ow,
            },
            w,
            h,
        );
        let same = engine.iter().zip(host).filter(|(a, b)| a == b).count();
        let agreement = same as f64 / (w * h) as f64;
        assert!(
            agreement > 0.999,
            "{w}x{h}: {:.4} % agree",
            agreement * 100.0
        );
    }
}

/// On the CPU provider `auto` keeps the argmax here (it gains nothing there).
/// tract's labels-only run is its labels head, exact by construction
/// (`tests/labels_head.rs`), so it is offered and not checked.
#[test]
fn auto_keeps_the_argmax_on_the_host_on_the_cpu() {
    let model = dla_tiny();
    let mut ort = OrtBackend::new(&model, &with_argmax(ArgmaxAt::Auto)).unwrap();
    assert_eq!(ort.argmax_in_engine(), None);
    let [_, _, oh, ow] = model.output_shape();
    let mut labels = vec![0u8; oh * ow];
    assert!(!ort.run_labels(&mut labels, (ow, oh)).unwrap());
    assert!(!ort.labels_exact());
    let mut tract = TractBackend::new(&model, 1).unwrap();
    assert!(tract.run_labels(&mut labels, (ow, oh)).unwrap());
    assert!(tract.labels_exact());
}

/// The segmenter takes a labels-only run whenever the backend offers one,
/// says the logits are not the frame's then, and fetches them with
/// `keep_logits`. Its label maps match the host path's.
#[test]
fn segmenter_takes_labels_from_the_engine_and_logits_on_request() {
    let model = dla_tiny();
    let (h, w) = model.input_size();
    let segmenter = |argmax, up| {
        let backend = OrtBackend::new(&model, &with_argmax(argmax)).unwrap();
        Segmenter::with_backend(&model, Box::new(backend), up)
    };
    for (fw, fh, up) in [
        (w, h, Upsampling::Bilinear),
        (w * 3 / 2, h * 3 / 2, Upsampling::Nearest),
        (w * 3 / 2, h * 3 / 2, Upsampling::Bilinear),
    ] {
        let scene = SynthGenerator::new(5, fw, fh).frame(2);
        let frame = FrameRef::new(scene.width, scene.height, &scene.rgb).unwrap();
        let (mut a, mut b) = (
            segmenter(ArgmaxAt::Engine, up),
            segmenter(ArgmaxAt::Host, up),
        );
        // The first frame checks the engine's labels against ours; the
        // second uses them.
        a.segment(frame).unwrap();
        assert!(!a.labels_from_backend() && a.logits().is_some());
        let la = a.segment(frame).unwrap().labels.to_vec();
        assert!(
            a.labels_from_backend(),
            "{fw}x{fh} {up:?}: checked labels unused"
        );
        let lb = b.segment(frame).unwrap().labels.to_vec();
        assert!(!b.labels_from_backend());
        let same = la.iter().zip(&lb).filter(|(x, y)| x == y).count();
        if (fw, fh) == (w, h) || up == Upsampling::Nearest {
            assert_eq!(la, lb, "{fw}x{fh} {up:?}");
        } else {
            assert!(same as f64 > 0.999 * la.len() as f64, "{fw}x{fh} {up:?}");
        }
        assert!(a.logits().is_none(), "{fw}x{fh} {up:?}");
        assert!(b.logits().is_some());
        a.keep_logits(true);
        a.segment(frame).unwrap();
        assert!(a.logits().is_some(), "keep_logits fetches them");
        assert!(!a.labels_from_backend());
    }
}

/// Preprocesses a synthetic street scene into the backend's input.
fn fill_with_a_scene(model: &Model, backend: &mut dyn Backend) {
    let (h, w) = model.input_size();
    let scene = SynthGenerator::new(3, w, h).frame(1);
    let frame = FrameRef::new(scene.width, scene.height, &scene.rgb).unwrap();
    Preprocessor::new(&model.card().input)
        .run(frame, backend.input_mut())
        .unwrap();
}
