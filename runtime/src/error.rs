//! The library's error type: one variant per stage, each naming what failed
//! and why, so a binary can print it as it is.

use std::path::PathBuf;

/// Everything that can go wrong in dla-runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model file is missing, unreadable, not ONNX, or not a segmentation model we can run.
    #[error("model {path}: {reason}")]
    Model {
        /// The model file.
        path: PathBuf,
        /// What was wrong, in words.
        reason: String,
    },
    /// A model card (metadata or sidecar JSON) is missing or malformed.
    #[error("model card {path}: {reason}")]
    Card {
        /// The model or sidecar file the card came from.
        path: PathBuf,
        /// What was wrong, in words.
        reason: String,
    },
    /// The inference backend failed while preparing or running the network.
    #[error("{backend} backend: {reason}")]
    Backend {
        /// Which backend (e.g. `"tract"`).
        backend: &'static str,
        /// What failed, in words (includes the engine's own message).
        reason: String,
    },
    /// An input image could not be read or decoded.
    #[error("image {path}: {reason}")]
    Image {
        /// The image file (or a description of the source for in-memory data).
        path: PathBuf,
        /// What was wrong, in words.
        reason: String,
    },
    /// A frame handed to the pipeline is unusable (zero-sized, wrong buffer length).
    #[error("frame: {0}")]
    Frame(String),
    /// A frame source cannot be opened or has failed for good (bad URI,
    /// missing device or file, unreachable camera).
    #[error("source {name}: {reason}")]
    Source {
        /// The source as the user named it (`-`, a path, a URL, `/dev/video0`).
        name: String,
        /// What was wrong, in words.
        reason: String,
    },
    /// One frame from a source is unusable (truncated or corrupt JPEG, garbage
    /// bytes, wrong size); the stream itself goes on.
    #[error("{name}: corrupt frame: {reason}")]
    Corrupt {
        /// The source the frame came from.
        name: String,
        /// What was wrong, in words.
        reason: String,
    },
    /// An output (web viewer, recorder, JSON lines) failed.
    #[error("{sink}: {reason}")]
    Sink {
        /// Which output, e.g. `"viewer 127.0.0.1:8080"` or a directory.
        sink: String,
        /// What failed, in words.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl Error {
    /// True when the error concerns one frame only: drop it and carry on.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Image { .. } | Error::Frame(_) | Error::Corrupt { .. }
        )
    }
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
