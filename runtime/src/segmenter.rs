//! The one-call facade: frame in, label map out, with per-stage timings.
//! It wires pre-processing, a backend and post-processing and owns every
//! buffer they share, so segmenting a stream of frames allocates nothing in
//! our code once the first frame has set the sizes.

use std::time::{Duration, Instant};

use crate::backend::{default_threads, Backend, BackendConfig, Logits, TractBackend};
use crate::error::Result;
use crate::frame::FrameRef;
use crate::model::{Model, ModelCard};
use crate::postprocess::{Palette, Postprocessor, Upsampling};
use crate::preprocess::Preprocessor;

/// How a [`Segmenter`] should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmenterOptions {
    /// Inference threads (default: all cores).
    pub threads: usize,
    /// How label maps are brought to the frame size.
    pub upsampling: Upsampling,
}

impl Default for SegmenterOptions {
    fn default() -> Self {
        SegmenterOptions {
            threads: default_threads(),
            upsampling: Upsampling::default(),
        }
    }
}

/// Time spent in each stage for one frame.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimings {
    /// Resize + normalise.
    pub pre: Duration,
    /// Network.
    pub infer: Duration,
    /// Argmax + resampling to the frame size (the argmax is in `infer` when
    /// the backend takes it, see [`crate::backend::Backend::run_labels`]).
    pub post: Duration,
}

impl StageTimings {
    /// Sum of all stages.
    pub fn total(&self) -> Duration {
        self.pre + self.infer + self.post
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

/// Segments frames with one model on one backend.
pub struct Segmenter {
    card: ModelCard,
    palette: Palette,
    pre: Preprocessor,
    backend: Box<dyn Backend>,
    post: Postprocessor,
    /// Never use the backend's labels-only run.
    keep_logits: bool,
    /// Whether the backend's logits are the last frame's.
    logits_current: bool,
}

impl Segmenter {
    /// A segmenter running `model` on the default (tract) backend.
    pub fn new(model: &Model, options: SegmenterOptions) -> Result<Segmenter> {
        let backend = TractBackend::new(model, options.threads.max(1))?;
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
        Segmenter {
            palette: Palette::new(&card.classes),
            pre: Preprocessor::new(&card.input),
            post: Postprocessor::new(upsampling),
            backend,
            card,
            keep_logits: false,
            logits_current: false,
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
        // A backend that takes the argmax itself (ONNX Runtime on a GPU) can
        // return just labels: at the frame's size when it is bilinear from
        // another size, else at the output's size (copied or nearest).
        let got = if self.keep_logits {
            Got::Logits
        } else if self.post.needs_logits(output, width, height) {
            let labels = self.post.labels_mut(width, height);
            match self.backend.run_labels(labels, (width, height))? {
                true => Got::FrameLabels,
                false => Got::Logits,
            }
        } else {
            let labels = self.post.model_labels_mut(output.0 * output.1);
            match self.backend.run_labels(labels, output)? {
                true => Got::OutputLabels,
                false => Got::Logits,
            }
        };
        self.logits_current = got == Got::Logits;
        if self.logits_current {
            self.backend.run()?;
        }
        let t2 = Instant::now();
        let labels = match got {
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

    /// Always fetch the logits, so [`Segmenter::logits`] has every frame's
    /// (for dumps and numeric comparisons), even where the backend could
    /// return only labels.
    pub fn keep_logits(&mut self, keep: bool) {
        self.keep_logits = keep;
    }

    /// The raw logits of the last frame, or `None` when the backend returned
    /// only its labels (see [`Segmenter::keep_logits`]).
    pub fn logits(&self) -> Option<Logits<'_>> {
        self.logits_current.then(|| self.backend.logits())
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
}
