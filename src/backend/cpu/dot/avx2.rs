//! AVX2 + FMA + F16C kernels.
//!
//! Safety model: every SIMD function here is a safe `#[target_feature]` function, so it may
//! only be *called* where those features are known to exist. The kernels are private; the
//! only code that hands them out is [`install`], an `unsafe fn` whose contract is that the
//! running CPU has AVX2, FMA and F16C (`DotKernels::select` checks that with run-time
//! detection), and it stores them as `unsafe fn` pointers in the [`DotKernels`] table. The
//! remaining `unsafe` blocks are unaligned loads/stores through pointers derived from arrays
//! or slices whose length is checked right there.

use std::arch::x86_64::*;

use super::DotKernels;
use crate::quant::blocks::*;

/// Install the AVX2 kernels into `k`.
///
/// # Safety
/// The running CPU must support AVX2, FMA and F16C.
pub(super) unsafe fn install(k: &mut DotKernels) {
    k.f32 = f32_impl;
    k.f16 = f16_impl;
    k.bf16 = bf16_impl;
    k.q4_0 = q4_0_impl;
    k.q4_1 = q4_1_impl;
    k.q5_0 = q5_0_impl;
    k.q5_1 = q5_1_impl;
    k.q8_0 = q8_0_impl;
    k.q2_k = q2_k_impl;
    k.q3_k = q3_k_impl;
    k.q4_k = q4_k_impl;
    k.q5_k = q5_k_impl;
    k.q6_k = q6_k_impl;
    k.quant_q8_0 = quant_q8_0_impl;
    k.quant_q8_1 = quant_q8_1_impl;
    k.quant_q8_k = quant_q8_k_impl;
    k.q4_0_n = Some(q4_0_multi);
    k.q4_1_n = Some(q4_1_multi);
    k.q5_0_n = Some(q5_0_multi);
    k.q5_1_n = Some(q5_1_multi);
    k.q8_0_n = Some(q8_0_multi);
    k.q4_k_n = Some(q4_k_multi);
    k.q5_k_n = Some(q5_k_multi);
    k.q6_k_n = Some(q6_k_multi);
}

// ---------------------------------------------------------------------------
// Helpers (all inline into the kernels that share their target features)
// ---------------------------------------------------------------------------

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load32(b: &[u8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr() as *const __m256i) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load32i(b: &[i8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr() as *const __m256i) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load16(b: &[u8; 16]) -> __m128i {
    // SAFETY: `b` is 16 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr() as *const __m128i) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_bsums(b: &[i16; 16]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr() as *const __m256i) }
}

/// `s[off..off + N]` as an array reference (bounds-checked; constant offsets fold away).
#[inline(always)]
pub(super) fn sub<const N: usize, T>(s: &[T], off: usize) -> &[T; N] {
    s[off..off + N].try_into().unwrap()
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_ps128(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax_ps(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// Two f16 values (raw bits) to f32 with one F16C conversion.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16x2(a: u16, b: u16) -> (f32, f32) {
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128((a as u32 | ((b as u32) << 16)) as i32));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_of(x: f32) -> half::f16 {
    let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x));
    half::f16::from_bits(_mm_extract_epi16::<0>(h) as u16)
}

/// 32 packed nibbles to 32 bytes: the 16 low nibbles, then the 16 high nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn nibbles32(qs: &[u8; 16]) -> __m256i {
    // The 16 bytes in both halves (a load-port broadcast), the upper half shifted right by a
    // nibble: no shuffle-port instruction, which the decode loops are short of.
    let b = _mm256_broadcastsi128_si256(load16(qs));
    let b = _mm256_srlv_epi64(b, _mm256_set_epi64x(4, 4, 0, 0));
    _mm256_and_si256(b, _mm256_set1_epi8(0x0F))
}

/// Byte k is 0xFF where bit k of `bits` is set, else 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn bytes_from_bits32(bits: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0x0000000000000000,
    );
    let b = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuf);
    let b = _mm256_or_si256(b, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1))
}

/// Sum of products of signed bytes, four adjacent products per i32 lane, as f32.
/// `x` may hold any value; `y` must avoid -128 (Q8 activations never hold it), so the
/// pairwise 16-bit step cannot saturate.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn mul_sum_i8_f32(x: __m256i, y: __m256i) -> __m256 {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    mul_sum_u8i8_f32(ax, sy)
}

/// [`mul_sum_i8_f32`] with `ax = |x|` (`_mm256_sign_epi8(x, x)`) computed by the caller, so a
/// multi-token kernel takes it once per weight block; the same instructions otherwise.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn mul_sum_i8_f32_abs(ax: __m256i, x: __m256i, y: __m256i) -> __m256 {
    mul_sum_u8i8_f32(ax, _mm256_sign_epi8(y, x))
}

/// Sum of products of unsigned bytes `u` with signed bytes `s`, per 4 adjacent bytes, as f32.
/// The pairwise 16-bit step cannot saturate when |u| ≤ 128 and |s| ≤ 127.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn mul_sum_u8i8_f32(u: __m256i, s: __m256i) -> __m256 {
    let p = _mm256_maddubs_epi16(u, s);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)))
}

