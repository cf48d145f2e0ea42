//! Which channels must go together: a dependency analysis of the ONNX graph.
//!
//! Every channel (axis 1 of an NCHW tensor) gets an id. A dense Conv makes new
//! ids for its outputs; ops that keep channels apart (ReLU, BatchNorm,
//! MaxPool, Resize, depthwise Conv and ConvTranspose) pass ids through;
//! Concat concatenates them, so a Root or IDA node's inputs keep their
//! offsets; Add (a residual) ties the ids at each position together. Tied ids
//! form a *group*: removing a channel removes its whole group from every
//! producer and consumer at once, so the pruned graph stays consistent.
//!
//! Groups that reach the model input or output, or an op this analysis does
//! not understand, are locked: they stay, and [`Analysis::notes`] says why.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context};
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::internal::DimLike;

use crate::graph::{self, int};

/// Which ONNX operator a prunable convolution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvOp {
    /// `Conv`: weights `[out, in/group, kh, kw]`.
    Conv,
    /// `ConvTranspose`: weights `[in, out/group, kh, kw]`.
    ConvTranspose,
}

/// How a convolution's channels relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKind {
    /// `group` 1: every output channel reads every input channel.
    Dense,
    /// `group` = channels, one filter per channel: output channel i is input channel i.
    Depthwise,
}

/// A Conv or ConvTranspose whose channels the pruner can change.
#[derive(Debug, Clone)]
pub struct ConvNode {
    /// Index in `graph.node`.
    pub node: usize,
    /// The node's name (or its output's, when unnamed).
    pub name: String,
    pub op: ConvOp,
    pub kind: ConvKind,
    /// Initializer names of the weights and the optional bias.
    pub weight: String,
    pub bias: Option<String>,
    /// Its data input and output tensors.
    pub input: String,
    pub output: String,
    /// Weight shape as in the file.
    pub weight_dims: Vec<usize>,
    /// Output (Conv) or input (ConvTranspose) height x width: the positions
    /// its multiply-accumulates run over.
    pub positions: usize,
    /// A BatchNormalization right after it: its per-channel scale
    /// `|gamma| / sqrt(var + eps)` weighs the filter norms.
    pub bn_scale: Option<Vec<f32>>,
}

impl ConvNode {
    /// Kernel height x width.
    pub fn kernel_area(&self) -> usize {
        self.weight_dims.iter().skip(2).product()
    }

    /// Input and output channels in the original model.
    pub fn channels(&self) -> (usize, usize) {
        let d = &self.weight_dims;
        match (self.op, self.kind) {
            (_, ConvKind::Depthwise) => (d[0], d[0]),
            (ConvOp::Conv, ConvKind::Dense) => (d[1], d[0]),
            (ConvOp::ConvTranspose, ConvKind::Dense) => (d[0], d[1]),
        }
    }

    /// Multiply-accumulates with `inputs` input and `outputs` output channels
    /// (counted as `Model::gmacs` does: per output value for Conv, per input
    /// value for ConvTranspose).
    pub fn macs(&self, inputs: usize, outputs: usize) -> u64 {
        let per = (self.positions * self.kernel_area()) as u64;
        match self.kind {
            ConvKind::Depthwise => per * inputs as u64,
            ConvKind::Dense => per * inputs as u64 * outputs as u64,
        }
    }
}

/// A set of channels that are removed together.
#[derive(Debug, Clone)]
pub struct Group {
    /// The dense convolution output channels in it: `(conv index, channel)`.
    pub members: Vec<(usize, usize)>,
    /// The component (set of coupled convolutions) it belongs to.
    pub component: usize,
}

/// Convolutions whose output channels are tied (by residual Adds): they keep
/// equal widths, and `--round-to` and the minimum width apply to them as one.
#[derive(Debug, Clone)]
pub struct Component {
    /// Dense convolutions in it.
    pub convs: Vec<usize>,
    /// Its groups.
    pub groups: Vec<usize>,
}

