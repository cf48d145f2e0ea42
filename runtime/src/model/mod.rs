//! A segmentation model: the ONNX graph plus the model card that says how to
//! feed it (size, colour order, normalisation) and how to read it (classes,
//! colours). Everything is checked here, at load, so later stages can trust it.
//!
//! The card comes from, in this order: a card file the caller names, the ONNX
//! `metadata_props` key [`CARD_METADATA_KEY`] (written by `models/export.py`
//! and by every dla-tools command that writes a model), a sidecar JSON file
//! next to the model (`model.onnx.card.json` or `model.card.json`). A model
//! with none of these still loads, with the defaults of [`assumed`], and
//! says so once (a `log` warning and [`Model::assumed`]).

mod assumed;
mod card;
mod shapes;

use std::path::{Path, PathBuf};

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::internal::DimLike;

pub use assumed::{
    assumed_card, default_classes, size_for_frames, Assumed, SizeFrom, IMAGENET_MEAN, IMAGENET_STD,
    MAX_DEFAULT_WIDTH,
};
pub use card::{InputSpec, ModelCard, OutputSpec};

use crate::error::{Error, Result};

/// The `metadata_props` key that holds the model card as JSON.
pub const CARD_METADATA_KEY: &str = "dla_edge.model_card";

/// Input H and W must be multiples of this (DLA down-samples five times).
pub const SIZE_MULTIPLE: u32 = 32;

/// Parses an input size `WxH` (e.g. `512x256`) into (width, height): positive
/// multiples of [`SIZE_MULTIPLE`]. For command-line flags (`--input-size`).
pub fn parse_input_size(s: &str) -> std::result::Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?} is not WxH, e.g. 512x256"))?;
    let side = |v: &str| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|v| *v > 0 && v.is_multiple_of(SIZE_MULTIPLE))
    };
    match (side(w), side(h)) {
        (Some(w), Some(h)) => Ok((w, h)),
        _ => Err(format!(
            "{s:?}: both sides must be positive multiples of {SIZE_MULTIPLE}"
        )),
    }
}

/// How to load a model beyond its bytes: which card, and what size to run a
/// graph at whose height and width are free.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// A card file that overrides the model's own.
    pub card_file: Option<PathBuf>,
    /// A card given as a value (e.g. one `dla-tools card` is about to write);
    /// overrides everything else.
    pub card: Option<ModelCard>,
    /// Input size (width, height) for a graph of free size, overriding the
    /// card's; refused for a graph whose size is fixed and different.
    pub input_size: Option<(u32, u32)>,
    /// Size (width, height) of the frames the model will see, if known: a
    /// card-less graph of free size runs at their aspect.
    pub frame_size: Option<(u32, u32)>,
}

impl LoadOptions {
    /// Options with just a card file (or none).
    pub fn with_card_file(card_file: Option<&Path>) -> LoadOptions {
        LoadOptions {
            card_file: card_file.map(Path::to_path_buf),
            ..LoadOptions::default()
        }
    }
}

/// Where a loaded model's card came from.
#[derive(Debug, Clone, PartialEq)]
pub enum CardSource {
    /// Given by the caller as a value.
    Given,
    /// A card file named by the caller.
    File(PathBuf),
    /// The ONNX file's metadata.
    Metadata,
    /// A sidecar JSON next to the model.
    Sidecar(PathBuf),
    /// None: the defaults of [`assumed`], as recorded.
    Assumed(Assumed),
}

/// A loaded, checked segmentation model, ready to hand to a backend.
#[derive(Debug, Clone)]
pub struct Model {
    path: PathBuf,
    card: ModelCard,
    card_source: CardSource,
    /// Whether the graph leaves the input's height and width free.
    free_size: bool,
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
    /// The graph's inputs as declared (initializers excluded).
    pub inputs: Vec<Declared>,
    /// The graph's outputs as declared.
    pub outputs: Vec<Declared>,
    /// Name, operator and weight shape of every Conv / ConvTranspose node.
    convs: Vec<(String, String, Vec<i64>)>,
}

/// A graph input or output as the ONNX file declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    /// Tensor name.
    pub name: String,
    /// Element type (`f32`, `i64`, ...).
    pub elem: &'static str,
    /// Dimensions: numbers, or the names of free (dynamic) ones.
    pub dims: Vec<String>,
}

