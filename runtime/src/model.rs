//! A segmentation model: the ONNX graph plus the model card that says how to
//! feed it (size, colour order, normalisation) and how to read it (classes,
//! colours). Everything is checked here, at load, so later stages can trust it.
//!
//! The card comes from the ONNX `metadata_props` key [`CARD_METADATA_KEY`]
//! (written by `models/export.py`) or, for models exported elsewhere, from a
//! sidecar JSON file next to the model (`model.onnx.card.json` or
//! `model.card.json`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::internal::DimLike;

use crate::classes::ClassInfo;
use crate::error::{Error, Result};

/// The `metadata_props` key that holds the model card as JSON.
pub const CARD_METADATA_KEY: &str = "dla_edge.model_card";

/// Input H and W must be multiples of this (DLA down-samples five times).
pub const SIZE_MULTIPLE: u32 = 32;

/// How the network wants its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Name of the graph input.
    #[serde(default)]
    pub name: Option<String>,
    /// Input height in pixels.
    pub height: u32,
    /// Input width in pixels.
    pub width: u32,
    /// Channel order the network was trained on: `"RGB"` or `"BGR"`.
    #[serde(default = "default_color")]
    pub color: String,
    /// Tensor layout; only `"NCHW"` is supported.
    #[serde(default = "default_layout")]
    pub layout: String,
    /// Pixel values are divided by this before mean/std (255 for [0, 1] inputs).
    #[serde(default = "default_scale")]
    pub scale: f32,
    /// Per-channel mean subtracted after scaling.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub std: [f32; 3],
}

fn default_color() -> String {
    "RGB".into()
}
fn default_layout() -> String {
    "NCHW".into()
}
fn default_scale() -> f32 {
    255.0
}

/// What the network outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct OutputSpec {
    /// Name of the graph output.
    #[serde(default)]
    pub name: Option<String>,
    /// Always `"logits"` for now: one score per class and pixel.
    #[serde(default)]
    pub kind: Option<String>,
    /// `"input"` when the network up-samples to the input size itself.
    #[serde(default)]
    pub resolution: Option<String>,
}

/// The self-description of a segmentation model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Card format version (1).
    pub schema: u32,
    /// Model name, e.g. `"dla-tiny-seg"`.
    pub name: String,
    /// Architecture, e.g. `"DLASeg"`.
    #[serde(default)]
    pub architecture: Option<String>,
    /// Backbone, e.g. `"dla46_c"`.
    #[serde(default)]
    pub backbone: Option<String>,
    /// Output stride of the head before its final up-sampling.
    #[serde(default)]
    pub down_ratio: Option<u32>,
    /// Input contract.
    pub input: InputSpec,
    /// Output description.
    #[serde(default)]
    pub output: OutputSpec,
    /// Classes in output-channel order.
    pub classes: Vec<ClassInfo>,
    /// Label value meaning "ignore" in ground truth.
    #[serde(default = "default_ignore")]
    pub ignore_index: u8,
    /// How the model was trained (free-form provenance).
    #[serde(default)]
    pub training: serde_json::Value,
    /// Measured quality (free-form: held-out mIoU, per-class IoU ...).
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// Parameter count.
    #[serde(default)]
    pub params: Option<u64>,
    /// Multiply-accumulates (x1e9) at the input size.
    #[serde(default)]
    pub gmac: Option<f64>,
}

fn default_ignore() -> u8 {
    255
}

impl ModelCard {
    /// Parses and validates a card from JSON; `origin` names where it came from.
    pub fn from_json(json: &str, origin: &Path) -> Result<ModelCard> {
        let card: ModelCard = serde_json::from_str(json).map_err(|e| Error::Card {
            path: origin.to_path_buf(),
            reason: format!("invalid JSON: {e}"),
        })?;
        card.validate(origin)?;
        Ok(card)
    }

