//! What gets quantised and how: the Conv sites, the quantisation parameters
//! of every activation tensor that lives in int8, the int8 weights, and the
//! two ONNX forms written from the same plan.
//!
//! * Integer form (`--target tract`): `QLinearConv` with the following ReLU
//!   folded in (u8 outputs with zero point 0 clip at 0 by themselves),
//!   `MaxPool` straight on u8 tensors, per-channel symmetric s8 weights whose
//!   zero point is one scalar 0, int32 biases, and `QuantizeLinear` /
//!   `DequantizeLinear` only where float ops (Add, Concat, ConvTranspose)
//!   meet integer ones. tract runs these convs on its integer kernels.
//! * QDQ form (`--target ort|tensorrt`): the float graph with Q->DQ pairs on
//!   the same tensors and DQ on the weights (and int32 biases for ort), which
//!   ONNX Runtime and TensorRT fuse into their own int8 kernels.
//!
//! Both forms use identical scales and zero points, so the report measured
//! on one describes the other up to rounding.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context};
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, TensorProto};

use super::observer::{Method, TensorStats};
use crate::graph::{self, attr_int, node};

/// The backend a quantised model is meant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// tract (dla-edge's CPU backend): integer QLinearConv form, u8 activations.
    Tract,
    /// ONNX Runtime: QDQ form, u8 asymmetric activations, int32 biases.
    Ort,
    /// TensorRT: QDQ form, symmetric s8 activations, float biases.
    Tensorrt,
}

impl Target {
    /// True for the QDQ (fake-quantised float graph) forms.
    pub fn qdq(self) -> bool {
        !matches!(self, Target::Tract)
    }

    /// True when activations are symmetric int8 rather than asymmetric u8.
    pub fn signed_activations(self) -> bool {
        matches!(self, Target::Tensorrt)
    }
}

/// Scale and zero point of one int8 / u8 tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QParams {
    /// Real value of one step.
    pub scale: f32,
    /// Integer that stands for 0.0.
    pub zero_point: i32,
    /// int8 (symmetric) rather than uint8.
    pub signed: bool,
}

impl QParams {
    /// Parameters covering `[lo, hi]` (which contains 0).
    pub fn for_range(lo: f32, hi: f32, signed: bool) -> QParams {
        if signed {
            let a = lo.abs().max(hi.abs());
            QParams {
                scale: if a > 0.0 { a / 127.0 } else { 1.0 },
                zero_point: 0,
                signed,
            }
        } else {
            let span = hi - lo;
            if span <= 0.0 {
                return QParams {
                    scale: 1.0,
                    zero_point: 0,
                    signed,
                };
            }
            let scale = span / 255.0;
            QParams {
                scale,
                zero_point: (-lo / scale).round().clamp(0.0, 255.0) as i32,
                signed,
            }
        }
    }

    /// Smallest and largest integer.
    #[cfg(test)]
    pub fn bounds(&self) -> (i32, i32) {
        if self.signed {
            (-128, 127)
        } else {
            (0, 255)
        }
    }

    /// Quantises then dequantises one value (what int8 makes of it).
    #[cfg(test)]
    pub fn fake(&self, x: f32) -> f32 {
        let (lo, hi) = self.bounds();
        let q = ((x / self.scale).round() as i32 + self.zero_point).clamp(lo, hi);
        (q - self.zero_point) as f32 * self.scale
    }
}

/// A Conv node the quantiser may turn into int8.
#[derive(Debug, Clone)]
pub struct ConvSite {
    /// Node name (unique in the graph).
    pub name: String,
    /// Index of the Conv in the original graph.
    pub node: usize,
    /// Activation input.
    pub input: String,
    /// Weight initializer.
    pub weight: String,
    /// Bias initializer.
    pub bias: Option<String>,
    /// The ReLU folded into it, if its only consumer is one.
    pub relu: Option<usize>,
    /// The tensor the quantised node produces: the ReLU's output when folded.
    pub output: String,
}

