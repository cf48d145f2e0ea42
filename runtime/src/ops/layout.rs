//! [`Layout`]: where each pixel of a convolution's padded input image
//! lives, with slack per plane and per row so that the rows a tile reads
//! spread over the sets of the L1 cache. Shared by the float convolution
//! ([`super::f32_conv`], `f32` pixels) and the int8 convolutions that read
//! an image of channel quads in place ([`super::int8_conv`], one `i32`
//! word per pixel and group of 4 channels): both read rows of 4-byte
//! elements, up to [`MAX_PANELS`] panels of [`NR`] wide, at one offset per
//! reduction index.

use super::gemm_f32::NR;
use super::kernels::MAX_PANELS;
use super::Geometry;

/// Where the padded input pixel `(c, y, x)` lives in the padded image:
/// `c * plane + y * row + (x % phases) * phase + x / phases`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    /// Padded rows per channel.
    pub(super) rows: usize,
    /// Phases per row (the horizontal stride).
    pub(super) phases: usize,
    /// Elements per phase: at least `ceil(padded width / phases)`.
    pub(super) phase: usize,
    /// Elements per row: `phases * phase`.
    pub(super) row: usize,
    /// Elements per channel: at least `rows * row`.
    pub(super) plane: usize,
}

impl Layout {
    /// The layout of `g`'s padded image whose rows spread best over the
    /// sets of the L1 cache while a tile reads `taps` reduction indices
    /// (see [`Layout::crowding`]), or the input's own layout where the
    /// convolution can read its input in place.
    pub(super) fn new(g: &Geometry, taps: usize) -> Layout {
        let tight = Layout::with_slack(g, 0, 0);
        if tight.is_input(g) {
            // Read in place: slack would cost a copy of the whole input,
            // which takes longer than the reloads it saves (a 1x1
            // convolution over 32 planes of 32 KiB ran 22 % slower).
            return tight;
        }
        Layout::spread(g, taps)
    }

    /// [`Layout::new`] for an image that is copied anyway: always the
    /// spread layout.
    pub(super) fn spread(g: &Geometry, taps: usize) -> Layout {
        let tight = Layout::with_slack(g, 0, 0);
        // The least slack that brings the crowding down to what the cache
        // holds comfortably, or as far down as it goes.
        let score = |l: &Layout| (l.crowding(g, taps).max(FEW_LINES_PER_SET), l.plane);
        let mut best = (score(&tight), tight);
        for row_lines in 0..=SLACK_LINES_PER_ROW {
            for plane_lines in 0..CACHE_SETS {
                let layout = Layout::with_slack(g, row_lines * LINE, plane_lines * LINE);
                let score = score(&layout);
                if score < best.0 {
                    best = (score, layout);
                }
            }
        }
        best.1
    }

    /// `g`'s tight padded layout (a phase per horizontal stride step) with
    /// `row_slack` elements more per phase and `plane_slack` more per
    /// channel.
    pub(super) fn with_slack(g: &Geometry, row_slack: usize, plane_slack: usize) -> Layout {
        let (rows, wp) = g.padded();
        let phases = g.stride.1.max(1);
        let phase = wp.div_ceil(phases) + row_slack;
        Layout {
            rows,
            phases,
            phase,
            row: phases * phase,
            plane: rows * phases * phase + plane_slack,
        }
    }

    /// Whether this is the input's own layout (no padding, stride 1, no
    /// slack): then the convolution reads the input in place.
    pub(super) fn is_input(&self, g: &Geometry) -> bool {
        g.padding == (0, 0, 0, 0)
            && self.phases == 1
            && self.row == g.in_size.1
            && self.plane == self.rows * self.row
    }

    /// Offset of padded column `x` within its row.
    pub(super) fn column(&self, x: usize) -> usize {
        (x % self.phases) * self.phase + x / self.phases
    }

    /// Offset of reduction index `i` (channel, then kernel row and column)
    /// from an output pixel's first input.
    pub(super) fn offset(&self, g: &Geometry, i: usize) -> usize {
        let (kh, kw) = g.kernel;
        let (c, rest) = (i / (kh * kw), i % (kh * kw));
        let (ky, kx) = (rest / kw, rest % kw);
        c * self.plane + ky * g.dilation.0 * self.row + self.column(kx * g.dilation.1)
    }

