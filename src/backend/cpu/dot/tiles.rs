//! A prefill batch's Q8_0 activations rearranged for the tiled (weight row × [`TILE_TOKENS`]
//! tokens) kernel. (The other 32-value types use the lane kernels of `lanes.rs`; Q8_0 keeps
//! this bit-identical form, see the module documentation of `dot`.)
//!
//! The block formats interleave an f16 scale with every 32 quants, so a kernel that walks
//! eight tokens at once would convert the same activation scales again for every weight row
//! and could not load two blocks' quants with one 64-byte load. [`TokenTiles::fill`] does that
//! work once per matmul: per group of eight tokens, each pair of blocks' quants is one
//! contiguous 64-byte row per token, and the scales are widened to f32
//! and stored block-major, eight tokens side by side, so one load gives a block's scale for the
//! whole group. The values are exactly those of the blocks (f16 → f32 is exact), so tiled
//! kernels can be bit-identical to the single-token ones.

use crate::quant::{ActKind, ActRow, Acts};

/// Tokens one tiled kernel call computes.
pub const TILE_TOKENS: usize = 8;

/// Quants of two consecutive 32-value blocks of one token.
pub type QuantPair = [i8; 64];

/// See the module documentation. Build with [`TokenTiles::fill`]; reuse to keep the allocation.
#[derive(Debug, Default)]
pub struct TokenTiles {
    kind: Option<ActKind>,
    tokens: usize,
    /// 32-value blocks per token.
    nb: usize,
    /// Block pairs per token (`nb` rounded up to even, halved); an odd last block is paired
    /// with zeros.
    np: usize,
    /// `[group][pair][token of group]`.
    qs: Vec<QuantPair>,
    /// `[group][block (np * 2 of them)][token of group]`: block scales.
    d: Vec<[f32; TILE_TOKENS]>,
}

/// One group's view, handed to a tiled kernel.
#[derive(Clone, Copy, Debug)]
pub struct TileGroup<'a> {
    /// `[pair][token]`.
    pub qs: &'a [[QuantPair; TILE_TOKENS]],
    /// `[block][token]`, `2 * qs.len()` blocks.
    pub d: &'a [[f32; TILE_TOKENS]],
}

impl TokenTiles {
    /// An empty layout; allocates nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rearrange `acts` (Q8_0 rows). Returns false, leaving `self` empty, for any other
    /// activation format. Tokens past `acts.rows()` in the last group are zero.
    pub fn fill(&mut self, acts: &Acts) -> bool {
        let kind = acts.kind();
        self.kind = None;
        self.tokens = 0;
        if kind != ActKind::Q8_0 {
            return false;
        }
        let nb = acts.n() / kind.block_len();
        let np = nb.div_ceil(2);
        let groups = acts.rows().div_ceil(TILE_TOKENS);
        // Zeroing everything keeps padding tokens and an odd block's empty partner defined.
        self.qs.clear();
        self.qs.resize(groups * np * TILE_TOKENS, [0; 64]);
        self.d.clear();
        self.d.resize(groups * np * 2, [0.0; TILE_TOKENS]);
        for t in 0..acts.rows() {
            let (g, tt) = (t / TILE_TOKENS, t % TILE_TOKENS);
            let mut put = |b: usize, qs: &[i8; 32]| {
                let pair = &mut self.qs[(g * np + b / 2) * TILE_TOKENS + tt];
                pair[(b % 2) * 32..][..32].copy_from_slice(qs);
            };
            match acts.row(t) {
                ActRow::Q8_0(blocks) => {
                    for (b, blk) in blocks.iter().enumerate() {
                        put(b, &blk.qs);
                        self.d[g * np * 2 + b][tt] = blk.d.to_f32();
                    }
                }
                ActRow::F32(_) | ActRow::Q8_1(_) | ActRow::Q8_K(_) => {
                    unreachable!("kind checked above")
                }
            }
        }
        self.kind = Some(kind);
        self.tokens = acts.rows();
        self.nb = nb;
        self.np = np;
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

    /// Groups of [`TILE_TOKENS`] tokens (the last one possibly partial).
    pub fn groups(&self) -> usize {
        self.tokens.div_ceil(TILE_TOKENS)
    }

    /// 32-value blocks per token.
    pub fn blocks(&self) -> usize {
        self.nb
    }

    /// Group `g` in format `kind` with `nb` blocks per token. Panics when the layout holds
    /// another format or block count, or has no group `g` (programming errors: the matmul
    /// fills the layout from the activations of the same weight).
    pub fn group(&self, kind: ActKind, nb: usize, g: usize) -> TileGroup<'_> {
        assert!(
            self.kind == Some(kind) && self.nb == nb && g < self.groups(),
            "tiled dot: activations are {:?} × {} blocks with {} groups; wanted {kind} × {nb}, group {g}",
            self.kind,
            self.nb,
            self.groups()
        );
        let np = self.np;
        let qs = &self.qs[g * np * TILE_TOKENS..(g + 1) * np * TILE_TOKENS];
        let d = &self.d[g * np * 2..(g + 1) * np * 2];
        TileGroup {
            qs: pairs_of_group(qs),
            d,
        }
    }
}

/// `[QuantPair]` of whole groups as `[[QuantPair; TILE_TOKENS]]`.
fn pairs_of_group(qs: &[QuantPair]) -> &[[QuantPair; TILE_TOKENS]] {
    let (chunks, rest) = qs.as_chunks::<TILE_TOKENS>();
    debug_assert!(rest.is_empty());
    chunks
}
