// quant.wgsl: decoders for ggml weight rows, shared by every shader that reads weights. build.rs
// places it after common.wgsl (f16_from_bits, bf16_from_bits, the TY_* ids) and before the op file.
//
// Interface:
//   w                       the weight tensor's bytes as u32 words (binding 0 of group 0), padded
//                           to a multiple of 4 bytes.
//   get8(ty, row_byte, g)   values [8g, 8g + 8) of the row of type `ty` whose first byte is at
//                           byte `row_byte` of w. 8g never straddles a block (32 and 256 are
//                           multiples of 8). `ty` is a pipeline-override constant at every call
//                           site, so the switch folds to one decoder.
//   getf(ty, row_byte, i)   value i of an F32 / F16 / BF16 row (row tails when cols % 8 != 0).
//   ld_u8, ld_u16, ld_u32   little-endian loads from w at a byte offset (u16: even offset; u32: any).
//
// Alignment: a row starts at a whole number of blocks from the (4-aligned) tensor start, and ggml's
// block sizes are only even (Q4_0 18, Q5_0 22, Q8_0 34, Q3_K 110, Q6_K 210 bytes), so a quantized
// row or block is only known to be 2-aligned; F32 rows are 4-aligned, F16 / BF16 rows 2-aligned.
// Every field offset inside a block is even too, hence the funnel-shifted multi-byte loads below.
//
// Results equal src/quant/dequant.rs (ggml's dequantize_row_*): the same float operations in the
// same order (`d * q`, `q * d + m`, `(d * sc) * q - dmin * m`, ...). Only where the CPU does a
// multiply followed by an add may a GPU compiler fuse the two into an FMA (core WGSL cannot forbid
// it), which changes the last bit of those values.

@group(0) @binding(0) var<storage, read> w: array<u32>;

struct V8 { a: vec4<f32>, b: vec4<f32> }

// ---------------------------------------------------------------------------------------------
// Loads
// ---------------------------------------------------------------------------------------------

fn ld_u8(byte: u32) -> u32 {
    return (w[byte >> 2u] >> ((byte & 3u) * 8u)) & 0xffu;
}

// `byte` even, so the half-word never straddles two words.
fn ld_u16(byte: u32) -> u32 {
    return (w[byte >> 2u] >> ((byte & 2u) * 8u)) & 0xffffu;
}

// The word starting `s / 8` bytes into `lo`, continuing into `hi`. Shift counts are taken modulo
// 32 in WGSL, so s == 0 must select `lo` rather than rely on `hi << 32` being 0.
fn qd_funnel(lo: u32, hi: u32, s: u32) -> u32 {
    return select((lo >> s) | (hi << (32u - s)), lo, s == 0u);
}

fn ld_u32(byte: u32) -> u32 {
    let i = byte >> 2u;
    return qd_funnel(w[i], w[i + 1u], (byte & 3u) * 8u);
}

// 8 bytes from any offset: 3 word loads instead of the 4 of two ld_u32.
fn qd_ld8(byte: u32) -> vec2<u32> {
    let i = byte >> 2u;
    let s = (byte & 3u) * 8u;
    let w0 = w[i];
    let w1 = w[i + 1u];
    let w2 = w[i + 2u];
    return vec2<u32>(qd_funnel(w0, w1, s), qd_funnel(w1, w2, s));
}

// 16 bytes from any offset: 5 word loads.
fn qd_ld16(byte: u32) -> vec4<u32> {
    let i = byte >> 2u;
    let s = (byte & 3u) * 8u;
    let w0 = w[i];
    let w1 = w[i + 1u];
    let w2 = w[i + 2u];
    let w3 = w[i + 3u];
    let w4 = w[i + 4u];
    return vec4<u32>(qd_funnel(w0, w1, s), qd_funnel(w1, w2, s), qd_funnel(w2, w3, s),
                     qd_funnel(w3, w4, s));
}

// ---------------------------------------------------------------------------------------------
// Unpacking: the 4 bytes of a word become one lane each, byte 0 in .x.
// ---------------------------------------------------------------------------------------------

const QD_BYTE_SH = vec4<u32>(0u, 8u, 16u, 24u);

