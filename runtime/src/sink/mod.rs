//! Sinks: where segmented frames go, the last stage of the data path.
//!
//! The pipeline's output thread **pushes** every processed frame, as an
//! [`Output`] that borrows the frame and its labels, to each [`Sink`] in turn.
//! The overlay is blended on the first [`Output::overlay`] call of a frame,
//! so a pipeline whose sinks only want labels and coverage (JSON lines,
//! events, a viewer nobody watches) never pays for it; sinks copy what they keep (the viewer encodes JPEGs
//! into shared slots, the recorder writes files, the JSON writer a line) and
//! own their buffers. A sink must return quickly: a slow sink slows the output
//! thread, and for live sources that makes the pipeline drop frames.
//!
//! | sink | what |
//! |---|---|
//! | [`Viewer`] | built-in web viewer: live MJPEG overlay and camera, stats, snapshots, Prometheus metrics |
//! | [`RecordSink`] | overlay / colour mask / class-ID PNGs of every Nth frame to a directory |
//! | [`JsonLinesSink`] | one JSON line per frame (latencies, class coverage) for other programs |

mod auth;
mod json;
mod record;
mod viewer;

pub use auth::ViewerAuth;
pub use json::JsonLinesSink;
pub use record::{RecordSink, RecordWhat};
pub use viewer::{encode_jpeg, Viewer, ViewerOptions};

use std::cell::{Cell, OnceCell};

use crate::classes::ClassInfo;
use crate::error::Result;
use crate::postprocess::Palette;
use crate::source::Frame;
use crate::timings::FrameTimings;

/// One processed frame as the sinks see it.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    /// 1-based number of the frame among the processed ones.
    pub index: u64,
    /// The captured frame (RGB8).
    pub frame: &'a Frame,
    /// One class ID per pixel, frame-sized.
    pub labels: &'a [u8],
    /// The overlay, blended on first use: see [`Output::overlay`].
    pub blend: &'a LazyOverlay,
    /// Fraction of pixels per class, indexed by class ID.
    pub coverage: &'a [f32],
    /// The model's classes.
    pub classes: &'a [ClassInfo],
    /// Class colours.
    pub palette: &'a Palette,
    /// Stage timings so far; `render` covers the overlay and the sinks that
    /// ran before this one.
    pub timings: FrameTimings,
}

impl<'a> Output<'a> {
    /// The frame with class colours blended over it (RGB8, frame-sized),
    /// blended by the first sink of the frame that asks.
    pub fn overlay(&self) -> &'a [u8] {
        self.blend.get(self.frame, self.labels, self.palette)
    }

    /// How strongly class colours cover the picture in the overlay (0..1).
    pub fn alpha(&self) -> f32 {
        self.blend.alpha
    }
}

/// The overlay of the frame being output, blended when first asked for;
/// its buffer is reused from frame to frame.
#[derive(Default)]
pub struct LazyOverlay {
    blended: OnceCell<Vec<u8>>,
    spare: Cell<Vec<u8>>,
    alpha: f32,
}

impl LazyOverlay {
    /// Overlays at opacity `alpha`.
    pub fn new(alpha: f32) -> LazyOverlay {
        LazyOverlay {
            alpha,
            ..LazyOverlay::default()
        }
    }

    fn get(&self, frame: &Frame, labels: &[u8], palette: &Palette) -> &[u8] {
        self.blended.get_or_init(|| {
            let mut buf = self.spare.take();
            buf.resize(frame.data.len(), 0);
            palette.overlay(&frame.data, labels, self.alpha, &mut buf);
            buf
        })
    }

    /// Forgets the overlay of the frame that was output, keeping its buffer.
    pub fn next_frame(&mut self) {
        if let Some(buf) = self.blended.take() {
            self.spare.set(buf);
        }
    }

    /// Whether the current frame's overlay was blended (a sink asked).
    pub fn is_blended(&self) -> bool {
        self.blended.get().is_some()
    }
}

impl std::fmt::Debug for LazyOverlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyOverlay")
            .field("blended", &self.is_blended())
            .field("alpha", &self.alpha)
            .finish()
    }
}

/// A consumer of processed frames (push model, driven by the pipeline).
pub trait Sink: Send {
    /// Short description for messages, e.g. `"recorder rec/"`.
    fn name(&self) -> String;

    /// Handles one frame. An error stops the pipeline.
    fn write(&mut self, out: &Output<'_>) -> Result<()>;

    /// Flushes and closes; called once when the pipeline stops.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}
