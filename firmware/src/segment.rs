//! `dla-edge segment`: label still images and write what people and programs
//! need: an overlay to look at, a colour mask, and raw class IDs to compute with.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args as ClapArgs;
use dla_runtime::model::LoadOptions;
use dla_runtime::postprocess::{coverage, Upsampling};
use dla_runtime::sink::RecordWhat;
use dla_runtime::source::read_rgb8;
use dla_runtime::{Model, Segmenter};

use dla_runtime::backend::{describe_pinning, BackendArgs, BackendKind};

/// The shipped DLA-tiny, built in so the binary works on its own, in both
/// precisions; [`builtin_is_int8`] says which one runs.
const SHIPPED_FP32: &[u8] = include_bytes!("../../models/dla-tiny-seg.onnx");
const SHIPPED_FP32_NAME: &str = "built-in dla-tiny-seg.onnx";
const SHIPPED_INT8: &[u8] = include_bytes!("../../models/dla-tiny-seg-int8.onnx");
const SHIPPED_INT8_NAME: &str = "built-in dla-tiny-seg-int8.onnx";

/// Arguments of `dla-edge segment`.
#[derive(Debug, ClapArgs)]
#[command(after_help = "Examples:\n  \
    dla-edge segment --input models/samples            # all images in a folder\n  \
    dla-edge segment --input street.jpg --visualize labels --out results\n  \
    dla-edge segment --input img.png --model my-dla.onnx --threads 4\n  \
    dla-edge segment --input img.png --backend ort-tensorrt   # Jetson GPU (build with --features ort)")]
pub struct Args {
    /// Image file or directory of images (.png, .jpg, .jpeg); may be repeated.
    #[arg(long, short, required = true)]
    input: Vec<PathBuf>,
    /// ONNX segmentation model (1x3xHxW in, 1xCxHxW logits out); default: the
    /// built-in DLA-tiny, int8 on the CPU engines (the faster there), fp32 on
    /// the GPU ones. Without a model card (metadata or MODEL.card.json) it runs
    /// with stated defaults: see `dla-tools card`.
    #[arg(long, short)]
    model: Option<PathBuf>,
    /// Model card JSON to use instead of the one in the model.
    #[arg(long)]
    card: Option<PathBuf>,
    /// Input size, WxH (multiples of 32), for a model exported with free
    /// height and width; default: its card's, or the first image's aspect at
    /// most 512 wide.
    #[arg(long, value_parser = dla_runtime::model::parse_input_size)]
    input_size: Option<(u32, u32)>,
    /// Output directory (created if missing).
    #[arg(long, short, default_value = "segment-out")]
    out: PathBuf,
    /// Outputs to write, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "overlay,mask,labels"
    )]
    visualize: Vec<RecordWhat>,
    /// Opacity of the class colours in the overlay, 0 (image only) to 1 (mask only).
    #[arg(long, default_value_t = 0.5, value_parser = parse_alpha)]
    alpha: f32,
    #[command(flatten)]
    backend: BackendArgs,
    /// How label maps reach the image size: bilinear (smooth edges) or nearest (fastest).
    #[arg(long, default_value = "bilinear")]
    upsampling: Upsampling,
    /// Also write the raw logits as NAME.logits.npy (float32, 1xCxHxW) for numeric checks.
    #[arg(long)]
    save_logits: bool,
}

pub(crate) fn parse_alpha(s: &str) -> Result<f32, String> {
    let a: f32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&a) {
        Ok(a)
    } else {
        Err(format!("{a} is outside 0..=1"))
    }
}

/// Whether the built-in model is the int8 DLA-tiny on `engine`: on the CPU
/// engines, where it is the faster at the same accuracy (our kernels: 1.8x
/// fp32 on a Pi 4's Cortex-A72 and on x86 AVX2, 2.9x on a Pi 5's A76; ONNX
/// Runtime's CPU provider too; -0.2 mIoU points, docs/PERFORMANCE.md), not on
/// the GPU engines (their int8 convolutions would fall back to the CPU) nor
/// on stock tract (`DLA_OPS=tract`, whose int8 is slower than its fp32).
pub(crate) fn builtin_is_int8(engine: BackendKind) -> bool {
    match engine {
        BackendKind::Tract => dla_runtime::ops::enabled(),
        BackendKind::OrtCpu => true,
        BackendKind::OrtCuda | BackendKind::OrtTensorRt => false,
    }
}