/// The result of the dependency analysis.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Every prunable (dense or depthwise) convolution.
    pub convs: Vec<ConvNode>,
    /// Prunable groups.
    pub groups: Vec<Group>,
    /// Coupled convolutions.
    pub components: Vec<Component>,
    /// For each tracked tensor, the prunable group at each channel position
    /// (`None`: that channel stays).
    pub tensors: HashMap<String, Vec<Option<usize>>>,
    /// BatchNormalization nodes (index in `graph.node`) whose channels follow their input.
    pub batch_norms: Vec<usize>,
    /// Resize nodes with a constant `sizes` input, whose channel entry must follow.
    pub resizes: Vec<usize>,
    /// What was left unpruned and why, for the report.
    pub notes: Vec<String>,
}

/// Channel-preserving element-wise ops: output channel i is input channel i.
const UNARY: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "Clip",
    "Identity",
    "Dropout",
    "Erf",
    "Gelu",
    "Mish",
    "Neg",
    "Abs",
    "Exp",
    "Sqrt",
];
/// Pools: channels pass through untouched.
const POOLS: &[&str] = &[
    "MaxPool",
    "AveragePool",
    "LpPool",
    "GlobalAveragePool",
    "GlobalMaxPool",
];
/// Element-wise ops over several tensors: same-position channels are tied.
const ELEMENTWISE: &[&str] = &["Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean"];

/// Id 0: the lock. Every id tied to it stays.
const LOCK: usize = 0;

#[derive(Debug, Clone, Copy)]
enum Origin {
    Lock,
    Conv(usize, usize),
}

struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // The lock stays a root so `find(x) == LOCK` says "locked".
            if rb == LOCK {
                self.parent[ra] = rb;
            } else {
                self.parent[rb] = ra;
            }
        }
    }
}

struct Builder<'a> {
    graph: &'a GraphProto,
    shapes: HashMap<String, Vec<usize>>,
    inits: HashMap<&'a str, &'a tract_onnx::pb::TensorProto>,
    uf: UnionFind,
    origins: Vec<Origin>,
    ids: HashMap<String, Vec<usize>>,
    convs: Vec<ConvNode>,
    conv_by_output: HashMap<String, usize>,
    batch_norms: Vec<usize>,
    resizes: Vec<usize>,
    notes: Vec<String>,
}

/// The name a node is known by in messages and `--keep`.
pub fn node_name(n: &NodeProto) -> String {
    if n.name.is_empty() {
        n.output.first().cloned().unwrap_or_default()
    } else {
        n.name.clone()
    }
}

/// Every tensor's shape at input size `(height, width)`, from tract's shape inference.
pub fn tensor_shapes(
    model: &ModelProto,
    (height, width): (u32, u32),
) -> anyhow::Result<HashMap<String, Vec<usize>>> {
    let mut g = tract_onnx::onnx()
        .model_for_proto_model(model)
        .context("tract cannot read the graph")?;
    g.set_input_fact(0, f32::fact([1, 3, height as usize, width as usize]).into())?;
    g.analyse(false).context("inferring tensor shapes")?;
    let mut shapes = HashMap::new();
    for node in g.nodes() {
        for (i, o) in node.outputs.iter().enumerate() {
            let outlet = OutletId::new(node.id, i);
            let name = g
                .outlet_label(outlet)
                .map(str::to_string)
                .unwrap_or_else(|| node.name.clone());
            if let Some(shape) = o.fact.shape.concretize() {
                let dims: Option<Vec<usize>> = shape.iter().map(|d| d.to_usize().ok()).collect();
                if let Some(dims) = dims {
                    shapes.insert(name, dims);
                }
            }
        }
    }
    Ok(shapes)
}

impl<'a> Builder<'a> {
    fn fresh(&mut self, origin: Origin) -> usize {
        let id = self.origins.len();
        self.origins.push(origin);
        self.uf.parent.push(id);
        if matches!(origin, Origin::Lock) && id != LOCK {
            self.uf.union(LOCK, id);
        }
        id
    }

    fn lock(&mut self, tensor: &str) {
        if let Some(ids) = self.ids.get(tensor).cloned() {
            for id in ids {
                self.uf.union(LOCK, id);
            }
        }
    }

