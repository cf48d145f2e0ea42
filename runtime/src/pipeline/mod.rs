//! The streaming pipeline: wires a [`Source`], a [`Segmenter`] and the
//! [`Sink`]s together on three named threads joined by bounded queues.
//!
//! ```text
//!  capture thread          infer thread             output thread
//!  source.next_frame ──q1──► segmenter.segment ──q2──► overlay, coverage,
//!  (read + decode)          (pre, network, post)      every sink, stats
//!        ▲                                                 │
//!        └────────── frame and label buffers recycled ─────┘
//! ```
//!
//! - Queue policy follows the source: live sources (cameras, pipes, the demo)
//!   let the newest frame win and count the dropped ones; files never drop.
//! - A corrupt frame (a transient error) is skipped and counted; any other
//!   error stops the pipeline and is returned.
//! - Stopping (the caller's flag, e.g. from Ctrl-C / SIGTERM, `max_frames` or
//!   `duration`) closes the queues; the output thread still finishes every
//!   sink, so recordings and JSON lines are complete. A capture thread stuck
//!   in a blocking read (a silent pipe) is left behind rather than waited for.
//! - Frame and label buffers travel through the queues and come back to small
//!   pools, so nothing is allocated per frame in steady state.

mod links;
mod queue;
mod stats;

pub use links::{Link, LinkSnapshot};
pub use queue::{FrameQueue, Policy};
pub use stats::{ClassCoverage, StageStats, Stats, StatsSnapshot};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::postprocess::coverage;
use crate::segmenter::Segmenter;
use crate::sink::{LazyOverlay, Output, Sink};
use crate::source::{Frame, Source};
use crate::timings::FrameTimings;

/// Frames after which every buffer has its size (the model's arena, the
/// pools) and the pipeline hands the model loading's freed memory back
/// ([`crate::heap::release_free_memory`]).
const RELEASE_AFTER_FRAMES: u64 = 3;

/// When to stop and how to render.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PipelineOptions {
    /// Stop after this many processed frames.
    pub max_frames: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Opacity of class colours in the overlay (0..=1).
    pub alpha: f32,
    /// How often the caller's `tick` runs while the pipeline works.
    pub tick: Duration,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            max_frames: None,
            duration: None,
            alpha: 0.5,
            tick: Duration::from_millis(500),
        }
    }
}

/// Why a pipeline stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The source ended (end of file, last image).
    SourceEnded,
    /// `max_frames` frames were processed.
    MaxFrames,
    /// `duration` has passed.
    Duration,
    /// The caller's stop flag was raised (signal).
    Stopped,
}

/// How a finished pipeline went.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Why it stopped.
    pub reason: EndReason,
    /// The final numbers.
    pub stats: StatsSnapshot,
}

/// A captured frame on its way to inference.
struct Captured {
    frame: Frame,
}

/// A segmented frame on its way to the outputs.
struct Processed {
    frame: Frame,
    labels: Vec<u8>,
    timings: FrameTimings,
}

/// Buffers handed back by the output thread for reuse.
#[derive(Default)]
struct Pools {
    frames: Mutex<Vec<Frame>>,
    labels: Mutex<Vec<Vec<u8>>>,
}

/// Most buffers a pool keeps; more only exist briefly in the queues.
const POOL_MAX: usize = 4;

impl Pools {
    fn frame(&self) -> Frame {
        self.frames
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default()
    }
    fn put_frame(&self, f: Frame) {
        if let Ok(mut p) = self.frames.lock() {
            if p.len() < POOL_MAX {
                p.push(f);
            }
        }
    }
    fn labels(&self) -> Vec<u8> {
        self.labels
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default()
    }
    fn put_labels(&self, l: Vec<u8>) {
        if let Ok(mut p) = self.labels.lock() {
            if p.len() < POOL_MAX {
                p.push(l);
            }
        }
    }
}

/// State shared by the three stage threads.
struct Shared {
    q1: FrameQueue<Captured>,
    q2: FrameQueue<Processed>,
    pools: Pools,
    stats: Arc<Stats>,
    /// Raised by the output thread at `max_frames`.
    done: AtomicBool,
}

