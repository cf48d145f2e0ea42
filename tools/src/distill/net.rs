//! A differentiable executor for the convolutional ONNX graphs `prune`
//! handles: Conv, ConvTranspose, Relu, Add, Concat, MaxPool and
//! BatchNormalization, one image at a time in NCHW order. It runs the graph
//! up to one tensor (the logits), keeps every activation, and sends a
//! gradient back to the Conv weights and biases. ConvTranspose weights (DLA's
//! fixed bilinear up-samplers) and BatchNormalization stay as they are.
//!
//! Every buffer is allocated once in [`Workspace`], so a training step
//! allocates nothing.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context};
use faer::Par;
use tract_onnx::pb::{ModelProto, NodeProto};

use super::conv::{self, Geometry};
use crate::graph;

/// One initializer the network reads.
pub struct Param {
    /// Its initializer's name.
    pub name: String,
    pub dims: Vec<usize>,
    pub value: Vec<f32>,
    /// Conv weights and biases are; everything else is fixed.
    pub trainable: bool,
}

enum Op {
    Conv {
        x: usize,
        w: usize,
        b: Option<usize>,
        geo: Geometry,
    },
    /// Runs as the adjoint of `geo`, a convolution from its output to its input.
    ConvTranspose {
        x: usize,
        w: usize,
        b: Option<usize>,
        geo: Geometry,
    },
    Relu {
        x: usize,
    },
    Add {
        a: usize,
        b: usize,
    },
    Concat {
        xs: Vec<usize>,
    },
    MaxPool {
        x: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
    },
    /// Inference-mode BatchNormalization: `x * scale + shift` per channel.
    Affine {
        x: usize,
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
}

struct Node {
    op: Op,
    out: usize,
}

/// The part of an ONNX graph that computes one tensor from the image.
pub struct Net {
    nodes: Vec<Node>,
    /// `[channels, height, width]` of every value; value 0 is the image.
    shapes: Vec<[usize; 3]>,
    pub params: Vec<Param>,
    output: usize,
}

/// Activations, gradients and scratch space for one image.
pub struct Workspace {
    values: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    /// Per MaxPool value: the flat input index each output came from.
    argmax: HashMap<usize, Vec<u32>>,
    cols: Vec<f32>,
    /// A ConvTranspose input's gradient before it is added in.
    tmp: Vec<f32>,
    /// Per parameter, its gradient summed over the images since the last [`Workspace::zero_grads`].
    pub param_grads: Vec<Vec<f32>>,
}

fn ints(n: &NodeProto, name: &str) -> Option<Vec<usize>> {
    n.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.iter().map(|&v| v.max(0) as usize).collect())
}

fn pair(n: &NodeProto, name: &str, default: usize) -> anyhow::Result<[usize; 2]> {
    match ints(n, name).as_deref() {
        None => Ok([default; 2]),
        Some(&[a, b]) => Ok([a, b]),
        Some(&[a, b, c, d]) if name == "pads" => {
            if (a, b) != (c, d) && n.op_type == "MaxPool" {
                bail!(
                    "{}: MaxPool with uneven pads {:?} is not supported",
                    n.name,
                    [a, b, c, d]
                );
            }
            Ok([a, b])
        }
        Some(other) => bail!("{}: attribute {name} {other:?}: expected 2-D", n.name),
    }
}

