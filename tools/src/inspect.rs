//! `dla-tools inspect`: what is in a model file, before you run it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use dla_runtime::Model;

/// Arguments of `dla-tools inspect`.
#[derive(Debug, ClapArgs)]
#[command(after_help = "Examples:\n  \
    dla-tools inspect models/dla-tiny-seg.onnx\n  \
    dla-tools inspect models/dla-tiny-seg-int8.onnx --kernels   # what runs each conv on this CPU\n  \
    dla-tools inspect exported.onnx --card exported.card.json --card-json")]
pub struct Args {
    /// ONNX model to describe.
    model: PathBuf,
    /// Model card JSON to use instead of the one in the model.
    #[arg(long)]
    card: Option<PathBuf>,
    /// Print the full model card as JSON after the summary.
    #[arg(long)]
    card_json: bool,
    /// Also prepare the model for this CPU and list the micro-kernel each
    /// convolution runs on (e.g. NEON `sdot` on a Pi 5, `smull` on a Pi 4).
    #[arg(long)]
    kernels: bool,
}

/// Prints inputs, outputs, card, operator histogram, params and GMACs.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let model = Model::load_with_card(&args.model, args.card.as_deref())?;
    let card = model.card();
    let summary = model.summary();
    let (h, w) = model.input_size();
    let [n, c, oh, ow] = model.output_shape();
    println!("model      {}", args.model.display());
    println!("name       {}", card.name);
    if let Some(arch) = &card.architecture {
        let backbone = card.backbone.as_deref().unwrap_or("?");
        let ratio = card
            .down_ratio
            .map(|r| format!(", output stride {r}"))
            .unwrap_or_default();
        println!("arch       {arch} ({backbone}{ratio})");
    }
    println!(
        "input      {} f32 1x3x{h}x{w} {} {}, x/{} then mean {:?} std {:?}",
        card.input.name.as_deref().unwrap_or("?"),
        card.input.layout,
        card.input.color,
        card.input.scale,
        card.input.mean,
        card.input.std
    );
    println!(
        "output     {} f32 {n}x{c}x{oh}x{ow} logits",
        card.output.name.as_deref().unwrap_or("?")
    );
    println!("opset      {}", summary.opset);
    let ops: Vec<String> = summary
        .op_histogram
        .iter()
        .map(|(op, k)| format!("{op} {k}"))
        .collect();
    let nodes: usize = summary.op_histogram.values().sum();
    println!("ops        {nodes} nodes: {}", ops.join(", "));
    println!(
        "params     {} ({:.3} M)",
        summary.params,
        summary.params as f64 / 1e6
    );
    let gmacs = model.gmacs().context("counting multiply-accumulates")?;
    println!("compute    {gmacs:.2} GMAC at 1x3x{h}x{w}");
    println!("classes    {}", card.classes.len());
    for class in &card.classes {
        let [r, g, b] = class.color;
        println!("  {:>3}  #{r:02x}{g:02x}{b:02x}  {}", class.id, class.name);
    }
    if let Some(miou) = card.metrics.get("heldout_miou").and_then(|v| v.as_f64()) {
        println!("held-out mIoU {miou:.3} (from the model card)");
    }
    if args.kernels {
        let backend = dla_runtime::backend::TractBackend::new(&model, 1)
            .context("preparing the model for this CPU")?;
        for line in crate::kernels::summary(&backend)
            .into_iter()
            .chain(crate::kernels::per_node(&backend))
        {
            println!("{line}");
        }
    }
    if args.card_json {
        println!("{}", serde_json::to_string_pretty(card)?);
    }
    Ok(())
}
