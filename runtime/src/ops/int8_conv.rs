//! [`Int8Conv`]: a tract operator that runs one quantized 2-D convolution
//! (ONNX QLinearConv: `u8` activations, `s8` weights, `i32` bias, per-channel
//! scales) as one pass: pack a panel of output pixels, multiply it with every
//! output channel in the micro-kernel, requantise in registers, store `u8`.
//!
//! Two families of kernels, chosen per layer at load ([`Int8Kernel::choose`],
//! one file per instruction set under [`super::kernels`]):
//! - byte quads, 4 reduction indices per pixel word, for symmetric weights:
//!   `u8 x s8` on AVX2 (`vpmaddubsw`, when every pair of neighbouring weights
//!   keeps `255 * (|w0| + |w1|) <= 32767`: 7-bit weights always do), `s8 x
//!   s8` on aarch64 (`sdot` where the core has the dot product, `smull`/
//!   `smlal`/`sadalp` elsewhere; any 8-bit weights). For `s8` the input's
//!   top bit is flipped while padding (`x ^ 0x80 = x - 128`) and the shift
//!   moves into the bias with the zero point;
//! - exact `i16` pairs for anything else (`vpmaddwd`, or portable Rust).
//!
//! Nothing the size of an im2col matrix is ever materialised: per frame the
//! input is copied once into a padded image, and the kernels read it there.
//! Where the input channels come in fours (every layer but a 3-channel
//! stem) at stride 1 or 2, a quad kernel reads an image of channel quads in
//! place ([`Reads::InPlace`]; x86 and NEON alike); on AVX-512 VNNI the stem
//! reads an image of column quads in place too ([`Image::ColumnQuads`]).
//! Otherwise each panel of
//! [`NR`] pixels is gathered from the padded image (`i16` with the zero
//! point subtracted, or bytes bordered by the zero point, which the quad
//! kernels' bias already accounts for) into a few KiB that stay in L1/L2
//! while all output channels consume it. Scratch buffers are per thread and
//! reused, so steady-state frames allocate nothing here but the output
//! tensor tract asks for.

use std::cell::RefCell;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::gemm::{
    micro_kernel, micro_kernel_portable, pair_word, PackedQuads, PackedWeights, Requant,
    Requantize, MR, NR,
};
use super::kernels::{Cpu, Int8Kernel};
use super::layout::Layout;
use super::SharedMut;

/// Shape of one convolution, all in elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Input channels.
    pub in_channels: usize,
    /// Input height and width.
    pub in_size: (usize, usize),
    /// Output channels.
    pub out_channels: usize,
    /// Output height and width.
    pub out_size: (usize, usize),
    /// Kernel height and width.
    pub kernel: (usize, usize),
    /// Strides (y, x).
    pub stride: (usize, usize),
    /// Dilations (y, x).
    pub dilation: (usize, usize),
    /// Zero padding: top, left, bottom, right.
    pub padding: (usize, usize, usize, usize),
}

impl Geometry {
    /// A square `k` x `k` convolution with equal strides and padding on every
    /// side, no dilation: the shapes DLA uses (and tests and benches build).
    pub fn square(
        in_channels: usize,
        out_channels: usize,
        in_size: (usize, usize),
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Geometry {
        let out = |n: usize| (n + 2 * pad - k) / stride + 1;
        Geometry {
            in_channels,
            in_size,
            out_channels,
            out_size: (out(in_size.0), out(in_size.1)),
            kernel: (k, k),
            stride: (stride, stride),
            dilation: (1, 1),
            padding: (pad, pad, pad, pad),
        }
    }

    /// Height and width of the padded input image.
    pub(crate) fn padded(&self) -> (usize, usize) {
        let (t, l, b, r) = self.padding;
        (self.in_size.0 + t + b, self.in_size.1 + l + r)
    }

    /// Length of one reduction (one output value's inputs).
    pub fn k(&self) -> usize {
        self.in_channels * self.kernel.0 * self.kernel.1
    }

    /// Multiply-accumulates per frame.
    pub fn macs(&self) -> usize {
        self.k() * self.out_channels * self.out_size.0 * self.out_size.1
    }

    /// One line for profiles: window, stride, channels, output size, MMAC.
    pub fn describe(&self) -> String {
        format!(
            "{}x{} stride {:?} {} -> {} channels, {}x{} out, {:.1} MMAC",
            self.kernel.0,
            self.kernel.1,
            self.stride,
            self.in_channels,
            self.out_channels,
            self.out_size.0,
            self.out_size.1,
            self.macs() as f64 / 1e6
        )
    }
}

/// What an [`Int8Conv`] computes with, shared by its clones.
#[derive(Debug)]
struct Prepared {
    /// The micro-kernel, chosen once for this layer on this CPU.
    kernel: Int8Kernel,
    /// Input zero point, subtracted while padding (pairs) or folded into
    /// the bias (quads).
    x_zero_point: i32,
    /// The weights in the kernel's layout.
    form: Form,
}

/// The packed weights and requantisation of one kernel family.
#[derive(Debug)]
enum Form {
    /// `i16` pairs: weights minus their zero points; a padded `i16` image
    /// holding `x - x_zero_point`. `offsets` (relative to the panel's first
    /// pixel in the padded image) has one entry per pair half.
    Pairs {
        weights: PackedWeights,
        requant: Requant,
        offsets: Vec<usize>,
    },
    /// Byte quads (symmetric weights): a padded image holding `x ^ flip`,
    /// bordered by `x_zero_point ^ flip`; the input zero point (and the
    /// `s8` shift) folded into the bias.
    Quads {
        weights: PackedQuads,
        requant: Requant,
        reads: Reads,
        /// `0x80` for the `s8` kernels (`x ^ 0x80` is `x - 128` as `s8`),
        /// 0 for the `u8` one.
        flip: u8,
        /// Bias and scale of each block of 4 rows (the NEON kernels'
        /// epilogue; zeros past the last channel); empty for other kernels.
        blocks4: Vec<([i32; 4], [f32; 4])>,
    },
}

/// Where a quad kernel's 16 pixels of quad words come from.
#[derive(Debug)]
enum Reads {
    /// Gathered per panel from a padded byte image with a plane per
    /// channel: `gather` has 4 byte offsets per quad (one per reduction
    /// index), and the kernel reads the packed panel at `panel[q] = q * NR`.
    /// Any stride, any channel count.
    Gathered {
        gather: Vec<usize>,
        panel: Vec<usize>,
    },
    /// Read in place from a padded image of quad words, one per pixel
    /// ([`Image`]: channel quads, whose word `(group, y, x)` holds channels
    /// `4 * group..4 * group + 4` at `(y, x)`, or column quads): one word
    /// offset per quad. The image has a [`Layout`] (two phases for channel
    /// quads at stride 2) spread over the L1 sets, so the 16 pixels of a
    /// panel are 16 neighbouring words: nothing is gathered per panel, the
    /// input is rewritten once per frame instead. `reach` is how many words
    /// the tiles read ([`in_place_reach`]). For every quad kernel (the NEON
    /// ones read `x ^ 0x80`), on the shapes [`in_place_image`] takes.
    InPlace {
        offsets: Vec<usize>,
        layout: Layout,
        reach: usize,
        image: Image,
    },
}

/// What the words of an image read in place hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Image {
    /// Word `(group, y, x)`: channels `4 * group..4 * group + 4` at `(y, x)`;
    /// quad `(group, ky, kx)` (layers with their channels in fours).
    ChannelQuads,
    /// Word `(c, y, i)`: channel `c` at the 4 padded columns from `stride *
    /// i` on, a window sliding along the row; quad `(c, ky, j)` holds taps
    /// `4 j..4 j + 4` of kernel row `ky`, zero weights past the kernel's
    /// width. For layers whose channels do not come in fours, above all the
    /// RGB stem: a 7x7 stem over 3 channels sums 42 quads instead of 37,
    /// and nothing is gathered per panel (see [`column_quads`]).
    ColumnQuads,
}

/// One quantized convolution on our integer kernel (see the module doc).
#[derive(Debug, Clone)]
pub struct Int8Conv {
    /// The convolution's shape.
    pub geometry: Geometry,
    /// The name of the tract node it replaced (for profiles).
    pub replaces: String,
    prepared: Arc<Prepared>,
    output: TypedFact,
    /// Where its output tensor comes from (shared with the model's other ops).
    pub arena: super::Arena,
}

impl PartialEq for Int8Conv {
    fn eq(&self, other: &Self) -> bool {
        self.geometry == other.geometry && Arc::ptr_eq(&self.prepared, &other.prepared)
    }
}
impl Eq for Int8Conv {}

/// Everything [`Int8Conv::new`] needs from a QLinearConv.
#[derive(Debug)]
pub struct QuantizedConv<'a> {
    /// The convolution's shape.
    pub geometry: Geometry,
    /// Weights, `[out][in][kh][kw]` row-major.
    pub weights: &'a [i8],
    /// Weight zero point per output channel (symmetric weights: zeros).
    pub w_zero_point: &'a [i32],
    /// Weight scale per output channel.
    pub w_scale: &'a [f32],
    /// Bias per output channel, in `x_scale * w_scale` units.
    pub bias: &'a [i32],
    /// Input zero point and scale.
    pub x: (i32, f32),
    /// Output zero point and scale.
    pub y: (i32, f32),
}

