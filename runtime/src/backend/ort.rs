//! The ONNX Runtime backend (cargo feature `ort`): the reference engine we
//! measure tract against on the CPU, and the GPU path on Jetson boards
//! (CUDA and TensorRT execution providers).
//!
//! Why it is built this way:
//! - **Loaded at run time.** The `ort` crate is built with `load-dynamic`:
//!   nothing is downloaded or linked at build time, and the library comes from
//!   what the machine has (the PyPI `onnxruntime` wheel, JetPack's
//!   `onnxruntime-gpu`, a source build). [`find_library`] looks, in order, at an
//!   explicit path, `ORT_DYLIB_PATH`, then well-known places, and its error says
//!   where it looked and how to install one. ONNX Runtime 1.17 or newer is
//!   required (ort's `api-17` level).
//! - **One library per process.** ONNX Runtime's C API is process-global: the
//!   first backend loads the library and every later one must name the same
//!   file (a different one is an error, not a silent swap).
//! - **Never silently on the CPU.** CUDA and TensorRT are registered with
//!   `error_on_failure`, after checking that the loaded library was built with
//!   them; a CPU-only library gives an error unless the caller allowed CPU
//!   fallback, and then the backend's [`Backend::name`] says `ort-cpu`.
//! - **Buffers owned here, reused.** Input and output tensors are allocated once
//!   by ONNX Runtime's CPU allocator and bound with an `IoBinding`: the
//!   pre-processor writes into the bound input and the post-processor reads the
//!   bound output, so a frame crosses the network without a copy on the CPU.
//!   On a GPU the input is bound again each frame (ONNX Runtime uploads a host
//!   input when it is bound). (Per run, ort still allocates the small array of
//!   output handles that `GetBoundOutputValues` returns.)
//! - **Labels without the logits.** With `--argmax engine` (the default on a
//!   GPU) the session's graph has more outputs: the per-pixel argmax as uint8
//!   at the output's size and, where the provider allows, at any frame size
//!   after a bilinear resize (see `argmax_graph`), each bound in its own
//!   `IoBinding`. [`Backend::run_labels`] runs one of those alone: ONNX
//!   Runtime computes the labels where the logits are, and only the class
//!   IDs are copied back.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::ep;
use ort::memory::Allocator;
use ort::session::{IoBinding, RunOptions, Session};
use ort::value::Tensor;

use super::argmax_graph::{
    with_labels_output, FRAME_LABELS_OUTPUT, FRAME_SIZE_INPUT, LABELS_OUTPUT,
};
use super::{
    describe_placement, ArgmaxAt, Backend, Logits, NodePlacement, TensorRtSettings, TrtPrecision,
};
use crate::error::{Error, Result};
use crate::model::Model;

/// Where ONNX Runtime executes the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrtProvider {
    /// The CPU execution provider (every build of ONNX Runtime has it).
    Cpu,
    /// NVIDIA CUDA (a GPU build, e.g. `onnxruntime-gpu`).
    Cuda,
    /// NVIDIA TensorRT, with CUDA for the nodes TensorRT does not take.
    TensorRt,
}

impl OrtProvider {
    /// The backend name this provider gives, e.g. `"ort-cuda"`.
    pub fn backend_name(self) -> &'static str {
        match self {
            OrtProvider::Cpu => "ort-cpu",
            OrtProvider::Cuda => "ort-cuda",
            OrtProvider::TensorRt => "ort-tensorrt",
        }
    }
}

/// How to build an [`OrtBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtOptions {
    /// Intra-op threads (at least 1).
    pub threads: usize,
    /// Execution provider to run on.
    pub provider: OrtProvider,
    /// The libonnxruntime to load; `None`: `ORT_DYLIB_PATH`, then well-known places.
    pub library: Option<PathBuf>,
    /// Run on the CPU provider, with a warning, when CUDA/TensorRT cannot be used.
    pub allow_cpu_fallback: bool,
    /// Let ONNX Runtime's worker threads spin between parallel sections (its
    /// default). Turn it off when another engine shares the cores, e.g. in an
    /// interleaved benchmark, where spinning threads would steal its time.
    pub spinning: bool,
    /// GPU index for CUDA/TensorRT.
    pub device_id: i32,
    /// TensorRT engine precision and cache.
    pub tensorrt: TensorRtSettings,
    /// Whether ONNX Runtime takes the per-pixel argmax for [`Backend::run_labels`].
    pub argmax: ArgmaxAt,
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            threads: super::default_threads(),
            provider: OrtProvider::Cpu,
            library: None,
            allow_cpu_fallback: false,
            spinning: true,
            device_id: 0,
            tensorrt: TensorRtSettings {
                engine_cache: TensorRtSettings::default_cache_dir(),
                ..TensorRtSettings::default()
            },
            argmax: ArgmaxAt::Auto,
        }
    }
}

