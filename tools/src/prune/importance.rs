//! How much each group of channels matters, comparable across layers.
//!
//! * `l1` / `l2`: the norm of each filter (weighted by a following
//!   BatchNorm's scale), divided by its layer's mean norm so that layers of
//!   different scale rank on one list.
//! * `activation`: on calibration images, the share of each consuming
//!   layer's input signal a channel carries, `E[x_c^2] * ||W[:, c]||^2`,
//!   relative to that layer's average input channel and averaged over the
//!   consumers; a channel that is dead (always zero after ReLU) scores 0.
//! * `redundancy`: what `--reconstruct` cannot win back: each consuming
//!   layer's relative output error after removing the channel and refitting
//!   its other inputs by least squares (see
//!   [`reconstruct::removal_errors`](super::reconstruct::removal_errors)),
//!   summed over the consumers. A channel that its neighbours can stand in for
//!   scores low even when it is strong.

use anyhow::Context;
use clap::ValueEnum;
use serde::Serialize;
use tract_onnx::pb::ModelProto;

use super::deps::{Analysis, ConvKind, ConvOp};
use super::emphasis::Emphasis;
use crate::dataset::Dataset;
use crate::graph;
use crate::probe::{progress, slice, InputMaker, Probe};

/// How channels are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Importance {
    /// Sum of absolute filter weights.
    L1,
    /// Euclidean norm of the filter weights.
    L2,
    /// Signal each channel carries into the next layers, on calibration images.
    Activation,
    /// Error the next layers keep, after a least-squares refit of their other
    /// inputs, when the channel goes (calibration images; pairs with --reconstruct).
    Redundancy,
}

/// Weights of a dense convolution as `[out][in * kh * kw]` rows, or
/// per-input-channel columns, from its initializer.
struct Weights {
    dims: Vec<usize>,
    values: Vec<f32>,
}

fn weights(model: &ModelProto, name: &str) -> anyhow::Result<Weights> {
    let g = graph::graph(model);
    let t = graph::initializers(g)
        .get(name)
        .copied()
        .with_context(|| format!("initializer {name:?} is missing"))?;
    let (dims, values) = graph::tensor_f32(t)?;
    Ok(Weights { dims, values })
}

impl Weights {
    /// `f` over every weight with its index along axis 0 and axis 1.
    fn for_each(&self, mut f: impl FnMut(usize, usize, f32)) {
        let inner: usize = self.dims[2..].iter().product();
        for (i, &v) in self.values.iter().enumerate() {
            let a1 = (i / inner) % self.dims[1];
            let a0 = i / (inner * self.dims[1]);
            f(a0, a1, v);
        }
    }
}

/// Per-group scores from filter norms (`p` = 1 or 2).
pub fn magnitude(model: &ModelProto, a: &Analysis, p: i32) -> anyhow::Result<Vec<f64>> {
    let mut per_conv: Vec<Vec<f64>> = vec![Vec::new(); a.convs.len()];
    for (ci, conv) in a.convs.iter().enumerate() {
        if conv.kind != ConvKind::Dense {
            continue;
        }
        let w = weights(model, &conv.weight)?;
        let (_, cout) = conv.channels();
        let mut norms = vec![0f64; cout];
        w.for_each(|a0, a1, v| {
            let o = if conv.op == ConvOp::Conv { a0 } else { a1 };
            norms[o] += f64::from(v.abs()).powi(p);
        });
        for (o, n) in norms.iter_mut().enumerate() {
            *n = n.powf(1.0 / f64::from(p));
            if let Some(s) = &conv.bn_scale {
                *n *= f64::from(s[o]);
            }
        }
        let mean = norms.iter().sum::<f64>() / cout.max(1) as f64;
        if mean > 0.0 {
            norms.iter_mut().for_each(|n| *n /= mean);
        }
        per_conv[ci] = norms;
    }
    Ok(a.groups
        .iter()
        .map(|g| {
            g.members.iter().map(|&(c, o)| per_conv[c][o]).sum::<f64>() / g.members.len() as f64
        })
        .collect())
}