    fn channels_of(&self, tensor: &str) -> Option<usize> {
        self.shapes
            .get(tensor)
            .filter(|s| s.len() >= 2)
            .map(|s| s[1])
    }

    /// An op the analysis does not follow: its inputs' channels stay, and its
    /// outputs get locked ids.
    fn opaque(&mut self, n: &NodeProto, why: String) {
        let mut touched = false;
        for input in n.input.iter().filter(|s| !s.is_empty()) {
            if self.ids.contains_key(input) {
                self.lock(input);
                touched = true;
            }
        }
        for output in &n.output {
            if let Some(c) = self.channels_of(output) {
                let ids = (0..c).map(|_| self.fresh(Origin::Lock)).collect();
                self.ids.insert(output.clone(), ids);
            }
        }
        if touched {
            self.notes.push(format!(
                "{} ({}): {why}; the channels around it are kept",
                node_name(n),
                n.op_type
            ));
        }
    }

    fn pass_through(&mut self, from: &str, to: &str) -> bool {
        match self.ids.get(from).cloned() {
            Some(ids) => {
                self.ids.insert(to.to_string(), ids);
                true
            }
            None => false,
        }
    }

    fn is_scalar_constant(&self, name: &str) -> bool {
        self.inits
            .get(name)
            .is_some_and(|t| t.dims.iter().product::<i64>() == 1)
    }

    fn visit(&mut self, index: usize, n: &'a NodeProto) {
        let op = n.op_type.as_str();
        if !n.domain.is_empty() && n.domain != "ai.onnx" {
            return self.opaque(n, format!("operator of domain {:?}", n.domain));
        }
        let Some(x) = n.input.first().filter(|s| !s.is_empty()).cloned() else {
            return self.opaque(n, "no data input".into());
        };
        let Some(y) = n.output.first().cloned() else {
            return;
        };
        match op {
            "Conv" | "ConvTranspose" => self.conv(index, n, &x, &y),
            "BatchNormalization" => {
                let params_ok = n.input.len() >= 5
                    && n.input[1..5]
                        .iter()
                        .all(|p| self.inits.contains_key(p.as_str()));
                if !params_ok {
                    return self.opaque(n, "parameters are not initializers".into());
                }
                if !self.pass_through(&x, &y) {
                    return self.opaque(n, "input channels unknown".into());
                }
                self.batch_norms.push(index);
                if let Some(&c) = self.conv_by_output.get(&x) {
                    let get = |i: usize| {
                        self.inits
                            .get(n.input[i].as_str())
                            .and_then(|t| graph::tensor_f32(t).ok())
                            .map(|(_, v)| v)
                    };
                    let eps = n
                        .attribute
                        .iter()
                        .find(|a| a.name == "epsilon")
                        .map_or(1e-5, |a| a.f);
                    if let (Some(gamma), Some(var)) = (get(1), get(4)) {
                        let scale = gamma
                            .iter()
                            .zip(&var)
                            .map(|(g, v)| g.abs() / (v + eps).sqrt())
                            .collect();
                        self.convs[c].bn_scale = Some(scale);
                    }
                }
            }
            "Resize" | "Upsample" => {
                let sizes = n.input.get(3).filter(|s| !s.is_empty());
                if let Some(sizes) = sizes {
                    if !self.inits.contains_key(sizes.as_str()) {
                        return self.opaque(n, "its output sizes are computed in the graph".into());
                    }
                    self.resizes.push(index);
                }
                if !self.pass_through(&x, &y) {
                    self.opaque(n, "input channels unknown".into());
                }
            }
            _ if UNARY.contains(&op) || POOLS.contains(&op) => {
                // PRelu's slope may be per channel: follow it only when scalar.
                if op == "PRelu" && !n.input.get(1).is_some_and(|s| self.is_scalar_constant(s)) {
                    return self.opaque(n, "per-channel slope".into());
                }
                if !self.pass_through(&x, &y) {
                    self.opaque(n, "input channels unknown".into());
                }
                for extra in n.output.iter().skip(1) {
                    // MaxPool's indices output: nothing we follow reads it.
                    self.ids.remove(extra);
                }
            }
            _ if ELEMENTWISE.contains(&op) => {
                let tensors: Vec<&String> = n
                    .input
                    .iter()
                    .filter(|s| !s.is_empty() && !self.is_scalar_constant(s))
                    .collect();
                let all: Option<Vec<Vec<usize>>> =
                    tensors.iter().map(|t| self.ids.get(*t).cloned()).collect();
                match all {
                    Some(all) if !all.is_empty() && all.iter().all(|v| v.len() == all[0].len()) => {
                        for other in &all[1..] {
                            for (&a, &b) in all[0].iter().zip(other) {
                                self.uf.union(a, b);
                            }
                        }
                        self.ids.insert(y, all[0].clone());
                    }
                    _ => self.opaque(n, "operands are not same-width feature maps".into()),
                }
            }
            "Concat" => {
                let rank = self.shapes.get(&y).map_or(4, Vec::len) as i64;
                let axis = int(n, "axis").unwrap_or(1);
                if axis != 1 && axis != 1 - rank {
                    return self.opaque(n, format!("concatenates along axis {axis}, not channels"));
                }
                let mut ids = Vec::new();
                for input in n.input.iter().filter(|s| !s.is_empty()) {
                    match self.ids.get(input) {
                        Some(v) => ids.extend_from_slice(v),
                        None => return self.opaque(n, "an input's channels are unknown".into()),
                    }
                }
                self.ids.insert(y, ids);
            }
            "Constant" => {}
            _ => self.opaque(n, "not an operator channel pruning follows".into()),
        }
    }

