//! What we assume for a model that comes without a card: most segmentation
//! networks people export from PyTorch take RGB in [0, 1] normalised with
//! ImageNet's mean and std, and a 19-channel output is almost always
//! Cityscapes. Every assumption is recorded, so the one warning line (and
//! `dla-tools inspect`) can say exactly what was assumed.

use std::fmt;

use super::card::{InputSpec, ModelCard, OutputSpec};
use super::SIZE_MULTIPLE;
use crate::classes::{cityscapes_classes, ClassInfo};

/// ImageNet's per-channel mean (RGB), what torchvision's backbones expect.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel standard deviation (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The widest input chosen for a graph of free size when nothing says
/// otherwise: DLA-tiny's width, fast enough on a Pi.
pub const MAX_DEFAULT_WIDTH: u32 = 512;

/// Where the input size of a card-less model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeFrom {
    /// The graph fixes it.
    Graph,
    /// The graph leaves it free; the caller asked for it (`--input-size`).
    Asked,
    /// The graph leaves it free; chosen from the frames' aspect (WxH).
    FrameAspect(u32, u32),
    /// The graph leaves it free and nothing hinted at a size.
    Default,
}

/// What a card-less model was loaded with, beyond what its graph says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assumed {
    /// Where the input size came from.
    pub size: SizeFrom,
    /// Whether the classes are Cityscapes' (19 output channels) rather than
    /// numbered ones.
    pub cityscapes: bool,
}

/// The card assumed for a model without one: `name`, input `(height, width)`,
/// `classes` output channels and the graph's tensor names.
pub fn assumed_card(
    name: &str,
    (height, width): (u32, u32),
    classes: usize,
    input_name: Option<String>,
    output_name: Option<String>,
) -> ModelCard {
    ModelCard {
        schema: 1,
        name: name.to_string(),
        architecture: None,
        backbone: None,
        down_ratio: None,
        input: InputSpec {
            name: input_name,
            height,
            width,
            color: "RGB".into(),
            layout: "NCHW".into(),
            scale: 255.0,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        },
        output: OutputSpec {
            name: output_name,
            kind: Some("logits".into()),
            resolution: None,
        },
        classes: default_classes(classes),
        ignore_index: crate::classes::IGNORE_LABEL,
        training: serde_json::Value::Null,
        metrics: serde_json::Value::Null,
        params: None,
        gmac: None,
    }
}

/// Cityscapes' classes for 19 channels, otherwise `class 0 .. class N-1` in
/// colours spread around the hue circle (golden-angle steps, so neighbours
/// differ however many there are).
pub fn default_classes(n: usize) -> Vec<ClassInfo> {
    if n == crate::classes::CITYSCAPES.len() {
        return cityscapes_classes();
    }
    (0..n.min(255))
        .map(|i| ClassInfo {
            id: i as u8,
            name: format!("class {i}"),
            color: spread_colour(i),
        })
        .collect()
}

/// The `i`-th of a sequence of distinct, saturated colours.
fn spread_colour(i: usize) -> [u8; 3] {
    let hue = (i as f32 * 137.507_77) % 360.0;
    // Alternate the brightness too, so far-apart hues that look alike on a
    // mask (two greens) still differ.
    let value = if i.is_multiple_of(2) { 0.95 } else { 0.7 };
    hsv_to_rgb(hue, 0.75, value)
}

fn hsv_to_rgb(hue: f32, s: f32, v: f32) -> [u8; 3] {
    let c = v * s;
    let x = c * (1.0 - ((hue / 60.0) % 2.0 - 1.0).abs());
    let m = v - c;
    let (r, g, b) = match (hue / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    [r, g, b].map(|ch| ((ch + m) * 255.0).round() as u8)
}

/// The input size (height, width) for a graph of free size, given frames of
/// `frame` (WxH): the frame's aspect at most [`MAX_DEFAULT_WIDTH`] wide, both
/// sides rounded to multiples of [`SIZE_MULTIPLE`]. Without frames, 512x256.
pub fn size_for_frames(frame: Option<(u32, u32)>) -> (u32, u32) {
    let Some((fw, fh)) = frame.filter(|(w, h)| *w > 0 && *h > 0) else {
        return (MAX_DEFAULT_WIDTH / 2, MAX_DEFAULT_WIDTH);
    };
    let round = |v: f64| ((v / SIZE_MULTIPLE as f64).round() as u32).max(1) * SIZE_MULTIPLE;
    let width = round((fw as f64).min(MAX_DEFAULT_WIDTH as f64));
    let height = round(width as f64 * fh as f64 / fw as f64);
    (height, width)
}

impl fmt::Display for SizeFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeFrom::Graph => f.write_str("from the graph"),
            SizeFrom::Asked => f.write_str("free in the graph; as asked"),
            SizeFrom::FrameAspect(w, h) => write!(
                f,
                "free in the graph; the {w}x{h} frames' aspect, at most {MAX_DEFAULT_WIDTH} wide"
            ),
            SizeFrom::Default => f.write_str("free in the graph; the default"),
        }
    }
}

impl Assumed {
    /// The one line that says what a card-less model was loaded with, and how
    /// to keep (or correct) it.
    pub fn describe(&self, model: &str, card: &ModelCard) -> String {
        let classes = if self.cityscapes {
            "the 19 Cityscapes classes (19 output channels)".to_string()
        } else {
            format!("{} numbered classes", card.classes.len())
        };
        format!(
            "{model} has no model card, so dla-edge assumed: input {}x{} ({}), RGB scaled by \
             1/255 with ImageNet mean/std, {classes}. To keep or correct this: \
             dla-tools card {model} [--classes FILE|cityscapes|N] [--mean ..] [--std ..] [--size WxH]",
            card.input.width, card.input.height, self.size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_sizes_follow_the_frames_aspect_in_multiples_of_32() {
        assert_eq!(size_for_frames(None), (256, 512));
        assert_eq!(size_for_frames(Some((1280, 720))), (288, 512));
        assert_eq!(size_for_frames(Some((640, 480))), (384, 512));
        // Small frames are not blown up; odd ones round to the nearest 32.
        assert_eq!(size_for_frames(Some((300, 200))), (192, 288));
        // Portrait, and degenerate strips, stay at least 32 on each side.
        assert_eq!(size_for_frames(Some((480, 640))), (640, 480));
        assert_eq!(size_for_frames(Some((2000, 10))), (32, 512));
        assert_eq!(size_for_frames(Some((0, 10))), (256, 512));
    }

    #[test]
    fn nineteen_channels_are_cityscapes_other_counts_get_distinct_colours() {
        let city = default_classes(19);
        assert_eq!(city[13].name, "car");
        let seven = default_classes(7);
        assert_eq!(seven.len(), 7);
        assert_eq!(seven[3].name, "class 3");
        assert_eq!(seven[3].id, 3);
        let many = default_classes(150);
        let distinct: std::collections::HashSet<_> = many.iter().map(|c| c.color).collect();
        assert_eq!(distinct.len(), 150, "every class gets its own colour");
    }
}
