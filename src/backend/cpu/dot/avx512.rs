//! AVX-512 kernels. Types without one here keep their AVX2 kernel.
//!
//! For now these are the 32-wide quant dots rewritten around AVX-512 VNNI's `vpdpbusd`
//! (256-bit form, AVX512-VL), which replaces the `maddubs` + `madd` pair, and unrolled two
//! blocks per iteration. They are installed only when the CPU also has AVX512-VNNI.
//!
//! Safety model as in `avx2.rs`: safe `#[target_feature]` functions, handed out only by
//! [`install`] (an `unsafe fn`), which checks AVX512-VNNI itself.

use std::arch::x86_64::*;

use super::avx2::{
    f16x2, hsum_ps, load32i, multi_entry, nibbles32, q4_0_quants, q5_0_quants, q5_1_quants,
    q8_0_pair_loop_n, token_rows,
};
use super::DotKernels;
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
        k.q4_0_n = Some(q4_0_multi);
        k.q4_1_n = Some(q4_1_multi);
        k.q5_0_n = Some(q5_0_multi);
        k.q5_1_n = Some(q5_1_multi);
        k.q8_0_n = Some(q8_0_multi);
    }
}

/// Sum of products of unsigned bytes `u` with signed bytes `s`, per 4 adjacent bytes, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn dot_u8i8(u: __m256i, s: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s))
}

/// Sum of products of signed bytes, per 4 adjacent bytes, as f32 (`y` must avoid -128).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn dot_i8i8(x: __m256i, y: __m256i) -> __m256 {
    dot_u8i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// [`dot_i8i8`] with `ax = |x|` (`_mm256_sign_epi8(x, x)`) computed by the caller, so a
/// multi-token kernel takes it once per weight block; the same instructions otherwise.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn dot_i8i8_abs(ax: __m256i, x: __m256i, y: __m256i) -> __m256 {
    dot_u8i8(ax, _mm256_sign_epi8(y, x))
}

/// The shared loop of the Q8_0-activation dots: `qx(block)` gives the 32 signed weight
/// quants of a block; the result is sum over blocks of dx * dy * (qx . qy).
macro_rules! q8_0_loop {
    ($x:expr, $y:expr, |$b:ident| $qx:expr) => {{
        let (x, y) = ($x, $y);
        assert_eq!(x.len(), y.len());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut xc = x.chunks_exact(2);
        let mut yc = y.chunks_exact(2);
        for (xp, yp) in (&mut xc).zip(&mut yc) {
            let (dx0, dy0) = f16x2(u16::from_le_bytes(xp[0].d), yp[0].d.to_bits());
            let (dx1, dy1) = f16x2(u16::from_le_bytes(xp[1].d), yp[1].d.to_bits());
            let q0 = {
                let $b = &xp[0];
                $qx
            };
            let q1 = {
                let $b = &xp[1];
                $qx
            };
            let p0 = dot_i8i8(q0, load32i(&yp[0].qs));
            let p1 = dot_i8i8(q1, load32i(&yp[1].qs));
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(dx0 * dy0), p0, acc0);
            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(dx1 * dy1), p1, acc1);
        }
        for (xb, yb) in xc.remainder().iter().zip(yc.remainder()) {
            let (dx, dy) = f16x2(u16::from_le_bytes(xb.d), yb.d.to_bits());
            let q = {
                let $b = xb;
                $qx
            };
            let p = dot_i8i8(q, load32i(&yb.qs));
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(dx * dy), p, acc0);
        }
        hsum_ps(_mm256_add_ps(acc0, acc1))
    }};
}