/// Finds every Conv with constant float weights (and bias).
pub fn conv_sites(g: &GraphProto) -> Vec<ConvSite> {
    let inits = graph::initializers(g);
    let consumers = graph::consumers(g);
    let outputs: HashSet<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    let mut sites = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        if n.op_type != "Conv" || !n.domain.is_empty() || n.input.len() < 2 {
            continue;
        }
        let Some(w) = inits.get(n.input[1].as_str()) else {
            continue;
        };
        if w.dims.len() != 4 || graph::tensor_f32(w).is_err() {
            continue;
        }
        let bias = n.input.get(2).filter(|b| !b.is_empty()).cloned();
        if let Some(b) = &bias {
            if inits
                .get(b.as_str())
                .is_none_or(|t| graph::tensor_f32(t).is_err())
            {
                continue;
            }
        }
        if inits.contains_key(n.input[0].as_str()) {
            continue;
        }
        let out = &n.output[0];
        let relu = match consumers.get(out).map(Vec::as_slice) {
            Some(&[c]) if g.node[c].op_type == "Relu" && !outputs.contains(out.as_str()) => Some(c),
            _ => None,
        };
        let output = relu.map_or_else(|| out.clone(), |r| g.node[r].output[0].clone());
        let name = if n.name.is_empty() {
            out.clone()
        } else {
            n.name.clone()
        };
        sites.push(ConvSite {
            name,
            node: i,
            input: n.input[0].clone(),
            weight: n.input[1].clone(),
            bias,
            relu,
            output,
        });
    }
    sites
}

/// Int8 weights of one site and its int32 / corrected float bias.
#[derive(Debug, Clone)]
pub struct QuantWeights {
    /// Weight shape `[M, C/group, kh, kw]`.
    pub dims: Vec<usize>,
    /// Symmetric int8 weights in `[-127, 127]`.
    pub values: Vec<i8>,
    /// One scale per output channel (or one in all, repeated, per-tensor).
    pub scales: Vec<f32>,
    /// Float bias after bias correction.
    pub bias: Vec<f32>,
    /// int32 bias at scale `input_scale * scales[m]`.
    pub bias_q: Vec<i32>,
    /// Whether weights have one scale per output channel.
    pub per_channel: bool,
}

/// Quantises a float weight tensor symmetrically to int8 in
/// `[-max, max]` (`max` 127, or 63 for 7-bit weights).
pub fn quantize_weights(
    dims: &[usize],
    w: &[f32],
    per_channel: bool,
    max: i32,
) -> (Vec<i8>, Vec<f32>) {
    let m = dims[0].max(1);
    let per = w.len() / m;
    let limit = max as f32;
    let scale_of = |v: &[f32]| {
        let a = v.iter().fold(0f32, |a, x| a.max(x.abs()));
        if a > 0.0 {
            a / limit
        } else {
            1.0
        }
    };
    let scales: Vec<f32> = if per_channel {
        w.chunks(per.max(1)).map(scale_of).collect()
    } else {
        vec![scale_of(w); m]
    };
    let values = w
        .chunks(per.max(1))
        .zip(&scales)
        .flat_map(|(row, &s)| {
            row.iter()
                .map(move |&x| (x / s).round().clamp(-limit, limit) as i8)
        })
        .collect();
    (values, scales)
}

/// Everything the emitters need: sites, which of them stay float, the
/// parameters of each int8 tensor and each site's int8 weights.
pub struct Plan {
    /// All Conv sites of the graph.
    pub sites: Vec<ConvSite>,
    /// Names of sites kept in float (excluded or chosen by mixed precision).
    pub float_sites: HashSet<String>,
    /// Scale and zero point of every tensor that lives in int8.
    pub params: HashMap<String, QParams>,
    /// Int8 weights per quantised site name.
    pub weights: HashMap<String, QuantWeights>,
}

/// Knobs of a plan.
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    /// Range selection.
    pub method: Method,
    /// Per-channel weight scales.
    pub per_channel: bool,
    /// Largest weight magnitude: 127 (8-bit) or 63 (7-bit).
    pub weight_max: i32,
    /// Symmetric int8 activations (TensorRT) instead of asymmetric u8.
    pub signed: bool,
    /// Fold the mean error of int8 weights into the bias.
    pub bias_correction: bool,
}

impl Plan {
    /// Tensors whose statistics a plan over `sites` needs.
    pub fn tensors_to_observe(sites: &[ConvSite]) -> Vec<String> {
        let mut seen = HashSet::new();
        sites
            .iter()
            .flat_map(|s| [s.input.clone(), s.output.clone()])
            .filter(|t| seen.insert(t.clone()))
            .collect()
    }

