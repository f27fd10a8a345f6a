//! The stages of the sampling pipeline, each a function over a candidate list.
//!
//! Candidates are kept sorted most-likely-first (ties broken by the lower id) from [`top_k`] on,
//! so the truncating stages only shorten the list. `p` is meaningful after [`softmax`] (and is
//! recomputed by [`temperature`]).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// One token still in the running.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// Token id.
    pub id: u32,
    /// Its (possibly penalised, temperature-scaled) logit.
    pub logit: f32,
    /// Its probability among the candidates, after the last softmax.
    pub p: f32,
}

/// llama.cpp's penalties: a recent token's logit is divided by `repeat` when positive
/// (multiplied when negative), then reduced by `frequency` × its count in `recent` and by
/// `presence` once.
pub fn penalize(logits: &mut [f32], recent: &[u32], repeat: f32, presence: f32, frequency: f32) {
    let mut counts: Vec<(u32, u32)> = Vec::with_capacity(recent.len());
    for &t in recent {
        match counts.iter_mut().find(|(id, _)| *id == t) {
            Some((_, n)) => *n += 1,
            None => counts.push((t, 1)),
        }
    }
    for (id, n) in counts {
        let Some(l) = logits.get_mut(id as usize) else {
            continue;
        };
        *l = if *l <= 0.0 { *l * repeat } else { *l / repeat };
        *l -= n as f32 * frequency + presence;
    }
}

/// Fills `out` with the `k` highest logits, sorted (k = 0 keeps every token).
pub fn top_k(logits: &[f32], k: usize, out: &mut Vec<Candidate>) {
    out.clear();
    let cand = |i: usize, l: f32| Candidate {
        id: i as u32,
        logit: l,
        p: 0.0,
    };
    let order = |a: &Candidate, b: &Candidate| b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id));
    if k > 0 && k < logits.len() {
        // One pass with a min-heap of the k best so far: a vocabulary can be 262k tokens, and
        // most of them lose to the heap's minimum after one comparison.
        let mut heap: BinaryHeap<Reverse<Ranked>> = BinaryHeap::with_capacity(k + 1);
        for (i, &l) in logits.iter().enumerate() {
            let r = Ranked(cand(i, l));
            if heap.len() < k {
                heap.push(Reverse(r));
            } else if heap.peek().is_some_and(|m| r > m.0) {
                heap.pop();
                heap.push(Reverse(r));
            }
        }
        out.extend(heap.into_iter().map(|Reverse(r)| r.0));
    } else {
        out.extend(logits.iter().enumerate().map(|(i, &l)| cand(i, l)));
    }
    out.sort_unstable_by(order);
}

/// A candidate ranked as the sampler prefers it: higher logit first, then lower id.
struct Ranked(Candidate);

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .logit
            .total_cmp(&other.0.logit)
            .then(other.0.id.cmp(&self.0.id))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

/// Sets `p` to the softmax of the logits (candidates must be sorted, so the first is the max).
pub fn softmax(c: &mut [Candidate]) {
    let Some(max) = c.first().map(|c| c.logit) else {
        return;
    };
    let mut sum = 0.0f64;
    for x in c.iter_mut() {
        x.p = (x.logit - max).exp();
        sum += x.p as f64;
    }
    for x in c.iter_mut() {
        x.p = (x.p as f64 / sum) as f32;
    }
}

/// Keeps the smallest most-likely prefix whose probability reaches `top_p` (at least one).
pub fn top_p(c: &mut Vec<Candidate>, top_p: f32) {
    if top_p >= 1.0 {
        return;
    }
    let mut mass = 0.0f32;
    for i in 0..c.len() {
        mass += c[i].p;
        if mass >= top_p {
            c.truncate(i + 1);
            return;
        }
    }
}

/// Keeps the tokens at least `min_p` times as likely as the most likely one.
pub fn min_p(c: &mut Vec<Candidate>, min_p: f32) {
    if min_p <= 0.0 || c.is_empty() {
        return;
    }
    // p_i >= min_p * p_0  <=>  logit_i - logit_0 >= ln(min_p); compared on logits so tiny
    // probabilities do not underflow.
    let cut = c[0].logit + min_p.ln();
    let keep = c.iter().take_while(|x| x.logit >= cut).count().max(1);
    c.truncate(keep);
}

/// Divides the logits by `t` and recomputes `p`.
pub fn temperature(c: &mut [Candidate], t: f32) {
    for x in c.iter_mut() {
        x.logit /= t;
    }
    softmax(c);
}