impl Shared {
    fn halt(&self) {
        for c in self.q1.close_and_drain() {
            self.pools.put_frame(c.frame);
        }
        self.q2.close();
    }
}

/// A source, a segmenter and sinks, ready to run.
pub struct Pipeline {
    source: Box<dyn Source>,
    segmenter: Segmenter,
    sinks: Vec<Box<dyn Sink>>,
    options: PipelineOptions,
    stats: Arc<Stats>,
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| Error::Source {
            name: "pipeline".into(),
            reason: format!("cannot start the {name} thread: {e}"),
        })
}

fn panicked(stage: &str) -> Error {
    Error::Source {
        name: "pipeline".into(),
        reason: format!("the {stage} thread panicked"),
    }
}

impl Pipeline {
    /// A pipeline; `stats` is shared with whoever shows them (e.g. the viewer).
    pub fn new(
        source: Box<dyn Source>,
        segmenter: Segmenter,
        sinks: Vec<Box<dyn Sink>>,
        options: PipelineOptions,
        stats: Arc<Stats>,
    ) -> Pipeline {
        Pipeline {
            source,
            segmenter,
            sinks,
            options,
            stats,
        }
    }

    /// Runs until the source ends, a limit is reached or `stop` is raised;
    /// calls `tick` with the stats once the stages are started, then every
    /// `options.tick`, on the calling thread.
    pub fn run(self, stop: &AtomicBool, mut tick: impl FnMut(&Stats)) -> Result<Summary> {
        let Pipeline {
            mut source,
            mut segmenter,
            mut sinks,
            options,
            stats,
        } = self;
        if let Some(link) = source.link() {
            stats.add_link(link);
        }
        let policy = if source.is_live() {
            Policy::LatestWins
        } else {
            Policy::Block
        };
        let shared = Arc::new(Shared {
            q1: FrameQueue::new(1, policy),
            q2: FrameQueue::new(1, policy),
            pools: Pools::default(),
            stats: stats.clone(),
            done: AtomicBool::new(false),
        });

        let sh = shared.clone();
        let capture = spawn("capture", move || -> Result<bool> {
            loop {
                let mut frame = sh.pools.frame();
                match source.next_frame(&mut frame) {
                    Ok(true) => {
                        sh.stats.record_capture(frame.capture, frame.decode);
                        match sh.q1.push(Captured { frame }) {
                            Ok(None) => {}
                            Ok(Some(stale)) => {
                                sh.stats.record_dropped();
                                sh.pools.put_frame(stale.frame);
                            }
                            Err(_) => return Ok(false),
                        }
                    }
                    Ok(false) => {
                        log::info!("{}: source ended", source.name());
                        sh.q1.close();
                        return Ok(true);
                    }
                    Err(e) if e.is_transient() => {
                        log::warn!("{e}; skipped");
                        sh.stats.record_corrupt();
                        sh.pools.put_frame(frame);
                    }
                    Err(e) => {
                        sh.q1.close();
                        return Err(e);
                    }
                }
            }
        })?;

        let classes = segmenter.card().classes.clone();
        let palette = segmenter.palette().clone();
        let sh = shared.clone();
        let infer = spawn("infer", move || -> Result<()> {
            let mut segmented = 0u64;
            while let Some(Captured { frame }) = sh.q1.pop() {
                let view = match frame.as_ref() {
                    Ok(v) => v,
                    Err(e) => {
                        log::warn!("{e}; skipped");
                        sh.stats.record_corrupt();
                        sh.pools.put_frame(frame);
                        continue;
                    }
                };
                let seg = match segmenter.segment(view) {
                    Ok(s) => s,
                    Err(e) if e.is_transient() => {
                        log::warn!("{e}; skipped");
                        sh.stats.record_corrupt();
                        sh.pools.put_frame(frame);
                        continue;
                    }
                    Err(e) => {
                        sh.halt();
                        return Err(e);
                    }
                };
                segmented += 1;
                if segmented == RELEASE_AFTER_FRAMES {
                    // Every buffer is sized now: what malloc holds free is
                    // the model loading's garbage.
                    let released = crate::heap::release_free_memory();
                    log::debug!("free memory handed back after {segmented} frames: {released}");
                }
                let mut labels = sh.pools.labels();
                labels.clear();
                labels.extend_from_slice(seg.labels);
                let timings = FrameTimings {
                    capture: frame.capture,
                    decode: frame.decode,
                    pre: seg.timings.pre,
                    infer: seg.timings.infer,
                    post: seg.timings.post,
                    render: Duration::ZERO,
                };
                match sh.q2.push(Processed {
                    frame,
                    labels,
                    timings,
                }) {
                    Ok(None) => {}
                    Ok(Some(stale)) => {
                        sh.stats.record_dropped();
                        sh.pools.put_frame(stale.frame);
                        sh.pools.put_labels(stale.labels);
                    }
                    Err(p) => {
                        sh.pools.put_frame(p.frame);
                        break;
                    }
                }
            }
            sh.q2.close();
            Ok(())
        })?;

        let sh = shared.clone();
        let output = spawn("output", move || -> Result<()> {
            let mut blend = LazyOverlay::new(options.alpha);
            let mut cov = vec![0.0f32; 256];
            let mut index = 0u64;
            let mut result = Ok(());
            while let Some(p) = sh.q2.pop() {
                let t0 = Instant::now();
                coverage(&p.labels, &mut cov);
                index += 1;
                let mut out = Output {
                    index,
                    frame: &p.frame,
                    labels: &p.labels,
                    blend: &blend,
                    coverage: &cov,
                    classes: &classes,
                    palette: &palette,
                    timings: p.timings,
                };
                for sink in sinks.iter_mut() {
                    out.timings.render = t0.elapsed();
                    if let Err(e) = sink.write(&out) {
                        result = Err(e);
                        break;
                    }
                }
                blend.next_frame();
                let mut timings = p.timings;
                timings.render = t0.elapsed();
                sh.stats
                    .record_output(&timings, &cov, (p.frame.width, p.frame.height));
                sh.pools.put_frame(p.frame);
                sh.pools.put_labels(p.labels);
                if result.is_err() || options.max_frames.is_some_and(|m| index >= m) {
                    sh.done.store(true, Ordering::SeqCst);
                    sh.halt();
                    break;
                }
            }
            for sink in sinks.iter_mut() {
                if let Err(e) = sink.finish() {
                    log::error!("{}: {e}", sink.name());
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
            result
        })?;

        // Supervise: ticks for the caller, stop flag, time limit. The first
        // tick comes at once: the stages run (a service says READY on it).
        let started = Instant::now();
        tick(&stats);
        let mut last_tick = Instant::now();
        let mut reason = None;
        while !output.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
            if reason.is_none() {
                if stop.load(Ordering::SeqCst) {
                    reason = Some(EndReason::Stopped);
                } else if options.duration.is_some_and(|d| started.elapsed() >= d) {
                    reason = Some(EndReason::Duration);
                }
                if reason.is_some() {
                    shared.halt();
                }
            }
            if last_tick.elapsed() >= options.tick {
                last_tick = Instant::now();
                tick(&stats);
            }
        }
        let output_result = output.join().map_err(|_| panicked("output"))?;
        let infer_result = infer.join().map_err(|_| panicked("infer"))?;
        // The capture thread may sit in a blocking read (a silent pipe); give
        // it a moment, then leave it: the process is about to exit anyway.
        shared.halt();
        let deadline = Instant::now() + Duration::from_millis(500);
        while !capture.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut source_ended = false;
        if capture.is_finished() {
            source_ended = capture.join().map_err(|_| panicked("capture"))??;
        } else {
            log::info!("capture thread still blocked in a read; not waiting for it");
        }
        infer_result?;
        output_result?;
        let reason = reason.unwrap_or(if shared.done.load(Ordering::SeqCst) {
            EndReason::MaxFrames
        } else if source_ended {
            EndReason::SourceEnded
        } else {
            EndReason::Stopped
        });
        Ok(Summary {
            reason,
            stats: stats.snapshot(),
        })
    }
}
