//! dla-runtime: run Deep Layer Aggregation (DLA) semantic segmentation on
//! edge boards.
//!
//! The data path, one module per stage:
//!
//! ```text
//! source ──► preprocess ──► backend ──► postprocess ──► sink
//! RGB8 frame  resize+normalise  tract     argmax, resample,  web viewer,
//! (demo, MJPEG, into the backend's        palette, coverage  recorder,
//! HTTP, files)  input tensor                                 JSON lines
//! ```
//!
//! [`pipeline::Pipeline`] runs that path live: capture, inference and output
//! on their own threads with bounded queues, per-stage latency histograms and
//! clean shutdown; `dla-edge stream` is a thin binary around it.
//!
//! [`Model`] loads an ONNX file and its [`ModelCard`] (classes, colours,
//! normalisation) and checks both once, at load. [`Segmenter`] ties the stages
//! together for the common case:
//!
//! ```no_run
//! use dla_runtime::{Model, Segmenter, SegmenterOptions};
//! use dla_runtime::source::read_rgb8;
//!
//! # fn main() -> dla_runtime::Result<()> {
//! let model = Model::load("models/dla-tiny-seg.onnx")?;
//! let mut segmenter = Segmenter::new(&model, SegmenterOptions::default())?;
//! let image = read_rgb8("models/samples/street-000.png".as_ref())?;
//! let result = segmenter.segment(image.frame())?;
//! println!("{} pixels labelled in {:?}", result.labels.len(), result.timings.total());
//! # Ok(())
//! # }
//! ```
//!
//! The [`synth`] module renders the synthetic street scenes the shipped model
//! was trained on; the tools and tests use it for data.
#![deny(missing_docs)]

pub mod backend;
pub mod classes;
pub mod error;
pub mod frame;
pub mod heap;
pub mod metrics;
pub mod model;
pub mod npy;
pub mod ops;
pub mod pipeline;
pub mod postprocess;
pub mod preprocess;
pub mod segmenter;
pub mod sink;
pub mod source;
pub mod synth;
pub mod timings;

pub use error::{Error, Result};
pub use frame::FrameRef;
pub use model::{Model, ModelCard};
pub use segmenter::{Segmentation, Segmenter, SegmenterOptions};
pub use timings::StageTimings;
