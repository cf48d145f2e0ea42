//! MJPEG byte streams: concatenated JPEG frames from stdin, a file or a pipe
//! (`rpicam-vid --codec mjpeg -o -`, GStreamer `jpegenc ! fdsink`), and the
//! bodies of HTTP multipart streams.
//!
//! [`MjpegSplitter`] finds frame boundaries by walking the JPEG marker
//! segments up to the scan and then the entropy-coded data up to EOI, so an
//! embedded thumbnail (its own SOI/EOI inside an APP segment) does not cut a
//! frame short, and bytes arriving in arbitrary chunks are handled. A frame cut
//! off by the next frame's SOI, bytes that are not JPEG, and a frame that never
//! ends are reported as corrupt and skipped.

use std::io::Read;
use std::time::{Instant, SystemTime};

use super::jpeg::JpegDecoder;
use super::{Frame, Source};
use crate::error::{Error, Result};

/// Frames larger than this are treated as corrupt (a lost EOI would otherwise
/// grow the buffer without bound).
pub const MAX_FRAME_BYTES: usize = 32 << 20;

/// What the splitter found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// One complete JPEG, SOI to EOI.
    Jpeg(&'a [u8]),
    /// Skipped bytes that did not form a frame, with the reason.
    Corrupt(String),
}

enum Scan {
    /// A complete frame ending (exclusive) here.
    End(usize),
    /// Malformed: skip to the next SOI searched from here.
    Bad(usize, &'static str),
    /// Needs more bytes.
    More,
}

/// Cuts a byte stream into JPEG frames; reuses one growing buffer.
#[derive(Debug, Default)]
pub struct MjpegSplitter {
    buf: Vec<u8>,
    consumed: usize,
    garbage: usize,
    report_garbage: bool,
}

fn find_soi(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(3)
        .position(|w| w == [0xFF, 0xD8, 0xFF])
        .map(|p| p + from)
}

/// Walks one frame starting at `buf[0..2] == SOI`.
fn scan_frame(buf: &[u8]) -> Scan {
    let mut i = 2;
    // Header segments, up to and including each scan's SOS header.
    loop {
        let (Some(&ff), Some(&marker)) = (buf.get(i), buf.get(i + 1)) else {
            return Scan::More;
        };
        if ff != 0xFF {
            return Scan::Bad(2, "bad marker in JPEG header");
        }
        match marker {
            0xFF => {
                i += 1;
                continue;
            }
            0xD8 => return Scan::Bad(i, "frame cut off by the next frame"),
            0xD9 => return Scan::Bad(i + 2, "JPEG without image data"),
            0x01 | 0xD0..=0xD7 => {
                i += 2;
                continue;
            }
            _ => {}
        }
        let (Some(&hi), Some(&lo)) = (buf.get(i + 2), buf.get(i + 3)) else {
            return Scan::More;
        };
        let len = u16::from_be_bytes([hi, lo]) as usize;
        if len < 2 {
            return Scan::Bad(2, "bad segment length in JPEG header");
        }
        i += 2 + len;
        if marker != 0xDA {
            continue;
        }
        // Entropy-coded data: 0xFF is followed by 0x00 (stuffing) or a restart
        // marker; anything else is a real marker.
        loop {
            let Some(p) = buf.get(i..).and_then(|b| b.iter().position(|&b| b == 0xFF)) else {
                return Scan::More;
            };
            let j = i + p;
            let Some(&m) = buf.get(j + 1) else {
                return Scan::More;
            };
            match m {
                0x00 | 0xD0..=0xD7 | 0xFF => i = j + 1,
                0xD9 => return Scan::End(j + 2),
                0xD8 => return Scan::Bad(j, "frame cut off by the next frame"),
                _ => {
                    // Another segment between scans (progressive JPEG).
                    i = j;
                    break;
                }
            }
        }
    }
}

impl MjpegSplitter {
    /// A splitter; with `report_garbage`, non-JPEG bytes between frames are
    /// reported as [`Piece::Corrupt`] (for raw MJPEG streams), otherwise they are
    /// skipped silently (multipart headers in HTTP streams).
    pub fn new(report_garbage: bool) -> MjpegSplitter {
        MjpegSplitter {
            report_garbage,
            ..Default::default()
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(data);
    }

    /// A buffer to read into directly: `n` bytes at the end of the internal
    /// buffer; call [`MjpegSplitter::commit`] with the number actually read.
    pub fn read_buffer(&mut self, n: usize) -> &mut [u8] {
        self.compact();
        let len = self.buf.len();
        self.buf.resize(len + n, 0);
        &mut self.buf[len..]
    }

    /// Keeps `read` of the bytes handed out by [`MjpegSplitter::read_buffer`].
    pub fn commit(&mut self, requested: usize, read: usize) {
        let len = self.buf.len();
        self.buf.truncate(len - requested + read.min(requested));
    }

    fn compact(&mut self) {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
    }

    /// Bytes buffered but not yet returned.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.consumed
    }

