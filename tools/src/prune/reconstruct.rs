//! Reconstruction without retraining (He et al. 2017, "Channel Pruning for
//! Accelerating Very Deep Neural Networks"; Luo et al. 2017, ThiNet): after
//! channels go, every dense convolution whose input changed (it lost channels,
//! or something upstream did) gets new weights,
//! fitted by least squares so that, on calibration images, its outputs from
//! the *pruned* network's inputs match the *original* network's outputs.
//!
//! Per layer: sample output positions, gather the input patches `P` (one row
//! per position, `in * kh * kw` values and a 1 for the bias) from the pruned
//! model and the original outputs `Y`, accumulate `P'P` and `P'Y`, and solve
//! `(P'P + lambda I) W = P'Y` by Cholesky. Layers are fitted in dependency
//! order, each from the pruned model with every earlier layer already
//! refitted, so a layer also corrects what the layers before it lost.
//!
//! Refinements:
//! * positions are weighted by [`Emphasis`] (rare classes count more), by
//!   drawing the samples of large maps in proportion to it (most of a
//!   point of mIoU on DLA-tiny);
//! * a layer whose output goes only into a ReLU is fitted a second time
//!   against its error *after* the ReLU: where the original output is
//!   negative, any negative output is exact, so the second pass's target
//!   there is the first fit's own output (if negative) or 0 (a
//!   majorise-minimise step on the error after the ReLU; 0.2 points);
//! * a layer that feeds a residual `Add` (a bottleneck's last conv) is
//!   fitted to the original *sum* given the pruned residual, so it also
//!   makes up for what the residual path lost (the same mIoU within
//!   noise; its report line is the error that reaches the next block).

use std::collections::HashMap;

use anyhow::{bail, Context};
use faer::linalg::matmul::matmul;
use faer::linalg::solvers::{DenseSolveCore, Solve};
use faer::{Accum, Mat, Par, Side};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tract_onnx::pb::{ModelProto, NodeProto};

use super::apply::{apply, conv_keep, select, Refit};
use super::deps::{Analysis, ConvKind, ConvOp};
use super::emphasis::Emphasis;
use crate::dataset::Dataset;
use crate::graph;
use crate::probe::{progress, slice, InputMaker, Probe};

/// How reconstruction runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Output positions sampled per image and layer.
    pub samples_per_image: usize,
    /// Ridge term, relative to the mean diagonal of `P'P`.
    pub ridge: f64,
    /// Threads for inference and the linear algebra.
    pub threads: usize,
    /// Most memory the `P'P` / `P'Y` accumulators of one pass may take.
    pub memory_bytes: usize,
    /// Refit layers that feed a ReLU a second time, against the error after
    /// the ReLU (one more pass over the data per stage).
    pub relu_aware: bool,
}

/// Geometry of a 2-D convolution, as its patches are gathered.
#[derive(Debug, Clone, Copy)]
struct Window {
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    /// Padding before the first row and column.
    pad: [usize; 2],
}

fn ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    n.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.clone())
}

impl Window {
    fn of(n: &NodeProto, kernel: [usize; 2], input: [usize; 2], output: [usize; 2]) -> Window {
        let pair = |name: &str| {
            ints(n, name)
                .filter(|v| v.len() == 2)
                .map(|v| [v[0].max(1) as usize, v[1].max(1) as usize])
                .unwrap_or([1, 1])
        };
        let stride = pair("strides");
        let dilation = pair("dilations");
        let auto_pad = n
            .attribute
            .iter()
            .find(|a| a.name == "auto_pad")
            .map(|a| String::from_utf8_lossy(&a.s).to_string())
            .unwrap_or_default();
        let pad = match auto_pad.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => {
                let mut p = [0; 2];
                for i in 0..2 {
                    let needed = (output[i] - 1) * stride[i] + (kernel[i] - 1) * dilation[i] + 1;
                    let total = needed.saturating_sub(input[i]);
                    p[i] = if auto_pad == "SAME_UPPER" {
                        total / 2
                    } else {
                        total.div_ceil(2)
                    };
                }
                p
            }
            "VALID" => [0, 0],
            _ => ints(n, "pads")
                .filter(|v| v.len() == 4)
                .map(|v| [v[0].max(0) as usize, v[1].max(0) as usize])
                .unwrap_or([0, 0]),
        };
        Window {
            kernel,
            stride,
            dilation,
            pad,
        }
    }
}

/// One layer being refitted.
struct Target {
    conv: usize,
    keep_out: Vec<usize>,
    /// Kept input channels (in the pruned model's input tensor).
    inputs: usize,
    /// Input (pruned) and output spatial sizes.
    in_hw: [usize; 2],
    out_hw: [usize; 2],
    window: Window,
    gram: Mat<f64>,
    cross: Mat<f64>,
    /// Sum of squared first-pass targets over the samples.
    energy: f64,
    /// The original weights over the kept channels, `[rows, out]` (bias last):
    /// what plain pruning leaves, to measure what the refit gains.
    sliced: Mat<f64>,
    /// Whether the output goes only into a ReLU (or only into a residual
    /// `Add` that goes only into one), so that where the original is
    /// negative, any negative output is as good as exact.
    relu: bool,
    /// The residual `Add` the output goes into, when its other input is
    /// fixed by the time this layer is fitted: the layer then matches the
    /// original *sum*, so it also absorbs what the pruned residual path lost.
    residual: Option<Residual>,
    /// Sum of squared original outputs (the `Add`'s, with a residual): what
    /// the reported errors are relative to.
    norm: f64,
    /// ReLU-aware refit: the first fit, whose predictions set the second
    /// pass's targets, and the first pass's `P'Y`, to report the error.
    first: Option<(Mat<f64>, Mat<f64>)>,
    /// Second pass: what the report needs to judge the fit after the ReLU.
    relu_sums: ReluSums,
}