// ---------------------------------------------------------------------------
// Float weights
// ---------------------------------------------------------------------------

/// The 32 signed quants of a Q4_0 block (nibble - 8).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_0_quants(b: &WBlockQ4_0) -> __m256i {
    _mm256_sub_epi8(nibbles32(&b.qs), _mm256_set1_epi8(8))
}

/// The 32 signed quants of a Q5_0 block (q - 16): where the 5th bit is clear,
/// q - 16 = nibble | 0xF0 as i8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_0_quants(b: &WBlockQ5_0) -> __m256i {
    let hi = _mm256_andnot_si256(
        bytes_from_bits32(u32::from_le_bytes(b.qh)),
        _mm256_set1_epi8(0xF0u8 as i8),
    );
    _mm256_or_si256(nibbles32(&b.qs), hi)
}

/// The 32 unsigned quants of a Q5_1 block (nibble plus the 5th bit).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_1_quants(b: &WBlockQ5_1) -> __m256i {
    let hi = _mm256_and_si256(
        bytes_from_bits32(u32::from_le_bytes(b.qh)),
        _mm256_set1_epi8(0x10),
    );
    _mm256_or_si256(nibbles32(&b.qs), hi)
}

/// The four 32-quant groups (unsigned, q + 32) of half `h` (0 or 1) of a Q6_K block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q6_k_quants(xb: &WBlockQ6_K, h: usize) -> [__m256i; 4] {
    let (m3, m15) = (_mm256_set1_epi8(3), _mm256_set1_epi8(15));
    let ql1 = load32(sub::<32, u8>(&xb.ql, 64 * h));
    let ql2 = load32(sub::<32, u8>(&xb.ql, 64 * h + 32));
    let qh = load32(sub::<32, u8>(&xb.qh, 32 * h));

    let h0 = _mm256_slli_epi16::<4>(_mm256_and_si256(qh, m3));
    let h1 = _mm256_slli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(12)));
    let h2 = _mm256_and_si256(qh, _mm256_set1_epi8(48));
    let h3 = _mm256_srli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(-64)));
    [
        _mm256_or_si256(_mm256_and_si256(ql1, m15), h0),
        _mm256_or_si256(_mm256_and_si256(ql2, m15), h1),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m15), h2),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql2), m15), h3),
    ]
}

#[target_feature(enable = "avx2,fma,f16c")]
fn f32_impl(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    assert_eq!(w.len(), n * 4);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let o = i + 8 * k;
            // SAFETY: o + 8 <= n, so 8 f32 (32 bytes) are in bounds of `w` (4n bytes) and `x`;
            // `loadu` has no alignment requirement.
            let (wv, xv) = unsafe {
                (
                    _mm256_loadu_ps(wp.add(4 * o) as *const f32),
                    _mm256_loadu_ps(xp.add(o)),
                )
            };
            *a = _mm256_fmadd_ps(wv, xv, *a);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n as above.
        let (wv, xv) = unsafe {
            (
                _mm256_loadu_ps(wp.add(4 * i) as *const f32),
                _mm256_loadu_ps(xp.add(i)),
            )
        };
        acc[0] = _mm256_fmadd_ps(wv, xv, acc[0]);
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum_ps(v);
    for (j, &xv) in x.iter().enumerate().skip(i) {
        s += f32::from_le_bytes(*sub::<4, u8>(w, 4 * j)) * xv;
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
fn f16_impl(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    assert_eq!(w.len(), n * 2);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let o = i + 8 * k;
            // SAFETY: o + 8 <= n: 8 f16 (16 bytes) of `w` (2n bytes) and 8 f32 of `x` are in
            // bounds; `loadu` has no alignment requirement.
            let (wv, xv) = unsafe {
                (
                    _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * o) as *const __m128i)),
                    _mm256_loadu_ps(xp.add(o)),
                )
            };
            *a = _mm256_fmadd_ps(wv, xv, *a);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n as above.
        let (wv, xv) = unsafe {
            (
                _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * i) as *const __m128i)),
                _mm256_loadu_ps(xp.add(i)),
            )
        };
        acc[0] = _mm256_fmadd_ps(wv, xv, acc[0]);
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum_ps(v);
    for (j, &xv) in x.iter().enumerate().skip(i) {
        s += f16_le(*sub::<2, u8>(w, 2 * j)) * xv;
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
fn bf16_impl(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    assert_eq!(w.len(), n * 2);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let o = i + 8 * k;
            // SAFETY: o + 8 <= n: 16 bytes of `w` (2n bytes) and 8 f32 of `x` are in bounds;
            // `loadu` has no alignment requirement.
            let (wv, xv) = unsafe {
                (
                    _mm_loadu_si128(wp.add(2 * o) as *const __m128i),
                    _mm256_loadu_ps(xp.add(o)),
                )
            };
            let wf = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(wv)));
            *a = _mm256_fmadd_ps(wf, xv, *a);
        }
        i += 32;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum_ps(v);
    for (j, &xv) in x.iter().enumerate().skip(i) {
        s += bf16_le(*sub::<2, u8>(w, 2 * j)) * xv;
    }
    s
}

