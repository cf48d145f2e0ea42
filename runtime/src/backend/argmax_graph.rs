//! The graph ONNX Runtime runs when it takes the argmax itself: the model with
//! one more output, `dla_edge_labels = Cast<uint8>(ArgMax(logits, axis 1))`,
//! and optionally a second one at any frame size,
//! `dla_edge_frame_labels = Cast<uint8>(ArgMax(Resize(logits, sizes)))`, with
//! `sizes` a new int64 input `[1, classes, height, width]`: bilinear with
//! half-pixel centres and clamped edges, as our own `bilinear_argmax`.
//!
//! Why in the graph: on a GPU the logits then stay in device memory and only
//! one byte per pixel is copied back (128 KiB instead of 10 MiB per frame for
//! 19 classes at 512x256), and the argmax runs on the GPU instead of the
//! board's CPU. CUDA has kernels for all three nodes (ArgMax and Resize for
//! float, Cast to uint8); TensorRT takes them or leaves them to CUDA. ONNX
//! Runtime only runs the nodes a run's bound outputs need, so one session
//! serves a logits run and both kinds of labels run.

use prost::Message;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::{
    attribute_proto::AttributeType, type_proto, AttributeProto, ModelProto, NodeProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Name of the added output: class IDs, `uint8[1, height, width]`.
pub(super) const LABELS_OUTPUT: &str = "dla_edge_labels";
/// Name of the frame-size output: class IDs, `uint8[1, frame height, frame width]`.
pub(super) const FRAME_LABELS_OUTPUT: &str = "dla_edge_frame_labels";
/// Name of the frame-size input: int64 `[1, classes, frame height, frame width]`.
pub(super) const FRAME_SIZE_INPUT: &str = "dla_edge_frame_size";

/// ONNX's `TensorProto.DataType` codes used here.
const FLOAT: i32 = 1;
const UINT8: i32 = 2;
const INT64: i32 = 7;
/// `TensorProto.DataLocation.EXTERNAL`: weights in a separate file.
const EXTERNAL: i32 = 1;

fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

fn string_attribute(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A graph input or output: a tensor of `elem_type` with fixed (`Ok`) or
/// named (`Err`) dimensions.
fn tensor_info(name: &str, elem_type: i32, dims: &[Result<usize, &str>]) -> ValueInfoProto {
    let dim = |d: &Result<usize, &str>| Dimension {
        value: Some(match d {
            Ok(n) => dimension::Value::DimValue(*n as i64),
            Err(param) => dimension::Value::DimParam(param.to_string()),
        }),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type,
                shape: Some(TensorShapeProto {
                    dim: dims.iter().map(dim).collect(),
                }),
            })),
            denotation: String::new(),
        }),
        ..Default::default()
    }
}

/// `output = Cast<uint8>(ArgMax(input, axis 1))`, nodes named after `output`.
fn argmax_nodes(input: &str, output: &str) -> [NodeProto; 2] {
    let index = format!("{output}_i64");
    [
        NodeProto {
            op_type: "ArgMax".into(),
            name: format!("{output}_argmax"),
            input: vec![input.into()],
            output: vec![index.clone()],
            attribute: vec![int_attribute("axis", 1), int_attribute("keepdims", 0)],
            ..Default::default()
        },
        NodeProto {
            op_type: "Cast".into(),
            name: format!("{output}_cast"),
            input: vec![index],
            output: vec![output.into()],
            attribute: vec![int_attribute("to", UINT8 as i64)],
            ..Default::default()
        },
    ]
}

