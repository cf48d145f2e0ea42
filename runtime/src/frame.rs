//! Borrowed RGB8 frames: what sources produce and the pipeline consumes.

use crate::error::{Error, Result};

/// A packed RGB8 image borrowed from its owner (decoder, camera buffer ...).
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    width: u32,
    height: u32,
    data: &'a [u8],
}

impl<'a> FrameRef<'a> {
    /// Wraps `data` (`3 * width * height` bytes, row-major RGB) as a frame.
    pub fn new(width: u32, height: u32, data: &'a [u8]) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(Error::Frame(format!(
                "frame is {width}x{height}; both sides must be positive"
            )));
        }
        let expected = 3 * width as usize * height as usize;
        if data.len() != expected {
            return Err(Error::Frame(format!(
                "frame of {width}x{height} RGB8 needs {expected} bytes, got {}",
                data.len()
            )));
        }
        Ok(FrameRef {
            width,
            height,
            data,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The packed RGB bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_and_mis_sized_frames() {
        assert!(FrameRef::new(0, 4, &[]).is_err());
        assert!(FrameRef::new(2, 2, &[0; 11]).is_err());
        assert!(FrameRef::new(2, 2, &[0; 12]).is_ok());
    }
}