fn fail(reason: impl std::fmt::Display) -> Error {
    Error::Backend {
        backend: "ort",
        reason: reason.to_string(),
    }
}

/// How to get a libonnxruntime, for error messages.
const INSTALL_HINT: &str =
    "install one with `python3 -m pip install onnxruntime` (CPU; the library \
is in site-packages/onnxruntime/capi/) or, on Jetson, JetPack's onnxruntime-gpu wheel from the \
Jetson Zoo; then pass --ort-lib PATH or set ORT_DYLIB_PATH to the libonnxruntime.so* file";

/// Is this file name a libonnxruntime (`libonnxruntime.so`, `.so.1`, `.so.1.32.0`, `.dylib`)?
fn is_ort_library(name: &str) -> bool {
    name == format!(
        "{}onnxruntime{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ) || (name.starts_with("libonnxruntime.so.") && !name.contains("providers"))
        || (name.starts_with("libonnxruntime.") && name.ends_with(".dylib"))
}

/// The best libonnxruntime in `dir`: the longest (most specific) versioned name,
/// so `libonnxruntime.so.1.32.0` wins over a `libonnxruntime.so` symlink to it.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_ort_library(n))
        .collect();
    found.sort_by_key(|n| (n.len(), n.clone()));
    found.pop().map(|n| dir.join(n))
}

/// `PREFIX/lib/python3*/{site,dist}-packages/onnxruntime/capi` for each python3.x.
fn python_capi_dirs(prefix: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(prefix.join("lib")) else {
        return;
    };
    let mut pythons: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path())
        .collect();
    pythons.sort();
    for py in pythons.into_iter().rev() {
        for pkgs in ["site-packages", "dist-packages"] {
            out.push(py.join(pkgs).join("onnxruntime/capi"));
        }
    }
}

/// The directories [`find_library`] searches when neither an explicit path nor
/// `ORT_DYLIB_PATH` is given, in order.
///
/// A `.venv` (or `$VIRTUAL_ENV`) in the current directory or any parent, and
/// next to the running executable or any of its parents (so a binary in
/// `target/debug` finds the project's `.venv`); the directory of the
/// executable; the user's and the system's Python packages (JetPack installs
/// onnxruntime-gpu there); `/usr/local/lib`, `/usr/lib` and their multiarch
/// directories; `/opt/onnxruntime/lib`.
pub fn library_search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        python_capi_dirs(Path::new(&venv), &mut dirs);
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    if let Some(dir) = &exe_dir {
        roots.extend(dir.ancestors().map(Path::to_path_buf));
    }
    let mut seen = std::collections::HashSet::new();
    for root in roots {
        if seen.insert(root.clone()) {
            python_capi_dirs(&root.join(".venv"), &mut dirs);
        }
    }
    if let Some(dir) = exe_dir {
        dirs.push(dir);
    }
    if let Some(home) = std::env::var_os("HOME") {
        python_capi_dirs(&Path::new(&home).join(".local"), &mut dirs);
    }
    for prefix in ["/usr/local", "/usr"] {
        python_capi_dirs(Path::new(prefix), &mut dirs);
    }
    // Debian's python3-* packages use /usr/lib/python3/dist-packages.
    dirs.push(PathBuf::from(
        "/usr/lib/python3/dist-packages/onnxruntime/capi",
    ));
    for lib in [
        "/usr/local/lib",
        "/usr/lib",
        "/usr/local/lib/aarch64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/local/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/opt/onnxruntime/lib",
    ] {
        dirs.push(PathBuf::from(lib));
    }
    dirs
}

/// Finds the libonnxruntime to load: `explicit` (e.g. `--ort-lib`), then
/// `ORT_DYLIB_PATH`, then the first of [`library_search_dirs`] that has one.
/// A path given explicitly or in the environment may also be a directory.
pub fn find_library(explicit: Option<&Path>) -> Result<PathBuf> {
    let named = |path: &Path, origin: &str| -> Result<PathBuf> {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        if path.is_dir() {
            return library_in(path).ok_or_else(|| {
                fail(format!(
                    "{origin} {}: no libonnxruntime in this directory; {INSTALL_HINT}",
                    path.display()
                ))
            });
        }
        Err(fail(format!(
            "{origin} {}: no such file; {INSTALL_HINT}",
            path.display()
        )))
    };
    if let Some(path) = explicit {
        return named(path, "ONNX Runtime library");
    }
    if let Some(env) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        return named(Path::new(&env), "ORT_DYLIB_PATH");
    }
    let dirs = library_search_dirs();
    if let Some(found) = dirs.iter().find_map(|d| library_in(d)) {
        return Ok(found);
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(fail(format!(
        "no ONNX Runtime library found (no --ort-lib, ORT_DYLIB_PATH unset; looked in {}); {INSTALL_HINT}",
        looked.join(", ")
    )))
}