// ---------------------------------------------------------------------------
// 32-wide quants
// ---------------------------------------------------------------------------

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0_impl(w: &[u8], y: &[BlockQ8_0]) -> f32 {
    let x: &[WBlockQ4_0] = weight_blocks(w);
    assert_eq!(x.len(), y.len());
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let (dx, dy) = f16x2(u16::from_le_bytes(xb.d), yb.d.to_bits());
        let qx = q4_0_quants(xb);
        let p = mul_sum_i8_f32(qx, load32i(&yb.qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dx * dy), p, acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_1_impl(w: &[u8], y: &[BlockQ8_1]) -> f32 {
    let x: &[WBlockQ4_1] = weight_blocks(w);
    assert_eq!(x.len(), y.len());
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        // [dx, mx, dy, sy] in one conversion.
        let v = _mm_cvtph_ps(_mm_set_epi16(
            0,
            0,
            0,
            0,
            yb.s.to_bits() as i16,
            yb.d.to_bits() as i16,
            u16::from_le_bytes(xb.m) as i16,
            u16::from_le_bytes(xb.d) as i16,
        ));
        // dx*dy in lane 0, mx*sy in lane 1.
        let prod = _mm_mul_ps(v, _mm_movehl_ps(v, v));
        acc_m = _mm_add_ps(acc_m, prod);
        let p = mul_sum_u8i8_f32(nibbles32(&xb.qs), load32i(&yb.qs));
        acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(prod), p, acc);
    }
    let m = _mm_cvtss_f32(_mm_movehdup_ps(acc_m));
    hsum_ps(acc) + m
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0_impl(w: &[u8], y: &[BlockQ8_0]) -> f32 {
    let x: &[WBlockQ5_0] = weight_blocks(w);
    assert_eq!(x.len(), y.len());
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let (dx, dy) = f16x2(u16::from_le_bytes(xb.d), yb.d.to_bits());
        let qx = q5_0_quants(xb);
        let p = mul_sum_i8_f32(qx, load32i(&yb.qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dx * dy), p, acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_1_impl(w: &[u8], y: &[BlockQ8_1]) -> f32 {
    let x: &[WBlockQ5_1] = weight_blocks(w);
    assert_eq!(x.len(), y.len());
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let v = _mm_cvtph_ps(_mm_set_epi16(
            0,
            0,
            0,
            0,
            yb.s.to_bits() as i16,
            yb.d.to_bits() as i16,
            u16::from_le_bytes(xb.m) as i16,
            u16::from_le_bytes(xb.d) as i16,
        ));
        let prod = _mm_mul_ps(v, _mm_movehl_ps(v, v));
        acc_m = _mm_add_ps(acc_m, prod);
        let qx = q5_1_quants(xb);
        let p = mul_sum_u8i8_f32(qx, load32i(&yb.qs));
        acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(prod), p, acc);
    }
    let m = _mm_cvtss_f32(_mm_movehdup_ps(acc_m));
    hsum_ps(acc) + m
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0_impl(w: &[u8], y: &[BlockQ8_0]) -> f32 {
    let x: &[WBlockQ8_0] = weight_blocks(w);
    assert_eq!(x.len(), y.len());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut xc = x.chunks_exact(2);
    let mut yc = y.chunks_exact(2);
    for (xp, yp) in (&mut xc).zip(&mut yc) {
        let (dx0, dy0) = f16x2(u16::from_le_bytes(xp[0].d), yp[0].d.to_bits());
        let (dx1, dy1) = f16x2(u16::from_le_bytes(xp[1].d), yp[1].d.to_bits());
        let p0 = mul_sum_i8_f32(load32i(&xp[0].qs), load32i(&yp[0].qs));
        let p1 = mul_sum_i8_f32(load32i(&xp[1].qs), load32i(&yp[1].qs));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(dx0 * dy0), p0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(dx1 * dy1), p1, acc1);
    }
    for (xb, yb) in xc.remainder().iter().zip(yc.remainder()) {
        let (dx, dy) = f16x2(u16::from_le_bytes(xb.d), yb.d.to_bits());
        let p = mul_sum_i8_f32(load32i(&xb.qs), load32i(&yb.qs));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(dx * dy), p, acc0);
    }
    hsum_ps(_mm256_add_ps(acc0, acc1))
}

// ---------------------------------------------------------------------------
// Multi-token 32-wide quant dots
//
// Each decodes a weight block once and dots it with N (1 to 4) token rows, which `y` holds
// back to back. Per token they perform exactly the operations of the single-token kernel
// above, in the same order (same accumulators, same fma chain, same final sum), so every
// result is bit-identical to it.
// ---------------------------------------------------------------------------

