//! AVX-512 kernels. Types without one here keep their AVX2 kernel.
//!
//! These are the 32-wide quant dots rewritten around AVX-512 VNNI's `vpdpbusd` (256-bit
//! form, AVX512-VL), which replaces the `maddubs` + `madd` pair, unrolled two blocks per
//! iteration, and kept off the shuffle port (scales converted by memory-operand `vcvtph2ps`,
//! nibbles split by a broadcast load and a variable shift, 5th bits applied through mask
//! registers), which bounded them. Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 also come as many-row kernels
//! (four rows share each activation block's loads; the single-row dot is their one-row case,
//! so the two agree bit for bit) that prefetch the weights ahead as they stream. They are
//! installed only when the CPU also has AVX512-VNNI.
//!
//! Safety model as in `avx2.rs`: safe `#[target_feature]` functions, handed out only by
//! [`install`] (an `unsafe fn`), which checks AVX512-VNNI itself.

use std::arch::x86_64::*;

use super::avx2::{
    f16x2, hsum_ps, hsum_ps128, k4_min_term, k4_nibbles, load32i, load_bsums, multi_entry,
    nibbles32, q4_0_quants, q5_k_group, q6_k_quants, q8_0_pair_loop_n, sub, token_rows,
};
use super::lanes512::rows_of;
use super::tiles::{QuantPair, TileGroup, TILE_TOKENS};
use super::{DotKernels, PREFETCH_AHEAD};
use crate::quant::blocks::*;

/// Install the AVX-512 kernels into `k` (after the AVX2 ones).
///
/// # Safety
/// The running CPU must support AVX-512 F, BW and VL as well as AVX2, FMA and F16C.
pub(super) unsafe fn install(k: &mut DotKernels) {
    if std::arch::is_x86_feature_detected!("avx512vnni") {
        k.q4_0 = q4_0_impl;
        k.q4_1 = q4_1_impl;
        k.q5_0 = q5_0_impl;
        k.q5_1 = q5_1_impl;
        k.q8_0 = q8_0_impl;
        k.q4_0_r = Some(q4_0_rows);
        k.q5_0_r = Some(q5_0_rows);
        k.q8_0_r = Some(q8_0_rows);
        k.q4_1_r = Some(q4_1_rows);
        k.q5_1_r = Some(q5_1_rows);
        k.q4_0_n = Some(q4_0_multi);
        k.q4_1_n = Some(q4_1_multi);
        k.q5_0_n = Some(q5_0_multi);
        k.q5_1_n = Some(q5_1_multi);
        k.q8_0_n = Some(q8_0_multi);
        k.q8_0_t = Some(q8_0_tile);
        k.q4_k = q4_k_impl;
        k.q5_k = q5_k_impl;
        k.q6_k = q6_k_impl;
        k.q4_k_n = Some(q4_k_multi);
        k.q5_k_n = Some(q5_k_multi);
        k.q6_k_n = Some(q6_k_multi);
    }
}

/// 64 bytes (two 32-quant groups of a Q8_K block) as one vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn load64i(b: &[i8; 64]) -> __m512i {
    // SAFETY: `b` is 64 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(b.as_ptr() as *const _) }
}

/// Sum of products of unsigned bytes `u` with signed bytes `s`, per 4 adjacent bytes, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn dot_u8i8(u: __m256i, s: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s))
}

/// Sum of products of signed bytes `x` and `y`, per 4 adjacent bytes, as f32 (`y` must avoid
/// -128), with `ax = |x|` (`_mm256_sign_epi8(x, x)`) computed by the caller, so a multi-token
/// kernel takes it once per weight block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn dot_i8i8_abs(ax: __m256i, x: __m256i, y: __m256i) -> __m256 {
    dot_u8i8(ax, _mm256_sign_epi8(y, x))
}

/// The first four f16 fields of a block (its scales, then whatever follows) as f32, by one
/// memory-operand `vcvtph2ps`; the register form, or assembling scales from several blocks,
/// costs shuffle-port instructions, which bound the decode loops. Only the lanes the caller
/// knows to hold scales mean anything (products of f16 values never reach f32 subnormals, so
/// the others cost nothing either).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn head_f32x4<T>(block: &T) -> __m128 {
    const { assert!(std::mem::size_of::<T>() >= 8) };
    let out: __m128;
    // SAFETY: `block` is at least 8 readable bytes (checked at compile time above), which is
    // what the instruction reads, at any alignment; this function's target features include
    // F16C. Written as assembly because LLVM otherwise merges the load with other loads of
    // the block into a general register and converts from there (two shuffle-port uops).
    unsafe {
        std::arch::asm!(
            "vcvtph2ps {out}, qword ptr [{p}]",
            p = in(reg) block as *const T,
            out = lateout(xmm_reg) out,
            options(pure, readonly, nostack, preserves_flags),
        )
    };
    out
}