    fn conv(&mut self, index: usize, n: &'a NodeProto, x: &str, y: &str) {
        let op = if n.op_type == "Conv" {
            ConvOp::Conv
        } else {
            ConvOp::ConvTranspose
        };
        let Some(w) = n.input.get(1).and_then(|w| self.inits.get(w.as_str())) else {
            return self.opaque(n, "weights are not an initializer".into());
        };
        let bias = n.input.get(2).filter(|s| !s.is_empty()).cloned();
        if bias
            .as_ref()
            .is_some_and(|b| !self.inits.contains_key(b.as_str()))
        {
            return self.opaque(n, "bias is not an initializer".into());
        }
        let dims: Vec<usize> = w.dims.iter().map(|&d| d.max(0) as usize).collect();
        if dims.len() != 4 {
            return self.opaque(
                n,
                format!("{}-D weights (2-D convolutions only)", dims.len()),
            );
        }
        let Some(in_ids) = self.ids.get(x).cloned() else {
            return self.opaque(n, "input channels unknown".into());
        };
        let cin = in_ids.len();
        let group = int(n, "group").unwrap_or(1).max(1) as usize;
        let (w_in, w_out) = match op {
            ConvOp::Conv => (dims[1] * group, dims[0]),
            ConvOp::ConvTranspose => (dims[0], dims[1] * group),
        };
        if w_in != cin {
            return self.opaque(
                n,
                format!("weights expect {w_in} input channels, the input has {cin}"),
            );
        }
        let kind = if group == 1 {
            ConvKind::Dense
        } else if group == cin && w_out == cin {
            ConvKind::Depthwise
        } else {
            return self.opaque(n, format!("grouped convolution (group {group})"));
        };
        let positions = match op {
            ConvOp::Conv => self.shapes.get(y),
            ConvOp::ConvTranspose => self.shapes.get(x),
        }
        .map_or(0, |s| s.iter().skip(2).product());
        let conv = self.convs.len();
        self.convs.push(ConvNode {
            node: index,
            name: node_name(n),
            op,
            kind,
            weight: n.input[1].clone(),
            bias,
            input: x.to_string(),
            output: y.to_string(),
            weight_dims: dims,
            positions,
            bn_scale: None,
        });
        let out_ids = match kind {
            ConvKind::Depthwise => in_ids,
            ConvKind::Dense => (0..w_out)
                .map(|c| self.fresh(Origin::Conv(conv, c)))
                .collect(),
        };
        self.conv_by_output.insert(y.to_string(), conv);
        self.ids.insert(y.to_string(), out_ids);
    }
}

