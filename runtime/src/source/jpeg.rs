//! JPEG decoding for the MJPEG sources (pipes, HTTP cameras, V4L2 MJPEG),
//! with zune-jpeg into the pipeline's reused frame buffer.
//!
//! USB and CSI cameras usually leave the Huffman tables out of their MJPEG
//! frames (the "AVI1" convention: every decoder is expected to know the
//! standard tables of ITU T.81 Annex K.3). Not every camera writes the AVI1
//! marker that tells a decoder so, therefore [`ensure_huffman_tables`] inserts
//! the standard DHT segment before the first scan of any frame that has none.

use std::time::Instant;

use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use super::Frame;
use crate::error::{Error, Result};

const LUMA_DC_LENGTHS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const CHROMA_DC_LENGTHS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const DC_VALUES: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const LUMA_AC_LENGTHS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
const LUMA_AC_VALUES: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0xF0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
    0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5,
    0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2,
    0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
];
const CHROMA_AC_LENGTHS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
const CHROMA_AC_VALUES: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33, 0x52, 0xF0,
    0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26,
    0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5,
    0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3,
    0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA,
    0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
];

/// Appends the standard DHT segment (T.81 Annex K.3: luma and chroma, DC and AC).
fn write_standard_dht(out: &mut Vec<u8>) {
    let tables: [(u8, &[u8; 16], &[u8]); 4] = [
        (0x00, &LUMA_DC_LENGTHS, &DC_VALUES),
        (0x10, &LUMA_AC_LENGTHS, &LUMA_AC_VALUES),
        (0x01, &CHROMA_DC_LENGTHS, &DC_VALUES),
        (0x11, &CHROMA_AC_LENGTHS, &CHROMA_AC_VALUES),
    ];
    let len: usize = 2 + tables
        .iter()
        .map(|(_, l, v)| 1 + l.len() + v.len())
        .sum::<usize>();
    out.extend_from_slice(&[0xFF, 0xC4, (len >> 8) as u8, len as u8]);
    for (class_id, lengths, values) in tables {
        out.push(class_id);
        out.extend_from_slice(lengths);
        out.extend_from_slice(values);
    }
}

/// Where the first scan (SOS) starts and whether a DHT segment comes before
/// it; `None` if the header segments are malformed or end early.
fn scan_headers(jpeg: &[u8]) -> Option<(usize, bool)> {
    if jpeg.len() < 4 || jpeg[0] != 0xFF || jpeg[1] != 0xD8 {
        return None;
    }
    let mut i = 2;
    let mut has_dht = false;
    loop {
        if *jpeg.get(i)? != 0xFF {
            return None;
        }
        let marker = *jpeg.get(i + 1)?;
        match marker {
            0xFF => i += 1, // fill byte
            0xD8 | 0xD9 => return None,
            0x01 | 0xD0..=0xD7 => i += 2,
            0xDA => return Some((i, has_dht)),
            _ => {
                has_dht |= marker == 0xC4;
                let len = u16::from_be_bytes([*jpeg.get(i + 2)?, *jpeg.get(i + 3)?]) as usize;
                if len < 2 {
                    return None;
                }
                i += 2 + len;
            }
        }
    }
}

/// Returns `jpeg` itself when it has Huffman tables, else a copy in `scratch`
/// with the standard tables inserted before the first scan. Malformed headers
/// are passed through for the decoder to report.
pub fn ensure_huffman_tables<'a>(jpeg: &'a [u8], scratch: &'a mut Vec<u8>) -> &'a [u8] {
    match scan_headers(jpeg) {
        Some((sos, false)) => {
            scratch.clear();
            scratch.extend_from_slice(&jpeg[..sos]);
            write_standard_dht(scratch);
            scratch.extend_from_slice(&jpeg[sos..]);
            scratch
        }
        _ => jpeg,
    }
}

/// Decodes JPEG frames into reused [`Frame`] buffers.
#[derive(Debug, Default)]
pub struct JpegDecoder {
    scratch: Vec<u8>,
}

/// Largest frame side we accept; anything bigger is corrupt data in practice.
const MAX_SIDE: usize = 16384;

impl JpegDecoder {
    /// A decoder with empty buffers.
    pub fn new() -> JpegDecoder {
        JpegDecoder::default()
    }