// Bits [sh, sh + width) of each byte of x, `mask` = 2^width - 1.
fn qd_bits4(x: u32, sh: u32, mask: u32) -> vec4<u32> {
    return (vec4<u32>(x >> sh) >> QD_BYTE_SH) & vec4<u32>(mask);
}

// Each byte of x as a signed int8.
fn qd_i8x4(x: u32) -> vec4<i32> {
    return bitcast<vec4<i32>>(vec4<u32>(x) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u);
}

// Bits b, b + 1, b + 2, b + 3 of x, one per lane (the 5th bits of Q5_0 / Q5_1).
fn qd_bit4(x: u32, b: u32) -> vec4<u32> {
    return (vec4<u32>(x >> b) >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u);
}

// ---------------------------------------------------------------------------------------------
// 32-value blocks: 4 groups of 8 per block. Quants are nibbles of qs[16]: element j < 16 is the
// low nibble of qs[j], element j + 16 the high nibble, so group g of a block reads the 8 bytes
// qs[8 (g & 1)..] at nibble (g >> 1).
// ---------------------------------------------------------------------------------------------

// Q4_0 (18 bytes): d @0, qs @2; x = (q - 8) * d.
fn get8_q4_0(row_byte: u32, g: u32) -> V8 {
    let bb = row_byte + (g >> 2u) * 18u;
    let d = f16_from_bits(ld_u16(bb));
    let q = qd_ld8(bb + 2u + (g & 1u) * 8u);
    let sh = (g & 2u) * 2u;
    let a = vec4<i32>(qd_bits4(q.x, sh, 0xfu)) - vec4<i32>(8);
    let b = vec4<i32>(qd_bits4(q.y, sh, 0xfu)) - vec4<i32>(8);
    return V8(vec4<f32>(a) * d, vec4<f32>(b) * d);
}

// Q4_1 (20 bytes): d @0, m @2, qs @4; x = q * d + m.
fn get8_q4_1(row_byte: u32, g: u32) -> V8 {
    let bb = row_byte + (g >> 2u) * 20u;
    let dm = ld_u32(bb);
    let d = f16_from_bits(dm);
    let m = f16_from_bits(dm >> 16u);
    let q = qd_ld8(bb + 4u + (g & 1u) * 8u);
    let sh = (g & 2u) * 2u;
    let a = vec4<f32>(qd_bits4(q.x, sh, 0xfu));
    let b = vec4<f32>(qd_bits4(q.y, sh, 0xfu));
    return V8(a * d + m, b * d + m);
}

// Q5_0 (22 bytes): d @0, qh @2 (u32, bit e = 5th bit of element e), qs @6; x = (q - 16) * d.
fn get8_q5_0(row_byte: u32, g: u32) -> V8 {
    let bb = row_byte + (g >> 2u) * 22u;
    let d = f16_from_bits(ld_u16(bb));
    let hb = ld_u32(bb + 2u) >> ((g & 3u) * 8u);
    let q = qd_ld8(bb + 6u + (g & 1u) * 8u);
    let sh = (g & 2u) * 2u;
    let a = vec4<i32>(qd_bits4(q.x, sh, 0xfu) | (qd_bit4(hb, 0u) << vec4<u32>(4u))) - vec4<i32>(16);
    let b = vec4<i32>(qd_bits4(q.y, sh, 0xfu) | (qd_bit4(hb, 4u) << vec4<u32>(4u))) - vec4<i32>(16);
    return V8(vec4<f32>(a) * d, vec4<f32>(b) * d);
}

// Q5_1 (24 bytes): d @0, m @2, qh @4, qs @8; x = q * d + m.
fn get8_q5_1(row_byte: u32, g: u32) -> V8 {
    let bb = row_byte + (g >> 2u) * 24u;
    let dm = ld_u32(bb);
    let d = f16_from_bits(dm);
    let m = f16_from_bits(dm >> 16u);
    let hb = ld_u32(bb + 4u) >> ((g & 3u) * 8u);
    let q = qd_ld8(bb + 8u + (g & 1u) * 8u);
    let sh = (g & 2u) * 2u;
    let a = vec4<f32>(qd_bits4(q.x, sh, 0xfu) | (qd_bit4(hb, 0u) << vec4<u32>(4u)));
    let b = vec4<f32>(qd_bits4(q.y, sh, 0xfu) | (qd_bit4(hb, 4u) << vec4<u32>(4u)));
    return V8(a * d + m, b * d + m);
}