/// The library this process loaded and its one environment. ONNX Runtime's API
/// table is process-wide (ort keeps it in a global) and ort allows one
/// environment per process, so every backend shares this one, and a second,
/// different library is refused instead of silently using the first.
static LOADED: Mutex<Option<(PathBuf, ort::environment::Environment)>> = Mutex::new(None);

/// The ONNX Runtime this process loaded, if any: the library file and its
/// build description (version, git commit).
pub fn loaded_ort() -> Option<(PathBuf, &'static str)> {
    let loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    loaded.as_ref().map(|(path, _)| (path.clone(), ort::info()))
}

/// ONNX Runtime's messages into `log`: warnings and errors as they are, and
/// the node placement summary a session prints at load ("Node(s) placed on
/// [CUDAExecutionProvider]…") at info level, so `RUST_LOG=info` shows which
/// provider runs which nodes. The rest of its verbose chatter goes to trace.
fn forward_ort_log(level: ort::logging::LogLevel, category: &str, message: &str) {
    use ort::logging::LogLevel;
    match level {
        LogLevel::Error | LogLevel::Fatal => log::error!("onnxruntime: {message}"),
        LogLevel::Warning => log::warn!("onnxruntime: {message}"),
        _ if message.contains("placed on [") => {
            log::info!("onnxruntime: {}", message.trim());
            if let Some(placement) = parse_placement(message) {
                let mut gathered = PLACEMENT.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(list) = gathered.as_mut() {
                    list.push(placement);
                }
            }
        }
        _ => log::trace!("onnxruntime [{category}]: {message}"),
    }
}

/// The node placement of the session being loaded, gathered from ONNX
/// Runtime's log while [`LOADING`] is held (`None` between loads).
static PLACEMENT: Mutex<Option<Vec<NodePlacement>>> = Mutex::new(None);

/// Held while a session loads, so the placement lines in the log are that
/// session's and no other's.
static LOADING: Mutex<()> = Mutex::new(());

/// Reads ONNX Runtime's `All nodes placed on [CPUExecutionProvider]. Number
/// of nodes: 98` or ` Node(s) placed on [CUDAExecutionProvider]. Number of
/// nodes: 460`.
fn parse_placement(message: &str) -> Option<NodePlacement> {
    let (_, rest) = message.split_once("placed on [")?;
    let (provider, rest) = rest.split_once(']')?;
    let (_, count) = rest.split_once("Number of nodes:")?;
    let nodes = count.trim().parse().ok()?;
    Some(NodePlacement {
        provider: provider.to_string(),
        nodes,
    })
}

/// Loads `path` as this process's ONNX Runtime (once) and returns its environment.
fn environment(path: &Path) -> Result<ort::environment::Environment> {
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((first, env)) = loaded.as_ref() {
        if first == path {
            return Ok(env.clone());
        }
        return Err(fail(format!(
            "this process already uses ONNX Runtime from {}; cannot also load {} \
             (one library per process)",
            first.display(),
            path.display()
        )));
    }
    let builder = ort::init_from(path).map_err(|e| {
        fail(format!(
            "cannot load ONNX Runtime from {}: {e} (ONNX Runtime 1.17 or newer is needed; \
             {INSTALL_HINT})",
            path.display()
        ))
    })?;
    let env = builder
        .with_name("dla-edge")
        .with_logger(std::sync::Arc::new(
            |level, category, _id, _location, message| forward_ort_log(level, category, message),
        ))
        .build()
        .map_err(|e| fail(format!("cannot create an ONNX Runtime environment: {e}")))?;
    *loaded = Some((path.to_path_buf(), env.clone()));
    Ok(env)
}

/// How a failed session load reads, as opposed to a provider that could not
/// be registered.
const LOAD_FAILED: &str = ": cannot load ";

/// A session as it loaded, with ONNX Runtime's word on where its nodes went.
struct Loaded {
    session: Session,
    placement: Vec<NodePlacement>,
}

/// Runs a [`Model`] with ONNX Runtime on the CPU, CUDA or TensorRT.
pub struct OrtBackend {
    session: Session,
    /// Runs log at warning level; the session is verbose only for its load.
    run_options: RunOptions,
    binding: IoBinding,
    input_name: String,
    input: Tensor<f32>,
    output: Tensor<f32>,
    output_shape: [usize; 4],
    /// The argmax output and its binding, when ONNX Runtime takes the argmax.
    labels: Option<LabelsOutput>,
    /// The frame-size argmax output, when the graph has it.
    frame_labels: Option<FrameLabels>,
    /// `--argmax engine`: wrong labels are an error, not a fallback.
    labels_required: bool,
    /// Nodes per execution provider, from ONNX Runtime's log at load.
    placement: Vec<NodePlacement>,
    provider: OrtProvider,
    library: PathBuf,
}

