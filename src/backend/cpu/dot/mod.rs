//! The CPU fused dequant-dot kernel table, chosen once by capability.
//!
//! [`DotKernels::select`] picks a [`KernelPath`] (scalar, AVX2 or AVX-512) from the
//! detected [`CpuCaps`] — or the one the caller requests, failing with a clear error when
//! this CPU cannot run it — and fills a table of plain function pointers. Afterwards
//! [`DotKernels::dot`] is one match on the weight type plus an indirect call; the kernels
//! never allocate.
//!
//! Kernels:
//! - scalar: every type, from [`crate::quant::dot_ref`] and the reference quantizers in
//!   [`crate::quant::act`].
//! - AVX2 (+FMA, F16C): F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K,
//!   Q6_K, and the Q8_0 / Q8_1 / Q8_K activation quantizers (bit-identical to the reference).
//! - AVX-512 (with AVX512-VNNI): Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 via 256-bit `vpdpbusd`, and
//!   Q4_K, Q5_K, Q6_K two 32-quant groups per 512-bit `vpdpwssd` step (bit-identical to the
//!   AVX2 kernels); every other type (and CPUs without VNNI) uses the AVX2 kernel.
//!
//! Decode has a many-row form, [`DotKernels::dot_rows`]: a run of weight rows against one
//! activation row, bit-identical to `dot` per row. AVX-512 with VNNI has kernels for Q4_0,
//! Q4_1, Q5_0, Q5_1, Q8_0 (four rows per step sharing the activation side); elsewhere it loops
//! `dot`. Both prefetch the weights [`PREFETCH_AHEAD`] bytes on.
//!
//! Batches (prefill) have three more forms:
//! - [`DotKernels::dot_tokens`] dots one weight row with up to [`MAX_TOKENS`] token rows,
//!   decoding each weight block once per group, bit-identical per token to the path's
//!   single-token kernel. AVX2 has them for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K;
//!   AVX-512 with VNNI has its own for all of those.
//! - [`DotKernels::dot_lanes`] dots up to [`MAX_LANE_ROWS`] weight rows with [`LANE_TOKENS`]
//!   (16) tokens from a [`TokenLanes`] layout, one token per 32-bit lane: four weight quants
//!   are broadcast and `vpdpbusd`ed with the same four quants of 16 tokens, so each lane ends
//!   a block with its token's exact integer block sum and the float work is shared by 16
//!   tokens. AVX-512 with VNNI has them for Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K (2–2.4× the
//!   tiled kernels on one core); the matmul prefers them for batches of 8 tokens or more.
//!   They equal the scalar reference up to f32 rounding, not bit for bit.
//! - [`DotKernels::dot_tile`] dots one weight row with [`TILE_TOKENS`] tokens from a
//!   [`TokenTiles`] layout (quants of two blocks in one 64-byte row per token, scales widened
//!   to f32 once per batch), two blocks per 512-bit `vpdpbusd`, bit-identical to the
//!   single-token kernel. AVX-512 with VNNI has it for Q8_0 (the tied output matrix).
//!
//! Q8_0 and Q6_K keep their per-lane partial sums in prefill: with lane kernels for them as
//! well, Gemma's logits sat at 0.243–0.248 RMS from llama.cpp's (bound 0.25) against 0.238
//! without — rounding noise that flips activation-quantization roundings downstream, but it
//! eats the margin (see docs/performance.md).
//!
//! Other types and the scalar path loop the single-token kernel.

use crate::backend::cpu::caps::{CpuCaps, KernelPath};
use crate::quant::act::rows_of;
use crate::quant::{
    dot_ref, quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k, ActBufMut, ActKind, ActRow,
    Acts, BlockQ8_0, BlockQ8_1, BlockQ8_K, GgmlType,
};

mod lanes;
mod tiles;
pub use lanes::{LaneGroup, Lanes, TokenLanes, LANE_TOKENS};
pub use tiles::{TileGroup, TokenTiles, TILE_TOKENS};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod lanes512;