impl Declared {
    fn of(value: &tract_onnx::pb::ValueInfoProto) -> Declared {
        use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
        use tract_onnx::pb::type_proto::Value as Type;
        let tensor = value.r#type.as_ref().and_then(|t| match &t.value {
            Some(Type::TensorType(tensor)) => Some(tensor),
            _ => None,
        });
        let dims = tensor
            .and_then(|t| t.shape.as_ref())
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(Dim::DimValue(v)) => v.to_string(),
                        Some(Dim::DimParam(p)) if !p.is_empty() => p.clone(),
                        _ => "?".into(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let elem = match tensor.map(|t| t.elem_type) {
            Some(1) => "f32",
            Some(2) => "u8",
            Some(3) => "i8",
            Some(6) => "i32",
            Some(7) => "i64",
            Some(10) => "f16",
            Some(11) => "f64",
            _ => "?",
        };
        Declared {
            name: value.name.clone(),
            elem,
            dims,
        }
    }

    /// `name f32 1x3xheightxwidth`.
    pub fn describe(&self) -> String {
        let dims = if self.dims.is_empty() {
            "(shape not declared)".to_string()
        } else {
            self.dims.join("x")
        };
        format!("{} {} {dims}", self.name, self.elem)
    }
}

impl GraphSummary {
    /// Reads the summary of any ONNX file, runnable here or not (what
    /// `dla-tools inspect` shows of a model that does not load); `None` if the
    /// bytes are not an ONNX model.
    pub fn read(bytes: &[u8]) -> Option<GraphSummary> {
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut &bytes[..])
            .ok()?;
        let graph = proto.graph.as_ref()?;
        Some(GraphSummary {
            opset: opset(&proto),
            ..GraphSummary::of(graph)
        })
    }

    /// Reads the summary from the ONNX graph.
    fn of(graph: &tract_onnx::pb::GraphProto) -> GraphSummary {
        let weights: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        GraphSummary {
            opset: 0,
            inputs: graph
                .input
                .iter()
                .filter(|i| !weights.contains(i.name.as_str()))
                .map(Declared::of)
                .collect(),
            outputs: graph.output.iter().map(Declared::of).collect(),
            op_histogram: graph.node.iter().fold(Default::default(), |mut h, n| {
                *h.entry(n.op_type.clone()).or_insert(0) += 1;
                h
            }),
            params: graph
                .initializer
                .iter()
                .map(|t| t.dims.iter().product::<i64>().max(0) as u64)
                .sum(),
            convs: graph
                .node
                .iter()
                .filter(|n| n.op_type == "Conv" || n.op_type == "ConvTranspose")
                .filter_map(|n| {
                    let weight = n.input.get(1)?;
                    let init = graph.initializer.iter().find(|t| &t.name == weight)?;
                    Some((n.name.clone(), n.op_type.clone(), init.dims.clone()))
                })
                .collect(),
        }
    }
}

impl Model {
    /// Loads `path`, finds its card (metadata, then sidecar, else the stated
    /// defaults) and checks that it is a 1x3xHxW -> 1xCxH'xW' segmentation
    /// network with only supported operators.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// Like [`Model::load`], with an explicit card file that overrides any other.
    pub fn load_with_card(path: impl AsRef<Path>, card_path: Option<&Path>) -> Result<Model> {
        Self::load_with(path, &LoadOptions::with_card_file(card_path))
    }

