//! The one-call facade: frame in, label map out, with per-stage timings.
//! It wires pre-processing, a backend and post-processing and owns every
//! buffer they share, so segmenting a stream of frames allocates nothing in
//! our code once the first frame has set the sizes.

use std::time::Instant;

use crate::backend::{
    default_threads, describe_placement, Backend, BackendConfig, Logits, NodePlacement, Pinning,
    TractBackend,
};
use crate::error::{Error, Result};
use crate::frame::FrameRef;
use crate::model::{Model, ModelCard};
use crate::postprocess::{Palette, Postprocessor, Upsampling};
use crate::preprocess::Preprocessor;
use crate::timings::StageTimings;

/// How a [`Segmenter`] should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmenterOptions {
    /// Inference threads (default: all cores).
    pub threads: usize,
    /// Whether those threads are bound to cores ([`Pinning`]).
    pub pinning: Pinning,
    /// How label maps are brought to the frame size.
    pub upsampling: Upsampling,
}

impl Default for SegmenterOptions {
    fn default() -> Self {
        SegmenterOptions {
            threads: default_threads(),
            pinning: Pinning::Auto,
            upsampling: Upsampling::default(),
        }
    }
}

/// The result of segmenting one frame; borrows the segmenter's buffers.
#[derive(Debug, Clone, Copy)]
pub struct Segmentation<'a> {
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// One class ID per frame pixel, row-major.
    pub labels: &'a [u8],
    /// Stage timings of this frame.
    pub timings: StageTimings,
}

/// What the backend handed over for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    /// The logits: the post-processor takes the argmax.
    Logits,
    /// Labels at the network's output size, to copy or enlarge.
    OutputLabels,
    /// Labels at the frame's size: done.
    FrameLabels,
}

/// Share of a frame's pixels on which a backend's own labels must agree with
/// the argmax we take of its logits before they are used. Not 100 %: ONNX
/// Runtime's Resize interpolates every class score, our upsampling only next
/// to class boundaries, and rounding differs (1 pixel of 921 600 at 1280x720
/// on the CPU provider). A wrong axis, layout or pixel-centre convention
/// disagrees on far more.
const MIN_AGREEMENT: f64 = 0.999;

/// A check frame whose labels are nearly all one class (a lens cap, a wall)
/// proves little: agreement there says nothing about class boundaries,
/// where a resize convention would show. Such frames are checked again, at
/// most this many times, before agreement on them is enough.
const MAX_INCONCLUSIVE_CHECKS: u32 = 30;

/// Share of a frame's pixels outside its commonest class below which a
/// check on it is inconclusive.
const MIN_MINORITY: f64 = 0.01;

/// Whether one kind of labels-only run of the backend may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// Not checked yet, or only on nearly uniform frames (how many): the
    /// next such frame is compared with our argmax.
    Unchecked(u32),
    /// Agreed with our argmax.
    Trusted,
    /// Disagreed or failed, and the user did not ask for it: use the logits.
    Refused,
}

/// Segments frames with one model on one backend.
pub struct Segmenter {
    card: ModelCard,
    palette: Palette,
    pre: Preprocessor,
    backend: Box<dyn Backend>,
    post: Postprocessor,
    /// Never use the backend's labels-only run.
    keep_logits: bool,
    /// What the backend handed over for the last frame (`None` before one).
    last: Option<Got>,
    /// Whether the backend's labels at the output's size may be used.
    output_labels_trust: Trust,
    /// Whether the backend's labels resized to the frame may be used.
    frame_labels_trust: Trust,
    /// The backend's labels of a check frame, beside ours.
    theirs: Vec<u8>,
}

impl Segmenter {
    /// A segmenter running `model` on the default (tract) backend.
    pub fn new(model: &Model, options: SegmenterOptions) -> Result<Segmenter> {
        let backend = TractBackend::with_pinning(model, options.threads.max(1), options.pinning)?;
        Ok(Self::with_backend(
            model,
            Box::new(backend),
            options.upsampling,
        ))
    }

    /// A segmenter running `model` on the backend `config` describes (tract,
    /// or ONNX Runtime in builds with the `ort` feature).
    pub fn with_config(
        model: &Model,
        config: &BackendConfig,
        upsampling: Upsampling,
    ) -> Result<Segmenter> {
        Ok(Self::with_backend(model, config.build(model)?, upsampling))
    }