/// [`q5_0_quants`](super::avx2::q5_0_quants) with the 5th bits loaded straight into an AVX-512
/// mask register and applied by one masked operation, instead of being spread to bytes by
/// shuffles: q - 16 where the bit is clear, the nibble itself where it is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn q5_0_quants_masked(b: &WBlockQ5_0) -> __m256i {
    // nibble - 16 is nibble | 0xF0; adding 16 back where the bit is set gives the nibble.
    let low = _mm256_or_si256(nibbles32(&b.qs), _mm256_set1_epi8(0xF0u8 as i8));
    let set: __mmask32 = u32::from_le_bytes(b.qh);
    _mm256_mask_add_epi8(low, set, low, _mm256_set1_epi8(16))
}

/// The 32 five-bit quants (0..=31) of a Q5_0 / Q5_1 block: the nibble, plus 16 where the 5th
/// bit is set (the bits loaded straight into a mask register, as in [`q5_0_quants_masked`]).
/// This is Q5_1's quant, and Q5_0's offset by 16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn nibbles_bit5(qs: &[u8; 16], qh: [u8; 4]) -> __m256i {
    let nib = nibbles32(qs);
    let set: __mmask32 = u32::from_le_bytes(qh);
    _mm256_mask_add_epi8(nib, set, nib, _mm256_set1_epi8(16))
}

/// Ask for the bytes [`PREFETCH_AHEAD`] past `block` to be brought into cache. Called once
/// per block pair and row: spread through the loop this way, the requests keep pace with the
/// loads instead of queueing up in bursts.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn prefetch_ahead<T>(block: &T) {
    let at = (block as *const T as *const i8).wrapping_add(PREFETCH_AHEAD);
    // A prefetch never faults, even past the end of the weights.
    _mm_prefetch::<_MM_HINT_T0>(at);
}

/// The shared loop of the Q8_0-activation dots, over `R` weight rows at once (`xs`, each as
/// many blocks as `y`): `qu(block)` gives the 32 weight quants of a block offset into unsigned
/// bytes, `q + off`; row `r`'s result is the sum over blocks of dx * dy * (q . qy). Each row
/// runs its own accumulators through the same operations in the same order whatever `R` is,
/// so a row's result does not depend on how many rows shared the call; the activation side
/// (scale conversion, quant loads, the offset's share) is done once per block for all of them.
///
/// The offset is taken back exactly: each block's `vpdpbusd` starts from `-off * Σ qy` (per
/// 32-bit lane, one `vpdpbusd` of the activations shared by the rows), so every lane ends
/// with the integer `Σ q * qy` over its four bytes, as the sign trick (`|q| · sign(qy, q)`)
/// of the multi-token and tiled kernels gives it; the floats that follow are the same.
macro_rules! q8_0_rows {
    ($r:expr, $xs:expr, $y:expr, $off:expr, |$b:ident| $qu:expr) => {{
        let (xs, y): ([_; $r], &[BlockQ8_0]) = ($xs, $y);
        let nb = y.len();
        for x in &xs {
            assert_eq!(x.len(), nb);
        }
        let off = _mm256_set1_epi8($off as i8);
        // -off * (sum of each lane's four activation quants).
        let neg_offset = |qy: __m256i| {
            _mm256_sub_epi32(
                _mm256_setzero_si256(),
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), off, qy),
            )
        };
        let mut acc0 = [_mm256_setzero_ps(); $r];
        let mut acc1 = [_mm256_setzero_ps(); $r];
        for i in 0..nb / 2 {
            let (yb0, yb1) = (&y[2 * i], &y[2 * i + 1]);
            let (hy0, hy1) = (head_f32x4(yb0), head_f32x4(yb1));
            let (qy0, qy1) = (load32i(&yb0.qs), load32i(&yb1.qs));
            let (n0, n1) = (neg_offset(qy0), neg_offset(qy1));
            for r in 0..$r {
                let (xb0, xb1) = (&xs[r][2 * i], &xs[r][2 * i + 1]);
                prefetch_ahead(xb0);
                // Lane 0: dx * dy.
                let s0 = _mm_mul_ps(head_f32x4(xb0), hy0);
                let s1 = _mm_mul_ps(head_f32x4(xb1), hy1);
                let q0 = {
                    let $b = xb0;
                    $qu
                };
                let q1 = {
                    let $b = xb1;
                    $qu
                };
                let p0 = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(n0, q0, qy0));
                let p1 = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(n1, q1, qy1));
                acc0[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(s0), p0, acc0[r]);
                acc1[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(s1), p1, acc1[r]);
            }
        }
        if nb % 2 == 1 {
            let yb = &y[nb - 1];
            let (hy, qy) = (head_f32x4(yb), load32i(&yb.qs));
            let n = neg_offset(qy);
            for r in 0..$r {
                let xb = &xs[r][nb - 1];
                let s = _mm_mul_ps(head_f32x4(xb), hy);
                let q = {
                    let $b = xb;
                    $qu
                };
                let p = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(n, q, qy));
                acc0[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(s), p, acc0[r]);
            }
        }
        let out: [f32; $r] = std::array::from_fn(|r| hsum_ps(_mm256_add_ps(acc0[r], acc1[r])));
        out
    }};
}

