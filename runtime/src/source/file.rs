//! Still images from disk (PNG, JPEG), decoded to packed RGB8.

use std::path::Path;

use crate::error::{Error, Result};

/// A decoded RGB8 image that owns its pixels.
#[derive(Debug, Clone)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Packed RGB8, row-major.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// A borrowed frame view of this image.
    pub fn frame(&self) -> crate::frame::FrameRef<'_> {
        crate::frame::FrameRef::new(self.width, self.height, &self.data)
            .expect("RgbImage sizes are checked when it is made")
    }
}

/// Reads and decodes an image file into RGB8 (greyscale and RGBA are converted).
pub fn read_rgb8(path: &Path) -> Result<RgbImage> {
    let fail = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.is_empty() {
        return Err(fail("file is empty".into()));
    }
    let decoded =
        image::load_from_memory(&bytes).map_err(|e| fail(format!("cannot decode: {e}")))?;
    if decoded.width() == 0 || decoded.height() == 0 {
        return Err(fail(format!(
            "image is {}x{}; it has no pixels",
            decoded.width(),
            decoded.height()
        )));
    }
    let rgb = decoded.into_rgb8();
    Ok(RgbImage {
        width: rgb.width(),
        height: rgb.height(),
        data: rgb.into_raw(),
    })
}
