//! The built-in demo camera: synthetic street scenes from [`crate::synth`]
//! with cars and people moving, paced at a frame rate like a real camera, so
//! `dla-edge stream` shows something live on any machine.

use std::time::{Duration, Instant, SystemTime};

use super::{Frame, Pacer, Source, SourceOptions};
use crate::error::Result;
use crate::synth::{Canvas, Scene, SynthGenerator};

/// Default demo frame size: the shipped model's input aspect, twice its size.
pub const DEMO_SIZE: (u32, u32) = (1024, 512);

/// Seconds of animation before the demo cuts to another street.
const SCENE_SECONDS: f32 = 12.0;

/// Animated synthetic scenes, paced at a frame rate.
pub struct DemoSource {
    generator: SynthGenerator,
    scene: Scene,
    /// Reused every frame: rendering allocates nothing.
    canvas: Canvas,
    scene_index: u64,
    scene_time: f32,
    pacer: Pacer,
}

impl DemoSource {
    /// A demo at `options.size` (default [`DEMO_SIZE`]) and `options.fps`.
    pub fn new(options: &SourceOptions) -> DemoSource {
        let (w, h) = options.size.unwrap_or(DEMO_SIZE);
        let generator = SynthGenerator::new(options.seed, w, h);
        let fps = if options.fps.is_finite() && options.fps > 0.0 {
            options.fps
        } else {
            10.0
        };
        DemoSource {
            scene: generator.scene(0),
            canvas: Canvas::new(w as usize, h as usize, 0),
            generator,
            scene_index: 0,
            scene_time: 0.0,
            pacer: Pacer::new(f64::from(fps)),
        }
    }
}

impl Source for DemoSource {
    fn name(&self) -> &str {
        "demo"
    }

    fn is_live(&self) -> bool {
        true
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool> {
        // A slow consumer does not make the demo catch up in a burst.
        self.pacer.wait();
        let t0 = Instant::now();
        let dt = self.pacer.period().as_secs_f32();
        self.scene_time += dt;
        if self.scene_time > SCENE_SECONDS {
            self.scene_time = 0.0;
            self.scene_index += 1;
            self.scene = self.generator.scene(self.scene_index);
        } else {
            self.scene.advance(dt);
        }
        self.scene.render_into(&mut self.canvas);
        let out = frame.resize(self.canvas.width() as u32, self.canvas.height() as u32);
        self.canvas.write_rgb8(out);
        frame.timestamp = SystemTime::now();
        frame.capture = t0.elapsed();
        frame.decode = Duration::ZERO;
        frame.origin.clear();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_frames_move_and_are_paced() {
        let mut demo = DemoSource::new(&SourceOptions {
            size: Some((128, 64)),
            fps: 50.0,
            seed: 3,
            ..SourceOptions::default()
        });
        let (mut a, mut b) = (Frame::default(), Frame::default());
        let t0 = Instant::now();
        assert!(demo.next_frame(&mut a).unwrap());
        for _ in 0..5 {
            assert!(demo.next_frame(&mut b).unwrap());
        }
        assert!(
            t0.elapsed() >= Duration::from_millis(90),
            "5 periods of 20 ms"
        );
        assert_eq!((b.width, b.height), (128, 64));
        assert_ne!(a.data, b.data, "cars and people move");
    }
}