/// The shared loop of the Q8_1-activation dots over `R` weight rows, as [`q8_0_rows`]:
/// `qx(block)` gives the 32 unsigned weight quants; row `r`'s result is the sum over blocks of
/// dx * dy * (qx . qy) + mx * sy.
macro_rules! q8_1_rows {
    ($r:expr, $xs:expr, $y:expr, |$b:ident| $qx:expr) => {{
        let (xs, y): ([_; $r], &[BlockQ8_1]) = ($xs, $y);
        let nb = y.len();
        for x in &xs {
            assert_eq!(x.len(), nb);
        }
        let mut acc0 = [_mm256_setzero_ps(); $r];
        let mut acc1 = [_mm256_setzero_ps(); $r];
        let mut acc_m = [_mm_setzero_ps(); $r];
        for i in 0..nb / 2 {
            let (yb0, yb1) = (&y[2 * i], &y[2 * i + 1]);
            let (hy0, hy1) = (head_f32x4(yb0), head_f32x4(yb1));
            let (qy0, qy1) = (load32i(&yb0.qs), load32i(&yb1.qs));
            for r in 0..$r {
                let (xb0, xb1) = (&xs[r][2 * i], &xs[r][2 * i + 1]);
                prefetch_ahead(xb0);
                // [dx * dy, mx * sy, ..] of each block.
                let p_lo = _mm_mul_ps(head_f32x4(xb0), hy0);
                let p_hi = _mm_mul_ps(head_f32x4(xb1), hy1);
                acc_m[r] = _mm_add_ps(acc_m[r], _mm_add_ps(p_lo, p_hi));
                let q0 = {
                    let $b = xb0;
                    $qx
                };
                let q1 = {
                    let $b = xb1;
                    $qx
                };
                let s0 = dot_u8i8(q0, qy0);
                let s1 = dot_u8i8(q1, qy1);
                acc0[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(p_lo), s0, acc0[r]);
                acc1[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(p_hi), s1, acc1[r]);
            }
        }
        let mut tail_m = [0.0f32; $r];
        if nb % 2 == 1 {
            let yb = &y[nb - 1];
            let (hy, qy) = (head_f32x4(yb), load32i(&yb.qs));
            for r in 0..$r {
                let xb = &xs[r][nb - 1];
                let p = _mm_mul_ps(head_f32x4(xb), hy);
                tail_m[r] += _mm_cvtss_f32(_mm_movehdup_ps(p));
                let q = {
                    let $b = xb;
                    $qx
                };
                acc0[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(p), dot_u8i8(q, qy), acc0[r]);
            }
        }
        let out: [f32; $r] = std::array::from_fn(|r| {
            let m = _mm_cvtss_f32(_mm_movehdup_ps(acc_m[r])) + tail_m[r];
            hsum_ps(_mm256_add_ps(acc0[r], acc1[r])) + m
        });
        out
    }};
}