/// Per-group scores from activations on calibration images; `emphasis`
/// weighs their positions (none: all alike), so that channels the rare
/// classes need are not ranked by how little of the image those classes cover.
pub fn activation(
    model: &ModelProto,
    a: &Analysis,
    (data, emphasis): (&Dataset, Option<&Emphasis>),
    inputs: &mut InputMaker,
    threads: usize,
) -> anyhow::Result<Vec<f64>> {
    // Dense consumers and the tensors they read.
    let consumers: Vec<usize> = (0..a.convs.len())
        .filter(|&c| a.convs[c].kind == ConvKind::Dense)
        .collect();
    let mut tensors: Vec<String> = Vec::new();
    for &c in &consumers {
        if !tensors.contains(&a.convs[c].input) {
            tensors.push(a.convs[c].input.clone());
        }
    }
    let probe = Probe::new(model, &tensors, inputs.size(), threads)?;
    let mut energy: Vec<Vec<f64>> = vec![Vec::new(); tensors.len()];
    let bar = progress(data.len(), "activations");
    for i in 0..data.len() {
        let outs = probe.run(inputs.tensor(data, i)?)?;
        let table = emphasis.map(|e| e.table(i));
        for (e, t) in energy.iter_mut().zip(&outs) {
            let shape = t.shape();
            let channels = shape.get(1).copied().unwrap_or(1);
            let v = slice::<f32>(t)?;
            let per = v.len() / channels.max(1);
            let weights = match (&table, shape) {
                (Some(table), &[1, _, h, w]) => table.pooled([h, w]),
                _ => vec![1.0; per],
            };
            let total = weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
            e.resize(channels, 0.0);
            for (c, chunk) in v.chunks_exact(per.max(1)).enumerate() {
                e[c] += chunk
                    .iter()
                    .zip(&weights)
                    .map(|(&x, &w)| w * f64::from(x) * f64::from(x))
                    .sum::<f64>()
                    / total;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut scores = vec![0f64; a.groups.len()];
    let mut seen = vec![0usize; a.groups.len()];
    for &c in &consumers {
        let conv = &a.convs[c];
        let t = tensors.iter().position(|t| t == &conv.input).unwrap_or(0);
        let Some(positions) = a.tensors.get(&conv.input) else {
            continue;
        };
        let w = weights(model, &conv.weight)?;
        let mut column = vec![0f64; positions.len()];
        w.for_each(|a0, a1, v| {
            let i = if conv.op == ConvOp::Conv { a1 } else { a0 };
            column[i] += f64::from(v) * f64::from(v);
        });
        let carried: Vec<f64> = column
            .iter()
            .zip(&energy[t])
            .map(|(w2, x2)| w2 * x2)
            .collect();
        let total: f64 = carried.iter().sum();
        if total <= 0.0 {
            continue;
        }
        // Relative to this layer's average input channel (1.0), so wide and
        // narrow layers rank on one scale.
        let average = total / positions.len() as f64;
        for (p, g) in positions.iter().enumerate() {
            if let Some(g) = g {
                scores[*g] += carried[p] / average;
                seen[*g] += 1;
            }
        }
    }
    for (s, n) in scores.iter_mut().zip(&seen) {
        *s /= (*n).max(1) as f64;
    }
    Ok(scores)
}

/// Per-group scores from what reconstruction could not recover.
pub fn redundancy(
    model: &ModelProto,
    a: &Analysis,
    (data, emphasis): (&Dataset, Option<&Emphasis>),
    inputs: &mut InputMaker,
    opts: super::reconstruct::Options,
) -> anyhow::Result<Vec<f64>> {
    let consumers: Vec<usize> = (0..a.convs.len())
        .filter(|&c| {
            let conv = &a.convs[c];
            conv.op == ConvOp::Conv
                && conv.kind == ConvKind::Dense
                && a.tensors
                    .get(&conv.input)
                    .is_some_and(|p| p.iter().any(Option::is_some))
        })
        .collect();
    let errors =
        super::reconstruct::removal_errors(model, a, &consumers, (data, emphasis), inputs, opts)?;
    let mut scores = vec![0f64; a.groups.len()];
    let mut measured = vec![false; a.groups.len()];
    for (c, errs) in &errors {
        let positions = &a.tensors[&a.convs[*c].input];
        for (p, g) in positions.iter().enumerate() {
            if let Some(g) = g {
                scores[*g] += errs[p];
                measured[*g] = true;
            }
        }
    }
    // A group no dense Conv reads (none in DLA) is not judged: keep it.
    let top = scores.iter().copied().fold(0.0, f64::max).max(1.0);
    for (s, m) in scores.iter_mut().zip(&measured) {
        if !m {
            *s = top * 10.0;
        }
    }
    Ok(scores)
}