impl Net {
    /// The ops between `model`'s image input (at `(height, width)`) and the
    /// tensor `output`.
    pub fn build(
        model: &ModelProto,
        (height, width): (usize, usize),
        output: &str,
    ) -> anyhow::Result<Net> {
        let g = graph::graph(model);
        let inits = graph::initializers(g);
        let image = g
            .input
            .iter()
            .find(|i| !inits.contains_key(i.name.as_str()))
            .context("the model has no image input")?;
        // Only the nodes `output` depends on.
        let producer: HashMap<&str, &NodeProto> = g
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
            .collect();
        let mut needed = HashSet::new();
        let mut stack = vec![output];
        while let Some(t) = stack.pop() {
            if let Some(n) = producer.get(t) {
                if needed.insert(n.name.as_str()) {
                    stack.extend(n.input.iter().map(String::as_str).filter(|i| !i.is_empty()));
                }
            }
        }
        if !producer.contains_key(output) {
            bail!("no node computes {output}");
        }
        let mut ids: HashMap<&str, usize> = HashMap::from([(image.name.as_str(), 0)]);
        let mut net = Net {
            nodes: Vec::new(),
            shapes: vec![[3, height, width]],
            params: Vec::new(),
            output: 0,
        };
        let mut param_ids: HashMap<&str, usize> = HashMap::new();
        for n in g.node.iter().filter(|n| needed.contains(n.name.as_str())) {
            let value = |i: usize| -> anyhow::Result<usize> {
                let name = n.input.get(i).map(String::as_str).unwrap_or("");
                ids.get(name).copied().with_context(|| {
                    format!("{}: input {name:?} is not computed from the image", n.name)
                })
            };
            let mut param = |i: usize, trainable: bool| -> anyhow::Result<Option<usize>> {
                let Some(name) = n.input.get(i).filter(|s| !s.is_empty()) else {
                    return Ok(None);
                };
                if let Some(&p) = param_ids.get(name.as_str()) {
                    net.params[p].trainable &= trainable;
                    return Ok(Some(p));
                }
                let t = inits
                    .get(name.as_str())
                    .with_context(|| format!("{}: {name} is not an initializer", n.name))?;
                let (dims, value) =
                    graph::tensor_f32(t).with_context(|| format!("{}: reading {name}", n.name))?;
                net.params.push(Param {
                    name: name.clone(),
                    dims,
                    value,
                    trainable,
                });
                param_ids.insert(name.as_str(), net.params.len() - 1);
                Ok(Some(net.params.len() - 1))
            };
            let (op, shape) = match n.op_type.as_str() {
                "Conv" | "ConvTranspose" => {
                    let x = value(0)?;
                    let w = param(1, n.op_type == "Conv")?.expect("input 1 is named");
                    let b = param(2, n.op_type == "Conv")?;
                    let [c, h, wd] = net.shapes[x];
                    let dims = &net.params[w].dims;
                    let &[d0, d1, kh, kw] = &dims[..] else {
                        bail!("{}: weights {dims:?}: expected 4-D", n.name);
                    };
                    let group = graph::int(n, "group").unwrap_or(1).max(1) as usize;
                    let stride = pair(n, "strides", 1)?;
                    let pad = pair(n, "pads", 0)?;
                    let dilation = pair(n, "dilations", 1)?;
                    let ends = ints(n, "pads")
                        .filter(|p| p.len() == 4)
                        .map_or(pad, |p| [p[2], p[3]]);
                    // A ConvTranspose runs as the adjoint of the plain
                    // convolution from its output to its input, whose
                    // weights have the same layout: [cout, cin / group, ..].
                    let transposed = n.op_type == "ConvTranspose";
                    let (cin, cout) = (d1 * group, d0);
                    let takes = if transposed { cout } else { cin };
                    if takes != c || cout % group != 0 {
                        bail!(
                            "{}: weights {dims:?} with group {group} do not take {c} channels",
                            n.name
                        );
                    }
                    let reach = |axis: usize| dilation[axis] * ([kh, kw][axis] - 1) + 1;
                    let out = |axis: usize, len: usize| {
                        if transposed {
                            let extra = ints(n, "output_padding").unwrap_or_default();
                            ((len - 1) * stride[axis]
                                + reach(axis)
                                + extra.get(axis).copied().unwrap_or(0))
                            .checked_sub(pad[axis] + ends[axis])
                        } else {
                            (len + pad[axis] + ends[axis])
                                .checked_sub(reach(axis))
                                .map(|v| v / stride[axis] + 1)
                        }
                    };
                    let (Some(ho), Some(wo)) = (out(0, h), out(1, wd)) else {
                        bail!(
                            "{}: a {kh}x{kw} kernel with pads {pad:?} does not fit {h}x{wd}",
                            n.name
                        );
                    };
                    let (input, output) = if transposed {
                        ([ho, wo], [h, wd])
                    } else {
                        ([h, wd], [ho, wo])
                    };
                    let geo = Geometry {
                        cin,
                        cout,
                        group,
                        kernel: [kh, kw],
                        stride,
                        pad,
                        dilation,
                        input,
                        output,
                    };
                    let channels = if transposed { cin } else { cout };
                    let op = if transposed {
                        Op::ConvTranspose { x, w, b, geo }
                    } else {
                        Op::Conv { x, w, b, geo }
                    };
                    (op, [channels, ho, wo])
                }
                "Relu" => {
                    let x = value(0)?;
                    (Op::Relu { x }, net.shapes[x])
                }
                "Add" => {
                    let (a, b) = (value(0)?, value(1)?);
                    if net.shapes[a] != net.shapes[b] {
                        bail!(
                            "{}: Add of {:?} and {:?}: broadcasting is not supported",
                            n.name,
                            net.shapes[a],
                            net.shapes[b]
                        );
                    }
                    (Op::Add { a, b }, net.shapes[a])
                }
                "Concat" => {
                    if graph::int(n, "axis") != Some(1) {
                        bail!(
                            "{}: only Concat along channels (axis 1) is supported",
                            n.name
                        );
                    }
                    let xs = (0..n.input.len())
                        .map(value)
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let [_, h, w] = net.shapes[xs[0]];
                    if xs.iter().any(|&x| net.shapes[x][1..] != [h, w]) {
                        bail!("{}: Concat of different sizes", n.name);
                    }
                    let c = xs.iter().map(|&x| net.shapes[x][0]).sum();
                    (Op::Concat { xs }, [c, h, w])
                }
                "MaxPool" => {
                    let x = value(0)?;
                    if graph::int(n, "ceil_mode").unwrap_or(0) != 0
                        || pair(n, "dilations", 1)? != [1, 1]
                    {
                        bail!(
                            "{}: MaxPool with ceil_mode or dilations is not supported",
                            n.name
                        );
                    }
                    let kernel = pair(n, "kernel_shape", 1)?;
                    let stride = pair(n, "strides", 1)?;
                    let pad = pair(n, "pads", 0)?;
                    let [c, h, w] = net.shapes[x];
                    let out = |axis: usize, len: usize| {
                        (len + 2 * pad[axis])
                            .checked_sub(kernel[axis])
                            .map(|v| v / stride[axis] + 1)
                    };
                    let (Some(ho), Some(wo)) = (out(0, h), out(1, w)) else {
                        bail!("{}: the pooling window does not fit {h}x{w}", n.name);
                    };
                    (
                        Op::MaxPool {
                            x,
                            kernel,
                            stride,
                            pad,
                        },
                        [c, ho, wo],
                    )
                }
                "BatchNormalization" => {
                    let x = value(0)?;
                    let get = |i: usize| -> anyhow::Result<Vec<f32>> {
                        let name = n
                            .input
                            .get(i)
                            .context("BatchNormalization needs 5 inputs")?;
                        let t = inits
                            .get(name.as_str())
                            .with_context(|| format!("{}: {name} is not an initializer", n.name))?;
                        Ok(graph::tensor_f32(t)?.1)
                    };
                    let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
                    let eps = n
                        .attribute
                        .iter()
                        .find(|a| a.name == "epsilon")
                        .map_or(1e-5, |a| a.f);
                    let scale: Vec<f32> = gamma
                        .iter()
                        .zip(&var)
                        .map(|(g, v)| g / (v + eps).sqrt())
                        .collect();
                    let shift = beta
                        .iter()
                        .zip(&mean)
                        .zip(&scale)
                        .map(|((b, m), s)| b - m * s)
                        .collect();
                    (Op::Affine { x, scale, shift }, net.shapes[x])
                }
                other => bail!(
                    "{}: {other} is not supported here (Conv, ConvTranspose, Relu, Add, Concat, \
                     MaxPool and BatchNormalization are)",
                    n.name
                ),
            };
            let out = n
                .output
                .first()
                .with_context(|| format!("{}: no output", n.name))?;
            net.shapes.push(shape);
            ids.insert(out.as_str(), net.shapes.len() - 1);
            net.nodes.push(Node {
                op,
                out: net.shapes.len() - 1,
            });
        }
        net.output = ids[output];
        Ok(net)
    }

