//! The graph ONNX Runtime runs when it takes the argmax itself: the model with
//! one more output, `dla_edge_labels = Cast<uint8>(ArgMax(logits, axis 1))`.
//!
//! Why in the graph: on a GPU the logits then stay in device memory and only
//! one byte per pixel is copied back (128 KiB instead of 10 MiB per frame for
//! 19 classes at 512x256), and the argmax runs on the GPU instead of the
//! board's CPU. CUDA has kernels for both nodes (ArgMax for float, Cast to
//! uint8); TensorRT takes them or leaves them to CUDA. ONNX Runtime only runs
//! the nodes a run's bound outputs need, so one session serves both a
//! logits run and a labels run.

use prost::Message;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::{
    attribute_proto::AttributeType, type_proto, AttributeProto, ModelProto, NodeProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Name of the added output: class IDs, `uint8[1, height, width]`.
pub(super) const LABELS_OUTPUT: &str = "dla_edge_labels";

/// ONNX's `TensorProto.DataType` codes used here.
const UINT8: i32 = 2;
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

/// `onnx` with the labels output added after its first output (the logits,
/// `[1, classes, height, width]`), or why that cannot be done for this model.
pub(super) fn with_labels_output(
    onnx: &[u8],
    classes: usize,
    height: usize,
    width: usize,
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
    let argmax_out = format!("{LABELS_OUTPUT}_i64");
    let taken = |name: &str| {
        graph.output.iter().any(|o| o.name == name)
            || graph
                .node
                .iter()
                .any(|n| n.output.iter().any(|o| o == name))
    };
    if taken(LABELS_OUTPUT) || taken(&argmax_out) {
        return Err(format!(
            "the graph already has a tensor named {LABELS_OUTPUT:?}"
        ));
    }
    graph.node.push(NodeProto {
        op_type: "ArgMax".into(),
        name: format!("{LABELS_OUTPUT}_argmax"),
        input: vec![logits],
        output: vec![argmax_out.clone()],
        attribute: vec![int_attribute("axis", 1), int_attribute("keepdims", 0)],
        ..Default::default()
    });
    graph.node.push(NodeProto {
        op_type: "Cast".into(),
        name: format!("{LABELS_OUTPUT}_cast"),
        input: vec![argmax_out],
        output: vec![LABELS_OUTPUT.into()],
        attribute: vec![int_attribute("to", UINT8 as i64)],
        ..Default::default()
    });
    let dim = |d: usize| Dimension {
        value: Some(dimension::Value::DimValue(d as i64)),
        ..Default::default()
    };
    graph.output.push(ValueInfoProto {
        name: LABELS_OUTPUT.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: UINT8,
                shape: Some(TensorShapeProto {
                    dim: vec![dim(1), dim(height), dim(width)],
                }),
            })),
            denotation: String::new(),
        }),
        ..Default::default()
    });
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
        let bytes = with_labels_output(&tiny(), 19, 64, 64).unwrap();
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
    }

    #[test]
    fn refuses_what_it_cannot_express() {
        let err = with_labels_output(&tiny(), 300, 64, 64).unwrap_err();
        assert!(err.contains("300 classes"), "{err}");
        let twice = with_labels_output(&tiny(), 19, 64, 64).unwrap();
        let err = with_labels_output(&twice, 19, 64, 64).unwrap_err();
        assert!(err.contains("already has"), "{err}");
        let err = with_labels_output(b"not onnx", 19, 64, 64).unwrap_err();
        assert!(err.contains("decode"), "{err}");
    }
}
