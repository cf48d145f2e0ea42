//! `dla-tools card`: write, correct or check the model card of any ONNX
//! segmentation model, so a model exported elsewhere runs with the right
//! classes and normalisation instead of the defaults a card-less model gets.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args as ClapArgs;
use dla_runtime::classes::{cityscapes_classes, ClassInfo};
use dla_runtime::model::{
    default_classes, sidecar_paths, CardSource, LoadOptions, ModelCard, CARD_METADATA_KEY,
};
use dla_runtime::Model;

use crate::graph;

/// Arguments of `dla-tools card`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "The card says how to feed a model (size, colour order, scale, mean, std) and \
how to read it (class names and colours). A model without one runs with defaults \
(RGB, /255, ImageNet mean/std, Cityscapes classes for 19 outputs); this writes them down, \
with your corrections, where every dla-edge and dla-tools command finds them.

Examples:
  dla-tools card my-dla.onnx                               # write the defaults to my-dla.onnx.card.json
  dla-tools card my-dla.onnx --classes classes.txt --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5
  dla-tools card my-dla.onnx --classes 7 --size 640x352    # 7 numbered classes; free-size graph at 640x352
  dla-tools card my-dla.onnx --embed --out my-dla-carded.onnx   # into the ONNX metadata
  dla-tools card my-dla.onnx --check                       # is there a card, and does it fit the graph?

--classes FILE: one class per line, `name` or `name #rrggbb` (blank lines and # comments skipped)."
)]
pub struct Args {
    /// ONNX model the card is for.
    model: PathBuf,
    /// Classes in output-channel order: `cityscapes`, a count N (`class 0`..),
    /// or a text file with one `name [#rrggbb]` per line.
    #[arg(long)]
    classes: Option<String>,
    /// Per-channel mean subtracted after scaling, `R,G,B` (e.g. 0.485,0.456,0.406).
    #[arg(long, value_parser = parse_triple)]
    mean: Option<[f32; 3]>,
    /// Per-channel standard deviation, `R,G,B` (e.g. 0.229,0.224,0.225).
    #[arg(long, value_parser = parse_triple)]
    std: Option<[f32; 3]>,
    /// Pixel values are divided by this first (255: the network takes 0..1).
    #[arg(long)]
    scale: Option<f32>,
    /// Channel order the network was trained on.
    #[arg(long, value_parser = ["RGB", "BGR"])]
    color: Option<String>,
    /// Input size WxH (multiples of 32) for a graph exported with free height
    /// and width; a fixed graph's own size is kept.
    #[arg(long, value_parser = dla_runtime::model::parse_input_size)]
    size: Option<(u32, u32)>,
    /// Model name shown in outputs (default: the file name).
    #[arg(long)]
    name: Option<String>,
    /// Write the card into the ONNX file's metadata instead of a sidecar
    /// (to --out, else the model file itself, replaced atomically).
    #[arg(long)]
    embed: bool,
    /// Where to write: the sidecar JSON (default MODEL.card.json next to the
    /// model, where it is found by itself) or, with --embed, the new ONNX.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Overwrite an existing file at the destination.
    #[arg(long)]
    force: bool,
    /// Only check: say where the model's card is and that it fits the graph;
    /// fails when there is none.
    #[arg(long, conflicts_with_all = ["classes", "mean", "std", "scale", "color", "size", "name", "embed", "out"])]
    check: bool,
}

fn parse_triple(s: &str) -> Result<[f32; 3], String> {
    let values: Vec<f32> = s
        .split(',')
        .map(|v| v.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{s:?} is not three numbers R,G,B"))?;
    values
        .try_into()
        .map_err(|_| format!("{s:?} is not three numbers R,G,B"))
}

/// Runs `dla-tools card`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let model = Model::load(&args.model)?;
    if args.check {
        return check(&model);
    }
    let card = edited(&model, args)?;
    // The new card must fit the graph (class count, size) before anything is written.
    let options = LoadOptions {
        card: Some(card.clone()),
        ..LoadOptions::default()
    };
    let checked = Model::load_with(&args.model, &options)
        .context("the card does not fit the model; nothing was written")?;
    let card = checked.card();
    let written = if args.embed {
        embed(&args.model, card, args)?
    } else {
        write_sidecar(&model, card, args)?
    };
    println!(
        "{}: {} ({} classes, input {}x{}, {} /{} mean {:?} std {:?})",
        written.display(),
        card.name,
        card.classes.len(),
        card.input.width,
        card.input.height,
        card.input.color,
        card.input.scale,
        card.input.mean,
        card.input.std
    );
    Ok(())
}

/// `--check`: where the card is, and that it fits (loading checked that).
fn check(model: &Model) -> anyhow::Result<()> {
    let card = model.card();
    let from = match model.card_source() {
        CardSource::Assumed(_) => bail!(
            "{} has no model card (it runs with defaults); `dla-tools card {}` writes one",
            model.path().display(),
            model.path().display()
        ),
        CardSource::Metadata => "the ONNX metadata".to_string(),
        CardSource::Sidecar(p) | CardSource::File(p) => p.display().to_string(),
        CardSource::Given => "the caller".to_string(),
    };
    println!(
        "ok: the card in {from} fits {}: {} classes, input {}x{}",
        model.path().display(),
        card.classes.len(),
        card.input.width,
        card.input.height
    );
    Ok(())
}

