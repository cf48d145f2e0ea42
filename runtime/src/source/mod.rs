//! Frame sources: where images come from, the first stage of the data path.
//!
//! Every source implements [`Source`]: a **pull** interface driven by the
//! pipeline's capture thread, which owns the [`Frame`] buffers and hands one
//! to [`Source::next_frame`] at a time; the source decodes into it (resizing
//! the buffer only when the frame size changes) and keeps its own encoded-byte
//! buffers. Nothing is allocated per frame once the sizes are known, and a
//! frame buffer is recycled by the pipeline after the outputs are done with it.
//!
//! Sources are chosen by a URI-like string ([`SourceSpec::parse`]):
//!
//! | spec | source | live? |
//! |---|---|---|
//! | `demo` | [`DemoSource`]: animated synthetic street scenes | yes |
//! | `-` | [`MjpegSource`] on stdin (`rpicam-vid --codec mjpeg -o -`) | yes |
//! | `FILE.mjpeg`, a FIFO | [`MjpegSource`] on a file or named pipe | file: no; pipe: yes |
//! | `DIR`, `DIR/*.jpg`, `IMG.png` | [`ImageSource`]: still images, sorted | no |
//! | `http://host/path` | [`HttpMjpegSource`]: multipart MJPEG (IP cameras) | yes |
//! | `rtsp://[user:pass@]host/path` | `RtspSource` (feature `rtsp`): H.264 or MJPEG cameras and NVRs | yes |
//! | `/dev/videoN` | V4L2 camera, built by the application ([`camera`] has its logic) | yes |
//!
//! Live sources produce frames whether or not anyone keeps up, so the pipeline
//! lets the newest frame win and counts the ones it drops; files and
//! directories never drop a frame.

pub mod camera;
mod demo;
mod file;
mod http;
mod images;
pub mod jpeg;
pub mod mjpeg;
mod pace;
#[cfg(feature = "rtsp")]
pub mod rtsp;
pub mod yuyv;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use demo::{DemoSource, DEMO_SIZE};
pub use file::{read_rgb8, RgbImage};
pub use http::HttpMjpegSource;
pub use images::ImageSource;
pub use mjpeg::MjpegSource;
pub use pace::Pacer;
#[cfg(feature = "rtsp")]
pub use rtsp::RtspSource;

use crate::error::{Error, Result};
use crate::frame::FrameRef;

/// One captured frame in a buffer owned by the pipeline and reused across
/// frames: packed RGB8 pixels plus what the source knows about them.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Packed RGB8, row-major, `3 * width * height` bytes.
    pub data: Vec<u8>,
    /// Wall-clock time at which the frame was captured.
    pub timestamp: SystemTime,
    /// Time spent acquiring the frame's bytes (reading, rendering), without
    /// deliberate pacing waits.
    pub capture: Duration,
    /// Time spent decoding or converting the bytes to RGB8.
    pub decode: Duration,
    /// Where the frame came from when that is meaningful (an image's file
    /// name); empty otherwise. Reused like the pixels.
    pub origin: String,
    /// When the camera took the picture by the camera's own clock, where it
    /// says (RTSP cameras' RTCP sender reports). Comparable with this
    /// machine's clock only when both keep NTP time.
    pub camera_time: Option<SystemTime>,
}

impl Default for Frame {
    fn default() -> Self {
        Frame {
            width: 0,
            height: 0,
            data: Vec::new(),
            timestamp: SystemTime::UNIX_EPOCH,
            capture: Duration::ZERO,
            decode: Duration::ZERO,
            origin: String::new(),
            camera_time: None,
        }
    }
}

impl Frame {
    /// Sets the size and returns the pixel buffer to fill (`3 * w * h` bytes);
    /// the buffer only reallocates when it has to grow.
    pub fn resize(&mut self, width: u32, height: u32) -> &mut [u8] {
        self.width = width;
        self.height = height;
        self.data.resize(3 * width as usize * height as usize, 0);
        &mut self.data
    }

    /// A borrowed view for the segmenter.
    pub fn as_ref(&self) -> Result<FrameRef<'_>> {
        FrameRef::new(self.width, self.height, &self.data)
    }
}

/// A producer of RGB8 frames, driven by the pipeline (pull model).
///
/// The caller owns the frame buffers; `next_frame` fills the one it is given.
/// Implementations must not block forever once their input is gone: they
/// return `Ok(false)` at the end of a file and an error when a live input
/// fails for good.
pub trait Source: Send {
    /// The source as the user named it, for messages and stats.
    fn name(&self) -> &str;

    /// True for sources that produce frames at their own pace (cameras, pipes,
    /// network streams, the demo): the pipeline drops stale frames from them.
    fn is_live(&self) -> bool;

    /// Fills `frame` with the next frame. `Ok(false)` means the source has
    /// ended. An error for which [`Error::is_transient`] is true concerns this
    /// frame only (corrupt data): the caller counts it and calls again.
    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool>;