    fn validate(&self, origin: &Path) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::Card {
                path: origin.to_path_buf(),
                reason,
            })
        };
        if self.schema != 1 {
            return bad(format!(
                "schema {} is not supported (expected 1)",
                self.schema
            ));
        }
        if self.classes.is_empty() || self.classes.len() > 255 {
            return bad(format!(
                "classes: expected 1 to 255 classes, got {}",
                self.classes.len()
            ));
        }
        for (i, c) in self.classes.iter().enumerate() {
            if c.id as usize != i {
                return bad(format!(
                    "classes[{i}].id is {}, expected {i} (classes must be in channel order)",
                    c.id
                ));
            }
        }
        let input = &self.input;
        if input.height == 0 || input.width == 0 {
            return bad(format!(
                "input: size {}x{} must be positive",
                input.width, input.height
            ));
        }
        if !input.height.is_multiple_of(SIZE_MULTIPLE) || !input.width.is_multiple_of(SIZE_MULTIPLE)
        {
            return bad(format!(
                "input: size {}x{} (WxH) must be multiples of {SIZE_MULTIPLE}",
                input.width, input.height
            ));
        }
        if !matches!(input.color.as_str(), "RGB" | "BGR") {
            return bad(format!(
                "input.color is {:?}, expected \"RGB\" or \"BGR\"",
                input.color
            ));
        }
        if input.layout != "NCHW" {
            return bad(format!(
                "input.layout is {:?}, only \"NCHW\" is supported",
                input.layout
            ));
        }
        if input.std.iter().any(|s| *s <= 0.0) || input.scale <= 0.0 {
            return bad("input.std and input.scale must be positive".into());
        }
        Ok(())
    }
}

/// A loaded, checked segmentation model, ready to hand to a backend.
#[derive(Debug, Clone)]
pub struct Model {
    path: PathBuf,
    card: ModelCard,
    graph: InferenceModel,
    output_shape: [usize; 4],
    summary: GraphSummary,
    /// The ONNX file as loaded: engines other than tract (ONNX Runtime) build
    /// their own graph from it, including for models embedded in a binary.
    onnx: std::sync::Arc<[u8]>,
}

/// Facts about the ONNX graph read at load: what `dla-tools inspect` shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphSummary {
    /// ONNX operator set version (default domain).
    pub opset: i64,
    /// Number of nodes of each operator type.
    pub op_histogram: std::collections::BTreeMap<String, usize>,
    /// Number of weight values stored as initializers.
    pub params: u64,
    /// Name, operator and weight shape of every Conv / ConvTranspose node.
    convs: Vec<(String, String, Vec<i64>)>,
}

