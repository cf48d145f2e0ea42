//! Reading, editing and writing ONNX graphs through tract-onnx's protobuf
//! types (prost): quantize and prune rewrite nodes and initialisers, never bytes.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use prost::Message;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, ModelProto,
    NodeProto, StringStringEntryProto, TensorProto,
};

/// Reads an ONNX model file.
pub fn load(path: &Path) -> anyhow::Result<ModelProto> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.is_empty() {
        bail!("{}: file is empty (expected an ONNX model)", path.display());
    }
    let mut model = ModelProto::decode(&bytes[..])
        .with_context(|| format!("{}: not a valid ONNX file", path.display()))?;
    if model.graph.as_ref().is_none_or(|g| g.node.is_empty()) {
        bail!("{}: the ONNX file has no graph nodes", path.display());
    }
    inline_external_data(&mut model, path)?;
    Ok(model)
}

/// Reads weights stored beside the model (`torch.onnx.export`'s default for
/// its new exporter: `model.onnx.data`) into the model, so the tools edit one
/// self-contained graph and what they write needs no companion file.
fn inline_external_data(model: &mut ModelProto, path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let Some(graph) = model.graph.as_mut() else {
        return Ok(());
    };
    for t in &mut graph.initializer {
        if t.data_location != Some(1) && t.external_data.is_empty() {
            continue;
        }
        let field = |key: &str| {
            t.external_data
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.clone())
        };
        let location = field("location").with_context(|| {
            format!(
                "initializer {:?} is stored outside the model but names no file",
                t.name
            )
        })?;
        let number = |key: &str| -> anyhow::Result<Option<usize>> {
            field(key)
                .map(|v| v.parse::<usize>())
                .transpose()
                .with_context(|| format!("initializer {:?}: bad external {key}", t.name))
        };
        let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
        let file = dir.join(&location);
        if !files.contains_key(&location) {
            let bytes = std::fs::read(&file).with_context(|| {
                format!(
                    "{}: its weights are in {}, which cannot be read (keep it next to the model)",
                    path.display(),
                    file.display()
                )
            })?;
            files.insert(location.clone(), bytes);
        }
        let bytes = &files[&location];
        let end = length.map_or(bytes.len(), |l| offset + l);
        let Some(data) = bytes.get(offset..end) else {
            bail!(
                "{}: initializer {:?} lies past the end of {}",
                path.display(),
                t.name,
                file.display()
            );
        };
        t.raw_data = data.to_vec();
        t.external_data.clear();
        t.data_location = None;
    }
    Ok(())
}

/// Serialises a model to bytes.
pub fn to_bytes(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// The graph of a model that [`load`] checked has one.
pub fn graph(model: &ModelProto) -> &GraphProto {
    model.graph.as_ref().expect("checked at load")
}

/// Mutable graph of a model that [`load`] checked has one.
pub fn graph_mut(model: &mut ModelProto) -> &mut GraphProto {
    model.graph.as_mut().expect("checked at load")
}

/// Sets (or replaces) a `metadata_props` entry.
pub fn set_metadata(model: &mut ModelProto, key: &str, value: String) {
    model.metadata_props.retain(|p| p.key != key);
    model.metadata_props.push(StringStringEntryProto {
        key: key.to_string(),
        value,
    });
}

/// A float initializer's shape and values (raw or typed storage).
pub fn tensor_f32(t: &TensorProto) -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
    if t.data_type != DataType::Float as i32 {
        bail!(
            "initializer {:?} has ONNX data type {}; expected float32",
            t.name,
            t.data_type
        );
    }
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        bail!(
            "initializer {:?} is stored outside the model file; re-export with weights inside",
            t.name
        );
    }
    let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let n: usize = dims.iter().product();
    let values: Vec<f32> = if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        t.float_data.clone()
    };
    if values.len() != n {
        bail!(
            "initializer {:?}: {} values for shape {:?}",
            t.name,
            values.len(),
            dims
        );
    }
    Ok((dims, values))
}

fn raw_tensor(name: &str, dims: &[usize], data_type: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type as i32,
        raw_data: raw,
        ..Default::default()
    }
}

/// A float32 initializer.
pub fn f32_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    raw_tensor(name, dims, DataType::Float, raw)
}

/// An int8 initializer.
pub fn i8_tensor(name: &str, dims: &[usize], values: &[i8]) -> TensorProto {
    let raw = values.iter().map(|&v| v as u8).collect();
    raw_tensor(name, dims, DataType::Int8, raw)
}

/// A uint8 initializer.
pub fn u8_tensor(name: &str, dims: &[usize], values: &[u8]) -> TensorProto {
    raw_tensor(name, dims, DataType::Uint8, values.to_vec())
}

/// An int32 initializer.
pub fn i32_tensor(name: &str, dims: &[usize], values: &[i32]) -> TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    raw_tensor(name, dims, DataType::Int32, raw)
}

/// A node of the default ONNX domain.
pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.to_string(),
        name: name.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

/// The integer attribute `name` of a node, if present.
pub fn int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// Index of initializers by name.
pub fn initializers(graph: &GraphProto) -> HashMap<&str, &TensorProto> {
    graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect()
}

/// For each tensor name, the indices of the nodes that read it.
pub fn consumers(graph: &GraphProto) -> HashMap<String, Vec<usize>> {
    let mut map: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for input in n.input.iter().filter(|s| !s.is_empty()) {
            map.entry(input.clone()).or_default().push(i);
        }
    }
    map
}

/// A float tensor's name and shape, as graph inputs and outputs declare them.
#[cfg(test)]
pub fn value_info(name: &str, dims: &[i64]) -> tract_onnx::pb::ValueInfoProto {
    use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
    use tract_onnx::pb::{type_proto, TensorShapeProto, TypeProto, ValueInfoProto};
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            denotation: String::new(),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_through_raw_storage() {
        let t = f32_tensor("w", &[2, 2], &[1.0, -2.5, 3.25, 0.0]);
        let (dims, values) = tensor_f32(&t).unwrap();
        assert_eq!(dims, vec![2, 2]);
        assert_eq!(values, vec![1.0, -2.5, 3.25, 0.0]);
        let typed = TensorProto {
            name: "v".into(),
            dims: vec![3],
            data_type: DataType::Float as i32,
            float_data: vec![1.0, 2.0, 3.0],
            ..Default::default()
        };
        assert_eq!(tensor_f32(&typed).unwrap().1, vec![1.0, 2.0, 3.0]);
        assert!(tensor_f32(&i8_tensor("q", &[1], &[1])).is_err());
        let bad = TensorProto {
            dims: vec![4],
            ..typed
        };
        assert!(tensor_f32(&bad).is_err());
    }
}
