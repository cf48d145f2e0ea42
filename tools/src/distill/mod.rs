//! Label-free distillation: every Conv weight and bias of a (pruned) model,
//! fitted at once by gradient descent so that its class probabilities match
//! another (the unpruned) model's on unlabelled images.
//!
//! Layer-wise least squares fits each layer to its own original outputs;
//! what is left over still adds up through the layers after it. Fitting all
//! layers together to the final class probabilities lets every layer make
//! up for the others, in the one quantity that decides the segmentation.
//! It needs more images than a layer-wise fit (it fits far more unknowns at
//! once), so a share of the images is held back to check that it generalises,
//! and the fitted weights are kept only if the held-back KL fell without
//! the held-back argmax agreement falling.

mod command;
mod conv;
mod net;

pub use command::{run, Args};

use anyhow::{bail, Context};
use faer::Par;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tract_onnx::pb::ModelProto;

use self::net::Net;
use crate::dataset::Dataset;
use crate::graph;
use crate::probe::{progress, slice, InputMaker, Probe};

/// How the distillation runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Passes over the training images.
    pub epochs: usize,
    /// Adam's peak step size (a cosine schedule takes it to 0).
    pub learning_rate: f64,
    /// Images per Adam step.
    pub batch: usize,
    /// Each pixel weighs `frequency^-class_balance` of the teacher's class there.
    pub class_balance: f64,
    pub threads: usize,
}

/// What the distillation did, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Distillation {
    pub data: String,
    /// The tensor whose class probabilities were matched.
    pub logits: String,
    pub train_images: usize,
    /// Images held back to check the fit generalises (every 8th).
    pub validation_images: usize,
    pub epochs: usize,
    pub steps: usize,
    pub learning_rate: f64,
    pub trainable_params: usize,
    /// Mean class-weighted KL divergence on the training images in each epoch.
    pub train_kl: Vec<f64>,
    /// On the held-back images, before and after.
    pub validation_kl_before: Option<f64>,
    pub validation_kl_after: Option<f64>,
    /// Arg-max agreement with the teacher on the held-back images, before and after.
    pub validation_agreement_before: Option<f64>,
    pub validation_agreement_after: Option<f64>,
    /// Whether the fitted weights were kept (the held-back KL fell, and the
    /// held-back agreement did not).
    pub kept: bool,
    pub seconds: f64,
}

/// The teacher's view of the images: class probabilities and weights per pixel.
struct Targets {
    /// Per image, `[classes, pixels]` probabilities.
    probs: Vec<Vec<f32>>,
    /// Per image, each pixel's weight (the mean over all pixels is 1).
    weights: Vec<Vec<f32>>,
}

impl Targets {
    fn measure(
        teacher: &ModelProto,
        logits: &str,
        shape: [usize; 3],
        data: &Dataset,
        inputs: &mut InputMaker,
        opts: &Options,
    ) -> anyhow::Result<Targets> {
        let probe = Probe::new(teacher, &[logits.to_string()], inputs.size(), opts.threads)?;
        let [classes, h, w] = shape;
        let pixels = h * w;
        let (mut probs, mut labels) = (Vec::new(), Vec::new());
        let mut counts = vec![0u64; classes];
        let bar = progress(data.len(), "teacher");
        for i in 0..data.len() {
            let out = probe.run(inputs.tensor(data, i)?)?;
            if out[0].shape() != [1, classes, h, w] {
                bail!(
                    "{logits}: the unpruned model gives {:?}, the pruned one [1, {classes}, {h}, {w}]",
                    out[0].shape()
                );
            }
            let mut p = slice::<f32>(&out[0])?.to_vec();
            let l = softmax_channels(&mut p, classes, pixels);
            l.iter().for_each(|&c| counts[c as usize] += 1);
            probs.push(p);
            labels.push(l);
            bar.inc(1);
        }
        bar.finish_and_clear();
        // As the refits weigh pixels: frequency^-S, at most 100x the
        // commonest class's weight, a mean of 1 over all pixels.
        let class_weight = crate::class_balance::class_weights(&counts, opts.class_balance);
        let weights = labels
            .iter()
            .map(|l| l.iter().map(|&c| class_weight[c as usize] as f32).collect())
            .collect();
        Ok(Targets { probs, weights })
    }
}

