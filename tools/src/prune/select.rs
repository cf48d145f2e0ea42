//! Choosing what to remove: one global ranking of groups, taken in chunks of
//! `--round-to` per component so every layer keeps a width its kernels like,
//! never below the minimum width, until the ratio or the GMAC target is met.

use super::deps::Analysis;

/// When to stop removing channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// Remove this fraction of the prunable channels.
    Ratio(f64),
    /// Remove until the model needs at most this many multiply-accumulates.
    Macs(u64),
}

/// How the ranking is constrained.
#[derive(Debug, Clone, Copy)]
pub struct Constraints {
    /// Rank chunks by importance per multiply-accumulate saved (true), or by
    /// importance alone.
    pub per_mac: bool,
    /// Widths stay multiples of this (or their original width).
    pub round_to: usize,
    /// Each component keeps at least this fraction of its channels.
    pub min_keep: f64,
}

/// The chosen groups.
#[derive(Debug, Clone)]
pub struct Selection {
    /// `removed[g]`: group g goes.
    pub removed: Vec<bool>,
    /// Multiply-accumulates after removal.
    pub macs: u64,
    /// Whether the stop condition was met (false: every component hit its minimum width).
    pub reached: bool,
}

struct Queue {
    /// Group indices, least important first.
    order: Vec<usize>,
    /// How many are removed.
    taken: usize,
    /// How many must stay.
    floor: usize,
    round_to: usize,
}

impl Queue {
    /// The next chunk, if the component can lose it.
    fn next(&self) -> Option<std::ops::Range<usize>> {
        let n = self.order.len();
        let left = n - self.taken;
        let size = match (n % self.round_to, self.taken) {
            (r, 0) if r != 0 => r,
            _ => self.round_to,
        };
        (left >= size && left - size >= self.floor).then(|| self.taken..self.taken + size)
    }
}

/// Takes groups, least important chunk first, until `stop` holds.
pub fn select(a: &Analysis, scores: &[f64], stop: Stop, c: Constraints) -> Selection {
    let round_to = c.round_to.max(1);
    let mut queues: Vec<Queue> = a
        .components
        .iter()
        .map(|comp| {
            let mut order = comp.groups.clone();
            order.sort_by(|&x, &y| scores[x].total_cmp(&scores[y]));
            let n = order.len();
            let mut floor = ((n as f64 * c.min_keep).ceil() as usize).clamp(1, n);
            floor = floor.div_ceil(round_to) * round_to;
            Queue {
                order,
                taken: 0,
                floor: floor.min(n),
                round_to,
            }
        })
        .collect();
    let mut removed = vec![false; a.groups.len()];
    let total = a.groups.len();
    let mut count = 0usize;
    let mut macs = a.macs(&removed);
    let done = |count: usize, macs: u64| match stop {
        Stop::Ratio(r) => count as f64 >= r * total as f64,
        Stop::Macs(m) => macs <= m,
    };
    while !done(count, macs) {
        let best = queues
            .iter()
            .enumerate()
            .filter_map(|(qi, q)| {
                q.next().map(|r| {
                    let sum = q.order[r.clone()].iter().map(|&g| scores[g]).sum::<f64>();
                    let cost = if c.per_mac {
                        // What this chunk would save, given what is already gone.
                        let mut trial = removed.clone();
                        for &g in &q.order[r.clone()] {
                            trial[g] = true;
                        }
                        let saved = macs.saturating_sub(a.macs(&trial)).max(1) as f64;
                        sum / saved
                    } else {
                        sum / r.len() as f64
                    };
                    (qi, r, cost)
                })
            })
            .min_by(|x, y| x.2.total_cmp(&y.2));
        let Some((qi, range, _)) = best else {
            return Selection {
                removed,
                macs,
                reached: false,
            };
        };
        for &g in &queues[qi].order[range.clone()] {
            removed[g] = true;
            count += 1;
        }
        queues[qi].taken = range.end;
        macs = a.macs(&removed);
    }
    Selection {
        removed,
        macs,
        reached: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prune::deps::{Component, ConvKind, ConvNode, ConvOp, Group};
    use std::collections::HashMap;

    /// One dense 1x1 conv `x(4) -> y(width)` feeding a locked output.
    fn one_layer(width: usize) -> Analysis {
        let conv = ConvNode {
            node: 0,
            name: "c".into(),
            op: ConvOp::Conv,
            kind: ConvKind::Dense,
            weight: "w".into(),
            bias: None,
            input: "x".into(),
            output: "y".into(),
            weight_dims: vec![width, 4, 1, 1],
            positions: 10,
            bn_scale: None,
        };
        let groups: Vec<Group> = (0..width)
            .map(|o| Group {
                members: vec![(0, o)],
                component: 0,
            })
            .collect();
        let mut tensors = HashMap::new();
        tensors.insert("x".to_string(), vec![None; 4]);
        tensors.insert("y".to_string(), (0..width).map(Some).collect());
        Analysis {
            convs: vec![conv],
            components: vec![Component {
                convs: vec![0],
                groups: (0..width).collect(),
            }],
            groups,
            tensors,
            batch_norms: vec![],
            resizes: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn takes_the_least_important_in_round_chunks_down_to_the_floor() {
        let a = one_layer(20);
        // Scores: channel i scores i, so 0, 1, 2 ... go first.
        let scores: Vec<f64> = (0..20).map(f64::from).collect();
        let c = Constraints {
            per_mac: false,
            round_to: 8,
            min_keep: 0.25,
        };
        // 20 is not a multiple of 8: the first chunk is 4 (20 -> 16), then 8.
        let s = select(&a, &scores, Stop::Ratio(0.1), c);
        assert_eq!(s.removed.iter().filter(|&&r| r).count(), 4);
        assert!(s.removed[..4].iter().all(|&r| r));
        let s = select(&a, &scores, Stop::Ratio(0.3), c);
        assert_eq!(s.removed.iter().filter(|&&r| r).count(), 12, "16 -> 8");
        // The floor: 25 % of 20 is 5, rounded up to 8 channels stay.
        let s = select(&a, &scores, Stop::Ratio(0.9), c);
        assert_eq!(s.removed.iter().filter(|&&r| r).count(), 12);
        assert!(!s.reached);
        // A MAC target: 10 positions x 4 inputs per output channel.
        let s = select(&a, &scores, Stop::Macs(40 * 16), c);
        assert_eq!(s.macs, 40 * 16);
        assert!(s.reached);
    }
}
