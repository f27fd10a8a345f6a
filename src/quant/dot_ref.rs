//! Scalar reference fused dots: one weight row (raw bytes, any alignment) with one
//! activation row. Quantized weights are dotted with Q8 activations in integer
//! arithmetic per block, then scaled (the structure of ggml's `ggml_vec_dot_*_generic`);
//! float weights are dotted with f32 activations with f32 accumulation.
//!
//! Every function panics when the activation row does not hold as many blocks as the
//! weight row.

// Index loops mirror ggml's C so the two can be read side by side.
#![allow(clippy::needless_range_loop)]

use super::blocks::*;

#[inline]
fn check(w_blocks: usize, a_blocks: usize) {
    assert_eq!(
        w_blocks, a_blocks,
        "fused dot: weight row has {w_blocks} blocks, activation row {a_blocks}"
    );
}

/// Eight independent partial sums so the compiler can keep them in one vector register.
#[inline(always)]
fn hsum8(acc: [f32; 8]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// F32 weight row (little-endian bytes) · f32 activations, accumulated in eight interleaved
/// f32 partial sums (so the order differs from a plain left-to-right sum).
pub fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
    check(w.len() / 4, x.len());
    assert_eq!(w.len() % 4, 0);
    let mut acc = [0.0f32; 8];
    let mut wc = w.chunks_exact(32);
    let mut xc = x.chunks_exact(8);
    for (wb, xb) in (&mut wc).zip(&mut xc) {
        for l in 0..8 {
            let v = f32::from_le_bytes([wb[4 * l], wb[4 * l + 1], wb[4 * l + 2], wb[4 * l + 3]]);
            acc[l] += v * xb[l];
        }
    }
    let mut s = hsum8(acc);
    for (wb, &xv) in wc.remainder().chunks_exact(4).zip(xc.remainder()) {
        s += f32::from_le_bytes([wb[0], wb[1], wb[2], wb[3]]) * xv;
    }
    s
}

/// F16 weight row · f32 activations; each weight widened to f32, eight interleaved partial sums.
pub fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    check(w.len() / 2, x.len());
    assert_eq!(w.len() % 2, 0);
    let mut acc = [0.0f32; 8];
    let mut wc = w.chunks_exact(16);
    let mut xc = x.chunks_exact(8);
    for (wb, xb) in (&mut wc).zip(&mut xc) {
        for l in 0..8 {
            acc[l] += f16_le([wb[2 * l], wb[2 * l + 1]]) * xb[l];
        }
    }
    let mut s = hsum8(acc);
    for (wb, &xv) in wc.remainder().chunks_exact(2).zip(xc.remainder()) {
        s += f16_le([wb[0], wb[1]]) * xv;
    }
    s
}

/// BF16 weight row · f32 activations; each weight widened to f32, eight interleaved partial sums.
pub fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
    check(w.len() / 2, x.len());
    assert_eq!(w.len() % 2, 0);
    let mut acc = [0.0f32; 8];
    let mut wc = w.chunks_exact(16);
    let mut xc = x.chunks_exact(8);
    for (wb, xb) in (&mut wc).zip(&mut xc) {
        for l in 0..8 {
            let v = f32::from_bits((u16::from_le_bytes([wb[2 * l], wb[2 * l + 1]]) as u32) << 16);
            acc[l] += v * xb[l];
        }
    }
    let mut s = hsum8(acc);
    for (wb, &xv) in wc.remainder().chunks_exact(2).zip(xc.remainder()) {
        s += bf16_le([wb[0], wb[1]]) * xv;
    }
    s
}

/// Q4_0 weight row · Q8_0 activations: per block `d_w * d_a * Σ (q - 8) * a`.
pub fn dot_q4_0(w: &[u8], y: &[BlockQ8_0]) -> f32 {
    let x: &[WBlockQ4_0] = weight_blocks(w);
    check(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let v0 = (xb.qs[j] & 0x0F) as i32 - 8;
            let v1 = (xb.qs[j] >> 4) as i32 - 8;
            sumi += v0 * yb.qs[j] as i32 + v1 * yb.qs[j + 16] as i32;
        }
        sumf += sumi as f32 * (xb.d() * yb.d.to_f32());
    }
    sumf
}

/// Q4_1 weight row · Q8_1 activations: per block `d_w * d_a * Σ q * a + m * s_a`.
pub fn dot_q4_1(w: &[u8], y: &[BlockQ8_1]) -> f32 {
    let x: &[WBlockQ4_1] = weight_blocks(w);
    check(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let v0 = (xb.qs[j] & 0x0F) as i32;
            let v1 = (xb.qs[j] >> 4) as i32;
            sumi += v0 * yb.qs[j] as i32 + v1 * yb.qs[j + 16] as i32;
        }
        sumf += (xb.d() * yb.d.to_f32()) * sumi as f32 + xb.m() * yb.s.to_f32();
    }
    sumf
}