/// `onnx` with the labels output added after its first output (the logits,
/// `[1, classes, height, width]`), and with `frame_size` the frame-size input
/// and output too, or why that cannot be done for this model.
pub(super) fn with_labels_output(
    onnx: &[u8],
    classes: usize,
    height: usize,
    width: usize,
    frame_size: bool,
) -> Result<Vec<u8>, String> {
    if classes > 256 {
        return Err(format!("{classes} classes do not fit a one-byte label map"));
    }
    let mut model = ModelProto::decode(onnx).map_err(|e| format!("cannot decode: {e}"))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(0);
    if opset < 6 {
        return Err(format!(
            "opset {opset} is older than Cast's attribute form (6)"
        ));
    }
    if frame_size && opset < 11 {
        return Err(format!(
            "opset {opset} is older than Resize with sizes (11)"
        ));
    }
    let graph = model.graph.as_mut().ok_or("the file has no graph")?;
    if graph
        .initializer
        .iter()
        .any(|t| t.data_location == Some(EXTERNAL))
    {
        return Err(
            "its weights are in external files, which a graph loaded from memory cannot find"
                .into(),
        );
    }
    let logits = graph
        .output
        .first()
        .map(|o| o.name.clone())
        .ok_or("the graph has no output")?;
    // Every name added here starts with "dla_edge_": refuse a graph that
    // already uses that prefix rather than wire into its tensors.
    let taken = graph
        .input
        .iter()
        .chain(&graph.output)
        .map(|v| &v.name)
        .chain(graph.node.iter().flat_map(|n| &n.output))
        .chain(graph.initializer.iter().map(|t| &t.name))
        .find(|name| name.starts_with("dla_edge_"));
    if let Some(name) = taken {
        return Err(format!(
            "the graph already has a tensor named {name:?} (the prefix of the added ones)"
        ));
    }
    graph.node.extend(argmax_nodes(&logits, LABELS_OUTPUT));
    graph.output.push(tensor_info(
        LABELS_OUTPUT,
        UINT8,
        &[Ok(1), Ok(height), Ok(width)],
    ));
    if frame_size {
        // Resize's roi and scales are unused with sizes; empty tensors are
        // valid from opset 11 (leaving the names empty only from 13).
        let (roi, scales) = ("dla_edge_roi", "dla_edge_scales");
        for name in [roi, scales] {
            graph.initializer.push(TensorProto {
                name: name.into(),
                data_type: FLOAT,
                dims: vec![0],
                ..Default::default()
            });
        }
        let resized = "dla_edge_frame_logits";
        graph.node.push(NodeProto {
            op_type: "Resize".into(),
            name: resized.into(),
            input: vec![logits, roi.into(), scales.into(), FRAME_SIZE_INPUT.into()],
            output: vec![resized.into()],
            attribute: vec![
                string_attribute("mode", "linear"),
                string_attribute("coordinate_transformation_mode", "half_pixel"),
            ],
            ..Default::default()
        });
        graph
            .node
            .extend(argmax_nodes(resized, FRAME_LABELS_OUTPUT));
        graph
            .input
            .push(tensor_info(FRAME_SIZE_INPUT, INT64, &[Ok(4)]));
        graph.output.push(tensor_info(
            FRAME_LABELS_OUTPUT,
            UINT8,
            &[Ok(1), Err("frame_height"), Err("frame_width")],
        ));
    }
    Ok(model.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tiny() -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny_seg.onnx");
        std::fs::read(path).unwrap()
    }

    #[test]
    fn adds_argmax_and_cast_after_the_logits() {
        let bytes = with_labels_output(&tiny(), 19, 64, 64, false).unwrap();
        let model = ModelProto::decode(&bytes[..]).unwrap();
        let graph = model.graph.unwrap();
        let logits = &graph.output[0].name;
        let argmax = &graph.node[graph.node.len() - 2];
        assert_eq!(
            (argmax.op_type.as_str(), &argmax.input[0]),
            ("ArgMax", logits)
        );
        let cast = graph.node.last().unwrap();
        assert_eq!(cast.op_type, "Cast");
        assert_eq!(cast.input[0], argmax.output[0]);
        assert_eq!(graph.output.last().unwrap().name, LABELS_OUTPUT);
        assert_eq!(graph.input.len(), 1, "no frame-size input unless asked");

        let bytes = with_labels_output(&tiny(), 19, 64, 64, true).unwrap();
        let graph = ModelProto::decode(&bytes[..]).unwrap().graph.unwrap();
        let resize = graph.node.iter().find(|n| n.op_type == "Resize").unwrap();
        assert_eq!(
            (&resize.input[0], resize.input[3].as_str()),
            (logits, FRAME_SIZE_INPUT)
        );
        assert_eq!(graph.input.last().unwrap().name, FRAME_SIZE_INPUT);
        assert_eq!(graph.output.last().unwrap().name, FRAME_LABELS_OUTPUT);
    }

    #[test]
    fn refuses_what_it_cannot_express() {
        let err = with_labels_output(&tiny(), 300, 64, 64, false).unwrap_err();
        assert!(err.contains("300 classes"), "{err}");
        let twice = with_labels_output(&tiny(), 19, 64, 64, true).unwrap();
        let err = with_labels_output(&twice, 19, 64, 64, false).unwrap_err();
        assert!(err.contains("already has"), "{err}");
        let err = with_labels_output(b"not onnx", 19, 64, 64, false).unwrap_err();
        assert!(err.contains("decode"), "{err}");
    }
}