/// The shared loop of the Q8_1-activation dots: `qx(block)` gives the 32 unsigned weight
/// quants; the result is sum over blocks of dx * dy * (qx . qy) + mx * sy.
macro_rules! q8_1_loop {
    ($x:expr, $y:expr, |$b:ident| $qx:expr) => {{
        let (x, y) = ($x, $y);
        assert_eq!(x.len(), y.len());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut acc_m = _mm_setzero_ps();
        let mut xc = x.chunks_exact(2);
        let mut yc = y.chunks_exact(2);
        for (xp, yp) in (&mut xc).zip(&mut yc) {
            // [dx0, mx0, dy0, sy0, dx1, mx1, dy1, sy1]
            let v = _mm256_cvtph_ps(_mm_setr_epi16(
                u16::from_le_bytes(xp[0].d) as i16,
                u16::from_le_bytes(xp[0].m) as i16,
                yp[0].d.to_bits() as i16,
                yp[0].s.to_bits() as i16,
                u16::from_le_bytes(xp[1].d) as i16,
                u16::from_le_bytes(xp[1].m) as i16,
                yp[1].d.to_bits() as i16,
                yp[1].s.to_bits() as i16,
            ));
            let lo = _mm256_castps256_ps128(v);
            let hi = _mm256_extractf128_ps::<1>(v);
            let p_lo = _mm_mul_ps(lo, _mm_movehl_ps(lo, lo)); // [dx0*dy0, mx0*sy0, ..]
            let p_hi = _mm_mul_ps(hi, _mm_movehl_ps(hi, hi));
            acc_m = _mm_add_ps(acc_m, _mm_add_ps(p_lo, p_hi));
            let q0 = {
                let $b = &xp[0];
                $qx
            };
            let q1 = {
                let $b = &xp[1];
                $qx
            };
            let s0 = dot_u8i8(q0, load32i(&yp[0].qs));
            let s1 = dot_u8i8(q1, load32i(&yp[1].qs));
            acc0 = _mm256_fmadd_ps(_mm256_broadcastss_ps(p_lo), s0, acc0);
            acc1 = _mm256_fmadd_ps(_mm256_broadcastss_ps(p_hi), s1, acc1);
        }
        let mut tail_m = 0.0f32;
        for (xb, yb) in xc.remainder().iter().zip(yc.remainder()) {
            let (dx, dy) = f16x2(u16::from_le_bytes(xb.d), yb.d.to_bits());
            let (mx, sy) = f16x2(u16::from_le_bytes(xb.m), yb.s.to_bits());
            tail_m += mx * sy;
            let q = {
                let $b = xb;
                $qx
            };
            let s = dot_u8i8(q, load32i(&yb.qs));
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(dx * dy), s, acc0);
        }
        let m = _mm_cvtss_f32(_mm_movehdup_ps(acc_m)) + tail_m;
        hsum_ps(_mm256_add_ps(acc0, acc1)) + m
    }};
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_0_impl(w: &[u8], y: &[BlockQ8_0]) -> f32 {
    let x: &[WBlockQ4_0] = weight_blocks(w);
    q8_0_loop!(x, y, |b| q4_0_quants(b))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_0_impl(w: &[u8], y: &[BlockQ8_0]) -> f32 {
    let x: &[WBlockQ5_0] = weight_blocks(w);
    q8_0_loop!(x, y, |b| q5_0_quants(b))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q8_0_impl(w: &[u8], y: &[BlockQ8_0]) -> f32 {
    let x: &[WBlockQ8_0] = weight_blocks(w);
    q8_0_loop!(x, y, |b| load32i(&b.qs))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_1_impl(w: &[u8], y: &[BlockQ8_1]) -> f32 {
    let x: &[WBlockQ4_1] = weight_blocks(w);
    q8_1_loop!(x, y, |b| nibbles32(&b.qs))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_1_impl(w: &[u8], y: &[BlockQ8_1]) -> f32 {
    let x: &[WBlockQ5_1] = weight_blocks(w);
    q8_1_loop!(x, y, |b| q5_1_quants(b))
}

// ---------------------------------------------------------------------------
// Multi-token forms: each weight block is decoded once and dotted with N (1 to 4) token rows
// (back to back in `y`). Per token they perform exactly the operations of the single-token
// kernels above in the same order, so every result is bit-identical to them.
// ---------------------------------------------------------------------------

/// Multi-token form of [`q8_1_loop`].
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
    q8_0_pair_loop_n!(N, dot_i8i8_abs, x, y, out, |b| q5_0_quants(b))
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
    q8_1_loop_n!(N, x, y, out, |b| q5_1_quants(b))
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