// Q8_0 (34 bytes): d @0, qs (int8) @2, in element order; x = q * d.
fn get8_q8_0(row_byte: u32, g: u32) -> V8 {
    let bb = row_byte + (g >> 2u) * 34u;
    let d = f16_from_bits(ld_u16(bb));
    let q = qd_ld8(bb + 2u + (g & 3u) * 8u);
    return V8(vec4<f32>(qd_i8x4(q.x)) * d, vec4<f32>(qd_i8x4(q.y)) * d);
}

// ---------------------------------------------------------------------------------------------
// K-quants: 256-value super-blocks, 32 groups of 8. With off = 8 (g & 31) the offset in the block,
// the 2-bit layouts (Q2_K, Q3_K, Q6_K's high bits) put element 128h + 32k + l (l < 32) in bit
// pair k of byte 32h + l, so a group is 8 consecutive bytes at one shift; sub-blocks are 16 wide.
// ---------------------------------------------------------------------------------------------

// Q2_K (84 bytes): scales[16] @0, qs[64] @16, d @80, dmin @82. Scale byte sc of sub-block
// 8h + 2k + l / 16; x = (d * (sc & 15)) * q - dmin * (sc >> 4).
fn get8_q2_k(row_byte: u32, g: u32) -> V8 {
    let bb = row_byte + (g >> 5u) * 84u;
    let off = (g & 31u) * 8u;
    let h = off >> 7u;
    let k = (off >> 5u) & 3u;
    let l0 = off & 31u;
    let dd = ld_u32(bb + 80u);
    let d = f16_from_bits(dd);
    let dmin = f16_from_bits(dd >> 16u);
    let sc = ld_u8(bb + 8u * h + 2u * k + (l0 >> 4u));
    let dl = d * f32(sc & 0xfu);
    let ml = dmin * f32(sc >> 4u);
    let q = qd_ld8(bb + 16u + 32u * h + l0);
    let a = vec4<f32>(qd_bits4(q.x, 2u * k, 3u));
    let b = vec4<f32>(qd_bits4(q.y, 2u * k, 3u));
    return V8(dl * a - ml, dl * b - ml);
}

// Q3_K (110 bytes): hmask[32] @0, qs[64] @32, scales[12] @96, d @108. Low 2 bits as Q2_K; 4 is
// subtracted when bit 4h + k of hmask[l] is clear. Scale j = 8h + 2k + l / 16 is 6 bits, biased by
// 32: low nibble from byte j & 7 (nibble j >> 3), high 2 bits from byte 8 + (j & 3) (pair j >> 2).
// x = (d * scale) * q.
fn get8_q3_k(row_byte: u32, g: u32) -> V8 {
    let bb = row_byte + (g >> 5u) * 110u;
    let off = (g & 31u) * 8u;
    let h = off >> 7u;
    let k = (off >> 5u) & 3u;
    let l0 = off & 31u;
    let d = f16_from_bits(ld_u16(bb + 108u));
    let j = 8u * h + 2u * k + (l0 >> 4u);
    let lo = (ld_u8(bb + 96u + (j & 7u)) >> (4u * (j >> 3u))) & 0xfu;
    let hi = (ld_u8(bb + 104u + (j & 3u)) >> (2u * (j >> 2u))) & 3u;
    let dl = d * f32(i32(lo | (hi << 4u)) - 32);
    let q = qd_ld8(bb + 32u + 32u * h + l0);
    let hm = qd_ld8(bb + l0);
    let hb = 4u * h + k;
    // lo - (bit clear ? 4 : 0) == lo - 4 + 4 * bit
    let a = vec4<i32>(qd_bits4(q.x, 2u * k, 3u) + (qd_bits4(hm.x, hb, 1u) << vec4<u32>(2u))) - vec4<i32>(4);
    let b = vec4<i32>(qd_bits4(q.y, 2u * k, 3u) + (qd_bits4(hm.y, hb, 1u) << vec4<u32>(2u))) - vec4<i32>(4);
    return V8(dl * vec4<f32>(a), dl * vec4<f32>(b));
}