impl Model {
    /// Loads `path`, finds its card (metadata, then sidecar) and checks that it is a
    /// 1x3xHxW -> 1xCxH'xW' segmentation network with only supported operators.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Self::load_with_card(path, None)
    }

    /// Like [`Model::load`], with an explicit card file that overrides any other.
    pub fn load_with_card(path: impl AsRef<Path>, card_path: Option<&Path>) -> Result<Model> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::Model {
            path: path.to_path_buf(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::from_bytes(&bytes, path, card_path)
    }

    /// Loads a model held in memory (e.g. embedded in a binary); `origin` names
    /// it in errors and locates external weights and sidecar cards.
    pub fn from_bytes(bytes: &[u8], origin: &Path, card_path: Option<&Path>) -> Result<Model> {
        let path = origin;
        let fail = |reason: String| Error::Model {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.is_empty() {
            return Err(fail("file is empty (expected an ONNX model)".into()));
        }
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| {
                fail(format!(
                    "not a valid ONNX file (protobuf decode failed: {e})"
                ))
            })?;
        let Some(graph_proto) = proto.graph.as_ref() else {
            return Err(fail(
                "ONNX file has no graph (is it really a model?)".into(),
            ));
        };
        if graph_proto.node.is_empty() {
            return Err(fail(
                "ONNX graph has no nodes (is it really a model?)".into(),
            ));
        }
        let card = match card_path {
            Some(p) => read_card_file(p)?,
            None => match proto
                .metadata_props
                .iter()
                .find(|p| p.key == CARD_METADATA_KEY)
            {
                Some(entry) => ModelCard::from_json(&entry.value, path)?,
                None => find_sidecar_card(path)?,
            },
        };
        let summary = GraphSummary {
            opset: proto
                .opset_import
                .iter()
                .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
                .map(|o| o.version)
                .unwrap_or(0),
            op_histogram: graph_proto
                .node
                .iter()
                .fold(Default::default(), |mut h, n| {
                    *h.entry(n.op_type.clone()).or_insert(0) += 1;
                    h
                }),
            params: graph_proto
                .initializer
                .iter()
                .map(|t| t.dims.iter().product::<i64>().max(0) as u64)
                .sum(),
            convs: graph_proto
                .node
                .iter()
                .filter(|n| n.op_type == "Conv" || n.op_type == "ConvTranspose")
                .filter_map(|n| {
                    let weight = n.input.get(1)?;
                    let init = graph_proto.initializer.iter().find(|t| &t.name == weight)?;
                    Some((n.name.clone(), n.op_type.clone(), init.dims.clone()))
                })
                .collect(),
        };
        let dir = path.parent().and_then(|d| d.to_str());
        let parsed = tract_onnx::onnx()
            .parse(&proto, dir)
            .map_err(|e| fail(format!("cannot parse the ONNX graph: {e:#}")))?;
        let mut graph = parsed.model;
        if let Some(node) = graph
            .nodes()
            .iter()
            .find(|n| n.op.name().starts_with("Unimplemented"))
        {
            let op = node.op.name();
            let op = op
                .trim_start_matches("Unimplemented(")
                .trim_end_matches(')');
            return Err(fail(format!(
                "unsupported operator {op} (node {:?}); the tract backend cannot run it",
                node.name
            )));
        }
        let output_shape = check_and_fix_shapes(&mut graph, &card).map_err(fail)?;
        Ok(Model {
            path: path.to_path_buf(),
            card,
            graph,
            output_shape,
            summary,
            onnx: bytes.into(),
        })
    }

    /// Operator histogram, parameter count and opset of the ONNX graph.
    pub fn summary(&self) -> &GraphSummary {
        &self.summary
    }

    /// Multiply-accumulates of one inference at the input size, in units of 1e9,
    /// counted over Conv (per output value) and ConvTranspose (per input value,
    /// the work a transposed convolution really does).
    pub fn gmacs(&self) -> Result<f64> {
        let mut g = self.graph.clone();
        g.analyse(false).map_err(|e| Error::Model {
            path: self.path.clone(),
            reason: format!("cannot infer shapes: {e:#}"),
        })?;
        let mut macs = 0u64;
        for (name, op, w) in &self.summary.convs {
            let Some(node) = g.nodes().iter().find(|n| &n.name == name) else {
                continue;
            };
            let fact = if op == "Conv" {
                &node.outputs[0].fact
            } else {
                let Ok(fact) = g.outlet_fact(node.inputs[0]) else {
                    continue;
                };
                fact
            };
            let Some(shape) = fact.shape.concretize() else {
                continue;
            };
            let elems: u64 = shape
                .iter()
                .filter_map(|d| d.to_usize().ok())
                .map(|d| d as u64)
                .product();
            let per: i64 = w.iter().skip(1).product();
            macs += elems * per.max(0) as u64;
        }
        Ok(macs as f64 / 1e9)
    }

    /// The ONNX bytes the model was loaded from, unmodified.
    pub fn onnx_bytes(&self) -> &[u8] {
        &self.onnx
    }

    /// The file this model came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Input (height, width) the network runs at.
    pub fn input_size(&self) -> (u32, u32) {
        (self.card.input.height, self.card.input.width)
    }

    /// Output shape `[1, classes, height, width]`.
    pub fn output_shape(&self) -> [usize; 4] {
        self.output_shape
    }

    /// The graph with its input size fixed, for backends built on tract.
    pub fn graph(&self) -> &InferenceModel {
        &self.graph
    }
}