/// The second binding: the same input, the uint8 label map as the only output.
struct LabelsOutput {
    binding: IoBinding,
    output: Tensor<u8>,
}

/// The third binding: the same input and the frame size, the uint8 label map
/// at that size as the only output.
struct FrameLabels {
    binding: IoBinding,
    /// `[1, classes, height, width]`, bound as the graph's frame-size input.
    size: Tensor<i64>,
    /// The label map and its (width, height); reallocated when the size changes.
    output: Option<((usize, usize), Tensor<u8>)>,
}

impl std::fmt::Debug for OrtBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtBackend")
            .field("provider", &self.provider)
            .field("library", &self.library)
            .field("output_shape", &self.output_shape)
            .finish_non_exhaustive()
    }
}

/// Checks that the loaded library has `E` before registering it, so the error
/// names the library instead of ONNX Runtime's generic "not enabled" message.
fn require<E: ort::ep::ExecutionProvider>(library: &Path, what: &str) -> Result<()> {
    let available = E::is_available().map_err(|e| {
        fail(format!(
            "cannot list ONNX Runtime's execution providers: {e}"
        ))
    })?;
    if available {
        Ok(())
    } else {
        Err(fail(format!(
            "{what} was requested but {} was built without {} (a CPU-only library, such as \
             the PyPI `onnxruntime` wheel); use a GPU build (JetPack's onnxruntime-gpu, PyPI \
             onnxruntime-gpu) or pass --allow-cpu-fallback to run on the CPU",
            library.display(),
            E::NAME
        )))
    }
}

/// What identifies the GPU for the engine cache: the NVIDIA driver's GPU
/// models on a PC, the board model on a Jetson ("" when neither is readable).
fn gpu_identity() -> String {
    let mut id = String::new();
    if let Ok(gpus) = std::fs::read_dir("/proc/driver/nvidia/gpus") {
        let mut paths: Vec<PathBuf> = gpus
            .flatten()
            .map(|e| e.path().join("information"))
            .collect();
        paths.sort();
        for p in paths {
            id.push_str(&std::fs::read_to_string(p).unwrap_or_default());
        }
    }
    id.push_str(&std::fs::read_to_string("/proc/device-tree/model").unwrap_or_default());
    id
}

/// The engine cache folder for `model`: one per model contents, precision,
/// ONNX Runtime build and GPU, so a changed model, precision, library or
/// board never loads a stale engine. TensorRT engines are only valid for the
/// TensorRT version and GPU that built them.
pub fn engine_cache_dir(
    root: &Path,
    model: &Model,
    precision: TrtPrecision,
    ort_build: &str,
    gpu: &str,
) -> PathBuf {
    let bytes = model.onnx_bytes();
    let mut env = crc32fast::Hasher::new();
    env.update(ort_build.as_bytes());
    env.update(gpu.as_bytes());
    let stem = model
        .path()
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    root.join(format!(
        "{stem}-{}-{:08x}-{precision}-{:08x}",
        bytes.len(),
        crc32fast::hash(bytes),
        env.finalize()
    ))
}

/// The execution providers to register for `provider`, each failing loudly.
fn providers(
    provider: OrtProvider,
    options: &OrtOptions,
    library: &Path,
    model: &Model,
) -> Result<Vec<ep::ExecutionProviderDispatch>> {
    let cuda = || {
        ep::CUDA::default()
            .with_device_id(options.device_id)
            .build()
            .error_on_failure()
    };
    Ok(match provider {
        OrtProvider::Cpu => vec![],
        OrtProvider::Cuda => {
            require::<ep::CUDA>(library, "CUDA")?;
            vec![cuda()]
        }
        OrtProvider::TensorRt => {
            require::<ep::TensorRT>(library, "TensorRT")?;
            require::<ep::CUDA>(library, "TensorRT (with CUDA for the other nodes)")?;
            let settings = &options.tensorrt;
            let mut trt = ep::TensorRT::default()
                .with_device_id(options.device_id)
                .with_fp16(settings.precision != TrtPrecision::Fp32)
                .with_int8(settings.precision == TrtPrecision::Int8);
            if let Some(root) = &settings.engine_cache {
                let dir = engine_cache_dir(
                    root,
                    model,
                    settings.precision,
                    ort::info(),
                    &gpu_identity(),
                );
                std::fs::create_dir_all(&dir).map_err(|e| {
                    fail(format!(
                        "cannot create the TensorRT engine cache {}: {e} (choose another with \
                         --trt-cache DIR, or --trt-cache none)",
                        dir.display()
                    ))
                })?;
                log::info!("TensorRT engine cache: {}", dir.display());
                let dir = dir.display().to_string();
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(&dir)
                    .with_timing_cache(true)
                    .with_timing_cache_path(&dir);
            }
            vec![trt.build().error_on_failure(), cuda()]
        }
    })
}

