//! Writing a pruned graph: every initializer that carries a removed channel
//! loses that slice, depthwise `group` attributes and constant Resize sizes
//! follow, and stale intermediate shapes are dropped. Node and tensor names
//! stay, so the pruned model's tensors line up with the original's.

use std::collections::HashMap;

use anyhow::{bail, Context};
use tract_onnx::pb::{type_proto, ModelProto, TensorProto};

use super::deps::{Analysis, ConvKind, ConvOp};
use crate::graph::{self, f32_tensor};

/// New weights for a convolution, replacing the sliced originals (from reconstruction).
#[derive(Debug, Clone)]
pub struct Refit {
    /// `[out, in, kh, kw]` weights over the kept channels.
    pub weight: Vec<f32>,
    /// One bias per kept output channel.
    pub bias: Vec<f32>,
}

/// Keeps the `keep` indices of `axis` (0 or 1) of a tensor of shape `dims`.
pub fn select(
    dims: &[usize],
    values: &[f32],
    axis: usize,
    keep: &[usize],
) -> (Vec<usize>, Vec<f32>) {
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(outer * keep.len() * inner);
    for o in 0..outer {
        for &k in keep {
            let start = (o * dims[axis] + k) * inner;
            out.extend_from_slice(&values[start..start + inner]);
        }
    }
    let mut new_dims = dims.to_vec();
    new_dims[axis] = keep.len();
    (new_dims, out)
}

/// Kept input and output channels of convolution `c`.
pub fn conv_keep(a: &Analysis, c: usize, removed: &[bool]) -> (Vec<usize>, Vec<usize>) {
    let conv = &a.convs[c];
    let (cin, cout) = conv.channels();
    let keep_in = a
        .kept(&conv.input, removed)
        .unwrap_or_else(|| (0..cin).collect());
    let keep_out = a
        .kept(&conv.output, removed)
        .unwrap_or_else(|| (0..cout).collect());
    (keep_in, keep_out)
}

