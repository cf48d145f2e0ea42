//! A backend's own argmax (`Backend::run_labels`, ONNX Runtime on a GPU) is
//! checked against ours on its first frame: labels that disagree, or a run
//! that fails, make the segmenter fall back to the logits when the engine's
//! argmax was only the default, and are an error when the user asked for it.
//! A tract backend with a meddling `run_labels` stands in for the GPU.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dla_runtime::backend::{Backend, Logits, TractBackend};
use dla_runtime::postprocess::{argmax_into, Upsampling};
use dla_runtime::{Error, FrameRef, Model, Result, Segmenter};

fn tiny() -> Model {
    Model::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny_seg.onnx"))
        .unwrap()
}

/// What the stand-in's own argmax does.
#[derive(Clone, Copy)]
enum Meddle {
    /// Right labels.
    Honest,
    /// Right labels but one pixel (rounding at a boundary).
    OnePixelOff,
    /// Every label the next class: a wrong axis or layout.
    Shifted,
    /// The run fails (a provider that cannot run the added nodes).
    Fails,
}

struct Stand {
    tract: TractBackend,
    meddle: Meddle,
    required: bool,
    /// How often `run_labels` was asked, seen from the test.
    labels_runs: Arc<AtomicUsize>,
    best: Vec<f32>,
}

impl Stand {
    /// A segmenter on the stand-in, and its count of labels-only runs.
    fn segmenter(meddle: Meddle, required: bool) -> (Segmenter, Arc<AtomicUsize>) {
        let model = tiny();
        let labels_runs = Arc::new(AtomicUsize::new(0));
        let stand = Stand {
            tract: TractBackend::new(&model, 1).unwrap(),
            meddle,
            required,
            labels_runs: labels_runs.clone(),
            best: Vec::new(),
        };
        let seg = Segmenter::with_backend(&model, Box::new(stand), Upsampling::Bilinear);
        (seg, labels_runs)
    }
}

impl Backend for Stand {
    fn name(&self) -> &'static str {
        "stand-in"
    }

    fn input_mut(&mut self) -> &mut [f32] {
        self.tract.input_mut()
    }

    fn run(&mut self) -> Result<()> {
        self.tract.run()
    }

    fn logits(&self) -> Logits<'_> {
        self.tract.logits()
    }

    fn run_labels(&mut self, labels: &mut [u8], size: (usize, usize)) -> Result<bool> {
        let shape = self.tract.logits();
        if size != (shape.width, shape.height) {
            return Ok(false);
        }
        self.labels_runs.fetch_add(1, Ordering::Relaxed);
        if let Meddle::Fails = self.meddle {
            return Err(Error::Backend {
                backend: "stand-in",
                reason: "the added nodes cannot run here".into(),
            });
        }
        self.tract.run()?;
        let logits = self.tract.logits();
        let n = logits.width * logits.height;
        self.best.resize(n, 0.0);
        argmax_into(logits, &mut self.best, &mut labels[..n]);
        let classes = logits.classes as u8;
        match self.meddle {
            Meddle::OnePixelOff => labels[n / 2] = (labels[n / 2] + 1) % classes,
            Meddle::Shifted => labels[..n].iter_mut().for_each(|l| *l = (*l + 1) % classes),
            _ => {}
        }
        Ok(true)
    }

    fn labels_required(&self) -> bool {
        self.required
    }
}

/// A frame at the model's input size (labels at the output's size), with
/// enough texture that the tiny model finds more than one class.
fn frame_data(model: &Model) -> (u32, u32, Vec<u8>) {
    let (h, w) = model.input_size();
    let data = (0..w * h * 3).map(|i| ((i * 7) % 251) as u8).collect();
    (w, h, data)
}

/// The labels tract alone gives for the frame.
fn reference() -> Vec<u8> {
    let model = tiny();
    let (w, h, data) = frame_data(&model);
    let tract = Box::new(TractBackend::new(&model, 1).unwrap());
    let mut seg = Segmenter::with_backend(&model, tract, Upsampling::Bilinear);
    let labels = seg
        .segment(FrameRef::new(w, h, &data).unwrap())
        .unwrap()
        .labels
        .to_vec();
    let first = labels[0];
    assert!(
        labels.iter().any(|&l| l != first),
        "the reference frame has one class only: the checks below would prove little"
    );
    labels
}