    /// The source's connection state and reconnect count, for sources that
    /// hold one (RTSP); the pipeline shows it with its stats.
    fn link(&self) -> Option<std::sync::Arc<crate::pipeline::Link>> {
        None
    }
}

/// A parsed `--source` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// Animated synthetic street scenes.
    Demo,
    /// MJPEG on standard input.
    Stdin,
    /// MJPEG in a file or a named pipe.
    Mjpeg(PathBuf),
    /// Still images, in this order.
    Images(Vec<PathBuf>),
    /// Multipart MJPEG over HTTP.
    Http(String),
    /// An RTSP camera (H.264 or MJPEG), as given (credentials included).
    Rtsp(String),
    /// A V4L2 camera device.
    Camera(PathBuf),
}

/// Options that apply to the sources that can honour them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceOptions {
    /// Frame size for sources that can choose one (demo, cameras).
    pub size: Option<(u32, u32)>,
    /// Frame rate of the demo source and the one requested from cameras.
    pub fps: f32,
    /// Seed of the demo's scenes.
    pub seed: u64,
    /// How RTP reaches us from an RTSP camera.
    pub rtsp_transport: RtspTransport,
}

/// How an RTSP camera sends its RTP packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RtspTransport {
    /// Inside the RTSP TCP connection: crosses NAT and firewalls, no loss.
    #[default]
    Tcp,
    /// Separate UDP ports: a little less delay on a clean LAN, but packets
    /// lost or reordered on the way cost a picture until the next key frame.
    Udp,
}

impl std::str::FromStr for RtspTransport {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(RtspTransport::Tcp),
            "udp" => Ok(RtspTransport::Udp),
            other => Err(format!(
                "unknown RTSP transport {other:?}: expected \"tcp\" or \"udp\""
            )),
        }
    }
}

impl std::fmt::Display for RtspTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        })
    }
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            size: None,
            fps: 10.0,
            seed: 1,
            rtsp_transport: RtspTransport::Tcp,
        }
    }
}

const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn is_image_path(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// `*` and `?` matching of one file name.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl SourceSpec {
    /// Parses a `--source` argument; files, directories and globs are
    /// resolved here, so a missing path is reported before anything starts.
    pub fn parse(spec: &str) -> Result<SourceSpec> {
        let fail = |reason: String| Error::Source {
            name: spec.to_string(),
            reason,
        };
        if spec.is_empty() {
            return Err(fail("empty source; try `demo`".into()));
        }
        if spec == "demo" {
            return Ok(SourceSpec::Demo);
        }
        if spec == "-" {
            return Ok(SourceSpec::Stdin);
        }
        if let Some((scheme, _)) = spec.split_once("://") {
            return match scheme.to_ascii_lowercase().as_str() {
                "http" => Ok(SourceSpec::Http(spec.to_string())),
                "rtsp" => Ok(SourceSpec::Rtsp(spec.to_string())),
                "file" => Self::parse(&spec["file://".len()..]),
                other => Err(fail(format!(
                    "unknown source scheme {other:?}; expected demo, -, a file, a directory, \
                     a glob, http://..., rtsp://... or /dev/videoN"
                ))),
            };
        }
        if spec.starts_with("/dev/video") {
            return Ok(SourceSpec::Camera(PathBuf::from(spec)));
        }
        let path = PathBuf::from(spec);
        let file_name = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
        if file_name.contains(['*', '?']) {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| fail(format!("cannot list {}: {e}", dir.display())))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.file_name()
                            .and_then(|f| f.to_str())
                            .is_some_and(|f| glob_match(file_name.as_bytes(), f.as_bytes()))
                })
                .collect();
            if found.is_empty() {
                return Err(fail("no files match this pattern".into()));
            }
            found.sort();
            return Ok(SourceSpec::Images(found));
        }
        let meta = std::fs::metadata(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                fail("no such file or directory".into())
            } else {
                fail(format!("cannot open: {e}"))
            }
        })?;
        if meta.is_dir() {
            let entries =
                std::fs::read_dir(&path).map_err(|e| fail(format!("cannot list: {e}")))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_image_path(p))
                .collect();
            if found.is_empty() {
                return Err(fail(
                    "no images (.png, .jpg, .jpeg) in this directory".into(),
                ));
            }
            found.sort();
            return Ok(SourceSpec::Images(found));
        }
        if meta.is_file() && is_image_path(&path) {
            return Ok(SourceSpec::Images(vec![path]));
        }
        Ok(SourceSpec::Mjpeg(path))
    }

    /// How to show the source `given` for this spec in logs, stats and the
    /// viewer: as given, except that credentials in a URL are left out.
    pub fn shown(&self, given: &str) -> String {
        match self {
            SourceSpec::Rtsp(_) | SourceSpec::Http(_) => without_credentials(given),
            _ => given.to_string(),
        }
    }

    /// True when frames from this source arrive at their own pace.
    pub fn is_live(&self) -> bool {
        match self {
            SourceSpec::Demo
            | SourceSpec::Stdin
            | SourceSpec::Http(_)
            | SourceSpec::Rtsp(_)
            | SourceSpec::Camera(_) => true,
            SourceSpec::Images(_) => false,
            SourceSpec::Mjpeg(p) => std::fs::metadata(p).map(|m| !m.is_file()).unwrap_or(true),
        }
    }
}

