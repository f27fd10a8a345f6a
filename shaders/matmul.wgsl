// matmul.wgsl: out[t] = W · x[t], dequantizing W's blocks inside the shader with the decoders of
// quant.wgsl (the weight type is the pipeline-override constant WTYPE, so each type gets its own
// specialised pipeline and the decoder switch folds away).
//
// W is rows × cols in its file layout (rows of `row_bytes` bytes); x is n_tok rows of `cols` f32;
// out is n_tok rows of `out_stride` f32, of which this call writes columns row0 .. row0 + rows (a
// weight larger than one storage binding is uploaded in parts of whole rows, one call per part).
//
// Entry points:
//   matvec  n_tok <= MV_TOK (decode): MV_ROWS rows per workgroup, MV_LANES invocations per row.
//           Each invocation decodes groups of 8 weights (lane, lane + MV_LANES, ...) once and
//           multiplies them with every token's x; one barrier, then each row's lanes are summed.
//           (matvec_subgroup.wgsl sums them with subgroup shuffles instead, where it can.)
//   matmul_rows  any n_tok, no workgroup memory: one row and up to MV_TOK tokens per invocation
//           (only when TORCHLESS_WGPU_PREFILL=rows forces it, see below).
//   matmul  any n_tok (prefill; matmul_f16.wgsl has the f16-tile form): 64 rows × 64 tokens per
//           workgroup of 16 × 16 invocations, each
//           computing 4 × 4 outputs. K advances 32 values at a time: the workgroup decodes a
//           64 × 32 weight tile (one group of 8 per invocation) and stages a 64 × 32 tile of x,
//           so each decoded weight is reused by 64 tokens from workgroup memory.
//   quantize_act  rounds the activations the way the CPU's fused dots (and llama.cpp's) see them
//           before a quantized weight multiplies them: 8-bit blocks with one scale (Q8_0 / Q8_1
//           per 32 values, scale stored as f16; Q8_K per 256 values, f32 scale), written back
//           as f32 values q * d. The product is then the CPU's up to f32 summation order.
//           After the values (and Q8_1's block sums) come the blocks' scales d, one f32 per
//           block, for matmul_f16.wgsl, which stages the integer quants.
// Float rows whose width is not a multiple of 8 end in a tail read value by value (getf).

override WTYPE: u32;

const WG: u32 = 64u;
const MV_TOK: u32 = 8u;

struct Params {
    rows: u32,
    cols: u32,
    n_tok: u32,
    row_bytes: u32,
    row0: u32,
    out_stride: u32,
}
var<immediate> p: Params;

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// Rust's f32::round (half away from zero); WGSL's round() breaks ties to even.
fn round_away(v: f32) -> f32 {
    return sign(v) * floor(abs(v) + 0.5);
}

// One invocation per activation block; p.cols is the total number of values (whole blocks).
@compute @workgroup_size(WG)
fn quantize_act(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let blk = (wid.x + wid.y * nwg.x) * WG + lid;
    let k_quant = WTYPE == TY_Q2_K || WTYPE == TY_Q3_K || WTYPE == TY_Q4_K || WTYPE == TY_Q5_K
        || WTYPE == TY_Q6_K;
    var bl = 32u;
    if k_quant {
        bl = 256u;
    }
    let base = blk * bl;
    if base >= p.cols {
        return;
    }
    if k_quant {
        // quantize_row_q8_k: the signed value of largest magnitude sets iscale = -127 / max;
        // q = round_ties_even(iscale * v), capped at 127; d = 1 / iscale.
        var amax = 0.0;
        var mx = 0.0;
        for (var i = 0u; i < bl; i++) {
            let v = x[base + i];
            if abs(v) > amax {
                amax = abs(v);
                mx = v;
            }
        }
        if amax == 0.0 {
            for (var i = 0u; i < bl; i++) {
                out[base + i] = 0.0;
            }
            out[p.cols + blk] = 0.0;
            return;
        }
        let iscale = -127.0 / mx;
        let d = 1.0 / iscale;
        out[p.cols + blk] = d;
        for (var i = 0u; i < bl; i++) {
            out[base + i] = min(round(iscale * x[base + i]), 127.0) * d;
        }
    } else {
        // quantize_block_q8: d = amax / 127, q = round(v / d), the scale kept as f16.
        var amax = 0.0;
        for (var i = 0u; i < bl; i++) {
            amax = max(amax, abs(x[base + i]));
        }
        let d = amax / 127.0;
        var id = 0.0;
        if d != 0.0 {
            id = 1.0 / d;
        }
        let dh = unpack2x16float(pack2x16float(vec2<f32>(d, 0.0))).x;
        var qsum = 0.0;
        for (var i = 0u; i < bl; i++) {
            let q = round_away(x[base + i] * id);
            qsum += q;
            out[base + i] = q * dh;
        }
        var scales = p.cols;
        if is_q1() {
            // quantize_row_q8_1's s = f16(sum(q) * d), with d before its f16 rounding.
            out[p.cols + blk] = unpack2x16float(pack2x16float(vec2<f32>(qsum * d, 0.0))).x;
            scales += p.cols / 32u;
        }
        out[scales + blk] = dh;
    }
}