    /// `[channels, height, width]` of the output.
    pub fn output_shape(&self) -> [usize; 3] {
        self.shapes[self.output]
    }

    /// Buffers for [`Net::forward`] and [`Net::backward`].
    pub fn workspace(&self) -> Workspace {
        let len = |s: &[usize; 3]| s.iter().product::<usize>();
        let cols = self
            .nodes
            .iter()
            .map(|n| match &n.op {
                Op::Conv { geo, .. } | Op::ConvTranspose { geo, .. } => geo.scratch(),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let argmax = self
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::MaxPool { .. }))
            .map(|n| (n.out, vec![0; len(&self.shapes[n.out])]))
            .collect();
        let tmp = self
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::ConvTranspose { x, .. } => Some(len(&self.shapes[*x])),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        Workspace {
            values: self.shapes.iter().map(|s| vec![0.0; len(s)]).collect(),
            grads: self.shapes.iter().map(|s| vec![0.0; len(s)]).collect(),
            argmax,
            cols: vec![0.0; cols],
            tmp: vec![0.0; tmp],
            param_grads: self
                .params
                .iter()
                .map(|p| vec![0.0; p.value.len()])
                .collect(),
        }
    }

    /// Runs the image (`[3, height, width]`) through; returns the output.
    pub fn forward<'w>(&self, image: &[f32], ws: &'w mut Workspace, par: Par) -> &'w [f32] {
        ws.values[0].copy_from_slice(image);
        for node in &self.nodes {
            // The output is never one of the node's inputs (the graph is acyclic).
            let mut y = std::mem::take(&mut ws.values[node.out]);
            let v = &ws.values;
            let plane = |x: usize| self.shapes[x][1] * self.shapes[x][2];
            match &node.op {
                Op::Conv { x, w, b, geo } => {
                    let bias = b.map(|b| self.params[b].value.as_slice());
                    conv::forward(
                        geo,
                        &v[*x],
                        &self.params[*w].value,
                        bias,
                        &mut y,
                        &mut ws.cols,
                        par,
                    );
                }
                Op::ConvTranspose { x, w, b, geo } => {
                    y.fill(0.0);
                    conv::backward_input(
                        geo,
                        &v[*x],
                        &self.params[*w].value,
                        &mut y,
                        &mut ws.cols,
                        par,
                    );
                    if let Some(b) = b {
                        let p = plane(node.out);
                        for (o, b) in y.chunks_exact_mut(p).zip(&self.params[*b].value) {
                            o.iter_mut().for_each(|o| *o += b);
                        }
                    }
                }
                Op::Relu { x } => {
                    for (o, i) in y.iter_mut().zip(&v[*x]) {
                        *o = i.max(0.0);
                    }
                }
                Op::Add { a, b } => {
                    for ((o, a), b) in y.iter_mut().zip(&v[*a]).zip(&v[*b]) {
                        *o = a + b;
                    }
                }
                Op::Concat { xs } => {
                    let mut at = 0;
                    for x in xs {
                        y[at..at + v[*x].len()].copy_from_slice(&v[*x]);
                        at += v[*x].len();
                    }
                }
                Op::MaxPool {
                    x,
                    kernel,
                    stride,
                    pad,
                } => {
                    let idx = ws.argmax.get_mut(&node.out).expect("allocated per MaxPool");
                    max_pool(
                        &v[*x],
                        self.shapes[*x],
                        self.shapes[node.out],
                        *kernel,
                        *stride,
                        *pad,
                        &mut y,
                        idx,
                    );
                }
                Op::Affine { x, scale, shift } => {
                    let p = plane(node.out);
                    for (c, (o, i)) in y.chunks_exact_mut(p).zip(v[*x].chunks_exact(p)).enumerate()
                    {
                        for (o, i) in o.iter_mut().zip(i) {
                            *o = i * scale[c] + shift[c];
                        }
                    }
                }
            }
            ws.values[node.out] = y;
        }
        &ws.values[self.output]
    }

    /// Sends `d_output` (the loss's gradient at the output) back through the
    /// last [`Net::forward`], adding to `ws.param_grads` of trainable params.
    pub fn backward(&self, d_output: &[f32], ws: &mut Workspace, par: Par) {
        for g in &mut ws.grads {
            g.fill(0.0);
        }
        ws.grads[self.output].copy_from_slice(d_output);
        for node in self.nodes.iter().rev() {
            let dy = std::mem::take(&mut ws.grads[node.out]);
            let plane = |x: usize| self.shapes[x][1] * self.shapes[x][2];
            match &node.op {
                Op::Conv { x, w, b, geo } => {
                    if self.params[*w].trainable {
                        let (dw, db) = two(&mut ws.param_grads, *w, *b);
                        conv::backward_weights(geo, &ws.values[*x], &dy, dw, db, &mut ws.cols, par);
                    }
                    if *x != 0 {
                        conv::backward_input(
                            geo,
                            &dy,
                            &self.params[*w].value,
                            &mut ws.grads[*x],
                            &mut ws.cols,
                            par,
                        );
                    }
                }
                Op::ConvTranspose { x, w, geo, .. } => {
                    if *x != 0 {
                        // dx += conv(dy): the adjoint's forward pass.
                        let tmp = &mut ws.tmp[..ws.grads[*x].len()];
                        conv::forward(
                            geo,
                            &dy,
                            &self.params[*w].value,
                            None,
                            tmp,
                            &mut ws.cols,
                            par,
                        );
                        ws.grads[*x]
                            .iter_mut()
                            .zip(tmp.iter())
                            .for_each(|(d, t)| *d += t);
                    }
                }
                Op::Relu { x } => {
                    for ((d, g), y) in ws.grads[*x].iter_mut().zip(&dy).zip(&ws.values[node.out]) {
                        if *y > 0.0 {
                            *d += g;
                        }
                    }
                }
                Op::Add { a, b } => {
                    for x in [a, b] {
                        ws.grads[*x].iter_mut().zip(&dy).for_each(|(d, g)| *d += g);
                    }
                }
                Op::Concat { xs } => {
                    let mut at = 0;
                    for x in xs {
                        let len = ws.grads[*x].len();
                        ws.grads[*x]
                            .iter_mut()
                            .zip(&dy[at..at + len])
                            .for_each(|(d, g)| *d += g);
                        at += len;
                    }
                }
                Op::MaxPool { x, .. } => {
                    let idx = &ws.argmax[&node.out];
                    let dx = &mut ws.grads[*x];
                    for (g, &i) in dy.iter().zip(idx) {
                        dx[i as usize] += g;
                    }
                }
                Op::Affine { x, scale, .. } => {
                    let p = plane(node.out);
                    for (c, (d, g)) in ws.grads[*x]
                        .chunks_exact_mut(p)
                        .zip(dy.chunks_exact(p))
                        .enumerate()
                    {
                        d.iter_mut().zip(g).for_each(|(d, g)| *d += g * scale[c]);
                    }
                }
            }
            ws.grads[node.out] = dy;
        }
    }
}