impl OrtBackend {
    /// Loads ONNX Runtime (see [`find_library`]) and prepares `model` on the
    /// provider in `options`. Fails if that provider cannot be used, unless
    /// `options.allow_cpu_fallback`, in which case it runs on the CPU and logs
    /// a warning.
    pub fn new(model: &Model, options: &OrtOptions) -> Result<OrtBackend> {
        let library = find_library(options.library.as_deref())?;
        let env = environment(&library)?;
        log::debug!("ONNX Runtime from {}: {}", library.display(), ort::info());
        let open = |provider| -> Result<(Loaded, Option<bool>)> {
            let plain = || Self::session(model, options, provider, &env, &library, None);
            let Some((graph, frame_size)) = labels_graph(model, options.argmax, provider)? else {
                return Ok((plain()?, None));
            };
            match Self::session(model, options, provider, &env, &library, Some(&graph)) {
                Ok(session) => Ok((session, Some(frame_size))),
                // Under `auto`, a provider that refuses the added nodes costs
                // the GPU argmax, not the start: load the model as it is (if
                // that fails too, its own error is the one to see). Only a
                // failed load, not a provider that could not be registered.
                Err(err)
                    if options.argmax == ArgmaxAt::Auto
                        && err.to_string().contains(LOAD_FAILED) =>
                {
                    log::warn!(
                        "{}: the model with argmax outputs did not load ({err}); taking the \
                         argmax on the host",
                        provider.backend_name()
                    );
                    Ok((plain()?, None))
                }
                Err(err) => Err(err),
            }
        };
        let (loaded, provider, labels) = match open(options.provider) {
            Ok((loaded, labels)) => (loaded, options.provider, labels),
            Err(err) if options.allow_cpu_fallback && options.provider != OrtProvider::Cpu => {
                log::warn!("{err}; falling back to the CPU provider (--allow-cpu-fallback)");
                let (cpu, labels) = open(OrtProvider::Cpu)?;
                (cpu, OrtProvider::Cpu, labels)
            }
            Err(err) => return Err(err),
        };
        let Loaded { session, placement } = loaded;
        let mut backend = Self::bind(model, session, provider, library, labels)?;
        backend.labels_required = options.argmax == ArgmaxAt::Engine;
        if let Some(line) = describe_placement(&placement) {
            let on_cpu: usize = placement
                .iter()
                .filter(|p| p.provider == "CPUExecutionProvider")
                .map(|p| p.nodes)
                .sum();
            if provider != OrtProvider::Cpu && on_cpu > 0 {
                // Only possible with --allow-cpu-fallback; still worth a word.
                log::warn!(
                    "{}: {on_cpu} nodes run on the CPU ({line}; allowed by --allow-cpu-fallback)",
                    provider.backend_name()
                );
            } else {
                log::info!("{}: {line}", provider.backend_name());
            }
        }
        backend.placement = placement;
        Ok(backend)
    }

    fn session(
        model: &Model,
        options: &OrtOptions,
        provider: OrtProvider,
        env: &ort::environment::Environment,
        library: &Path,
        graph: Option<&[u8]>,
    ) -> Result<Loaded> {
        let eps = providers(provider, options, library, model)?;
        let what = provider.backend_name();
        let configure = |e: ort::Error<_>| fail(format!("cannot configure the session: {e}"));
        let builder = Session::builder(env)
            .map_err(|e| fail(format!("cannot create a session builder: {e}")))?
            // Verbose while loading: that is where ONNX Runtime says which
            // provider each node set landed on (gathered, and forwarded at
            // info level). Runs log at warning level (`run_options`).
            .with_log_level(ort::logging::LogLevel::Verbose)
            .map_err(configure)?
            .with_intra_threads(options.threads.max(1))
            .map_err(configure)?
            .with_inter_threads(1)
            .map_err(configure)?
            .with_config_entry(
                "session.intra_op.allow_spinning",
                if options.spinning { "1" } else { "0" },
            )
            .map_err(configure)?;
        // A GPU build still puts nodes the GPU provider has no kernel for (e.g.
        // QLinearConv on CUDA) on the CPU without a word. Unless the user allowed
        // CPU fallback, make that an error at load instead.
        let gpu = provider != OrtProvider::Cpu;
        let builder = if gpu && !options.allow_cpu_fallback {
            builder
                .with_config_entry("session.disable_cpu_ep_fallback", "1")
                .map_err(configure)?
        } else {
            builder
        };
        let mut builder = builder.with_execution_providers(eps).map_err(|e| {
            let hint = if e.to_string().contains("libnvinfer") {
                " (TensorRT's own libraries, libnvinfer.so.N, are not installed or not on \
                 LD_LIBRARY_PATH: JetPack ships them; on a workstation install TensorRT for \
                 the CUDA version of this ONNX Runtime, or use --backend ort-cuda)"
            } else {
                ""
            };
            fail(format!(
                "{what}: cannot register the execution provider: {e}{hint}"
            ))
        })?;
        let path = model.path();
        // From the file when there is one, so external weight files resolve;
        // from memory for models embedded in a binary and for the graph with
        // the argmax output (never made for models with external weights).
        let loading = LOADING.lock().unwrap_or_else(|e| e.into_inner());
        *PLACEMENT.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
        let session = match graph {
            Some(bytes) => builder.commit_from_memory(bytes),
            None if path.is_file() => builder.commit_from_file(path),
            None => builder.commit_from_memory(model.onnx_bytes()),
        };
        let placement = PLACEMENT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default();
        drop(loading);
        let session = session.map_err(|e| {
            let hint = if gpu
                && e.to_string()
                    .contains("fallback to CPU EP has been explicitly disabled")
            {
                " (some of its nodes have no kernel on this GPU provider and would run on the \
                 CPU; pass --allow-cpu-fallback to accept that, or export a model whose ops the \
                 provider runs, e.g. `dla-tools quantize --target ort|tensorrt` instead of the \
                 tract form)"
            } else {
                ""
            };
            fail(format!("{what}{LOAD_FAILED}{}: {e}{hint}", path.display()))
        })?;
        Ok(Loaded { session, placement })
    }

