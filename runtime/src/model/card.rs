//! The model card: how to feed a network (size, colour order, normalisation)
//! and how to read it (classes, colours), with the checks a card must pass.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::SIZE_MULTIPLE;
use crate::classes::ClassInfo;
use crate::error::{Error, Result};

/// How the network wants its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Name of the graph input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Always `"logits"` for now: one score per class and pixel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `"input"` when the network up-samples to the input size itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Backbone, e.g. `"dla46_c"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone: Option<String>,
    /// Output stride of the head before its final up-sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub training: serde_json::Value,
    /// Measured quality (free-form: held-out mIoU, per-class IoU ...).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub metrics: serde_json::Value,
    /// Parameter count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<u64>,
    /// Multiply-accumulates (x1e9) at the input size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

    pub(crate) fn validate(&self, origin: &Path) -> Result<()> {
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