impl Int8Conv {
    /// Packs the weights and requantisation of `conv` for the fastest exact
    /// kernel this CPU has; `output` is the fact of the `u8` output it
    /// produces.
    pub fn new(conv: &QuantizedConv, replaces: &str, output: TypedFact) -> Int8Conv {
        let kernel = Int8Kernel::choose(conv.weights, conv.geometry.k(), conv.w_zero_point);
        Int8Conv::with_kernel(conv, kernel, replaces, output)
            .expect("the chosen kernel supports the layer")
    }

    /// [`Int8Conv::new`] on a given kernel (to compare kernels), or `None`
    /// when this CPU does not run it or it cannot sum these weights exactly.
    pub fn with_kernel(
        conv: &QuantizedConv,
        kernel: Int8Kernel,
        replaces: &str,
        output: TypedFact,
    ) -> Option<Int8Conv> {
        let g = conv.geometry;
        let k = g.k();
        if !kernel.supports(Cpu::detect(), conv.weights, k, conv.w_zero_point) {
            return None;
        }
        let (hp, wp) = g.padded();
        let (kh, kw) = g.kernel;
        let offsets: Vec<usize> = (0..k)
            .map(|i| {
                let (c, rest) = (i / (kh * kw), i % (kh * kw));
                let (ky, kx) = (rest / kw, rest % kw);
                c * hp * wp + ky * g.dilation.0 * wp + kx * g.dilation.1
            })
            .collect();
        let requant = Requant {
            bias: conv.bias.to_vec(),
            scale: conv
                .w_scale
                .iter()
                .map(|&ws| conv.x.1 * ws / conv.y.1)
                .collect(),
            zero_point: conv.y.0,
        };
        let form = if kernel.quads() {
            quads_form(conv, kernel, offsets, requant)
        } else {
            pairs_form(conv, offsets, requant)
        };
        Some(Int8Conv {
            geometry: g,
            replaces: replaces.to_string(),
            prepared: Arc::new(Prepared {
                kernel,
                x_zero_point: conv.x.0,
                form,
            }),
            output,
            arena: super::Arena::default(),
        })
    }

    /// The micro-kernel this convolution runs on.
    pub fn kernel(&self) -> Int8Kernel {
        self.prepared.kernel
    }

    /// Whether the kernel reads its input in place (an image of channel
    /// quads) rather than from panels gathered per 16 pixels.
    pub fn reads_in_place(&self) -> bool {
        matches!(
            self.prepared.form,
            Form::Quads {
                reads: Reads::InPlace { .. },
                ..
            }
        )
    }

    /// Runs the convolution on one `[1, C, H, W]` (or `[C, H, W]`) `u8` input
    /// into `out` (`[C_out, OH, OW]` row-major).
    pub fn run(&self, input: &[u8], out: &mut [u8]) {
        let g = &self.geometry;
        let (oh, ow) = g.out_size;
        assert_eq!(input.len(), g.in_channels * g.in_size.0 * g.in_size.1);
        assert_eq!(out.len(), g.out_channels * oh * ow);
        match &self.prepared.form {
            Form::Pairs {
                weights,
                requant,
                offsets,
            } => self.arena.padded_i16(|padded| {
                self.pad(input, padded);
                let padded = &padded[..];
                // SAFETY: `by_rows` gives each row to one task.
                by_rows(oh, out, |oy, scratch, out| unsafe {
                    self.row(weights, requant, offsets, padded, oy, scratch, out)
                });
            }),
            Form::Quads {
                flip,
                reads: Reads::Gathered { gather, .. },
                ..
            } => self.arena.padded_words(|words| {
                let padded = self.pad_bytes(input, *flip, words);
                // The farthest read of a vector gather: the last full panel
                // of the last row, 16 * stride bytes from its largest offset.
                let (sy, sx) = g.stride;
                let last_panel = (ow / NR).saturating_sub(1) * NR;
                let reach = gather.iter().max().copied().unwrap_or(0)
                    + (oh - 1) * sy * g.padded().1
                    + last_panel * sx
                    + 16 * sx;
                assert!(reach <= padded.len(), "padded image too short");
                // SAFETY: `by_rows` gives each row to one task.
                by_rows(oh, out, |oy, scratch, out| unsafe {
                    self.row_quads(padded, oy, scratch, out)
                });
            }),
            Form::Quads {
                reads: Reads::InPlace { reach, .. },
                ..
            } => self.arena.padded_words(|words| {
                self.pad_quads(input, words);
                let image = &words[..];
                assert!(*reach <= image.len(), "padded image too short");
                // SAFETY: `by_rows` gives each row to one task.
                by_rows(oh, out, |oy, _, out| unsafe {
                    self.row_in_place(image, oy, out)
                });
            }),
        }
    }

    /// Copies `input` (`x ^ flip`) into the padded image of channel quads
    /// ([`Reads::InPlace`]) bordered by the input zero point (`^ flip`), a
    /// group of 4 channels per task; or of column quads ([`pad_columns`]).
    ///
    /// [`pad_columns`]: Int8Conv::pad_columns
    /// Only the border is written besides the copy (the buffer is shared by
    /// convolutions with other zero points).
    fn pad_quads(&self, input: &[u8], words: &mut Vec<i32>) {
        let Form::Quads {
            reads:
                Reads::InPlace {
                    layout,
                    reach,
                    image,
                    ..
                },
            flip,
            ..
        } = &self.prepared.form
        else {
            unreachable!("pad_quads pads for reads in place")
        };
        let (g, flip) = (&self.geometry, *flip);
        let border_byte = (self.prepared.x_zero_point.clamp(0, 255) as u8) ^ flip;
        let border = i32::from_le_bytes([border_byte; 4]);
        let planes = match image {
            Image::ChannelQuads => g.in_channels / 4,
            Image::ColumnQuads => g.in_channels,
        };
        let image_len = planes * layout.plane;
        let len = image_len.max(*reach);
        if words.len() < len {
            words.resize(len, border);
        }
        words[image_len..len].fill(border);
        if *image == Image::ColumnQuads {
            return self.pad_columns(input, &mut words[..image_len], layout, (border_byte, flip));
        }
        let (h, w) = g.in_size;
        let (top, left, _, _) = g.padding;
        let (plane, wp) = (layout.plane, layout.row);
        let groups = planes;
        let shared = SharedMut::new(&mut words[..image_len]);
        let shared = &shared;
        let tasks = super::threads().min(groups);
        super::parallel(tasks, |t| {
            for group in t * groups / tasks..(t + 1) * groups / tasks {
                // SAFETY: group planes are disjoint and inside the image.
                let dst = unsafe { shared.part(group * plane, plane) };
                dst[..top * wp].fill(border);
                dst[(top + h) * wp..].fill(border);
                for y in 0..h {
                    let src = |i: usize| &input[((4 * group + i) * h + y) * w..][..w];
                    let rows = [src(0), src(1), src(2), src(3)];
                    let row = &mut dst[(y + top) * wp..][..wp];
                    if layout.phases == 1 {
                        row[..left].fill(border);
                        row[left + w..].fill(border);
                        interleave_quads(rows, flip, &mut row[left..left + w]);
                        continue;
                    }
                    // Stride 2: padded column x goes to phase x % 2, at x / 2.
                    row.fill(border);
                    let (p0, p1) = row.split_at_mut(layout.phase);
                    let (evens, odds) = if left % 2 == 0 {
                        (&mut p0[left / 2..], &mut p1[left / 2..])
                    } else {
                        (&mut p1[left / 2..], &mut p0[left.div_ceil(2)..])
                    };
                    let (evens, odds) = (&mut evens[..w.div_ceil(2)], &mut odds[..w / 2]);
                    interleave_quads_phased(rows, flip, evens, odds);
                }
            }
        });
    }

    /// Writes the image of column quads ([`Image::ColumnQuads`]) of `input ^
    /// flip` into `image` (a plane per channel): word `i` of padded row `y`
    /// of channel `c` holds the padded columns `stride * i..stride * i + 4`,
    /// the `border` byte (the input zero point `^ flip`) outside the input.
    /// A band of rows per task.
    fn pad_columns(
        &self,
        input: &[u8],
        image: &mut [i32],
        layout: &Layout,
        (border, flip): (u8, u8),
    ) {
        let g = &self.geometry;
        let (h, w) = g.in_size;
        let (top, left, _, _) = g.padding;
        let border_word = i32::from_le_bytes([border; 4]);
        let rows = g.in_channels * layout.rows;
        let shared = SharedMut::new(image);
        let shared = &shared;
        let tasks = super::threads().min(rows);
        super::parallel(tasks, |t| {
            for r in t * rows / tasks..(t + 1) * rows / tasks {
                let (c, y) = (r / layout.rows, r % layout.rows);
                // SAFETY: rows are disjoint and inside the image.
                let dst = unsafe { shared.part(c * layout.plane + y * layout.row, layout.row) };
                match y.checked_sub(top).filter(|&y| y < h) {
                    Some(y) => {
                        let src = &input[(c * h + y) * w..][..w];
                        column_words(src, left, g.stride.1, (border, flip), dst);
                    }
                    None => dst.fill(border_word),
                }
            }
        });
    }