/// Sums of the second, ReLU-aware pass (all over the weighted samples).
#[derive(Default)]
struct ReluSums {
    /// Error after the ReLU with the sliced weights.
    sliced_error: f64,
    /// `sum T^2` of the second pass's own targets `T`: `||P x - T||^2`
    /// bounds the error after the ReLU too (not exactly at the first fit).
    fit_targets: f64,
    /// Output energy after the ReLU.
    energy: f64,
    /// `P'B`, `sum B^2` and a constant for a bound `||P x - B||^2 + c` on the
    /// error after the ReLU that is exact at the first fit (so the refit's
    /// reported error is an upper bound, yet never looser than the first fit's).
    bound_cross: Option<Mat<f64>>,
    bound_targets: f64,
    bound_constant: f64,
}

/// How well a layer's pruned outputs match the original's on the calibration
/// samples: residual energy over output energy, before and after the refit.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FitError {
    pub before: f64,
    pub after: f64,
    /// Measured after the ReLU that follows the layer (a ReLU-aware refit;
    /// `after` is then an upper bound), not on the layer's own output.
    pub after_relu: bool,
    /// Measured on the residual `Add`'s output (this layer plus the pruned
    /// residual path), which the refit matched to the original sum.
    pub on_residual_sum: bool,
}

/// The residual `Add` after a layer.
#[derive(Debug, Clone)]
struct Residual {
    /// Its other input.
    other: String,
    /// Its output: the sum.
    sum: String,
}

/// One calibration image as one layer sees it.
#[derive(Clone, Copy)]
struct Sample<'a> {
    /// The pruned model's input to the layer, `[1, in, h, w]`.
    x: &'a [f32],
    /// The original model's output of the layer (all channels).
    y: &'a [f32],
    /// The residual `Add`'s other input: the pruned model's (kept channels)
    /// and the original's (all channels).
    residual: Option<(&'a [f32], &'a [f32])>,
}

impl Target {
    fn rows(&self) -> usize {
        self.inputs * self.window.kernel[0] * self.window.kernel[1] + 1
    }

    fn bytes(rows: usize, outputs: usize) -> usize {
        (rows * rows + rows * outputs) * 8
    }

    /// Adds one image, with `emphasis` the weight of each output position
    /// (row-major `[oh, ow]`; none: all alike).
    fn accumulate(
        &mut self,
        Sample { x, y, residual }: Sample,
        emphasis: Option<&[f64]>,
        samples: usize,
        rng: &mut ChaCha8Rng,
        par: Par,
    ) {
        let [ih, iw] = self.in_hw;
        let [oh, ow] = self.out_hw;
        let w = self.window;
        let [kh, kw] = w.kernel;
        let rows = self.rows();
        let picks = pick_positions(oh * ow, samples, emphasis, rng);
        let n = picks.len();
        let patches = Mat::<f64>::from_fn(n, rows, |s, k| {
            let (p, weight) = picks[s];
            if k == rows - 1 {
                return weight.sqrt();
            }
            let (oy, ox) = (p / ow, p % ow);
            let c = k / (kh * kw);
            let ky = (k / kw) % kh;
            let kx = k % kw;
            let iy = (oy * w.stride[0] + ky * w.dilation[0]) as isize - w.pad[0] as isize;
            let ix = (ox * w.stride[1] + kx * w.dilation[1]) as isize - w.pad[1] as isize;
            if iy < 0 || ix < 0 || iy as usize >= ih || ix as usize >= iw {
                0.0
            } else {
                weight.sqrt() * f64::from(x[(c * ih + iy as usize) * iw + ix as usize])
            }
        });
        // In the `Add`'s terms with a residual: the original sum, and what
        // the pruned residual adds to this layer's output (0 without one).
        let original = Mat::<f64>::from_fn(n, self.keep_out.len(), |s, o| {
            let (p, weight) = picks[s];
            let at = self.keep_out[o] * oh * ow + p;
            let r = residual.map_or(0.0, |(_, r)| f64::from(r[at]));
            weight.sqrt() * (f64::from(y[at]) + r)
        });
        let offset = Mat::<f64>::from_fn(n, self.keep_out.len(), |s, o| {
            let (p, weight) = picks[s];
            residual.map_or(0.0, |(r, _)| weight.sqrt() * f64::from(r[o * oh * ow + p]))
        });
        let mut targets = Mat::<f64>::from_fn(n, self.keep_out.len(), |s, o| {
            original[(s, o)] - offset[(s, o)]
        });
        if let Some((first, _)) = &self.first {
            // Second pass of a ReLU-aware refit: where the original output is
            // not positive, the first fit's prediction is the target if it is
            // negative too (no error after the ReLU), and 0 if it is not.
            // Minimising this majorises the error after the ReLU.
            let predict = |w: &Mat<f64>| {
                let mut out = Mat::<f64>::zeros(n, w.ncols());
                matmul(
                    out.as_mut(),
                    Accum::Replace,
                    patches.as_ref(),
                    w.as_ref(),
                    1.0,
                    par,
                );
                out
            };
            let (predicted, sliced) = (predict(first), predict(&self.sliced));
            let sums = &mut self.relu_sums;
            // The bound's targets: as the fit's, except where the original
            // is positive and the first fit negative: there the error after
            // the ReLU is y^2 whatever the output below 0, which
            // (out - first)^2 + y^2 bounds, exactly at the first fit.
            // All in the ReLU's input terms (the layer's output plus the
            // pruned residual), shifted back by the residual at the end.
            let mut bound = Mat::<f64>::zeros(n, targets.ncols());
            for o in 0..targets.ncols() {
                for s in 0..n {
                    let y = original[(s, o)];
                    let shift = offset[(s, o)];
                    let first = predicted[(s, o)] + shift;
                    sums.energy += y.max(0.0).powi(2);
                    sums.sliced_error += ((sliced[(s, o)] + shift).max(0.0) - y.max(0.0)).powi(2);
                    let b = if y <= 0.0 {
                        targets[(s, o)] = first.min(0.0) - shift;
                        first.min(0.0)
                    } else if first < 0.0 {
                        sums.bound_constant += y * y;
                        first
                    } else {
                        y
                    };
                    bound[(s, o)] = b - shift;
                    sums.bound_targets += bound[(s, o)].powi(2);
                    sums.fit_targets += targets[(s, o)].powi(2);
                }
            }
            let rows = patches.ncols();
            let bound_cross = sums
                .bound_cross
                .get_or_insert_with(|| Mat::zeros(rows, bound.ncols()));
            matmul(
                bound_cross.as_mut(),
                Accum::Add,
                patches.transpose(),
                bound.as_ref(),
                1.0,
                par,
            );
        } else {
            let squares = |m: &Mat<f64>| {
                (0..m.ncols())
                    .flat_map(|o| (0..m.nrows()).map(move |s| (s, o)))
                    .map(|(s, o)| m[(s, o)] * m[(s, o)])
                    .sum::<f64>()
            };
            self.energy += squares(&targets);
            self.norm += squares(&original);
            matmul(
                self.gram.as_mut(),
                Accum::Add,
                patches.transpose(),
                patches.as_ref(),
                1.0,
                par,
            );
        }
        matmul(
            self.cross.as_mut(),
            Accum::Add,
            patches.transpose(),
            targets.as_ref(),
            1.0,
            par,
        );
    }

