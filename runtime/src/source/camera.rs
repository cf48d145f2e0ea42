//! Camera logic that does not need a camera: choosing a capture mode from
//! what a device offers, turning its buffers (MJPEG or YUYV) into RGB8, and
//! the back-off used to reopen a camera that has gone away.
//!
//! The V4L2 binding itself lives in the application (`dla-edge`, cargo
//! feature `v4l`) and implements [`super::Source`] with these pieces, so
//! everything here is tested on machines without `/dev/video*`.

use std::time::Duration;

use super::jpeg::JpegDecoder;
use super::yuyv::yuyv_to_rgb;
use super::Frame;
use crate::error::{Error, Result};

/// Pixel formats we can consume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Motion JPEG: one JPEG per buffer.
    Mjpeg,
    /// YUYV 4:2:2, two bytes per pixel.
    Yuyv,
}

impl PixelFormat {
    /// From a V4L2 FourCC (`b"MJPG"`, `b"YUYV"`); `None` for formats we cannot use.
    pub fn from_fourcc(fourcc: &[u8; 4]) -> Option<PixelFormat> {
        match fourcc {
            b"MJPG" | b"JPEG" => Some(PixelFormat::Mjpeg),
            b"YUYV" | b"YUY2" => Some(PixelFormat::Yuyv),
            _ => None,
        }
    }

    /// The V4L2 FourCC.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Yuyv => *b"YUYV",
        }
    }
}

/// One capture mode a device offers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraMode {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Highest frame rate offered at this size (0 when unknown).
    pub fps: f32,
}

/// Size asked for when the user names none: enough for the network (which
/// runs smaller anyway) at a rate USB 2 carries in either format.
pub const DEFAULT_CAMERA_SIZE: (u32, u32) = (640, 480);

/// Picks the mode to request: the size closest to `want` (by pixel count, then
/// aspect), then the higher frame rate up to `fps`, then MJPEG over YUYV
/// (MJPEG keeps high rates within USB 2 bandwidth).
pub fn choose_mode(
    offered: &[CameraMode],
    want: Option<(u32, u32)>,
    fps: f32,
) -> Option<CameraMode> {
    let (ww, wh) = want.unwrap_or(DEFAULT_CAMERA_SIZE);
    let want_px = ww as f64 * wh as f64;
    let key = |m: &CameraMode| {
        let px = m.width as f64 * m.height as f64;
        let size_err = (px.ln() - want_px.ln()).abs();
        let aspect_err = ((m.width as f64 / m.height.max(1) as f64).ln()
            - (ww as f64 / wh.max(1) as f64).ln())
        .abs();
        let rate = if m.fps <= 0.0 {
            0.0
        } else {
            m.fps.min(fps.max(1.0))
        };
        let fmt = match m.format {
            PixelFormat::Mjpeg => 0,
            PixelFormat::Yuyv => 1,
        };
        (
            (size_err * 1000.0).round() as i64,
            (aspect_err * 1000.0).round() as i64,
            -((rate * 10.0).round() as i64),
            fmt,
        )
    };
    offered
        .iter()
        .filter(|m| m.width > 0 && m.height > 0)
        .min_by_key(|m| key(m))
        .copied()
}

/// Doubling delay between attempts to reopen a camera, reset on success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min` and doubles up to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The delay to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Call after a success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Turns raw camera buffers of one negotiated mode into RGB8 frames.
#[derive(Debug)]
pub struct CameraDecoder {
    mode: CameraMode,
    stride: usize,
    jpeg: JpegDecoder,
}

impl CameraDecoder {
    /// A decoder for `mode`; `stride` is the driver's bytes per line (YUYV).
    pub fn new(mode: CameraMode, stride: usize) -> CameraDecoder {
        CameraDecoder {
            mode,
            stride: stride.max(2 * mode.width as usize),
            jpeg: JpegDecoder::new(),
        }
    }

    /// Converts one buffer (the bytes the driver filled) into `frame`.
    pub fn decode(&mut self, device: &str, buf: &[u8], frame: &mut Frame) -> Result<()> {
        let t0 = std::time::Instant::now();
        match self.mode.format {
            PixelFormat::Mjpeg => self.jpeg.decode(device, buf, frame),
            PixelFormat::Yuyv => {
                let (w, h) = (self.mode.width, self.mode.height);
                let out = frame.resize(w, h);
                yuyv_to_rgb(buf, w as usize, h as usize, self.stride, out).map_err(|e| {
                    Error::Corrupt {
                        name: device.to_string(),
                        reason: e.to_string(),
                    }
                })?;
                frame.decode = t0.elapsed();
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(format: PixelFormat, width: u32, height: u32, fps: f32) -> CameraMode {
        CameraMode {
            format,
            width,
            height,
            fps,
        }
    }

    #[test]
    fn prefers_the_nearest_size_then_rate_then_mjpeg() {
        use PixelFormat::*;
        let offered = [
            mode(Yuyv, 640, 480, 30.0),
            mode(Mjpeg, 640, 480, 30.0),
            mode(Yuyv, 1280, 720, 10.0),
            mode(Mjpeg, 1280, 720, 30.0),
            mode(Mjpeg, 1920, 1080, 30.0),
            mode(Yuyv, 320, 240, 30.0),
        ];
        assert_eq!(choose_mode(&offered, None, 30.0), Some(offered[1]));
        assert_eq!(
            choose_mode(&offered, Some((1280, 720)), 30.0),
            Some(offered[3])
        );
        assert_eq!(
            choose_mode(&offered, Some((1000, 700)), 30.0).map(|m| m.width),
            Some(1280)
        );
        // Only YUYV at that size: take it.
        assert_eq!(
            choose_mode(&offered, Some((320, 240)), 30.0),
            Some(offered[5])
        );
        assert_eq!(choose_mode(&[], None, 30.0), None);
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let d: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(d, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn decodes_yuyv_and_mjpeg_buffers() {
        let yuyv_mode = mode(PixelFormat::Yuyv, 4, 2, 30.0);
        let mut dec = CameraDecoder::new(yuyv_mode, 8);
        let mut f = Frame::default();
        let buf = [235u8, 128, 235, 128, 16, 128, 16, 128].repeat(2);
        dec.decode("/dev/video0", &buf, &mut f).unwrap();
        assert_eq!((f.width, f.height), (4, 2));
        assert_eq!(&f.data[..6], &[255; 6]);
        let err = dec.decode("/dev/video0", &buf[..5], &mut f).unwrap_err();
        assert!(err.is_transient() && err.to_string().contains("/dev/video0"));

        let jpeg = super::super::jpeg::tests::gradient_jpeg(16, 8, 0);
        let mut dec = CameraDecoder::new(mode(PixelFormat::Mjpeg, 16, 8, 30.0), 0);
        dec.decode("/dev/video0", &jpeg, &mut f).unwrap();
        assert_eq!((f.width, f.height), (16, 8));
        assert_eq!(PixelFormat::from_fourcc(b"YUYV"), Some(PixelFormat::Yuyv));
        assert_eq!(PixelFormat::from_fourcc(b"NV12"), None);
    }
}