    fn bind(
        model: &Model,
        session: Session,
        provider: OrtProvider,
        library: PathBuf,
        labels_graph: Option<bool>,
    ) -> Result<OrtBackend> {
        let (h, w) = model.input_size();
        let output_shape = model.output_shape();
        let [_, classes, oh, ow] = output_shape;
        let frame_size = labels_graph == Some(true);
        let inputs: Vec<&str> = session
            .inputs()
            .iter()
            .map(|i| i.name())
            .filter(|n| *n != FRAME_SIZE_INPUT)
            .collect();
        if inputs.len() != 1 || session.outputs().is_empty() {
            return Err(fail(format!(
                "{}: expected one input and at least one output, ONNX Runtime sees {} and {}",
                model.path().display(),
                inputs.len(),
                session.outputs().len()
            )));
        }
        let input_name = inputs[0].to_string();
        let output_name = session.outputs()[0].name().to_string();
        let allocator = Allocator::default();
        let input = Tensor::<f32>::new(&allocator, [1usize, 3, h as usize, w as usize])
            .map_err(|e| fail(format!("cannot allocate the input tensor: {e}")))?;
        let mut output = Tensor::<f32>::new(&allocator, output_shape)
            .map_err(|e| fail(format!("cannot allocate the output tensor: {e}")))?;
        // The frame size is an input of the whole graph: every binding feeds it.
        let mut size = Tensor::<i64>::new(&allocator, [4usize])
            .map_err(|e| fail(format!("cannot allocate the frame size: {e}")))?;
        size.extract_tensor_mut()
            .1
            .copy_from_slice(&[1, classes as i64, oh as i64, ow as i64]);
        // A binding with the inputs bound; each binds its own output.
        let new_binding = || -> Result<IoBinding> {
            let mut binding = session
                .create_binding()
                .map_err(|e| fail(format!("cannot create an IoBinding: {e}")))?;
            binding
                .bind_input(&input_name, &input)
                .map_err(|e| fail(format!("cannot bind input {input_name:?}: {e}")))?;
            if frame_size {
                binding
                    .bind_input(FRAME_SIZE_INPUT, &size)
                    .map_err(|e| fail(format!("cannot bind input {FRAME_SIZE_INPUT:?}: {e}")))?;
            }
            Ok(binding)
        };
        let mut binding = new_binding()?;
        binding
            .bind_output(&output_name, &mut output)
            .map_err(|e| fail(format!("cannot bind output {output_name:?}: {e}")))?;
        let labels = match labels_graph {
            Some(_) => {
                let mut labels = Tensor::<u8>::new(&allocator, [1usize, oh, ow])
                    .map_err(|e| fail(format!("cannot allocate the label map: {e}")))?;
                let mut binding = new_binding()?;
                binding
                    .bind_output(LABELS_OUTPUT, &mut labels)
                    .map_err(|e| fail(format!("cannot bind output {LABELS_OUTPUT:?}: {e}")))?;
                log::info!(
                    "{}: the argmax runs in ONNX Runtime{}; only class IDs are copied back",
                    provider.backend_name(),
                    if frame_size {
                        ", after a bilinear resize to frames of another size"
                    } else {
                        ""
                    }
                );
                Some(LabelsOutput {
                    binding,
                    output: labels,
                })
            }
            None => None,
        };
        let frame_binding = if frame_size {
            Some(new_binding()?)
        } else {
            None
        };
        let frame_labels = frame_binding.map(|binding| FrameLabels {
            binding,
            size,
            output: None,
        });
        log::debug!(
            "ONNX Runtime backend on {} ({}), output {output_shape:?}",
            provider.backend_name(),
            library.display()
        );
        let mut run_options =
            RunOptions::new().map_err(|e| fail(format!("cannot create run options: {e}")))?;
        run_options
            .set_log_level(ort::logging::LogLevel::Warning)
            .map_err(|e| fail(format!("cannot set the run log level: {e}")))?;
        Ok(OrtBackend {
            session,
            run_options,
            binding,
            input_name,
            input,
            output,
            output_shape,
            labels,
            frame_labels,
            labels_required: false,
            placement: Vec::new(),
            provider,
            library,
        })
    }