/// Most weight rows one [`DotKernels::dot_lanes`] call takes.
#[cfg(target_arch = "x86_64")]
pub use lanes512::MAX_LANE_ROWS;
/// Most weight rows one [`DotKernels::dot_lanes`] call takes.
#[cfg(not(target_arch = "x86_64"))]
pub const MAX_LANE_ROWS: usize = 1;

/// Why a kernel table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DotError {
    /// The requested path needs a CPU feature this machine lacks.
    #[error(
        "CPU kernel path `{path}` was requested but this CPU lacks {missing} (detected: {caps})"
    )]
    Unsupported {
        /// The path that was asked for.
        path: KernelPath,
        /// The first missing feature (as in [`CpuCaps::supports`]).
        missing: &'static str,
        /// [`CpuCaps::describe`] of this machine.
        caps: String,
    },
}

// Table entries are `unsafe fn` pointers so that `#[target_feature]` kernels can be stored
// directly (no wrapper call per row). Calling one is sound exactly when the running CPU has
// the kernel's target features, which `select` establishes before installing it.

/// Dot of a float weight row (raw little-endian bytes) with f32 activations.
type FloatDotFn = unsafe fn(&[u8], &[f32]) -> f32;
/// Dot of a quantized weight row with Q8_0 activation blocks.
type Q8_0DotFn = unsafe fn(&[u8], &[BlockQ8_0]) -> f32;
/// Dot of a quantized weight row with Q8_1 activation blocks.
type Q8_1DotFn = unsafe fn(&[u8], &[BlockQ8_1]) -> f32;
/// Dot of a quantized weight row with Q8_K activation blocks.
type Q8KDotFn = unsafe fn(&[u8], &[BlockQ8_K]) -> f32;
/// Multi-token dot: `out[t] = dot(w, token t)` where `y` holds `out.len()` (1 to
/// [`MAX_TOKENS`]) consecutive activation rows of as many blocks as `w`; bit-identical to
/// the path's single-token kernel for every token.
type Q8_0DotNFn = unsafe fn(&[u8], &[BlockQ8_0], &mut [f32]);
/// Multi-token dot with Q8_1 activations (see [`Q8_0DotNFn`]).
type Q8_1DotNFn = unsafe fn(&[u8], &[BlockQ8_1], &mut [f32]);
/// Multi-token dot with Q8_K activations (see [`Q8_0DotNFn`]).
type Q8KDotNFn = unsafe fn(&[u8], &[BlockQ8_K], &mut [f32]);