/// Analyses `model` at input size `(height, width)`. Nodes named in `keep`
/// keep their input and output channels.
pub fn analyse(model: &ModelProto, size: (u32, u32), keep: &[String]) -> anyhow::Result<Analysis> {
    let g = graph::graph(model);
    let shapes = tensor_shapes(model, size)?;
    let inits = graph::initializers(g);
    let names: HashSet<String> = g.node.iter().map(node_name).collect();
    if let Some(bad) = keep.iter().find(|k| !names.contains(*k)) {
        bail!("--keep {bad:?}: the graph has no node of that name");
    }
    let mut b = Builder {
        graph: g,
        shapes,
        inits,
        uf: UnionFind { parent: vec![LOCK] },
        origins: vec![Origin::Lock],
        ids: HashMap::new(),
        convs: Vec::new(),
        conv_by_output: HashMap::new(),
        batch_norms: Vec::new(),
        resizes: Vec::new(),
        notes: Vec::new(),
    };
    let graph_inputs: Vec<&str> = g
        .input
        .iter()
        .map(|i| i.name.as_str())
        .filter(|name| !b.inits.contains_key(name))
        .collect();
    for name in graph_inputs {
        let c = b.channels_of(name).unwrap_or(0);
        let ids = (0..c).map(|_| b.fresh(Origin::Lock)).collect();
        b.ids.insert(name.to_string(), ids);
    }
    for (i, n) in b.graph.node.iter().enumerate() {
        let kept = keep.contains(&node_name(n));
        if kept {
            for t in n.input.iter().filter(|s| !s.is_empty()) {
                b.lock(t);
            }
        }
        b.visit(i, n);
        if kept {
            for t in &n.output {
                b.lock(t);
            }
        }
    }
    for output in &g.output {
        b.lock(&output.name);
    }
    Ok(b.finish())
}

impl Builder<'_> {
    fn finish(mut self) -> Analysis {
        // Group prunable ids by their root; each group's member channels.
        let mut group_of_root: HashMap<usize, usize> = HashMap::new();
        let mut groups: Vec<Group> = Vec::new();
        for id in 0..self.origins.len() {
            let root = self.uf.find(id);
            if root == self.uf.find(LOCK) {
                continue;
            }
            if let Origin::Conv(conv, channel) = self.origins[id] {
                let g = *group_of_root.entry(root).or_insert_with(|| {
                    groups.push(Group {
                        members: Vec::new(),
                        component: 0,
                    });
                    groups.len() - 1
                });
                groups[g].members.push((conv, channel));
            }
        }
        // Components: convolutions joined by a shared group.
        let mut conv_uf = UnionFind {
            parent: (0..self.convs.len()).collect(),
        };
        for g in &groups {
            for w in g.members.windows(2) {
                conv_uf.union(w[0].0, w[1].0);
            }
        }
        let mut component_of: HashMap<usize, usize> = HashMap::new();
        let mut components: Vec<Component> = Vec::new();
        for (gi, g) in groups.iter_mut().enumerate() {
            let root = conv_uf.find(g.members[0].0);
            let c = *component_of.entry(root).or_insert_with(|| {
                components.push(Component {
                    convs: Vec::new(),
                    groups: Vec::new(),
                });
                components.len() - 1
            });
            g.component = c;
            components[c].groups.push(gi);
            for &(conv, _) in &g.members {
                if !components[c].convs.contains(&conv) {
                    components[c].convs.push(conv);
                }
            }
        }
        let lock_root = self.uf.find(LOCK);
        let mut tensors = HashMap::new();
        for (name, ids) in std::mem::take(&mut self.ids) {
            let positions = ids
                .iter()
                .map(|&id| {
                    let root = self.uf.find(id);
                    (root != lock_root)
                        .then(|| group_of_root.get(&root).copied())
                        .flatten()
                })
                .collect();
            tensors.insert(name, positions);
        }
        Analysis {
            convs: self.convs,
            groups,
            components,
            tensors,
            batch_norms: self.batch_norms,
            resizes: self.resizes,
            notes: self.notes,
        }
    }
}

