//! Heap allocations per frame, counted by a global allocator wrapper.
//!
//! The per-frame path (pre-processing, inference on tract with our
//! operators, alone or with its labels head, post-processing, the segmenter around them, the demo source)
//! must allocate nothing once the first frames have set the sizes: every
//! node of the shipped fp32 and int8 plans is one of our operators, whose
//! outputs come from the model's arena (`dla_runtime::ops::Arena`). One
//! library still allocates and is held to "nothing kept": fast_image_resize
//! computes its filter coefficients on each resize (about 130 small blocks,
//! freed before it returns); its count is printed and must be steady.
//!
//! One test function: the counter is process-wide and tests run in parallel.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use dla_runtime::backend::{Backend, Logits, TractBackend};
use dla_runtime::source::{DemoSource, Frame, Source, SourceOptions};
use dla_runtime::{FrameRef, Model, Segmenter};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static FREED: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        FREED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        FREED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What `f` did to the heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Heap {
    allocations: u64,
    bytes: u64,
    /// Bytes still held when `f` returned.
    kept: i64,
}

fn count(f: impl FnOnce()) -> Heap {
    let load = || {
        (
            ALLOCATIONS.load(Ordering::SeqCst),
            BYTES.load(Ordering::SeqCst),
            FREED.load(Ordering::SeqCst),
        )
    };
    let (a, b, d) = load();
    f();
    let (a2, b2, d2) = load();
    Heap {
        allocations: a2 - a,
        bytes: b2 - b,
        kept: (b2 - b) as i64 - (d2 - d) as i64,
    }
}

const NONE: Heap = Heap {
    allocations: 0,
    bytes: 0,
    kept: 0,
};

fn model(name: &str) -> Model {
    Model::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)).unwrap()
}

/// Fixed logits, no work: isolates the segmenter's own allocations.
struct FixedLogits {
    input: Vec<f32>,
    logits: Vec<f32>,
    shape: (usize, usize, usize),
}

impl Backend for FixedLogits {
    fn name(&self) -> &'static str {
        "fixed"
    }
    fn input_mut(&mut self) -> &mut [f32] {
        &mut self.input
    }
    fn run(&mut self) -> dla_runtime::Result<()> {
        // Touch the input so the work is not optimised away.
        self.logits[0] = self.input[0];
        Ok(())
    }
    fn logits(&self) -> Logits<'_> {
        let (classes, height, width) = self.shape;
        Logits {
            data: &self.logits,
            classes,
            height,
            width,
        }
    }
}

#[test]
fn per_frame_allocations() {
    let fixture = model("tests/fixtures/tiny_seg.onnx");
    let (h, w) = fixture.input_size();
    let (h, w) = (h as usize, w as usize);
    let classes = fixture.card().classes.len();
    let logits: Vec<f32> = (0..classes * h * w).map(|i| (i % 7) as f32).collect();
    let backend = FixedLogits {
        input: vec![0.0; 3 * h * w],
        logits,
        shape: (classes, h, w),
    };
    let mut segmenter = Segmenter::with_backend(&fixture, Box::new(backend), Default::default());

    // The demo camera renders into the caller's frame; frames at the model's
    // size go straight to normalisation, others through the resizer.
    let mut at_model_size = DemoSource::new(&SourceOptions {
        size: Some((w as u32, h as u32)),
        fps: 1000.0,
        ..SourceOptions::default()
    });
    let mut camera_size = DemoSource::new(&SourceOptions {
        size: Some((320, 160)),
        fps: 1000.0,
        ..SourceOptions::default()
    });
    for (demo, resized) in [(&mut at_model_size, false), (&mut camera_size, true)] {
        let mut frame = Frame::default();
        for _ in 0..2 {
            demo.next_frame(&mut frame).unwrap();
            let f = FrameRef::new(frame.width, frame.height, &frame.data).unwrap();
            segmenter.segment(f).unwrap();
        }
        let mut resizes = Vec::new();
        for i in 0..10 {
            let source = count(|| {
                demo.next_frame(&mut frame).unwrap();
            });
            assert_eq!(source, NONE, "frame {i}: the demo source allocated");
            let segment = count(|| {
                let f = FrameRef::new(frame.width, frame.height, &frame.data).unwrap();
                segmenter.segment(f).unwrap();
            });
            if resized {
                resizes.push(segment);
            } else {
                assert_eq!(segment, NONE, "frame {i}: pre + post allocated");
            }
        }
        if resized {
            eprintln!(
                "fast_image_resize per frame (320x160 -> {w}x{h}): {:?}",
                resizes[0]
            );
            assert!(
                resizes
                    .iter()
                    .all(|r| *r == resizes[0] && r.kept == 0 && r.bytes < 64 << 10),
                "only the resizer's freed coefficients, the same every frame: {resizes:?}"
            );
        }
    }

    // Inference on the shipped fp32 and int8 models, on 1 and 2 threads:
    // nothing at all. Two runs size the arena (the backend holds one frame's
    // logits while the next is computed).
    for name in ["models/dla-tiny-seg.onnx", "models/dla-tiny-seg-int8.onnx"] {
        let model = model(name);
        for threads in [1, 2] {
            let mut backend = TractBackend::new(&model, threads).unwrap();
            for _ in 0..3 {
                backend.run().unwrap();
            }
            for i in 0..10 {
                let run = count(|| backend.run().unwrap());
                assert_eq!(
                    run, NONE,
                    "{name}, {threads} thread(s), run {i}: inference allocated"
                );
            }
            // Labels only (`segment`, `stream`): the plan, then the final
            // up-sampler a band at a time into the argmax and the resize.
            let shape = backend.logits();
            let (w, h) = (shape.width, shape.height);
            for size in [(w, h), (2 * w, 2 * h)] {
                let mut labels = vec![0u8; size.0 * size.1];
                for _ in 0..2 {
                    assert!(backend.run_labels(&mut labels, size).unwrap());
                }
                for i in 0..5 {
                    let run = count(|| assert!(backend.run_labels(&mut labels, size).unwrap()));
                    assert_eq!(
                        run, NONE,
                        "{name}, {threads} thread(s), labels at {size:?}, run {i}: allocated"
                    );
                }
            }
            let (tensors, bytes) = backend.arena().expect("our operators").held();
            eprintln!(
                "{name}, {threads} thread(s): arena {tensors} tensors, {:.1} MiB",
                bytes as f64 / (1 << 20) as f64
            );
        }
    }
}
