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

    /// Computes the label map of a `width` x `height` frame from `logits`.
    pub fn run(&mut self, logits: Logits<'_>, width: usize, height: usize) -> &[u8] {
        let n = logits.width * logits.height;
        self.labels.resize(width * height, 0);
        self.best.resize(n, 0.0);
        self.model_labels.resize(n, 0);
        argmax_into(logits, &mut self.best, &mut self.model_labels);
        if logits.width == width && logits.height == height {
            self.labels.copy_from_slice(&self.model_labels);
        } else if self.upsampling == Upsampling::Nearest {
            self.resampler.nearest_labels(
                &self.model_labels,
                logits.width,
                logits.height,
                &mut self.labels,
                width,
                height,
            );
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