/// The single-row dot `$one` and the `R`-row kernel `$rows` of a weight type over the loop
/// macro `$lp` (`q8_0_rows` or `q8_1_rows`, given the rest of the arguments); the single-row form is the `R = 1` case, so the
/// two agree bit for bit.
macro_rules! row_kernels {
    ($one:ident, $rows:ident, $lp:ident, $wt:ty, $yt:ty, $($arg:tt)*) => {
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        fn $one(w: &[u8], y: &[$yt]) -> f32 {
            let x: &[$wt] = weight_blocks(w);
            $lp!(1, [x], y, $($arg)*)[0]
        }

        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        fn $rows<const R: usize>(w: &[u8], y: &[$yt]) -> [f32; R] {
            let xs: [&[$wt]; R] = rows_of(w);
            $lp!(R, xs, y, $($arg)*)
        }
    };
}

row_kernels!(
    q4_0_impl,
    q4_0_r,
    q8_0_rows,
    WBlockQ4_0,
    BlockQ8_0,
    8u8,
    |b| nibbles32(&b.qs)
);
row_kernels!(
    q5_0_impl,
    q5_0_r,
    q8_0_rows,
    WBlockQ5_0,
    BlockQ8_0,
    16u8,
    |b| nibbles_bit5(&b.qs, b.qh)
);
row_kernels!(
    q8_0_impl,
    q8_0_r,
    q8_0_rows,
    WBlockQ8_0,
    BlockQ8_0,
    128u8,
    |b| _mm256_xor_si256(load32i(&b.qs), _mm256_set1_epi8(0x80u8 as i8))
);
row_kernels!(q4_1_impl, q4_1_r, q8_1_rows, WBlockQ4_1, BlockQ8_1, |b| {
    nibbles32(&b.qs)
});
row_kernels!(q5_1_impl, q5_1_r, q8_1_rows, WBlockQ5_1, BlockQ8_1, |b| {
    nibbles_bit5(&b.qs, b.qh)
});

/// A many-row entry point over the `R`-row kernel `$kern::<R>`: `out.len()` rows of `w`,
/// [`ROW_GROUP`] at a time.
macro_rules! rows_entry {
    ($name:ident, $kern:ident, $yt:ty) => {
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        fn $name(w: &[u8], y: &[$yt], out: &mut [f32]) {
            if out.is_empty() {
                return;
            }
            assert!(
                w.len().is_multiple_of(out.len()),
                "{} bytes of weights for {} rows",
                w.len(),
                out.len()
            );
            let row_bytes = w.len() / out.len();
            for (g, chunk) in out.chunks_mut(ROW_GROUP).enumerate() {
                let wg = &w[g * ROW_GROUP * row_bytes..][..chunk.len() * row_bytes];
                match chunk.len() {
                    4 => chunk.copy_from_slice(&$kern::<4>(wg, y)),
                    3 => chunk.copy_from_slice(&$kern::<3>(wg, y)),
                    2 => chunk.copy_from_slice(&$kern::<2>(wg, y)),
                    _ => chunk.copy_from_slice(&$kern::<1>(wg, y)),
                }
            }
        }
    };
}

/// Rows a many-row kernel computes together: their accumulators (three vectors a row) stay
/// in registers, and the activation side is shared by all of them.
const ROW_GROUP: usize = 4;

rows_entry!(q4_0_rows, q4_0_r, BlockQ8_0);
rows_entry!(q5_0_rows, q5_0_r, BlockQ8_0);
rows_entry!(q8_0_rows, q8_0_r, BlockQ8_0);
rows_entry!(q4_1_rows, q4_1_r, BlockQ8_1);
rows_entry!(q5_1_rows, q5_1_r, BlockQ8_1);

// ---------------------------------------------------------------------------
// Multi-token forms: each weight block is decoded once and dotted with N (1 to 4) token rows
// (back to back in `y`). Per token they perform exactly the operations of the single-token
// kernels above in the same order, so every result is bit-identical to them.
// ---------------------------------------------------------------------------

