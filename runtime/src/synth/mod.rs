//! Synthetic labelled street scenes: the training data of the shipped model,
//! the images of the test suite and (animated) the built-in demo camera.
//!
//! Every frame is a pure function of `(seed, index, size)`: the same arguments
//! give the same pixels on every machine, so datasets are reproducible from
//! their recipe instead of being shipped.

mod raster;
mod scene;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use raster::Canvas;
pub use scene::Scene;

/// One rendered scene: packed RGB8 pixels and Cityscapes trainId labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major RGB8, `3 * width * height` bytes.
    pub rgb: Vec<u8>,
    /// Row-major trainIds (255 = ignore), `width * height` bytes.
    pub labels: Vec<u8>,
}

/// Deterministic generator of synthetic street scenes.
#[derive(Debug, Clone, Copy)]
pub struct SynthGenerator {
    seed: u64,
    width: u32,
    height: u32,
}

impl SynthGenerator {
    /// A generator for `width` x `height` frames drawn from `seed`.
    pub fn new(seed: u64, width: u32, height: u32) -> Self {
        SynthGenerator {
            seed,
            width: width.max(1),
            height: height.max(1),
        }
    }

    /// The scene with number `index`; independent of how many came before.
    pub fn scene(&self, index: u64) -> Scene {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(index);
        Scene::random(&mut rng, self.width as usize, self.height as usize)
    }

    /// Renders scene number `index`.
    pub fn frame(&self, index: u64) -> SynthFrame {
        self.render(&self.scene(index))
    }

    /// Renders an arbitrary (for instance animated) scene at this size.
    pub fn render(&self, scene: &Scene) -> SynthFrame {
        let canvas = scene.render();
        let mut rgb = vec![0u8; canvas.width() * canvas.height() * 3];
        canvas.write_rgb8(&mut rgb);
        SynthFrame {
            width: self.width,
            height: self.height,
            rgb,
            labels: canvas.labels().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_deterministic_by_seed_and_index() {
        let g = SynthGenerator::new(7, 128, 64);
        assert_eq!(g.frame(3), g.frame(3));
        assert_ne!(g.frame(3).rgb, g.frame(4).rgb);
        assert_ne!(g.frame(3).rgb, SynthGenerator::new(8, 128, 64).frame(3).rgb);
    }

    #[test]
    fn scenes_contain_the_main_street_classes() {
        let g = SynthGenerator::new(1, 256, 128);
        let mut seen = [0usize; 256];
        for i in 0..20 {
            for &l in &g.frame(i).labels {
                seen[l as usize] += 1;
            }
        }
        use crate::classes::train_id::*;
        for class in [ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, CAR, PERSON, POLE] {
            assert!(seen[class as usize] > 0, "class {class} never drawn");
        }
    }

    #[test]
    fn advancing_moves_cars_but_keeps_the_layout() {
        let g = SynthGenerator::new(2, 128, 64);
        let mut scene = g.scene(0);
        let before = g.render(&scene);
        scene.advance(0.5);
        let after = g.render(&scene);
        assert_eq!(before.width, after.width);
        let same = before
            .labels
            .iter()
            .zip(&after.labels)
            .filter(|(a, b)| a == b)
            .count();
        assert!(
            same > before.labels.len() / 2,
            "layout should persist between frames"
        );
    }
}