    /// A segmenter running `model` on a backend built by the caller.
    pub fn with_backend(
        model: &Model,
        backend: Box<dyn Backend>,
        upsampling: Upsampling,
    ) -> Segmenter {
        let card = model.card().clone();
        let trust = if backend.labels_exact() {
            Trust::Trusted
        } else {
            Trust::Unchecked(0)
        };
        Segmenter {
            palette: Palette::new(&card.classes),
            pre: Preprocessor::new(&card.input),
            post: Postprocessor::new(upsampling),
            backend,
            card,
            keep_logits: false,
            last: None,
            output_labels_trust: trust,
            frame_labels_trust: trust,
            theirs: Vec::new(),
        }
    }

    /// Segments one frame of any size; labels come back at the frame's size.
    pub fn segment(&mut self, frame: FrameRef<'_>) -> Result<Segmentation<'_>> {
        let t0 = Instant::now();
        self.pre.run(frame, self.backend.input_mut())?;
        let t1 = Instant::now();
        let (width, height) = (frame.width() as usize, frame.height() as usize);
        let shape = self.backend.logits();
        let output = (shape.width, shape.height);
        let mut got = if self.keep_logits {
            Got::Logits
        } else {
            self.try_labels(output, width, height)?
        };
        // The first labels-only frame of each kind is checked against our
        // argmax of the same frame; that leaves our labels in place.
        let checked = got != Got::Logits && matches!(self.trust_mut(got), Trust::Unchecked(_));
        if checked {
            self.check_labels(got, output, width, height)?;
            got = Got::Logits;
        } else if got == Got::Logits {
            self.backend.run()?;
        }
        self.last = Some(got);
        let t2 = Instant::now();
        let labels = match got {
            _ if checked => self.post.labels(),
            Got::Logits => self.post.run(self.backend.logits(), width, height),
            Got::OutputLabels => self.post.run_from_labels(output, width, height),
            Got::FrameLabels => self.post.labels(),
        };
        let t3 = Instant::now();
        Ok(Segmentation {
            width: frame.width(),
            height: frame.height(),
            labels,
            timings: StageTimings {
                pre: t1 - t0,
                infer: t2 - t1,
                post: t3 - t2,
            },
        })
    }

    /// Asks the backend for labels only: a backend that takes the argmax
    /// itself (ONNX Runtime on a GPU) returns them at the frame's size when
    /// it is bilinear from another size, else at the output's size (then
    /// copied or enlarged nearest). `Got::Logits` when it cannot (nothing ran
    /// yet), when its labels of that kind were refused, or when its first
    /// labels-only run failed and the user did not ask for it.
    fn try_labels(&mut self, output: (usize, usize), width: usize, height: usize) -> Result<Got> {
        let (kind, size) = if self.post.needs_logits(output, width, height) {
            (Got::FrameLabels, (width, height))
        } else {
            (Got::OutputLabels, output)
        };
        let trust = *self.trust_mut(kind);
        if trust == Trust::Refused {
            return Ok(Got::Logits);
        }
        let labels = match kind {
            Got::FrameLabels => self.post.labels_mut(width, height),
            _ => self.post.model_labels_mut(output.0 * output.1),
        };
        match self.backend.run_labels(labels, size) {
            Ok(true) => Ok(kind),
            Ok(false) => Ok(Got::Logits),
            Err(err) if matches!(trust, Trust::Unchecked(_)) && !self.backend.labels_required() => {
                log::warn!(
                    "{}: its own argmax failed ({err}); taking the argmax on the host from now on",
                    self.backend.name()
                );
                *self.trust_mut(kind) = Trust::Refused;
                Ok(Got::Logits)
            }
            Err(err) => Err(err),
        }
    }

    /// Compares the backend's labels of this frame (`got`, already written)
    /// with our argmax of the same frame's logits, then trusts or refuses
    /// that kind of labels-only run from now on. Leaves our labels in the
    /// post-processor and the backend's logits current.
    fn check_labels(
        &mut self,
        got: Got,
        output: (usize, usize),
        width: usize,
        height: usize,
    ) -> Result<()> {
        let theirs = match got {
            Got::OutputLabels => self.post.run_from_labels(output, width, height),
            _ => self.post.labels(),
        };
        self.theirs.clear();
        self.theirs.extend_from_slice(theirs);
        self.backend.run()?;
        let ours = self.post.run(self.backend.logits(), width, height);
        let same = ours
            .iter()
            .zip(&self.theirs)
            .filter(|(a, b)| a == b)
            .count();
        let share = same as f64 / ours.len().max(1) as f64;
        let minority = minority_share(ours);
        let name = self.backend.name();
        let what = match got {
            Got::OutputLabels => "at the network's output size",
            _ => "resized to the frame",
        };
        let required = self.backend.labels_required();
        let trust = self.trust_mut(got);
        if share >= MIN_AGREEMENT {
            if let Trust::Unchecked(inconclusive) = trust {
                if minority < MIN_MINORITY && *inconclusive < MAX_INCONCLUSIVE_CHECKS {
                    *inconclusive += 1;
                    log::debug!(
                        "{name}: its own argmax ({what}) agrees with ours on a {width}x{height} \
                         frame of nearly one class; checking the next frame too"
                    );
                    return Ok(());
                }
            }
            log::info!(
                "{name}: its own argmax ({what}) agrees with ours on {:.4} % of a {width}x{height} \
                 frame; only class IDs are copied back from now on",
                share * 100.0
            );
            *trust = Trust::Trusted;
        } else if required {
            return Err(Error::Backend {
                backend: name,
                reason: format!(
                    "--argmax engine: its labels ({what}) agree with the argmax of its own logits \
                     on only {:.2} % of a {width}x{height} frame ({:.1} % expected); \
                     run with --argmax host",
                    share * 100.0,
                    MIN_AGREEMENT * 100.0
                ),
            });
        } else {
            log::warn!(
                "{name}: its own argmax ({what}) agrees with ours on only {:.2} % of a \
                 {width}x{height} frame ({:.1} % expected); taking the argmax on the host \
                 from now on",
                share * 100.0,
                MIN_AGREEMENT * 100.0
            );
            *trust = Trust::Refused;
        }
        Ok(())
    }

    fn trust_mut(&mut self, got: Got) -> &mut Trust {
        match got {
            Got::FrameLabels => &mut self.frame_labels_trust,
            _ => &mut self.output_labels_trust,
        }
    }

    /// Whether the last frame's labels came from the backend's own argmax
    /// (see [`Backend::run_labels`]) rather than from ours.
    pub fn labels_from_backend(&self) -> bool {
        matches!(self.last, Some(Got::OutputLabels | Got::FrameLabels))
    }

    /// Always fetch the logits, so [`Segmenter::logits`] has every frame's
    /// (for dumps and numeric comparisons), even where the backend could
    /// return only labels.
    pub fn keep_logits(&mut self, keep: bool) {
        self.keep_logits = keep;
    }

    /// The raw logits of the last frame, or `None` when the backend returned
    /// only its labels (see [`Segmenter::keep_logits`]).
    pub fn logits(&self) -> Option<Logits<'_>> {
        (self.last == Some(Got::Logits)).then(|| self.backend.logits())
    }

