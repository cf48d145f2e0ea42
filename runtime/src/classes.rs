//! Class tables shared by the synthetic data generator, the model card and the
//! colouriser. Cityscapes `trainId`s are the lingua franca of street-scene
//! segmentation, so the shipped model and the generator both speak them.

/// Label value that marks pixels to be ignored by training and evaluation.
pub const IGNORE_LABEL: u8 = 255;

/// One class of a segmentation model: its output channel, name and display colour.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClassInfo {
    /// Output channel of the model (and value in label PNGs).
    pub id: u8,
    /// Human-readable name, e.g. `"car"`.
    pub name: String,
    /// RGB colour used for masks and overlays.
    pub color: [u8; 3],
}

/// The 19 Cityscapes evaluation classes (trainIds 0..=18) with the standard palette.
pub const CITYSCAPES: [(&str, [u8; 3]); 19] = [
    ("road", [128, 64, 128]),
    ("sidewalk", [244, 35, 232]),
    ("building", [70, 70, 70]),
    ("wall", [102, 102, 156]),
    ("fence", [190, 153, 153]),
    ("pole", [153, 153, 153]),
    ("traffic light", [250, 170, 30]),
    ("traffic sign", [220, 220, 0]),
    ("vegetation", [107, 142, 35]),
    ("terrain", [152, 251, 152]),
    ("sky", [70, 130, 180]),
    ("person", [220, 20, 60]),
    ("rider", [255, 0, 0]),
    ("car", [0, 0, 142]),
    ("truck", [0, 0, 70]),
    ("bus", [0, 60, 100]),
    ("train", [0, 80, 100]),
    ("motorcycle", [0, 0, 230]),
    ("bicycle", [119, 11, 32]),
];

/// The Cityscapes classes as owned [`ClassInfo`]s.
pub fn cityscapes_classes() -> Vec<ClassInfo> {
    CITYSCAPES
        .iter()
        .enumerate()
        .map(|(id, (name, color))| ClassInfo {
            id: id as u8,
            name: (*name).to_string(),
            color: *color,
        })
        .collect()
}

/// Cityscapes trainIds used by the synthetic generator, by name.
pub mod train_id {
    #![allow(missing_docs)]
    pub const ROAD: u8 = 0;
    pub const SIDEWALK: u8 = 1;
    pub const BUILDING: u8 = 2;
    pub const WALL: u8 = 3;
    pub const FENCE: u8 = 4;
    pub const POLE: u8 = 5;
    pub const TRAFFIC_LIGHT: u8 = 6;
    pub const TRAFFIC_SIGN: u8 = 7;
    pub const VEGETATION: u8 = 8;
    pub const TERRAIN: u8 = 9;
    pub const SKY: u8 = 10;
    pub const PERSON: u8 = 11;
    pub const CAR: u8 = 13;
}