    /// The execution provider the network really runs on (CPU after a fallback).
    pub fn provider(&self) -> OrtProvider {
        self.provider
    }

    /// Where [`Backend::run_labels`] has ONNX Runtime take the argmax:
    /// `None` (never), `Some(false)` (labels at the output's size only) or
    /// `Some(true)` (also at any frame size, after a bilinear resize).
    pub fn argmax_in_engine(&self) -> Option<bool> {
        self.labels.as_ref().map(|_| self.frame_labels.is_some())
    }

    /// The libonnxruntime this backend uses.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// ONNX Runtime's build description (version, git commit, build flags).
    pub fn build_info(&self) -> &'static str {
        ort::info()
    }
}

impl Backend for OrtBackend {
    fn name(&self) -> &'static str {
        self.provider.backend_name()
    }

    fn input_mut(&mut self) -> &mut [f32] {
        // The tensor stays bound: ONNX Runtime reads this memory on every run.
        self.input.extract_tensor_mut().1
    }

    fn run(&mut self) -> Result<()> {
        run_bound(
            &mut self.session,
            &self.run_options,
            &mut self.binding,
            self.provider,
            &self.input_name,
            &self.input,
        )
    }

    fn run_labels(&mut self, labels: &mut [u8], (width, height): (usize, usize)) -> Result<bool> {
        let [_, classes, oh, ow] = self.output_shape;
        let at_output = (width, height) == (ow, oh);
        let (binding, output) = match (at_output, &mut self.labels, &mut self.frame_labels) {
            (true, Some(out), _) => (&mut out.binding, &out.output),
            (false, _, Some(frame)) => {
                if frame.output.as_ref().map(|(size, _)| *size) != Some((width, height)) {
                    // A new frame size (rare): size input and output tensor anew.
                    frame.size.extract_tensor_mut().1.copy_from_slice(&[
                        1,
                        classes as i64,
                        height as i64,
                        width as i64,
                    ]);
                    frame
                        .binding
                        .bind_input(FRAME_SIZE_INPUT, &frame.size)
                        .map_err(|e| fail(format!("cannot bind the frame size: {e}")))?;
                    let mut map = Tensor::<u8>::new(&Allocator::default(), [1usize, height, width])
                        .map_err(|e| fail(format!("cannot allocate the label map: {e}")))?;
                    frame
                        .binding
                        .bind_output(FRAME_LABELS_OUTPUT, &mut map)
                        .map_err(|e| fail(format!("cannot bind {FRAME_LABELS_OUTPUT:?}: {e}")))?;
                    frame.output = Some(((width, height), map));
                }
                match &frame.output {
                    Some((_, map)) => (&mut frame.binding, map),
                    None => return Ok(false),
                }
            }
            _ => return Ok(false),
        };
        run_bound(
            &mut self.session,
            &self.run_options,
            binding,
            self.provider,
            &self.input_name,
            &self.input,
        )?;
        let ids = output.extract_tensor().1;
        let Some(dest) = labels.get_mut(..ids.len()) else {
            return Err(fail(format!(
                "label buffer of {} for {width}x{height} labels",
                labels.len()
            )));
        };
        dest.copy_from_slice(ids);
        Ok(true)
    }

    fn labels_required(&self) -> bool {
        self.labels_required
    }

    fn placement(&self) -> &[NodePlacement] {
        &self.placement
    }

    fn logits(&self) -> Logits<'_> {
        let [_, classes, height, width] = self.output_shape;
        Logits {
            data: self.output.extract_tensor().1,
            classes,
            height,
            width,
        }
    }
}

