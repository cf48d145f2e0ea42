//! Sinks: where segmented frames go, the last stage of the data path.
//!
//! The pipeline's output thread **pushes** every processed frame, as an
//! [`Output`] that borrows the frame, its labels and the rendered overlay, to
//! each [`Sink`] in turn; sinks copy what they keep (the viewer encodes JPEGs
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
    /// The frame with class colours blended over it (RGB8, frame-sized).
    pub overlay: &'a [u8],
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
