//! A tiny software rasteriser that paints colour and class label together, so
//! every synthetic image comes with a pixel-exact ground truth.

/// An RGB image (linear floats, 0..255) plus its label map, painted in lock-step.
///
/// It also keeps the scratch space drawing needs, so a canvas reused with
/// [`Canvas::reset`] renders frame after frame without allocating.
pub struct Canvas {
    width: usize,
    height: usize,
    rgb: Vec<[f32; 3]>,
    labels: Vec<u8>,
    /// Scan-line crossings of the polygon being filled.
    crossings: Vec<f32>,
    /// The colours before a blur.
    unblurred: Vec<[f32; 3]>,
    /// Drawing order of a scene's objects.
    pub(crate) order: Vec<usize>,
}

impl Canvas {
    /// A canvas of `width` x `height` pixels, black and labelled `label`.
    pub fn new(width: usize, height: usize, label: u8) -> Self {
        Canvas {
            width,
            height,
            rgb: vec![[0.0; 3]; width * height],
            labels: vec![label; width * height],
            crossings: Vec::with_capacity(16),
            unblurred: Vec::new(),
            order: Vec::new(),
        }
    }

    /// Makes this canvas black and labelled `label` again, keeping its storage.
    pub fn reset(&mut self, label: u8) {
        self.rgb.fill([0.0; 3]);
        self.labels.fill(label);
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Paints pixel (x, y) with `color` and `label`.
    #[inline]
    pub fn put(&mut self, x: usize, y: usize, label: u8, color: [f32; 3]) {
        let i = y * self.width + x;
        self.rgb[i] = color;
        self.labels[i] = label;
    }

    /// Multiplies the colour in a rectangle by `factor` (shadows); labels stay.
    pub fn shade_rect(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, factor: f32) {
        let (xa, xb) = self.clip_x(x0, x1);
        let (ya, yb) = self.clip_y(y0, y1);
        for y in ya..yb {
            for x in xa..xb {
                let p = &mut self.rgb[y * self.width + x];
                for c in p.iter_mut() {
                    *c *= factor;
                }
            }
        }
    }

    fn clip_x(&self, a: f32, b: f32) -> (usize, usize) {
        let lo = a.min(b).round().clamp(0.0, self.width as f32) as usize;
        let hi = a.max(b).round().clamp(0.0, self.width as f32) as usize;
        (lo, hi)
    }

    fn clip_y(&self, a: f32, b: f32) -> (usize, usize) {
        let lo = a.min(b).round().clamp(0.0, self.height as f32) as usize;
        let hi = a.max(b).round().clamp(0.0, self.height as f32) as usize;
        (lo, hi)
    }

    /// Fills the axis-aligned rectangle [x0, x1) x [y0, y1).
    pub fn fill_rect(
        &mut self,
        x0: f32,
        y0: f32,
        x1: f32,
        y1: f32,
        label: u8,
        paint: &dyn Fn(usize, usize) -> [f32; 3],
    ) {
        let (xa, xb) = self.clip_x(x0, x1);
        let (ya, yb) = self.clip_y(y0, y1);
        for y in ya..yb {
            for x in xa..xb {
                self.put(x, y, label, paint(x, y));
            }
        }
    }

    /// Fills an ellipse centred on (cx, cy) with radii (rx, ry).
    pub fn fill_ellipse(
        &mut self,
        cx: f32,
        cy: f32,
        rx: f32,
        ry: f32,
        label: u8,
        paint: &dyn Fn(usize, usize) -> [f32; 3],
    ) {
        if rx <= 0.0 || ry <= 0.0 {
            return;
        }
        let (ya, yb) = self.clip_y(cy - ry, cy + ry + 1.0);
        for y in ya..yb {
            let dy = (y as f32 + 0.5 - cy) / ry;
            if dy.abs() > 1.0 {
                continue;
            }
            let half = rx * (1.0 - dy * dy).sqrt();
            let (xa, xb) = self.clip_x(cx - half, cx + half);
            for x in xa..xb {
                self.put(x, y, label, paint(x, y));
            }
        }
    }

    /// Fills a simple polygon (even-odd rule, pixel centres) given in pixels.
    pub fn fill_polygon(
        &mut self,
        points: &[(f32, f32)],
        label: u8,
        paint: &dyn Fn(usize, usize) -> [f32; 3],
    ) {
        if points.len() < 3 {
            return;
        }
        let ymin = points.iter().map(|p| p.1).fold(f32::INFINITY, f32::min);
        let ymax = points.iter().map(|p| p.1).fold(f32::NEG_INFINITY, f32::max);
        let (ya, yb) = self.clip_y(ymin, ymax + 1.0);
        let mut xs = std::mem::take(&mut self.crossings);
        for y in ya..yb {
            let sy = y as f32 + 0.5;
            xs.clear();
            for i in 0..points.len() {
                let (x0, y0) = points[i];
                let (x1, y1) = points[(i + 1) % points.len()];
                if (y0 <= sy && y1 > sy) || (y1 <= sy && y0 > sy) {
                    xs.push(x0 + (sy - y0) / (y1 - y0) * (x1 - x0));
                }
            }
            xs.sort_by(f32::total_cmp);
            for pair in xs.chunks_exact(2) {
                let (xa, xb) = self.clip_x(pair[0], pair[1]);
                for x in xa..xb {
                    self.put(x, y, label, paint(x, y));
                }
            }
        }
        self.crossings = xs;
    }

    /// Applies a 3x3 box blur to the colour only (camera defocus).
    pub fn blur(&mut self) {
        let (w, h) = (self.width, self.height);
        let mut src = std::mem::take(&mut self.unblurred);
        src.clear();
        src.extend_from_slice(&self.rgb);
        for y in 0..h {
            for x in 0..w {
                let mut acc = [0.0f32; 3];
                let mut n = 0.0;
                for yy in y.saturating_sub(1)..(y + 2).min(h) {
                    for xx in x.saturating_sub(1)..(x + 2).min(w) {
                        let p = src[yy * w + xx];
                        acc[0] += p[0];
                        acc[1] += p[1];
                        acc[2] += p[2];
                        n += 1.0;
                    }
                }
                self.rgb[y * w + x] = [acc[0] / n, acc[1] / n, acc[2] / n];
            }
        }
        self.unblurred = src;
    }

    /// Applies `f` to every colour (global lighting, sensor noise).
    pub fn map_colors(&mut self, mut f: impl FnMut(usize, [f32; 3]) -> [f32; 3]) {
        for (i, p) in self.rgb.iter_mut().enumerate() {
            *p = f(i, *p);
        }
    }

    /// Writes the colour as packed RGB8 into `out` (length 3 * w * h).
    pub fn write_rgb8(&self, out: &mut [u8]) {
        for (dst, p) in out.chunks_exact_mut(3).zip(&self.rgb) {
            for c in 0..3 {
                dst[c] = p[c].round().clamp(0.0, 255.0) as u8;
            }
        }
    }

    /// The label map, row-major.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }
}

/// Deterministic lattice hash in [0, 1).
#[inline]
pub fn hash2(x: i32, y: i32, seed: u32) -> f32 {
    let mut h = (x as u32)
        .wrapping_mul(0x8da6_b343)
        .wrapping_add((y as u32).wrapping_mul(0xd816_3841))
        .wrapping_add(seed.wrapping_mul(0xcb1a_b31f));
    h ^= h >> 13;
    h = h.wrapping_mul(0x5bd1_e995);
    h ^= h >> 15;
    (h & 0x00ff_ffff) as f32 / 16_777_216.0
}

/// Smooth value noise in [0, 1) with features about `scale` pixels wide.
pub fn value_noise(x: f32, y: f32, scale: f32, seed: u32) -> f32 {
    let (fx, fy) = (x / scale, y / scale);
    let (ix, iy) = (fx.floor() as i32, fy.floor() as i32);
    let (tx, ty) = (fx - ix as f32, fy - iy as f32);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let a = hash2(ix, iy, seed);
    let b = hash2(ix + 1, iy, seed);
    let c = hash2(ix, iy + 1, seed);
    let d = hash2(ix + 1, iy + 1, seed);
    let top = a + (b - a) * sx;
    let bottom = c + (d - c) * sx;
    top + (bottom - top) * sy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polygon_fills_a_square_exactly() {
        let mut c = Canvas::new(10, 10, 0);
        c.fill_polygon(
            &[(2.0, 2.0), (6.0, 2.0), (6.0, 6.0), (2.0, 6.0)],
            7,
            &|_, _| [1.0; 3],
        );
        let n = c.labels().iter().filter(|&&l| l == 7).count();
        assert_eq!(n, 16);
        assert_eq!(c.labels()[2 * 10 + 2], 7);
        assert_eq!(c.labels()[6 * 10 + 6], 0);
    }

    #[test]
    fn shapes_outside_the_canvas_are_clipped() {
        let mut c = Canvas::new(4, 4, 0);
        c.fill_rect(-10.0, -10.0, 100.0, 2.0, 3, &|_, _| [0.0; 3]);
        c.fill_ellipse(-50.0, -50.0, 3.0, 3.0, 9, &|_, _| [0.0; 3]);
        assert_eq!(c.labels().iter().filter(|&&l| l == 3).count(), 8);
        assert!(!c.labels().contains(&9));
    }

    #[test]
    fn noise_is_deterministic_and_bounded() {
        for i in 0..100 {
            let v = value_noise(i as f32 * 1.7, i as f32 * 0.3, 8.0, 42);
            assert!((0.0..1.0).contains(&v));
            assert_eq!(v, value_noise(i as f32 * 1.7, i as f32 * 0.3, 8.0, 42));
        }
    }
}