    /// Output row `oy` of every channel, the kernel reading the image of
    /// quads in place: tiles of the kernel's panels, each block of
    /// output channels requantised into the output from its registers.
    ///
    /// # Safety
    /// No other thread may write row `oy` of `out` meanwhile; `image` as
    /// [`Int8Conv::pad_quads`] left it.
    unsafe fn row_in_place(&self, image: &[i32], oy: usize, out: &SharedMut<u8>) {
        let Form::Quads {
            weights,
            requant,
            reads: Reads::InPlace {
                offsets, layout, ..
            },
            blocks4,
            ..
        } = &self.prepared.form
        else {
            unreachable!("row_in_place reads in place")
        };
        let kernel = self.prepared.kernel;
        let (_, ow) = self.geometry.out_size;
        let wp = layout.row;
        let first = oy * self.geometry.stride.0 * wp;
        #[cfg(target_arch = "aarch64")]
        if !blocks4.is_empty() {
            for ox0 in (0..ow).step_by(NR) {
                let x = image[first + ox0..].as_ptr();
                let width = NR.min(ow - ox0);
                // SAFETY: as for the x86 tiles below.
                unsafe { self.panel_neon(x, offsets, oy, (ox0, width), out) };
            }
            return;
        }
        #[cfg(not(target_arch = "aarch64"))]
        let _ = blocks4; // the NEON kernels' epilogue
        let panels = kernel.panels();
        let mut acc = [[[0i32; NR]; MR]; super::kernels::MAX_PANELS];
        for ox0 in (0..ow).step_by(panels * NR) {
            let count = (ow - ox0).div_ceil(NR).min(panels);
            // Output pixel (oy, ox) reads from padded row oy * stride on,
            // from word ox of its phases.
            let x = image[first + ox0..].as_ptr();
            for b in 0..weights.blocks() {
                let finish = self.requantize_into(requant, weights, b, oy, ox0, count, out);
                // SAFETY: `run` checked that every offset reaches its 16
                // words of every panel inside `image`; `finish` covers rows
                // the block holds, pixels from `ox0` of row `oy`, which this
                // task alone writes.
                unsafe {
                    super::gemm::quads_kernel_panels(
                        kernel,
                        weights.block(b),
                        x,
                        offsets,
                        NR,
                        &mut acc[..count],
                        Some(&finish),
                    )
                };
            }
        }
    }

