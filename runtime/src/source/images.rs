//! Still images (a directory, a glob or one file) as a finite, never-dropping
//! source: every image is processed once, in name order.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use super::jpeg::JpegDecoder;
use super::{read_rgb8, Frame, Source};
use crate::error::{Error, Result};

/// Frames from a list of image files.
pub struct ImageSource {
    name: String,
    paths: Vec<PathBuf>,
    next: usize,
    bytes: Vec<u8>,
    jpeg: JpegDecoder,
}

impl ImageSource {
    /// Reads `paths` in order; `name` is how the user named them.
    pub fn new(name: String, paths: Vec<PathBuf>) -> ImageSource {
        ImageSource {
            name,
            paths,
            next: 0,
            bytes: Vec::new(),
            jpeg: JpegDecoder::new(),
        }
    }
}

impl Source for ImageSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_live(&self) -> bool {
        false
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        let Some(path) = self.paths.get(self.next) else {
            return Ok(false);
        };
        self.next += 1;
        let t0 = Instant::now();
        frame.origin.clear();
        frame.origin.push_str(&path.display().to_string());
        frame.timestamp = SystemTime::now();
        let is_jpeg = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg"));
        if is_jpeg {
            // JPEGs go through zune-jpeg into the reused buffer.
            self.bytes.clear();
            let read = std::fs::File::open(path)
                .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut self.bytes));
            read.map_err(|e| Error::Corrupt {
                name: path.display().to_string(),
                reason: format!("cannot read: {e}"),
            })?;
            frame.capture = t0.elapsed();
            let name = path.display().to_string();
            return self.jpeg.decode(&name, &self.bytes, frame).map(|()| true);
        }
        let image = read_rgb8(path).map_err(|e| Error::Corrupt {
            name: path.display().to_string(),
            reason: match e {
                Error::Image { reason, .. } => reason,
                other => other.to_string(),
            },
        })?;
        frame.width = image.width;
        frame.height = image.height;
        frame.data = image.data;
        frame.capture = t0.elapsed();
        frame.decode = std::time::Duration::ZERO;
        Ok(true)
    }
}
