//! V4L2 cameras (`/dev/videoN`, cargo feature `v4l`): device listing for
//! `dla-edge cameras` and a [`Source`] for `dla-edge stream`.
//!
//! Mode choice, MJPEG/YUYV decoding and the reopen back-off are
//! `dla_runtime::source::camera` (tested without a camera); this file only
//! talks to the driver. v4l's mmap stream borrows itself for every buffer, so
//! it lives on its own `camera` thread, which decodes into recycled frames and
//! hands them over a one-slot channel (the newest frame wins). A camera that
//! disappears is reopened with back-off and the stream goes on when it returns.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use dla_runtime::source::camera::{choose_mode, Backoff, CameraDecoder, CameraMode, PixelFormat};
use dla_runtime::source::{Frame, Source, SourceOptions};
use dla_runtime::{Error, Result};
use v4l::buffer::Type;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

fn fail(path: &Path, reason: String) -> Error {
    Error::Source {
        name: path.display().to_string(),
        reason,
    }
}

fn best_fps(dev: &Device, fourcc: FourCC, w: u32, h: u32) -> f32 {
    let rate = |n: u32, d: u32| d as f32 / n.max(1) as f32;
    dev.enum_frameintervals(fourcc, w, h)
        .unwrap_or_default()
        .into_iter()
        .map(|fi| match fi.interval {
            FrameIntervalEnum::Discrete(f) => rate(f.numerator, f.denominator),
            FrameIntervalEnum::Stepwise(s) => rate(s.min.numerator, s.min.denominator),
        })
        .fold(0.0, f32::max)
}

/// The MJPEG and YUYV modes a device offers.
pub fn modes(dev: &Device) -> std::io::Result<Vec<CameraMode>> {
    let mut out = Vec::new();
    for desc in dev.enum_formats()? {
        let Some(format) = PixelFormat::from_fourcc(&desc.fourcc.repr) else {
            continue;
        };
        for size in dev.enum_framesizes(desc.fourcc)? {
            for d in size.size.to_discrete() {
                out.push(CameraMode {
                    format,
                    width: d.width,
                    height: d.height,
                    fps: best_fps(dev, desc.fourcc, d.width, d.height),
                });
            }
        }
    }
    Ok(out)
}

/// Prints every V4L2 device and its usable modes (`dla-edge cameras`).
pub fn list() -> anyhow::Result<()> {
    let nodes = v4l::context::enum_devices();
    if nodes.is_empty() {
        println!("no V4L2 devices (/dev/video*) found");
    }
    for node in nodes {
        let name = node.name().unwrap_or_else(|| "?".into());
        println!("{}  {name}", node.path().display());
        match Device::with_path(node.path()).and_then(|d| modes(&d)) {
            Ok(m) if m.is_empty() => println!("    no MJPEG or YUYV capture modes"),
            Ok(m) => {
                for mode in m {
                    let fourcc = mode.format.fourcc();
                    println!(
                        "    {} {}x{} up to {:.0} fps",
                        String::from_utf8_lossy(&fourcc),
                        mode.width,
                        mode.height,
                        mode.fps
                    );
                }
            }
            Err(e) => println!("    cannot query: {e}"),
        }
    }
    Ok(())
}