/// Segments the test frame `frames` times; each frame's labels and whether
/// they were the backend's own.
fn segment(seg: &mut Segmenter, frames: usize) -> Result<Vec<(Vec<u8>, bool)>> {
    let (w, h, data) = frame_data(&tiny());
    let frame = FrameRef::new(w, h, &data).unwrap();
    (0..frames)
        .map(|_| {
            let labels = seg.segment(frame)?.labels.to_vec();
            Ok((labels, seg.labels_from_backend()))
        })
        .collect()
}

#[test]
fn honest_labels_are_checked_once_then_used() {
    let expected = reference();
    let (mut seg, runs) = Stand::segmenter(Meddle::Honest, false);
    let frames = segment(&mut seg, 3).unwrap();
    assert_eq!(runs.load(Ordering::Relaxed), 3);
    // The first frame is the check: our labels, and the logits are there.
    assert!(!frames[0].1);
    assert!(frames[1].1 && frames[2].1, "checked labels were not used");
    for (labels, _) in &frames {
        assert_eq!(labels, &expected);
    }
}

/// A frame of one class (a grey wall) cannot show a wrong resize convention:
/// such checks are repeated until a frame has content, or 30 times.
#[test]
fn a_frame_of_one_class_is_checked_again() {
    let model = tiny();
    let (h, w) = model.input_size();
    let grey = vec![128u8; (w * h * 3) as usize];
    let grey = FrameRef::new(w, h, &grey).unwrap();
    let (mut seg, runs) = Stand::segmenter(Meddle::Honest, false);
    let labels = seg.segment(grey).unwrap().labels;
    assert!(
        labels.iter().all(|&l| l == labels[0]),
        "the grey frame should be one class"
    );
    for _ in 0..4 {
        seg.segment(grey).unwrap();
        assert!(!seg.labels_from_backend(), "trusted after a uniform frame");
    }
    // A frame with content settles it: checked once more, then used.
    let frames = segment(&mut seg, 2).unwrap();
    assert!(
        !frames[0].1 && frames[1].1,
        "{:?}",
        (frames[0].1, frames[1].1)
    );
    assert_eq!(runs.load(Ordering::Relaxed), 7);

    // Only grey frames: after 30 inconclusive checks, agreement is enough.
    let (mut seg, _) = Stand::segmenter(Meddle::Honest, false);
    let used: Vec<bool> = (0..32)
        .map(|_| {
            seg.segment(grey).unwrap();
            seg.labels_from_backend()
        })
        .collect();
    assert_eq!(used.iter().position(|&u| u), Some(31), "{used:?}");
}

#[test]
fn a_pixel_of_rounding_is_tolerated() {
    let (mut seg, _) = Stand::segmenter(Meddle::OnePixelOff, true);
    let frames = segment(&mut seg, 2).unwrap();
    assert!(
        frames[1].1,
        "one pixel of 4096 off made the engine's argmax refused"
    );
}

/// Under `auto`, an engine argmax that failed its check is never asked for
/// again, and every frame carries our labels.
fn assert_falls_back_to_ours(meddle: Meddle) {
    let expected = reference();
    let (mut seg, runs) = Stand::segmenter(meddle, false);
    let frames = segment(&mut seg, 3).unwrap();
    assert_eq!(
        runs.load(Ordering::Relaxed),
        1,
        "the engine's argmax was asked for again after it was refused"
    );
    for (i, (labels, theirs)) in frames.iter().enumerate() {
        assert!(!theirs, "frame {i} used labels that failed the check");
        assert_eq!(labels, &expected, "frame {i}");
    }
    assert!(seg.logits().is_some());
}

/// Under `--argmax engine`, the first frame fails with an error that says
/// each of `words`.
fn assert_asked_for_is_an_error(meddle: Meddle, words: &[&str]) {
    let (mut seg, _) = Stand::segmenter(meddle, true);
    let err = segment(&mut seg, 1).unwrap_err().to_string();
    for word in words {
        assert!(err.contains(word), "{word:?} not in: {err}");
    }
}

#[test]
fn wrong_labels_by_default_fall_back_to_ours() {
    assert_falls_back_to_ours(Meddle::Shifted);
}

#[test]
fn wrong_labels_asked_for_are_an_error() {
    let words = ["--argmax engine", "agree", "--argmax host"];
    assert_asked_for_is_an_error(Meddle::Shifted, &words);
}

#[test]
fn a_failing_argmax_by_default_falls_back_to_ours() {
    assert_falls_back_to_ours(Meddle::Fails);
}

#[test]
fn a_failing_argmax_asked_for_is_an_error() {
    assert_asked_for_is_an_error(Meddle::Fails, &["cannot run here"]);
}