    /// The model card of the running model.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Colours of the model's classes.
    pub fn palette(&self) -> &Palette {
        &self.palette
    }

    /// Name of the backend in use.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The CPU each inference worker is bound to (see [`Backend::pinned_cpus`]).
    pub fn pinned_cpus(&self) -> &[usize] {
        self.backend.pinned_cpus()
    }

    /// The backend's nodes per execution provider (see [`Backend::placement`]).
    pub fn placement(&self) -> &[NodePlacement] {
        self.backend.placement()
    }

    /// Which micro-kernel each of our convolutions runs on (see
    /// [`Backend::conv_kernels`]): what a benchmark on this CPU measured.
    pub fn conv_kernels(&self) -> Vec<crate::backend::ConvKernel> {
        self.backend.conv_kernels()
    }

    /// The backend's name, with its node placement when it reported one:
    /// `ort-cuda (460 nodes on CUDA, 58 on CPU)`.
    pub fn backend_description(&self) -> String {
        match describe_placement(self.placement()) {
            Some(line) => format!("{} ({line})", self.backend_name()),
            None => self.backend_name().to_string(),
        }
    }
}

/// Share of `labels` outside their commonest class.
fn minority_share(labels: &[u8]) -> f64 {
    let mut counts = [0usize; 256];
    for &l in labels {
        counts[l as usize] += 1;
    }
    let commonest = counts.iter().copied().max().unwrap_or(0);
    (labels.len() - commonest) as f64 / labels.len().max(1) as f64
}
