//! Frame sources: where images come from. Still images from files for now;
//! cameras, pipes and the animated demo join here with the streaming pipeline.

mod file;

pub use file::{read_rgb8, RgbImage};