/// The weight and (distinct) bias gradients of one Conv.
fn two(grads: &mut [Vec<f32>], w: usize, b: Option<usize>) -> (&mut [f32], Option<&mut [f32]>) {
    match b {
        Some(b) if b != w => {
            if w < b {
                let (lo, hi) = grads.split_at_mut(b);
                (&mut lo[w], Some(&mut hi[0]))
            } else {
                let (lo, hi) = grads.split_at_mut(w);
                (&mut hi[0], Some(&mut lo[b]))
            }
        }
        _ => (&mut grads[w], None),
    }
}

#[allow(clippy::too_many_arguments)]
fn max_pool(
    x: &[f32],
    [c, h, w]: [usize; 3],
    [_, ho, wo]: [usize; 3],
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    y: &mut [f32],
    idx: &mut [u32],
) {
    for ch in 0..c {
        for oy in 0..ho {
            for ox in 0..wo {
                let (mut best, mut at) = (f32::NEG_INFINITY, 0usize);
                for ky in 0..kernel[0] {
                    let iy = (oy * stride[0] + ky) as isize - pad[0] as isize;
                    if iy < 0 || iy as usize >= h {
                        continue;
                    }
                    for kx in 0..kernel[1] {
                        let ix = (ox * stride[1] + kx) as isize - pad[1] as isize;
                        if ix < 0 || ix as usize >= w {
                            continue;
                        }
                        let i = (ch * h + iy as usize) * w + ix as usize;
                        if x[i] > best {
                            (best, at) = (x[i], i);
                        }
                    }
                }
                let o = (ch * ho + oy) * wo + ox;
                y[o] = best;
                idx[o] = at as u32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{attr_int, f32_tensor, node, value_info as value};
    use tract_onnx::pb::attribute_proto::AttributeType;
    use tract_onnx::pb::{AttributeProto, GraphProto, OperatorSetIdProto};

    fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: AttributeType::Ints as i32,
            ints: v.to_vec(),
            ..Default::default()
        }
    }

    /// Pseudo-random values in [-0.5, 0.5) with 24 bits each, so no two
    /// sums tie (a tie in MaxPool or at ReLU's kink has no single gradient).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let h = (i ^ seed.wrapping_mul(0x9e37_79b9)).wrapping_mul(0x85eb_ca6b);
                let h = (h ^ (h >> 13)).wrapping_mul(0xc2b2_ae35);
                (h >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Every op the executor knows, on an 8x8 image: a 3x3 Conv, ReLU,
    /// MaxPool, a strided Conv, a depthwise ConvTranspose up-sampler, Concat,
    /// BatchNormalization, a residual Add and a 1x1 classifier.
    fn toy() -> ModelProto {
        let mut nodes = Vec::new();
        let mut inits = Vec::new();
        let mut conv = |name: &str,
                        x: &str,
                        y: &str,
                        shape: [usize; 4],
                        attrs: Vec<AttributeProto>,
                        seed: u32| {
            let mut n = node(
                "Conv",
                name,
                &[x, &format!("{name}.w"), &format!("{name}.b")],
                &[y],
            );
            n.attribute = attrs;
            nodes.push(n);
            inits.push(f32_tensor(
                &format!("{name}.w"),
                &shape,
                &values(shape.iter().product(), seed),
            ));
            inits.push(f32_tensor(
                &format!("{name}.b"),
                &[shape[0]],
                &values(shape[0], seed + 1),
            ));
        };
        conv(
            "c1",
            "image",
            "c1",
            [4, 3, 3, 3],
            vec![ints("pads", &[1, 1, 1, 1])],
            1,
        );
        conv(
            "c2",
            "pool",
            "c2",
            [6, 4, 3, 3],
            vec![ints("pads", &[1, 1, 1, 1]), ints("strides", &[2, 2])],
            3,
        );
        conv("c3", "cat", "c3", [4, 10, 1, 1], vec![], 5);
        conv("fc", "r2", "logits", [3, 4, 1, 1], vec![], 7);
        let mut pool = node("MaxPool", "pool", &["r1"], &["pool"]);
        pool.attribute = vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])];
        let mut up = node("ConvTranspose", "up", &["c2", "up.w"], &["up"]);
        up.attribute = vec![
            ints("kernel_shape", &[4, 4]),
            ints("strides", &[2, 2]),
            ints("pads", &[1, 1, 1, 1]),
            attr_int("group", 6),
        ];
        let mut cat = node("Concat", "cat", &["up", "pool"], &["cat"]);
        cat.attribute = vec![attr_int("axis", 1)];
        let bn = node(
            "BatchNormalization",
            "bn",
            &["c3", "g", "be", "m", "v"],
            &["bn"],
        );
        nodes.splice(1..1, [node("Relu", "r1", &["c1"], &["r1"]), pool]);
        let at = nodes.iter().position(|n| n.name == "c2").unwrap() + 1;
        nodes.splice(at..at, [up, cat]);
        let at = nodes.iter().position(|n| n.name == "c3").unwrap() + 1;
        nodes.splice(
            at..at,
            [
                bn,
                node("Add", "add", &["bn", "pool"], &["sum"]),
                node("Relu", "r2", &["sum"], &["r2"]),
            ],
        );
        inits.push(f32_tensor("up.w", &[6, 1, 4, 4], &values(96, 9)));
        for (name, seed) in [("g", 11), ("be", 12), ("m", 13)] {
            inits.push(f32_tensor(name, &[4], &values(4, seed)));
        }
        inits.push(f32_tensor("v", &[4], &[0.5, 1.0, 2.0, 0.25]));
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(GraphProto {
                node: nodes,
                initializer: inits,
                input: vec![value("image", &[1, 3, 8, 8])],
                output: vec![value("logits", &[1, 3, 4, 4])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn loss(net: &Net, ws: &mut Workspace, image: &[f32], target: &[f32]) -> f64 {
        let z = net.forward(image, ws, Par::Seq);
        z.iter().zip(target).map(|(z, t)| f64::from(z * t)).sum()
    }

    /// The backward pass agrees with central finite differences on every
    /// trainable tensor, through every op.
    #[test]
    fn gradients_match_finite_differences() {
        let model = toy();
        let mut net = Net::build(&model, (8, 8), "logits").unwrap();
        assert_eq!(net.output_shape(), [3, 4, 4]);
        let trainable: Vec<&str> = net
            .params
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(
            trainable,
            ["c1.w", "c1.b", "c2.w", "c2.b", "c3.w", "c3.b", "fc.w", "fc.b"]
        );
        let image = values(3 * 64, 21);
        let target = values(3 * 16, 22);
        let mut ws = net.workspace();
        loss(&net, &mut ws, &image, &target);
        net.backward(&target, &mut ws, Par::Seq);
        let grads = ws.param_grads.clone();
        let mut checked = 0;
        for (p, grad) in grads.iter().enumerate() {
            if !net.params[p].trainable {
                assert!(
                    grad.iter().all(|&g| g == 0.0),
                    "{} is fixed",
                    net.params[p].name
                );
                continue;
            }
            for i in (0..net.params[p].value.len()).step_by(7) {
                let eps = 1e-3;
                let v = net.params[p].value[i];
                net.params[p].value[i] = v + eps;
                let up = loss(&net, &mut ws, &image, &target);
                net.params[p].value[i] = v - eps;
                let down = loss(&net, &mut ws, &image, &target);
                net.params[p].value[i] = v;
                let numeric = (up - down) / (2.0 * f64::from(eps));
                let analytic = f64::from(grad[i]);
                assert!(
                    (numeric - analytic).abs() <= 1e-2 * numeric.abs().max(analytic.abs()) + 2e-3,
                    "{}[{i}]: backward {analytic}, finite differences {numeric}",
                    net.params[p].name
                );
                checked += 1;
            }
        }
        assert!(checked > 40, "{checked}");
    }

    #[test]
    fn an_op_it_cannot_differentiate_is_named() {
        let mut model = toy();
        model.graph.as_mut().unwrap().node[1].op_type = "Sigmoid".into();
        let err = Net::build(&model, (8, 8), "logits")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("r1: Sigmoid is not supported"), "{err}");
    }
}