    /// Elements of the image, then `NR` of slack: the last panel of a row
    /// may read that far past its last valid pixel.
    pub(super) fn len(&self, channels: usize) -> usize {
        channels * self.plane + NR
    }

    /// The most cache lines that one L1 set must hold while a tile reads
    /// the pixel rows of its first `taps` reduction indices (every row
    /// `MAX_PANELS * NR` pixels wide, from a line-aligned start).
    ///
    /// Why: a tile reads the same pixels of many channel planes (and kernel
    /// rows). When the planes are a power-of-two size apart, as the 32 KiB
    /// planes of a 1x1 convolution over 64x128 pixels are, all of them fall
    /// into the same few of the 64 sets of the L1 cache (the line address
    /// mod 64, on every x86 and Arm core we target), which hold 8 to 12
    /// lines each: every output block then reloads them from L2. Slack per
    /// plane (and per row) spreads them out.
    pub(super) fn crowding(&self, g: &Geometry, taps: usize) -> usize {
        let mut per_set = [0usize; CACHE_SETS];
        let taps = g.k().min(taps);
        let width = MAX_PANELS * NR;
        // The offsets grow with the reduction index (channel, kernel row,
        // column; a column is within its row): consecutive windows that
        // overlap are merged so that no line is counted twice.
        let mut next_line = 0;
        for i in 0..taps {
            let o = self.offset(g, i);
            let (first, end) = (o / LINE, (o + width).div_ceil(LINE));
            for line in first.max(next_line)..end {
                per_set[line % CACHE_SETS] += 1;
            }
            next_line = next_line.max(end);
        }
        per_set.into_iter().max().unwrap_or(0)
    }
}

/// Elements (`f32` values or quad words, 4 bytes each) per 64-byte cache
/// line.
const LINE: usize = 16;
/// Sets of the L1 data cache: 64 on every x86 core (32 or 48 KiB, 8 or 12
/// ways) and on the Arm cores DLA-edge targets (a multiple of 64).
const CACHE_SETS: usize = 64;
/// Lines per L1 set that leave room for the weights and the output: a
/// layout this good is not worth more slack.
const FEW_LINES_PER_SET: usize = 8;
/// The most lines of slack per row tried by [`Layout::spread`].
const SLACK_LINES_PER_ROW: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;

    /// The float convolution's reduction chunk.
    const TAPS: usize = 256;

    #[test]
    fn padded_layouts_spread_their_rows_over_the_cache_sets() {
        for g in [
            Geometry::square(16, 16, (256, 512), 3, 1, 1),
            Geometry::square(16, 32, (256, 512), 3, 2, 1),
            Geometry::square(128, 64, (64, 128), 3, 1, 1),
            Geometry::square(32, 64, (32, 64), 3, 1, 1),
        ] {
            let tight = Layout::with_slack(&g, 0, 0);
            let chosen = Layout::new(&g, TAPS);
            let (before, after) = (tight.crowding(&g, TAPS), chosen.crowding(&g, TAPS));
            eprintln!(
                "{}: {before} -> {after} lines per set, {chosen:?}",
                g.describe()
            );
            assert!(after <= before && chosen.plane * 16 <= tight.plane * 17);
        }
        // Level0's planes (258 x 514) are 32 lines mod 64 sets apart: two
        // channels' rows share sets.
        let g = Geometry::square(16, 16, (256, 512), 3, 1, 1);
        assert!(Layout::new(&g, TAPS).crowding(&g, TAPS) < 12);
        // A 1x1 convolution without padding keeps reading its input in place.
        let g = Geometry::square(32, 64, (64, 128), 1, 1, 0);
        assert!(Layout::new(&g, TAPS).is_input(&g));
        // Unless it is copied anyway: then its planes spread too.
        assert!(Layout::spread(&g, TAPS).crowding(&g, TAPS) <= FEW_LINES_PER_SET);
    }
}