/// Opens the device and starts streaming in the chosen mode.
fn open(
    path: &Path,
    want: Option<(u32, u32)>,
    fps: f32,
) -> Result<(Device, Stream<'static>, CameraDecoder)> {
    let dev = Device::with_path(path).map_err(|e| fail(path, format!("cannot open: {e}")))?;
    let offered = modes(&dev).map_err(|e| fail(path, format!("cannot list formats: {e}")))?;
    let mode = choose_mode(&offered, want, fps)
        .ok_or_else(|| fail(path, "offers neither MJPEG nor YUYV capture".into()))?;
    let mut format = dev
        .format()
        .map_err(|e| fail(path, format!("cannot read the format: {e}")))?;
    format.width = mode.width;
    format.height = mode.height;
    format.fourcc = FourCC::new(&mode.format.fourcc());
    let format = dev.set_format(&format).map_err(|e| {
        fail(
            path,
            format!("cannot set {}x{}: {e}", mode.width, mode.height),
        )
    })?;
    let Some(got) = PixelFormat::from_fourcc(&format.fourcc.repr) else {
        return Err(fail(path, format!("driver chose format {}", format.fourcc)));
    };
    if fps > 0.0 {
        let _ = dev.set_params(&v4l::video::capture::Parameters::with_fps(
            fps.round() as u32
        ));
    }
    let actual = CameraMode {
        format: got,
        width: format.width,
        height: format.height,
        fps: mode.fps,
    };
    log::info!("{}: {actual:?}", path.display());
    let stream = Stream::with_buffers(&dev, Type::VideoCapture, 4)
        .map_err(|e| fail(path, format!("cannot start streaming: {e}")))?;
    Ok((
        dev,
        stream,
        CameraDecoder::new(actual, format.stride as usize),
    ))
}

/// The camera thread: captures and decodes until the source is dropped,
/// reopening a vanished camera with back-off.
fn run(
    path: PathBuf,
    want: Option<(u32, u32)>,
    fps: f32,
    frames: SyncSender<Result<Frame>>,
    recycled: Receiver<Frame>,
    first: (Device, Stream<'static>, CameraDecoder),
) {
    let name = path.display().to_string();
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    let mut current = Some(first);
    loop {
        let Some((_dev, stream, decoder)) = current.as_mut() else {
            let wait = backoff.next_delay();
            std::thread::sleep(wait);
            match open(&path, want, fps) {
                Ok(c) => {
                    log::warn!("{name}: camera is back");
                    current = Some(c);
                }
                Err(e) => log::debug!("{e}; retrying in {:?}", backoff.next_delay()),
            }
            continue;
        };
        let t0 = Instant::now();
        let mut frame = recycled.try_recv().unwrap_or_default();
        let result = match stream.next() {
            Ok((buf, meta)) => {
                backoff.reset();
                frame.capture = t0.elapsed();
                frame.timestamp = SystemTime::now();
                frame.origin.clear();
                let used = (meta.bytesused as usize).min(buf.len());
                decoder
                    .decode(&name, &buf[..used], &mut frame)
                    .map(|()| frame)
            }
            Err(e) => {
                log::warn!("{name}: capture failed ({e}); reopening");
                current = None;
                continue;
            }
        };
        match frames.try_send(result) {
            Ok(()) | Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

/// A V4L2 camera as a live [`Source`].
pub struct CameraSource {
    name: String,
    frames: Receiver<Result<Frame>>,
    recycle: SyncSender<Frame>,
}

impl CameraSource {
    /// Opens `path` (errors now if it cannot be opened at all) and starts the
    /// camera thread.
    pub fn open(path: &Path, options: &SourceOptions) -> Result<CameraSource> {
        let first = open(path, options.size, options.fps)?;
        let (tx, frames) = mpsc::sync_channel(1);
        let (recycle, recycled) = mpsc::sync_channel(2);
        let (p, want, fps) = (path.to_path_buf(), options.size, options.fps);
        std::thread::Builder::new()
            .name("camera".into())
            .spawn(move || run(p, want, fps, tx, recycled, first))
            .map_err(|e| fail(path, format!("cannot start the camera thread: {e}")))?;
        Ok(CameraSource {
            name: path.display().to_string(),
            frames,
            recycle,
        })
    }
}

impl Source for CameraSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_live(&self) -> bool {
        true
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        match self.frames.recv() {
            Ok(Ok(mut f)) => {
                std::mem::swap(frame, &mut f);
                let _ = self.recycle.try_send(f);
                Ok(true)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(false),
        }
    }
}