/// Multi-token form of [`q8_1_rows`].
macro_rules! q8_1_loop_n {
    ($n:ident, $x:expr, $y:expr, $out:expr, |$b:ident| $qx:expr) => {{
        let (x, y, out): (_, _, &mut [f32; $n]) = ($x, $y, $out);
        let nb = x.len();
        let ys: [&[BlockQ8_1]; $n] = token_rows(y, nb);
        let mut acc0 = [_mm256_setzero_ps(); $n];
        let mut acc1 = [_mm256_setzero_ps(); $n];
        let mut acc_m = [_mm_setzero_ps(); $n];
        for i in 0..nb / 2 {
            let (xb0, xb1) = (&x[2 * i], &x[2 * i + 1]);
            let q0 = {
                let $b = xb0;
                $qx
            };
            let q1 = {
                let $b = xb1;
                $qx
            };
            for t in 0..$n {
                let (yb0, yb1) = (&ys[t][2 * i], &ys[t][2 * i + 1]);
                // [dx0, mx0, dy0, sy0, dx1, mx1, dy1, sy1]
                let v = _mm256_cvtph_ps(_mm_setr_epi16(
                    u16::from_le_bytes(xb0.d) as i16,
                    u16::from_le_bytes(xb0.m) as i16,
                    yb0.d.to_bits() as i16,
                    yb0.s.to_bits() as i16,
                    u16::from_le_bytes(xb1.d) as i16,
                    u16::from_le_bytes(xb1.m) as i16,
                    yb1.d.to_bits() as i16,
                    yb1.s.to_bits() as i16,
                ));
                let lo = _mm256_castps256_ps128(v);
                let hi = _mm256_extractf128_ps::<1>(v);
                let p_lo = _mm_mul_ps(lo, _mm_movehl_ps(lo, lo));
                let p_hi = _mm_mul_ps(hi, _mm_movehl_ps(hi, hi));
                acc_m[t] = _mm_add_ps(acc_m[t], _mm_add_ps(p_lo, p_hi));
                let s0 = dot_u8i8(q0, load32i(&yb0.qs));
                let s1 = dot_u8i8(q1, load32i(&yb1.qs));
                acc0[t] = _mm256_fmadd_ps(_mm256_broadcastss_ps(p_lo), s0, acc0[t]);
                acc1[t] = _mm256_fmadd_ps(_mm256_broadcastss_ps(p_hi), s1, acc1[t]);
            }
        }
        let mut tail_m = [0.0f32; $n];
        if nb % 2 == 1 {
            let xb = &x[nb - 1];
            let q = {
                let $b = xb;
                $qx
            };
            for t in 0..$n {
                let yb = &ys[t][nb - 1];
                let (dx, dy) = f16x2(u16::from_le_bytes(xb.d), yb.d.to_bits());
                let (mx, sy) = f16x2(u16::from_le_bytes(xb.m), yb.s.to_bits());
                tail_m[t] += mx * sy;
                let s = dot_u8i8(q, load32i(&yb.qs));
                acc0[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * dy), s, acc0[t]);
            }
        }
        for t in 0..$n {
            let m = _mm_cvtss_f32(_mm_movehdup_ps(acc_m[t])) + tail_m[t];
            out[t] = hsum_ps(_mm256_add_ps(acc0[t], acc1[t])) + m;
        }
    }};
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_0_n<const N: usize>(w: &[u8], y: &[BlockQ8_0], out: &mut [f32; N]) {
    let x: &[WBlockQ4_0] = weight_blocks(w);
    q8_0_pair_loop_n!(N, dot_i8i8_abs, x, y, out, |b| q4_0_quants(b))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_0_n<const N: usize>(w: &[u8], y: &[BlockQ8_0], out: &mut [f32; N]) {
    let x: &[WBlockQ5_0] = weight_blocks(w);
    q8_0_pair_loop_n!(N, dot_i8i8_abs, x, y, out, |b| q5_0_quants_masked(b))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q8_0_n<const N: usize>(w: &[u8], y: &[BlockQ8_0], out: &mut [f32; N]) {
    let x: &[WBlockQ8_0] = weight_blocks(w);
    q8_0_pair_loop_n!(N, dot_i8i8_abs, x, y, out, |b| load32i(&b.qs))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_1_n<const N: usize>(w: &[u8], y: &[BlockQ8_1], out: &mut [f32; N]) {
    let x: &[WBlockQ4_1] = weight_blocks(w);
    q8_1_loop_n!(N, x, y, out, |b| nibbles32(&b.qs))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_1_n<const N: usize>(w: &[u8], y: &[BlockQ8_1], out: &mut [f32; N]) {
    let x: &[WBlockQ5_1] = weight_blocks(w);
    q8_1_loop_n!(N, x, y, out, |b| nibbles_bit5(&b.qs, b.qh))
}

multi_entry!(
    q4_0_multi,
    q4_0_n,
    BlockQ8_0,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
multi_entry!(
    q5_0_multi,
    q5_0_n,
    BlockQ8_0,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
multi_entry!(
    q8_0_multi,
    q8_0_n,
    BlockQ8_0,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
multi_entry!(
    q4_1_multi,
    q4_1_n,
    BlockQ8_1,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
multi_entry!(
    q5_1_multi,
    q5_1_n,
    BlockQ8_1,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);

// ---------------------------------------------------------------------------
// Tiled forms: one weight row × TILE_TOKENS (8) tokens from a `TokenTiles` layout, two blocks
// per 512-bit `vpdpbusd` (lanes 0–7 are block 2i, lanes 8–15 block 2i+1, exactly the single-token
// kernels' `acc0` / `acc1`). The signed weight trick uses AVX-512BW's `abs` and a masked
// negate of the activations (there is no 512-bit `sign`), which yields the same integers as
// `_mm256_sign_epi8`; the scales are the same f32 products, so every token's result is
// bit-identical to the single-token kernel.
// ---------------------------------------------------------------------------

/// Lane indices that broadcast token `t`'s two block scales from `[sc0 tokens | sc1 tokens]`
/// into `[sc0[t] × 8 | sc1[t] × 8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn scale_index(t: usize) -> __m512i {
    _mm512_add_epi32(
        _mm512_set_epi32(8, 8, 8, 8, 8, 8, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0),
        _mm512_set1_epi32(t as i32),
    )
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn load_pair(p: &QuantPair) -> __m512i {
    // SAFETY: `p` is 64 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(p.as_ptr() as *const _) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn load_tokens(v: &[f32; TILE_TOKENS]) -> __m256 {
    // SAFETY: `v` is 8 readable f32 and `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(v.as_ptr()) }
}

/// Low 32 bytes of a quant pair (an odd last block).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn load_first(p: &QuantPair) -> __m256i {
    // SAFETY: `p` is 64 readable bytes, so its first 32 are; `loadu` is unaligned.
    unsafe { _mm256_loadu_si256(p.as_ptr() as *const __m256i) }
}

/// `[dx0 * dy0[t] for the 8 tokens | dx1 * dy1[t] for the 8 tokens]`: a block pair's scales.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn pair_scales(dx0: f32, dx1: f32, dy0: &[f32; TILE_TOKENS], dy1: &[f32; TILE_TOKENS]) -> __m512 {
    join_ps(
        _mm256_mul_ps(_mm256_set1_ps(dx0), load_tokens(dy0)),
        _mm256_mul_ps(_mm256_set1_ps(dx1), load_tokens(dy1)),
    )
}

/// Two 256-bit halves as one 512-bit vector (`lo` in lanes 0–7).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn join_ps(lo: __m256, hi: __m256) -> __m512 {
    // The f64x4 forms are AVX-512F (the f32x8 ones need DQ); lanes are moved, not converted.
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(
        _mm512_castps_pd(_mm512_castps256_ps512(lo)),
        _mm256_castps_pd(hi),
    ))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn join_si(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// `acc`'s lanes 0–7 (`acc0`) get `fmadd(s, p, acc0)`, lanes 8–15 are unchanged: the odd
/// last block, which the single-token kernels add into `acc0` alone.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn fmadd_low(s: __m256, p: __m256, acc: __m512) -> __m512 {
    let lo = _mm256_fmadd_ps(s, p, _mm512_castps512_ps256(acc));
    _mm512_castpd_ps(_mm512_insertf64x4::<0>(
        _mm512_castps_pd(acc),
        _mm256_castps_pd(lo),
    ))
}

/// `hsum_ps(acc0 + acc1)` of the single-token kernels.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn hsum_halves(acc: __m512) -> f32 {
    hsum_ps(_mm256_add_ps(
        _mm512_castps512_ps256(acc),
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc))),
    ))
}

/// The tiled form of the Q8_0-activation dot ([`q8_0_rows`]): `qx(block)` gives a block's 32
/// signed weight quants.
macro_rules! q8_0_tile {
    ($x:expr, $g:expr, $out:expr, |$b:ident| $qx:expr) => {{
        let (x, g, out): (_, TileGroup<'_>, &mut [f32; TILE_TOKENS]) = ($x, $g, $out);
        let nb = x.len();
        assert!(
            g.qs.len() == nb.div_ceil(2) && g.d.len() >= nb,
            "tiled dot: shape mismatch"
        );
        let mut acc = [_mm512_setzero_ps(); TILE_TOKENS];
        for i in 0..nb / 2 {
            let (xb0, xb1) = (&x[2 * i], &x[2 * i + 1]);
            let (dx0, dx1) = f16x2(u16::from_le_bytes(xb0.d), u16::from_le_bytes(xb1.d));
            let q0 = {
                let $b = xb0;
                $qx
            };
            let q1 = {
                let $b = xb1;
                $qx
            };
            let q = join_si(q0, q1);
            let aq = _mm512_abs_epi8(q);
            let neg = _mm512_movepi8_mask(q);
            let sc = pair_scales(dx0, dx1, &g.d[2 * i], &g.d[2 * i + 1]);
            let ys = &g.qs[i];
            for t in 0..TILE_TOKENS {
                let y = load_pair(&ys[t]);
                let sy = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
                let p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), aq, sy));
                let s = _mm512_permutexvar_ps(scale_index(t), sc);
                acc[t] = _mm512_fmadd_ps(s, p, acc[t]);
            }
        }
        if nb % 2 == 1 {
            let xb = &x[nb - 1];
            let q = {
                let $b = xb;
                $qx
            };
            let aq = _mm256_sign_epi8(q, q);
            let dx = f16x2(u16::from_le_bytes(xb.d), 0).0;
            let dy = &g.d[nb - 1];
            let ys = &g.qs[nb / 2];
            for t in 0..TILE_TOKENS {
                let p = dot_i8i8_abs(aq, q, load_first(&ys[t]));
                acc[t] = fmadd_low(_mm256_set1_ps(dx * dy[t]), p, acc[t]);
            }
        }
        for t in 0..TILE_TOKENS {
            out[t] = hsum_halves(acc[t]);
        }
    }};
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q8_0_tile(w: &[u8], g: TileGroup<'_>, out: &mut [f32; TILE_TOKENS]) {
    let x: &[WBlockQ8_0] = weight_blocks(w);
    q8_0_tile!(x, g, out, |b| load32i(&b.qs))
}