/// Softmax over the channels of `[classes, pixels]` in place; returns each pixel's arg-max.
fn softmax_channels(v: &mut [f32], classes: usize, pixels: usize) -> Vec<u8> {
    let mut labels = vec![0u8; pixels];
    for (px, label) in labels.iter_mut().enumerate() {
        let (mut max, mut arg) = (f32::NEG_INFINITY, 0);
        for c in 0..classes {
            if v[c * pixels + px] > max {
                (max, arg) = (v[c * pixels + px], c);
            }
        }
        let mut sum = 0.0;
        for c in 0..classes {
            let e = (v[c * pixels + px] - max).exp();
            v[c * pixels + px] = e;
            sum += e;
        }
        for c in 0..classes {
            v[c * pixels + px] /= sum;
        }
        *label = arg as u8;
    }
    labels
}

/// The class-weighted KL divergence `sum_px w * KL(p || softmax(z)) / pixels`
/// and its arg-max agreement; writes `scale * dKL/dz` into `grad` when given.
fn kl(
    z: &[f32],
    p: &[f32],
    w: &[f32],
    classes: usize,
    grad: Option<(&mut [f32], f32)>,
) -> (f64, f64) {
    let pixels = w.len();
    let mut total = 0.0f64;
    let mut agree = 0usize;
    let mut grad = grad;
    for px in 0..pixels {
        let (mut max, mut zarg, mut parg, mut pmax) = (f32::NEG_INFINITY, 0, 0, -1.0);
        for c in 0..classes {
            if z[c * pixels + px] > max {
                (max, zarg) = (z[c * pixels + px], c);
            }
            if p[c * pixels + px] > pmax {
                (pmax, parg) = (p[c * pixels + px], c);
            }
        }
        agree += usize::from(zarg == parg);
        let sum: f32 = (0..classes).map(|c| (z[c * pixels + px] - max).exp()).sum();
        let log_sum = sum.ln();
        let mut k = 0.0f32;
        for c in 0..classes {
            let log_q = z[c * pixels + px] - max - log_sum;
            let pc = p[c * pixels + px];
            if pc > 0.0 {
                k += pc * (pc.ln() - log_q);
            }
            if let Some((g, scale)) = grad.as_mut() {
                g[c * pixels + px] = *scale * w[px] * (log_q.exp() - pc) / pixels as f32;
            }
        }
        total += f64::from(w[px] * k);
    }
    (total / pixels as f64, agree as f64 / pixels as f64)
}

/// The tensor to match class probabilities at: the model's output, or,
/// when fixed up-sampling (ConvTranspose, Resize, Upsample) or Identity
/// makes the output from one tensor read by nothing else, that tensor. The
/// up-sampling is linear and fixed, so matching before it asks the same of
/// the weights on 16x fewer pixels (DLA's 4x up-sampler).
pub fn logits_tensor(model: &ModelProto) -> anyhow::Result<String> {
    let g = graph::graph(model);
    let mut tensor = g
        .output
        .first()
        .context("the model has no output")?
        .name
        .clone();
    let inits = graph::initializers(g);
    let readers = |t: &str| {
        g.node
            .iter()
            .filter(|n| n.input.iter().any(|i| i == t))
            .count()
    };
    loop {
        let Some(node) = g.node.iter().find(|n| n.output.contains(&tensor)) else {
            return Ok(tensor);
        };
        let up = match node.op_type.as_str() {
            "Resize" | "Upsample" | "Identity" => true,
            // Only a depthwise one is a fixed up-sampler; a dense one is a layer.
            "ConvTranspose" => node
                .input
                .get(1)
                .and_then(|w| inits.get(w.as_str()))
                .is_some_and(|w| {
                    w.dims.get(1) == Some(&1) && graph::int(node, "group").unwrap_or(1) > 1
                }),
            _ => false,
        };
        match node.input.first() {
            Some(input) if up && readers(input) == 1 => tensor = input.clone(),
            _ => return Ok(tensor),
        }
    }
}

