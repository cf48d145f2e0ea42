//! The decoding step of an RTSP source: H.264 through OpenH264, MJPEG
//! through the JPEG path the other sources use, both to RGB8.

use std::time::{Instant, SystemTime};

use retina::codec::VideoFrame;

use crate::error::{Error, Result};
use crate::source::jpeg::JpegDecoder;
use crate::source::Frame;

/// Turns one codec's frames into RGB8.
pub enum Decoder {
    H264 {
        decoder: Box<openh264::decoder::Decoder>,
        /// After a connect or a loss: skip frames until the next key frame.
        need_key: bool,
    },
    Jpeg(JpegDecoder),
}

impl Decoder {
    /// The decoder for an RTSP `codec` (retina's encoding name), or why
    /// there is none.
    pub fn for_codec(codec: &str) -> std::result::Result<Decoder, String> {
        match codec {
            "h264" => match openh264::decoder::Decoder::new() {
                Ok(d) => Ok(Decoder::H264 {
                    decoder: Box::new(d),
                    need_key: true,
                }),
                Err(e) => Err(format!("starting the H.264 decoder: {e}")),
            },
            "jpeg" => Ok(Decoder::Jpeg(JpegDecoder::new())),
            other => Err(format!(
                "video codec {other:?} is not supported (H.264 and MJPEG are): \
                 choose H.264 in the camera's settings, or a sub-stream that has it"
            )),
        }
    }

    /// Decodes one frame into `frame`; `Ok(false)` when it gives no picture
    /// (skipped until a key frame, or the decoder needs more data).
    pub fn decode(&mut self, video: &VideoFrame, frame: &mut Frame, shown: &str) -> Result<bool> {
        let t0 = Instant::now();
        let arrived = SystemTime::now();
        let pictured = match self {
            Decoder::H264 { decoder, need_key } => {
                let key = video.is_random_access_point();
                decode_h264(
                    decoder,
                    need_key,
                    video.data(),
                    key,
                    video.loss() > 0,
                    frame,
                )
                .map_err(|reason| Error::Corrupt {
                    name: shown.to_string(),
                    reason,
                })?
            }
            Decoder::Jpeg(jpeg) => {
                jpeg.decode(shown, video.data(), frame)?;
                true
            }
        };
        if pictured {
            frame.timestamp = arrived;
            frame.decode = t0.elapsed();
            frame.origin.clear();
        }
        Ok(pictured)
    }
}

/// One H.264 access unit (Annex B) into `frame`. After a loss or an error,
/// frames are skipped until the next key frame (`key`), so no smeared
/// picture is shown. `Ok(false)`: no picture this time.
fn decode_h264(
    decoder: &mut openh264::decoder::Decoder,
    need_key: &mut bool,
    data: &[u8],
    key: bool,
    loss: bool,
    frame: &mut Frame,
) -> std::result::Result<bool, String> {
    if loss {
        *need_key = true;
    }
    if *need_key && !key {
        return Ok(false);
    }
    *need_key = false;
    let decoded = match decoder.decode(data) {
        Ok(Some(yuv)) => yuv,
        Ok(None) => return Ok(false),
        Err(e) => {
            *need_key = true;
            // OpenH264's message ends in boilerplate ("User Message:None. ...").
            let e = e.to_string();
            let e = e
                .split(" User Message")
                .next()
                .unwrap_or(&e)
                .trim_end_matches('.');
            return Err(format!(
                "an H.264 frame that does not decode ({e}); waiting for the next key frame"
            ));
        }
    };
    use openh264::formats::YUVSource;
    let (w, h) = decoded.dimensions();
    let rgb = frame.resize(w as u32, h as u32);
    decoded.write_rgb8(rgb);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few frames of a moving gradient, encoded by OpenH264's encoder;
    /// frames 0 and 2 are key frames.
    fn encoded(w: usize, h: usize, frames: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        use openh264::formats::{RgbSliceU8, YUVBuffer};
        let mut encoder = openh264::encoder::Encoder::new().unwrap();
        let (mut pictures, mut streams) = (Vec::new(), Vec::new());
        for f in 0..frames {
            let rgb: Vec<u8> = (0..w * h * 3)
                .map(|i| {
                    let (p, c) = (i / 3, i % 3);
                    ((p % w) * 2 + (p / w) * 3 + c * 40 + f * 5) as u8
                })
                .collect();
            let yuv = YUVBuffer::from_rgb_source(RgbSliceU8::new(&rgb, (w, h)));
            if f == 2 {
                encoder.force_intra_frame();
            }
            streams.push(encoder.encode(&yuv).unwrap().to_vec());
            pictures.push(rgb);
        }
        (pictures, streams)
    }

    fn mean_difference(a: &[u8], b: &[u8]) -> f64 {
        let sum: u64 = a.iter().zip(b).map(|(&x, &y)| x.abs_diff(y) as u64).sum();
        sum as f64 / a.len() as f64
    }

    /// The H.264 step with its state, fed one access unit at a time.
    struct H264 {
        decoder: openh264::decoder::Decoder,
        need_key: bool,
        frame: Frame,
    }

    impl H264 {
        fn new() -> H264 {
            H264 {
                decoder: openh264::decoder::Decoder::new().unwrap(),
                need_key: true,
                frame: Frame::default(),
            }
        }

        fn feed(
            &mut self,
            data: &[u8],
            key: bool,
            loss: bool,
        ) -> std::result::Result<bool, String> {
            decode_h264(
                &mut self.decoder,
                &mut self.need_key,
                data,
                key,
                loss,
                &mut self.frame,
            )
        }
    }

    #[test]
    fn h264_decodes_skips_after_a_loss_and_survives_corrupt_units() {
        let (w, h) = (96, 64);
        let (pictures, streams) = encoded(w, h, 3);
        let mut h264 = H264::new();

        // A P frame first: nothing to show until a key frame.
        assert_eq!(h264.feed(&streams[1], false, false), Ok(false));
        assert!(h264.feed(&streams[0], true, false).unwrap());
        assert_eq!((h264.frame.width, h264.frame.height), (w as u32, h as u32));
        let off = mean_difference(&h264.frame.data, &pictures[0]);
        assert!(
            off < 6.0,
            "decoded picture is {off:.1} levels off on average"
        );

        // Packets lost before this P frame: skipped, not smeared.
        assert_eq!(h264.feed(&streams[1], false, true), Ok(false));
        assert!(h264.need_key);

        // Garbage with a key frame's NAL type: an error naming OpenH264, no
        // panic; a truncated key frame: no panic; then the next key frame
        // decodes again.
        let mut garbage = vec![0, 0, 0, 1, 0x65];
        garbage.extend((0..400u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        let reason = h264.feed(&garbage, true, false).unwrap_err();
        assert!(reason.contains("does not decode (OpenH264"), "{reason}");
        assert!(!reason.contains("User Message"), "{reason}");
        assert!(h264.need_key);
        let truncated = &streams[0][..streams[0].len() / 2];
        let _ = h264.feed(truncated, true, false);
        assert!(h264.feed(&streams[2], true, false).unwrap());
        let off = mean_difference(&h264.frame.data, &pictures[2]);
        assert!(off < 6.0, "after the corrupt units: {off:.1} levels off");
    }
}