/// Runs `session` on `binding`, whose outputs are bound to host tensors that
/// receive the results (the handles ort returns only alias them).
fn run_bound(
    session: &mut Session,
    run_options: &RunOptions,
    binding: &mut IoBinding,
    provider: OrtProvider,
    input_name: &str,
    input: &Tensor<f32>,
) -> Result<()> {
    if provider != OrtProvider::Cpu {
        // ONNX Runtime copies a host input to the GPU when it is bound, not
        // when the session runs: bind this frame's input again (that copy is
        // the frame's upload) or the GPU would see the first frame forever.
        binding
            .bind_input(input_name, input)
            .map_err(|e| fail(format!("cannot upload the input to the GPU: {e}")))?;
    }
    let outputs = session
        .run_binding_with_options(binding, run_options)
        .map_err(|e| fail(format!("inference failed: {e}")))?;
    drop(outputs);
    Ok(())
}

/// The graph with the argmax outputs when `argmax` asks for them on
/// `provider`, and whether it has the frame-size one; `None`: run the model
/// as it is. `auto` adds both on CUDA and only the output-size one on
/// TensorRT (whether TensorRT takes a Resize whose size is an input, and
/// rebuilds engines per frame size, is unverified; `engine` tries it). A
/// model the outputs cannot be added to is an error for `engine` and a
/// logged `host` fallback for `auto`.
fn labels_graph(
    model: &Model,
    argmax: ArgmaxAt,
    provider: OrtProvider,
) -> Result<Option<(Vec<u8>, bool)>> {
    let frame_size = match (argmax, provider) {
        (ArgmaxAt::Host, _) | (ArgmaxAt::Auto, OrtProvider::Cpu) => return Ok(None),
        (ArgmaxAt::Auto, OrtProvider::TensorRt) => false,
        _ => true,
    };
    let [_, classes, height, width] = model.output_shape();
    match with_labels_output(model.onnx_bytes(), classes, height, width, frame_size) {
        Ok(graph) => Ok(Some((graph, frame_size))),
        Err(why) if argmax == ArgmaxAt::Engine => Err(fail(format!(
            "--argmax engine: cannot add an argmax output to {}: {why}",
            model.path().display()
        ))),
        Err(why) => {
            log::info!("{}: argmax on the host ({why})", model.path().display());
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_lines_are_read_as_onnx_runtime_writes_them() {
        let cpu = " All nodes placed on [CPUExecutionProvider]. Number of nodes: 98";
        let cuda = " Node(s) placed on [CUDAExecutionProvider]. Number of nodes: 460";
        let read = |line| parse_placement(line).map(|p| (p.provider, p.nodes));
        assert_eq!(read(cpu), Some(("CPUExecutionProvider".into(), 98)));
        assert_eq!(read(cuda), Some(("CUDAExecutionProvider".into(), 460)));
        // Other lines, and a count that is not a number, are not placements.
        assert_eq!(read("Node placements"), None);
        assert_eq!(read("placed on [X]. Number of nodes: many"), None);
    }

    #[test]
    fn engine_cache_is_keyed_by_model_precision_library_and_gpu() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let a = Model::load(fixtures.join("tiny_seg.onnx")).unwrap();
        let b = Model::load(fixtures.join("../../models/dla-tiny-seg.onnx")).unwrap();
        let root = Path::new("/cache");
        let key = |m: &Model, p, ort: &str, gpu: &str| engine_cache_dir(root, m, p, ort, gpu);
        let base = key(&a, TrtPrecision::Fp16, "ort 1.18", "Orin");
        assert!(base.starts_with(root));
        assert!(base
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("tiny_seg-"));
        assert_eq!(
            base,
            key(&a, TrtPrecision::Fp16, "ort 1.18", "Orin"),
            "stable"
        );
        for other in [
            key(&b, TrtPrecision::Fp16, "ort 1.18", "Orin"),
            key(&a, TrtPrecision::Int8, "ort 1.18", "Orin"),
            key(&a, TrtPrecision::Fp16, "ort 1.19", "Orin"),
            key(&a, TrtPrecision::Fp16, "ort 1.18", "Xavier"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn library_names() {
        assert!(is_ort_library("libonnxruntime.so"));
        assert!(is_ort_library("libonnxruntime.so.1"));
        assert!(is_ort_library("libonnxruntime.so.1.32.0"));
        assert!(!is_ort_library("libonnxruntime_providers_shared.so"));
        assert!(!is_ort_library("libonnxruntime_providers_cuda.so"));
        assert!(!is_ort_library("onnxruntime.py"));
    }

    #[test]
    fn most_specific_library_wins() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "libonnxruntime.so",
            "libonnxruntime.so.1.32.0",
            "libonnxruntime_providers_shared.so",
        ] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        assert_eq!(
            library_in(dir.path()),
            Some(dir.path().join("libonnxruntime.so.1.32.0"))
        );
    }

    #[test]
    fn missing_explicit_library_says_how_to_install() {
        let err = find_library(Some(Path::new("/nonexistent/libonnxruntime.so")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/libonnxruntime.so"), "{err}");
        assert!(err.contains("pip install onnxruntime"), "{err}");
    }
}