/// Split `y` (N rows of `nb` blocks, back to back) into its rows; panics on a length mismatch.
#[inline(always)]
pub(super) fn token_rows<const N: usize, T>(y: &[T], nb: usize) -> [&[T]; N] {
    assert_eq!(
        y.len(),
        nb * N,
        "multi-token dot: activation length mismatch"
    );
    std::array::from_fn(|t| &y[t * nb..(t + 1) * nb])
}

/// A multi-token entry point (`out.len()` tokens, 1 to 4) over the const-generic kernel
/// `$kern::<N>`, with the target features `$feat`.
macro_rules! multi_entry {
    ($name:ident, $kern:ident, $yt:ty, $feat:literal) => {
        #[target_feature(enable = $feat)]
        fn $name(w: &[u8], y: &[$yt], out: &mut [f32]) {
            match out.len() {
                1 => $kern::<1>(w, y, out.try_into().unwrap()),
                2 => $kern::<2>(w, y, out.try_into().unwrap()),
                3 => $kern::<3>(w, y, out.try_into().unwrap()),
                4 => $kern::<4>(w, y, out.try_into().unwrap()),
                n => panic!("multi-token dot: {n} tokens (1 to 4 per call)"),
            }
        }
    };
}
pub(super) use multi_entry;

/// The multi-token form of a Q8_0-activation loop that pairs blocks into two accumulators
/// (`acc0` / `acc1`, odd tail into `acc0`), with `$dot(|qx|, qx, qy)` the per-block product.
macro_rules! q8_0_pair_loop_n {
    ($n:ident, $dot:ident, $x:expr, $y:expr, $out:expr, |$b:ident| $qx:expr) => {{
        let (x, y, out): (_, _, &mut [f32; $n]) = ($x, $y, $out);
        let nb = x.len();
        let ys: [&[BlockQ8_0]; $n] = token_rows(y, nb);
        let mut acc0 = [_mm256_setzero_ps(); $n];
        let mut acc1 = [_mm256_setzero_ps(); $n];
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
            let (a0, a1) = (_mm256_sign_epi8(q0, q0), _mm256_sign_epi8(q1, q1));
            for t in 0..$n {
                let (yb0, yb1) = (&ys[t][2 * i], &ys[t][2 * i + 1]);
                let (dy0, dy1) = f16x2(yb0.d.to_bits(), yb1.d.to_bits());
                let p0 = $dot(a0, q0, load32i(&yb0.qs));
                let p1 = $dot(a1, q1, load32i(&yb1.qs));
                acc0[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx0 * dy0), p0, acc0[t]);
                acc1[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx1 * dy1), p1, acc1[t]);
            }
        }
        if nb % 2 == 1 {
            let xb = &x[nb - 1];
            let q = {
                let $b = xb;
                $qx
            };
            let a = _mm256_sign_epi8(q, q);
            for t in 0..$n {
                let yb = &ys[t][nb - 1];
                let (dx, dy) = f16x2(u16::from_le_bytes(xb.d), yb.d.to_bits());
                let p = $dot(a, q, load32i(&yb.qs));
                acc0[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * dy), p, acc0[t]);
            }
        }
        for t in 0..$n {
            out[t] = hsum_ps(_mm256_add_ps(acc0[t], acc1[t]));
        }
    }};
}
pub(super) use q8_0_pair_loop_n;

/// Multi-token form of the single-accumulator Q8_0-activation loop (`q4_0_impl`, `q5_0_impl`).
macro_rules! q8_0_single_loop_n {
    ($n:ident, $x:expr, $y:expr, $out:expr, |$b:ident| $qx:expr) => {{
        let (x, y, out): (_, _, &mut [f32; $n]) = ($x, $y, $out);
        let nb = x.len();
        let ys: [&[BlockQ8_0]; $n] = token_rows(y, nb);
        let mut acc = [_mm256_setzero_ps(); $n];
        for (i, xb) in x.iter().enumerate() {
            let q = {
                let $b = xb;
                $qx
            };
            let a = _mm256_sign_epi8(q, q);
            for t in 0..$n {
                let yb = &ys[t][i];
                let (dx, dy) = f16x2(u16::from_le_bytes(xb.d), yb.d.to_bits());
                let p = mul_sum_i8_f32_abs(a, q, load32i(&yb.qs));
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * dy), p, acc[t]);
            }
        }
        for t in 0..$n {
            out[t] = hsum_ps(acc[t]);
        }
    }};
}