    /// The sink that requantises block `b`'s sums into output row `oy`
    /// from pixel `ox0`, over `panels` panels (fewer pixels at the row's
    /// end) and the block's channels (fewer in the last block).
    ///
    /// # Safety
    /// No other thread may write those pixels meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn requantize_into(
        &self,
        requant: &Requant,
        weights: &PackedQuads,
        b: usize,
        oy: usize,
        ox0: usize,
        panels: usize,
        out: &SharedMut<u8>,
    ) -> Requantize {
        let (oh, ow) = self.geometry.out_size;
        let c = b * weights.rows;
        let rows = weights.rows.min(self.geometry.out_channels - c);
        let width = (ow - ox0).min(panels * NR);
        Requantize {
            out: out.ptr((c * oh + oy) * ow + ox0, (rows - 1) * oh * ow + width),
            row_stride: oh * ow,
            bias: requant.bias[c..].as_ptr(),
            scale: requant.scale[c..].as_ptr(),
            zero_point: requant.zero_point,
            rows,
            width,
        }
    }

    /// Copies `input ^ flip` into the padded byte image bordered by the
    /// input zero point `^ flip`, a channel per task. Only the border is
    /// written besides the copy (the buffer is shared by convolutions with
    /// other zero points, so every border is rewritten each frame).
    fn pad_bytes<'a>(&self, input: &[u8], flip: u8, words: &'a mut Vec<i32>) -> &'a [u8] {
        let g = &self.geometry;
        let (h, w) = g.in_size;
        let (hp, wp) = g.padded();
        let (top, left, _, _) = g.padding;
        let border = (self.prepared.x_zero_point.clamp(0, 255) as u8) ^ flip;
        let plane = hp * wp;
        let image = g.in_channels * plane;
        // Slack past the end: a stride-s gather loads 16 * s bytes.
        let len = image + 4 * NR * g.stride.1.max(1);
        if words.len() * 4 < len {
            words.resize(len.div_ceil(4), 0);
        }
        let padded: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut words[..])[..len];
        padded[image..len].fill(border);
        let shared = SharedMut::new(&mut padded[..image]);
        let shared = &shared;
        let tasks = super::threads().min(g.in_channels);
        super::parallel(tasks, |t| {
            for c in t * g.in_channels / tasks..(t + 1) * g.in_channels / tasks {
                // SAFETY: channel planes are disjoint and inside `padded`.
                let dst = unsafe { shared.part(c * plane, plane) };
                dst[..top * wp].fill(border);
                dst[(top + h) * wp..].fill(border);
                for y in 0..h {
                    let src = &input[(c * h + y) * w..][..w];
                    let row = &mut dst[(y + top) * wp..][..wp];
                    row[..left].fill(border);
                    row[left + w..].fill(border);
                    let row = &mut row[left..left + w];
                    if flip == 0 {
                        row.copy_from_slice(src);
                    } else {
                        for (d, &s) in row.iter_mut().zip(src) {
                            *d = s ^ flip;
                        }
                    }
                }
            }
        });
        padded
    }

    /// Output row `oy` of every channel on a quad kernel.
    ///
    /// # Safety
    /// No other thread may write row `oy` of `out` meanwhile.
    unsafe fn row_quads(
        &self,
        padded: &[u8],
        oy: usize,
        scratch: &mut Scratch,
        out: &SharedMut<u8>,
    ) {
        let Form::Quads {
            weights,
            requant,
            blocks4,
            reads: Reads::Gathered { panel: at_quad, .. },
            ..
        } = &self.prepared.form
        else {
            unreachable!("row_quads gathers panels")
        };
        #[cfg(not(target_arch = "aarch64"))]
        let _ = blocks4; // the NEON kernels' epilogue
        let kernel = self.prepared.kernel;
        let ow = self.geometry.out_size.1;
        let n = weights.quads;
        let panels = kernel.panels();
        scratch.panel.resize(panels * n * NR, 0);
        let mut acc = [[[0i32; NR]; MR]; super::kernels::MAX_PANELS];
        for ox0 in (0..ow).step_by(panels * NR) {
            let count = (ow - ox0).div_ceil(NR).min(panels);
            let at = |j: usize| (ox0 + j * NR, NR.min(ow - ox0 - j * NR));
            for (j, panel) in scratch
                .panel
                .chunks_exact_mut(n * NR)
                .take(count)
                .enumerate()
            {
                let (px0, width) = at(j);
                self.pack_quads(padded, oy, px0, width, panel);
            }
            #[cfg(target_arch = "aarch64")]
            if !blocks4.is_empty() {
                for (j, panel) in scratch.panel.chunks_exact(n * NR).take(count).enumerate() {
                    self.panel_neon(panel.as_ptr(), at_quad, oy, at(j), out);
                }
                continue;
            }
            for b in 0..weights.blocks() {
                let finish = self.requantize_into(requant, weights, b, oy, ox0, count, out);
                let (a, acc) = (weights.block(b), &mut acc[..count]);
                let x = scratch.panel.as_ptr();
                // SAFETY: `count` packed panels of `n` quads each; `finish`
                // covers the block's rows from pixel `ox0` of row `oy`,
                // which this task alone writes.
                unsafe {
                    super::gemm::quads_kernel_panels(
                        kernel,
                        a,
                        x,
                        at_quad,
                        n * NR,
                        acc,
                        Some(&finish),
                    )
                };
            }
        }
    }

    /// 16 pixels of output row `oy` from `ox0` (`width` of them kept), every
    /// block of 4 channels on a NEON `s8` kernel, their quad words at
    /// `offsets` from `x` (a packed panel or the image read in place),
    /// requantised in the kernel's epilogue straight into the output rows,
    /// or through a scratch row for a partial panel or channels past the
    /// last. Per block only the bias, scales and row pointers change: this
    /// runs once per 16 pixels and block (200,000 times a DLA-tiny frame).
    ///
    /// # Safety
    /// No other thread may write these pixels of `out` meanwhile; `x` is
    /// valid for 16 words from every offset.
    #[cfg(target_arch = "aarch64")]
    unsafe fn panel_neon(
        &self,
        x: *const i32,
        offsets: &[usize],
        oy: usize,
        (ox0, width): (usize, usize),
        out: &SharedMut<u8>,
    ) {
        use super::kernels::neon::Requant4;
        let Form::Quads {
            weights,
            requant,
            blocks4,
            ..
        } = &self.prepared.form
        else {
            unreachable!("panel_neon runs quad kernels")
        };
        let g = &self.geometry;
        let (oh, ow) = g.out_size;
        let plane = oh * ow;
        let offsets = &offsets[..weights.quads];
        let mut sink = [[0u8; NR]; 4];
        let sinks: [*mut u8; 4] = std::array::from_fn(|r| sink[r].as_mut_ptr());
        let mut rq = Requant4 {
            bias: [0; 4],
            scale: [0.0; 4],
            zero_point: requant.zero_point,
            out: sinks,
        };
        for (b, &(bias, scale)) in blocks4.iter().enumerate() {
            (rq.bias, rq.scale) = (bias, scale);
            let first = 4 * b;
            let whole = width == NR && first + 4 <= g.out_channels;
            rq.out = if whole {
                let row = out.ptr((first * oh + oy) * ow + ox0, 3 * plane + NR);
                [0, 1, 2, 3].map(|r| row.add(r * plane))
            } else {
                sinks
            };
            // SAFETY: every out pointer is 16 bytes of the output rows this
            // task writes or of a sink row; the reads are the caller's
            // promise.
            super::gemm::s8_quads_requantised(
                self.prepared.kernel,
                weights.block(b),
                x,
                offsets,
                &rq,
            );
            if !whole {
                for (r, &sink) in sinks.iter().enumerate() {
                    let c = first + r;
                    if c < g.out_channels {
                        let kept = std::slice::from_raw_parts(sink, width);
                        out.part((c * oh + oy) * ow + ox0, width)
                            .copy_from_slice(kept);
                    }
                }
            }
        }
    }

    /// Gathers the quad words of pixels `ox0..ox0 + width` of output row `oy`
    /// (columns past `width` are zero).
    fn pack_quads(&self, padded: &[u8], oy: usize, ox0: usize, width: usize, panel: &mut [i32]) {
        let Form::Quads {
            reads: Reads::Gathered {
                gather: offsets, ..
            },
            ..
        } = &self.prepared.form
        else {
            unreachable!("pack_quads gathers panels")
        };
        let g = &self.geometry;
        let (_, wp) = g.padded();
        let (sy, sx) = g.stride;
        let base = oy * sy * wp + ox0 * sx;
        let fast = width == NR && (sx == 1 || sx == 2);
        #[cfg(target_arch = "x86_64")]
        if fast && self.prepared.kernel.u8_quads() {
            // SAFETY: AVX2 present (the kernels were chosen only then); every
            // read stays inside `padded` (its slack is 4 * NR * stride).
            return unsafe { pack_quads_avx2(padded, offsets, base, sx, panel) };
        }
        #[cfg(target_arch = "aarch64")]
        if fast {
            assert!(panel.len() >= offsets.len() / 4 * NR);
            // SAFETY: NEON present; every read stays inside `padded` (`run`
            // checked the farthest one); the panel holds 64 bytes per quad
            // (asserted).
            return unsafe {
                super::kernels::neon::pack_quads(
                    padded.as_ptr() as *const i8,
                    offsets,
                    base,
                    sx,
                    panel.as_mut_ptr() as *mut i8,
                )
            };
        }
        for (quad, words) in offsets.chunks_exact(4).zip(panel.chunks_exact_mut(NR)) {
            for (j, word) in words.iter_mut().enumerate() {
                let at = |t: usize| {
                    if j < width {
                        padded[quad[t] + base + j * sx]
                    } else {
                        0
                    }
                };
                *word = i32::from_le_bytes([at(0), at(1), at(2), at(3)]);
            }
        }
    }

    /// Copies `input` minus its zero point into the zero-padded `i16` image.
    fn pad(&self, input: &[u8], padded: &mut Vec<i16>) {
        let g = &self.geometry;
        let (h, w) = g.in_size;
        let (hp, wp) = g.padded();
        let (top, left, _, _) = g.padding;
        // Slack past the end: the stride-2 gather loads one vector past its
        // last needed element.
        let len = g.in_channels * hp * wp + 2 * NR * g.stride.1.max(1);
        padded.clear();
        padded.resize(len, 0);
        let z = self.prepared.x_zero_point;
        let plane = hp * wp;
        let shared = SharedMut::new(&mut padded[..]);
        let shared = &shared;
        let tasks = super::threads().min(g.in_channels);
        super::parallel(tasks, |t| {
            for c in t * g.in_channels / tasks..(t + 1) * g.in_channels / tasks {
                // SAFETY: channel planes are disjoint and inside `padded`.
                let dst = unsafe { shared.part(c * plane, plane) };
                for y in 0..h {
                    let src = &input[(c * h + y) * w..][..w];
                    let row = &mut dst[(y + top) * wp + left..][..w];
                    for (d, &s) in row.iter_mut().zip(src) {
                        *d = (i32::from(s) - z) as i16;
                    }
                }
            }
        });
    }

    /// Computes output row `oy` for every output channel on an `i16` pair
    /// kernel.
    ///
    /// # Safety
    /// No other thread may write row `oy` of `out` meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn row(
        &self,
        weights: &PackedWeights,
        requant: &Requant,
        offsets: &[usize],
        padded: &[i16],
        oy: usize,
        scratch: &mut Scratch,
        out: &SharedMut<u8>,
    ) {
        let g = &self.geometry;
        let (_, ow) = g.out_size;
        let pairs = weights.pairs;
        let blocks = weights.blocks();
        scratch.panel.resize(pairs * NR, 0);
        scratch.acc.resize(blocks, [[0; NR]; MR]);
        for ox0 in (0..ow).step_by(NR) {
            let width = NR.min(ow - ox0);
            self.pack_panel(padded, offsets, oy, ox0, width, &mut scratch.panel);
            // The reduction in chunks whose panel part stays in L1 while every
            // block of output channels consumes it.
            for k0 in (0..pairs).step_by(K_CHUNK) {
                let kn = K_CHUNK.min(pairs - k0);
                let b_part = &scratch.panel[k0 * NR..(k0 + kn) * NR];
                for (b, acc) in scratch.acc.iter_mut().enumerate() {
                    let a_part = &weights.block(b)[k0 * MR..(k0 + kn) * MR];
                    if self.prepared.kernel == Int8Kernel::PortableI16 {
                        micro_kernel_portable(a_part, b_part, kn, acc, k0 > 0);
                    } else {
                        micro_kernel(a_part, b_part, kn, acc, k0 > 0);
                    }
                }
            }
            for (b, acc) in scratch.acc.iter().enumerate() {
                self.store(requant, b, acc, oy, ox0, width, out);
            }
        }
    }

    /// Requantises block `b`'s micro-kernel result and stores its `width`
    /// valid pixels at `(oy, ox0)` of every channel it holds.
    ///
    /// # Safety
    /// No other thread may write row `oy` of `out` meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn store(
        &self,
        requant: &Requant,
        b: usize,
        acc: &[[i32; NR]],
        oy: usize,
        ox0: usize,
        width: usize,
        out: &SharedMut<u8>,
    ) {
        let g = &self.geometry;
        let (oh, ow) = g.out_size;
        for (r, acc_row) in acc.iter().enumerate() {
            let c = b * acc.len() + r;
            if c >= g.out_channels {
                break;
            }
            let at = (c * oh + oy) * ow + ox0;
            if width == NR {
                requant.row(c, acc_row, out.part(at, NR));
            } else {
                let mut tail = [0u8; NR];
                requant.row(c, acc_row, &mut tail);
                out.part(at, width).copy_from_slice(&tail[..width]);
            }
        }
    }

    /// Gathers the im2col columns of pixels `ox0..ox0 + width` of row `oy`
    /// into pair words (columns past `width` are zero).
    fn pack_panel(
        &self,
        padded: &[i16],
        offsets: &[usize],
        oy: usize,
        ox0: usize,
        width: usize,
        panel: &mut [i32],
    ) {
        let g = &self.geometry;
        let (_, wp) = g.padded();
        let (sy, sx) = g.stride;
        let base = oy * sy * wp + ox0 * sx;
        #[cfg(target_arch = "x86_64")]
        {
            if self.prepared.kernel == Int8Kernel::Avx2I16 && width == NR && (sx == 1 || sx == 2) {
                // SAFETY: AVX2 present; every read stays inside `padded` (the
                // last needed element of each gather is inside the image and
                // the buffer has 2*NR*sx elements of slack past its end).
                unsafe {
                    if sx == 1 {
                        pack_stride1_avx2(padded, offsets, base, panel)
                    } else {
                        pack_stride2_avx2(padded, offsets, base, panel)
                    }
                };
                return;
            }
        }
        for (pair, words) in offsets.chunks_exact(2).zip(panel.chunks_exact_mut(NR)) {
            let (lo, hi) = (pair[0] + base, pair[1] + base);
            for (j, word) in words.iter_mut().enumerate() {
                *word = if j < width {
                    pair_word(padded[lo + j * sx], padded[hi + j * sx])
                } else {
                    0
                };
            }
        }
    }
}

/// The `i16` pair form: weights minus their zero points (exact in `i16`, so
/// the kernel needs no zero-point corrections).
fn pairs_form(conv: &QuantizedConv, mut offsets: Vec<usize>, requant: Requant) -> Form {
    let g = conv.geometry;
    let k = g.k();
    let centred: Vec<i16> = conv
        .weights
        .chunks(k)
        .zip(conv.w_zero_point)
        .flat_map(|(row, &z)| row.iter().map(move |&w| (i32::from(w) - z) as i16))
        .collect();
    // An odd k's last pair reads any valid value: its weight is zero.
    if k % 2 == 1 {
        offsets.push(offsets[k - 1]);
    }
    Form::Pairs {
        weights: PackedWeights::from_i16(&centred, g.out_channels, k),
        requant,
        offsets,
    }
}

