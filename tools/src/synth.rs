//! `dla-tools synth`: write a deterministic synthetic street-scene dataset.
//!
//! Layout (documented in docs/MODELS.md, "Synthetic dataset layout"):
//! ```text
//! DIR/dataset.json        recipe (seed, size, count, classes) to regenerate it
//! DIR/images/000000.png   RGB8 scene (or .jpg with --image-format jpg)
//! DIR/labels/000000.png   8-bit Cityscapes trainIds, 255 = ignore
//! ```

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args as ClapArgs;
use dla_runtime::classes::cityscapes_classes;
use dla_runtime::synth::SynthGenerator;
use indicatif::{ProgressBar, ProgressStyle};

use crate::size::Size;

/// Arguments of `dla-tools synth`.
#[derive(Debug, ClapArgs)]
#[command(after_help = "Examples:\n  \
    dla-tools synth --out data/train --count 4000 --seed 1          # training set\n  \
    dla-tools synth --out data/val --count 200 --seed 2             # held-out set\n  \
    dla-tools synth --out shots --count 4 --size 1024x512 --image-format jpg")]
pub struct Args {
    /// Output directory (created; existing images with the same numbers are overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Number of scenes to write.
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// Random seed: the same seed, size and index always give the same scene.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// First scene index (to split one seed into train / held-out ranges).
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Image size as WIDTHxHEIGHT.
    #[arg(long, default_value = "512x256")]
    size: Size,
    /// Image file format: png (lossless, for training) or jpg (small, like camera photos).
    /// Labels are always PNG.
    #[arg(long, default_value = "png", value_parser = ["png", "jpg"])]
    image_format: String,
}

/// Writes `count` scenes to `out` in the synth layout.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let images = args.out.join("images");
    let labels = args.out.join("labels");
    for dir in [&images, &labels] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let generator = SynthGenerator::new(args.seed, args.size.width, args.size.height);
    let bar = ProgressBar::new(args.count).with_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} [{elapsed} < {eta}]")
            .expect("static template"),
    );
    bar.set_message("synth");
    for index in args.start..args.start + args.count {
        let frame = generator.frame(index);
        let name = format!("{index:06}.png");
        let image_path = images.join(format!("{index:06}.{}", args.image_format));
        image::save_buffer(
            &image_path,
            &frame.rgb,
            frame.width,
            frame.height,
            image::ExtendedColorType::Rgb8,
        )
        .with_context(|| format!("writing {}", image_path.display()))?;
        let label_path = labels.join(&name);
        image::save_buffer(
            &label_path,
            &frame.labels,
            frame.width,
            frame.height,
            image::ExtendedColorType::L8,
        )
        .with_context(|| format!("writing {}", label_path.display()))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let recipe = serde_json::json!({
        "generator": "dla-tools synth",
        "version": env!("CARGO_PKG_VERSION"),
        "seed": args.seed,
        "start": args.start,
        "count": args.count,
        "width": args.size.width,
        "height": args.size.height,
        "ignore_index": 255,
        "image_format": args.image_format,
        "classes": cityscapes_classes(),
    });
    let recipe_path = args.out.join("dataset.json");
    std::fs::write(&recipe_path, serde_json::to_string_pretty(&recipe)?)
        .with_context(|| format!("writing {}", recipe_path.display()))?;
    log::info!("wrote {} scenes to {}", args.count, args.out.display());
    Ok(())
}