    /// Like [`Model::load`], with [`LoadOptions`].
    pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Model> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::Model {
            path: path.to_path_buf(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::from_bytes_with(&bytes, path, options)
    }

    /// Loads a model held in memory (e.g. embedded in a binary); `origin` names
    /// it in errors and locates external weights and sidecar cards.
    pub fn from_bytes(bytes: &[u8], origin: &Path, card_path: Option<&Path>) -> Result<Model> {
        Self::from_bytes_with(bytes, origin, &LoadOptions::with_card_file(card_path))
    }

    /// Like [`Model::from_bytes`], with [`LoadOptions`].
    pub fn from_bytes_with(bytes: &[u8], origin: &Path, options: &LoadOptions) -> Result<Model> {
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
        let found = find_card(&proto, path, options)?;
        let summary = GraphSummary {
            opset: opset(&proto),
            ..GraphSummary::of(graph_proto)
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
        let fixed = shapes::fixed_input_size(&graph).map_err(fail)?;
        let (size, size_from) =
            choose_size(fixed, found.as_ref().map(|(c, _)| c), options).map_err(fail)?;
        let output_shape = shapes::fix_input_and_read_output(&mut graph, size).map_err(fail)?;
        let (card, card_source) = match found {
            Some((mut card, source)) => {
                (card.input.height, card.input.width) = size;
                (card, source)
            }
            None => {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model".into());
                let card = assumed_card(
                    &name,
                    size,
                    output_shape[1],
                    graph_proto.input.first().map(|i| i.name.clone()),
                    graph_proto.output.first().map(|o| o.name.clone()),
                );
                let assumed = Assumed {
                    size: size_from,
                    cityscapes: output_shape[1] == crate::classes::CITYSCAPES.len(),
                };
                (card, CardSource::Assumed(assumed))
            }
        };
        card.validate(path)?;
        shapes::check_output_against_card(output_shape, &card).map_err(fail)?;
        let model = Model {
            path: path.to_path_buf(),
            card,
            card_source,
            free_size: fixed.is_none(),
            graph,
            output_shape,
            summary,
            onnx: bytes.into(),
        };
        if let Some(note) = model.assumed() {
            log::warn!("{note}");
        }
        Ok(model)
    }

    /// Where the card came from.
    pub fn card_source(&self) -> &CardSource {
        &self.card_source
    }

    /// For a model without a card, the one line that says what was assumed
    /// and how to keep or correct it; `None` when it has a card.
    pub fn assumed(&self) -> Option<String> {
        match &self.card_source {
            CardSource::Assumed(a) => {
                Some(a.describe(&self.path.display().to_string(), &self.card))
            }
            _ => None,
        }
    }

    /// Whether the graph leaves the input's height and width free (the card,
    /// `--input-size` or the frames chose the size it runs at).
    pub fn free_size(&self) -> bool {
        self.free_size
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

/// The default domain's operator set version.
fn opset(proto: &tract_onnx::pb::ModelProto) -> i64 {
    proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(0)
}

fn read_card_file(p: &Path) -> Result<ModelCard> {
    let json = std::fs::read_to_string(p).map_err(|e| Error::Card {
        path: p.to_path_buf(),
        reason: format!("cannot read: {e}"),
    })?;
    ModelCard::from_json(&json, p)
}

/// The sidecar card files looked for next to `model`, in order.
pub fn sidecar_paths(model: &Path) -> [PathBuf; 2] {
    [
        PathBuf::from(format!("{}.card.json", model.display())),
        model.with_extension("card.json"),
    ]
}

/// The card the caller gave, the metadata's or a sidecar's; `None` if the
/// model has none.
fn find_card(
    proto: &tract_onnx::pb::ModelProto,
    model: &Path,
    options: &LoadOptions,
) -> Result<Option<(ModelCard, CardSource)>> {
    if let Some(card) = &options.card {
        return Ok(Some((card.clone(), CardSource::Given)));
    }
    if let Some(file) = &options.card_file {
        return Ok(Some((
            read_card_file(file)?,
            CardSource::File(file.clone()),
        )));
    }
    if let Some(entry) = proto
        .metadata_props
        .iter()
        .find(|p| p.key == CARD_METADATA_KEY)
    {
        return Ok(Some((
            ModelCard::from_json(&entry.value, model)?,
            CardSource::Metadata,
        )));
    }
    for sidecar in sidecar_paths(model) {
        if sidecar.is_file() {
            let card = read_card_file(&sidecar)?;
            return Ok(Some((card, CardSource::Sidecar(sidecar))));
        }
    }
    Ok(None)
}

/// The (height, width) to run at, and where it came from: the graph's own
/// size, else `--input-size`, else the card's, else the frames' aspect.
fn choose_size(
    fixed: Option<(usize, usize)>,
    card: Option<&ModelCard>,
    options: &LoadOptions,
) -> std::result::Result<((u32, u32), SizeFrom), String> {
    let asked = options.input_size.map(|(w, h)| (h, w));
    if let Some((h, w)) = fixed {
        let graph = (h as u32, w as u32);
        for (what, size) in [
            ("--input-size", asked),
            (
                "the model card",
                card.map(|c| (c.input.height, c.input.width)),
            ),
        ] {
            if let Some((ah, aw)) = size.filter(|s| *s != graph) {
                return Err(format!(
                    "{what} says {aw}x{ah} (WxH) but the graph's input is fixed at {}x{} \
                     (input must be 1x3x{}x{})",
                    graph.1, graph.0, graph.0, graph.1
                ));
            }
        }
        return Ok((graph, SizeFrom::Graph));
    }
    if let Some(size) = asked {
        return Ok((size, SizeFrom::Asked));
    }
    if let Some(card) = card {
        return Ok(((card.input.height, card.input.width), SizeFrom::Graph));
    }
    let size = size_for_frames(options.frame_size);
    let from = match options.frame_size {
        Some((w, h)) if w > 0 && h > 0 => SizeFrom::FrameAspect(w, h),
        _ => SizeFrom::Default,
    };
    Ok((size, from))
}