/// The model with the `removed` groups taken out (and `refits` installed).
pub fn apply(
    model: &ModelProto,
    a: &Analysis,
    removed: &[bool],
    refits: &HashMap<usize, Refit>,
) -> anyhow::Result<ModelProto> {
    let mut out = model.clone();
    let mut replaced: HashMap<String, TensorProto> = HashMap::new();
    let g = graph::graph(model);
    let inits = graph::initializers(g);
    let get = |name: &str| -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
        let t = inits
            .get(name)
            .with_context(|| format!("initializer {name:?} is missing"))?;
        graph::tensor_f32(t)
    };
    let mut groups: HashMap<usize, usize> = HashMap::new();
    // Exporters share identical initializers between nodes (DLA's bilinear
    // up-samplers): a pruned node gets its own copy under a new name.
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for n in &g.node {
        for i in &n.input {
            *uses.entry(i.as_str()).or_default() += 1;
        }
    }
    let mut renamed: Vec<(usize, usize, String)> = Vec::new();
    let mut own = |node: usize, slot: usize, name: &str, conv: &str| -> String {
        if uses.get(name).copied().unwrap_or(0) > 1 {
            let fresh = format!("{conv}.{name}.pruned");
            renamed.push((node, slot, fresh.clone()));
            fresh
        } else {
            name.to_string()
        }
    };
    for (ci, conv) in a.convs.iter().enumerate() {
        let (keep_in, keep_out) = conv_keep(a, ci, removed);
        let (cin, cout) = conv.channels();
        if keep_in.len() == cin && keep_out.len() == cout && !refits.contains_key(&ci) {
            continue;
        }
        if keep_in.is_empty() || keep_out.is_empty() {
            bail!("{}: pruning would leave it no channels", conv.name);
        }
        let (dims, w) = get(&conv.weight)?;
        let (dims, w) = match (conv.op, conv.kind) {
            (_, ConvKind::Depthwise) => {
                groups.insert(conv.node, keep_in.len());
                select(&dims, &w, 0, &keep_in)
            }
            (ConvOp::Conv, ConvKind::Dense) => {
                let (d, v) = select(&dims, &w, 0, &keep_out);
                select(&d, &v, 1, &keep_in)
            }
            (ConvOp::ConvTranspose, ConvKind::Dense) => {
                let (d, v) = select(&dims, &w, 0, &keep_in);
                select(&d, &v, 1, &keep_out)
            }
        };
        let refit = refits.get(&ci);
        let w = match refit {
            Some(r) if r.weight.len() == w.len() => r.weight.clone(),
            Some(_) => bail!(
                "{}: refitted weights do not match the pruned shape",
                conv.name
            ),
            None => w,
        };
        let weight_name = own(conv.node, 1, &conv.weight, &conv.name);
        replaced.insert(weight_name.clone(), f32_tensor(&weight_name, &dims, &w));
        let bias_keep = match conv.kind {
            ConvKind::Depthwise => &keep_in,
            ConvKind::Dense => &keep_out,
        };
        match (&conv.bias, refit) {
            (Some(b), _) => {
                let (bd, bv) = get(b)?;
                let (bd, mut bv) = select(&bd, &bv, 0, bias_keep);
                if let Some(r) = refit {
                    bv = r.bias.clone();
                }
                let name = own(conv.node, 2, b, &conv.name);
                replaced.insert(name.clone(), f32_tensor(&name, &bd, &bv));
            }
            (None, Some(r)) => {
                // Reconstruction fits a bias; give the node one.
                let name = format!("{}_pruned_bias", conv.name);
                replaced.insert(name.clone(), f32_tensor(&name, &[r.bias.len()], &r.bias));
                let node = &mut graph::graph_mut(&mut out).node[conv.node];
                node.input.truncate(2);
                node.input.push(name);
            }
            (None, None) => {}
        }
    }
    for &bn in &a.batch_norms {
        let n = &g.node[bn];
        let Some(keep) = a.kept(&n.input[0], removed) else {
            continue;
        };
        for p in &n.input[1..5] {
            let (d, v) = get(p)?;
            if keep.len() == d[0] {
                continue;
            }
            let (d, v) = select(&d, &v, 0, &keep);
            replaced.insert(p.clone(), f32_tensor(p, &d, &v));
        }
    }
    let mut resized: HashMap<String, i64> = HashMap::new();
    for &r in &a.resizes {
        let n = &g.node[r];
        if let Some(keep) = a.kept(&n.output[0], removed) {
            resized.insert(n.input[3].clone(), keep.len() as i64);
        }
    }
    let gm = graph::graph_mut(&mut out);
    for (node, slot, name) in renamed {
        gm.node[node].input[slot] = name;
    }
    for (node, channels) in groups {
        if let Some(attr) = gm.node[node]
            .attribute
            .iter_mut()
            .find(|a| a.name == "group")
        {
            attr.i = channels as i64;
        }
    }
    for t in gm.initializer.iter_mut() {
        if let Some(new) = replaced.remove(&t.name) {
            *t = new;
        } else if let Some(&c) = resized.get(&t.name) {
            let mut sizes: Vec<i64> = if t.raw_data.is_empty() {
                t.int64_data.clone()
            } else {
                t.raw_data
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8-byte chunks")))
                    .collect()
            };
            if sizes.len() >= 2 {
                sizes[1] = c;
            }
            t.raw_data = sizes.iter().flat_map(|v| v.to_le_bytes()).collect();
            t.int64_data.clear();
        }
    }
    // New initializers (own copies of shared ones, fitted biases for
    // bias-less convolutions); shared ones that no node reads any more go.
    gm.initializer.extend(replaced.into_values());
    let read: std::collections::HashSet<&str> = gm
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let unread: std::collections::HashSet<String> = gm
        .initializer
        .iter()
        .filter(|t| !read.contains(t.name.as_str()))
        .map(|t| t.name.clone())
        .collect();
    gm.initializer.retain(|t| !unread.contains(&t.name));
    gm.input.retain(|i| !unread.contains(&i.name));
    // Initializers listed as graph inputs (old exporters) carry their shapes.
    let dims: HashMap<String, Vec<i64>> = gm
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.dims.clone()))
        .collect();
    for input in gm.input.iter_mut() {
        let Some(d) = dims.get(&input.name) else {
            continue;
        };
        if let Some(type_proto::Value::TensorType(tt)) =
            input.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            if let Some(shape) = tt.shape.as_mut() {
                for (dim, &v) in shape.dim.iter_mut().zip(d) {
                    dim.value =
                        Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(v));
                }
            }
        }
    }
    gm.value_info.clear();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_keeps_slices_of_either_axis() {
        // 2 x 3 x 2
        let v: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let (d, s) = select(&[2, 3, 2], &v, 0, &[1]);
        assert_eq!(d, vec![1, 3, 2]);
        assert_eq!(s, vec![6.0, 7.0, 8.0, 9.0, 10.0, 11.0]);
        let (d, s) = select(&[2, 3, 2], &v, 1, &[0, 2]);
        assert_eq!(d, vec![2, 2, 2]);
        assert_eq!(s, vec![0.0, 1.0, 4.0, 5.0, 6.0, 7.0, 10.0, 11.0]);
    }
}