/// The byte-quad form of `kernel` (symmetric weights).
fn quads_form(
    conv: &QuantizedConv,
    kernel: Int8Kernel,
    mut offsets: Vec<usize>,
    requant: Requant,
) -> Form {
    let g = conv.geometry;
    let k = g.k();
    let (weights, reads) = match in_place_weights(conv, kernel) {
        Some((w, image)) => (
            PackedQuads::new(&w, g.out_channels, w.len() / g.out_channels, kernel.rows()),
            in_place_reads(&g, image),
        ),
        None => {
            let weights = PackedQuads::new(conv.weights, g.out_channels, k, kernel.rows());
            // Reduction indices past k have zero weights: read any valid value.
            offsets.resize(4 * weights.quads, offsets[k - 1]);
            let panel = (0..weights.quads).map(|q| q * NR).collect();
            let gather = offsets;
            (weights, Reads::Gathered { gather, panel })
        }
    };
    let flip: u8 = if kernel.signed_quads() { 0x80 } else { 0 };
    // With x' = x ^ flip (x - 128 as s8 when flip is 0x80):
    // sum (x - zx) w = sum x' w + (flip - zx) sum w, so the zero point and
    // the shift move into the bias; padding holds zx ^ flip and cancels there.
    let shift = i32::from(flip) - conv.x.0;
    let bias = conv
        .weights
        .chunks(k)
        .zip(conv.bias)
        .map(|(row, &b)| b + shift * row.iter().map(|&w| i32::from(w)).sum::<i32>())
        .collect();
    let requant = Requant { bias, ..requant };
    let blocks4 = if kernel.signed_quads() {
        (0..weights.blocks())
            .map(|b| {
                let at = |r: usize| {
                    requant
                        .bias
                        .get(4 * b + r)
                        .zip(requant.scale.get(4 * b + r))
                };
                let mut block = ([0; 4], [0.0; 4]);
                for r in 0..4 {
                    if let Some((&bias, &scale)) = at(r) {
                        (block.0[r], block.1[r]) = (bias, scale);
                    }
                }
                block
            })
            .collect()
    } else {
        Vec::new()
    };
    Form::Quads {
        weights,
        requant,
        reads,
        flip,
        blocks4,
    }
}

/// `conv`'s weights in the reduction order of the image `kernel` reads in
/// place at this shape (quad by quad, its bytes as [`Image`] says), when it
/// reads one there and sums them exactly in that order (`vpmaddubsw` pairs
/// other neighbours there).
fn in_place_weights(conv: &QuantizedConv, kernel: Int8Kernel) -> Option<(Vec<i8>, Image)> {
    let g = conv.geometry;
    let image = in_place_image(&g, kernel)?;
    let (k, (kh, kw)) = (g.k(), g.kernel);
    let (window, taps) = (kh * kw, kw.div_ceil(4));
    let quads = image_geometry(&g, image).k();
    let reordered: Vec<i8> = conv
        .weights
        .chunks_exact(k)
        .flat_map(|row| {
            (0..4 * quads).map(move |i| {
                let (quad, byte) = (i / 4, i % 4);
                match image {
                    Image::ChannelQuads => {
                        let (group, tap) = (quad / window, quad % window);
                        row[(4 * group + byte) * window + tap]
                    }
                    Image::ColumnQuads => {
                        let (c, rest) = (quad / (kh * taps), quad % (kh * taps));
                        let (ky, kx) = (rest / taps, 4 * (rest % taps) + byte);
                        if kx < kw {
                            row[(c * kh + ky) * kw + kx]
                        } else {
                            0
                        }
                    }
                }
            })
        })
        .collect();
    kernel
        .supports(Cpu::detect(), &reordered, 4 * quads, conv.w_zero_point)
        .then_some((reordered, image))
}

/// The image `kernel` reads `g`'s input from in place, if any: channel
/// quads for channels in fours at a horizontal stride of 1 or 2 (every
/// quad kernel); else, on a kernel where they pay
/// ([`Int8Kernel::reads_column_quads`]), column quads where they sum at most
/// 30 % more quads than a gathered panel holds (the 7x7 RGB stem: 42
/// against 37; a 3x3 one: 9 against 7). The extra quads are zero weights.
fn in_place_image(g: &Geometry, kernel: Int8Kernel) -> Option<Image> {
    if !kernel.quads() {
        return None;
    }
    if g.stride.1 <= 2 && g.in_channels.is_multiple_of(4) {
        return Some(Image::ChannelQuads);
    }
    let columns = column_quads(g).filter(|_| kernel.reads_column_quads())?;
    (10 * columns.k() <= 13 * g.k().div_ceil(4)).then_some(Image::ColumnQuads)
}

/// The convolution over an image of column quads ([`Image::ColumnQuads`])
/// that sums what `g` sums: the same channels and kernel rows, a kernel row
/// of `ceil(kw / 4)` quads `4 / stride` words apart, a horizontal stride of
/// one word, and the horizontal padding inside the words. Only where the
/// horizontal stride divides 4 (the words read start on multiples of it)
/// and without horizontal dilation.
fn column_quads(g: &Geometry) -> Option<Geometry> {
    let sx = g.stride.1;
    if g.dilation.1 != 1 || !matches!(sx, 1 | 2 | 4) {
        return None;
    }
    let (ow, taps) = (g.out_size.1, g.kernel.1.div_ceil(4));
    let step = 4 / sx;
    let (top, _, bottom, _) = g.padding;
    Some(Geometry {
        in_size: (g.in_size.0, ow + step * (taps - 1)),
        kernel: (g.kernel.0, taps),
        stride: (g.stride.0, 1),
        dilation: (g.dilation.0, step),
        padding: (top, 0, bottom, 0),
        ..*g
    })
}

/// The convolution over `image` (one word per pixel) that sums what `g`
/// sums, a reduction index per quad.
fn image_geometry(g: &Geometry, image: Image) -> Geometry {
    match image {
        Image::ChannelQuads => Geometry {
            in_channels: g.in_channels / 4,
            ..*g
        },
        Image::ColumnQuads => column_quads(g).expect("column quads fit the layer"),
    }
}

/// The layout of `g`'s `image` (spread over the L1 sets) and each quad's
/// word offset from an output pixel's first input word. Every tile reads
/// all its quads (no chunks).
fn in_place_reads(g: &Geometry, image: Image) -> Reads {
    let words = image_geometry(g, image);
    let layout = Layout::spread(&words, words.k());
    let offsets: Vec<usize> = (0..words.k()).map(|q| layout.offset(&words, q)).collect();
    let reach = in_place_reach(&words, &offsets, &layout);
    Reads::InPlace {
        offsets,
        layout,
        reach,
        image,
    }
}

/// The words of the image a convolution reads in place:
/// the last row's tiles read whole panels of 16 words past the largest
/// offset, so a row that does not end on a panel reads a little past its
/// last pixel (values nobody keeps), up to past the image's end.
fn in_place_reach(g: &Geometry, offsets: &[usize], layout: &Layout) -> usize {
    let (oh, ow) = g.out_size;
    let last_row = (oh - 1) * g.stride.0 * layout.row;
    offsets.iter().max().copied().unwrap_or(0) + last_row + ow.next_multiple_of(NR)
}

/// Interleaves four rows of bytes into words: `dst[x]` holds `rows[0][x]`
/// to `rows[3][x]` (each `^ flip`), low byte first (the quad kernels' word
/// layout).
fn interleave_quads(rows: [&[u8]; 4], flip: u8, dst: &mut [i32]) {
    assert!(rows.iter().all(|r| r.len() >= dst.len()));
    #[cfg(target_arch = "x86_64")]
    let done = interleave_quads_sse2(rows, flip, dst);
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is part of every aarch64 target; lengths asserted above.
    let done = unsafe { super::kernels::neon::interleave_quads(rows, flip, dst) };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let done = 0;
    for (x, word) in dst.iter_mut().enumerate().skip(done) {
        *word = quad_word(rows, flip, x);
    }
}

/// [`interleave_quads`] into two phases (a stride-2 layout): pixel `x`'s
/// word goes to `evens[x / 2]` or `odds[x / 2]`, whose lengths say how many
/// pixels there are.
fn interleave_quads_phased(rows: [&[u8]; 4], flip: u8, evens: &mut [i32], odds: &mut [i32]) {
    let w = evens.len() + odds.len();
    assert!(evens.len() == w.div_ceil(2) && rows.iter().all(|r| r.len() >= w));
    #[cfg(target_arch = "x86_64")]
    let done = interleave_quads_phased_sse2(rows, flip, evens, odds);
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is part of every aarch64 target; lengths asserted above.
    let done = unsafe { super::kernels::neon::interleave_quads_phased(rows, flip, evens, odds) };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let done = 0;
    for x in done..w {
        let half = if x % 2 == 0 { &mut *evens } else { &mut *odds };
        half[x / 2] = quad_word(rows, flip, x);
    }
}

