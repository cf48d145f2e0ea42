//! Pre-processing: RGB8 frame -> resized -> normalised NCHW f32, written
//! straight into the backend's input tensor.
//!
//! Resizing happens on u8 pixels with `fast_image_resize` (SIMD on x86 and
//! NEON), which is several times cheaper than resizing floats; normalisation
//! then runs through a 256-entry lookup table per channel. Our buffers are
//! allocated once; a frame at the model's size costs no allocation, and one
//! that needs resizing only the filter coefficients fast_image_resize computes
//! (and frees) inside each call (runtime/tests/allocations.rs counts both).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::error::{Error, Result};
use crate::frame::FrameRef;
use crate::model::InputSpec;

/// Turns frames of any size into the model's normalised input tensor.
pub struct Preprocessor {
    width: u32,
    height: u32,
    swap_rb: bool,
    lut: [[f32; 256]; 3],
    resizer: Resizer,
    options: ResizeOptions,
    resized: Image<'static>,
}

impl Preprocessor {
    /// A pre-processor for a model input described by `spec`.
    pub fn new(spec: &InputSpec) -> Preprocessor {
        let swap_rb = spec.color == "BGR";
        // lut[c] normalises frame channel c (R, G, B) with the statistics of
        // the network channel it lands in.
        let mut lut = [[0.0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            let plane = if swap_rb { 2 - c } else { c };
            for (v, out) in table.iter_mut().enumerate() {
                *out = (v as f32 / spec.scale - spec.mean[plane]) / spec.std[plane];
            }
        }
        Preprocessor {
            width: spec.width,
            height: spec.height,
            swap_rb,
            lut,
            resizer: Resizer::new(),
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
            resized: Image::new(spec.width, spec.height, PixelType::U8x3),
        }
    }

    /// Resizes and normalises `frame` into `out` (1x3xHxW, NCHW).
    pub fn run(&mut self, frame: FrameRef<'_>, out: &mut [f32]) -> Result<()> {
        let plane = (self.width * self.height) as usize;
        if out.len() != 3 * plane {
            return Err(Error::Frame(format!(
                "input tensor holds {} values, expected 3x{}x{}",
                out.len(),
                self.height,
                self.width
            )));
        }
        let pixels: &[u8] = if frame.width() == self.width && frame.height() == self.height {
            frame.data()
        } else {
            let src = ImageRef::new(frame.width(), frame.height(), frame.data(), PixelType::U8x3)
                .map_err(|e| Error::Frame(format!("cannot view frame for resizing: {e}")))?;
            self.resizer
                .resize(&src, &mut self.resized, &self.options)
                .map_err(|e| Error::Frame(format!("resize failed: {e}")))?;
            self.resized.buffer()
        };
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        let (first, last) = if self.swap_rb { (b, r) } else { (r, b) };
        for (i, px) in pixels.chunks_exact(3).enumerate() {
            first[i] = self.lut[0][px[0] as usize];
            g[i] = self.lut[1][px[1] as usize];
            last[i] = self.lut[2][px[2] as usize];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(w: u32, h: u32, color: &str) -> InputSpec {
        InputSpec {
            name: None,
            height: h,
            width: w,
            color: color.into(),
            layout: "NCHW".into(),
            scale: 255.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    /// Naive reference: per-pixel formula, no lookup table.
    fn reference(data: &[u8], s: &InputSpec) -> Vec<f32> {
        let plane = (s.width * s.height) as usize;
        let mut out = vec![0.0; 3 * plane];
        for i in 0..plane {
            for c in 0..3 {
                out[c * plane + i] = (data[3 * i + c] as f32 / s.scale - s.mean[c]) / s.std[c];
            }
        }
        out
    }

    #[test]
    fn same_size_frames_match_the_reference_formula() {
        let s = spec(32, 32, "RGB");
        let data: Vec<u8> = (0..32 * 32 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let mut out = vec![0.0; 3 * 32 * 32];
        Preprocessor::new(&s)
            .run(FrameRef::new(32, 32, &data).unwrap(), &mut out)
            .unwrap();
        let want = reference(&data, &s);
        for (a, b) in out.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn bgr_models_get_swapped_channels() {
        let s = spec(32, 32, "BGR");
        let mut data = vec![0u8; 32 * 32 * 3];
        data.chunks_exact_mut(3)
            .for_each(|p| p.copy_from_slice(&[255, 0, 0]));
        let mut out = vec![0.0; 3 * 32 * 32];
        Preprocessor::new(&s)
            .run(FrameRef::new(32, 32, &data).unwrap(), &mut out)
            .unwrap();
        // Red ends up in the last plane, normalised with the last channel's stats.
        let want = (1.0 - 0.406) / 0.225;
        assert!((out[2 * 1024] - want).abs() < 1e-5);
    }

    #[test]
    fn uniform_frames_stay_uniform_after_resizing() {
        let s = spec(64, 32, "RGB");
        let data = vec![128u8; 100 * 70 * 3];
        let mut out = vec![0.0; 3 * 64 * 32];
        Preprocessor::new(&s)
            .run(FrameRef::new(100, 70, &data).unwrap(), &mut out)
            .unwrap();
        let want = (128.0 / 255.0 - 0.485) / 0.229;
        assert!(out[..2048].iter().all(|v| (v - want).abs() < 1e-5));
    }

    #[test]
    fn wrong_tensor_size_is_an_error() {
        let s = spec(32, 32, "RGB");
        let data = vec![0u8; 32 * 32 * 3];
        let mut out = vec![0.0; 10];
        assert!(Preprocessor::new(&s)
            .run(FrameRef::new(32, 32, &data).unwrap(), &mut out)
            .is_err());
    }
}