/// Q5_0 weight row · Q8_0 activations: per block `d_w * d_a * Σ (q - 16) * a`.
pub fn dot_q5_0(w: &[u8], y: &[BlockQ8_0]) -> f32 {
    let x: &[WBlockQ5_0] = weight_blocks(w);
    check(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let qh = xb.qh();
        let mut sumi = 0i32;
        for j in 0..16 {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            let v0 = ((xb.qs[j] & 0x0F) | h0) as i32 - 16;
            let v1 = ((xb.qs[j] >> 4) | h1) as i32 - 16;
            sumi += v0 * yb.qs[j] as i32 + v1 * yb.qs[j + 16] as i32;
        }
        sumf += (xb.d() * yb.d.to_f32()) * sumi as f32;
    }
    sumf
}

/// Q5_1 weight row · Q8_1 activations: per block `d_w * d_a * Σ q * a + m * s_a`.
pub fn dot_q5_1(w: &[u8], y: &[BlockQ8_1]) -> f32 {
    let x: &[WBlockQ5_1] = weight_blocks(w);
    check(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let qh = xb.qh();
        let mut sumi = 0i32;
        for j in 0..16 {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            let v0 = ((xb.qs[j] & 0x0F) | h0) as i32;
            let v1 = ((xb.qs[j] >> 4) | h1) as i32;
            sumi += v0 * yb.qs[j] as i32 + v1 * yb.qs[j + 16] as i32;
        }
        sumf += (xb.d() * yb.d.to_f32()) * sumi as f32 + xb.m() * yb.s.to_f32();
    }
    sumf
}

/// Q8_0 weight row · Q8_0 activations: per block `d_w * d_a * Σ q * a`.
pub fn dot_q8_0(w: &[u8], y: &[BlockQ8_0]) -> f32 {
    let x: &[WBlockQ8_0] = weight_blocks(w);
    check(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..32 {
            sumi += xb.qs[j] as i32 * yb.qs[j] as i32;
        }
        sumf += sumi as f32 * (xb.d() * yb.d.to_f32());
    }
    sumf
}

/// Q8_1 weight row · Q8_1 activations (the activation sum `s` is not needed: no weight min).
pub fn dot_q8_1(w: &[u8], y: &[BlockQ8_1]) -> f32 {
    let x: &[WBlockQ8_1] = weight_blocks(w);
    check(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..32 {
            sumi += xb.qs[j] as i32 * yb.qs[j] as i32;
        }
        sumf += sumi as f32 * (xb.d() * yb.d.to_f32());
    }
    sumf
}

