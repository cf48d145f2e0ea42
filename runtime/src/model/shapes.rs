//! The graph's input and output shapes: what a segmentation network must
//! look like to run here (one 1x3xHxW image in, 1xCxH'xW' logits out), and
//! a reason in words for the common shapes that are not that.

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::internal::DimLike;

use super::card::ModelCard;

/// Reads the single input's declared shape, which must be rank 4, channels
/// first: the (height, width) it fixes, or `None` when they are free
/// (symbolic, from an export with dynamic axes, or not declared).
pub(super) fn fixed_input_size(graph: &InferenceModel) -> Result<Option<(usize, usize)>, String> {
    let inputs = graph.input_outlets().map_err(|e| e.to_string())?;
    if inputs.len() != 1 {
        return Err(format!(
            "expected exactly one input (an image), found {}",
            inputs.len()
        ));
    }
    if graph
        .output_outlets()
        .map_err(|e| e.to_string())?
        .is_empty()
    {
        return Err("graph has no outputs".into());
    }
    let fact = graph.outlet_fact(inputs[0]).map_err(|e| e.to_string())?;
    let Some(rank) = fact.shape.rank().concretize() else {
        // Nothing declared: the card (or the defaults) decide.
        return Ok(None);
    };
    if rank != 4 {
        return Err(format!("input has rank {rank}; expected 1x3xHxW"));
    }
    let dims: Vec<Option<usize>> = fact
        .shape
        .dims()
        .map(|d| d.concretize().and_then(|d| d.to_usize().ok()))
        .collect();
    if dims[1] != Some(3) && dims[3] == Some(3) {
        return Err(format!(
            "input is {} (channels last, NHWC); dla-edge feeds 1x3xHxW (NCHW): \
             export with the channels first",
            show(&dims)
        ));
    }
    for (axis, want) in [(0, 1), (1, 3)] {
        if let Some(got) = dims[axis].filter(|got| *got != want) {
            let what = ["batch", "channels"][axis];
            return Err(format!(
                "input {what} is {got}, expected {want} (the input is {}; it must be 1x3xHxW)",
                show(&dims)
            ));
        }
    }
    Ok(dims[2].zip(dims[3]))
}

/// Fixes the input to 1x3xHxW (`size` = (height, width)), keeps the first
/// output only, and returns its shape, which must be 1xCxH'xW' logits.
pub(super) fn fix_input_and_read_output(
    graph: &mut InferenceModel,
    (h, w): (u32, u32),
) -> Result<[usize; 4], String> {
    let (h, w) = (h as usize, w as usize);
    graph
        .set_input_fact(0, f32::fact([1, 3, h, w]).into())
        .map_err(|e| e.to_string())?;
    let outputs = graph.output_outlets().map_err(|e| e.to_string())?.to_vec();
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
    let is_int = out_fact.datum_type.is_integer();
    check_output_kind(&out, is_int, (h, w))?;
    Ok([out[0], out[1], out[2], out[3]])
}

/// Refuses, with the reason, outputs that are not 1xCxH'xW' float logits.
fn check_output_kind(out: &[usize], is_int: bool, (h, w): (usize, usize)) -> Result<(), String> {
    let shape = out
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x");
    let fits = |oh: usize, ow: usize| oh > 0 && ow > 0 && oh <= h && ow <= w;
    let class_ids = (out.len() == 3 && out[0] == 1 && fits(out[1], out[2]))
        || (out.len() == 4 && out[0] == 1 && out[1] == 1 && is_int);
    if class_ids || is_int {
        return Err(format!(
            "the output is {shape} class IDs (an ArgMax at the end of the graph); dla-edge \
             needs the per-class scores (1xCxHxW logits) to resize and colour them: export \
             the model without its final argmax"
        ));
    }
    if out.len() != 4 || out[0] != 1 {
        return Err(format!("output shape is {shape}; expected 1xCxHxW logits"));
    }
    // The input's aspect, give or take a pixel of rounding at the output's scale.
    let aspect = |oh: usize, ow: usize| fits(oh, ow) && (oh * w).abs_diff(ow * h) <= h.max(w);
    if !aspect(out[2], out[3]) && aspect(out[1], out[2]) && out[3] <= 255 {
        return Err(format!(
            "the output is {shape}, channels last (NHWC); dla-edge reads 1xCxHxW (NCHW) \
             logits: export them channels first (or end the graph with Transpose 0,3,1,2)"
        ));
    }
    if !fits(out[2], out[3]) {
        return Err(format!(
            "output spatial size {}x{} does not fit input {h}x{w}",
            out[2], out[3]
        ));
    }
    if out[1] == 0 || out[1] > 255 {
        return Err(format!(
            "the output has {} channels; expected 1 to 255 classes",
            out[1]
        ));
    }
    Ok(())
}

/// The output's channel count must match the card's classes.
pub(super) fn check_output_against_card(out: [usize; 4], card: &ModelCard) -> Result<(), String> {
    if out[1] != card.classes.len() {
        return Err(format!(
            "output has {} channels but the model card lists {} classes",
            out[1],
            card.classes.len()
        ));
    }
    Ok(())
}

fn show(dims: &[Option<usize>]) -> String {
    dims.iter()
        .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
        .collect::<Vec<_>>()
        .join("x")
}