/// Multi-token form of the single-accumulator Q8_1-activation loop (`q4_1_impl`, `q5_1_impl`).
macro_rules! q8_1_single_loop_n {
    ($n:ident, $x:expr, $y:expr, $out:expr, |$b:ident| $qx:expr) => {{
        let (x, y, out): (_, _, &mut [f32; $n]) = ($x, $y, $out);
        let nb = x.len();
        let ys: [&[BlockQ8_1]; $n] = token_rows(y, nb);
        let mut acc = [_mm256_setzero_ps(); $n];
        let mut acc_m = [_mm_setzero_ps(); $n];
        for (i, xb) in x.iter().enumerate() {
            let q = {
                let $b = xb;
                $qx
            };
            for t in 0..$n {
                let yb = &ys[t][i];
                let v = _mm_cvtph_ps(_mm_set_epi16(
                    0,
                    0,
                    0,
                    0,
                    yb.s.to_bits() as i16,
                    yb.d.to_bits() as i16,
                    u16::from_le_bytes(xb.m) as i16,
                    u16::from_le_bytes(xb.d) as i16,
                ));
                let prod = _mm_mul_ps(v, _mm_movehl_ps(v, v));
                acc_m[t] = _mm_add_ps(acc_m[t], prod);
                let p = mul_sum_u8i8_f32(q, load32i(&yb.qs));
                acc[t] = _mm256_fmadd_ps(_mm256_broadcastss_ps(prod), p, acc[t]);
            }
        }
        for t in 0..$n {
            let m = _mm_cvtss_f32(_mm_movehdup_ps(acc_m[t]));
            out[t] = hsum_ps(acc[t]) + m;
        }
    }};
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0_n<const N: usize>(w: &[u8], y: &[BlockQ8_0], out: &mut [f32; N]) {
    let x: &[WBlockQ4_0] = weight_blocks(w);
    q8_0_single_loop_n!(N, x, y, out, |b| q4_0_quants(b))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0_n<const N: usize>(w: &[u8], y: &[BlockQ8_0], out: &mut [f32; N]) {
    let x: &[WBlockQ5_0] = weight_blocks(w);
    q8_0_single_loop_n!(N, x, y, out, |b| q5_0_quants(b))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0_n<const N: usize>(w: &[u8], y: &[BlockQ8_0], out: &mut [f32; N]) {
    let x: &[WBlockQ8_0] = weight_blocks(w);
    q8_0_pair_loop_n!(N, mul_sum_i8_f32_abs, x, y, out, |b| load32i(&b.qs))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_1_n<const N: usize>(w: &[u8], y: &[BlockQ8_1], out: &mut [f32; N]) {
    let x: &[WBlockQ4_1] = weight_blocks(w);
    q8_1_single_loop_n!(N, x, y, out, |b| nibbles32(&b.qs))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_1_n<const N: usize>(w: &[u8], y: &[BlockQ8_1], out: &mut [f32; N]) {
    let x: &[WBlockQ5_1] = weight_blocks(w);
    q8_1_single_loop_n!(N, x, y, out, |b| q5_1_quants(b))
}

multi_entry!(q4_0_multi, q4_0_n, BlockQ8_0, "avx2,fma,f16c");
multi_entry!(q5_0_multi, q5_0_n, BlockQ8_0, "avx2,fma,f16c");
multi_entry!(q8_0_multi, q8_0_n, BlockQ8_0, "avx2,fma,f16c");
multi_entry!(q4_1_multi, q4_1_n, BlockQ8_1, "avx2,fma,f16c");
multi_entry!(q5_1_multi, q5_1_n, BlockQ8_1, "avx2,fma,f16c");

// ---------------------------------------------------------------------------
// K-quants
// ---------------------------------------------------------------------------

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_k_impl(w: &[u8], y: &[BlockQ8_K]) -> f32 {
    let mut out = [0f32; 1];
    q4_k_n::<1>(w, y, &mut out);
    out[0]
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_k_impl(w: &[u8], y: &[BlockQ8_K]) -> f32 {
    let mut out = [0f32; 1];
    q5_k_n::<1>(w, y, &mut out);
    out[0]
}

/// `[lo x 8 | hi x 8]` as 16-bit lanes: the scales of the two 16-quant halves of a 32-quant
/// group, lined up with `maddubs`' 16 pair sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_pair16(lo: i16, hi: i16) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo))
}

/// Q2_K: 16 sub-blocks of 16 two-bit quants, each with a 4-bit scale and a 4-bit min.
/// `d * sum_k sc_k * (q . y)_k - dmin * sum_k m_k * bsum_k`, the sums exact in integers.
#[target_feature(enable = "avx2,fma,f16c")]
fn q2_k_impl(w: &[u8], y: &[BlockQ8_K]) -> f32 {
    let x: &[WBlockQ2_K] = weight_blocks(w);
    assert_eq!(x.len(), y.len());
    let m3 = _mm256_set1_epi8(3);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (xd, xmin) = f16x2(u16::from_le_bytes(xb.d), u16::from_le_bytes(xb.dmin));
        // SAFETY: `scales` is 16 readable bytes; `loadu` has no alignment requirement.
        let sc8 = unsafe { _mm_loadu_si128(xb.scales.as_ptr() as *const __m128i) };
        let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(sc8), _mm_set1_epi8(15)));
        let summ = hsum_epi32(_mm256_madd_epi16(mins, load_bsums(&yb.bsums)));
        acc_m -= yb.d * xmin * summ as f32;

        let mut sumi = _mm256_setzero_si256();
        for n in 0..2 {
            let q = load32(sub::<32, u8>(&xb.qs, 32 * n));
            for j in 0..4 {
                let qj = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j as i32)), m3);
                let y8 = load32i(sub::<32, i8>(&yb.qs, 128 * n + 32 * j));
                let k = 8 * n + 2 * j;
                let sv = scale_pair16((xb.scales[k] & 15) as i16, (xb.scales[k + 1] & 15) as i16);
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qj, y8), sv);
                sumi = _mm256_add_epi32(sumi, p);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(yb.d * xd), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) + acc_m
}

