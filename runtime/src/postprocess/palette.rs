//! Making decisions visible and countable: colour masks, alpha overlays and
//! per-class pixel coverage.

use crate::classes::ClassInfo;

/// Colour of each label value; labels outside the class list (e.g. 255) are black.
#[derive(Debug, Clone)]
pub struct Palette {
    colors: [[u8; 3]; 256],
}

impl Palette {
    /// The palette of a model's classes.
    pub fn new(classes: &[ClassInfo]) -> Palette {
        let mut colors = [[0u8; 3]; 256];
        for c in classes {
            colors[c.id as usize] = c.color;
        }
        Palette { colors }
    }

    /// Colour of label `l`.
    pub fn color(&self, l: u8) -> [u8; 3] {
        self.colors[l as usize]
    }

    /// Writes the colour mask of `labels` as packed RGB8 into `out`.
    pub fn colorize(&self, labels: &[u8], out: &mut [u8]) {
        for (px, &l) in out.chunks_exact_mut(3).zip(labels) {
            px.copy_from_slice(&self.colors[l as usize]);
        }
    }

    /// Blends the class colours over `rgb` with opacity `alpha` (0 = frame only,
    /// 1 = mask only) into `out`; all three are packed RGB8 of the same size.
    pub fn overlay(&self, rgb: &[u8], labels: &[u8], alpha: f32, out: &mut [u8]) {
        let a = (alpha.clamp(0.0, 1.0) * 256.0).round() as u32;
        let keep = 256 - a;
        for ((dst, src), &l) in out.chunks_exact_mut(3).zip(rgb.chunks_exact(3)).zip(labels) {
            let c = self.colors[l as usize];
            for k in 0..3 {
                dst[k] = ((src[k] as u32 * keep + c[k] as u32 * a + 128) >> 8) as u8;
            }
        }
    }
}

/// Fraction of pixels of each class in `labels` (`out[c]` for class `c`).
pub fn coverage(labels: &[u8], out: &mut [f32]) {
    let mut counts = [0u64; 256];
    for &l in labels {
        counts[l as usize] += 1;
    }
    let total = labels.len().max(1) as f32;
    for (c, o) in out.iter_mut().enumerate() {
        *o = counts[c] as f32 / total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::cityscapes_classes;

    #[test]
    fn colorize_uses_class_colours_and_black_for_ignore() {
        let p = Palette::new(&cityscapes_classes());
        let mut out = [0u8; 6];
        p.colorize(&[13, 255], &mut out);
        assert_eq!(out, [0, 0, 142, 0, 0, 0]);
    }

    #[test]
    fn overlay_endpoints_are_frame_and_mask() {
        let p = Palette::new(&cityscapes_classes());
        let rgb = [10u8, 20, 30];
        let mut out = [0u8; 3];
        p.overlay(&rgb, &[0], 0.0, &mut out);
        assert_eq!(out, rgb);
        p.overlay(&rgb, &[0], 1.0, &mut out);
        assert_eq!(out, [128, 64, 128]);
        p.overlay(&rgb, &[0], 0.5, &mut out);
        assert_eq!(out, [69, 42, 79]);
    }

    #[test]
    fn coverage_sums_to_one_over_present_classes() {
        let mut cov = [0.0f32; 3];
        coverage(&[0, 0, 1, 2], &mut cov);
        assert_eq!(cov, [0.5, 0.25, 0.25]);
    }
}