var<workgroup> mv_red: array<f32, 512>; // WG * MV_TOK

fn x4(i: u32) -> vec4<f32> {
    return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
}

// Q4_1 / Q5_1 weights (q * d + m) meet Q8_1 activations on the CPU: per block it adds
// m * s, where s = f16(d_x * sum(q_x)) is the activation block's sum rounded to f16. The same
// rounding here: the weight's m is split off its values and multiplied with the s that
// quantize_act stores after the activations (the f16 rounding of s moves SmolLM2's perplexity
// by ~2%, so it matters).
fn is_q1() -> bool {
    return WTYPE == TY_Q4_1 || WTYPE == TY_Q5_1;
}

// m of block `blk` of the row at byte `rb` (the f16 after d).
fn q1_min(rb: u32, blk: u32) -> f32 {
    let bb = select(24u, 20u, WTYPE == TY_Q4_1);
    return f16_from_bits(ld_u16(rb + blk * bb + 2u));
}

// s of activation block `blk` of token t: stored after the n_tok * cols activations.
fn act_sum(t: u32, blk: u32) -> f32 {
    return x[p.n_tok * p.cols + t * (p.cols / 32u) + blk];
}

// Rows per matvec workgroup and invocations per row: several rows per workgroup keep the
// workgroup count (a fixed cost each on software drivers) low, and one barrier suffices.
const MV_ROWS: u32 = 8u;
const MV_LANES: u32 = 8u; // MV_ROWS * MV_LANES == WG

// This invocation's share of row r for every token: groups lane, lane + MV_LANES, ... of the row.
// Token t's sum is component t % 4 of lo (t < 4) or hi: vectors stay in registers where a
// dynamically indexed array may not. A row past the end gives zeros (its invocations still take
// part in the reduction that follows).
struct MvAcc {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn matvec_partial(r: u32, lane: u32) -> MvAcc {
    var acc = MvAcc(vec4<f32>(0.0), vec4<f32>(0.0));
    if r >= p.rows {
        return acc;
    }
    let rb = r * p.row_bytes;
    let n_g = p.cols / 8u;
    for (var g = lane; g < n_g; g += MV_LANES) {
        var v = get8(WTYPE, rb, g);
        var m = 0.0;
        if is_q1() {
            m = q1_min(rb, g / 4u);
            v.a -= vec4<f32>(m);
            v.b -= vec4<f32>(m);
        }
        for (var t = 0u; t < p.n_tok; t++) {
            let xi = t * p.cols + g * 8u;
            var d = dot(v.a, x4(xi)) + dot(v.b, x4(xi + 4u));
            if is_q1() && g % 4u == 0u {
                d += m * act_sum(t, g / 4u);
            }
            if t < 4u {
                acc.lo[t] += d;
            } else {
                acc.hi[t - 4u] += d;
            }
        }
    }
    // Float rows only: the last cols % 8 values.
    for (var i = n_g * 8u + lane; i < p.cols; i += MV_LANES) {
        let wv = getf(WTYPE, rb, i);
        for (var t = 0u; t < p.n_tok; t++) {
            let d = wv * x[t * p.cols + i];
            if t < 4u {
                acc.lo[t] += d;
            } else {
                acc.hi[t - 4u] += d;
            }
        }
    }
    return acc;
}

@compute @workgroup_size(WG)
fn matvec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let lane = lid % MV_LANES;
    let row_in = lid / MV_LANES;
    let acc = matvec_partial((wid.x + wid.y * nwg.x) * MV_ROWS + row_in, lane);
    for (var t = 0u; t < 4u; t++) {
        mv_red[(t * MV_ROWS + row_in) * MV_LANES + lane] = acc.lo[t];
        mv_red[((t + 4u) * MV_ROWS + row_in) * MV_LANES + lane] = acc.hi[t];
    }
    workgroupBarrier();
    // Invocation (t, row) sums its row's lanes for token t.
    let t = lid / MV_ROWS;
    let ro = lid % MV_ROWS;
    let rr = (wid.x + wid.y * nwg.x) * MV_ROWS + ro;
    if t < p.n_tok && rr < p.rows {
        var sum = 0.0;
        for (var j = 0u; j < MV_LANES; j++) {
            sum += mv_red[(t * MV_ROWS + ro) * MV_LANES + j];
        }
        out[t * p.out_stride + p.row0 + rr] = sum;
    }
}

