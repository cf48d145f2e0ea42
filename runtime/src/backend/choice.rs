//! Picking a backend by name: the one place that turns `--backend` (or a
//! config value) into a concrete engine, so every command offers the same
//! choices and the same errors.
//!
//! The names exist in every build; asking for an ONNX Runtime backend in a
//! build without the `ort` feature is an error that says how to rebuild,
//! rather than an unknown value.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::{Backend, Pinning, TractBackend};
use crate::error::Result;
use crate::model::Model;

/// `name()`, `Display` and `FromStr` for a choice enum from its names, with
/// an error that lists them: `unknown argmax place "gpu"; choose auto,
/// engine or host`.
macro_rules! named_choices {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The name used on command lines and in configs.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(format!(
                        "unknown {} {s:?}; choose {}",
                        $what,
                        one_of(&[$($name),+])
                    )),
                }
            }
        }
    };
}

/// `a, b or c`.
fn one_of(names: &[&str]) -> String {
    match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The inference engines a command can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendKind {
    /// tract on the CPU: the default, pure Rust, no system libraries.
    #[default]
    Tract,
    /// ONNX Runtime, CPU execution provider.
    OrtCpu,
    /// ONNX Runtime, CUDA execution provider (GPU builds only).
    OrtCuda,
    /// ONNX Runtime, TensorRT execution provider with CUDA (GPU builds only).
    OrtTensorRt,
}

impl BackendKind {
    /// Every kind, in the order help texts list them.
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Tract,
        BackendKind::OrtCpu,
        BackendKind::OrtCuda,
        BackendKind::OrtTensorRt,
    ];

    /// The name used on command lines and in reports.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
            BackendKind::OrtCpu => "ort-cpu",
            BackendKind::OrtCuda => "ort-cuda",
            BackendKind::OrtTensorRt => "ort-tensorrt",
        }
    }

    /// True for the ONNX Runtime kinds.
    pub fn is_ort(self) -> bool {
        !matches!(self, BackendKind::Tract)
    }

    /// True when this build has the engine (`ort-*` need the `ort` feature).
    pub fn is_compiled_in(self) -> bool {
        !self.is_ort() || cfg!(feature = "ort")
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = String;

    /// Parses `tract`, `ort-cpu`, `ort-cuda`, `ort-tensorrt` (and `ort` for `ort-cpu`).
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        if s == "ort" {
            return Ok(BackendKind::OrtCpu);
        }
        BackendKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = BackendKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown backend {s:?}; choose one of {}", names.join(", "))
            })
    }
}

/// Precision TensorRT may build its engine in (`--trt-precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrtPrecision {
    /// fp32 only: the reference numerics, slowest.
    Fp32,
    /// fp16 where TensorRT finds it faster (the default, as on jetson-inference).
    #[default]
    Fp16,
    /// int8 for the quantized layers of a QDQ model (`dla-tools quantize
    /// --target tensorrt`), fp16 for the rest.
    Int8,
}

named_choices!(TrtPrecision, "TensorRT precision", {
    Fp32 => "fp32",
    Fp16 => "fp16",
    Int8 => "int8",
});

/// Where each pixel's best class is chosen (`--argmax`).
///
/// A frame needs its label map, not the logits. An engine on a GPU can take
/// the argmax (and the bilinear upsampling to the frame's size) next to the
/// network, and then only one byte per frame pixel crosses back to the host
/// instead of 4 bytes per class and output pixel (10 MB per frame for 19
/// classes at 512x256).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArgmaxAt {
    /// `engine` on CUDA; on TensorRT at the output's size only; `host` on the CPU.
    #[default]
    Auto,
    /// The inference engine computes it (ONNX Runtime: an `ArgMax` node added
    /// after the network's output); tract has no such path and ignores it.
    Engine,
    /// Our post-processing computes it from the logits.
    Host,
}

named_choices!(ArgmaxAt, "argmax place", {
    Auto => "auto",
    Engine => "engine",
    Host => "host",
});

/// How the TensorRT provider builds and keeps its engines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TensorRtSettings {
    /// Engine precision.
    pub precision: TrtPrecision,
    /// Where built engines are kept, in a folder per model, precision,
    /// ONNX Runtime build and GPU (building one takes minutes on a Jetson).
    /// `None`: no cache, an engine is built at every start.
    pub engine_cache: Option<PathBuf>,
}

impl TensorRtSettings {
    /// The default cache: `$CACHE_DIRECTORY/tensorrt` under systemd (the
    /// unit's `CacheDirectory=`, `/var/cache/dla-edge`: the service's home is
    /// hidden by `ProtectHome`), else `$XDG_CACHE_HOME/dla-edge/tensorrt`,
    /// else `~/.cache/dla-edge/tensorrt`, else none.
    pub fn default_cache_dir() -> Option<PathBuf> {
        Self::default_cache_dir_in(|key| std::env::var_os(key))
    }

    /// [`TensorRtSettings::default_cache_dir`] with the environment given.
    fn default_cache_dir_in(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
        let set = |key: &str| env(key).filter(|v| !v.is_empty());
        if let Some(dirs) = set("CACHE_DIRECTORY") {
            // systemd joins several CacheDirectory= entries with ':'.
            let first = dirs.to_string_lossy().split(':').next().map(PathBuf::from);
            return first.map(|d| d.join("tensorrt"));
        }
        let base = set("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| set("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("dla-edge").join("tensorrt"))
    }

