//! Scalar reference dequantizers, bit-exact with ggml's `dequantize_row_*`
//! (same float operations in the same order; Rust never contracts to FMA).

// Index loops mirror ggml's C so the two can be read side by side.
#![allow(clippy::needless_range_loop)]

use super::blocks::*;
use super::types::GgmlType;

/// Scalar reference: dequantize `dst.len()` weights from `src` (exactly `row_bytes(dst.len())` bytes).
///
/// Panics when `src.len()` is not `ty.row_bytes(dst.len())`.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    let n = dst.len();
    let want = ty.row_bytes(n);
    assert!(
        want == Some(src.len()),
        "dequantize_row({ty}): {n} weights need {want:?} bytes, got {}",
        src.len()
    );
    match ty {
        GgmlType::F32 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16_le([c[0], c[1]]);
            }
        }
        GgmlType::BF16 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16_le([c[0], c[1]]);
            }
        }
        GgmlType::I8 => {
            for (o, &c) in dst.iter_mut().zip(src) {
                *o = c as i8 as f32;
            }
        }
        GgmlType::Q4_0 => q4_0(weight_blocks(src), dst),
        GgmlType::Q4_1 => q4_1(weight_blocks(src), dst),
        GgmlType::Q5_0 => q5_0(weight_blocks(src), dst),
        GgmlType::Q5_1 => q5_1(weight_blocks(src), dst),
        GgmlType::Q8_0 => q8_0(weight_blocks(src), dst),
        GgmlType::Q8_1 => q8_1(weight_blocks(src), dst),
        GgmlType::Q2_K => q2_k(weight_blocks(src), dst),
        GgmlType::Q3_K => q3_k(weight_blocks(src), dst),
        GgmlType::Q4_K => q4_k(weight_blocks(src), dst),
        GgmlType::Q5_K => q5_k(weight_blocks(src), dst),
        GgmlType::Q6_K => q6_k(weight_blocks(src), dst),
        GgmlType::Q8_K => q8_k(weight_blocks(src), dst),
    }
}

fn q4_0(x: &[WBlockQ4_0], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = b.d();
        for j in 0..16 {
            let x0 = (b.qs[j] & 0x0F) as i32 - 8;
            let x1 = (b.qs[j] >> 4) as i32 - 8;
            y[j] = x0 as f32 * d;
            y[j + 16] = x1 as f32 * d;
        }
    }
}

fn q4_1(x: &[WBlockQ4_1], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = b.d();
        let m = b.m();
        for j in 0..16 {
            let x0 = (b.qs[j] & 0x0F) as i32;
            let x1 = (b.qs[j] >> 4) as i32;
            y[j] = x0 as f32 * d + m;
            y[j + 16] = x1 as f32 * d + m;
        }
    }
}

fn q5_0(x: &[WBlockQ5_0], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = b.d();
        let qh = b.qh();
        for j in 0..16 {
            let xh0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
            let x0 = ((b.qs[j] & 0x0F) | xh0) as i32 - 16;
            let x1 = ((b.qs[j] >> 4) | xh1) as i32 - 16;
            y[j] = x0 as f32 * d;
            y[j + 16] = x1 as f32 * d;
        }
    }
}

fn q5_1(x: &[WBlockQ5_1], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = b.d();
        let m = b.m();
        let qh = b.qh();
        for j in 0..16 {
            let xh0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
            let x0 = ((b.qs[j] & 0x0F) | xh0) as i32;
            let x1 = ((b.qs[j] >> 4) | xh1) as i32;
            y[j] = x0 as f32 * d + m;
            y[j + 16] = x1 as f32 * d + m;
        }
    }
}

fn q8_0(x: &[WBlockQ8_0], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = b.d();
        for j in 0..32 {
            y[j] = b.qs[j] as f32 * d;
        }
    }
}

fn q8_1(x: &[WBlockQ8_1], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = b.d();
        for j in 0..32 {
            y[j] = b.qs[j] as f32 * d;
        }
    }
}

