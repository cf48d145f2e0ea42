//! Inference backends: the stage that turns a normalised input tensor into
//! class logits.
//!
//! Ownership: a backend owns both its input and its output buffers. The
//! pre-processor writes straight into [`Backend::input_mut`], [`Backend::run`]
//! executes the network, and the post-processor reads [`Backend::logits`], so a
//! frame crosses the network without a copy. tract (CPU) is the default; the
//! ONNX Runtime backend (cargo feature `ort`: CPU, CUDA, TensorRT) plugs in
//! behind the same trait.

#[cfg(feature = "ort")]
mod argmax_graph;
#[cfg(feature = "cli")]
mod args;
mod choice;
mod labels_head;
#[cfg(feature = "ort")]
mod ort;
mod tract;
mod workers;

#[cfg(feature = "cli")]
pub use self::args::BackendArgs;
pub use self::choice::{ArgmaxAt, BackendConfig, BackendKind, TensorRtSettings, TrtPrecision};
#[cfg(feature = "ort")]
pub use self::ort::{
    find_library, library_search_dirs, loaded_ort, OrtBackend, OrtOptions, OrtProvider,
};
pub use self::tract::{ConvKernel, NodeTiming, TractBackend};
pub use self::workers::Pinning;

use crate::error::Result;

/// Class scores of one frame, NCHW with N = 1.
#[derive(Debug, Clone, Copy)]
pub struct Logits<'a> {
    /// `classes * height * width` scores, class-major.
    pub data: &'a [f32],
    /// Number of classes (channels).
    pub classes: usize,
    /// Output height.
    pub height: usize,
    /// Output width.
    pub width: usize,
}

impl Logits<'_> {
    /// The score plane of one class, `height * width` values.
    pub fn plane(&self, class: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.data[class * n..(class + 1) * n]
    }
}

/// How many of a network's nodes one execution provider of the engine runs
/// (ONNX Runtime reports this when it loads a model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlacement {
    /// The provider, as the engine names it, e.g. `"CUDAExecutionProvider"`.
    pub provider: String,
    /// Nodes it runs.
    pub nodes: usize,
}

/// One line for people: `"460 nodes on CUDA, 58 on CPU"`; `None` when the
/// engine reported nothing.
pub fn describe_placement(placement: &[NodePlacement]) -> Option<String> {
    let parts: Vec<String> = placement
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let name = p.provider.trim_end_matches("ExecutionProvider");
            let nodes = match (i, p.nodes) {
                (0, 1) => " node",
                (0, _) => " nodes",
                _ => "",
            };
            format!("{}{nodes} on {name}", p.nodes)
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// An engine that runs a loaded segmentation network.
pub trait Backend: Send {
    /// Short engine name for logs and reports, e.g. `"tract"`.
    fn name(&self) -> &'static str;

    /// The 1x3xHxW input tensor (NCHW, normalised) to fill before [`Backend::run`].
    fn input_mut(&mut self) -> &mut [f32];

    /// Runs the network on the current input.
    fn run(&mut self) -> Result<()>;

    /// The logits of the last [`Backend::run`]. Their shape is valid before
    /// any run (their data may then be empty); their values are not the
    /// frame's after [`Backend::run_labels`].
    fn logits(&self) -> Logits<'_>;

    /// Runs the network and writes the best class of every pixel of a
    /// `size` = (width, height) label map into `labels`, when this backend
    /// takes the argmax itself, next to the network: on a GPU only the class
    /// IDs then leave it. At the logits' own size that is the argmax of
    /// [`Backend::logits`]; at another size, of the logits resized bilinearly
    /// (half-pixel centres, as `Resampler::bilinear_argmax`). Returns
    /// `Ok(false)` without running when it cannot (the default); the caller
    /// then runs [`Backend::run`] and works from the logits.
    fn run_labels(&mut self, labels: &mut [u8], size: (usize, usize)) -> Result<bool> {
        let _ = (labels, size);
        Ok(false)
    }

    /// Whether [`Backend::run_labels`] gives, by construction, exactly the
    /// labels the caller's argmax of [`Backend::logits`] would (tract's
    /// labels head, tested so): the caller then skips its check of the
    /// first labels-only frame, and the full logits are never computed.
    fn labels_exact(&self) -> bool {
        false
    }

    /// Whether the user asked for [`Backend::run_labels`] (`--argmax engine`).
    /// The caller checks the first labels-only frame of each kind against its
    /// own argmax of the same logits: labels that disagree (or a run that
    /// fails) are then an error; when the engine's argmax was only chosen by
    /// default (`auto`), the caller warns and works from the logits instead.
    fn labels_required(&self) -> bool {
        false
    }

    /// Which execution provider runs how many nodes, as the engine reported
    /// at load; empty for engines without providers (tract).
    fn placement(&self) -> &[NodePlacement] {
        &[]
    }

    /// Which of our micro-kernels each convolution runs on (tract with our
    /// operators); empty for engines that pick their own.
    fn conv_kernels(&self) -> Vec<ConvKernel> {
        Vec::new()
    }

    /// The CPU each inference worker is bound to, in worker order; empty
    /// when the OS places them (one thread, `Pinning::Off`, other engines).
    fn pinned_cpus(&self) -> &[usize] {
        &[]
    }
}

/// `", bound to CPUs 0, 1"` after a thread count in a start-up or bench
/// line ([`Backend::pinned_cpus`]); empty when the OS places the threads.
pub fn describe_pinning(cpus: &[usize]) -> String {
    if cpus.is_empty() {
        return String::new();
    }
    let cpus: Vec<String> = cpus.iter().map(usize::to_string).collect();
    format!(", bound to CPUs {}", cpus.join(", "))
}

/// Number of threads to use when the user did not say: all available cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_reads_as_one_line() {
        let on = |provider: &str, nodes| NodePlacement {
            provider: provider.into(),
            nodes,
        };
        assert_eq!(describe_placement(&[]), None);
        let one = [on("CPUExecutionProvider", 98)];
        assert_eq!(describe_placement(&one).unwrap(), "98 nodes on CPU");
        let two = [
            on("CUDAExecutionProvider", 460),
            on("CPUExecutionProvider", 58),
        ];
        assert_eq!(
            describe_placement(&two).unwrap(),
            "460 nodes on CUDA, 58 on CPU"
        );
    }
}
