//! Recording to a directory: every Nth frame as overlay, colour mask and/or
//! raw class-ID PNGs (`000042.overlay.png`, `000042.mask.png`,
//! `000042.labels.png`), named by the frame's number.

use std::path::{Path, PathBuf};

use super::{Output, Sink};
use crate::error::{Error, Result};

/// What to write for a recorded frame or segmented image (`--record-what`,
/// `--visualize`; one PNG each, named `NAME.SUFFIX.png`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum RecordWhat {
    /// The image with class colours blended over it (NAME.overlay.png).
    Overlay,
    /// Class colours only (NAME.mask.png).
    Mask,
    /// Raw class IDs as 8-bit grey levels, one per pixel (NAME.labels.png).
    Labels,
}

impl RecordWhat {
    /// The file name part: `overlay`, `mask` or `labels`.
    pub fn suffix(self) -> &'static str {
        match self {
            RecordWhat::Overlay => "overlay",
            RecordWhat::Mask => "mask",
            RecordWhat::Labels => "labels",
        }
    }
}

/// Writes PNGs of every Nth frame.
pub struct RecordSink {
    dir: PathBuf,
    every: u64,
    what: Vec<RecordWhat>,
    mask: Vec<u8>,
    written: u64,
}

impl RecordSink {
    /// Records into `dir` (created if missing) every `every`-th frame.
    pub fn new(dir: &Path, every: u64, what: Vec<RecordWhat>) -> Result<RecordSink> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(RecordSink {
            dir: dir.to_path_buf(),
            every: every.max(1),
            what,
            mask: Vec::new(),
            written: 0,
        })
    }

    /// Frames recorded so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

impl Sink for RecordSink {
    fn name(&self) -> String {
        format!("recorder {}", self.dir.display())
    }

    fn write(&mut self, out: &Output<'_>) -> Result<()> {
        if !(out.index - 1).is_multiple_of(self.every) {
            return Ok(());
        }
        let (w, h) = (out.frame.width, out.frame.height);
        for &what in &self.what {
            let (data, color) = match what {
                RecordWhat::Overlay => (out.overlay(), image::ExtendedColorType::Rgb8),
                RecordWhat::Mask => {
                    self.mask.resize(out.labels.len() * 3, 0);
                    out.palette.colorize(out.labels, &mut self.mask);
                    (&self.mask[..], image::ExtendedColorType::Rgb8)
                }
                RecordWhat::Labels => (out.labels, image::ExtendedColorType::L8),
            };
            let path = self
                .dir
                .join(format!("{:06}.{}.png", out.index, what.suffix()));
            image::save_buffer(&path, data, w, h, color).map_err(|e| Error::Sink {
                sink: path.display().to_string(),
                reason: format!("cannot write: {e}"),
            })?;
        }
        self.written += 1;
        Ok(())
    }
}