    /// Builds the plan for `model` with `float_sites` kept in float.
    pub fn build(
        model: &ModelProto,
        sites: Vec<ConvSite>,
        float_sites: HashSet<String>,
        stats: &HashMap<String, TensorStats>,
        options: PlanOptions,
    ) -> anyhow::Result<Plan> {
        let g = graph::graph(model);
        let inits = graph::initializers(g);
        let levels = if options.signed { 127 } else { 255 };
        let range_of = |t: &str| -> anyhow::Result<QParams> {
            let s = stats
                .get(t)
                .with_context(|| format!("no calibration statistics for tensor {t:?}"))?;
            let (lo, hi) = s.range(options.method, levels);
            Ok(QParams::for_range(lo, hi, options.signed))
        };
        let by_node: HashMap<usize, &ConvSite> = sites
            .iter()
            .filter(|s| !float_sites.contains(&s.name))
            .map(|s| (s.node, s))
            .collect();
        let mut params: HashMap<String, QParams> = HashMap::new();
        let mut produced: HashSet<String> = HashSet::new();
        let mut weights = HashMap::new();
        for (i, n) in g.node.iter().enumerate() {
            if let Some(site) = by_node.get(&i) {
                if !params.contains_key(&site.input) {
                    params.insert(site.input.clone(), range_of(&site.input)?);
                }
                let x = params[&site.input];
                params.insert(site.output.clone(), range_of(&site.output)?);
                produced.insert(site.output.clone());
                let (dims, w) = graph::tensor_f32(inits[site.weight.as_str()])?;
                let (values, scales) =
                    quantize_weights(&dims, &w, options.per_channel, options.weight_max);
                let m = dims[0];
                let mut bias = match &site.bias {
                    Some(b) => graph::tensor_f32(inits[b.as_str()])?.1,
                    None => vec![0.0; m],
                };
                if bias.len() != m {
                    bail!(
                        "Conv {:?}: bias has {} values for {m} output channels",
                        site.name,
                        bias.len()
                    );
                }
                if options.bias_correction {
                    let means = stats[&site.input].channel_means();
                    correct_bias(&dims, &w, &values, &scales, &means, group_of(n), &mut bias);
                }
                let bias_q = bias
                    .iter()
                    .zip(&scales)
                    .map(|(&b, &s)| {
                        (f64::from(b) / (f64::from(x.scale) * f64::from(s)))
                            .round()
                            .clamp(i32::MIN as f64, i32::MAX as f64) as i32
                    })
                    .collect();
                weights.insert(
                    site.name.clone(),
                    QuantWeights {
                        dims,
                        values,
                        scales,
                        bias,
                        bias_q,
                        per_channel: options.per_channel,
                    },
                );
            } else if n.op_type == "MaxPool"
                && n.output.len() == 1
                && produced.contains(&n.input[0])
            {
                // Max commutes with a monotonic quantiser: pool the u8 values.
                params.insert(n.output[0].clone(), params[&n.input[0]]);
                produced.insert(n.output[0].clone());
            }
        }
        Ok(Plan {
            sites,
            float_sites,
            params,
            weights,
        })
    }

    /// The quantised sites, in graph order.
    pub fn quantized_sites(&self) -> impl Iterator<Item = &ConvSite> {
        self.sites
            .iter()
            .filter(|s| !self.float_sites.contains(&s.name))
    }
}

fn group_of(n: &NodeProto) -> usize {
    graph::int(n, "group").unwrap_or(1).max(1) as usize
}

/// Analytic bias correction (Nagel et al. 2019, "Data-Free Quantization"):
/// the int8 weights shift each output by `sum((Wq*s - W) * E[x])`; subtract
/// that expected shift from the bias.
fn correct_bias(
    dims: &[usize],
    w: &[f32],
    q: &[i8],
    scales: &[f32],
    input_means: &[f32],
    group: usize,
    bias: &mut [f32],
) {
    let (m, c_per_group) = (dims[0], dims[1]);
    let k: usize = dims[2..].iter().product();
    let m_per_group = (m / group).max(1);
    for o in 0..m {
        let g = o / m_per_group;
        let mut shift = 0f64;
        for c in 0..c_per_group {
            let mean = input_means.get(g * c_per_group + c).copied().unwrap_or(0.0);
            let base = (o * c_per_group + c) * k;
            let err: f32 = (base..base + k)
                .map(|i| f32::from(q[i]) * scales[o] - w[i])
                .sum();
            shift += f64::from(err) * f64::from(mean);
        }
        bias[o] -= shift as f32;
    }
}