/// Q3_K: 16 sub-blocks of 16 three-bit quants (two low bits in `qs`, the third in `hmask`,
/// stored so that a clear bit means -4) with signed 6-bit scales. `q3 = q2 - 4 * !h`, so each
/// sub-block dot is `(q2 . y) - (4 * !h . y)`, both with unsigned weights for `maddubs`.
#[target_feature(enable = "avx2,fma,f16c")]
fn q3_k_impl(w: &[u8], y: &[BlockQ8_K]) -> f32 {
    let x: &[WBlockQ3_K] = weight_blocks(w);
    assert_eq!(x.len(), y.len());
    let (m3, m1) = (_mm256_set1_epi8(3), _mm256_set1_epi8(1));
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let sc = unpack_scales_q3k(&xb.scales);
        let not_h = _mm256_xor_si256(load32(&xb.hmask), _mm256_set1_epi8(-1));
        let mut sumi = _mm256_setzero_si256();
        for n in 0..2 {
            let q = load32(sub::<32, u8>(&xb.qs, 32 * n));
            for j in 0..4 {
                let q2 = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j as i32)), m3);
                let hb = _mm256_and_si256(
                    _mm256_srl_epi16(not_h, _mm_cvtsi32_si128((4 * n + j) as i32)),
                    m1,
                );
                let y8 = load32i(sub::<32, i8>(&yb.qs, 128 * n + 32 * j));
                let k = 8 * n + 2 * j;
                let sv = scale_pair16(sc[k] as i16, sc[k + 1] as i16);
                let p2 = _mm256_maddubs_epi16(q2, y8);
                let p4 = _mm256_maddubs_epi16(_mm256_slli_epi16::<2>(hb), y8);
                let p = _mm256_madd_epi16(_mm256_sub_epi16(p2, p4), sv);
                sumi = _mm256_add_epi32(sumi, p);
            }
        }
        let d = yb.d * f16_le(xb.d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_impl(w: &[u8], y: &[BlockQ8_K]) -> f32 {
    let x: &[WBlockQ6_K] = weight_blocks(w);
    assert_eq!(x.len(), y.len());
    // Byte shuffle giving [s[2g] x 8, s[2g+1] x 8] for g = 0: add 2g for the others.
    let shuf0 = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let d = yb.d * f16_le(xb.d);
        // SAFETY: `scales` is 16 readable bytes; `loadu` has no alignment requirement.
        let scales = unsafe { _mm_loadu_si128(xb.scales.as_ptr() as *const __m128i) };
        let scales16 = _mm256_cvtepi8_epi16(scales);
        // The quants are stored as q + 32: subtract 32 * sum_k(scale_k * bsum_k) at the end.
        let sub32 = _mm256_slli_epi32::<5>(_mm256_madd_epi16(load_bsums(&yb.bsums), scales16));

        let mut sumi = _mm256_setzero_si256();
        for h in 0..2 {
            let q = q6_k_quants(xb, h);
            for (k, &qk) in q.iter().enumerate() {
                let q8 = load32i(sub::<32, i8>(&yb.qs, 128 * h + 32 * k));
                let p = _mm256_maddubs_epi16(qk, q8);
                let g = (4 * h + k) as i8;
                let sv = _mm_shuffle_epi8(scales, _mm_add_epi8(shuf0, _mm_set1_epi8(2 * g)));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_cvtepi8_epi16(sv), p));
            }
        }
        let sumi = _mm256_sub_epi32(sumi, sub32);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

/// The Q4_K / Q5_K loop over `N` tokens (1 is the decode kernel): per super-block, the mins
/// term (`-dmin * sum_j min_j * bsum_j`) and the scaled integer dots of the 8 sub-blocks, whose
/// 64-quant groups `j` come from `$group(xb, j) -> (low 32, high 32)` as unsigned bytes. Integer
/// sums are exact, so interleaving tokens changes nothing; the float steps per token are fixed.
/// One Q4_K/Q5_K block's min term for one token, added to `acc_m`:
/// `-dy * dmin * sum_j m_j * (bsums[2j] + bsums[2j + 1])` (lanes summed at the end).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn k4_min_term(mins: __m128i, yb: &BlockQ8_K, xmin: f32, acc_m: __m128) -> __m128 {
    let dmin = -yb.d * xmin;
    let bs = load_bsums(&yb.bsums);
    let bs8 = _mm_hadd_epi16(
        _mm256_castsi256_si128(bs),
        _mm256_extracti128_si256::<1>(bs),
    );
    let pm = _mm_madd_epi16(mins, bs8);
    _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(pm), acc_m)
}

