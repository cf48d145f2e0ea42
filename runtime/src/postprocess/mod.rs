//! Post-processing: logits -> class-ID label map at the frame's size, then
//! colour masks, overlays and coverage for people and programs to use.
//!
//! Two ways to reach the frame size (the model often runs smaller than the
//! camera): `Nearest` takes the argmax at the model's resolution and
//! replicates it (cheap, blocky when enlarging a lot); `Bilinear` interpolates
//! the logits at every frame pixel before the argmax (smooth boundaries; only
//! pixels next to a class boundary pay for the per-class interpolation).

mod argmax;
mod palette;

pub use argmax::{argmax_into, Resampler};
pub use palette::{coverage, Palette};

use std::str::FromStr;

use crate::backend::Logits;

/// How label maps are brought to the frame size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Upsampling {
    /// Argmax at model resolution, then nearest neighbour.
    Nearest,
    /// Bilinear interpolation of the logits, then argmax per frame pixel.
    #[default]
    Bilinear,
}

impl FromStr for Upsampling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nearest" => Ok(Upsampling::Nearest),
            "bilinear" => Ok(Upsampling::Bilinear),
            other => Err(format!(
                "unknown upsampling {other:?}: expected \"nearest\" or \"bilinear\""
            )),
        }
    }
}

/// Turns logits into a frame-sized label map, reusing its buffers across frames.
#[derive(Debug, Default)]
pub struct Postprocessor {
    upsampling: Upsampling,
    best: Vec<f32>,
    model_labels: Vec<u8>,
    labels: Vec<u8>,
    resampler: Resampler,
}

impl Postprocessor {
    /// A post-processor that brings labels to frame size with `upsampling`.
    pub fn new(upsampling: Upsampling) -> Postprocessor {
        Postprocessor {
            upsampling,
            ..Default::default()
        }
    }

    /// Whether a `width` x `height` frame's label map needs the logits, not
    /// just the labels at the model's `output` size (width, height): only
    /// bilinear upsampling to another size interpolates the scores.
    pub fn needs_logits(&self, output: (usize, usize), width: usize, height: usize) -> bool {
        output != (width, height) && self.upsampling == Upsampling::Bilinear
    }

    /// The buffer for labels at the model's output size (`pixels` long), for a
    /// backend that takes the argmax itself to fill before
    /// [`Postprocessor::run_from_labels`].
    pub fn model_labels_mut(&mut self, pixels: usize) -> &mut [u8] {
        self.model_labels.resize(pixels, 0);
        &mut self.model_labels
    }

    /// The frame-size label map (`width * height`) for a backend that
    /// resizes and takes the argmax itself to fill; [`Postprocessor::labels`]
    /// then returns it.
    pub fn labels_mut(&mut self, width: usize, height: usize) -> &mut [u8] {
        self.labels.resize(width * height, 0);
        &mut self.labels
    }

    /// Computes the label map of a `width` x `height` frame from the labels at
    /// the model's `output` size written into [`Postprocessor::model_labels_mut`].
    /// Only valid when [`Postprocessor::needs_logits`] said no.
    pub fn run_from_labels(
        &mut self,
        output: (usize, usize),
        width: usize,
        height: usize,
    ) -> &[u8] {
        self.labels.resize(width * height, 0);
        self.resample_labels(output, width, height);
        &self.labels
    }

    /// Same size: copy; else nearest neighbour.
    fn resample_labels(&mut self, (ow, oh): (usize, usize), width: usize, height: usize) {
        if (ow, oh) == (width, height) {
            self.labels.copy_from_slice(&self.model_labels[..ow * oh]);
        } else {
            self.resampler.nearest_labels(
                &self.model_labels,
                ow,
                oh,
                &mut self.labels,
                width,
                height,
            );
        }
    }

    /// Computes the label map of a `width` x `height` frame from `logits`.
    pub fn run(&mut self, logits: Logits<'_>, width: usize, height: usize) -> &[u8] {
        let n = logits.width * logits.height;
        self.labels.resize(width * height, 0);
        self.best.resize(n, 0.0);
        self.model_labels.resize(n, 0);
        argmax_into(logits, &mut self.best, &mut self.model_labels);
        let output = (logits.width, logits.height);
        if !self.needs_logits(output, width, height) {
            self.resample_labels(output, width, height);
        } else {
            self.resampler.bilinear_argmax(
                logits,
                &self.model_labels,
                &mut self.labels,
                width,
                height,
            );
        }
        &self.labels
    }

    /// The label map of the last [`Postprocessor::run`].
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }
}