    /// The next frame or corrupt piece, or `None` when more bytes are needed.
    /// A run of non-JPEG bytes is reported once, when the next frame starts
    /// or the stream ends, however the bytes were chunked.
    pub fn next_piece(&mut self) -> Option<Piece<'_>> {
        loop {
            let start = self.consumed;
            let data = &self.buf[start..];
            let Some(soi) = find_soi(data, 0) else {
                // Keep the last two bytes: they may begin an SOI.
                let skipped = data.len().saturating_sub(2);
                self.consumed += skipped;
                self.garbage += skipped;
                return None;
            };
            if soi > 0 || self.garbage > 0 {
                self.consumed += soi;
                let skipped = std::mem::take(&mut self.garbage) + soi;
                if self.report_garbage {
                    return Some(Piece::Corrupt(format!("{skipped} bytes of non-JPEG data")));
                }
                continue;
            }
            match scan_frame(data) {
                Scan::End(end) => {
                    self.consumed += end;
                    return Some(Piece::Jpeg(&self.buf[start..start + end]));
                }
                Scan::Bad(resume, why) => {
                    // Without a next SOI yet, keep two bytes that may start one.
                    let next = find_soi(data, resume.max(1))
                        .unwrap_or(data.len().saturating_sub(2))
                        .max(1);
                    self.consumed += next;
                    return Some(Piece::Corrupt(format!("{why} ({next} bytes skipped)")));
                }
                Scan::More if data.len() > MAX_FRAME_BYTES => {
                    let next = find_soi(data, 1).unwrap_or(data.len() - 2);
                    self.consumed += next;
                    return Some(Piece::Corrupt(format!(
                        "no end of frame within {MAX_FRAME_BYTES} bytes"
                    )));
                }
                Scan::More => return None,
            }
        }
    }

    /// At the end of the stream: reports an unfinished frame, if any.
    pub fn finish(&mut self) -> Option<Piece<'_>> {
        let rest = self.pending() + std::mem::take(&mut self.garbage);
        self.consumed = self.buf.len();
        (rest > 2).then(|| {
            Piece::Corrupt(format!(
                "stream ended with {rest} bytes that are not a complete frame"
            ))
        })
    }
}

/// Frames from an MJPEG byte stream (stdin, a file, a pipe).
pub struct MjpegSource {
    name: String,
    reader: Box<dyn Read + Send>,
    live: bool,
    splitter: MjpegSplitter,
    decoder: JpegDecoder,
    ended: bool,
}

/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;

impl MjpegSource {
    /// Reads MJPEG from `reader`; `live` for pipes and stdin (frames may be
    /// dropped when inference is slower), not for regular files.
    pub fn new(name: String, reader: Box<dyn Read + Send>, live: bool) -> MjpegSource {
        MjpegSource {
            name,
            reader,
            live,
            splitter: MjpegSplitter::new(true),
            decoder: JpegDecoder::new(),
            ended: false,
        }
    }
}

