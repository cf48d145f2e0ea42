//! Class balance: how much each class's pixels should weigh when a fit is
//! judged over street scenes, where road, building and sky cover most of the
//! picture and the thin classes (poles, signs, people) very little. Used by
//! `prune`'s refits (`emphasis`) and by `distill`'s loss, so both weigh alike.

/// `frequency^-strength` per class, capped at 100x the commonest class's,
/// scaled so that the mean weight over all pixels is 1. Absent classes get 0.
pub fn class_weights(counts: &[u64], strength: f64) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return vec![1.0; counts.len()];
    }
    let raw: Vec<f64> = counts
        .iter()
        .map(|&n| {
            if n == 0 {
                0.0
            } else {
                (n as f64 / total as f64).powf(-strength)
            }
        })
        .collect();
    let floor = raw
        .iter()
        .copied()
        .filter(|&w| w > 0.0)
        .fold(f64::INFINITY, f64::min);
    let capped: Vec<f64> = raw.iter().map(|&w| w.min(100.0 * floor)).collect();
    let mean: f64 = counts
        .iter()
        .zip(&capped)
        .map(|(&n, &w)| n as f64 * w)
        .sum::<f64>()
        / total as f64;
    capped.iter().map(|w| w / mean).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rare_classes_weigh_more_and_the_mean_is_one() {
        let counts = [900, 90, 10, 0];
        let w = class_weights(&counts, 0.5);
        assert!(w[2] > w[1] && w[1] > w[0], "{w:?}");
        assert_eq!(w[3], 0.0);
        let mean: f64 = counts
            .iter()
            .zip(&w)
            .map(|(&n, w)| n as f64 * w)
            .sum::<f64>()
            / 1000.0;
        assert!((mean - 1.0).abs() < 1e-12);
        // Inverse frequency: each present class carries the same total weight.
        let w = class_weights(&counts, 1.0);
        assert!((900.0 * w[0] - 10.0 * w[2]).abs() < 1e-9);
        // Strength 0: every pixel alike.
        assert!(class_weights(&counts, 0.0)[..3]
            .iter()
            .all(|&x| (x - 1.0).abs() < 1e-12));
    }

    #[test]
    fn the_cap_bounds_the_rarest_class() {
        let w = class_weights(&[1_000_000, 1], 1.0);
        assert!((w[1] / w[0] - 100.0).abs() < 1e-9);
    }
}