    /// `sum ||P x - T||^2` for weights `x` (`[rows, out]`), from the
    /// accumulated `P'P`, `P'T` (`cross`) and `sum T^2` (`energy`).
    fn squared_error(&self, x: &Mat<f64>, cross: &Mat<f64>, energy: f64) -> f64 {
        let mut gx = Mat::<f64>::zeros(x.nrows(), x.ncols());
        matmul(
            gx.as_mut(),
            Accum::Replace,
            self.gram.as_ref(),
            x.as_ref(),
            1.0,
            Par::Seq,
        );
        let mut quad = 0.0;
        let mut linear = 0.0;
        for o in 0..x.ncols() {
            for k in 0..x.nrows() {
                quad += x[(k, o)] * gx[(k, o)];
                linear += x[(k, o)] * cross[(k, o)];
            }
        }
        (energy - 2.0 * linear + quad).max(0.0)
    }

    /// Residual energy of weights `x` relative to the output energy, before any ReLU.
    fn relative_error(&self, x: &Mat<f64>) -> f64 {
        let cross = self.first.as_ref().map_or(&self.cross, |(_, c)| c);
        self.squared_error(x, cross, self.energy) / self.norm.max(f64::MIN_POSITIVE)
    }

    /// Per input channel: output error after removing it and refitting the
    /// rest, relative to the output energy of weights `w` (`[rows, out]`).
    fn removal_errors(&self, w: &Mat<f64>, ridge: f64) -> anyhow::Result<Vec<f64>> {
        let rows = self.rows();
        let mean_diag = (0..rows).map(|i| self.gram[(i, i)]).sum::<f64>() / rows as f64;
        let mut g = self.gram.clone();
        for i in 0..rows {
            g[(i, i)] += ridge * mean_diag.max(1e-12);
        }
        let inverse = g
            .llt(Side::Lower)
            .map_err(|e| anyhow::anyhow!("the inputs' Gram matrix is singular: {e:?}"))?
            .inverse();
        let mut gw = Mat::<f64>::zeros(rows, w.ncols());
        matmul(
            gw.as_mut(),
            Accum::Replace,
            self.gram.as_ref(),
            w.as_ref(),
            1.0,
            Par::Seq,
        );
        let energy: f64 = (0..w.ncols())
            .map(|o| (0..rows).map(|k| w[(k, o)] * gw[(k, o)]).sum::<f64>())
            .sum();
        let block = self.window.kernel[0] * self.window.kernel[1];
        let mut errors = Vec::with_capacity(self.inputs);
        for p in 0..self.inputs {
            let s = p * block;
            let m = Mat::<f64>::from_fn(block, block, |i, j| inverse[(s + i, s + j)]);
            let ws = Mat::<f64>::from_fn(block, w.ncols(), |i, o| w[(s + i, o)]);
            let Ok(llt) = m.llt(Side::Lower) else {
                errors.push(0.0);
                continue;
            };
            let x = llt.solve(&ws);
            let e: f64 = (0..w.ncols())
                .map(|o| (0..block).map(|i| ws[(i, o)] * x[(i, o)]).sum::<f64>())
                .sum();
            errors.push(e / energy.max(f64::MIN_POSITIVE));
        }
        Ok(errors)
    }