/// Adds scale / zero-point initialisers for a tensor once; returns their names.
struct ParamInits<'a> {
    params: &'a HashMap<String, QParams>,
    added: HashSet<String>,
    inits: Vec<TensorProto>,
}

impl ParamInits<'_> {
    fn names(&mut self, tensor: &str) -> (String, String) {
        let (s, z) = (format!("{tensor}_scale"), format!("{tensor}_zero_point"));
        if self.added.insert(tensor.to_string()) {
            let p = self.params[tensor];
            self.inits.push(graph::f32_tensor(&s, &[], &[p.scale]));
            self.inits.push(if p.signed {
                graph::i8_tensor(&z, &[], &[p.zero_point as i8])
            } else {
                graph::u8_tensor(&z, &[], &[p.zero_point as u8])
            });
        }
        (s, z)
    }
}

/// Initialisers no node reads any more are dropped.
fn prune_initializers(g: &mut GraphProto) {
    let used: HashSet<String> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(g.output.iter().map(|o| o.name.clone()))
        .collect();
    g.initializer.retain(|t| used.contains(&t.name));
}

/// Writes the integer (QLinearConv) form for tract.
pub fn emit_integer(model: &ModelProto, plan: &Plan) -> anyhow::Result<ModelProto> {
    let mut out = model.clone();
    let g = graph::graph(model);
    let by_node: HashMap<usize, &ConvSite> = plan.quantized_sites().map(|s| (s.node, s)).collect();
    let folded: HashSet<usize> = plan.quantized_sites().filter_map(|s| s.relu).collect();
    let mut p = ParamInits {
        params: &plan.params,
        added: HashSet::new(),
        inits: Vec::new(),
    };
    let mut nodes: Vec<NodeProto> = Vec::new();
    let mut quantized: HashMap<String, String> = HashMap::new();
    let mut float: HashSet<String> = g
        .input
        .iter()
        .map(|i| i.name.clone())
        .chain(g.initializer.iter().map(|t| t.name.clone()))
        .collect();

    // The u8 version of `t`, quantising it where it is still float.
    fn ensure_q(
        t: &str,
        quantized: &mut HashMap<String, String>,
        p: &mut ParamInits,
        nodes: &mut Vec<NodeProto>,
    ) -> String {
        if let Some(q) = quantized.get(t) {
            return q.clone();
        }
        let q = format!("{t}_quantized");
        let (s, z) = p.names(t);
        nodes.push(node(
            "QuantizeLinear",
            &format!("{t}_QuantizeLinear"),
            &[t, &s, &z],
            &[&q],
        ));
        quantized.insert(t.to_string(), q.clone());
        q
    }
    // The float version of `t`, dequantising it where it only exists in u8.
    fn ensure_f(
        t: &str,
        float: &mut HashSet<String>,
        quantized: &HashMap<String, String>,
        p: &mut ParamInits,
        nodes: &mut Vec<NodeProto>,
    ) {
        if float.contains(t) {
            return;
        }
        if let Some(q) = quantized.get(t) {
            let (s, z) = p.names(t);
            nodes.push(node(
                "DequantizeLinear",
                &format!("{t}_DequantizeLinear"),
                &[q, &s, &z],
                &[t],
            ));
            float.insert(t.to_string());
        }
    }

    for (i, n) in g.node.iter().enumerate() {
        if folded.contains(&i) {
            continue;
        }
        if let Some(site) = by_node.get(&i) {
            let w = &plan.weights[&site.name];
            let xq = ensure_q(&site.input, &mut quantized, &mut p, &mut nodes);
            let (xs, xz) = p.names(&site.input);
            let (ys, yz) = p.names(&site.output);
            let (wq, ws, wz, bq) = (
                format!("{}.weight_quantized", site.name),
                format!("{}.weight_scale", site.name),
                format!("{}.weight_zero_point", site.name),
                format!("{}.bias_quantized", site.name),
            );
            p.inits.push(graph::i8_tensor(&wq, &w.dims, &w.values));
            if w.per_channel {
                p.inits
                    .push(graph::f32_tensor(&ws, &[w.scales.len()], &w.scales));
            } else {
                p.inits.push(graph::f32_tensor(&ws, &[], &w.scales[..1]));
            }
            // One scalar zero point: tract only fuses requantisation into its
            // integer matmul when the weight zero point is a scalar 0.
            p.inits.push(graph::i8_tensor(&wz, &[], &[0]));
            p.inits
                .push(graph::i32_tensor(&bq, &[w.bias_q.len()], &w.bias_q));
            let yq = format!("{}_quantized", site.output);
            let mut conv = node(
                "QLinearConv",
                &site.name,
                &[&xq, &xs, &xz, &wq, &ws, &wz, &ys, &yz, &bq],
                &[&yq],
            );
            conv.attribute = n.attribute.clone();
            nodes.push(conv);
            quantized.insert(site.output.clone(), yq);
            continue;
        }
        if n.op_type == "MaxPool" && plan.params.contains_key(&n.output[0]) {
            if let Some(q_in) = quantized.get(&n.input[0]).cloned() {
                let q_out = format!("{}_quantized", n.output[0]);
                let mut pool = n.clone();
                pool.input = vec![q_in];
                pool.output = vec![q_out.clone()];
                nodes.push(pool);
                quantized.insert(n.output[0].clone(), q_out);
                continue;
            }
        }
        for input in n.input.iter().filter(|s| !s.is_empty()) {
            ensure_f(input, &mut float, &quantized, &mut p, &mut nodes);
        }
        nodes.push(n.clone());
        float.extend(n.output.iter().cloned());
    }
    for o in &g.output {
        ensure_f(&o.name, &mut float, &quantized, &mut p, &mut nodes);
    }
    let inits = std::mem::take(&mut p.inits);
    let og = graph::graph_mut(&mut out);
    og.node = nodes;
    og.initializer.extend(inits);
    og.value_info.clear();
    prune_initializers(og);
    Ok(out)
}