fn read_card_file(p: &Path) -> Result<ModelCard> {
    let json = std::fs::read_to_string(p).map_err(|e| Error::Card {
        path: p.to_path_buf(),
        reason: format!("cannot read: {e}"),
    })?;
    ModelCard::from_json(&json, p)
}

fn find_sidecar_card(model: &Path) -> Result<ModelCard> {
    let mut candidates = vec![PathBuf::from(format!("{}.card.json", model.display()))];
    candidates.push(model.with_extension("card.json"));
    for c in &candidates {
        if c.is_file() {
            return read_card_file(c);
        }
    }
    Err(Error::Card {
        path: model.to_path_buf(),
        reason: format!(
            "no model card: the ONNX metadata has no {CARD_METADATA_KEY:?} entry and no sidecar {} exists \
             (export with models/export.py, or write a card JSON as described in the README)",
            candidates[0].display()
        ),
    })
}

/// Checks the graph's single input and output against the card, fixes the input
/// to 1x3xHxW and returns the concrete output shape.
fn check_and_fix_shapes(
    graph: &mut InferenceModel,
    card: &ModelCard,
) -> std::result::Result<[usize; 4], String> {
    let inputs = graph.input_outlets().map_err(|e| e.to_string())?.to_vec();
    if inputs.len() != 1 {
        return Err(format!(
            "expected exactly one input (an image), found {}",
            inputs.len()
        ));
    }
    let outputs = graph.output_outlets().map_err(|e| e.to_string())?.to_vec();
    if outputs.is_empty() {
        return Err("graph has no outputs".into());
    }
    let fact = graph
        .outlet_fact(inputs[0])
        .map_err(|e| e.to_string())?
        .clone();
    let (h, w) = (card.input.height as usize, card.input.width as usize);
    if let Some(shape) = fact.shape.concretize() {
        if shape.len() != 4 {
            return Err(format!(
                "input has rank {} ({shape:?}); expected 1x3xHxW",
                shape.len()
            ));
        }
        let dims: Vec<Option<usize>> = shape.iter().map(|d| d.to_usize().ok()).collect();
        let expect = [Some(1), Some(3), Some(h), Some(w)];
        for (axis, (got, want)) in dims.iter().zip(expect).enumerate() {
            if let (Some(got), Some(want)) = (got, want) {
                if *got != want {
                    let what = ["batch", "channels", "height", "width"][axis];
                    return Err(format!(
                        "input {what} is {got}, expected {want} (input must be 1x3x{h}x{w}, as the model card says)"
                    ));
                }
            }
        }
    } else if let Some(rank) = fact.shape.rank().concretize() {
        if rank != 4 {
            return Err(format!("input has rank {rank}; expected 1x3xHxW"));
        }
    }
    graph
        .set_input_fact(0, f32::fact([1, 3, h, w]).into())
        .map_err(|e| e.to_string())?;
    if outputs.len() > 1 {
        graph
            .select_output_outlets(&outputs[..1])
            .map_err(|e| e.to_string())?;
    }
    let typed = graph
        .clone()
        .into_typed()
        .map_err(|e| format!("cannot infer shapes at input 1x3x{h}x{w}: {e:#}"))?;
    let out_fact = typed
        .outlet_fact(typed.output_outlets().map_err(|e| e.to_string())?[0])
        .map_err(|e| e.to_string())?;
    let out: Vec<usize> = out_fact
        .shape
        .as_concrete()
        .ok_or_else(|| format!("output shape {:?} is not concrete", out_fact.shape))?
        .to_vec();
    if out.len() != 4 || out[0] != 1 {
        return Err(format!("output shape is {out:?}; expected 1xCxHxW logits"));
    }
    if out[1] != card.classes.len() {
        return Err(format!(
            "output has {} channels but the model card lists {} classes",
            out[1],
            card.classes.len()
        ));
    }
    if out[2] == 0 || out[3] == 0 || out[2] > h || out[3] > w {
        return Err(format!(
            "output spatial size {}x{} does not fit input {h}x{w}",
            out[2], out[3]
        ));
    }
    Ok([out[0], out[1], out[2], out[3]])
}