    /// The ridge least-squares solution `[rows, out]` for the accumulated `P'P`, `P'Y`.
    fn fit(&self, ridge: f64) -> anyhow::Result<Mat<f64>> {
        let rows = self.rows();
        let mean_diag = (0..rows).map(|i| self.gram[(i, i)]).sum::<f64>() / rows as f64;
        let mut lambda = ridge * mean_diag.max(1e-12);
        for _ in 0..6 {
            let mut g = self.gram.clone();
            for i in 0..rows {
                g[(i, i)] += lambda;
            }
            if let Ok(llt) = g.llt(Side::Lower) {
                let x = llt.solve(&self.cross);
                if (0..x.ncols()).all(|o| (0..rows).all(|k| x[(k, o)].is_finite())) {
                    return Ok(x);
                }
            }
            lambda *= 10.0;
        }
        bail!("the least-squares system is singular even with a ridge term")
    }

    /// Keeps the first fit and clears `P'Y` for a ReLU-aware second pass.
    fn begin_second_pass(&mut self, ridge: f64) -> anyhow::Result<()> {
        let first = self.fit(ridge)?;
        let empty = Mat::zeros(self.cross.nrows(), self.cross.ncols());
        let cross = std::mem::replace(&mut self.cross, empty);
        self.first = Some((first, cross));
        Ok(())
    }

    /// Solves for the new weights and bias, and says how far the outputs are
    /// from the original's before and after the refit.
    fn solve(&self, ridge: f64) -> anyhow::Result<(Refit, FitError)> {
        let x = self.fit(ridge)?;
        let (weights, error) = if self.first.is_some() {
            // The second fit's error after the ReLU is only bounded from
            // above (measuring it exactly would take a third pass), so it
            // is never flattered. The bounds are loose: on a toy layer the
            // second fit beats the first by 1 % while both bounds say it
            // lost, so the second fit is kept whatever they say.
            let sums = &self.relu_sums;
            let energy = sums.energy.max(f64::MIN_POSITIVE);
            // Two upper bounds: the fit's own objective, and one exact at the first fit.
            let bound = match &sums.bound_cross {
                Some(c) => (self.squared_error(&x, c, sums.bound_targets) + sums.bound_constant)
                    .min(self.squared_error(&x, &self.cross, sums.fit_targets)),
                None => 0.0,
            };
            let error = FitError {
                before: sums.sliced_error / energy,
                after: bound / energy,
                after_relu: true,
                on_residual_sum: self.residual.is_some(),
            };
            (&x, error)
        } else {
            // Exact errors: never worse than the plain cut (a ridge term
            // could make it so where a layer already matched).
            let (before, after) = (self.relative_error(&self.sliced), self.relative_error(&x));
            let w = if after <= before { &x } else { &self.sliced };
            let error = FitError {
                before,
                after: after.min(before),
                after_relu: false,
                on_residual_sum: self.residual.is_some(),
            };
            (w, error)
        };
        let rows = self.rows();
        let outs = self.keep_out.len();
        let mut weight = vec![0f32; outs * (rows - 1)];
        let mut bias = vec![0f32; outs];
        for o in 0..outs {
            for k in 0..rows - 1 {
                weight[o * (rows - 1) + k] = weights[(k, o)] as f32;
            }
            bias[o] = weights[(rows - 1, o)] as f32;
        }
        Ok((Refit { weight, bias }, error))
    }
}

/// The output positions (row-major index, weight) one image gives a layer
/// with `positions` of them. Small maps (the low-resolution levels) give
/// every position with its own weight. Large ones give `samples` positions
/// drawn in proportion to their weights, each weighing the image's mean, so
/// the sum estimates the same weighted total with less variance.
fn pick_positions(
    positions: usize,
    samples: usize,
    emphasis: Option<&[f64]>,
    rng: &mut ChaCha8Rng,
) -> Vec<(usize, f64)> {
    let weight = |p: usize| emphasis.map_or(1.0, |e| e[p]);
    if samples >= positions {
        return (0..positions).map(|p| (p, weight(p))).collect();
    }
    let Some(e) = emphasis.filter(|e| e.iter().sum::<f64>() > 0.0) else {
        return (0..samples)
            .map(|_| (rng.random_range(0..positions), 1.0))
            .collect();
    };
    let cumulative: Vec<f64> = e
        .iter()
        .scan(0.0, |acc, &w| {
            *acc += w;
            Some(*acc)
        })
        .collect();
    let total = cumulative[positions - 1];
    let mean = total / positions as f64;
    (0..samples)
        .map(|_| {
            let u = rng.random::<f64>() * total;
            let p = cumulative.partition_point(|&c| c <= u).min(positions - 1);
            (p, mean)
        })
        .collect()
}

