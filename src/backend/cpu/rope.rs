//! Rotary position embedding, in place, for both pairings ggml uses. The frequency table (with
//! any RoPE scaling) comes from [`RopeParams::table`]; cos and sin are scaled by its attention
//! factor, as transformers does for YaRN and longrope.

use crate::model::arch::RopeLayout;
use crate::model::config::RopeParams;

/// Rotate `n_tok` rows of `n_heads * head_dim` values; row `t` is at position `pos0 + t`.
pub fn rope(
    x: &mut [f32],
    n_tok: usize,
    n_heads: usize,
    head_dim: usize,
    pos0: usize,
    layout: RopeLayout,
    p: &RopeParams,
) {
    let half = p.n_rot / 2;
    // Angles in f64 once per row, applied to every head.
    let (inv_freq, attn_factor) = p.table(pos0 + n_tok);
    let mut cs = vec![(0f32, 0f32); half];
    for t in 0..n_tok {
        let pos = (pos0 + t) as f64;
        for (c, f) in cs.iter_mut().zip(&inv_freq) {
            let th = pos * f;
            *c = (
                (th.cos() * attn_factor) as f32,
                (th.sin() * attn_factor) as f32,
            );
        }
        let row = &mut x[t * n_heads * head_dim..(t + 1) * n_heads * head_dim];
        for h in row.chunks_mut(head_dim) {
            for (i, &(c, s)) in cs.iter().enumerate() {
                let (a, b) = match layout {
                    RopeLayout::Adjacent => (2 * i, 2 * i + 1),
                    RopeLayout::Halves => (i, i + half),
                };
                let (x0, x1) = (h[a], h[b]);
                h[a] = x0 * c - x1 * s;
                h[b] = x0 * s + x1 * c;
            }
        }
    }
}