impl Source for MjpegSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_live(&self) -> bool {
        self.live
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        let t0 = Instant::now();
        loop {
            let piece = if self.ended {
                match self.splitter.next_piece() {
                    Some(p) => Some(p),
                    None => match self.splitter.finish() {
                        Some(p) => Some(p),
                        None => return Ok(false),
                    },
                }
            } else {
                self.splitter.next_piece()
            };
            match piece {
                Some(Piece::Jpeg(jpeg)) => {
                    frame.capture = t0.elapsed();
                    frame.timestamp = SystemTime::now();
                    frame.origin.clear();
                    return self.decoder.decode(&self.name, jpeg, frame).map(|()| true);
                }
                Some(Piece::Corrupt(reason)) => {
                    return Err(Error::Corrupt {
                        name: self.name.clone(),
                        reason,
                    })
                }
                None => {}
            }
            let buf = self.splitter.read_buffer(READ_CHUNK);
            let n = match self.reader.read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    self.splitter.commit(READ_CHUNK, 0);
                    return Err(Error::Source {
                        name: self.name.clone(),
                        reason: format!("read failed: {e}"),
                    });
                }
            };
            self.splitter.commit(READ_CHUNK, n);
            if n == 0 {
                self.ended = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::jpeg::tests::gradient_jpeg;
    use super::*;

    fn collect(splitter: &mut MjpegSplitter) -> Vec<std::result::Result<Vec<u8>, String>> {
        let mut out = Vec::new();
        while let Some(p) = splitter.next_piece() {
            out.push(match p {
                Piece::Jpeg(j) => Ok(j.to_vec()),
                Piece::Corrupt(r) => Err(r),
            });
        }
        out
    }

    #[test]
    fn splits_frames_across_every_chunk_size_and_skips_garbage() {
        let a = gradient_jpeg(40, 24, 1);
        let b = gradient_jpeg(24, 40, 2);
        let mut stream = b"garbage".to_vec();
        stream.extend_from_slice(&a);
        stream.extend_from_slice(&a[..a.len() / 2]); // truncated in the header
        stream.extend_from_slice(&b[..b.len() - 20]); // truncated in the data
        stream.extend_from_slice(&b);
        stream.extend_from_slice(b"\r\n--boundary\r\n\xFF\xD9");
        stream.extend_from_slice(&a);
        for chunk in [1, 2, 3, 7, 64, 1000, stream.len()] {
            let mut s = MjpegSplitter::new(true);
            let mut got = Vec::new();
            for c in stream.chunks(chunk) {
                s.push(c);
                got.extend(collect(&mut s));
            }
            assert!(s.finish().is_none(), "chunk {chunk}");
            let frames: Vec<&Vec<u8>> = got.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(frames, vec![&a, &b, &a], "chunk {chunk}");
            let bad: Vec<&String> = got.iter().filter_map(|r| r.as_ref().err()).collect();
            assert_eq!(bad.len(), 4, "chunk {chunk}: {bad:?}");
            assert!(bad[2].contains("cut off"), "{bad:?}");
        }
    }

    #[test]
    fn multipart_headers_are_skipped_silently_when_asked() {
        let a = gradient_jpeg(16, 16, 3);
        let mut stream = b"--frame\r\nContent-Type: image/jpeg\r\n\r\n".to_vec();
        stream.extend_from_slice(&a);
        stream.extend_from_slice(b"\r\n--frame\r\n\r\n");
        stream.extend_from_slice(&a);
        let mut s = MjpegSplitter::new(false);
        s.push(&stream);
        assert_eq!(collect(&mut s), vec![Ok(a.clone()), Ok(a)]);
    }

    #[test]
    fn a_stream_ending_inside_a_frame_is_reported() {
        let a = gradient_jpeg(16, 16, 3);
        let mut s = MjpegSplitter::new(true);
        s.push(&a[..a.len() - 10]);
        assert!(collect(&mut s).is_empty());
        assert!(matches!(s.finish(), Some(Piece::Corrupt(r)) if r.contains("ended with")));
    }

    #[test]
    fn source_decodes_good_frames_and_flags_corrupt_ones() {
        let a = gradient_jpeg(32, 16, 9);
        let mut bytes = a.clone();
        bytes.extend_from_slice(b"junk");
        bytes.extend_from_slice(&a);
        let mut src = MjpegSource::new("clip".into(), Box::new(std::io::Cursor::new(bytes)), false);
        let mut f = Frame::default();
        assert!(src.next_frame(&mut f).unwrap());
        assert_eq!((f.width, f.height), (32, 16));
        let err = src.next_frame(&mut f).unwrap_err();
        assert!(
            err.is_transient() && err.to_string().contains("clip"),
            "{err}"
        );
        assert!(src.next_frame(&mut f).unwrap());
        assert!(!src.next_frame(&mut f).unwrap());
    }
}