/// The layers `reconstruct` refits: every dense Conv whose input differs
/// from the original's, because it lost channels or because a change
/// upstream reaches it: each can undo part of the error that arrives.
pub fn targets(original: &ModelProto, a: &Analysis, removed: &[bool]) -> Vec<usize> {
    let by_node: HashMap<usize, usize> = (0..a.convs.len()).map(|c| (a.convs[c].node, c)).collect();
    let mut changed: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, n) in graph::graph(original).node.iter().enumerate() {
        let input_changed = n.input.iter().any(|t| changed.contains(t.as_str()));
        let mut output_changed = input_changed;
        if let Some(&c) = by_node.get(&i) {
            let conv = &a.convs[c];
            let (keep_in, keep_out) = conv_keep(a, c, removed);
            let (cin, cout) = conv.channels();
            let narrower = keep_in.len() < cin || keep_out.len() < cout;
            output_changed |= narrower;
            if input_changed && conv.op == ConvOp::Conv && conv.kind == ConvKind::Dense {
                out.push(c);
            }
        }
        if output_changed {
            changed.extend(n.output.iter().map(String::as_str));
        }
    }
    out
}

/// Groups `chosen` layers into stages: a layer's stage is the number of
/// chosen layers on the longest path before it, so no layer depends on
/// another of its own stage. Also gives each tensor's depth: one more than
/// the last stage it depends on (0: no chosen layer reaches it), so a
/// tensor of depth `<= s` is final once the stages before `s` are fitted.
fn stages(
    original: &ModelProto,
    a: &Analysis,
    chosen: &[usize],
) -> (Vec<Vec<usize>>, HashMap<String, usize>) {
    let by_node: HashMap<usize, usize> = chosen.iter().map(|&c| (a.convs[c].node, c)).collect();
    let mut depth: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, n) in graph::graph(original).node.iter().enumerate() {
        let d = n
            .input
            .iter()
            .filter_map(|t| depth.get(t.as_str()).copied())
            .max()
            .unwrap_or(0);
        let after = match by_node.get(&i) {
            Some(&c) => {
                if out.len() <= d {
                    out.resize(d + 1, Vec::new());
                }
                out[d].push(c);
                d + 1
            }
            None => d,
        };
        for o in &n.output {
            depth.insert(o.as_str(), after);
        }
    }
    let depth = depth.into_iter().map(|(t, d)| (t.to_string(), d)).collect();
    (out, depth)
}

/// Where the output of dense Conv `c` (at `stage`) goes only into a residual
/// `Add` whose other input is final by then (per the `depth` of
/// [`stages`]), that `Add`.
fn fixed_residual(
    original: &ModelProto,
    a: &Analysis,
    shapes: &HashMap<String, Vec<usize>>,
    c: usize,
    (stage, depth): (usize, &HashMap<String, usize>),
) -> Option<Residual> {
    let g = graph::graph(original);
    let out = &a.convs[c].output;
    if g.output.iter().any(|o| &o.name == out) {
        return None;
    }
    let mut readers = g.node.iter().filter(|n| n.input.contains(out));
    let add = readers
        .next()
        .filter(|n| n.op_type == "Add" && n.input.len() == 2)?;
    if readers.next().is_some() {
        return None;
    }
    let other = add.input.iter().find(|t| *t != out)?;
    let same_shape = shapes
        .get(other)
        .is_some_and(|s| Some(s) == shapes.get(out));
    let sum = add.output.first()?;
    (same_shape && depth.get(other).copied().unwrap_or(0) <= stage).then(|| Residual {
        other: other.clone(),
        sum: sum.clone(),
    })
}

/// Splits `convs` into batches whose accumulators fit `memory_bytes`.
fn batched(
    a: &Analysis,
    convs: Vec<usize>,
    removed: &[bool],
    memory_bytes: usize,
) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = vec![Vec::new()];
    let mut used = 0usize;
    for c in convs {
        let (keep_in, keep_out) = conv_keep(a, c, removed);
        let rows = keep_in.len() * a.convs[c].kernel_area() + 1;
        let bytes = Target::bytes(rows, keep_out.len());
        if used + bytes > memory_bytes && !batches.last().is_some_and(Vec::is_empty) {
            batches.push(Vec::new());
            used = 0;
        }
        used += bytes;
        batches.last_mut().expect("never empty").push(c);
    }
    batches.retain(|b| !b.is_empty());
    batches
}

/// An empty accumulator for dense Conv `c` with the given kept channels.
fn target(
    original: &ModelProto,
    a: &Analysis,
    shapes: &HashMap<String, Vec<usize>>,
    c: usize,
    (keep_in, keep_out): (&[usize], Vec<usize>),
    residual: Option<Residual>,
) -> anyhow::Result<Target> {
    let conv = &a.convs[c];
    let dims = |t: &str| {
        shapes
            .get(t)
            .filter(|s| s.len() == 4)
            .map(|s| [s[2], s[3]])
            .with_context(|| format!("{}: unknown shape of {t}", conv.name))
    };
    let (in_hw, out_hw) = (dims(&conv.input)?, dims(&conv.output)?);
    let kernel = [conv.weight_dims[2], conv.weight_dims[3]];
    let g = graph::graph(original);
    let window = Window::of(&g.node[conv.node], kernel, in_hw, out_hw);
    let rows = keep_in.len() * conv.kernel_area() + 1;
    // With a residual, the ReLU that matters is the one after the `Add`.
    let fed = residual.as_ref().map_or(&conv.output, |r| &r.sum);
    let mut readers = g.node.iter().filter(|n| n.input.contains(fed));
    let relu = g.output.iter().all(|o| &o.name != fed)
        && readers.clone().next().is_some()
        && readers.all(|n| n.op_type == "Relu");
    Ok(Target {
        relu,
        residual,
        norm: 0.0,
        first: None,
        relu_sums: ReluSums::default(),
        energy: 0.0,
        sliced: sliced_weights(original, a, c, keep_in, &keep_out)?,
        conv: c,
        inputs: keep_in.len(),
        in_hw,
        out_hw,
        window,
        gram: Mat::zeros(rows, rows),
        cross: Mat::zeros(rows, keep_out.len()),
        keep_out,
    })
}

