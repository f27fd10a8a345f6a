//! A prefill batch's Q8_0 / Q8_1 / Q8_K activations transposed so that each SIMD lane is one
//! token, for the "tokens in lanes" prefill kernels.
//!
//! A weight row is dotted with [`LANE_TOKENS`] (16) tokens at once: the kernel broadcasts four
//! weight quants to every lane and `vpdpbusd`s them with the same four quants of 16 tokens, so
//! after a block's quads each 32-bit lane holds that token's exact integer block sum. The
//! float work (convert, scale, accumulate) then happens once per block for 16 tokens instead
//! of once per lane-partial per token, and the integer sums are exact, as in llama.cpp's own
//! reference dot products.
//!
//! [`TokenLanes::fill`] builds the layout once per matmul: per group of 16 tokens and per
//! block, the block's quads (`[quad][token]`, 64 bytes per quad), the scales widened to f32
//! (`[token]`), and the integer sums the weight offsets need (Q8_0: the block sum; Q8_K: the
//! sixteen 16-value sums); Q8_1 keeps its `s` (as f32) for the weight minimum.

use crate::quant::{ActKind, ActRow, Acts};

/// Tokens one lane kernel call computes (one per 32-bit lane of a 512-bit vector).
pub const LANE_TOKENS: usize = 16;

/// One value per token of a group, aligned so a 512-bit load never splits a cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Lanes<T: Copy>(pub [T; LANE_TOKENS]);

/// See the module documentation. Build with [`TokenLanes::fill`]; reuse to keep the
/// allocations.
#[derive(Debug, Default)]
pub struct TokenLanes {
    kind: Option<ActKind>,
    tokens: usize,
    /// Blocks (32 values, or 256 for Q8_K) per token.
    nb: usize,
    /// `[group][block][quad]`: four consecutive quants of each token as one little-endian i32.
    quads: Vec<Lanes<i32>>,
    /// `[group][block]`: block scales.
    d: Vec<Lanes<f32>>,
    /// Q8_0: `[group][block]` sums of the block's quants. Q8_K: `[group][block][16]` sums of
    /// each 16 quants. Empty for Q8_1.
    sums: Vec<Lanes<i32>>,
    /// Q8_1: `[group][block]` the blocks' `s` (scale × sum of quants). Empty otherwise.
    s: Vec<Lanes<f32>>,
}

/// One group's view, handed to a lane kernel (the fields as in [`TokenLanes`], one group).
#[derive(Clone, Copy, Debug)]
pub struct LaneGroup<'a> {
    /// `[block][quad]`.
    pub quads: &'a [Lanes<i32>],
    /// `[block]`.
    pub d: &'a [Lanes<f32>],
    /// Q8_0: `[block]`; Q8_K: `[block][16]`; empty for Q8_1.
    pub sums: &'a [Lanes<i32>],
    /// Q8_1: `[block]`; empty otherwise.
    pub s: &'a [Lanes<f32>],
}

/// Sums per block kept in [`TokenLanes::sums`] for `kind`.
fn sums_per_block(kind: ActKind) -> usize {
    match kind {
        ActKind::Q8_0 => 1,
        ActKind::Q8_K => 16,
        _ => 0,
    }
}

