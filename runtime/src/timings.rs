//! How long a frame took, stage by stage: the segmenter's three stages
//! ([`StageTimings`]) and the streaming pipeline's six ([`FrameTimings`]),
//! which the pipeline's statistics and the sinks both read.

use std::time::Duration;

/// Time one frame spent in each of the [`crate::Segmenter`]'s stages.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimings {
    /// Resize + normalise.
    pub pre: Duration,
    /// Network.
    pub infer: Duration,
    /// Argmax + resampling to the frame size (the argmax is in `infer` when
    /// the backend takes it, see [`crate::backend::Backend::run_labels`]).
    pub post: Duration,
}

impl StageTimings {
    /// Sum of all stages.
    pub fn total(&self) -> Duration {
        self.pre + self.infer + self.post
    }
}

/// The stages whose latency is measured, in data-path order.
pub const STAGES: [&str; 6] = ["capture", "decode", "pre", "infer", "post", "render"];

/// Time one frame spent in each stage of the streaming pipeline ([`STAGES`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrameTimings {
    /// Acquiring the bytes (read, render, camera buffer).
    pub capture: Duration,
    /// Decoding or converting to RGB8.
    pub decode: Duration,
    /// Resize + normalise.
    pub pre: Duration,
    /// Network.
    pub infer: Duration,
    /// Argmax + resampling to the frame size.
    pub post: Duration,
    /// Overlay, encoding and writing the outputs.
    pub render: Duration,
}

impl FrameTimings {
    /// The stages as an array in [`STAGES`] order.
    pub fn as_array(&self) -> [Duration; 6] {
        [
            self.capture,
            self.decode,
            self.pre,
            self.infer,
            self.post,
            self.render,
        ]
    }

    /// Sum of all stages.
    pub fn total(&self) -> Duration {
        self.as_array().iter().sum()
    }
}