/// Writes `dst[i]`, the padded columns `stride * i..stride * i + 4` of a
/// row whose padded column `p` is `src[p - left] ^ flip` and `border` left
/// and right of it, low byte first (a row of [`Image::ColumnQuads`]).
fn column_words(src: &[u8], left: usize, stride: usize, (border, flip): (u8, u8), dst: &mut [i32]) {
    let byte = |p: usize| {
        p.checked_sub(left)
            .and_then(|x| src.get(x))
            .map_or(border, |&b| b ^ flip)
    };
    let word = |i: usize| i32::from_le_bytes(std::array::from_fn(|b| byte(stride * i + b)));
    // The words whose 4 columns all lie in `src`.
    let first = left.div_ceil(stride).min(dst.len());
    let end = match (left + src.len()).checked_sub(4) {
        Some(last) => (last / stride + 1).clamp(first, dst.len()),
        None => first,
    };
    let inner = &src[(stride * first).saturating_sub(left).min(src.len())..];
    let done = first + column_words_vector(inner, stride, flip, &mut dst[first..end]);
    let flip = u32::from_le_bytes([flip; 4]);
    for (i, out) in dst.iter_mut().enumerate().take(end).skip(done) {
        let x = stride * i - left;
        *out = (u32::from_le_bytes([src[x], src[x + 1], src[x + 2], src[x + 3]]) ^ flip) as i32;
    }
    for i in (0..first).chain(end..dst.len()) {
        dst[i] = word(i);
    }
}

/// The first words of [`column_words`]' inner run with a vector kernel
/// where the CPU has one (`dst[n]` = `src[stride * n..][..4] ^ flip`);
/// returns how many it wrote. Only AVX-512 machines read column quads
/// ([`Int8Kernel::reads_column_quads`]), and they all have AVX2.
fn column_words_vector(src: &[u8], stride: usize, flip: u8, dst: &mut [i32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if Cpu::detect().avx2 {
        // SAFETY: AVX2 present; the kernel keeps its loads inside `src`.
        return unsafe { super::kernels::avx2::column_words(src, stride, flip, dst) };
    }
    let _ = (src, stride, flip, dst);
    0
}

/// Pixel `x`'s word: its bytes from the four rows (`^ flip`), low byte first.
#[inline]
fn quad_word(rows: [&[u8]; 4], flip: u8, x: usize) -> i32 {
    i32::from_le_bytes([rows[0][x], rows[1][x], rows[2][x], rows[3][x]].map(|b| b ^ flip))
}

/// The words of pixels `x..x + 16` (`^ flip`), 4 per vector.
///
/// # Safety
/// Every row holds `x + 16` bytes (SSE2 is part of x86_64).
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn quad_words_sse2(rows: [&[u8]; 4], flip: u8, x: usize) -> [std::arch::x86_64::__m128i; 4] {
    use std::arch::x86_64::*;
    let flip = _mm_set1_epi8(flip as i8);
    let load = |r: &[u8]| _mm_xor_si128(_mm_loadu_si128(r.as_ptr().add(x) as *const __m128i), flip);
    let (r0, r1, r2, r3) = (load(rows[0]), load(rows[1]), load(rows[2]), load(rows[3]));
    let (a, b) = (_mm_unpacklo_epi8(r0, r1), _mm_unpackhi_epi8(r0, r1));
    let (c, d) = (_mm_unpacklo_epi8(r2, r3), _mm_unpackhi_epi8(r2, r3));
    [
        _mm_unpacklo_epi16(a, c),
        _mm_unpackhi_epi16(a, c),
        _mm_unpacklo_epi16(b, d),
        _mm_unpackhi_epi16(b, d),
    ]
}

/// [`interleave_quads`] 16 pixels at a time while 16 are left; returns how
/// many pixels it wrote.
#[cfg(target_arch = "x86_64")]
fn interleave_quads_sse2(rows: [&[u8]; 4], flip: u8, dst: &mut [i32]) -> usize {
    use std::arch::x86_64::*;
    let whole = dst.len() - dst.len() % 16;
    for x in (0..whole).step_by(16) {
        // SAFETY: 16 bytes of each row (`interleave_quads` checked their
        // lengths) and 16 words of `dst` from `x`.
        unsafe {
            let out = dst.as_mut_ptr().add(x) as *mut __m128i;
            for (i, v) in quad_words_sse2(rows, flip, x).into_iter().enumerate() {
                _mm_storeu_si128(out.add(i), v);
            }
        }
    }
    whole
}

/// [`interleave_quads_phased`] 16 pixels at a time while 16 are left;
/// returns how many pixels it wrote.
#[cfg(target_arch = "x86_64")]
fn interleave_quads_phased_sse2(
    rows: [&[u8]; 4],
    flip: u8,
    evens: &mut [i32],
    odds: &mut [i32],
) -> usize {
    use std::arch::x86_64::*;
    let w = evens.len() + odds.len();
    let whole = w - w % 16;
    for x in (0..whole).step_by(16) {
        // SAFETY: 16 bytes of each row (checked by the caller), 8 words of
        // each phase from `x / 2` (each holds at least `w / 2`).
        unsafe {
            let [v0, v1, v2, v3] = quad_words_sse2(rows, flip, x).map(|v| _mm_castsi128_ps(v));
            let (e, o) = (evens.as_mut_ptr().add(x / 2), odds.as_mut_ptr().add(x / 2));
            let store = |at: *mut i32, v: __m128| _mm_storeu_ps(at as *mut f32, v);
            store(e, _mm_shuffle_ps::<0b10_00_10_00>(v0, v1));
            store(e.add(4), _mm_shuffle_ps::<0b10_00_10_00>(v2, v3));
            store(o, _mm_shuffle_ps::<0b11_01_11_01>(v0, v1));
            store(o.add(4), _mm_shuffle_ps::<0b11_01_11_01>(v2, v3));
        }
    }
    whole
}

/// Runs `row(oy, scratch, out)` for every output row `0..rows`, in a few
/// bands per thread (so an uneven core finishes level), each task with its
/// thread's reused scratch.
fn by_rows(rows: usize, out: &mut [u8], row: impl Fn(usize, &mut Scratch, &SharedMut<u8>) + Sync) {
    let out = SharedMut::new(out);
    let out = &out;
    let tasks = (super::threads() * 4).min(rows);
    super::parallel(tasks, |t| {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            for oy in t * rows / tasks..(t + 1) * rows / tasks {
                row(oy, &mut scratch, out);
            }
        })
    });
}

thread_local! {
    /// One packed panel and its accumulators.
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { panel: Vec::new(), acc: Vec::new() }) };
}

/// Reduction pairs per chunk: 512 pairs of a 16-pixel panel are 32 KiB.
/// DLA-tiny's largest reduction (576 pairs) ran no faster in 128-pair chunks
/// (L2 keeps up there); the chunks bound the working set for wider models
/// (DLA-34's 512-channel 3x3 convolutions have 2304 pairs, 147 KiB).
const K_CHUNK: usize = 512;

/// Per-thread buffers of [`Int8Conv::row`], reused from frame to frame.
struct Scratch {
    /// One packed panel of pair words.
    panel: Vec<i32>,
    /// One micro-kernel result per block of output channels.
    acc: Vec<[[i32; NR]; MR]>,
}

/// Gathers 16 pixels (stride 1 or 2) of four reduction indices per quad into
/// quad words: pixel j's word holds the four input bytes it multiplies.
///
/// # Safety
/// AVX2; `padded[base + offset .. + 16 * stride]` in bounds for every offset.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_quads_avx2(
    padded: &[u8],
    offsets: &[usize],
    base: usize,
    stride: usize,
    panel: &mut [i32],
) {
    use std::arch::x86_64::*;
    let src = padded.as_ptr();
    let evens = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1);
    let load = |o: usize| {
        let at = src.add(o + base);
        if stride == 1 {
            _mm_loadu_si128(at as *const __m128i)
        } else {
            let lo = _mm_shuffle_epi8(_mm_loadu_si128(at as *const __m128i), evens);
            let hi = _mm_shuffle_epi8(_mm_loadu_si128(at.add(16) as *const __m128i), evens);
            _mm_unpacklo_epi64(lo, hi)
        }
    };
    for (quad, words) in offsets.chunks_exact(4).zip(panel.chunks_exact_mut(NR)) {
        debug_assert!(quad.iter().max().unwrap() + base + 16 * stride <= padded.len());
        let (r0, r1, r2, r3) = (load(quad[0]), load(quad[1]), load(quad[2]), load(quad[3]));
        let (a, b) = (_mm_unpacklo_epi8(r0, r1), _mm_unpackhi_epi8(r0, r1));
        let (c, d) = (_mm_unpacklo_epi8(r2, r3), _mm_unpackhi_epi8(r2, r3));
        let dst = words.as_mut_ptr() as *mut __m128i;
        _mm_storeu_si128(dst, _mm_unpacklo_epi16(a, c));
        _mm_storeu_si128(dst.add(1), _mm_unpackhi_epi16(a, c));
        _mm_storeu_si128(dst.add(2), _mm_unpacklo_epi16(b, d));
        _mm_storeu_si128(dst.add(3), _mm_unpackhi_epi16(b, d));
    }
}