/// `scheme://user:pass@host/path` as `scheme://host/path`.
pub fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let host = rest[..end].rsplit('@').next().unwrap_or("");
            format!("{scheme}://{host}{}", &rest[end..])
        }
        None => url.to_string(),
    }
}

/// Opens every source this library implements. Cameras need an
/// application-side V4L2 binding (see [`camera`]), so a [`SourceSpec::Camera`]
/// gives an error here.
pub fn open(spec: &SourceSpec, name: &str, options: &SourceOptions) -> Result<Box<dyn Source>> {
    Ok(match spec {
        SourceSpec::Demo => Box::new(DemoSource::new(options)),
        SourceSpec::Stdin => Box::new(MjpegSource::new(
            "stdin".to_string(),
            Box::new(std::io::stdin()),
            true,
        )),
        SourceSpec::Mjpeg(path) => {
            let file = std::fs::File::open(path).map_err(|e| Error::Source {
                name: name.to_string(),
                reason: format!("cannot open: {e}"),
            })?;
            Box::new(MjpegSource::new(
                name.to_string(),
                Box::new(file),
                spec.is_live(),
            ))
        }
        SourceSpec::Images(paths) => Box::new(ImageSource::new(name.to_string(), paths.clone())),
        SourceSpec::Http(url) => Box::new(HttpMjpegSource::new(url)?),
        #[cfg(feature = "rtsp")]
        SourceSpec::Rtsp(url) => Box::new(RtspSource::open(url, options.rtsp_transport)?),
        #[cfg(not(feature = "rtsp"))]
        SourceSpec::Rtsp(_) => {
            return Err(Error::Source {
                name: without_credentials(name),
                reason: "this build has no RTSP support (dla-runtime feature `rtsp`)".into(),
            })
        }
        SourceSpec::Camera(path) => {
            return Err(Error::Source {
                name: path.display().to_string(),
                reason: "camera sources are opened by the application (dla-edge built with \
                         the `v4l` feature)"
                    .into(),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show() {
        let given = "rtsp://admin:secret@192.168.1.64:554/Streaming/Channels/102";
        let spec = SourceSpec::parse(given).unwrap();
        assert_eq!(spec, SourceSpec::Rtsp(given.into()));
        assert!(spec.is_live());
        assert_eq!(
            spec.shown(given),
            "rtsp://192.168.1.64:554/Streaming/Channels/102"
        );
        assert_eq!(without_credentials("rtsp://cam/live"), "rtsp://cam/live");
        assert_eq!(without_credentials("rtsp://u:p@w@cam"), "rtsp://cam");
    }

    #[test]
    fn parses_schemes_and_paths() {
        assert_eq!(SourceSpec::parse("demo").unwrap(), SourceSpec::Demo);
        assert_eq!(SourceSpec::parse("-").unwrap(), SourceSpec::Stdin);
        assert_eq!(
            SourceSpec::parse("http://cam.local/video").unwrap(),
            SourceSpec::Http("http://cam.local/video".into())
        );
        assert_eq!(
            SourceSpec::parse("/dev/video3").unwrap(),
            SourceSpec::Camera("/dev/video3".into())
        );
        let err = SourceSpec::parse("rtmp://cam/stream")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown source scheme \"rtmp\""), "{err}");
        let err = SourceSpec::parse("/no/such/file.mjpeg")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/no/such/file.mjpeg") && err.contains("no such file"),
            "{err}"
        );
    }

    #[test]
    fn resolves_directories_globs_and_streams() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.png", "a.jpg", "c.txt", "clip.mjpeg"] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let d = dir.path();
        assert_eq!(
            SourceSpec::parse(d.to_str().unwrap()).unwrap(),
            SourceSpec::Images(vec![d.join("a.jpg"), d.join("b.png")])
        );
        let glob = d.join("*.png");
        assert_eq!(
            SourceSpec::parse(glob.to_str().unwrap()).unwrap(),
            SourceSpec::Images(vec![d.join("b.png")])
        );
        let clip = d.join("clip.mjpeg");
        let spec = SourceSpec::parse(clip.to_str().unwrap()).unwrap();
        assert_eq!(spec, SourceSpec::Mjpeg(clip));
        assert!(!spec.is_live(), "a regular file is read at full speed");
        assert!(SourceSpec::parse(d.join("*.gif").to_str().unwrap()).is_err());
    }

    #[test]
    fn glob_matching() {
        assert!(glob_match(b"*.jpg", b"a.jpg"));
        assert!(glob_match(b"f??-*.png", b"f01-x.png"));
        assert!(!glob_match(b"*.jpg", b"a.jpeg"));
        assert!(glob_match(b"*", b""));
    }
}
