//! YUYV (YUY2, 4:2:2) to RGB8, the uncompressed format of USB cameras.
//!
//! BT.601 limited range ("studio swing", what UVC cameras send) in 8-bit
//! fixed point; writes into the caller's buffer, so converting a stream of
//! frames allocates nothing.

use crate::error::{Error, Result};

#[inline]
fn clamp(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Converts a `width` x `height` YUYV image whose rows are `stride` bytes
/// apart (at least `2 * width`) into packed RGB8 in `rgb` (`3 * width * height`
/// bytes). `width` must be even.
pub fn yuyv_to_rgb(
    yuyv: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    rgb: &mut [u8],
) -> Result<()> {
    if !width.is_multiple_of(2) || stride < 2 * width {
        return Err(Error::Frame(format!(
            "YUYV needs an even width and a stride of at least 2 * width; got {width} and {stride}"
        )));
    }
    let needed = if height == 0 {
        0
    } else {
        stride * (height - 1) + 2 * width
    };
    if yuyv.len() < needed || rgb.len() != 3 * width * height {
        return Err(Error::Frame(format!(
            "YUYV {width}x{height} needs {needed} input bytes (got {}) and {} output bytes (got {})",
            yuyv.len(),
            3 * width * height,
            rgb.len()
        )));
    }
    for (row, out) in rgb.chunks_exact_mut(3 * width).enumerate() {
        let src = &yuyv[row * stride..row * stride + 2 * width];
        for (px, o) in src.chunks_exact(4).zip(out.chunks_exact_mut(6)) {
            let d = px[1] as i32 - 128;
            let e = px[3] as i32 - 128;
            let rv = 409 * e + 128;
            let gv = -100 * d - 208 * e + 128;
            let bv = 516 * d + 128;
            for (k, y) in [px[0], px[2]].into_iter().enumerate() {
                let c = 298 * (y as i32 - 16);
                o[3 * k] = clamp((c + rv) >> 8);
                o[3 * k + 1] = clamp((c + gv) >> 8);
                o[3 * k + 2] = clamp((c + bv) >> 8);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook BT.601 limited-range formula in floating point.
    fn reference(y: u8, u: u8, v: u8) -> [f32; 3] {
        let (y, u, v) = (y as f32 - 16.0, u as f32 - 128.0, v as f32 - 128.0);
        [
            1.164 * y + 1.596 * v,
            1.164 * y - 0.392 * u - 0.813 * v,
            1.164 * y + 2.017 * u,
        ]
        .map(|c| c.clamp(0.0, 255.0))
    }

    #[test]
    fn matches_the_float_reference_on_every_chroma_pair() {
        let (w, h) = (256usize, 32usize);
        let stride = 2 * w + 8; // padded rows, as some drivers deliver
        let mut yuyv = vec![0u8; stride * h];
        let mut expect = Vec::new();
        let mut i = 0u32;
        for row in 0..h {
            for x in (0..w).step_by(2) {
                let y0 = (i * 37 % 256) as u8;
                let y1 = (i * 91 % 256) as u8;
                let u = (i % 256) as u8;
                let v = ((i / 256) * 8 % 256) as u8 ^ (row as u8);
                i += 1;
                let o = row * stride + 2 * x;
                yuyv[o..o + 4].copy_from_slice(&[y0, u, y1, v]);
                expect.push(reference(y0, u, v));
                expect.push(reference(y1, u, v));
            }
        }
        let mut rgb = vec![0u8; 3 * w * h];
        yuyv_to_rgb(&yuyv, w, h, stride, &mut rgb).unwrap();
        for (got, want) in rgb.chunks_exact(3).zip(&expect) {
            for k in 0..3 {
                assert!(
                    (got[k] as f32 - want[k]).abs() <= 1.5,
                    "{got:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn rejects_odd_widths_and_short_buffers() {
        let mut rgb = vec![0u8; 9];
        assert!(yuyv_to_rgb(&[0; 8], 3, 1, 6, &mut rgb).is_err());
        let mut rgb = vec![0u8; 12];
        assert!(yuyv_to_rgb(&[0; 4], 4, 1, 8, &mut rgb).is_err());
        assert!(yuyv_to_rgb(&[16, 128, 235, 128, 0, 0, 0, 0], 4, 1, 8, &mut rgb).is_ok());
        assert_eq!(&rgb[..6], &[0, 0, 0, 255, 255, 255]);
    }
}
