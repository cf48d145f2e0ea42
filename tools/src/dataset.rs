//! Image sets for eval, calibration and pruning: a directory in one of the
//! layouts users have, or synthetic scenes made on the fly.
//!
//! Layouts, detected in this order:
//! ```text
//! synth:N[:SEED]                 N generated scenes at the model's input size
//! DIR/images/* + DIR/labels/*    `dla-tools synth` output (labels matched by file stem)
//! DIR/leftImg8bit/**/X_leftImg8bit.png + DIR/gtFine/**/X_gtFine_labelTrainIds.png
//!                                Cityscapes, with trainId label PNGs
//! DIR/*.png|jpg|jpeg             any images, unlabelled (enough for calibration)
//! FILE                           one image
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use dla_runtime::source::{read_rgb8, RgbImage};
use dla_runtime::synth::SynthGenerator;

/// Default seed of `synth:N`: different from the training (1), held-out (2)
/// and sample (3) seeds, so calibration never sees evaluation scenes.
pub const DEFAULT_SYNTH_SEED: u64 = 4;

/// One image and, when the data has them, its trainId labels.
pub struct Sample {
    /// File name (or `synth-<i>`), for reports and errors.
    pub name: String,
    /// RGB8 pixels.
    pub image: RgbImage,
    /// Row-major trainIds at the image's size, 255 = ignore.
    pub labels: Option<Vec<u8>>,
}

enum Item {
    File {
        image: PathBuf,
        labels: Option<PathBuf>,
    },
    Synth {
        generator: SynthGenerator,
        index: u64,
    },
}