impl Analysis {
    /// Channel positions of `tensor` that survive when `removed` groups go.
    pub fn kept(&self, tensor: &str, removed: &[bool]) -> Option<Vec<usize>> {
        self.tensors.get(tensor).map(|positions| {
            positions
                .iter()
                .enumerate()
                .filter(|(_, g)| g.is_none_or(|g| !removed[g]))
                .map(|(i, _)| i)
                .collect()
        })
    }

    /// Multiply-accumulates of all convolutions when `removed` groups go.
    pub fn macs(&self, removed: &[bool]) -> u64 {
        self.convs
            .iter()
            .map(|c| {
                let (cin, cout) = c.channels();
                let i = self.kept(&c.input, removed).map_or(cin, |k| k.len());
                let o = self.kept(&c.output, removed).map_or(cout, |k| k.len());
                c.macs(i, o)
            })
            .sum()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::graph::{f32_tensor, node, value_info as value};
    use tract_onnx::pb::OperatorSetIdProto;

    /// image(3) -> a: Conv 3->4 -> Relu -> `middle` -> b: Conv 4->4 -> c: Conv 4->2 -> out.
    pub(crate) fn chain(middle: NodeProto) -> ModelProto {
        let conv = |name: &str, x: &str, y: &str, cin: usize, cout: usize| {
            (
                node("Conv", name, &[x, &format!("{name}.w")], &[y]),
                f32_tensor(
                    &format!("{name}.w"),
                    &[cout, cin, 1, 1],
                    &vec![0.5; cin * cout],
                ),
            )
        };
        let (a, wa) = conv("a", "image", "a_out", 3, 4);
        let (b, wb) = conv("b", "m_out", "b_out", 4, 4);
        let (c, wc) = conv("c", "b_out", "out", 4, 2);
        let relu = node("Relu", "relu", &["a_out"], &["r_out"]);
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(GraphProto {
                node: vec![a, relu, middle, b, c],
                initializer: vec![wa, wb, wc],
                input: vec![value("image", &[1, 3, 8, 8])],
                output: vec![value("out", &[1, 2, 8, 8])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn channels_flow_through_element_wise_ops_and_stop_at_the_output() {
        let model = chain(node("Sigmoid", "sig", &["r_out"], &["m_out"]));
        let a = analyse(&model, (8, 8), &[]).unwrap();
        assert_eq!(a.convs.len(), 3);
        // a's 4 and b's 4 output channels; c's feed the model output.
        assert_eq!(a.groups.len(), 8);
        assert!(a.notes.is_empty(), "{:?}", a.notes);
        assert_eq!(a.tensors["m_out"], a.tensors["a_out"]);
        assert!(a.tensors["out"].iter().all(Option::is_none));
        let kept = analyse(&model, (8, 8), &["b".to_string()]).unwrap();
        assert_eq!(kept.groups.len(), 0, "b keeps its inputs (a's) and outputs");
    }

    #[test]
    fn an_unknown_op_keeps_the_channels_around_it_and_says_so() {
        let mut softmax = node("Softmax", "soft", &["r_out"], &["m_out"]);
        softmax.attribute.push(crate::graph::attr_int("axis", 1));
        let model = chain(softmax);
        let a = analyse(&model, (8, 8), &[]).unwrap();
        // Only b's outputs (between two Convs) stay prunable.
        assert_eq!(a.groups.len(), 4);
        assert_eq!(a.notes.len(), 1);
        assert!(a.notes[0].contains("soft (Softmax)"), "{}", a.notes[0]);
    }

    #[test]
    fn weights_computed_in_the_graph_are_not_pruned() {
        let mut model = chain(node("Identity", "id", &["r_out"], &["m_out"]));
        let g = model.graph.as_mut().unwrap();
        // b's weights arrive as a graph input instead of an initializer.
        let w = g.initializer.remove(1);
        g.input.push(value(&w.name, &[4, 4, 1, 1]));
        let a = analyse(&model, (8, 8), &[]).unwrap();
        assert_eq!(a.convs.len(), 2);
        assert_eq!(a.groups.len(), 0);
        assert!(
            a.notes.iter().any(|n| n.contains("not an initializer")),
            "{:?}",
            a.notes
        );
    }
}