/// One pass over `data`: each layer's inputs come from `x_model` (same
/// tensor names as the original), its target outputs from `y_model`.
fn pass(
    x_model: &ModelProto,
    y_model: &ModelProto,
    a: &Analysis,
    layers: &mut [Target],
    (data, inputs, emphasis): (&Dataset, &mut InputMaker, Option<&Emphasis>),
    opts: Options,
    label: &str,
) -> anyhow::Result<()> {
    // Two layers may read one tensor: ask for it once.
    fn index_of(names: &mut Vec<String>, name: &str) -> usize {
        names.iter().position(|n| n == name).unwrap_or_else(|| {
            names.push(name.to_string());
            names.len() - 1
        })
    }
    let (mut x_names, mut y_names) = (Vec::new(), Vec::new());
    // Per layer, where its tensors are in the probes' outputs: its input,
    // its original output, and the residual from both models.
    struct Reads {
        x: usize,
        y: usize,
        residual: Option<(usize, usize)>,
    }
    let mut at: Vec<Reads> = Vec::new();
    for t in layers.iter() {
        let conv = &a.convs[t.conv];
        let residual = t.residual.as_ref().map(|r| {
            (
                index_of(&mut x_names, &r.other),
                index_of(&mut y_names, &r.other),
            )
        });
        at.push(Reads {
            x: index_of(&mut x_names, &conv.input),
            y: index_of(&mut y_names, &conv.output),
            residual,
        });
    }
    let wants_y = layers.iter().any(|t| !t.keep_out.is_empty());
    let size = inputs.size();
    let x_probe =
        Probe::new(x_model, &x_names, size, opts.threads).context("planning the pruned model")?;
    let y_probe = wants_y
        .then(|| Probe::new(y_model, &y_names, size, opts.threads))
        .transpose()?;
    let par = Par::rayon(opts.threads);
    let bar = progress(data.len(), label);
    for i in 0..data.len() {
        let x = inputs.tensor(data, i)?;
        let ys = y_probe.as_ref().map(|p| p.run(x.clone())).transpose()?;
        let xs = x_probe.run(x)?;
        let table = emphasis.map(|e| e.table(i));
        for (t, reads) in layers.iter_mut().zip(&at) {
            let mut rng = ChaCha8Rng::seed_from_u64((i as u64) << 20 | t.conv as u64);
            let y = |k: usize| match &ys {
                Some(ys) => slice::<f32>(&ys[k]),
                None => Ok(&[][..]),
            };
            let residual = match reads.residual {
                Some((rx, ry)) => Some((slice::<f32>(&xs[rx])?, y(ry)?)),
                None => None,
            };
            let sample = Sample {
                x: slice::<f32>(&xs[reads.x])?,
                y: y(reads.y)?,
                residual,
            };
            let weights = table.as_ref().map(|w| w.pooled(t.out_hw));
            t.accumulate(
                sample,
                weights.as_deref(),
                opts.samples_per_image,
                &mut rng,
                par,
            );
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Refits the layers whose inputs changed; returns their new weights by
/// conv index. `emphasis` weighs the calibration positions (none: all alike).
pub fn reconstruct(
    original: &ModelProto,
    a: &Analysis,
    removed: &[bool],
    (data, emphasis): (&Dataset, Option<&Emphasis>),
    inputs: &mut InputMaker,
    opts: Options,
) -> anyhow::Result<(HashMap<usize, Refit>, HashMap<usize, FitError>)> {
    let shapes = super::deps::tensor_shapes(original, inputs.size())?;
    let chosen = targets(original, a, removed);
    let mut refits: HashMap<usize, Refit> = HashMap::new();
    let mut errors: HashMap<usize, FitError> = HashMap::new();
    // Stages in dependency order: a layer is fitted once every refitted
    // layer before it is in place; layers of one stage are independent and
    // share a pass over the data, split where the memory budget says.
    let (stages, depth) = stages(original, a, &chosen);
    let stage_of: HashMap<usize, usize> = stages
        .iter()
        .enumerate()
        .flat_map(|(s, convs)| convs.iter().map(move |&c| (c, s)))
        .collect();
    let batches: Vec<Vec<usize>> = stages
        .into_iter()
        .flat_map(|stage| batched(a, stage, removed, opts.memory_bytes))
        .collect();
    let total = batches.len();
    // A fit with fewer samples than a few per unknown follows the calibration
    // images rather than the layer: say which layers and how to fix it.
    let thin: Vec<String> = chosen
        .iter()
        .filter(|&&c| {
            let conv = &a.convs[c];
            let rows = conv_keep(a, c, removed).0.len() * conv.kernel_area() + 1;
            data.len() * opts.samples_per_image.min(conv.positions) < 4 * rows
        })
        .map(|&c| a.convs[c].name.clone())
        .collect();
    if !thin.is_empty() {
        log::warn!(
            "{} calibration images give under 4 samples per weight to {} layer(s) (e.g. {}, \
             low resolution and wide): their refit may follow the calibration images; use more \
             (--calib synth:{} or a larger folder)",
            data.len(),
            thin.len(),
            thin[0],
            (data.len() * 2).max(32)
        );
    }
    for (bi, batch) in batches.iter().enumerate() {
        let pruned = apply(original, a, removed, &refits)?;
        let mut layers = Vec::new();
        for &c in batch {
            let (keep_in, keep_out) = conv_keep(a, c, removed);
            let residual = fixed_residual(original, a, &shapes, c, (stage_of[&c], &depth));
            layers.push(target(
                original,
                a,
                &shapes,
                c,
                (&keep_in, keep_out),
                residual,
            )?);
        }
        let label = format!("refit {}/{total}", bi + 1);
        pass(
            &pruned,
            original,
            a,
            &mut layers,
            (data, &mut *inputs, emphasis),
            opts,
            &label,
        )?;
        if opts.relu_aware && layers.iter().any(|t| t.relu) {
            let (mut second, rest): (Vec<Target>, Vec<Target>) =
                layers.into_iter().partition(|t| t.relu);
            for t in &mut second {
                t.begin_second_pass(opts.ridge)
                    .with_context(|| format!("refitting {}", a.convs[t.conv].name))?;
            }
            pass(
                &pruned,
                original,
                a,
                &mut second,
                (data, &mut *inputs, emphasis),
                opts,
                &format!("relu {}/{total}", bi + 1),
            )?;
            layers = second;
            layers.extend(rest);
        }
        for t in &layers {
            let (refit, error) = t
                .solve(opts.ridge)
                .with_context(|| format!("refitting {}", a.convs[t.conv].name))?;
            log::debug!(
                "{}: residual {:.4} -> {:.4}",
                a.convs[t.conv].name,
                error.before,
                error.after
            );
            refits.insert(t.conv, refit);
            errors.insert(t.conv, error);
        }
    }
    Ok((refits, errors))
}

/// For every dense Conv in `convs`: the error its outputs would suffer, after
/// an optimal least-squares refit of its other inputs, if input channel `p`
/// went alone, relative to its output energy (on the original model).
///
/// With `G` the input patches' Gram matrix and `W` the weights, removing the
/// rows `S` of one channel and refitting the rest costs
/// `tr(W_S' (G^-1)_SS^-1 W_S)` (Optimal Brain Surgeon's formula for a block).
pub fn removal_errors(
    original: &ModelProto,
    a: &Analysis,
    convs: &[usize],
    (data, emphasis): (&Dataset, Option<&Emphasis>),
    inputs: &mut InputMaker,
    opts: Options,
) -> anyhow::Result<HashMap<usize, Vec<f64>>> {
    let shapes = super::deps::tensor_shapes(original, inputs.size())?;
    let none = vec![false; a.groups.len()];
    let mut out = HashMap::new();
    for batch in batched(a, convs.to_vec(), &none, opts.memory_bytes) {
        let mut layers = Vec::new();
        for &c in &batch {
            let (keep_in, _) = conv_keep(a, c, &none);
            // No target outputs: only the inputs' Gram matrix is needed.
            layers.push(target(
                original,
                a,
                &shapes,
                c,
                (&keep_in, Vec::new()),
                None,
            )?);
        }
        pass(
            original,
            original,
            a,
            &mut layers,
            (data, &mut *inputs, emphasis),
            opts,
            "redundancy",
        )?;
        for t in &layers {
            let conv = &a.convs[t.conv];
            let (keep_in, keep_out) = conv_keep(a, t.conv, &none);
            let w = sliced_weights(original, a, t.conv, &keep_in, &keep_out)?;
            out.insert(
                t.conv,
                t.removal_errors(&w, opts.ridge)
                    .with_context(|| conv.name.clone())?,
            );
        }
    }
    Ok(out)
}

/// The original weights and bias of dense Conv `c` over the kept channels, as `[rows, out]`.
pub(super) fn sliced_weights(
    original: &ModelProto,
    a: &Analysis,
    c: usize,
    keep_in: &[usize],
    keep_out: &[usize],
) -> anyhow::Result<Mat<f64>> {
    let conv = &a.convs[c];
    let inits = graph::initializers(graph::graph(original));
    let get = |name: &str| {
        inits
            .get(name)
            .with_context(|| format!("initializer {name:?} is missing"))
            .and_then(|t| graph::tensor_f32(t))
    };
    let (dims, w) = get(&conv.weight)?;
    let (d, w) = select(&dims, &w, 0, keep_out);
    let (_, w) = select(&d, &w, 1, keep_in);
    let bias = match &conv.bias {
        Some(b) => select(&[dims[0]], &get(b)?.1, 0, keep_out).1,
        None => vec![0.0; keep_out.len()],
    };
    let k = keep_in.len() * conv.kernel_area();
    Ok(Mat::from_fn(k + 1, keep_out.len(), |r, o| {
        f64::from(if r == k { bias[o] } else { w[o * k + r] })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1x1 convolution with two input channels and one output, over a 1 x `n` map.
    fn toy(n: usize) -> Target {
        Target {
            conv: 0,
            keep_out: vec![0],
            inputs: 2,
            in_hw: [1, n],
            out_hw: [1, n],
            window: Window {
                kernel: [1, 1],
                stride: [1, 1],
                dilation: [1, 1],
                pad: [0, 0],
            },
            gram: Mat::zeros(3, 3),
            cross: Mat::zeros(3, 1),
            energy: 0.0,
            sliced: Mat::from_fn(3, 1, |k, _| [0.0, 1.0, 0.0][k]),
            relu: true,
            residual: None,
            norm: 0.0,
            first: None,
            relu_sums: ReluSums::default(),
        }
    }

    #[test]
    fn weighted_sampling_favours_heavy_positions_and_small_maps_give_all() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let all = pick_positions(5, 16, Some(&[1.0, 2.0, 3.0, 4.0, 5.0]), &mut rng);
        assert_eq!(all.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(all[3].1, 4.0);
        // The last 100 of 1,000 positions carry 91 % of the weight: they get
        // most of the draws, each weighing the map's mean.
        let e: Vec<f64> = (0..1000).map(|p| if p < 900 { 0.1 } else { 9.1 }).collect();
        let picks = pick_positions(1000, 500, Some(&e), &mut rng);
        let heavy = picks.iter().filter(|p| p.0 >= 900).count();
        assert!((420..=490).contains(&heavy), "{heavy}");
        assert!(picks.iter().all(|p| (p.1 - 1.0).abs() < 1e-12));
        // Without emphasis: uniform draws of weight 1.
        let plain = pick_positions(1000, 500, None, &mut rng);
        let last = plain.iter().filter(|p| p.0 >= 900).count();
        assert!((25..=80).contains(&last), "{last}");
    }

    #[test]
    fn a_layer_before_a_residual_add_makes_up_for_what_the_residual_path_lost() {
        // Original: y = x0 + 2 x1 and the residual r = x1 + 0.3; the pruned
        // residual path lost all of it (0), so the layer alone must give the
        // original sum x0 + 3 x1 + 0.3.
        let n = 64;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let x: Vec<f32> = (0..2 * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let y: Vec<f32> = (0..n).map(|p| x[p] + 2.0 * x[n + p]).collect();
        let original_residual: Vec<f32> = (0..n).map(|p| x[n + p] + 0.3).collect();
        let pruned_residual = vec![0f32; n];
        let mut t = toy(n);
        t.relu = false;
        t.residual = Some(Residual {
            other: "r".into(),
            sum: "s".into(),
        });
        let sample = Sample {
            x: &x,
            y: &y,
            residual: Some((&pruned_residual, &original_residual)),
        };
        t.accumulate(sample, None, n, &mut rng, Par::Seq);
        let (refit, error) = t.solve(1e-9).unwrap();
        for (got, want) in refit.weight.iter().zip([1.0, 3.0]) {
            assert!((got - want).abs() < 1e-3, "{:?}", refit.weight);
        }
        assert!((refit.bias[0] - 0.3).abs() < 1e-3, "{:?}", refit.bias);
        // Errors are of the sum: the sliced weights (x1) miss x0 + 2 x1 + 0.3.
        let sum = |p: usize| f64::from(x[p] + 3.0 * x[n + p] + 0.3);
        let missed: f64 = (0..n).map(|p| (sum(p) - f64::from(x[n + p])).powi(2)).sum();
        let energy: f64 = (0..n).map(|p| sum(p).powi(2)).sum();
        assert!(error.on_residual_sum && !error.after_relu);
        assert!((error.before - missed / energy).abs() < 1e-6, "{error:?}");
        assert!(error.after < 1e-6, "{error:?}");
    }

    #[test]
    fn the_relu_aware_refit_beats_plain_least_squares_after_the_relu() {
        // The original output is non-linear in the inputs; only its positive
        // part reaches the next layer.
        let n = 400;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x: Vec<f32> = (0..2 * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let y: Vec<f32> = (0..n)
            .map(|p| x[p] + 2.0 * x[n + p] * x[n + p] - 1.0)
            .collect();
        let relu_error = |w: &Mat<f64>| {
            (0..n)
                .map(|p| {
                    let out =
                        w[(0, 0)] * f64::from(x[p]) + w[(1, 0)] * f64::from(x[n + p]) + w[(2, 0)];
                    (out.max(0.0) - f64::from(y[p]).max(0.0)).powi(2)
                })
                .sum::<f64>()
        };
        let energy: f64 = y.iter().map(|&v| f64::from(v).max(0.0).powi(2)).sum();
        let mut t = toy(n);
        let sample = Sample {
            x: &x,
            y: &y,
            residual: None,
        };
        t.accumulate(sample, None, n, &mut rng, Par::Seq);
        let linear = t.fit(1e-9).unwrap();
        t.begin_second_pass(1e-9).unwrap();
        t.accumulate(sample, None, n, &mut rng, Par::Seq);
        let (refit, error) = t.solve(1e-9).unwrap();
        let fitted = Mat::from_fn(3, 1, |k, _| {
            f64::from(if k < 2 {
                refit.weight[k]
            } else {
                refit.bias[0]
            })
        });
        assert!(error.after_relu);
        assert!(
            relu_error(&fitted) < 0.99 * relu_error(&linear),
            "relu-aware {} vs plain {}",
            relu_error(&fitted),
            relu_error(&linear)
        );
        // The report's "before" is the sliced weights' error after the ReLU,
        // and its "after" bounds the refit's from above.
        assert!((error.before - relu_error(&t.sliced) / energy).abs() < 1e-6);
        assert!(error.after >= relu_error(&fitted) / energy - 1e-6);
        assert!(
            error.after < error.before,
            "{error:?}, fitted {}",
            relu_error(&fitted) / energy
        );
    }
}
