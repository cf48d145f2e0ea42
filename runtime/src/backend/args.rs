//! The engine flags every command that runs a model shares (`--backend`,
//! `--threads`, `--ort-lib`, `--allow-cpu-fallback`, `--trt-*`, `--argmax`),
//! defined once (cargo feature `cli`) so `dla-edge segment`/`stream` and
//! `dla-tools bench`/`eval` offer the same choices with the same help.

use std::path::PathBuf;

use clap::Args as ClapArgs;

use super::{
    default_threads, ArgmaxAt, BackendConfig, BackendKind, Pinning, TensorRtSettings, TrtPrecision,
};

/// Which engine runs the model and how.
#[derive(Debug, Clone, ClapArgs)]
pub struct BackendArgs {
    /// Inference engine: tract (pure-Rust CPU, the default), ort-cpu, ort-cuda or
    /// ort-tensorrt (ONNX Runtime, loaded at run time, see --ort-lib; dla-edge
    /// needs a build with `--features ort`; on Jetson, JetPack's onnxruntime-gpu).
    #[arg(long, default_value = "tract", value_name = "ENGINE")]
    pub backend: BackendKind,
    /// Inference threads (default: all cores).
    #[arg(long, short)]
    pub threads: Option<usize>,
    /// Let the OS place tract's inference threads. By default, when the threads
    /// fill the cores this process may use, each is bound to a core of its own:
    /// after the idle gap between a camera's frames the OS can wake two on one
    /// core (2-thread frames at 5-15 fps ran 35-45 % slower on a 2-vCPU VM).
    /// Fewer threads than cores are never bound.
    #[arg(long)]
    pub no_pin: bool,
    /// libonnxruntime to load for ort-* engines (a file or its directory). Default:
    /// $ORT_DYLIB_PATH, then a .venv's onnxruntime wheel near here, Python's
    /// site/dist-packages, /usr/local/lib, /usr/lib. Get one with `pip install onnxruntime`.
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// With ort-cuda/ort-tensorrt: run on the CPU (with a warning) when the GPU
    /// provider cannot be used, instead of failing.
    #[arg(long)]
    pub allow_cpu_fallback: bool,
    /// With ort-tensorrt: the precision TensorRT may build in: fp16 (default),
    /// fp32, or int8 (for QDQ models from `dla-tools quantize --target tensorrt`).
    #[arg(long, default_value = "fp16", value_name = "P")]
    pub trt_precision: TrtPrecision,
    /// With ort-tensorrt: where built engines are kept, one folder per model,
    /// precision, ONNX Runtime build and GPU (building takes minutes on a
    /// Jetson; later starts load it). `none`: no cache. Default:
    /// ~/.cache/dla-edge/tensorrt.
    #[arg(long, value_name = "DIR")]
    pub trt_cache: Option<PathBuf>,
    /// With ort-*: where each pixel's class is picked. `engine`: ONNX Runtime
    /// adds ArgMax (after a bilinear Resize for frames of another size), so on
    /// a GPU only 1 byte per frame pixel is copied back instead of the logits;
    /// `host`: from the logits, here; `auto`: engine on ort-cuda, engine at the
    /// network's output size only on ort-tensorrt, host on ort-cpu.
    #[arg(long, default_value = "auto", value_name = "WHERE")]
    pub argmax: ArgmaxAt,
}

impl BackendArgs {
    /// The backend configuration these flags describe.
    pub fn config(&self, ort_spinning: bool) -> BackendConfig {
        BackendConfig {
            kind: self.backend,
            threads: self.threads.unwrap_or_else(default_threads).max(1),
            pinning: Pinning::when(!self.no_pin),
            ort_library: self.ort_lib.clone(),
            allow_cpu_fallback: self.allow_cpu_fallback,
            ort_spinning,
            tensorrt: TensorRtSettings {
                precision: self.trt_precision,
                engine_cache: TensorRtSettings::cache_from(self.trt_cache.as_deref()),
            },
            argmax: self.argmax,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        backend: BackendArgs,
    }

    #[test]
    fn parses_engines_and_library() {
        let cli = Cli::parse_from(["x", "--backend", "ort-cuda", "--ort-lib", "/x/lib.so"]);
        assert_eq!(cli.backend.backend, BackendKind::OrtCuda);
        assert_eq!(cli.backend.ort_lib, Some(PathBuf::from("/x/lib.so")));
        let cli = Cli::parse_from(["x", "--threads", "2"]);
        assert_eq!(cli.backend.config(true).kind, BackendKind::Tract);
        assert_eq!(cli.backend.config(true).threads, 2);
        assert!(Cli::try_parse_from(["x", "--backend", "cuda"]).is_err());
    }

    #[test]
    fn workers_are_bound_unless_told_not_to() {
        let cli = Cli::parse_from(["x"]);
        assert_eq!(cli.backend.config(true).pinning, Pinning::Auto);
        let cli = Cli::parse_from(["x", "--no-pin"]);
        assert_eq!(cli.backend.config(true).pinning, Pinning::Off);
    }

    #[test]
    fn tensorrt_precision_and_engine_cache() {
        let cli = Cli::parse_from(["x"]);
        let trt = cli.backend.config(true).tensorrt;
        assert_eq!(trt.precision, TrtPrecision::Fp16);
        assert_eq!(trt.engine_cache, TensorRtSettings::default_cache_dir());
        let cli = Cli::parse_from(["x", "--trt-precision", "int8", "--trt-cache", "none"]);
        let trt = cli.backend.config(true).tensorrt;
        assert_eq!(
            (trt.precision, trt.engine_cache),
            (TrtPrecision::Int8, None)
        );
        let cli = Cli::parse_from(["x", "--trt-cache", "/var/cache/engines"]);
        let dir = cli.backend.config(true).tensorrt.engine_cache;
        assert_eq!(dir, Some(PathBuf::from("/var/cache/engines")));
        let err = Cli::try_parse_from(["x", "--trt-precision", "int4"]).unwrap_err();
        assert!(err.to_string().contains("fp32, fp16 or int8"), "{err}");
    }

    #[test]
    fn argmax_place() {
        let cli = Cli::parse_from(["x"]);
        assert_eq!(cli.backend.config(true).argmax, ArgmaxAt::Auto);
        let cli = Cli::parse_from(["x", "--argmax", "engine"]);
        assert_eq!(cli.backend.config(true).argmax, ArgmaxAt::Engine);
        let err = Cli::try_parse_from(["x", "--argmax", "gpu"]).unwrap_err();
        assert!(err.to_string().contains("auto, engine or host"), "{err}");
    }
}