#[cfg(test)]
mod equivalence {
    //! Removing channels that carry nothing must change nothing: the
    //! original with the removed channels' producers zeroed computes exactly
    //! what the pruned graph computes.

    use super::*;
    use crate::prune::deps::analyse;
    use tract_onnx::prelude::*;

    fn model_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/dla-tiny-seg.onnx")
    }

    /// The original with every removed channel's producers (weights, biases,
    /// BatchNorm shifts) set to zero, so the channel is 0 everywhere.
    fn masked(model: &ModelProto, a: &Analysis, removed: &[bool]) -> ModelProto {
        let mut out = model.clone();
        let mut zero: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        for (gi, g) in a.groups.iter().enumerate().filter(|(gi, _)| removed[*gi]) {
            let _ = gi;
            for &(c, o) in &g.members {
                let conv = &a.convs[c];
                let axis = if conv.op == ConvOp::Conv { 0 } else { 1 };
                zero.entry(conv.weight.clone()).or_default().push((axis, o));
                if let Some(b) = &conv.bias {
                    zero.entry(b.clone()).or_default().push((0, o));
                }
            }
        }
        let g = graph::graph(model);
        for (ci, conv) in a.convs.iter().enumerate() {
            if conv.kind == ConvKind::Depthwise {
                let (keep, _) = conv_keep(a, ci, removed);
                if let Some(b) = &conv.bias {
                    for p in (0..conv.channels().0).filter(|p| !keep.contains(p)) {
                        zero.entry(b.clone()).or_default().push((0, p));
                    }
                }
            }
        }
        for &bn in &a.batch_norms {
            let n = &g.node[bn];
            let keep = a.kept(&n.input[0], removed).unwrap();
            let all = a.tensors[&n.input[0]].len();
            for p in (0..all).filter(|p| !keep.contains(p)) {
                for param in [&n.input[2], &n.input[3]] {
                    zero.entry(param.clone()).or_default().push((0, p));
                }
            }
        }
        for t in graph::graph_mut(&mut out).initializer.iter_mut() {
            if let Some(slices) = zero.get(&t.name) {
                let (dims, mut v) = graph::tensor_f32(t).unwrap();
                for &(axis, i) in slices {
                    let outer: usize = dims[..axis].iter().product();
                    let inner: usize = dims[axis + 1..].iter().product();
                    for o in 0..outer {
                        let start = (o * dims[axis] + i) * inner;
                        v[start..start + inner].iter_mut().for_each(|x| *x = 0.0);
                    }
                }
                *t = f32_tensor(&t.name, &dims, &v);
            }
        }
        out
    }

    fn logits(model: &ModelProto, input: &Tensor) -> Vec<f32> {
        let plan = tract_onnx::onnx()
            .model_for_proto_model(model)
            .unwrap()
            .with_input_fact(0, f32::fact([1, 3, 64, 128]).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let out = plan.run(tvec![input.clone().into()]).unwrap();
        out[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    #[test]
    fn shared_up_sampler_weights_get_their_own_pruned_copies() {
        use crate::graph::{attr_int, node};
        use crate::prune::deps::tests::chain;
        // Two depthwise 3x3 convs reading one weight initializer, as
        // exporters write DLA's identical bilinear up-samplers.
        let mut d1 = node("Conv", "d1", &["r_out", "dw"], &["d1_out"]);
        d1.attribute.push(attr_int("group", 4));
        let mut model = chain(d1.clone());
        let g = graph::graph_mut(&mut model);
        let mut d2 = d1.clone();
        d2.name = "d2".into();
        d2.input[0] = "d1_out".into();
        d2.output[0] = "m_out".into();
        g.node[2].output[0] = "d1_out".into();
        g.node.insert(3, d2);
        g.initializer
            .push(f32_tensor("dw", &[4, 1, 1, 1], &[1.0, 2.0, 3.0, 4.0]));
        let a = analyse(&model, (8, 8), &[]).unwrap();
        assert!(a.notes.is_empty(), "{:?}", a.notes);
        // Remove a's channel 1 (and with it the depthwise channels it feeds).
        let removed: Vec<bool> = a.groups.iter().map(|g| g.members == vec![(0, 1)]).collect();
        assert_eq!(removed.iter().filter(|&&r| r).count(), 1);
        let pruned = apply(&model, &a, &removed, &HashMap::new()).unwrap();
        let pg = graph::graph(&pruned);
        let inits = graph::initializers(pg);
        assert!(
            !inits.contains_key("dw"),
            "no node reads the shared original any more"
        );
        for name in ["d1", "d2"] {
            let n = pg.node.iter().find(|n| n.name == name).unwrap();
            let (dims, values) = graph::tensor_f32(inits[n.input[1].as_str()]).unwrap();
            assert_eq!(dims, vec![3, 1, 1, 1]);
            assert_eq!(values, vec![1.0, 3.0, 4.0]);
            assert_eq!(graph::int(n, "group"), Some(3));
        }
        // And tract runs it.
        tract_onnx::onnx()
            .model_for_proto_model(&pruned)
            .unwrap()
            .into_optimized()
            .unwrap();
    }

    #[test]
    fn pruning_silent_channels_changes_nothing() {
        let model = graph::load(&model_path()).unwrap();
        let a = analyse(&model, (64, 128), &[]).unwrap();
        // Every 7th group: channels in every kind of place (stem, residual
        // chains, Root and IDA concats, depthwise up-samplers).
        let removed: Vec<bool> = (0..a.groups.len()).map(|g| g % 7 == 3).collect();
        let pruned = apply(&model, &a, &removed, &HashMap::new()).unwrap();
        let reference = masked(&model, &a, &removed);
        let input = Tensor::from_shape(
            &[1, 3, 64, 128],
            &(0..3 * 64 * 128)
                .map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0)
                .collect::<Vec<f32>>(),
        )
        .unwrap();
        let (p, r) = (logits(&pruned, &input), logits(&reference, &input));
        assert_eq!(p.len(), r.len());
        let scale = r.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = p
            .iter()
            .zip(&r)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(scale > 0.1, "the reference output is degenerate");
        assert!(
            worst <= 1e-4 * scale.max(1.0),
            "max difference {worst} (scale {scale})"
        );
    }
}