impl TokenLanes {
    /// An empty layout; allocates nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Transpose `acts` (Q8_0, Q8_1 or Q8_K rows). Returns false, leaving `self` empty, for
    /// f32 activations. Tokens past `acts.rows()` in the last group are zero.
    pub fn fill(&mut self, acts: &Acts) -> bool {
        let kind = acts.kind();
        self.kind = None;
        self.tokens = 0;
        if !matches!(kind, ActKind::Q8_0 | ActKind::Q8_1 | ActKind::Q8_K) {
            return false;
        }
        let block = kind.block_len();
        let (nb, qpb, spb) = (acts.n() / block, block / 4, sums_per_block(kind));
        let groups = acts.rows().div_ceil(LANE_TOKENS);
        // Zeroing everything keeps the padding tokens of the last group defined (and zero).
        reset(&mut self.quads, groups * nb * qpb);
        reset(&mut self.d, groups * nb);
        reset(&mut self.sums, groups * nb * spb);
        reset(
            &mut self.s,
            if kind == ActKind::Q8_1 {
                groups * nb
            } else {
                0
            },
        );
        for t in 0..acts.rows() {
            let (g, l) = (t / LANE_TOKENS, t % LANE_TOKENS);
            let quads = &mut self.quads[g * nb * qpb..(g + 1) * nb * qpb];
            let mut put_quads = |b: usize, qs: &[i8]| {
                for (q, c) in qs.chunks_exact(4).enumerate() {
                    quads[b * qpb + q].0[l] =
                        i32::from_le_bytes([c[0], c[1], c[2], c[3]].map(|v| v as u8));
                }
            };
            match acts.row(t) {
                ActRow::Q8_0(blocks) => {
                    for (b, blk) in blocks.iter().enumerate() {
                        put_quads(b, &blk.qs);
                        self.d[g * nb + b].0[l] = blk.d.to_f32();
                        self.sums[g * nb + b].0[l] = blk.qs.iter().map(|&v| v as i32).sum();
                    }
                }
                ActRow::Q8_1(blocks) => {
                    for (b, blk) in blocks.iter().enumerate() {
                        put_quads(b, &blk.qs);
                        self.d[g * nb + b].0[l] = blk.d.to_f32();
                        self.s[g * nb + b].0[l] = blk.s.to_f32();
                    }
                }
                ActRow::Q8_K(blocks) => {
                    for (b, blk) in blocks.iter().enumerate() {
                        put_quads(b, &blk.qs);
                        self.d[g * nb + b].0[l] = blk.d;
                        for (j, &bs) in blk.bsums.iter().enumerate() {
                            self.sums[(g * nb + b) * spb + j].0[l] = bs as i32;
                        }
                    }
                }
                ActRow::F32(_) => unreachable!("kind checked above"),
            }
        }
        self.kind = Some(kind);
        self.tokens = acts.rows();
        self.nb = nb;
        true
    }

    /// The activation format filled in, if any.
    pub fn kind(&self) -> Option<ActKind> {
        self.kind
    }

    /// Real (unpadded) tokens.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Groups of [`LANE_TOKENS`] tokens (the last one possibly partial).
    pub fn groups(&self) -> usize {
        self.tokens.div_ceil(LANE_TOKENS)
    }

    /// Blocks per token.
    pub fn blocks(&self) -> usize {
        self.nb
    }

    /// Group `g` in format `kind` with `nb` blocks per token. Panics when the layout holds
    /// another format or block count, or has no group `g` (programming errors: the matmul
    /// fills the layout from the activations of the same weight).
    pub fn group(&self, kind: ActKind, nb: usize, g: usize) -> LaneGroup<'_> {
        assert!(
            self.kind == Some(kind) && self.nb == nb && g < self.groups(),
            "lane dot: activations are {:?} × {} blocks with {} groups; wanted {kind} × {nb}, group {g}",
            self.kind,
            self.nb,
            self.groups()
        );
        let (qpb, spb) = (kind.block_len() / 4, sums_per_block(kind));
        let per_group = |v: usize| g * nb * v..(g + 1) * nb * v;
        LaneGroup {
            quads: &self.quads[per_group(qpb)],
            d: &self.d[per_group(1)],
            sums: &self.sums[per_group(spb)],
            s: if self.s.is_empty() {
                &self.s[..]
            } else {
                &self.s[per_group(1)]
            },
        }
    }
}

/// `v` as `len` zeros, keeping its allocation.
fn reset<T: Copy + Default>(v: &mut Vec<Lanes<T>>, len: usize) {
    v.clear();
    v.resize(len, Lanes::default());
}