/// An ordered list of samples, loaded one at a time so large sets fit in memory.
pub struct Dataset {
    spec: String,
    items: Vec<Item>,
}

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp"];

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn sorted_images(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.is_file() && is_image(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn walk_images(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk_images(&path, out)?;
        } else if is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses `synth:N` or `synth:N:SEED`; `None` when `spec` is not a synth spec.
fn parse_synth(spec: &str) -> Option<anyhow::Result<(u64, u64)>> {
    let rest = spec.strip_prefix("synth:")?;
    let mut parts = rest.split(':');
    let parse = |what: &str, v: Option<&str>| -> anyhow::Result<Option<u64>> {
        v.map(|v| {
            v.parse::<u64>().with_context(|| {
                format!(
                    "{spec:?}: {what} must be a whole number (expected synth:N or synth:N:SEED)"
                )
            })
        })
        .transpose()
    };
    Some((|| {
        let count = parse("N", parts.next())?.unwrap_or(0);
        let seed = parse("SEED", parts.next())?.unwrap_or(DEFAULT_SYNTH_SEED);
        if parts.next().is_some() {
            bail!("{spec:?}: expected synth:N or synth:N:SEED");
        }
        if count == 0 {
            bail!("{spec:?}: N must be at least 1");
        }
        Ok((count, seed))
    })())
}

impl Dataset {
    /// Opens `spec` (see the module docs); synthetic scenes are made at `size` (width, height).
    pub fn open(spec: &str, size: (u32, u32)) -> anyhow::Result<Dataset> {
        if let Some(parsed) = parse_synth(spec) {
            let (count, seed) = parsed?;
            let generator = SynthGenerator::new(seed, size.0, size.1);
            return Ok(Dataset {
                spec: spec.to_string(),
                items: (0..count)
                    .map(|index| Item::Synth { generator, index })
                    .collect(),
            });
        }
        let path = Path::new(spec);
        if !path.exists() {
            bail!("{spec}: no such file or directory (expected an image directory, an image or synth:N)");
        }
        let items = if path.is_file() {
            if !is_image(path) {
                bail!("{spec}: not an image (expected .png, .jpg, .jpeg or .bmp)");
            }
            vec![Item::File {
                image: path.to_path_buf(),
                labels: None,
            }]
        } else if path.join("images").is_dir() {
            let labels_dir = path.join("labels");
            sorted_images(&path.join("images"))?
                .into_iter()
                .map(|image| {
                    let labels = image
                        .file_stem()
                        .map(|stem| labels_dir.join(stem).with_extension("png"))
                        .filter(|l| l.is_file());
                    Item::File { image, labels }
                })
                .collect()
        } else if path.join("leftImg8bit").is_dir() {
            let mut images = Vec::new();
            walk_images(&path.join("leftImg8bit"), &mut images)?;
            images
                .into_iter()
                .map(|image| {
                    let labels = cityscapes_label(path, &image).filter(|l| l.is_file());
                    Item::File { image, labels }
                })
                .collect()
        } else {
            sorted_images(path)?
                .into_iter()
                .map(|image| Item::File {
                    image,
                    labels: None,
                })
                .collect()
        };
        if items.is_empty() {
            bail!("{spec}: no images found (looked for .png/.jpg/.jpeg/.bmp in it, in images/ and in leftImg8bit/)");
        }
        Ok(Dataset {
            spec: spec.to_string(),
            items,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// What the user passed, for reports.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// Keeps only the first `n` samples.
    pub fn truncate(&mut self, n: usize) {
        self.items.truncate(n);
    }

    /// True when every sample has labels.
    pub fn labelled(&self) -> bool {
        self.items.iter().all(|i| match i {
            Item::File { labels, .. } => labels.is_some(),
            Item::Synth { .. } => true,
        })
    }

    /// Loads sample `i`; errors name the file and what was wrong with it.
    pub fn load(&self, i: usize) -> anyhow::Result<Sample> {
        match &self.items[i] {
            Item::Synth { generator, index } => {
                let f = generator.frame(*index);
                Ok(Sample {
                    name: format!("synth-{index}"),
                    image: RgbImage {
                        width: f.width,
                        height: f.height,
                        data: f.rgb,
                    },
                    labels: Some(f.labels),
                })
            }
            Item::File { image, labels } => {
                let rgb = read_rgb8(image)?;
                let labels = match labels {
                    None => None,
                    Some(path) => Some(read_labels(path, rgb.width, rgb.height)?),
                };
                Ok(Sample {
                    name: image
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    image: rgb,
                    labels,
                })
            }
        }
    }
}

/// `ROOT/leftImg8bit/S/C/X_leftImg8bit.png` -> `ROOT/gtFine/S/C/X_gtFine_labelTrainIds.png`.
fn cityscapes_label(root: &Path, image: &Path) -> Option<PathBuf> {
    let rel = image.strip_prefix(root.join("leftImg8bit")).ok()?;
    let name = rel.file_name()?.to_str()?;
    let stem = name.rsplit_once("_leftImg8bit")?.0;
    let dir = rel.parent()?;
    Some(
        root.join("gtFine")
            .join(dir)
            .join(format!("{stem}_gtFine_labelTrainIds.png")),
    )
}

/// Reads an 8-bit label PNG that must match its image's size.
fn read_labels(path: &Path, width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    let decoded = image::open(path).with_context(|| format!("label map {}", path.display()))?;
    if !matches!(decoded, image::DynamicImage::ImageLuma8(_)) {
        bail!(
            "label map {}: is {:?}; expected an 8-bit single-channel PNG of class IDs",
            path.display(),
            decoded.color()
        );
    }
    if decoded.width() != width || decoded.height() != height {
        bail!(
            "label map {}: is {}x{} but its image is {width}x{height}",
            path.display(),
            decoded.width(),
            decoded.height()
        );
    }
    Ok(decoded.into_luma8().into_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synth_specs_parse_with_a_default_seed() {
        assert_eq!(
            parse_synth("synth:8").unwrap().unwrap(),
            (8, DEFAULT_SYNTH_SEED)
        );
        assert_eq!(parse_synth("synth:8:9").unwrap().unwrap(), (8, 9));
        assert!(parse_synth("synth:0").unwrap().is_err());
        assert!(parse_synth("synth:x").unwrap().is_err());
        assert!(parse_synth("synth:1:2:3").unwrap().is_err());
        assert!(parse_synth("images/").is_none());
    }

    #[test]
    fn cityscapes_labels_sit_beside_their_images() {
        let root = Path::new("/data/cs");
        let image = root.join("leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png");
        assert_eq!(
            cityscapes_label(root, &image).unwrap(),
            root.join("gtFine/val/lindau/lindau_000000_000019_gtFine_labelTrainIds.png")
        );
    }

    #[test]
    fn layouts_are_detected_and_labels_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("images")).unwrap();
        std::fs::create_dir_all(dir.join("labels")).unwrap();
        image::RgbImage::new(4, 2)
            .save(dir.join("images/a.png"))
            .unwrap();
        image::GrayImage::new(4, 2)
            .save(dir.join("labels/a.png"))
            .unwrap();
        image::RgbImage::new(4, 2)
            .save(dir.join("images/b.png"))
            .unwrap();
        image::GrayImage::new(3, 2)
            .save(dir.join("labels/b.png"))
            .unwrap();
        let set = Dataset::open(dir.to_str().unwrap(), (64, 32)).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.labelled());
        assert_eq!(set.load(0).unwrap().labels.unwrap().len(), 8);
        let err = format!("{:#}", set.load(1).err().unwrap());
        assert!(err.contains("b.png") && err.contains("3x2"), "{err}");

        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = format!(
            "{:#}",
            Dataset::open(empty.to_str().unwrap(), (64, 32))
                .err()
                .unwrap()
        );
        assert!(err.contains("no images found"), "{err}");
    }
}