/// # Safety
/// AVX2; `padded[base + offset .. + NR]` in bounds for every offset.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_stride1_avx2(padded: &[i16], offsets: &[usize], base: usize, panel: &mut [i32]) {
    use std::arch::x86_64::*;
    let src = padded.as_ptr();
    for (pair, words) in offsets.chunks_exact(2).zip(panel.chunks_exact_mut(NR)) {
        debug_assert!(pair[0].max(pair[1]) + base + NR <= padded.len());
        let lo = _mm256_loadu_si256(src.add(pair[0] + base) as *const __m256i);
        let hi = _mm256_loadu_si256(src.add(pair[1] + base) as *const __m256i);
        store_pairs(lo, hi, words);
    }
}

/// # Safety
/// AVX2; `padded[base + offset .. + 2 * NR]` in bounds for every offset.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_stride2_avx2(padded: &[i16], offsets: &[usize], base: usize, panel: &mut [i32]) {
    use std::arch::x86_64::*;
    let src = padded.as_ptr();
    // Even i16 of each 128-bit lane into its low 8 bytes.
    let evens = _mm256_setr_epi8(
        0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1, -1,
        -1, -1, -1, -1, -1, -1,
    );
    let gather = |at: *const i16| {
        let a = _mm256_shuffle_epi8(_mm256_loadu_si256(at as *const __m256i), evens);
        let b = _mm256_shuffle_epi8(_mm256_loadu_si256(at.add(16) as *const __m256i), evens);
        let a = _mm256_permute4x64_epi64::<0b00_00_10_00>(a);
        let b = _mm256_permute4x64_epi64::<0b00_00_10_00>(b);
        _mm256_inserti128_si256::<1>(a, _mm256_castsi256_si128(b))
    };
    for (pair, words) in offsets.chunks_exact(2).zip(panel.chunks_exact_mut(NR)) {
        debug_assert!(pair[0].max(pair[1]) + base + 2 * NR <= padded.len());
        let lo = gather(src.add(pair[0] + base));
        let hi = gather(src.add(pair[1] + base));
        store_pairs(lo, hi, words);
    }
}

/// Interleaves 16 `lo` and 16 `hi` i16 into 16 pair words, in pixel order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn store_pairs(
    lo: std::arch::x86_64::__m256i,
    hi: std::arch::x86_64::__m256i,
    words: &mut [i32],
) {
    use std::arch::x86_64::*;
    debug_assert!(words.len() >= NR);
    // unpack works per 128-bit lane: lo half = pixels 0-3 | 8-11, hi half = 4-7 | 12-15.
    let l = _mm256_unpacklo_epi16(lo, hi);
    let h = _mm256_unpackhi_epi16(lo, hi);
    let first = _mm256_permute2x128_si256::<0x20>(l, h);
    let second = _mm256_permute2x128_si256::<0x31>(l, h);
    _mm256_storeu_si256(words.as_mut_ptr() as *mut __m256i, first);
    _mm256_storeu_si256(words.as_mut_ptr().add(8) as *mut __m256i, second);
}

/// The op's side of [`super::tract_op`].
impl Int8Conv {
    fn info_lines(&self) -> Vec<String> {
        vec![
            format!(
                "{}; {} kernel{}",
                self.geometry.describe(),
                self.prepared.kernel,
                if self.reads_in_place() {
                    ", reads in place"
                } else {
                    ""
                }
            ),
            format!("replaces {}", self.replaces),
        ]
    }

    fn eval_inputs(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        super::eval_filled(
            "Int8Conv",
            &self.arena,
            &self.output,
            inputs,
            |x: &[u8], y: &mut [u8]| self.run(x, y),
        )
    }

    fn output_fact(&self, _inputs: &[&TypedFact]) -> TypedFact {
        self.output.clone()
    }
}

tract_op!(Int8Conv);

#[cfg(test)]
mod tests {
    use super::*;
    use tract_linalg::multithread::{multithread_tract_scope, Executor};