// Q4_K / Q5_K scale and min of sub-block `is` (0..8) from the 12 scale bytes at `sb`
// (ggml get_scale_min_k4, blocks.rs unpack_scales_k4). With b = is & 3 and t0, t1, t2 bytes b,
// b + 4, b + 8: is < 4: sc = t0 & 63, m = t1 & 63; else sc = (t2 & 15) | (t0 >> 6) << 4,
// m = (t2 >> 4) | (t1 >> 6) << 4.
fn qd_scale_min_k4(sb: u32, is: u32) -> vec2<u32> {
    let b = is & 3u;
    let t0 = ld_u8(sb + b);
    let t1 = ld_u8(sb + 4u + b);
    if (is < 4u) {
        return vec2<u32>(t0 & 63u, t1 & 63u);
    }
    let t2 = ld_u8(sb + 8u + b);
    return vec2<u32>((t2 & 0xfu) | ((t0 >> 6u) << 4u), (t2 >> 4u) | ((t1 >> 6u) << 4u));
}

// Q4_K (144 bytes): d @0, dmin @2, scales[12] @4, qs[128] @16. Element 64j + 32s + l is nibble s
// of qs[32j + l], sub-block is = 2j + s = off / 32; x = (d * sc) * q - dmin * m.
fn get8_q4_k(row_byte: u32, g: u32) -> V8 {
    let bb = row_byte + (g >> 5u) * 144u;
    let off = (g & 31u) * 8u;
    let is = off >> 5u;
    let l0 = off & 31u;
    let dd = ld_u32(bb);
    let d = f16_from_bits(dd);
    let dmin = f16_from_bits(dd >> 16u);
    let sm = qd_scale_min_k4(bb + 4u, is);
    let d1 = d * f32(sm.x);
    let m1 = dmin * f32(sm.y);
    let q = qd_ld8(bb + 16u + 32u * (is >> 1u) + l0);
    let sh = 4u * (is & 1u);
    let a = vec4<f32>(qd_bits4(q.x, sh, 0xfu));
    let b = vec4<f32>(qd_bits4(q.y, sh, 0xfu));
    return V8(d1 * a - m1, d1 * b - m1);
}

// Q5_K (176 bytes): d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48. As Q4_K, plus 16 when
// bit `is` of qh[l] is set.
fn get8_q5_k(row_byte: u32, g: u32) -> V8 {
    let bb = row_byte + (g >> 5u) * 176u;
    let off = (g & 31u) * 8u;
    let is = off >> 5u;
    let l0 = off & 31u;
    let dd = ld_u32(bb);
    let d = f16_from_bits(dd);
    let dmin = f16_from_bits(dd >> 16u);
    let sm = qd_scale_min_k4(bb + 4u, is);
    let d1 = d * f32(sm.x);
    let m1 = dmin * f32(sm.y);
    let q = qd_ld8(bb + 48u + 32u * (is >> 1u) + l0);
    let qh = qd_ld8(bb + 16u + l0);
    let sh = 4u * (is & 1u);
    let a = vec4<f32>(qd_bits4(q.x, sh, 0xfu) | (qd_bits4(qh.x, is, 1u) << vec4<u32>(4u)));
    let b = vec4<f32>(qd_bits4(q.y, sh, 0xfu) | (qd_bits4(qh.y, is, 1u) << vec4<u32>(4u)));
    return V8(d1 * a - m1, d1 * b - m1);
}