// Rows × tokens without workgroup memory or barriers, written for software drivers (llvmpipe runs
// a workgroup's invocations in SIMD batches and pays for every barrier with a spill of every live
// value), though the tiles measure faster there too (src/backend/wgpu/matmul.rs): each invocation decodes each weight group of its row once and multiplies it with up
// to MV_TOK tokens (the grid's y), reading x through the cache.
@compute @workgroup_size(WG)
fn matmul_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wid.x * WG + lid;
    let t0 = wid.y * MV_TOK;
    if r >= p.rows || t0 >= p.n_tok {
        return;
    }
    let nt = min(MV_TOK, p.n_tok - t0);
    let rb = r * p.row_bytes;
    let n_g = p.cols / 8u;
    var acc_lo = vec4<f32>(0.0);
    var acc_hi = vec4<f32>(0.0);
    for (var g = 0u; g < n_g; g++) {
        var v = get8(WTYPE, rb, g);
        var m = 0.0;
        if is_q1() {
            m = q1_min(rb, g / 4u);
            v.a -= vec4<f32>(m);
            v.b -= vec4<f32>(m);
        }
        for (var t = 0u; t < nt; t++) {
            let xi = (t0 + t) * p.cols + g * 8u;
            var d = dot(v.a, x4(xi)) + dot(v.b, x4(xi + 4u));
            if is_q1() && g % 4u == 0u {
                d += m * act_sum(t0 + t, g / 4u);
            }
            if t < 4u {
                acc_lo[t] += d;
            } else {
                acc_hi[t - 4u] += d;
            }
        }
    }
    for (var i = n_g * 8u; i < p.cols; i++) {
        let wv = getf(WTYPE, rb, i);
        for (var t = 0u; t < nt; t++) {
            let d = wv * x[(t0 + t) * p.cols + i];
            if t < 4u {
                acc_lo[t] += d;
            } else {
                acc_hi[t - 4u] += d;
            }
        }
    }
    for (var t = 0u; t < nt; t++) {
        var v = acc_lo[t % 4u];
        if t >= 4u {
            v = acc_hi[t - 4u];
        }
        out[(t0 + t) * p.out_stride + p.row0 + r] = v;
    }
}

const TM: u32 = 64u; // rows per workgroup
const TN: u32 = 64u; // tokens per workgroup
const TK: u32 = 32u; // values of K per step

var<workgroup> w_tile: array<f32, 2048>; // [TM][TK]
var<workgroup> x_tile: array<f32, 2048>; // [TN][TK]
var<workgroup> q1_m: array<f32, 64>; // [TM]: m of each row's block (Q4_1 / Q5_1 only)
var<workgroup> q1_s: array<f32, 64>; // [TN]: s of each token's block