macro_rules! k4_loop_n {
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
            let mut sumi = [_mm256_setzero_si256(); $n];
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
                let sl = _mm256_set1_epi16(sc[2 * j] as i16);
                let sh = _mm256_set1_epi16(sc[2 * j + 1] as i16);
                for t in 0..$n {
                    let yb = &ys[t][i];
                    let q8l = load32i(sub::<32, i8>(&yb.qs, 64 * j));
                    let q8h = load32i(sub::<32, i8>(&yb.qs, 64 * j + 32));
                    let pl = _mm256_madd_epi16(_mm256_maddubs_epi16(ql, q8l), sl);
                    let ph = _mm256_madd_epi16(_mm256_maddubs_epi16(qh, q8h), sh);
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(pl, ph));
                }
            }
            for t in 0..$n {
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d[t]), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
            }
        }
        for t in 0..$n {
            out[t] = hsum_ps(acc[t]) + hsum_ps128(acc_m[t]);
        }
    }};
}

/// The low and high nibbles of the 32 bytes of group `j` of a Q4_K/Q5_K block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn k4_nibbles(qs: &[u8; 128], j: usize) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0F);
    let q4 = load32(sub::<32, u8>(qs, 32 * j));
    (
        _mm256_and_si256(q4, m4),
        _mm256_and_si256(_mm256_srli_epi16::<4>(q4), m4),
    )
}

/// Group `j` of a Q5_K block: the nibbles plus the 5th bits (bits `2j` and `2j + 1` of `qh`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_k_group(xb: &WBlockQ5_K, j: usize) -> (__m256i, __m256i) {
    let (lo, hi) = k4_nibbles(&xb.qs, j);
    let bits = _mm256_srl_epi16(load32(&xb.qh), _mm_cvtsi32_si128(2 * j as i32));
    let b16 = _mm256_set1_epi8(0x10);
    (
        _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16::<4>(bits), b16)),
        _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16::<3>(bits), b16)),
    )
}

/// Q4_K against `N` tokens.
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_k_n<const N: usize>(w: &[u8], y: &[BlockQ8_K], out: &mut [f32; N]) {
    let x: &[WBlockQ4_K] = weight_blocks(w);
    k4_loop_n!(N, x, y, out, |b, j| k4_nibbles(&b.qs, j))
}

/// Q5_K against `N` tokens.
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_k_n<const N: usize>(w: &[u8], y: &[BlockQ8_K], out: &mut [f32; N]) {
    let x: &[WBlockQ5_K] = weight_blocks(w);
    k4_loop_n!(N, x, y, out, |b, j| q5_k_group(b, j))
}

/// Multi-token [`q6_k_impl`] (integer sums exact, float steps per token as there).
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_n<const N: usize>(w: &[u8], y: &[BlockQ8_K], out: &mut [f32; N]) {
    let x: &[WBlockQ6_K] = weight_blocks(w);
    let nb = x.len();
    let ys: [&[BlockQ8_K]; N] = token_rows(y, nb);
    let shuf0 = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, xb) in x.iter().enumerate() {
        let xd = f16_le(xb.d);
        // SAFETY: `scales` is 16 readable bytes; `loadu` has no alignment requirement.
        let scales = unsafe { _mm_loadu_si128(xb.scales.as_ptr() as *const __m128i) };
        let scales16 = _mm256_cvtepi8_epi16(scales);
        let mut sumi = [_mm256_setzero_si256(); N];
        for h in 0..2 {
            let q = q6_k_quants(xb, h);
            for (k, &qk) in q.iter().enumerate() {
                let g = (4 * h + k) as i8;
                let sv = _mm_shuffle_epi8(scales, _mm_add_epi8(shuf0, _mm_set1_epi8(2 * g)));
                let sv16 = _mm256_cvtepi8_epi16(sv);
                for t in 0..N {
                    let q8 = load32i(sub::<32, i8>(&ys[t][i].qs, 128 * h + 32 * k));
                    let p = _mm256_maddubs_epi16(qk, q8);
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(sv16, p));
                }
            }
        }
        for t in 0..N {
            let yb = &ys[t][i];
            let d = yb.d * xd;
            let sub32 = _mm256_slli_epi32::<5>(_mm256_madd_epi16(load_bsums(&yb.bsums), scales16));
            let s = _mm256_sub_epi32(sumi[t], sub32);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc[t]);
        }
    }
    for t in 0..N {
        out[t] = hsum_ps(acc[t]);
    }
}

multi_entry!(q4_k_multi, q4_k_n, BlockQ8_K, "avx2,fma,f16c");
multi_entry!(q5_k_multi, q5_k_n, BlockQ8_K, "avx2,fma,f16c");
multi_entry!(q6_k_multi, q6_k_n, BlockQ8_K, "avx2,fma,f16c");

// ---------------------------------------------------------------------------
// Activation quantizers (bit-identical to crate::quant::act's references)
// ---------------------------------------------------------------------------

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_x32(xb: &[f32]) -> [__m256; 4] {
    let xb: &[f32; 32] = sub::<32, f32>(xb, 0);
    let p = xb.as_ptr();
    // SAFETY: `xb` is 32 readable f32; `loadu` has no alignment requirement.
    unsafe {
        [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ]
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn abs_max32(v: &[__m256; 4]) -> f32 {
    let sign = _mm256_set1_ps(-0.0);
    let a = _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1]));
    let b = _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3]));
    hmax_ps(_mm256_max_ps(a, b))
}

