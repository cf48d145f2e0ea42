//! Cross-layer equalisation (Nagel et al. 2019, "Data-Free Quantization
//! Through Weight Equalization and Bias Correction").
//!
//! For a Conv -> ReLU -> Conv chain, scaling output channel `i` of the first
//! conv by `1/s_i` and input channel `i` of the second by `s_i` leaves the
//! network's function unchanged (ReLU is positively homogeneous) while it
//! can even out the weight ranges of the channels, so that one int8 scale per
//! layer fits all of them. Choosing `s_i = sqrt(r1_i / r2_i)` gives both
//! convs the range `sqrt(r1_i * r2_i)` in channel `i`.

use std::collections::HashMap;

use tract_onnx::pb::ModelProto;

use crate::graph;

struct Pair {
    first: usize,
    second: usize,
}

fn find_pairs(model: &ModelProto) -> Vec<Pair> {
    let g = graph::graph(model);
    let consumers = graph::consumers(g);
    let inits = graph::initializers(g);
    let uses = |name: &str| consumers.get(name).map_or(0, Vec::len);
    let outputs: Vec<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    let plain_conv = |i: usize| {
        let n = &g.node[i];
        n.op_type == "Conv"
            && graph::int(n, "group").unwrap_or(1) == 1
            && n.input.len() >= 2
            && inits.contains_key(n.input[1].as_str())
            && uses(&n.input[1]) == 1
            && n.input.get(2).is_none_or(|b| b.is_empty() || uses(b) == 1)
    };
    let mut pairs = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        if !plain_conv(i) || outputs.contains(&n.output[0].as_str()) {
            continue;
        }
        let Some(&[r]) = consumers.get(&n.output[0]).map(Vec::as_slice) else {
            continue;
        };
        if g.node[r].op_type != "Relu" || outputs.contains(&g.node[r].output[0].as_str()) {
            continue;
        }
        let Some(&[c]) = consumers.get(&g.node[r].output[0]).map(Vec::as_slice) else {
            continue;
        };
        if plain_conv(c) && g.node[c].input[0] == g.node[r].output[0] {
            pairs.push(Pair {
                first: i,
                second: c,
            });
        }
    }
    pairs
}

/// Equalises every Conv-ReLU-Conv pair in place; returns how many it found.
pub fn equalize(model: &mut ModelProto) -> anyhow::Result<usize> {
    let pairs = find_pairs(model);
    let g = graph::graph(model);
    let mut weights: HashMap<String, (Vec<usize>, Vec<f32>)> = HashMap::new();
    for p in &pairs {
        for &i in &[p.first, p.second] {
            let n = &g.node[i];
            for name in n.input.iter().skip(1).filter(|s| !s.is_empty()) {
                let init = graph::initializers(g)[name.as_str()];
                weights.insert(name.clone(), graph::tensor_f32(init)?);
            }
        }
    }
    // Chains (conv1 -> conv2 -> conv3) share convs between pairs: a few
    // sweeps let the scales settle.
    for _ in 0..4 {
        for p in &pairs {
            let (n1, n2) = (&g.node[p.first], &g.node[p.second]);
            let (d1, w1) = weights[&n1.input[1]].clone();
            let (d2, mut w2) = weights[&n2.input[1]].clone();
            let (m, k1) = (d1[0], d1[1..].iter().product::<usize>());
            let (m2, k2) = (d2[0], d2[2..].iter().product::<usize>());
            if d2[1] != m {
                continue;
            }
            let mut w1 = w1;
            let mut scales = vec![1f32; m];
            for (i, s) in scales.iter_mut().enumerate() {
                let r1 = w1[i * k1..(i + 1) * k1]
                    .iter()
                    .fold(0f32, |a, x| a.max(x.abs()));
                let r2 = (0..m2)
                    .flat_map(|o| w2[(o * m + i) * k2..(o * m + i + 1) * k2].iter())
                    .fold(0f32, |a, x| a.max(x.abs()));
                if r1 > 0.0 && r2 > 0.0 {
                    *s = (r1 / r2).sqrt();
                }
            }
            for (i, &s) in scales.iter().enumerate() {
                w1[i * k1..(i + 1) * k1].iter_mut().for_each(|x| *x /= s);
                for o in 0..m2 {
                    w2[(o * m + i) * k2..(o * m + i + 1) * k2]
                        .iter_mut()
                        .for_each(|x| *x *= s);
                }
            }
            if let Some(b) = n1.input.get(2).filter(|b| !b.is_empty()) {
                let bias = &mut weights.get_mut(b).expect("loaded above").1;
                bias.iter_mut().zip(&scales).for_each(|(x, s)| *x /= s);
            }
            weights.insert(n1.input[1].clone(), (d1, w1));
            weights.insert(n2.input[1].clone(), (d2, w2));
        }
    }
    let count = pairs.len();
    for t in &mut graph::graph_mut(model).initializer {
        if let Some((dims, values)) = weights.get(&t.name) {
            *t = graph::f32_tensor(&t.name, dims, values);
        }
    }
    Ok(count)
}