// Q4_1 / Q5_1, tiled shaders: one K step of 32 values is exactly one block. Entry i < TM + TN of
// the block's m per row (q1_m[i]) and s per token (q1_s[i - TM]) of the tile at (r0, t0).
fn stage_q1(i: u32, r0: u32, t0: u32, k0: u32) {
    if i < TM {
        var m = 0.0;
        if r0 + i < p.rows {
            m = q1_min((r0 + i) * p.row_bytes, k0 / 32u);
        }
        q1_m[i] = m;
    } else if i < TM + TN {
        var sv = 0.0;
        if t0 + i - TM < p.n_tok {
            sv = act_sum(t0 + i - TM, k0 / 32u);
        }
        q1_s[i - TM] = sv;
    }
}

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let r0 = wid.x * TM;
    let t0 = wid.y * TN;
    // acc_i[j]: row l.y * 4 + i, token l.x * 4 + j. Vectors, not an array: drivers keep them in
    // registers (a dynamically indexed array can end up in memory).
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let wa = l.y * 4u * TK;
    let xb = l.x * 4u * TK;
    // The weight group this invocation decodes each step: row r0 + lid / 4, group lid % 4.
    let wr = r0 + lid / 4u;
    let wg_in = lid % 4u;
    for (var k0 = 0u; k0 < p.cols; k0 += TK) {
        // Weight tile: one group of 8 per invocation.
        let c = k0 + wg_in * 8u;
        let wdst = (lid / 4u) * TK + wg_in * 8u;
        if wr < p.rows && c + 8u <= p.cols {
            var v = get8(WTYPE, wr * p.row_bytes, c / 8u);
            if is_q1() {
                let m = q1_min(wr * p.row_bytes, k0 / 32u);
                v.a -= vec4<f32>(m);
                v.b -= vec4<f32>(m);
            }
            w_tile[wdst] = v.a.x;
            w_tile[wdst + 1u] = v.a.y;
            w_tile[wdst + 2u] = v.a.z;
            w_tile[wdst + 3u] = v.a.w;
            w_tile[wdst + 4u] = v.b.x;
            w_tile[wdst + 5u] = v.b.y;
            w_tile[wdst + 6u] = v.b.z;
            w_tile[wdst + 7u] = v.b.w;
        } else {
            for (var i = 0u; i < 8u; i++) {
                var wv = 0.0;
                if wr < p.rows && c + i < p.cols {
                    wv = getf(WTYPE, wr * p.row_bytes, c + i);
                }
                w_tile[wdst + i] = wv;
            }
        }
        // x tile: 8 values per invocation.
        let xt = lid / 4u;
        for (var i = 0u; i < 8u; i++) {
            let cc = k0 + wg_in * 8u + i;
            var xv = 0.0;
            if t0 + xt < p.n_tok && cc < p.cols {
                xv = x[(t0 + xt) * p.cols + cc];
            }
            x_tile[xt * TK + wg_in * 8u + i] = xv;
        }
        if is_q1() {
            stage_q1(lid, r0, t0, k0);
        }
        workgroupBarrier();
        if is_q1() {
            let sv = vec4<f32>(q1_s[l.x * 4u], q1_s[l.x * 4u + 1u], q1_s[l.x * 4u + 2u],
                               q1_s[l.x * 4u + 3u]);
            acc0 += q1_m[l.y * 4u] * sv;
            acc1 += q1_m[l.y * 4u + 1u] * sv;
            acc2 += q1_m[l.y * 4u + 2u] * sv;
            acc3 += q1_m[l.y * 4u + 3u] * sv;
        }
        for (var k = 0u; k < TK; k++) {
            let a = vec4<f32>(w_tile[wa + k], w_tile[wa + TK + k], w_tile[wa + 2u * TK + k],
                              w_tile[wa + 3u * TK + k]);
            let b = vec4<f32>(x_tile[xb + k], x_tile[xb + TK + k], x_tile[xb + 2u * TK + k],
                              x_tile[xb + 3u * TK + k]);
            acc0 += a.x * b;
            acc1 += a.y * b;
            acc2 += a.z * b;
            acc3 += a.w * b;
        }
        workgroupBarrier();
    }
    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let r = r0 + l.y * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let t = t0 + l.x * 4u + j;
            if r < p.rows && t < p.n_tok {
                out[t * p.out_stride + p.row0 + r] = accs[i][j];
            }
        }
    }
}
