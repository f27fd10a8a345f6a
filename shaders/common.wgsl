// common.wgsl: helpers every shader shares. build.rs prepends this file (and, for the shaders that
// read weights, quant.wgsl) to each op family's file before validating it with naga, so a line
// number in a build error is reported against the file it came from.

// The value of a little-endian IEEE half held in the low 16 bits of `bits`.
fn f16_from_bits(bits: u32) -> f32 {
    return unpack2x16float(bits & 0xffffu).x;
}

// The value of a bfloat16 held in the low 16 bits of `bits` (the high half of an f32).
fn bf16_from_bits(bits: u32) -> f32 {
    return bitcast<f32>((bits & 0xffffu) << 16u);
}

// tanh to a few ulps relative everywhere. Past |v| = 1/4 it is built from one exp of a
// non-positive argument, which never overflows (a library tanh built as (e^2v - 1) / (e^2v + 1)
// gives inf / inf for large v). Below, 1 - exp(-2|v|) would cancel to a few bits (soft-capping
// divides scores by c = 30 or 50, so small arguments are the common case); the Taylor series
// through v^9 is exact to f32 there (the next term is under 1e-8 of v).
fn tanh_accurate(v: f32) -> f32 {
    let a = abs(v);
    if a < 0.25 {
        let v2 = v * v;
        return v * (1.0 + v2 * (-1.0 / 3.0 + v2 * (2.0 / 15.0 + v2 * (-17.0 / 315.0
            + v2 * (62.0 / 2835.0)))));
    }
    let e = exp(-2.0 * a);
    return sign(v) * (1.0 - e) / (1.0 + e);
}

// ggml type ids (GgmlType::ggml_id) of the weight types the shaders decode.
const TY_F32: u32 = 0u;
const TY_F16: u32 = 1u;
const TY_Q4_0: u32 = 2u;
const TY_Q4_1: u32 = 3u;
const TY_Q5_0: u32 = 6u;
const TY_Q5_1: u32 = 7u;
const TY_Q8_0: u32 = 8u;
const TY_Q2_K: u32 = 10u;
const TY_Q3_K: u32 = 11u;
const TY_Q4_K: u32 = 12u;
const TY_Q5_K: u32 = 13u;
const TY_Q6_K: u32 = 14u;
const TY_BF16: u32 = 30u;