/// C `roundf` (half away from zero) of each lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn round_away(v: __m256) -> __m256 {
    let sign = _mm256_set1_ps(-0.0);
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t)); // exact
    let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
    let one = _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0));
    _mm256_add_ps(t, _mm256_and_ps(up, one))
}

/// Pack 4 x 8 i32 (each in i8 range) into 32 i8 in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pack_i8(i: [__m256i; 4]) -> __m256i {
    let a = _mm256_packs_epi32(i[0], i[1]);
    let b = _mm256_packs_epi32(i[2], i[3]);
    let c = _mm256_packs_epi16(a, b);
    _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store32i(dst: &mut [i8; 32], v: __m256i) {
    // SAFETY: `dst` is 32 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, v) }
}

/// Shared body of the Q8_0 / Q8_1 quantizers: returns (d, quants as i32 lanes).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_32(xb: &[f32]) -> (f32, [__m256i; 4]) {
    let v = load_x32(xb);
    let amax = abs_max32(&v);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let m = _mm256_set1_ps(id);
    let q = [
        _mm256_cvtps_epi32(round_away(_mm256_mul_ps(v[0], m))),
        _mm256_cvtps_epi32(round_away(_mm256_mul_ps(v[1], m))),
        _mm256_cvtps_epi32(round_away(_mm256_mul_ps(v[2], m))),
        _mm256_cvtps_epi32(round_away(_mm256_mul_ps(v[3], m))),
    ];
    (d, q)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn quant_q8_0_impl(x: &[f32], y: &mut [BlockQ8_0]) {
    assert_eq!(
        x.len(),
        y.len() * QK8_0,
        "quantize_row_q8_0: length mismatch"
    );
    for (xb, yb) in x.chunks_exact(QK8_0).zip(y.iter_mut()) {
        let (d, q) = q8_32(xb);
        yb.d = f16_of(d);
        store32i(&mut yb.qs, pack_i8(q));
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn quant_q8_1_impl(x: &[f32], y: &mut [BlockQ8_1]) {
    assert_eq!(
        x.len(),
        y.len() * QK8_1,
        "quantize_row_q8_1: length mismatch"
    );
    for (xb, yb) in x.chunks_exact(QK8_1).zip(y.iter_mut()) {
        let (d, q) = q8_32(xb);
        yb.d = f16_of(d);
        let sum = hsum_epi32(_mm256_add_epi32(
            _mm256_add_epi32(q[0], q[1]),
            _mm256_add_epi32(q[2], q[3]),
        ));
        yb.s = f16_of(sum as f32 * d);
        store32i(&mut yb.qs, pack_i8(q));
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn quant_q8_k_impl(x: &[f32], y: &mut [BlockQ8_K]) {
    assert_eq!(
        x.len(),
        y.len() * QK_K,
        "quantize_row_q8_k: length mismatch"
    );
    let sign = _mm256_set1_ps(-0.0);
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let mut vmax = _mm256_setzero_ps();
        for c in 0..8 {
            let v = load_x32(&xb[32 * c..32 * c + 32]);
            for vk in v {
                vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, vk));
            }
        }
        let amax = hmax_ps(vmax);
        if amax == 0.0 {
            yb.d = 0.0;
            yb.qs = [0; QK_K];
            yb.bsums = [0; QK_K / 16];
            continue;
        }
        // The reference keeps the first value of largest magnitude (its sign matters).
        let target = _mm256_set1_ps(amax);
        let mut max = 0.0f32;
        for c in 0..32 {
            let xs: &[f32; 8] = sub::<8, f32>(xb, 8 * c);
            // SAFETY: `xs` is 8 readable f32; `loadu` has no alignment requirement.
            let v = unsafe { _mm256_loadu_ps(xs.as_ptr()) };
            let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(
                _mm256_andnot_ps(sign, v),
                target,
            ));
            if hit != 0 {
                max = xs[hit.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0f32 / max;
        let m = _mm256_set1_ps(iscale);
        let lim = _mm256_set1_epi32(127);
        for c in 0..8 {
            let v = load_x32(&xb[32 * c..32 * c + 32]);
            let mut q = [_mm256_setzero_si256(); 4];
            for (qk, vk) in q.iter_mut().zip(v) {
                let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm256_mul_ps(vk, m),
                );
                *qk = _mm256_min_epi32(_mm256_cvtps_epi32(r), lim);
            }
            store32i(sub_mut::<32, i8>(&mut yb.qs, 32 * c), pack_i8(q));
        }
        for (j, s) in yb.bsums.iter_mut().enumerate() {
            *s = yb.qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
        }
        yb.d = 1.0 / iscale;
    }
}

#[inline(always)]
fn sub_mut<const N: usize, T>(s: &mut [T], off: usize) -> &mut [T; N] {
    (&mut s[off..off + N]).try_into().unwrap()
}