// Q6_K (210 bytes): ql[128] @0, qh[64] @128, scales (int8)[16] @192, d @208. Element
// 128h + 32k + l: low 4 bits are nibble k >> 1 of ql[64h + 32 (k & 1) + l], high 2 bits pair k of
// qh[32h + l]; scale 8h + 2k + l / 16; x = (d * scale) * (q - 32).
fn get8_q6_k(row_byte: u32, g: u32) -> V8 {
    let bb = row_byte + (g >> 5u) * 210u;
    let off = (g & 31u) * 8u;
    let h = off >> 7u;
    let k = (off >> 5u) & 3u;
    let l0 = off & 31u;
    let d = f16_from_bits(ld_u16(bb + 208u));
    let sc = bitcast<i32>(ld_u8(bb + 192u + 8u * h + 2u * k + (l0 >> 4u)) << 24u) >> 24u;
    let ds = d * f32(sc);
    let ql = qd_ld8(bb + 64u * h + 32u * (k & 1u) + l0);
    let qh = qd_ld8(bb + 128u + 32u * h + l0);
    let sh = 4u * (k >> 1u);
    let a = vec4<i32>(qd_bits4(ql.x, sh, 0xfu) | (qd_bits4(qh.x, 2u * k, 3u) << vec4<u32>(4u))) - vec4<i32>(32);
    let b = vec4<i32>(qd_bits4(ql.y, sh, 0xfu) | (qd_bits4(qh.y, 2u * k, 3u) << vec4<u32>(4u))) - vec4<i32>(32);
    return V8(ds * vec4<f32>(a), ds * vec4<f32>(b));
}

// ---------------------------------------------------------------------------------------------
// Float types
// ---------------------------------------------------------------------------------------------

// F32 rows are 4-aligned: plain word loads.
fn get8_f32(row_byte: u32, g: u32) -> V8 {
    let i = (row_byte >> 2u) + 8u * g;
    return V8(bitcast<vec4<f32>>(vec4<u32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u])),
              bitcast<vec4<f32>>(vec4<u32>(w[i + 4u], w[i + 5u], w[i + 6u], w[i + 7u])));
}

// Halves go through f16_from_bits so that common.wgsl alone decides how an f16 is decoded.
fn qd_f16x2(x: u32) -> vec2<f32> {
    return vec2<f32>(f16_from_bits(x), f16_from_bits(x >> 16u));
}

fn get8_f16(row_byte: u32, g: u32) -> V8 {
    let x = qd_ld16(row_byte + 16u * g);
    return V8(vec4<f32>(qd_f16x2(x.x), qd_f16x2(x.y)), vec4<f32>(qd_f16x2(x.z), qd_f16x2(x.w)));
}

// A bf16 is the high half of an f32.
fn qd_bf16x2(x: u32) -> vec2<f32> {
    return bitcast<vec2<f32>>(vec2<u32>(x << 16u, x & 0xffff0000u));
}

fn get8_bf16(row_byte: u32, g: u32) -> V8 {
    let x = qd_ld16(row_byte + 16u * g);
    return V8(vec4<f32>(qd_bf16x2(x.x), qd_bf16x2(x.y)), vec4<f32>(qd_bf16x2(x.z), qd_bf16x2(x.w)));
}

// ---------------------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------------------

fn get8(ty: u32, row_byte: u32, g: u32) -> V8 {
    switch ty {
        case TY_Q4_0: { return get8_q4_0(row_byte, g); }
        case TY_Q4_1: { return get8_q4_1(row_byte, g); }
        case TY_Q5_0: { return get8_q5_0(row_byte, g); }
        case TY_Q5_1: { return get8_q5_1(row_byte, g); }
        case TY_Q8_0: { return get8_q8_0(row_byte, g); }
        case TY_Q2_K: { return get8_q2_k(row_byte, g); }
        case TY_Q3_K: { return get8_q3_k(row_byte, g); }
        case TY_Q4_K: { return get8_q4_k(row_byte, g); }
        case TY_Q5_K: { return get8_q5_k(row_byte, g); }
        case TY_Q6_K: { return get8_q6_k(row_byte, g); }
        case TY_F32: { return get8_f32(row_byte, g); }
        case TY_F16: { return get8_f16(row_byte, g); }
        case TY_BF16: { return get8_bf16(row_byte, g); }
        default: { return V8(vec4<f32>(0.0), vec4<f32>(0.0)); }
    }
}

fn getf(ty: u32, row_byte: u32, i: u32) -> f32 {
    switch ty {
        case TY_F32: { return bitcast<f32>(w[(row_byte >> 2u) + i]); }
        case TY_F16: { return f16_from_bits(ld_u16(row_byte + 2u * i)); }
        case TY_BF16: { return bf16_from_bits(ld_u16(row_byte + 2u * i)); }
        default: { return 0.0; }
    }
}