// ---------------------------------------------------------------------------
// K-quant forms (Q8_K activations, whose 256 quants are contiguous): two 32-quant groups per
// 512-bit step, with AVX512-VNNI's `vpdpwssd` doing `maddubs`' pair sums × the group scales and
// the accumulation in one instruction. Lanes 0–7 and 8–15 hold what the AVX2 kernels' 8 lanes
// hold for the first and second group; the integer sums are exact, so after adding the halves
// every token's result is bit-identical to the AVX2 kernel (single- and multi-token alike).
// ---------------------------------------------------------------------------

/// The sum of the two 8-lane halves of an integer accumulator.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn fold_halves(v: __m512i) -> __m256i {
    _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v))
}

/// 16-bit scale lanes for `maddubs` over two 32-quant groups: `a` for the first 16 pair sums,
/// `b` for the next 16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn scales16_2(a: i16, b: i16) -> __m512i {
    join_si(_mm256_set1_epi16(a), _mm256_set1_epi16(b))
}

/// The AVX-512 form of the AVX2 `k4_loop_n` (Q4_K, Q5_K): `group(block, j)` gives the low and
/// high 32-quant halves of 64-quant group `j`.
macro_rules! k4_loop_512 {
    ($n:ident, $x:expr, $y:expr, $out:expr, |$b:ident, $j:ident| $group:expr) => {{
        let (x, y, out): (_, _, &mut [f32; $n]) = ($x, $y, $out);
        let nb = x.len();
        let ys: [&[BlockQ8_K]; $n] = token_rows(y, nb);
        let mut acc = [_mm256_setzero_ps(); $n];
        let mut acc_m = [_mm_setzero_ps(); $n];
        for (i, xb) in x.iter().enumerate() {
            let (xd, xmin) = f16x2(u16::from_le_bytes(xb.d), u16::from_le_bytes(xb.dmin));
            let (sc, mn) = unpack_scales_k4(&xb.scales);
            let mins = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(i64::from_le_bytes(mn)));
            let mut d = [0.0f32; $n];
            let mut sumi = [_mm512_setzero_si512(); $n];
            for t in 0..$n {
                let yb = &ys[t][i];
                d[t] = yb.d * xd;
                acc_m[t] = k4_min_term(mins, yb, xmin, acc_m[t]);
            }
            for j in 0..4 {
                let (ql, qh) = {
                    let ($b, $j) = (xb, j);
                    $group
                };
                let q = join_si(ql, qh);
                let s16 = scales16_2(sc[2 * j] as i16, sc[2 * j + 1] as i16);
                for t in 0..$n {
                    let y8 = load64i(sub::<64, i8>(&ys[t][i].qs, 64 * j));
                    sumi[t] = _mm512_dpwssd_epi32(sumi[t], _mm512_maddubs_epi16(q, y8), s16);
                }
            }
            for t in 0..$n {
                let s = _mm256_cvtepi32_ps(fold_halves(sumi[t]));
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d[t]), s, acc[t]);
            }
        }
        for t in 0..$n {
            out[t] = hsum_ps(acc[t]) + hsum_ps128(acc_m[t]);
        }
    }};
}