/// The candidate at which the cumulative probability passes `r` ∈ [0, 1).
pub fn draw(c: &[Candidate], r: f32) -> u32 {
    let mut acc = 0.0f32;
    for x in c {
        acc += x.p;
        if r < acc {
            return x.id;
        }
    }
    // Rounding can leave the sum a hair below 1.
    c.last().map_or(0, |x| x.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(logits: &[f32]) -> Vec<Candidate> {
        let mut c = Vec::new();
        top_k(logits, 0, &mut c);
        softmax(&mut c);
        c
    }

    fn ids(c: &[Candidate]) -> Vec<u32> {
        c.iter().map(|x| x.id).collect()
    }

    #[test]
    fn penalties_follow_llama_cpp() {
        let mut l = vec![2.0, -1.0, 0.5, 3.0];
        // Token 0 seen twice, token 1 once, token 3 never.
        penalize(&mut l, &[0, 1, 0], 2.0, 0.5, 0.25);
        assert_eq!(
            l,
            // 2/2 - 2·0.25 - 0.5 = 0;  -1·2 - 0.25 - 0.5 = -2.75.
            vec![0.0, -2.75, 0.5, 3.0]
        );
    }

    #[test]
    fn penalties_ignore_ids_outside_the_vocabulary() {
        let mut l = vec![1.0];
        penalize(&mut l, &[7], 2.0, 1.0, 1.0);
        assert_eq!(l, vec![1.0]);
    }

    #[test]
    fn top_k_sorts_and_breaks_ties_by_id() {
        let mut c = Vec::new();
        top_k(&[1.0, 5.0, 3.0, 5.0, 0.0], 3, &mut c);
        assert_eq!(ids(&c), vec![1, 3, 2]);
        top_k(&[1.0, 5.0, 3.0], 0, &mut c);
        assert_eq!(ids(&c), vec![1, 2, 0]);
        top_k(&[1.0, 5.0], 9, &mut c);
        assert_eq!(ids(&c), vec![1, 0]);
    }

    #[test]
    fn top_k_equals_the_head_of_a_full_sort() {
        // Many ties, so the id tie-break decides membership at the cut.
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 13) as f32).collect();
        let mut all = Vec::new();
        top_k(&logits, 0, &mut all);
        for k in [1, 5, 40, 77, 999] {
            let mut c = Vec::new();
            top_k(&logits, k, &mut c);
            assert_eq!(c, all[..k], "k = {k}");
        }
    }

    #[test]
    fn softmax_is_exact() {
        let c = cands(&[3f32.ln(), 1f32.ln()]);
        assert!((c[0].p - 0.75).abs() < 1e-7 && (c[1].p - 0.25).abs() < 1e-7);
    }

    #[test]
    fn top_p_keeps_the_smallest_prefix_reaching_p() {
        // .5 .25 .125 .125
        let base = cands(&[4f32.ln(), 2f32.ln(), 0.0, 0.0]);
        for (p, n) in [(0.4, 1), (0.5, 1), (0.6, 2), (0.75, 2), (0.8, 3), (0.99, 4)] {
            let mut c = base.clone();
            top_p(&mut c, p);
            assert_eq!(c.len(), n, "top_p {p}");
        }
    }

    #[test]
    fn min_p_cuts_relative_to_the_best() {
        // .5 .25 .125 .125: min_p .3 keeps p >= .15 (2 tokens), .25 keeps p >= .125 (4).
        let base = cands(&[4f32.ln(), 2f32.ln(), 0.0, 0.0]);
        let mut c = base.clone();
        min_p(&mut c, 0.3);
        assert_eq!(ids(&c), vec![0, 1]);
        let mut c = base.clone();
        min_p(&mut c, 0.25);
        assert_eq!(c.len(), 4);
        let mut c = base;
        min_p(&mut c, 1.0);
        assert_eq!(ids(&c), vec![0]);
    }

    #[test]
    fn temperature_sharpens_and_flattens() {
        // p ∝ 3:1 at T=1; T=0.5 squares the ratio (9:1), T=2 takes its root (√3:1).
        let mut c = cands(&[3f32.ln(), 0.0]);
        temperature(&mut c, 0.5);
        assert!((c[0].p - 0.9).abs() < 1e-6);
        let mut c = cands(&[3f32.ln(), 0.0]);
        temperature(&mut c, 2.0);
        let r = 3f32.sqrt();
        assert!((c[0].p - r / (r + 1.0)).abs() < 1e-6);
    }

    #[test]
    fn draw_walks_the_cumulative_distribution() {
        let c = cands(&[3f32.ln(), 1f32.ln()]);
        assert_eq!(draw(&c, 0.0), 0);
        assert_eq!(draw(&c, 0.7499), 0);
        assert_eq!(draw(&c, 0.7501), 1);
        assert_eq!(draw(&c, 0.999_999_9), 1);
    }
}