    /// Decodes `jpeg` into `frame` (RGB8) and sets `frame.decode`. Errors are
    /// [`Error::Corrupt`] naming `source`.
    pub fn decode(&mut self, source: &str, jpeg: &[u8], frame: &mut Frame) -> Result<()> {
        let t0 = Instant::now();
        let fail = |reason: String| Error::Corrupt {
            name: source.to_string(),
            reason,
        };
        let data = ensure_huffman_tables(jpeg, &mut self.scratch);
        let options = DecoderOptions::default()
            .jpeg_set_out_colorspace(ColorSpace::RGB)
            .set_max_width(MAX_SIDE)
            .set_max_height(MAX_SIDE)
            .set_strict_mode(true);
        let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(data), options);
        decoder
            .decode_headers()
            .map_err(|e| fail(format!("JPEG header: {e:?}")))?;
        let info = decoder
            .info()
            .ok_or_else(|| fail("JPEG without a frame header".into()))?;
        let (w, h) = (info.width as u32, info.height as u32);
        if w == 0 || h == 0 {
            return Err(fail(format!("JPEG is {w}x{h}")));
        }
        let needed = decoder
            .output_buffer_size()
            .ok_or_else(|| fail("JPEG size unknown".into()))?;
        let buf = frame.resize(w, h);
        if needed != buf.len() {
            return Err(fail(format!(
                "decoder wants {needed} bytes for {w}x{h} RGB"
            )));
        }
        decoder
            .decode_into(buf)
            .map_err(|e| fail(format!("JPEG data: {e:?}")))?;
        frame.decode = t0.elapsed();
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A JPEG of a smooth gradient, encoded with the standard tables.
    pub(crate) fn gradient_jpeg(w: u16, h: u16, shift: u8) -> Vec<u8> {
        let rgb: Vec<u8> = (0..h as usize)
            .flat_map(|y| {
                (0..w as usize).flat_map(move |x| {
                    [
                        (x * 255 / w as usize) as u8,
                        (y * 255 / h as usize) as u8,
                        shift,
                    ]
                })
            })
            .collect();
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 90)
            .encode(&rgb, w, h, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        out
    }

    /// Removes every DHT segment, as camera MJPEG frames come.
    fn strip_dht(jpeg: &[u8]) -> Vec<u8> {
        let (sos, _) = scan_headers(jpeg).unwrap();
        let mut out = jpeg[..2].to_vec();
        let mut i = 2;
        while i < sos {
            let len = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
            if jpeg[i + 1] != 0xC4 {
                out.extend_from_slice(&jpeg[i..i + 2 + len]);
            }
            i += 2 + len;
        }
        out.extend_from_slice(&jpeg[sos..]);
        out
    }

    #[test]
    fn standard_dht_segment_is_well_formed() {
        let mut seg = Vec::new();
        write_standard_dht(&mut seg);
        assert_eq!(&seg[..2], &[0xFF, 0xC4]);
        assert_eq!(u16::from_be_bytes([seg[2], seg[3]]) as usize, seg.len() - 2);
        assert_eq!(seg.len(), 4 + 4 * 17 + 12 + 12 + 162 + 162);
    }

    #[test]
    fn frames_without_huffman_tables_decode_after_insertion() {
        let original = gradient_jpeg(64, 48, 40);
        let stripped = strip_dht(&original);
        assert!(stripped.len() < original.len());
        assert_eq!(scan_headers(&stripped).map(|s| s.1), Some(false));
        let mut scratch = Vec::new();
        let fixed = ensure_huffman_tables(&stripped, &mut scratch).to_vec();
        assert_eq!(scan_headers(&fixed).map(|s| s.1), Some(true));

        let mut dec = JpegDecoder::new();
        let (mut a, mut b) = (Frame::default(), Frame::default());
        dec.decode("test", &original, &mut a).unwrap();
        dec.decode("test", &stripped, &mut b).unwrap();
        assert_eq!((b.width, b.height), (64, 48));
        assert_eq!(a.data, b.data, "standard tables give the same pixels");
        // A frame with tables is passed through untouched.
        assert!(std::ptr::eq(
            ensure_huffman_tables(&original, &mut scratch),
            &original[..]
        ));
    }

    #[test]
    fn corrupt_jpegs_are_transient_errors() {
        let good = gradient_jpeg(32, 32, 0);
        let mut dec = JpegDecoder::new();
        let mut f = Frame::default();
        for bad in [
            &good[..good.len() / 3],
            &b"\xFF\xD8\xFFgarbage"[..],
            &[][..],
        ] {
            let err = dec.decode("cam", bad, &mut f).unwrap_err();
            assert!(err.is_transient(), "{err}");
            assert!(err.to_string().contains("cam"), "{err}");
        }
    }
}