    /// The engine cache a user named (`--trt-cache`, `backend.trt_cache`): a
    /// folder, `none` for no cache, or nothing for the default.
    pub fn cache_from(named: Option<&std::path::Path>) -> Option<PathBuf> {
        match named {
            Some(dir) if dir.as_os_str() == "none" => None,
            Some(dir) => Some(dir.to_path_buf()),
            None => Self::default_cache_dir(),
        }
    }
}

/// Everything needed to build a backend for a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// Which engine.
    pub kind: BackendKind,
    /// Inference threads (at least 1).
    pub threads: usize,
    /// For `tract`: whether its workers are bound to cores ([`Pinning`]).
    pub pinning: Pinning,
    /// ONNX Runtime library to load (`None`: `ORT_DYLIB_PATH`, then well-known places).
    pub ort_library: Option<PathBuf>,
    /// For `ort-cuda`/`ort-tensorrt`: run on the CPU, with a warning, when the
    /// GPU provider cannot be used, instead of failing.
    pub allow_cpu_fallback: bool,
    /// Let ONNX Runtime's idle worker threads spin (its default); see
    /// `OrtOptions::spinning`.
    pub ort_spinning: bool,
    /// For `ort-tensorrt`: engine precision and cache.
    pub tensorrt: TensorRtSettings,
    /// For `ort-*`: where the per-pixel argmax is taken when only labels are needed.
    pub argmax: ArgmaxAt,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            kind: BackendKind::Tract,
            threads: super::default_threads(),
            pinning: Pinning::Auto,
            ort_library: None,
            allow_cpu_fallback: false,
            ort_spinning: true,
            tensorrt: TensorRtSettings::default(),
            argmax: ArgmaxAt::Auto,
        }
    }
}

impl BackendConfig {
    /// A tract backend with `threads` threads.
    pub fn tract(threads: usize) -> BackendConfig {
        BackendConfig {
            threads,
            ..BackendConfig::default()
        }
    }

    /// Builds the configured backend for `model`.
    pub fn build(&self, model: &Model) -> Result<Box<dyn Backend>> {
        let threads = self.threads.max(1);
        match self.kind {
            BackendKind::Tract => Ok(Box::new(TractBackend::with_pinning(
                model,
                threads,
                self.pinning,
            )?)),
            kind => self.build_ort(model, kind, threads),
        }
    }

    #[cfg(feature = "ort")]
    fn build_ort(
        &self,
        model: &Model,
        kind: BackendKind,
        threads: usize,
    ) -> Result<Box<dyn Backend>> {
        use super::{OrtBackend, OrtOptions, OrtProvider};
        let provider = match kind {
            BackendKind::OrtCuda => OrtProvider::Cuda,
            BackendKind::OrtTensorRt => OrtProvider::TensorRt,
            _ => OrtProvider::Cpu,
        };
        let options = OrtOptions {
            threads,
            provider,
            library: self.ort_library.clone(),
            allow_cpu_fallback: self.allow_cpu_fallback,
            spinning: self.ort_spinning,
            tensorrt: self.tensorrt.clone(),
            argmax: self.argmax,
            ..OrtOptions::default()
        };
        Ok(Box::new(OrtBackend::new(model, &options)?))
    }

    #[cfg(not(feature = "ort"))]
    fn build_ort(
        &self,
        _model: &Model,
        kind: BackendKind,
        _threads: usize,
    ) -> Result<Box<dyn Backend>> {
        Err(crate::error::Error::Backend {
            backend: "ort",
            reason: format!(
                "--backend {kind}: this build has no ONNX Runtime backend; rebuild with the \
                 `ort` feature (e.g. `cargo build -p dla-firmware --features ort`)"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value reads back from its name; `bad` is refused with `error`.
    fn round_trip<T>(values: &[T], (bad, error): (&str, &str))
    where
        T: FromStr<Err = String> + fmt::Display + PartialEq + fmt::Debug,
    {
        for value in values {
            assert_eq!(value.to_string().parse::<T>().as_ref(), Ok(value));
        }
        assert_eq!(bad.parse::<T>().unwrap_err(), error);
    }

    #[test]
    fn names_round_trip() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.name().parse::<BackendKind>(), Ok(kind));
        }
        assert_eq!("ort".parse::<BackendKind>(), Ok(BackendKind::OrtCpu));
        let err = "cuda".parse::<BackendKind>().unwrap_err();
        assert!(err.contains("ort-cuda"), "{err}");
        round_trip(
            &[ArgmaxAt::Auto, ArgmaxAt::Engine, ArgmaxAt::Host],
            (
                "gpu",
                "unknown argmax place \"gpu\"; choose auto, engine or host",
            ),
        );
        round_trip(
            &[TrtPrecision::Fp32, TrtPrecision::Fp16, TrtPrecision::Int8],
            (
                "bf16",
                "unknown TensorRT precision \"bf16\"; choose fp32, fp16 or int8",
            ),
        );
    }

    #[test]
    fn tensorrt_cache_follows_systemd_then_xdg_then_home() {
        let dir = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            TensorRtSettings::default_cache_dir_in(|key| {
                vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.into())
            })
        };
        let all = [
            ("CACHE_DIRECTORY", "/var/cache/dla-edge:/var/cache/other"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(dir(&all), Some("/var/cache/dla-edge/tensorrt".into()));
        assert_eq!(dir(&all[1..]), Some("/x/dla-edge/tensorrt".into()));
        assert_eq!(
            dir(&all[2..]),
            Some("/home/u/.cache/dla-edge/tensorrt".into())
        );
        assert_eq!(dir(&[("HOME", "")]), None);
    }
}