/// Q2_K weight row · Q8_K activations; the mins are applied through the activation `bsums`.
pub fn dot_q2_k(w: &[u8], y: &[BlockQ8_K]) -> f32 {
    let x: &[WBlockQ2_K] = weight_blocks(w);
    check(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let sc = &xb.scales;
        let mut summs = 0i32;
        for j in 0..16 {
            summs += yb.bsums[j] as i32 * (sc[j] >> 4) as i32;
        }
        let dall = yb.d * xb.d();
        let dmin = yb.d * xb.dmin();
        let mut isum = 0i32;
        let mut is = 0;
        let mut q8 = 0;
        for half in 0..2 {
            let q2 = &xb.qs[half * 32..half * 32 + 32];
            for shift in [0u32, 2, 4, 6] {
                for part in 0..2 {
                    let d = (sc[is] & 0xF) as i32;
                    is += 1;
                    let mut isuml = 0i32;
                    for l in part * 16..part * 16 + 16 {
                        isuml += yb.qs[q8 + l] as i32 * ((q2[l] >> shift) & 3) as i32;
                    }
                    isum += d * isuml;
                }
                q8 += 32;
            }
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// Q3_K weight row · Q8_K activations.
pub fn dot_q3_k(w: &[u8], y: &[BlockQ8_K]) -> f32 {
    let x: &[WBlockQ3_K] = weight_blocks(w);
    check(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let scales = unpack_scales_q3k(&xb.scales);
        let mut isum = 0i32;
        let mut m: u32 = 1;
        let mut is = 0;
        let mut q8 = 0;
        for half in 0..2 {
            let q3 = &xb.qs[half * 32..half * 32 + 32];
            for shift in [0u32, 2, 4, 6] {
                for part in 0..2 {
                    let mut isuml = 0i32;
                    for l in part * 16..part * 16 + 16 {
                        let lo = ((q3[l] >> shift) & 3) as i32;
                        let hi = if xb.hmask[l] as u32 & m != 0 { 0 } else { 4 };
                        isuml += yb.qs[q8 + l] as i32 * (lo - hi);
                    }
                    isum += scales[is] as i32 * isuml;
                    is += 1;
                }
                q8 += 32;
                m <<= 1;
            }
        }
        sumf += (xb.d() * yb.d) * isum as f32;
    }
    sumf
}

/// Q4_K weight row · Q8_K activations; the mins are applied through the activation `bsums`.
pub fn dot_q4_k(w: &[u8], y: &[BlockQ8_K]) -> f32 {
    let x: &[WBlockQ4_K] = weight_blocks(w);
    check(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (sc, mn) = unpack_scales_k4(&xb.scales);
        let mut summs = 0i32;
        for j in 0..16 {
            summs += yb.bsums[j] as i32 * mn[j / 2] as i32;
        }
        let mut isum = 0i32;
        for j in 0..4 {
            let q4 = &xb.qs[j * 32..j * 32 + 32];
            let q8 = &yb.qs[j * 64..j * 64 + 64];
            let mut lo = 0i32;
            let mut hi = 0i32;
            for l in 0..32 {
                lo += (q4[l] & 0xF) as i32 * q8[l] as i32;
                hi += (q4[l] >> 4) as i32 * q8[l + 32] as i32;
            }
            isum += sc[2 * j] as i32 * lo + sc[2 * j + 1] as i32 * hi;
        }
        let d = xb.d() * yb.d;
        let dmin = xb.dmin() * yb.d;
        sumf += d * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// Q5_K weight row · Q8_K activations; the mins are applied through the activation `bsums`.
pub fn dot_q5_k(w: &[u8], y: &[BlockQ8_K]) -> f32 {
    let x: &[WBlockQ5_K] = weight_blocks(w);
    check(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (sc, mn) = unpack_scales_k4(&xb.scales);
        let mut summs = 0i32;
        for j in 0..16 {
            summs += yb.bsums[j] as i32 * mn[j / 2] as i32;
        }
        let mut isum = 0i32;
        for j in 0..4 {
            let q4 = &xb.qs[j * 32..j * 32 + 32];
            let q8 = &yb.qs[j * 64..j * 64 + 64];
            let u1 = 1u8 << (2 * j);
            let u2 = 2u8 << (2 * j);
            let mut lo = 0i32;
            let mut hi = 0i32;
            for l in 0..32 {
                let h1 = if xb.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if xb.qh[l] & u2 != 0 { 16 } else { 0 };
                lo += ((q4[l] & 0xF) as i32 + h1) * q8[l] as i32;
                hi += ((q4[l] >> 4) as i32 + h2) * q8[l + 32] as i32;
            }
            isum += sc[2 * j] as i32 * lo + sc[2 * j + 1] as i32 * hi;
        }
        let d = xb.d() * yb.d;
        let dmin = xb.dmin() * yb.d;
        sumf += d * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// Q6_K weight row · Q8_K activations.
pub fn dot_q6_k(w: &[u8], y: &[BlockQ8_K]) -> f32 {
    let x: &[WBlockQ6_K] = weight_blocks(w);
    check(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut isum = 0i32;
        for half in 0..2 {
            let ql = &xb.ql[half * 64..half * 64 + 64];
            let qh = &xb.qh[half * 32..half * 32 + 32];
            let sc = &xb.scales[half * 8..half * 8 + 8];
            let q8 = &yb.qs[half * 128..half * 128 + 128];
            // Four groups of 32 values, each two sub-blocks of 16 with their own scale.
            let mut s = [0i32; 8];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                s[is] += q1 * q8[l] as i32;
                s[is + 2] += q2 * q8[l + 32] as i32;
                s[is + 4] += q3 * q8[l + 64] as i32;
                s[is + 6] += q4 * q8[l + 96] as i32;
            }
            for k in 0..8 {
                isum += sc[k] as i32 * s[k];
            }
        }
        sumf += (xb.d() * yb.d) * isum as f32;
    }
    sumf
}

/// Q8_K weight row · Q8_K activations (not a GGUF weight type in practice; for completeness).
pub fn dot_q8_k(w: &[u8], y: &[BlockQ8_K]) -> f32 {
    let x: &[WBlockQ8_K] = weight_blocks(w);
    check(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK_K {
            sumi += xb.qs[j] as i32 * yb.qs[j] as i32;
        }
        sumf += (xb.d() * yb.d) * sumi as f32;
    }
    sumf
}
