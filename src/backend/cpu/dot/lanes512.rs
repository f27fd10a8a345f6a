//! AVX-512 VNNI "tokens in lanes" prefill kernels over a [`TokenLanes`] group: `R` weight rows
//! × [`LANE_TOKENS`] tokens per call.
//!
//! Each weight block is decoded once per row into unsigned bytes and kept on the stack; every
//! four of them are broadcast to all 16 lanes and `vpdpbusd`ed with the same four quants of the
//! 16 tokens, so the activation vector loaded for a quad serves all `R` rows and each 32-bit
//! lane ends the block holding its token's exact integer block sum. Signed weights are offset
//! into unsigned bytes (`q ^ 0x80 = q + 128`) and the offset is taken back exactly with the
//! block sums (`Σ (q + 128) a − 128 Σ a`); Q6_K's `q − 32` and the K-quant minimums likewise use
//! the activation sums. The float work — one convert, one scale product and one FMA per block
//! and row — covers 16 tokens at once.
//!
//! The results equal the scalar reference up to f32 rounding (they are not bit-identical to
//! the single-token kernels, which accumulate per-lane partial sums in float).
//!
//! Safety model as in `avx2.rs`: safe `#[target_feature]` functions, handed out only by
//! [`install`] (an `unsafe fn`), which checks AVX512-VNNI itself.

use std::arch::x86_64::*;

use super::avx2::{f16x2, k4_nibbles, nibbles32, q4_0_quants, q5_k_group};
use super::avx512::{nibbles_bit5, q5_0_quants_masked};
use super::lanes::{LaneGroup, Lanes, LANE_TOKENS};
use super::DotKernels;
use crate::quant::blocks::*;

/// Install the lane kernels into `k`.
///
/// # Safety
/// The running CPU must support AVX-512 F, BW and VL as well as AVX2, FMA and F16C.
pub(super) unsafe fn install(k: &mut DotKernels) {
    if std::arch::is_x86_feature_detected!("avx512vnni") {
        k.q4_0_l = Some(q4_0_lanes);
        k.q5_0_l = Some(q5_0_lanes);
        k.q4_1_l = Some(q4_1_lanes);
        k.q5_1_l = Some(q5_1_lanes);
        k.q4_k_l = Some(q4_k_lanes);
        k.q5_k_l = Some(q5_k_lanes);
    }
}