/// Adds `DequantizeLinear(values, scales, zero_points, axis 0)` for a
/// per-channel constant of `site` (its weight or bias), naming the tensors
/// `{site}.{what}_*`; returns the float tensor it makes.
fn dequantize_constant(
    site: &str,
    what: &str,
    mut values: TensorProto,
    scales: &[f32],
    mut zero_points: TensorProto,
    p: &mut ParamInits,
    nodes: &mut Vec<NodeProto>,
) -> String {
    values.name = format!("{site}.{what}_quantized");
    zero_points.name = format!("{site}.{what}_zero_point");
    let scale = format!("{site}.{what}_scale");
    let out = format!("{site}.{what}_dequantized");
    let mut dq = node(
        "DequantizeLinear",
        &format!("{site}.{what}_DequantizeLinear"),
        &[&values.name, &scale, &zero_points.name],
        &[&out],
    );
    dq.attribute.push(attr_int("axis", 0));
    nodes.push(dq);
    p.inits.push(values);
    p.inits
        .push(graph::f32_tensor(&scale, &[scales.len()], scales));
    p.inits.push(zero_points);
    out
}

/// Writes the QDQ form for ONNX Runtime (`signed = false`, int32 biases) or
/// TensorRT (`signed = true`, float biases).
pub fn emit_qdq(model: &ModelProto, plan: &Plan, target: Target) -> anyhow::Result<ModelProto> {
    let mut out = model.clone();
    let g = graph::graph(model);
    let by_node: HashMap<usize, &ConvSite> = plan.quantized_sites().map(|s| (s.node, s)).collect();
    let graph_outputs: HashSet<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    let mut p = ParamInits {
        params: &plan.params,
        added: HashSet::new(),
        inits: Vec::new(),
    };
    let mut nodes: Vec<NodeProto> = Vec::new();
    let mut rename: HashMap<String, String> = HashMap::new();
    let qdq = |t: &str,
               p: &mut ParamInits,
               nodes: &mut Vec<NodeProto>,
               rename: &mut HashMap<String, String>| {
        if !plan.params.contains_key(t) || graph_outputs.contains(t) || rename.contains_key(t) {
            return;
        }
        let (s, z) = p.names(t);
        let (q, dq) = (format!("{t}_quantized"), format!("{t}_dequantized"));
        nodes.push(node(
            "QuantizeLinear",
            &format!("{t}_QuantizeLinear"),
            &[t, &s, &z],
            &[&q],
        ));
        nodes.push(node(
            "DequantizeLinear",
            &format!("{t}_DequantizeLinear"),
            &[&q, &s, &z],
            &[&dq],
        ));
        rename.insert(t.to_string(), dq);
    };
    for input in &g.input {
        qdq(&input.name, &mut p, &mut nodes, &mut rename);
    }
    for (i, n) in g.node.iter().enumerate() {
        let mut new = n.clone();
        for input in new.input.iter_mut() {
            if let Some(r) = rename.get(input.as_str()) {
                *input = r.clone();
            }
        }
        if let Some(site) = by_node.get(&i) {
            let w = &plan.weights[&site.name];
            let m = w.dims[0];
            new.input[1] = dequantize_constant(
                &site.name,
                "weight",
                graph::i8_tensor("", &w.dims, &w.values),
                &w.scales,
                graph::i8_tensor("", &[m], &vec![0; m]),
                &mut p,
                &mut nodes,
            );
            let bias = if target.signed_activations() {
                let b = format!("{}.bias_corrected", site.name);
                p.inits.push(graph::f32_tensor(&b, &[m], &w.bias));
                b
            } else {
                let x = plan.params[&site.input];
                let scales: Vec<f32> = w.scales.iter().map(|s| s * x.scale).collect();
                dequantize_constant(
                    &site.name,
                    "bias",
                    graph::i32_tensor("", &[m], &w.bias_q),
                    &scales,
                    graph::i32_tensor("", &[m], &vec![0; m]),
                    &mut p,
                    &mut nodes,
                )
            };
            if new.input.len() > 2 {
                new.input[2] = bias;
            } else {
                new.input.push(bias);
            }
        }
        nodes.push(new);
        for o in &n.output {
            qdq(o, &mut p, &mut nodes, &mut rename);
        }
    }
    let inits = std::mem::take(&mut p.inits);
    let og = graph::graph_mut(&mut out);
    og.node = nodes;
    og.initializer.extend(inits);
    og.value_info.clear();
    prune_initializers(og);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asymmetric_params_cover_the_range_and_keep_zero_exact() {
        let p = QParams::for_range(-1.0, 3.0, false);
        assert!((p.scale - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(p.zero_point, 64);
        assert_eq!(p.fake(0.0), 0.0);
        assert!((p.fake(3.0) - 3.0).abs() <= p.scale);
        assert!(
            (p.fake(10.0) - p.fake(3.0)).abs() < 1e-6,
            "clips above the range"
        );
        let relu = QParams::for_range(0.0, 6.0, false);
        assert_eq!(relu.zero_point, 0);
        assert_eq!(relu.fake(-1.0), 0.0, "u8 with zero point 0 is a ReLU");
        let s = QParams::for_range(-2.0, 1.0, true);
        assert_eq!((s.zero_point, s.scale), (0, 2.0 / 127.0));
    }

    #[test]
    fn weights_are_symmetric_per_channel_or_per_tensor() {
        let w = [1.0, -0.5, 0.25, 0.01, -0.02, 0.0];
        let (q, s) = quantize_weights(&[2, 3, 1, 1], &w, true, 127);
        assert_eq!(s.len(), 2);
        assert_eq!(&q[..3], &[127, -64, 32]);
        assert_eq!(q[4], -127);
        let (q, s) = quantize_weights(&[2, 3, 1, 1], &w, false, 127);
        assert_eq!(s, vec![1.0 / 127.0; 2]);
        assert_eq!(&q[3..], &[1, -3, 0]);
        for v in q {
            assert!(v >= -127);
        }
    }

    #[test]
    fn bias_correction_removes_the_expected_weight_error() {
        // One output, two inputs with means 2 and -1.
        let (w, dims) = (vec![0.3f32, 0.7], vec![1usize, 2, 1, 1]);
        let (q, s) = quantize_weights(&dims, &w, true, 127);
        let mut bias = vec![0.5];
        correct_bias(&dims, &w, &q, &s, &[2.0, -1.0], 1, &mut bias);
        let float_out = 0.3 * 2.0 - 0.7 + 0.5;
        let int8_out = f32::from(q[0]) * s[0] * 2.0 - f32::from(q[1]) * s[0] + bias[0];
        assert!((float_out - int8_out).abs() < 1e-6);
    }
}