/// Q4_K against `N` tokens.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_k_n<const N: usize>(w: &[u8], y: &[BlockQ8_K], out: &mut [f32; N]) {
    let x: &[WBlockQ4_K] = weight_blocks(w);
    k4_loop_512!(N, x, y, out, |b, j| k4_nibbles(&b.qs, j))
}

/// Q5_K against `N` tokens.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_k_n<const N: usize>(w: &[u8], y: &[BlockQ8_K], out: &mut [f32; N]) {
    let x: &[WBlockQ5_K] = weight_blocks(w);
    k4_loop_512!(N, x, y, out, |b, j| q5_k_group(b, j))
}

/// Q6_K against `N` tokens: the AVX2 `q6_k_n` with groups `k` and `k + 1` in one step.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q6_k_n<const N: usize>(w: &[u8], y: &[BlockQ8_K], out: &mut [f32; N]) {
    let x: &[WBlockQ6_K] = weight_blocks(w);
    let nb = x.len();
    let ys: [&[BlockQ8_K]; N] = token_rows(y, nb);
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, xb) in x.iter().enumerate() {
        let xd = f16_le(xb.d);
        // SAFETY: `scales` is 16 readable bytes; `loadu` has no alignment requirement.
        let scales = unsafe { _mm_loadu_si128(xb.scales.as_ptr() as *const __m128i) };
        let scales16 = _mm256_cvtepi8_epi16(scales);
        let scales2 = _mm256_broadcastsi128_si256(scales);
        let mut sumi = [_mm512_setzero_si512(); N];
        for h in 0..2 {
            let q = q6_k_quants(xb, h);
            for k in [0, 2] {
                let g = (4 * h + k) as i8;
                // Bytes: scale 2g × 8, 2g+1 × 8 | 2g+2 × 8, 2g+3 × 8 (both 128-bit lanes hold
                // all 16 scales), widened to the 32 pair-sum lanes of two groups.
                let idx = _mm256_add_epi8(
                    _mm256_setr_epi8(
                        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3,
                        3, 3, 3, 3, 3, 3, 3,
                    ),
                    _mm256_set1_epi8(2 * g),
                );
                let sv16 = _mm512_cvtepi8_epi16(_mm256_shuffle_epi8(scales2, idx));
                let qk = join_si(q[k], q[k + 1]);
                for t in 0..N {
                    let y8 = load64i(sub::<64, i8>(&ys[t][i].qs, 128 * h + 32 * k));
                    sumi[t] = _mm512_dpwssd_epi32(sumi[t], _mm512_maddubs_epi16(qk, y8), sv16);
                }
            }
        }
        for t in 0..N {
            let yb = &ys[t][i];
            let d = yb.d * xd;
            let sub32 = _mm256_slli_epi32::<5>(_mm256_madd_epi16(load_bsums(&yb.bsums), scales16));
            let s = _mm256_sub_epi32(fold_halves(sumi[t]), sub32);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc[t]);
        }
    }
    for t in 0..N {
        out[t] = hsum_ps(acc[t]);
    }
}

/// The single-token kernels are the one-token multi-token kernels.
macro_rules! single_of_multi {
    ($name:ident, $kern:ident) => {
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        fn $name(w: &[u8], y: &[BlockQ8_K]) -> f32 {
            let mut out = [0f32; 1];
            $kern::<1>(w, y, &mut out);
            out[0]
        }
    };
}

single_of_multi!(q4_k_impl, q4_k_n);
single_of_multi!(q5_k_impl, q5_k_n);
single_of_multi!(q6_k_impl, q6_k_n);

multi_entry!(
    q4_k_multi,
    q4_k_n,
    BlockQ8_K,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
multi_entry!(
    q5_k_multi,
    q5_k_n,
    BlockQ8_K,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
multi_entry!(
    q6_k_multi,
    q6_k_n,
    BlockQ8_K,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
