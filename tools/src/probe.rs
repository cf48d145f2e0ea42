//! Running ONNX graphs on our own runtime (tract) with any intermediate
//! tensors as extra outputs, and turning data set samples into model inputs:
//! quantisation's calibration and pruning's importance and reconstruction
//! statistics all come from here.

use std::sync::Arc;

use anyhow::Context;
use dla_runtime::model::InputSpec;
use dla_runtime::preprocess::Preprocessor;
use indicatif::{ProgressBar, ProgressStyle};
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use crate::dataset::Dataset;

/// An optimised tract plan of an ONNX graph whose outputs are chosen tensors.
pub struct Probe {
    plan: Arc<TypedRunnableModel>,
    executor: Executor,
}

impl Probe {
    /// Plans `model` for a 1x3x`height`x`width` input with `outputs` (tensor
    /// names) as its outputs, in that order.
    pub fn new(
        model: &ModelProto,
        outputs: &[String],
        (height, width): (u32, u32),
        threads: usize,
    ) -> anyhow::Result<Probe> {
        let mut graph = tract_onnx::onnx()
            .model_for_proto_model(model)
            .context("tract cannot read the graph")?;
        graph.set_input_fact(0, f32::fact([1, 3, height as usize, width as usize]).into())?;
        graph
            .select_outputs_by_name(outputs)
            .context("selecting intermediate tensors")?;
        let plan = graph
            .into_optimized()
            .context("tract cannot optimise the graph")?
            .into_runnable()?;
        let executor = if threads > 1 {
            Executor::multithread_with_name(threads, "dla-calib")
        } else {
            Executor::SingleThread
        };
        Ok(Probe { plan, executor })
    }

    /// Runs one normalised input; outputs come back in the order asked for.
    pub fn run(&self, input: Tensor) -> anyhow::Result<TVec<TValue>> {
        let plan = &self.plan;
        multithread_tract_scope(self.executor.clone(), || plan.run(tvec![input.into()]))
            .context("inference failed")
    }
}

/// Turns data set samples into normalised input tensors as the model card says.
pub struct InputMaker {
    pre: Preprocessor,
    shape: [usize; 4],
    buffer: Vec<f32>,
}

impl InputMaker {
    /// A maker for the model input described by `spec`.
    pub fn new(spec: &InputSpec, (height, width): (u32, u32)) -> InputMaker {
        let shape = [1, 3, height as usize, width as usize];
        InputMaker {
            pre: Preprocessor::new(spec),
            shape,
            buffer: vec![0.0; shape.iter().product()],
        }
    }

    /// The input's (height, width).
    pub fn size(&self) -> (u32, u32) {
        (self.shape[2] as u32, self.shape[3] as u32)
    }

    /// Sample `i` of `data`, resized and normalised.
    pub fn tensor(&mut self, data: &Dataset, i: usize) -> anyhow::Result<Tensor> {
        let sample = data.load(i)?;
        self.pre
            .run(sample.image.frame(), &mut self.buffer)
            .with_context(|| format!("pre-processing {}", sample.name))?;
        Tensor::from_shape(&self.shape, &self.buffer)
    }
}

/// A progress bar that hides itself off a terminal.
pub fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template("{msg:<12} {bar:40} {pos}/{len} [{elapsed} < {eta}]")
            .expect("static template"),
    );
    bar.set_message(what.to_string());
    bar
}

/// The values of a plain in-memory tensor.
pub fn slice<D: Datum>(t: &Tensor) -> anyhow::Result<&[D]> {
    t.try_as_plain_ram()?.as_slice::<D>()
}