/// Most weight rows one call takes (`out.len()`); the matmul hands them in pairs.
pub const MAX_LANE_ROWS: usize = 4;

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn load_i(v: &Lanes<i32>) -> __m512i {
    // SAFETY: `Lanes` is 64 readable, 64-byte aligned bytes.
    unsafe { _mm512_load_si512(v.0.as_ptr() as *const _) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn load_f(v: &Lanes<f32>) -> __m512 {
    // SAFETY: `Lanes` is 64 readable, 64-byte aligned bytes.
    unsafe { _mm512_load_ps(v.0.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn store_f(v: __m512, out: &mut Lanes<f32>) {
    // SAFETY: `Lanes` is 64 writable, 64-byte aligned bytes.
    unsafe { _mm512_store_ps(out.0.as_mut_ptr(), v) }
}

/// 32 decoded weight bytes into quads `at..at + 8` of `wq`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn put32(wq: &mut [i32], at: usize, q: __m256i) {
    let dst = &mut wq[at..at + 8];
    // SAFETY: `dst` is 8 writable i32 (32 bytes); `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, q) }
}

/// `dpbusd(acc, broadcast(w), a)`: one quad of one row against 16 tokens.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn dp(acc: __m512i, w: &i32, a: __m512i) -> __m512i {
    _mm512_dpbusd_epi32(acc, _mm512_set1_epi32(*w), a)
}

/// The exact integer sums of one 32-value block of each of `R` rows (`wq[r]`, eight quads of
/// unsigned bytes) against the block's eight activation quads of 16 tokens, one token per lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn block_isums<const R: usize>(wq: &[[i32; 8]; R], quads: &[Lanes<i32>]) -> [__m512i; R] {
    // Two independent chains per row: `vpdpbusd`'s latency, not its throughput, would bound
    // one chain of eight.
    let mut even = [_mm512_setzero_si512(); R];
    let mut odd = [_mm512_setzero_si512(); R];
    for k in 0..4 {
        let (a0, a1) = (load_i(&quads[2 * k]), load_i(&quads[2 * k + 1]));
        for r in 0..R {
            even[r] = dp(even[r], &wq[r][2 * k], a0);
            odd[r] = dp(odd[r], &wq[r][2 * k + 1], a1);
        }
    }
    std::array::from_fn(|r| _mm512_add_epi32(even[r], odd[r]))
}

/// The decoded quads as memory the optimizer must re-read. Kept in registers, each broadcast
/// becomes two or three shuffles on the one shuffle port; from memory it is a load-port
/// `vpbroadcastd`, which costs no ALU slot at all.
#[inline(always)]
fn spilled<T>(wq: &mut T) -> &T {
    std::hint::black_box(wq)
}

/// Split raw bytes holding `R` consecutive rows into each row's blocks.
#[inline]
pub(super) fn rows_of<B: WeightBlock, const R: usize>(w: &[u8]) -> [&[B]; R] {
    assert!(
        w.len().is_multiple_of(R),
        "{} bytes of weights for {R} rows",
        w.len()
    );
    let row_bytes = w.len() / R;
    std::array::from_fn(|r| weight_blocks(&w[r * row_bytes..(r + 1) * row_bytes]))
}

/// The `R`-row entry point of a kernel generic over the row count.
macro_rules! lane_entry {
    ($name:ident, $kern:ident) => {
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        fn $name(w: &[u8], g: LaneGroup<'_>, out: &mut [Lanes<f32>]) {
            match out.len() {
                1 => $kern::<1>(rows_of(w), g, out.try_into().unwrap()),
                2 => $kern::<2>(rows_of(w), g, out.try_into().unwrap()),
                3 => $kern::<3>(rows_of(w), g, out.try_into().unwrap()),
                4 => $kern::<4>(rows_of(w), g, out.try_into().unwrap()),
                n => panic!("lane dot: {n} rows (1 to {MAX_LANE_ROWS} per call)"),
            }
        }
    };
}

/// 32-value blocks whose `qx(block)` quants are signed, with Q8_0 activations.
macro_rules! lanes_signed32 {
    ($R:ident, $x:expr, $g:expr, $out:expr, |$b:ident| $qx:expr) => {{
        let (x, g, out): ([&[_]; $R], LaneGroup<'_>, &mut [Lanes<f32>; $R]) = ($x, $g, $out);
        let nb = x[0].len();
        assert!(
            g.quads.len() == nb * 8 && g.d.len() == nb && g.sums.len() == nb,
            "lane dot: shape mismatch"
        );
        let mut acc = [_mm512_setzero_ps(); $R];
        let mut wq = [[0i32; 8]; $R];
        for i in 0..nb {
            for r in 0..$R {
                let q = {
                    let $b = &x[r][i];
                    $qx
                };
                put32(&mut wq[r], 0, _mm256_xor_si256(q, _mm256_set1_epi8(-128)));
            }
            let isum = block_isums(spilled(&mut wq), &g.quads[8 * i..8 * i + 8]);
            // Σ (q + 128) a − 128 Σ a = Σ q a, exactly.
            let bias = _mm512_slli_epi32::<7>(load_i(&g.sums[i]));
            let da = load_f(&g.d[i]);
            for r in 0..$R {
                let dx = f16x2(u16::from_le_bytes(x[r][i].d), 0).0;
                let s = _mm512_mul_ps(_mm512_set1_ps(dx), da);
                let p = _mm512_cvtepi32_ps(_mm512_sub_epi32(isum[r], bias));
                acc[r] = _mm512_fmadd_ps(p, s, acc[r]);
            }
        }
        for r in 0..$R {
            store_f(acc[r], &mut out[r]);
        }
    }};
}

/// 32-value blocks with unsigned quants `qx(block)` and a minimum `m`, with Q8_1 activations.
macro_rules! lanes_unsigned32 {
    ($R:ident, $x:expr, $g:expr, $out:expr, |$b:ident| $qx:expr) => {{
        let (x, g, out): ([&[_]; $R], LaneGroup<'_>, &mut [Lanes<f32>; $R]) = ($x, $g, $out);
        let nb = x[0].len();
        assert!(
            g.quads.len() == nb * 8 && g.d.len() == nb && g.s.len() == nb,
            "lane dot: shape mismatch"
        );
        let mut acc = [_mm512_setzero_ps(); $R];
        let mut wq = [[0i32; 8]; $R];
        for i in 0..nb {
            for r in 0..$R {
                let q = {
                    let $b = &x[r][i];
                    $qx
                };
                put32(&mut wq[r], 0, q);
            }
            let isum = block_isums(spilled(&mut wq), &g.quads[8 * i..8 * i + 8]);
            let (da, sa) = (load_f(&g.d[i]), load_f(&g.s[i]));
            for r in 0..$R {
                let (dx, mx) = f16x2(u16::from_le_bytes(x[r][i].d), u16::from_le_bytes(x[r][i].m));
                let s = _mm512_mul_ps(_mm512_set1_ps(dx), da);
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r]), s, acc[r]);
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(mx), sa, acc[r]);
            }
        }
        for r in 0..$R {
            store_f(acc[r], &mut out[r]);
        }
    }};
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_0_r<const R: usize>(x: [&[WBlockQ4_0]; R], g: LaneGroup<'_>, out: &mut [Lanes<f32>; R]) {
    lanes_signed32!(R, x, g, out, |b| q4_0_quants(b))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_0_r<const R: usize>(x: [&[WBlockQ5_0]; R], g: LaneGroup<'_>, out: &mut [Lanes<f32>; R]) {
    lanes_signed32!(R, x, g, out, |b| q5_0_quants_masked(b))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_1_r<const R: usize>(x: [&[WBlockQ4_1]; R], g: LaneGroup<'_>, out: &mut [Lanes<f32>; R]) {
    lanes_unsigned32!(R, x, g, out, |b| nibbles32(&b.qs))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_1_r<const R: usize>(x: [&[WBlockQ5_1]; R], g: LaneGroup<'_>, out: &mut [Lanes<f32>; R]) {
    lanes_unsigned32!(R, x, g, out, |b| nibbles_bit5(&b.qs, b.qh))
}

lane_entry!(q4_0_lanes, q4_0_r);
lane_entry!(q5_0_lanes, q5_0_r);
lane_entry!(q4_1_lanes, q4_1_r);
lane_entry!(q5_1_lanes, q5_1_r);

/// Q4_K / Q5_K: `groups(block, j)` gives the unsigned quants of 32-value groups `2j`, `2j + 1`.
/// Per super-block: `d_a (d Σ_j sc_j Σ q a − dmin Σ_j m_j Σ a)`, both sums exact integers.
macro_rules! lanes_k4 {
    ($R:ident, $x:expr, $g:expr, $out:expr, |$b:ident, $j:ident| $groups:expr) => {{
        let (x, g, out): ([&[_]; $R], LaneGroup<'_>, &mut [Lanes<f32>; $R]) = ($x, $g, $out);
        let nb = x[0].len();
        assert!(
            g.quads.len() == nb * 64 && g.d.len() == nb && g.sums.len() == nb * 16,
            "lane dot: shape mismatch"
        );
        let mut acc = [_mm512_setzero_ps(); $R];
        let mut acc_m = [_mm512_setzero_ps(); $R];
        let mut wq = [[0i32; 64]; $R];
        for i in 0..nb {
            let mut sc = [[0u8; 8]; $R];
            let mut mn = [[0u8; 8]; $R];
            for r in 0..$R {
                let $b = &x[r][i];
                for $j in 0..4 {
                    let (lo, hi) = $groups;
                    put32(&mut wq[r], 16 * $j, lo);
                    put32(&mut wq[r], 16 * $j + 8, hi);
                }
                (sc[r], mn[r]) = unpack_scales_k4(&$b.scales);
            }
            let wqm = spilled(&mut wq);
            let quads = &g.quads[64 * i..64 * (i + 1)];
            let sums = &g.sums[16 * i..16 * (i + 1)];
            let mut isum = [_mm512_setzero_si512(); $R];
            let mut imin = [_mm512_setzero_si512(); $R];
            for j in 0..8 {
                let mut even = [_mm512_setzero_si512(); $R];
                let mut odd = [_mm512_setzero_si512(); $R];
                for k in 0..4 {
                    let (a0, a1) = (
                        load_i(&quads[8 * j + 2 * k]),
                        load_i(&quads[8 * j + 2 * k + 1]),
                    );
                    for r in 0..$R {
                        even[r] = dp(even[r], &wqm[r][8 * j + 2 * k], a0);
                        odd[r] = dp(odd[r], &wqm[r][8 * j + 2 * k + 1], a1);
                    }
                }
                let sub: [__m512i; $R] = std::array::from_fn(|r| _mm512_add_epi32(even[r], odd[r]));
                let bs = _mm512_add_epi32(load_i(&sums[2 * j]), load_i(&sums[2 * j + 1]));
                for r in 0..$R {
                    let s = _mm512_set1_epi32(sc[r][j] as i32);
                    isum[r] = _mm512_add_epi32(isum[r], _mm512_mullo_epi32(sub[r], s));
                    let m = _mm512_set1_epi32(mn[r][j] as i32);
                    imin[r] = _mm512_add_epi32(imin[r], _mm512_mullo_epi32(bs, m));
                }
            }
            let da = load_f(&g.d[i]);
            for r in 0..$R {
                let (d, dmin) = f16x2(
                    u16::from_le_bytes(x[r][i].d),
                    u16::from_le_bytes(x[r][i].dmin),
                );
                let sd = _mm512_mul_ps(_mm512_set1_ps(d), da);
                let sm = _mm512_mul_ps(_mm512_set1_ps(dmin), da);
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r]), sd, acc[r]);
                acc_m[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin[r]), sm, acc_m[r]);
            }
        }
        // The minimum terms in their own sum, subtracted once at the end (as llama.cpp's
        // repacked Q4_K GEMM does).
        for r in 0..$R {
            store_f(_mm512_sub_ps(acc[r], acc_m[r]), &mut out[r]);
        }
    }};
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_k_r<const R: usize>(x: [&[WBlockQ4_K]; R], g: LaneGroup<'_>, out: &mut [Lanes<f32>; R]) {
    lanes_k4!(R, x, g, out, |b, j| k4_nibbles(&b.qs, j))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_k_r<const R: usize>(x: [&[WBlockQ5_K]; R], g: LaneGroup<'_>, out: &mut [Lanes<f32>; R]) {
    lanes_k4!(R, x, g, out, |b, j| q5_k_group(b, j))
}

lane_entry!(q4_k_lanes, q4_k_r);
lane_entry!(q5_k_lanes, q5_k_r);

const _: () = assert!(
    LANE_TOKENS == 16,
    "one token per 32-bit lane of a 512-bit vector"
);