/// Fits `student`'s Conv weights and biases to `teacher`'s class
/// probabilities at tensor `logits` (the same name in both) on `data`, and
/// writes them back into `student` if the held-back KL fell.
pub fn distill(
    student: &mut ModelProto,
    teacher: &ModelProto,
    logits: &str,
    data: &Dataset,
    inputs: &mut InputMaker,
    opts: Options,
) -> anyhow::Result<Distillation> {
    let started = std::time::Instant::now();
    let (h, w) = inputs.size();
    let mut net = Net::build(student, (h as usize, w as usize), logits)
        .with_context(|| format!("following the model to fit up to {logits}"))?;
    let shape = net.output_shape();
    let classes = shape[0];
    if classes > 256 {
        bail!("{logits}: {classes} channels; class probabilities need at most 256 classes");
    }
    let targets = Targets::measure(teacher, logits, shape, data, inputs, &opts)?;
    let n = data.len();
    let validation: Vec<usize> = if n >= 16 {
        (7..n).step_by(8).collect()
    } else {
        Vec::new()
    };
    let mut train: Vec<usize> = (0..n).filter(|i| !validation.contains(i)).collect();
    let batch = opts.batch.clamp(1, train.len().max(1));
    let steps_per_epoch = train.len().div_ceil(batch);
    let steps = opts.epochs * steps_per_epoch;
    let par = Par::rayon(opts.threads);
    let mut ws = net.workspace();
    let mut grad = vec![0.0f32; shape.iter().product()];

    let check = |net: &Net,
                 ws: &mut net::Workspace,
                 inputs: &mut InputMaker|
     -> anyhow::Result<Option<(f64, f64)>> {
        if validation.is_empty() {
            return Ok(None);
        }
        let (mut k, mut a) = (0.0, 0.0);
        for &i in &validation {
            let x = inputs.tensor(data, i)?;
            let z = net.forward(slice::<f32>(&x)?, ws, par);
            let (ki, ai) = kl(z, &targets.probs[i], &targets.weights[i], classes, None);
            k += ki;
            a += ai;
        }
        let m = validation.len() as f64;
        Ok(Some((k / m, a / m)))
    };
    let before = check(&net, &mut ws, inputs)?;

    let trainable: Vec<usize> = (0..net.params.len())
        .filter(|&p| net.params[p].trainable)
        .collect();
    let original: Vec<Vec<f32>> = trainable
        .iter()
        .map(|&p| net.params[p].value.clone())
        .collect();
    let mut moments: Vec<(Vec<f32>, Vec<f32>)> = trainable
        .iter()
        .map(|&p| {
            (
                vec![0.0; net.params[p].value.len()],
                vec![0.0; net.params[p].value.len()],
            )
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut train_kl = Vec::with_capacity(opts.epochs);
    let bar = progress(steps, "distill");
    let mut t = 0;
    for _ in 0..opts.epochs {
        train.shuffle(&mut rng);
        let mut epoch_kl = 0.0;
        for chunk in train.chunks(batch) {
            for g in &mut ws.param_grads {
                g.fill(0.0);
            }
            for &i in chunk {
                let x = inputs.tensor(data, i)?;
                let z = net.forward(slice::<f32>(&x)?, &mut ws, par);
                let scale = 1.0 / chunk.len() as f32;
                let (k, _) = kl(
                    z,
                    &targets.probs[i],
                    &targets.weights[i],
                    classes,
                    Some((&mut grad, scale)),
                );
                epoch_kl += k;
                net.backward(&grad, &mut ws, par);
            }
            t += 1;
            let lr = opts.learning_rate
                * 0.5
                * (1.0 + (std::f64::consts::PI * t as f64 / steps as f64).cos());
            adam(
                &mut net,
                &trainable,
                &ws.param_grads,
                &mut moments,
                t,
                lr as f32,
            );
            bar.inc(1);
        }
        train_kl.push(epoch_kl / train.len() as f64);
        log::info!(
            "distillation epoch {}: KL {:.5}",
            train_kl.len(),
            train_kl[train_kl.len() - 1]
        );
    }
    bar.finish_and_clear();
    let after = check(&net, &mut ws, inputs)?;
    // Better by the measure it minimises, and no worse by the one that
    // decides the labels: a lower KL can still move a few pixels' argmax
    // the wrong way.
    let kept = match (before, after) {
        (Some((kl_b, agree_b)), Some((kl_a, agree_a))) => kl_a < kl_b && agree_a >= agree_b,
        _ => opts.epochs > 0,
    };
    if kept {
        let inits = &mut graph::graph_mut(student).initializer;
        for &p in &trainable {
            let param = &net.params[p];
            let slot = inits
                .iter_mut()
                .find(|t| t.name == param.name)
                .expect("every parameter came from an initializer");
            *slot = graph::f32_tensor(&param.name, &param.dims, &param.value);
        }
    } else {
        log::warn!(
            "the distillation did not lower the KL on the held-back images without lowering \
             their argmax agreement: keeping the weights it started from"
        );
        for (&p, v) in trainable.iter().zip(original) {
            net.params[p].value = v;
        }
    }
    Ok(Distillation {
        data: data.spec().to_string(),
        logits: logits.to_string(),
        train_images: train.len(),
        validation_images: validation.len(),
        epochs: opts.epochs,
        steps,
        learning_rate: opts.learning_rate,
        trainable_params: trainable.iter().map(|&p| net.params[p].value.len()).sum(),
        train_kl,
        validation_kl_before: before.map(|v| v.0),
        validation_kl_after: after.map(|v| v.0),
        validation_agreement_before: before.map(|v| v.1),
        validation_agreement_after: after.map(|v| v.1),
        kept,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One Adam step (β = 0.9, 0.999) on the trainable parameters.
fn adam(
    net: &mut Net,
    trainable: &[usize],
    grads: &[Vec<f32>],
    moments: &mut [(Vec<f32>, Vec<f32>)],
    t: usize,
    lr: f32,
) {
    let (b1, b2) = (0.9f32, 0.999f32);
    let c1 = 1.0 - b1.powi(t as i32);
    let c2 = 1.0 - b2.powi(t as i32);
    for (&p, (m, v)) in trainable.iter().zip(moments) {
        for (((w, g), m), v) in net.params[p]
            .value
            .iter_mut()
            .zip(&grads[p])
            .zip(m.iter_mut())
            .zip(v.iter_mut())
        {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *w -= lr * (*m / c1) / ((*v / c2).sqrt() + 1e-8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dla_runtime::Model;

    /// On the shipped DLA-tiny, the executor's logits are tract's.
    #[test]
    fn forward_pass_matches_tract_on_dla_tiny() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/dla-tiny-seg.onnx");
        let model = Model::load(&path).unwrap();
        let proto = graph::load(&path).unwrap();
        let logits = logits_tensor(&proto).unwrap();
        assert_eq!(
            logits, "/fc/fc.0/Conv_output_0",
            "the tensor before the fixed up-sampler"
        );
        let (h, w) = model.input_size();
        let data = Dataset::open("synth:1", (w, h)).unwrap();
        let mut inputs = InputMaker::new(&model.card().input, (h, w));
        let x = inputs.tensor(&data, 0).unwrap();
        let probe = Probe::new(&proto, std::slice::from_ref(&logits), (h, w), 1).unwrap();
        let want = probe.run(x.clone()).unwrap();
        let want = slice::<f32>(&want[0]).unwrap();
        let net = Net::build(&proto, (h as usize, w as usize), &logits).unwrap();
        assert_eq!(net.output_shape(), [19, h as usize / 4, w as usize / 4]);
        let mut ws = net.workspace();
        let got = net.forward(slice::<f32>(&x).unwrap(), &mut ws, Par::Seq);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst < 1e-4 * scale.max(1.0),
            "max |diff| {worst} (logits up to {scale})"
        );
    }

    /// `kl`'s gradient is the finite difference of its value, and it is 0
    /// where the student already gives the teacher's probabilities.
    #[test]
    fn kl_gradient_matches_finite_differences() {
        let (classes, pixels) = (3, 4);
        let z: Vec<f32> = (0..12).map(|i| ((i * 7) % 5) as f32 * 0.3 - 0.6).collect();
        let mut p: Vec<f32> = (0..12).map(|i| ((i * 3) % 4) as f32 * 0.5).collect();
        softmax_channels(&mut p, classes, pixels);
        let w = [1.0, 0.5, 2.0, 0.5];
        let mut grad = vec![0.0; 12];
        let (k, _) = kl(&z, &p, &w, classes, Some((&mut grad, 1.0)));
        assert!(k > 0.0);
        for i in 0..12 {
            let mut zp = z.clone();
            zp[i] += 1e-3;
            let mut zm = z.clone();
            zm[i] -= 1e-3;
            let fd = (kl(&zp, &p, &w, classes, None).0 - kl(&zm, &p, &w, classes, None).0) / 2e-3;
            assert!(
                (fd - f64::from(grad[i])).abs() < 1e-3,
                "{i}: {fd} vs {}",
                grad[i]
            );
        }
        let same: Vec<f32> = p.iter().map(|v| v.ln()).collect();
        let (k, agree) = kl(&same, &p, &w, classes, Some((&mut grad, 1.0)));
        assert!(k.abs() < 1e-6 && agree == 1.0, "{k} {agree}");
        assert!(grad.iter().all(|g| g.abs() < 1e-6));
    }
}