/// Loads the model named on the command line, or the built-in one for
/// `engine`, with `options` (card file, input size, frame size).
pub(crate) fn load_model(
    model: Option<&Path>,
    options: &LoadOptions,
    engine: BackendKind,
) -> anyhow::Result<Model> {
    Ok(match model {
        Some(p) => Model::load_with(p, options)?,
        None if builtin_is_int8(engine) => {
            Model::from_bytes_with(SHIPPED_INT8, Path::new(SHIPPED_INT8_NAME), options)?
        }
        None => Model::from_bytes_with(SHIPPED_FP32, Path::new(SHIPPED_FP32_NAME), options)?,
    })
}

/// Expands files and directories into a sorted list of image files.
fn collect_images(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut images = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("listing {}", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")
                    })
                })
                .collect();
            if found.is_empty() {
                bail!(
                    "{}: no images (.png, .jpg, .jpeg) in this directory",
                    input.display()
                );
            }
            found.sort();
            images.extend(found);
        } else if input.exists() {
            images.push(input.clone());
        } else {
            bail!("{}: no such file or directory", input.display());
        }
    }
    Ok(images)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `dla-edge segment`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let images = collect_images(&args.input)?;
    let config = args.backend.config(true);
    let options = LoadOptions {
        card_file: args.card.clone(),
        input_size: args.input_size,
        // A model of free size runs at the first image's aspect.
        frame_size: images.first().and_then(|p| image::image_dimensions(p).ok()),
        ..LoadOptions::default()
    };
    let model = load_model(args.model.as_deref(), &options, config.kind)?;
    let threads = config.threads;
    let mut segmenter = Segmenter::with_config(&model, &config, args.upsampling)?;
    segmenter.keep_logits(args.save_logits);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let card = model.card();
    println!(
        "model {} ({} classes, input {}x{}) on {} with {threads} thread(s){}",
        card.name,
        card.classes.len(),
        card.input.width,
        card.input.height,
        segmenter.backend_description(),
        describe_pinning(segmenter.pinned_cpus())
    );
    let mut infer_times = Vec::new();
    let mut failures = 0usize;
    let mut rgb_out = Vec::new();
    let mut cov = vec![0.0f32; card.classes.len()];
    let palette = segmenter.palette().clone();
    for path in &images {
        let image = match read_rgb8(path) {
            Ok(image) => image,
            Err(err) => {
                eprintln!("error: {err}");
                failures += 1;
                continue;
            }
        };
        let result = segmenter.segment(image.frame())?;
        let (w, h) = (result.width, result.height);
        let (timings, labels) = (result.timings, result.labels);
        infer_times.push(timings.infer);
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
        rgb_out.resize(labels.len() * 3, 0);
        for visual in &args.visualize {
            let (data, color) = match visual {
                RecordWhat::Overlay => {
                    palette.overlay(&image.data, labels, args.alpha, &mut rgb_out);
                    (&rgb_out[..], image::ExtendedColorType::Rgb8)
                }
                RecordWhat::Mask => {
                    palette.colorize(labels, &mut rgb_out);
                    (&rgb_out[..], image::ExtendedColorType::Rgb8)
                }
                RecordWhat::Labels => (labels, image::ExtendedColorType::L8),
            };
            let out = args.out.join(format!("{stem}.{}.png", visual.suffix()));
            image::save_buffer(&out, data, w, h, color)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        coverage(labels, &mut cov);
        let mut top: Vec<(usize, f32)> = cov
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, c)| *c >= 0.01)
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        let classes: Vec<String> = top
            .iter()
            .take(4)
            .map(|(c, f)| format!("{} {:.0}%", card.classes[*c].name, f * 100.0))
            .collect();
        if args.save_logits {
            let logits = segmenter
                .logits()
                .context("--save-logits: the backend kept no logits")?;
            let out = args.out.join(format!("{stem}.logits.npy"));
            dla_runtime::npy::write_f32(
                &out,
                &[1, logits.classes, logits.height, logits.width],
                logits.data,
            )?;
        }
        println!(
            "{}  {w}x{h}  pre {:.1} ms  infer {:.1} ms  post {:.1} ms  |  {}",
            path.display(),
            ms(timings.pre),
            ms(timings.infer),
            ms(timings.post),
            classes.join(", ")
        );
    }
    if !infer_times.is_empty() {
        infer_times.sort();
        let median = infer_times[infer_times.len() / 2];
        println!(
            "{} image(s) segmented, median inference {:.1} ms; results in {}",
            infer_times.len(),
            ms(median),
            args.out.display()
        );
    }
    if failures > 0 {
        eprintln!("{failures} image(s) could not be read; see the errors above");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