fn q2_k(x: &[WBlockQ2_K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d();
        let min = b.dmin();
        let mut o = 0;
        let mut is = 0;
        for half in 0..2 {
            let q = &b.qs[half * 32..half * 32 + 32];
            for shift in [0u32, 2, 4, 6] {
                for part in 0..2 {
                    let sc = b.scales[is];
                    is += 1;
                    let dl = d * (sc & 0xF) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for l in 0..16 {
                        y[o] = dl * ((q[part * 16 + l] >> shift) & 3) as f32 - ml;
                        o += 1;
                    }
                }
            }
        }
    }
}

fn q3_k(x: &[WBlockQ3_K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d_all = b.d();
        let scales = unpack_scales_q3k(&b.scales);
        let mut o = 0;
        let mut is = 0;
        let mut m: u8 = 1;
        for half in 0..2 {
            let q = &b.qs[half * 32..half * 32 + 32];
            for shift in [0u32, 2, 4, 6] {
                for part in 0..2 {
                    let dl = d_all * scales[is] as f32;
                    is += 1;
                    for l in part * 16..part * 16 + 16 {
                        let lo = ((q[l] >> shift) & 3) as i32;
                        let hi = if b.hmask[l] & m != 0 { 0 } else { 4 };
                        y[o] = dl * (lo - hi) as f32;
                        o += 1;
                    }
                }
                m = m.wrapping_shl(1);
            }
        }
    }
}

fn q4_k(x: &[WBlockQ4_K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d();
        let min = b.dmin();
        let (sc, mn) = unpack_scales_k4(&b.scales);
        for j in 0..4 {
            let q = &b.qs[j * 32..j * 32 + 32];
            let d1 = d * sc[2 * j] as f32;
            let m1 = min * mn[2 * j] as f32;
            let d2 = d * sc[2 * j + 1] as f32;
            let m2 = min * mn[2 * j + 1] as f32;
            let y = &mut y[j * 64..j * 64 + 64];
            for l in 0..32 {
                y[l] = d1 * (q[l] & 0xF) as f32 - m1;
                y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

fn q5_k(x: &[WBlockQ5_K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d();
        let min = b.dmin();
        let (sc, mn) = unpack_scales_k4(&b.scales);
        for j in 0..4 {
            let ql = &b.qs[j * 32..j * 32 + 32];
            let u1 = 1u8 << (2 * j);
            let u2 = 2u8 << (2 * j);
            let d1 = d * sc[2 * j] as f32;
            let m1 = min * mn[2 * j] as f32;
            let d2 = d * sc[2 * j + 1] as f32;
            let m2 = min * mn[2 * j + 1] as f32;
            let y = &mut y[j * 64..j * 64 + 64];
            for l in 0..32 {
                let h1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
                y[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
                y[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
            }
        }
    }
}

fn q6_k(x: &[WBlockQ6_K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d();
        for half in 0..2 {
            let ql = &b.ql[half * 64..half * 64 + 64];
            let qh = &b.qh[half * 32..half * 32 + 32];
            let sc = &b.scales[half * 8..half * 8 + 8];
            let y = &mut y[half * 128..half * 128 + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                y[l] = d * sc[is] as f32 * q1 as f32;
                y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

fn q8_k(x: &[WBlockQ8_K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d();
        for j in 0..QK_K {
            y[j] = d * b.qs[j] as f32;
        }
    }
}

/// Dequantize one row of Q8_0 activation blocks (test/reference helper).
pub fn dequantize_q8_0_act(x: &[BlockQ8_0], y: &mut [f32]) {
    assert_eq!(x.len() * QK8_0, y.len());
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK8_0)) {
        let d = b.d.to_f32();
        for j in 0..QK8_0 {
            y[j] = b.qs[j] as f32 * d;
        }
    }
}

/// Dequantize one row of Q8_1 activation blocks (test/reference helper).
pub fn dequantize_q8_1_act(x: &[BlockQ8_1], y: &mut [f32]) {
    assert_eq!(x.len() * QK8_1, y.len());
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK8_1)) {
        let d = b.d.to_f32();
        for j in 0..QK8_1 {
            y[j] = b.qs[j] as f32 * d;
        }
    }
}

/// Dequantize one row of Q8_K activation blocks (test/reference helper).
pub fn dequantize_q8_k_act(x: &[BlockQ8_K], y: &mut [f32]) {
    assert_eq!(x.len() * QK_K, y.len());
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        for j in 0..QK_K {
            y[j] = b.d * b.qs[j] as f32;
        }
    }
}