/// Tiled dot: `out[t] = dot(w, token t of the group)` for the [`TILE_TOKENS`] tokens of a
/// [`TokenTiles`] group (padding tokens give 0); bit-identical to the path's single-token
/// kernel for every real token.
type TileDotFn = unsafe fn(&[u8], TileGroup<'_>, &mut [f32; TILE_TOKENS]);

/// Lane dot: `out[r].0[t] = dot(row r of w, token t of the group)` for the `out.len()` (1 to
/// [`MAX_LANE_ROWS`]) consecutive rows in `w` and the [`LANE_TOKENS`] tokens of a
/// [`TokenLanes`] group (padding tokens give 0); equal to the scalar reference up to f32
/// rounding.
type LaneDotFn = unsafe fn(&[u8], LaneGroup<'_>, &mut [Lanes<f32>]);

/// Many-row dot: `out[r] = dot(row r of w, y)` for the `out.len()` equal rows back to back
/// in `w`; bit-identical to the path's single-row kernel for every row.
type Q8_0RowsFn = unsafe fn(&[u8], &[BlockQ8_0], &mut [f32]);
/// Many-row dot with Q8_1 activations (see [`Q8_0RowsFn`]).
type Q8_1RowsFn = unsafe fn(&[u8], &[BlockQ8_1], &mut [f32]);

/// How far ahead (bytes) the decode kernels ask for the weights they will read. The hardware
/// prefetcher stops at 4 KiB page edges; with it alone one core read Gemma's 171 MB output
/// matrix at about half its bandwidth. 8 KiB measured best of 2–16 KiB (docs/performance.md).
pub const PREFETCH_AHEAD: usize = 8192;

/// Ask for the `len` bytes from `start` to be brought into cache. `start` need not point into
/// anything: a prefetch never faults.
#[inline]
fn prefetch(start: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..len).step_by(64) {
        // SAFETY: a prefetch has no architectural effect beyond the cache and never faults;
        // the address is only computed (`wrapping_add`), never dereferenced.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                start.wrapping_add(off) as *const i8,
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len);
}

/// Most tokens one multi-token kernel call handles.
pub const MAX_TOKENS: usize = 4;

/// The CPU kernel table. Cheap to copy; build it once with [`DotKernels::select`].
#[derive(Clone, Copy, Debug)]
pub struct DotKernels {
    path: KernelPath,
    f32: FloatDotFn,
    f16: FloatDotFn,
    bf16: FloatDotFn,
    q4_0: Q8_0DotFn,
    q5_0: Q8_0DotFn,
    q8_0: Q8_0DotFn,
    q4_1: Q8_1DotFn,
    q5_1: Q8_1DotFn,
    q8_1: Q8_1DotFn,
    q2_k: Q8KDotFn,
    q3_k: Q8KDotFn,
    q4_k: Q8KDotFn,
    q5_k: Q8KDotFn,
    q6_k: Q8KDotFn,
    q8_k: Q8KDotFn,
    quant_q8_0: unsafe fn(&[f32], &mut [BlockQ8_0]),
    quant_q8_1: unsafe fn(&[f32], &mut [BlockQ8_1]),
    quant_q8_k: unsafe fn(&[f32], &mut [BlockQ8_K]),
    // Multi-token kernels; `None` means `dot_tokens` loops the single-token kernel.
    q4_0_n: Option<Q8_0DotNFn>,
    q5_0_n: Option<Q8_0DotNFn>,
    q8_0_n: Option<Q8_0DotNFn>,
    q4_1_n: Option<Q8_1DotNFn>,
    q5_1_n: Option<Q8_1DotNFn>,
    q4_k_n: Option<Q8KDotNFn>,
    q5_k_n: Option<Q8KDotNFn>,
    q6_k_n: Option<Q8KDotNFn>,
    // Many-row (decode) kernels; `None` means `dot_rows` loops the single-row kernel.
    q4_0_r: Option<Q8_0RowsFn>,
    q5_0_r: Option<Q8_0RowsFn>,
    q8_0_r: Option<Q8_0RowsFn>,
    q4_1_r: Option<Q8_1RowsFn>,
    q5_1_r: Option<Q8_1RowsFn>,
    // Tiled kernels over a `TokenTiles` layout; `None` where this path has none.
    q8_0_t: Option<TileDotFn>,
    // Lane kernels over a `TokenLanes` layout; `None` where this path has none.
    q4_0_l: Option<LaneDotFn>,
    q5_0_l: Option<LaneDotFn>,
    q4_1_l: Option<LaneDotFn>,
    q5_1_l: Option<LaneDotFn>,
    q4_k_l: Option<LaneDotFn>,
    q5_k_l: Option<LaneDotFn>,
}

impl DotKernels {
    /// The kernels for `request`, or for the best path `caps` supports when `request` is
    /// `None`. Errors when `request` names a path this CPU lacks.
    pub fn select(caps: &CpuCaps, request: Option<KernelPath>) -> Result<Self, DotError> {
        let path = match request {
            None => KernelPath::best(caps),
            Some(p) => {
                caps.supports(p).map_err(|missing| DotError::Unsupported {
                    path: p,
                    missing,
                    caps: caps.describe(),
                })?;
                p
            }
        };
        // `caps` may be hand-made: never install kernels the running CPU cannot execute.
        CpuCaps::detect()
            .supports(path)
            .map_err(|missing| DotError::Unsupported {
                path,
                missing,
                caps: CpuCaps::detect().describe(),
            })?;
        let mut k = Self::scalar();
        k.path = path;
        match path {
            KernelPath::Scalar => {}
            #[cfg(target_arch = "x86_64")]
            // SAFETY: checked above that the running CPU supports this path.
            KernelPath::Avx2 => unsafe { avx2::install(&mut k) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: checked above that the running CPU supports this path (AVX-512 F/BW/VL
            // plus the AVX2 set).
            KernelPath::Avx512 => unsafe {
                avx2::install(&mut k);
                avx512::install(&mut k);
                lanes512::install(&mut k);
            },
            #[cfg(not(target_arch = "x86_64"))]
            KernelPath::Avx2 | KernelPath::Avx512 => {
                // `caps.supports` never accepts these paths off x86_64.
                unreachable!("x86 kernel path on a non-x86 CPU")
            }
        }
        Ok(k)
    }

    /// The portable scalar reference kernels (always available).
    pub fn scalar() -> Self {
        DotKernels {
            path: KernelPath::Scalar,
            f32: dot_ref::dot_f32,
            f16: dot_ref::dot_f16,
            bf16: dot_ref::dot_bf16,
            q4_0: dot_ref::dot_q4_0,
            q5_0: dot_ref::dot_q5_0,
            q8_0: dot_ref::dot_q8_0,
            q4_1: dot_ref::dot_q4_1,
            q5_1: dot_ref::dot_q5_1,
            q8_1: dot_ref::dot_q8_1,
            q2_k: dot_ref::dot_q2_k,
            q3_k: dot_ref::dot_q3_k,
            q4_k: dot_ref::dot_q4_k,
            q5_k: dot_ref::dot_q5_k,
            q6_k: dot_ref::dot_q6_k,
            q8_k: dot_ref::dot_q8_k,
            quant_q8_0: quantize_row_q8_0,
            quant_q8_1: quantize_row_q8_1,
            quant_q8_k: quantize_row_q8_k,
            q4_0_n: None,
            q5_0_n: None,
            q8_0_n: None,
            q4_1_n: None,
            q5_1_n: None,
            q4_k_n: None,
            q5_k_n: None,
            q6_k_n: None,
            q4_0_r: None,
            q5_0_r: None,
            q8_0_r: None,
            q4_1_r: None,
            q5_1_r: None,
            q8_0_t: None,
            q4_0_l: None,
            q5_0_l: None,
            q4_1_l: None,
            q5_1_l: None,
            q4_k_l: None,
            q5_k_l: None,
        }
    }

    /// The path this table was built for.
    pub fn path(&self) -> KernelPath {
        self.path
    }

    /// Fused dequant-dot of one weight row (ty, raw bytes from the mmap, n weights) with one activation row.
    ///
    /// Panics when `w_row` is not `ty.row_bytes(n)` bytes, when `a` is not `n` values long, or
    /// when `a` is not in `ty.act_kind()` format (all programming errors: shapes are validated
    /// when a model is loaded).
    #[inline]
    pub fn dot(&self, ty: GgmlType, w_row: &[u8], a: ActRow<'_>, n: usize) -> f32 {
        // Only `a.len()` is checked here (no division on the hot path): every kernel checks
        // that `w_row` holds exactly as many blocks as `a`, which with `a.len() == n` and a
        // matching activation kind means `w_row.len() == ty.row_bytes(n)`.
        if a.len() != n {
            bad_shape(ty, w_row.len(), a, n);
        }
        // SAFETY: each table entry is a safe function or a `#[target_feature]` kernel that
        // `select` installed only after run-time detection showed this CPU has its features.
        unsafe {
            match (ty, a) {
                (GgmlType::F32, ActRow::F32(x)) => (self.f32)(w_row, x),
                (GgmlType::F16, ActRow::F32(x)) => (self.f16)(w_row, x),
                (GgmlType::BF16, ActRow::F32(x)) => (self.bf16)(w_row, x),
                (GgmlType::Q4_0, ActRow::Q8_0(y)) => (self.q4_0)(w_row, y),
                (GgmlType::Q5_0, ActRow::Q8_0(y)) => (self.q5_0)(w_row, y),
                (GgmlType::Q8_0, ActRow::Q8_0(y)) => (self.q8_0)(w_row, y),
                (GgmlType::Q4_1, ActRow::Q8_1(y)) => (self.q4_1)(w_row, y),
                (GgmlType::Q5_1, ActRow::Q8_1(y)) => (self.q5_1)(w_row, y),
                (GgmlType::Q8_1, ActRow::Q8_1(y)) => (self.q8_1)(w_row, y),
                (GgmlType::Q2_K, ActRow::Q8_K(y)) => (self.q2_k)(w_row, y),
                (GgmlType::Q3_K, ActRow::Q8_K(y)) => (self.q3_k)(w_row, y),
                (GgmlType::Q4_K, ActRow::Q8_K(y)) => (self.q4_k)(w_row, y),
                (GgmlType::Q5_K, ActRow::Q8_K(y)) => (self.q5_k)(w_row, y),
                (GgmlType::Q6_K, ActRow::Q8_K(y)) => (self.q6_k)(w_row, y),
                (GgmlType::Q8_K, ActRow::Q8_K(y)) => (self.q8_k)(w_row, y),
                (ty, a) => wrong_kind(ty, a),
            }
        }
    }

    /// `out[r] = dot(ty, row r of w_rows, a, n)` for the `out.len()` rows of `ty.row_bytes(n)`
    /// bytes back to back in `w_rows`, bit-identical to [`DotKernels::dot`] on the same path.
    /// Where this path has a many-row kernel for `ty`, rows go through it a few at a time,
    /// sharing the activation side of each block and one call; otherwise this loops `dot`.
    /// Either way the weights [`PREFETCH_AHEAD`] bytes on are requested as rows are read (a
    /// decode matvec streams its matrix once; this is what keeps it near read bandwidth).
    ///
    /// Panics like `dot`, and when `w_rows` is not `out.len()` equal rows.
    pub fn dot_rows(&self, ty: GgmlType, w_rows: &[u8], a: ActRow<'_>, n: usize, out: &mut [f32]) {
        if out.is_empty() {
            return;
        }
        if a.len() != n {
            bad_shape(ty, w_rows.len() / out.len(), a, n);
        }
        let rows_q8_0 = match ty {
            GgmlType::Q4_0 => self.q4_0_r,
            GgmlType::Q5_0 => self.q5_0_r,
            GgmlType::Q8_0 => self.q8_0_r,
            _ => None,
        };
        let rows_q8_1 = match ty {
            GgmlType::Q4_1 => self.q4_1_r,
            GgmlType::Q5_1 => self.q5_1_r,
            _ => None,
        };
        // SAFETY: as in `dot`, every installed kernel's target features are present; the
        // many-row kernels check that `w_rows` is `out.len()` rows of as many blocks as `a`.
        unsafe {
            match (a, rows_q8_0, rows_q8_1) {
                (ActRow::Q8_0(y), Some(f), _) => return f(w_rows, y, out),
                (ActRow::Q8_1(y), _, Some(f)) => return f(w_rows, y, out),
                _ => {}
            }
        }
        assert!(
            w_rows.len().is_multiple_of(out.len()),
            "dot_rows({ty}): {} bytes for {} rows",
            w_rows.len(),
            out.len()
        );
        let row_bytes = w_rows.len() / out.len();
        for (o, row) in out.iter_mut().zip(w_rows.chunks_exact(row_bytes)) {
            prefetch(row.as_ptr().wrapping_add(PREFETCH_AHEAD), row_bytes);
            *o = self.dot(ty, row, a, n);
        }
    }

    /// `out[i] = dot(ty, w_row, acts.row(t0 + i), acts.n())` for every `i < out.len()`,
    /// bit-identical to [`DotKernels::dot`] on the same path. Where this path has a
    /// multi-token kernel for `ty`, each weight block is decoded once per group of up to
    /// [`MAX_TOKENS`] tokens; otherwise this loops the single-token kernel.
    ///
    /// Panics like `dot`, and when `t0 + out.len()` exceeds `acts.rows()`.
    pub fn dot_tokens(&self, ty: GgmlType, w_row: &[u8], acts: &Acts, t0: usize, out: &mut [f32]) {
        let n = acts.n();
        for (g, chunk) in out.chunks_mut(MAX_TOKENS).enumerate() {
            let t = t0 + g * MAX_TOKENS;
            let a = acts.rows_span(t, chunk.len());
            // SAFETY: as in `dot`, every installed kernel's target features are present; the
            // multi-token kernels check that `a` holds `chunk.len()` rows of `w_row`'s blocks.
            unsafe {
                match (
                    a,
                    self.multi_q8_0(ty),
                    self.multi_q8_1(ty),
                    self.multi_q8_k(ty),
                ) {
                    (ActRow::Q8_0(y), Some(f), _, _) => f(w_row, y, chunk),
                    (ActRow::Q8_1(y), _, Some(f), _) => f(w_row, y, chunk),
                    (ActRow::Q8_K(y), _, _, Some(f)) => f(w_row, y, chunk),
                    _ => {
                        for (i, o) in chunk.iter_mut().enumerate() {
                            *o = self.dot(ty, w_row, acts.row(t + i), n);
                        }
                    }
                }
            }
        }
    }

    /// The tiled kernel for `ty` on this path, if it has one.
    fn tile_kernel(&self, ty: GgmlType) -> Option<TileDotFn> {
        match ty {
            GgmlType::Q8_0 => self.q8_0_t,
            _ => None,
        }
    }

    /// Whether [`DotKernels::dot_tile`] runs for `ty` on this path.
    pub fn has_tiles(&self, ty: GgmlType) -> bool {
        self.tile_kernel(ty).is_some()
    }

    /// `out[t] = dot(ty, w_row, token g * TILE_TOKENS + t)` for the tokens of group `g` of
    /// `tiles` (0 for padding tokens past the batch), bit-identical to [`DotKernels::dot`] on
    /// the same path. Returns false, leaving `out` alone, when this path has no tiled kernel
    /// for `ty` ([`DotKernels::has_tiles`]).
    ///
    /// Panics when `tiles` does not hold `ty.act_kind()` rows of `w_row`'s length, or has no
    /// group `g`.
    pub fn dot_tile(
        &self,
        ty: GgmlType,
        w_row: &[u8],
        tiles: &TokenTiles,
        g: usize,
        out: &mut [f32; TILE_TOKENS],
    ) -> bool {
        let Some(f) = self.tile_kernel(ty) else {
            return false;
        };
        let group = tiles.group(ty.act_kind(), tiles.blocks(), g);
        // SAFETY: as in `dot`, every installed kernel's target features are present; the
        // kernel checks that `w_row` has as many blocks as the group's tokens.
        unsafe { f(w_row, group, out) };
        true
    }

    /// The lane kernel for `ty` on this path, if it has one.
    fn lane_kernel(&self, ty: GgmlType) -> Option<LaneDotFn> {
        match ty {
            GgmlType::Q4_0 => self.q4_0_l,
            GgmlType::Q5_0 => self.q5_0_l,
            GgmlType::Q4_1 => self.q4_1_l,
            GgmlType::Q5_1 => self.q5_1_l,
            GgmlType::Q4_K => self.q4_k_l,
            GgmlType::Q5_K => self.q5_k_l,
            _ => None,
        }
    }

    /// Whether [`DotKernels::dot_lanes`] runs for `ty` on this path.
    pub fn has_lanes(&self, ty: GgmlType) -> bool {
        self.lane_kernel(ty).is_some()
    }

    /// `out[r].0[t] = dot(ty, row r of w_rows, token g * LANE_TOKENS + t)` for the
    /// `out.len()` (1 to [`MAX_LANE_ROWS`]) consecutive weight rows in `w_rows` and the tokens
    /// of group `g` of `lanes` (0 for padding tokens past the batch); equal to
    /// [`DotKernels::dot`] up to f32 rounding (the block sums are exact integers here). Returns
    /// false, leaving `out` alone, when this path has no lane kernel for `ty`
    /// ([`DotKernels::has_lanes`]).
    ///
    /// Panics when `out` is empty or longer than [`MAX_LANE_ROWS`], when `w_rows` is not
    /// `out.len()` rows, or when `lanes` does not hold `ty.act_kind()` rows of the rows'
    /// length or has no group `g`.
    pub fn dot_lanes(
        &self,
        ty: GgmlType,
        w_rows: &[u8],
        lanes: &TokenLanes,
        g: usize,
        out: &mut [Lanes<f32>],
    ) -> bool {
        let Some(f) = self.lane_kernel(ty) else {
            return false;
        };
        assert!(
            (1..=MAX_LANE_ROWS).contains(&out.len()) && w_rows.len().is_multiple_of(out.len()),
            "dot_lanes({ty}): {} bytes for {} rows",
            w_rows.len(),
            out.len()
        );
        let group = lanes.group(ty.act_kind(), lanes.blocks(), g);
        // SAFETY: as in `dot`, every installed kernel's target features are present; the
        // kernel checks that each row has as many blocks as the group's tokens.
        unsafe { f(w_rows, group, out) };
        true
    }

    #[inline]
    fn multi_q8_0(&self, ty: GgmlType) -> Option<Q8_0DotNFn> {
        match ty {
            GgmlType::Q4_0 => self.q4_0_n,
            GgmlType::Q5_0 => self.q5_0_n,
            GgmlType::Q8_0 => self.q8_0_n,
            _ => None,
        }
    }

    #[inline]
    fn multi_q8_1(&self, ty: GgmlType) -> Option<Q8_1DotNFn> {
        match ty {
            GgmlType::Q4_1 => self.q4_1_n,
            GgmlType::Q5_1 => self.q5_1_n,
            _ => None,
        }
    }

    #[inline]
    fn multi_q8_k(&self, ty: GgmlType) -> Option<Q8KDotNFn> {
        match ty {
            GgmlType::Q4_K => self.q4_k_n,
            GgmlType::Q5_K => self.q5_k_n,
            GgmlType::Q6_K => self.q6_k_n,
            _ => None,
        }
    }

    /// `out[r] = dot(row r of w, a)` for `out.len()` consecutive rows of `n` weights in `w`.
    pub fn matvec(&self, ty: GgmlType, w: &[u8], n: usize, a: ActRow<'_>, out: &mut [f32]) {
        let rb = ty
            .row_bytes(n)
            .unwrap_or_else(|| panic!("matvec({ty}): {n} is not a whole number of blocks"));
        assert_eq!(
            Some(w.len()),
            rb.checked_mul(out.len()),
            "matvec({ty}): weight bytes do not match {} rows of {n}",
            out.len()
        );
        if rb == 0 {
            out.fill(0.0);
            return;
        }
        for (o, row) in out.iter_mut().zip(w.chunks_exact(rb)) {
            *o = self.dot(ty, row, a, n);
        }
    }

    /// Quantize activations (`x` holds `x.len() / n` rows of `n`) into `kind`, reusing `out`'s
    /// allocation. Bit-identical to [`Acts::quantize`] on every path.
    pub fn quantize(&self, kind: ActKind, x: &[f32], n: usize, out: &mut Acts) {
        let rows = rows_of(x.len(), n);
        // SAFETY: as in `dot`, every installed quantizer's target features are present.
        unsafe {
            match out.reset(kind, rows, n) {
                ActBufMut::F32(buf) => buf.copy_from_slice(x),
                ActBufMut::Q8_0(buf) => (self.quant_q8_0)(x, buf),
                ActBufMut::Q8_1(buf) => (self.quant_q8_1)(x, buf),
                ActBufMut::Q8_K(buf) => (self.quant_q8_k)(x, buf),
            }
        }
    }
}

#[cold]
#[inline(never)]
fn bad_shape(ty: GgmlType, w_bytes: usize, a: ActRow<'_>, n: usize) -> ! {
    panic!(
        "dot({ty}): {n} weights need {:?} bytes and {n} activations; got {w_bytes} bytes and {} {} activations",
        ty.row_bytes(n),
        a.len(),
        a.kind()
    )
}

#[cold]
#[inline(never)]
fn wrong_kind(ty: GgmlType, a: ActRow<'_>) -> ! {
    panic!(
        "dot({ty}): activations must be {}, got {}",
        ty.act_kind(),
        a.kind()
    )
}