/// The model's card (or the assumed one) with the command line's changes.
fn edited(model: &Model, args: &Args) -> anyhow::Result<ModelCard> {
    let mut card = model.card().clone();
    if let Some(classes) = &args.classes {
        card.classes = parse_classes(classes)?;
    }
    if let Some(mean) = args.mean {
        card.input.mean = mean;
    }
    if let Some(std) = args.std {
        card.input.std = std;
    }
    if let Some(scale) = args.scale {
        card.input.scale = scale;
    }
    if let Some(color) = &args.color {
        card.input.color = color.clone();
    }
    if let Some((w, h)) = args.size {
        if !model.free_size() && (w, h) != (card.input.width, card.input.height) {
            bail!(
                "--size {w}x{h}: the graph's input is fixed at {}x{}",
                card.input.width,
                card.input.height
            );
        }
        (card.input.width, card.input.height) = (w, h);
    }
    if let Some(name) = &args.name {
        card.name = name.clone();
    }
    Ok(card)
}

/// `cityscapes`, a count, or a file of `name [#rrggbb]` lines.
fn parse_classes(spec: &str) -> anyhow::Result<Vec<ClassInfo>> {
    if spec.eq_ignore_ascii_case("cityscapes") {
        return Ok(cityscapes_classes());
    }
    if let Ok(n) = spec.parse::<usize>() {
        if !(1..=255).contains(&n) {
            bail!("--classes {n}: expected 1 to 255 classes");
        }
        return Ok(default_classes(n));
    }
    let path = Path::new(spec);
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("--classes {spec}: not `cityscapes`, a number, or a readable file")
    })?;
    let mut names: Vec<(String, Option<[u8; 3]>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, colour) = match line.rsplit_once(char::is_whitespace) {
            Some((name, hex)) if hex.starts_with('#') => {
                let colour = parse_hex(hex).with_context(|| {
                    format!(
                        "{}:{}: {hex:?} is not a #rrggbb colour",
                        path.display(),
                        i + 1
                    )
                })?;
                (name.trim().to_string(), Some(colour))
            }
            _ => (line.to_string(), None),
        };
        names.push((name, colour));
    }
    if names.is_empty() || names.len() > 255 {
        bail!(
            "{}: expected 1 to 255 class lines, found {}",
            path.display(),
            names.len()
        );
    }
    let defaults = default_classes(names.len());
    Ok(names
        .into_iter()
        .zip(defaults)
        .map(|((name, colour), default)| ClassInfo {
            name,
            color: colour.unwrap_or(default.color),
            ..default
        })
        .collect())
}

fn parse_hex(hex: &str) -> Option<[u8; 3]> {
    let digits = hex.strip_prefix('#')?;
    if digits.len() != 6 {
        return None;
    }
    let v = u32::from_str_radix(digits, 16).ok()?;
    Some([(v >> 16) as u8, (v >> 8) as u8, v as u8])
}

/// Writes the card as a sidecar JSON; returns where.
fn write_sidecar(model: &Model, card: &ModelCard, args: &Args) -> anyhow::Result<PathBuf> {
    if matches!(model.card_source(), CardSource::Metadata) && args.out.is_none() {
        bail!(
            "{} has a card in its ONNX metadata, which dla-edge reads before any sidecar: \
             pass --embed to replace it there",
            args.model.display()
        );
    }
    let [sidecar, _] = sidecar_paths(&args.model);
    let out = args.out.clone().unwrap_or(sidecar);
    let replacing_own = matches!(model.card_source(), CardSource::Sidecar(p) if *p == out);
    refuse_overwrite(&out, args.force || replacing_own)?;
    let json = serde_json::to_string_pretty(card)? + "\n";
    std::fs::write(&out, json).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

/// Writes the model with the card in its metadata; returns where.
fn embed(model_path: &Path, card: &ModelCard, args: &Args) -> anyhow::Result<PathBuf> {
    let mut proto = graph::load(model_path)?;
    graph::set_metadata(&mut proto, CARD_METADATA_KEY, serde_json::to_string(card)?);
    let out = args.out.clone().unwrap_or_else(|| model_path.to_path_buf());
    if out != model_path {
        refuse_overwrite(&out, args.force)?;
    }
    // Written beside the destination, then renamed: an interrupted run
    // leaves the original whole.
    let tmp = out.with_extension("onnx.tmp");
    std::fs::write(&tmp, graph::to_bytes(&proto))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(out)
}

fn refuse_overwrite(path: &Path, allowed: bool) -> anyhow::Result<()> {
    if path.exists() && !allowed {
        bail!("{} exists; pass --force to replace it", path.display());
    }
    Ok(())
}