    /// QLinearConv by its ONNX definition, one output value at a time.
    fn reference(c: &QuantizedConv, input: &[u8]) -> Vec<u8> {
        let g = c.geometry;
        let (h, w) = g.in_size;
        let (oh, ow) = g.out_size;
        let (kh, kw) = g.kernel;
        let (t, l, _, _) = g.padding;
        let mut out = vec![0u8; g.out_channels * oh * ow];
        for co in 0..g.out_channels {
            let m = c.x.1 * c.w_scale[co] / c.y.1;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = c.bias[co];
                    for ci in 0..g.in_channels {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy =
                                    (oy * g.stride.0 + ky * g.dilation.0) as isize - t as isize;
                                let ix =
                                    (ox * g.stride.1 + kx * g.dilation.1) as isize - l as isize;
                                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                    continue;
                                }
                                let x = i32::from(input[(ci * h + iy as usize) * w + ix as usize])
                                    - c.x.0;
                                let wv = i32::from(
                                    c.weights[((co * g.in_channels + ci) * kh + ky) * kw + kx],
                                ) - c.w_zero_point[co];
                                acc += x * wv;
                            }
                        }
                    }
                    let y = (acc as f32 * m).round_ties_even() as i32 + c.y.0;
                    out[(co * oh + oy) * ow + ox] = y.clamp(0, 255) as u8;
                }
            }
        }
        out
    }

    /// The weights a test layer gets.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Weights {
        /// Full 8-bit range with per-channel zero points (pair kernels only).
        Asymmetric,
        /// Symmetric 8-bit, -128 included (no two-product NEON lanes).
        Full,
        /// Symmetric in [-127, 127]: every NEON kernel.
        Symmetric,
        /// Symmetric 7-bit: every kernel, AVX2 `u8 x s8` included.
        SevenBit,
        /// Only -127 and 127, against inputs of only 0 and 255: the largest
        /// sums the two-product `i16` lanes must hold.
        Extremes,
        /// -128 and 127 against 0 and 255: what overflows two-product lanes.
        ExtremesWithMin,
    }

    /// Runs the layer `g` on every kernel this CPU has that supports
    /// `weights`, against QLinearConv's definition; returns the kernels run.
    fn check(g: Geometry, threads: usize, weights: Weights) -> Vec<Int8Kernel> {
        let k = g.k();
        // Deterministic pseudo-random data over the full ranges.
        let mut seed = 0x9e3779b9u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let w: Vec<i8> = (0..g.out_channels * k)
            .map(|i| match weights {
                Weights::Asymmetric => next() as i8,
                Weights::Full if i % 5 == 0 => -128,
                Weights::Full => next() as i8,
                Weights::Symmetric => (next() as i8).max(-127),
                Weights::SevenBit => (next() as i8) >> 1,
                Weights::Extremes => [-127, 127, -127][next() as usize % 3],
                Weights::ExtremesWithMin => [-128, 127, -128][next() as usize % 3],
            })
            .collect();
        let input: Vec<u8> = (0..g.in_channels * g.in_size.0 * g.in_size.1)
            .map(|_| match weights {
                Weights::Extremes | Weights::ExtremesWithMin => [0, 255, 0][next() as usize % 3],
                _ => next() as u8,
            })
            .collect();
        let w_zero_point: Vec<i32> = (0..g.out_channels)
            .map(|c| {
                if c % 3 == 0 || weights != Weights::Asymmetric {
                    0
                } else {
                    (c as i32 % 7) - 3
                }
            })
            .collect();
        let w_scale: Vec<f32> = (0..g.out_channels)
            .map(|c| 0.001 + c as f32 * 1e-4)
            .collect();
        let bias: Vec<i32> = (0..g.out_channels).map(|c| (c as i32 - 3) * 997).collect();
        let conv = QuantizedConv {
            geometry: g,
            weights: &w,
            w_zero_point: &w_zero_point,
            w_scale: &w_scale,
            bias: &bias,
            x: (117, 0.02),
            y: (9, 0.5),
        };
        let fact = u8::fact([1, g.out_channels, g.out_size.0, g.out_size.1]);
        let want = reference(&conv, &input);
        let executor = if threads > 1 {
            Executor::multithread(threads)
        } else {
            Executor::SingleThread
        };
        let mut ran = Vec::new();
        for kernel in Int8Kernel::ALL {
            let Some(op) = Int8Conv::with_kernel(&conv, kernel, "test", fact.clone()) else {
                continue;
            };
            let mut out = vec![0u8; want.len()];
            multithread_tract_scope(executor.clone(), || op.run(&input, &mut out));
            let differ = out.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(
                differ,
                0,
                "{kernel}, {weights:?}, {g:?}: {differ} of {} values differ",
                out.len()
            );
            // Every quad kernel reads in place whenever the layer has an
            // image and its weights fit that order.
            let in_place = in_place_image(&g, kernel).is_some();
            assert_eq!(op.reads_in_place(), in_place, "{kernel}, {g:?}");
            ran.push(kernel);
        }
        // The default is the fastest of those.
        assert_eq!(Int8Conv::new(&conv, "test", fact).kernel(), ran[0]);
        ran
    }

    /// Shapes that reach every packing path: 3x3 stride 1 (vector gather),
    /// stride 2 (vector even-gather), 1x1, 7x7 with k not a multiple of 4,
    /// widths that are not a multiple of 16 (scalar gather), output channels
    /// that are not a multiple of a block, no padding, 2 threads, and a long
    /// reduction. Channels not in fours read column quads in place on
    /// AVX-512 VNNI where they pay ([`in_place_image`]): the 3-channel
    /// stems, the 5- and 6-channel 3x3 layers, at strides 1, 2 and 4, with
    /// vector and scalar words; the others gather.
    fn shapes() -> [(Geometry, usize); 17] {
        [
            (Geometry::square(5, 6, (9, 32), 3, 1, 1), 1),
            // ResNet's stem (7x7, stride 2) and a patchify layer (8x8,
            // stride 4) on column quads.
            (Geometry::square(3, 8, (6, 77), 7, 2, 3), 2),
            (Geometry::square(3, 5, (8, 70), 8, 4, 2), 1),
            // Gathered: a 1x1 over 5 channels (column quads would sum 5
            // quads for 2) and a horizontal stride of 3.
            (Geometry::square(5, 7, (6, 35), 1, 1, 0), 1),
            (Geometry::square(4, 6, (7, 25), 3, 3, 1), 2),
            (Geometry::square(4, 8, (10, 64), 3, 2, 1), 1),
            (Geometry::square(16, 19, (6, 16), 1, 1, 0), 1),
            (Geometry::square(3, 4, (12, 21), 7, 1, 3), 1),
            (Geometry::square(3, 5, (7, 13), 3, 2, 0), 2),
            (Geometry::square(8, 4, (11, 40), 3, 1, 1), 2),
            (Geometry::square(128, 7, (4, 16), 3, 1, 1), 1),
            // 83 pixels: a full 64-pixel tile of panels, then a partial one.
            (Geometry::square(6, 9, (5, 83), 3, 1, 1), 2),
            // Read in place (every quad kernel): the same with channels in
            // quads, a 1x1 with a partial panel, and a window wider than it
            // is tall with uneven padding and dilation.
            (Geometry::square(8, 9, (5, 83), 3, 1, 1), 2),
            (Geometry::square(12, 7, (3, 21), 1, 1, 0), 1),
            // Stride 2 in place (two phases): odd and even left padding,
            // rows of 37 and 40 pixels.
            (Geometry::square(8, 6, (9, 37), 3, 2, 1), 2),
            (Geometry::square(12, 5, (8, 40), 1, 2, 0), 1),
            (
                Geometry {
                    in_channels: 4,
                    in_size: (6, 19),
                    out_channels: 13,
                    out_size: (6, 17),
                    kernel: (2, 3),
                    stride: (1, 1),
                    dilation: (2, 2),
                    padding: (1, 2, 1, 0),
                },
                2,
            ),
        ]
    }

    #[test]
    fn every_kernel_matches_qlinearconv_on_every_packing_path() {
        let cpu = Cpu::detect();
        for weights in [
            Weights::Asymmetric,
            Weights::Full,
            Weights::Symmetric,
            Weights::SevenBit,
            Weights::Extremes,
            Weights::ExtremesWithMin,
        ] {
            for (g, threads) in shapes() {
                let ran = check(g, threads, weights);
                assert!(ran.contains(&Int8Kernel::PortableI16), "{ran:?}");
                // What each CPU must have exercised.
                let quads = weights != Weights::Asymmetric;
                if cpu.avx2 {
                    assert!(ran.contains(&Int8Kernel::Avx2I16));
                    assert_eq!(
                        ran.contains(&Int8Kernel::Avx2U8),
                        weights == Weights::SevenBit
                    );
                }
                // vpdpbusd takes any symmetric weights, -128 included.
                assert_eq!(ran.contains(&Int8Kernel::AvxVnni), cpu.avx_vnni && quads);
                assert_eq!(
                    ran.contains(&Int8Kernel::Avx512Vnni),
                    cpu.avx512_vnni && quads
                );
                if cpu.neon {
                    assert_eq!(ran.contains(&Int8Kernel::NeonMullSingle), quads);
                    let no_min = matches!(
                        weights,
                        Weights::Symmetric | Weights::SevenBit | Weights::Extremes
                    );
                    assert_eq!(ran.contains(&Int8Kernel::NeonMull), no_min, "{weights:?}");
                }
                if cpu.dotprod {
                    assert_eq!(ran.contains(&Int8Kernel::NeonDot), quads);
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        for (kernel, has, feature) in [
            (Int8Kernel::AvxVnni, cpu.avx_vnni, "avxvnni"),
            (
                Int8Kernel::Avx512Vnni,
                cpu.avx512_vnni,
                "avx512f + avx512vnni",
            ),
        ] {
            if !has {
                super::super::kernels::lanes::check::skipped(kernel.name(), feature);
            }
        }
    }

    /// The reading of each shape: on AVX-512 VNNI, column quads for the
    /// stems (any stride dividing 4); channel quads for channels in fours
    /// on every quad kernel; else a gather.
    #[test]
    fn stems_read_column_quads_and_other_layers_keep_their_reading() {
        let stem = Geometry::square(3, 16, (256, 512), 7, 1, 3);
        for kernel in Int8Kernel::ALL {
            let columns = kernel.reads_column_quads().then_some(Image::ColumnQuads);
            assert_eq!(in_place_image(&stem, kernel), columns, "{kernel}");
        }
        let image = |c, size, k, s, p| {
            in_place_image(
                &Geometry::square(c, 16, size, k, s, p),
                Int8Kernel::Avx512Vnni,
            )
        };
        // DLA's RGB stem, ResNet's, a 3x3 one, a patchify one.
        assert_eq!(image(3, (256, 512), 7, 1, 3), Some(Image::ColumnQuads));
        assert_eq!(image(3, (224, 224), 7, 2, 3), Some(Image::ColumnQuads));
        assert_eq!(image(3, (224, 224), 3, 2, 1), Some(Image::ColumnQuads));
        assert_eq!(image(3, (224, 224), 4, 4, 0), Some(Image::ColumnQuads));
        assert_eq!(image(16, (256, 512), 3, 1, 1), Some(Image::ChannelQuads));
        assert_eq!(image(16, (256, 512), 3, 2, 1), Some(Image::ChannelQuads));
        // 1x1 over 3 channels: 3 column quads against 1 gathered.
        assert_eq!(image(3, (64, 64), 1, 1, 0), None);
        assert_eq!(image(4, (64, 64), 3, 3, 1), None);
        // The stem's 42 quads: 3 channels x 7 rows x 2 quads of taps.
        let g = Geometry::square(3, 16, (256, 512), 7, 1, 3);
        let words = column_quads(&g).unwrap();
        assert_eq!((words.k(), g.k().div_ceil(4)), (42, 37));
        assert_eq!(words.out_size, g.out_size);
    }

    /// The words of a row of column quads, vector kernels included, are
    /// the padded columns they stand for, at every stride, border width,
    /// row length (vector steps, tails, rows shorter than a word) and flip.
    #[test]
    fn column_words_are_the_padded_columns() {
        let row: Vec<u8> = (0..90).map(|x| (x * 37 + 11) as u8).collect();
        let border = 0x5a;
        for stride in [1, 2, 4] {
            for left in 0..5 {
                for w in [0, 1, 3, 4, 5, 16, 17, 24, 31, 40, 63, 90] {
                    for flip in [0, 0x80] {
                        let src = &row[..w];
                        let padded = |p: usize| {
                            p.checked_sub(left)
                                .and_then(|x| src.get(x))
                                .map_or(border, |&b| b ^ flip)
                        };
                        let len = (left + w + 3) / stride + 2;
                        let want: Vec<i32> = (0..len)
                            .map(|i| {
                                i32::from_le_bytes(std::array::from_fn(|b| padded(stride * i + b)))
                            })
                            .collect();
                        let mut got = vec![0; len];
                        column_words(src, left, stride, (border, flip), &mut got);
                        assert_eq!(
                            got, want,
                            "stride {stride}, left {left}, width {w}, flip {flip}"
                        );
                    }
                }
            }
        }
    }

    /// The vector interleaves (SSE2, NEON `st4`/`ld2`) write the words the
    /// scalar [`quad_word`] defines, with and without the `s8` flip, for
    /// rows of whole blocks, tails and fewer pixels than a block.
    #[test]
    fn interleaved_quads_are_the_scalar_words() {
        let rows: Vec<Vec<u8>> = (0..4)
            .map(|r| (0..83).map(|x| (x * 37 + r * 101 + 5) as u8).collect())
            .collect();
        let rows = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
        for flip in [0, 0x80] {
            for w in [0, 1, 15, 16, 17, 31, 32, 33, 64, 83] {
                let want: Vec<i32> = (0..w).map(|x| quad_word(rows, flip, x)).collect();
                let mut got = vec![0; w];
                interleave_quads(rows, flip, &mut got);
                assert_eq!(got, want, "width {w}, flip {flip:#x}");
                let (mut evens, mut odds) = (vec![0; w.div_ceil(2)], vec![0; w / 2]);
                interleave_quads_phased(rows, flip, &mut evens, &mut odds);
                let phased: Vec<i32> = (0..w)
                    .map(|x| {
                        if x % 2 == 0 {
                            evens[x / 2]
                        } else {
                            odds[x / 2]
                        }
                    })
                    .collect();
                assert_eq!(phased, want, "width {w}, flip {flip:#x}, two phases");
            }
        }
        assert_eq!(quad_word(rows, 0x80, 0) as u32 & 0xff, 5 ^ 0x80);
    }
}
