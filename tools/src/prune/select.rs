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

impl Stop {
    /// Where step `step` of `steps` stops: an equal share of the way from
    /// the whole model (`macs` multiply-accumulates) to `self`.
    pub fn share(self, step: u32, steps: u32, macs: u64) -> Stop {
        let f = f64::from(step) / f64::from(steps.max(1));
        match self {
            Stop::Ratio(r) => Stop::Ratio(r * f),
            Stop::Macs(m) if step >= steps => Stop::Macs(m),
            Stop::Macs(m) => Stop::Macs(macs - ((macs.saturating_sub(m)) as f64 * f) as u64),
        }
    }
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

    /// The chunk taken last, if any (the first chunk may be short).
    fn last(&self) -> Option<std::ops::Range<usize>> {
        let short = self.order.len() % self.round_to;
        match self.taken {
            0 => None,
            t if t == short => Some(0..t),
            t => Some(t.saturating_sub(self.round_to)..t),
        }
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
    // The last chunk may have saved far more than was left to save (a wide
    // full-resolution layer): give back the most important last chunks
    // while the target still holds. Earlier steps' choices (scored minus
    // infinity) stay.
    loop {
        let back = queues
            .iter()
            .enumerate()
            .filter_map(|(qi, q)| {
                let r = q.last()?;
                let mean =
                    q.order[r.clone()].iter().map(|&g| scores[g]).sum::<f64>() / r.len() as f64;
                if !mean.is_finite() {
                    return None;
                }
                let mut trial = removed.clone();
                for &g in &q.order[r.clone()] {
                    trial[g] = false;
                }
                let trial_macs = a.macs(&trial);
                done(count - r.len(), trial_macs).then_some((qi, r, mean, trial_macs))
            })
            .max_by(|x, y| x.2.total_cmp(&y.2));
        let Some((qi, range, _, trial_macs)) = back else {
            break;
        };
        for &g in &queues[qi].order[range.clone()] {
            removed[g] = false;
            count -= 1;
        }
        queues[qi].taken = range.start;
        macs = trial_macs;
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

    #[test]
    fn a_chunk_that_overshot_the_target_is_given_back_when_a_cheaper_one_suffices() {
        // Two layers fed by a locked input: a wide one (100 positions) and a
        // narrow one (1 position), 8 channels each, one chunk of 4 apiece.
        let mut a = one_layer(8);
        let mut narrow = a.convs[0].clone();
        narrow.name = "n".into();
        narrow.output = "z".into();
        narrow.positions = 1;
        a.convs[0].positions = 100;
        a.convs.push(narrow);
        a.groups.extend((0..8).map(|o| Group {
            members: vec![(1, o)],
            component: 1,
        }));
        a.components.push(Component {
            convs: vec![1],
            groups: (8..16).collect(),
        });
        a.tensors.insert("z".into(), (8..16).map(Some).collect());
        let c = Constraints {
            per_mac: false,
            round_to: 4,
            min_keep: 0.5,
        };
        // The narrow layer's channels are the least important, but its chunk
        // saves only 16 MACs: the wide layer's chunk (1,600) must go too, and
        // then the narrow chunk is not needed any more and comes back.
        let scores: Vec<f64> = (0..16)
            .map(|g| if g < 8 { 1.0 + g as f64 } else { 0.1 })
            .collect();
        let s = select(&a, &scores, Stop::Macs(3200 + 32 - 100), c);
        assert!(s.reached);
        let gone: Vec<usize> = (0..16).filter(|&g| s.removed[g]).collect();
        assert_eq!(gone, [0, 1, 2, 3]);
        assert_eq!(s.macs, 1600 + 32);
    }

    #[test]
    fn steps_share_the_way_to_the_target_equally_and_end_on_it() {
        assert_eq!(Stop::Macs(700).share(1, 2, 1000), Stop::Macs(850));
        assert_eq!(Stop::Macs(700).share(2, 2, 1000), Stop::Macs(700));
        assert_eq!(Stop::Macs(700).share(1, 3, 1000), Stop::Macs(900));
        assert_eq!(Stop::Macs(700).share(1, 1, 1000), Stop::Macs(700));
        assert_eq!(Stop::Ratio(0.3).share(1, 2, 1000), Stop::Ratio(0.15));
    }

    #[test]
    fn groups_scored_minus_infinity_go_first_so_a_later_step_keeps_what_earlier_ones_took() {
        let a = one_layer(24);
        let c = Constraints {
            per_mac: false,
            round_to: 8,
            min_keep: 0.25,
        };
        // An earlier step took 16..24 (the new ranking would keep them).
        let mut scores: Vec<f64> = (0..24).map(f64::from).collect();
        for s in &mut scores[16..] {
            *s = f64::NEG_INFINITY;
        }
        let s = select(&a, &scores, Stop::Ratio(0.6), c);
        let gone: Vec<usize> = (0..24).filter(|&g| s.removed[g]).collect();
        assert_eq!(
            gone,
            [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]
        );
    }
}
