// matmul_f16.wgsl: matmul.wgsl's tiled prefill `matmul` with its workgroup tiles in f16, for
// adapters with the SHADER_F16 feature and quantized weights. Composed FIRST (the `enable`
// directive must open the module), then common, quant and matmul, whose declarations it reuses
// (WGSL module-scope names may be used before they are declared).
//
// Why f16 tiles: about half the workgroup memory of the f32 tiles (9 KiB instead of 16 KiB for the
// same 64 × 64 × 32 step: more workgroups resident per compute unit), and 4 values of K per
// vec4<f16> read. Each tile row (a weight row or a token) is 8 vec4<f16> along K plus one of
// padding: an invocation writes its 8 decoded values as two whole vectors (no vector has two
// writers, which a driver could lower to a racy read-modify-write), and the invocations of a
// warp reading 16 consecutive rows at a 9-vector (18-word) stride hit 16 distinct bank pairs.
// Each invocation owns rows l.y + 16 i and tokens l.x + 16 j (i, j < 4) for the same reason.
// Sums stay f32.
//
// What goes into f16 stays accurate and in range:
//   x: quantize_act has already rounded every activation to an 8-bit quant q (|q| <= 127) times a
//      block scale d; the tile holds q itself, which f16 represents exactly, and d is applied to
//      each K step's f32 partial sums (a step of 32 values lies inside one activation block: Q8_0
//      and Q8_1 blocks are 32 values, Q8_K blocks 256). Large activations cannot overflow.
//   w: the decoded weight (d * q, d * q + m, d * sc * q - dmin * m; for Q4_1 / Q5_1 minus the
//      block's m, which is added back through the activation sums as in `matmul`) rounded to f16:
//      a relative change of at most 2^-11 per weight, against the ~0.4% rounding of the 8-bit
//      activations both backends share. A weight beyond f16's range (|w| > 65504, which no
//      trained model has) would become infinite.
// Float weights (F32 / F16 / BF16) do not come here: their activations are not quantized and
// their values may not fit f16, so src/backend/wgpu/matmul.rs runs them through `matmul`.

enable f16;

// Vectors per tile row: TK / 4 values of K, plus one of padding (see above).
const ROW_V: u32 = 9u;
var<workgroup> w_h: array<vec4<f16>, 576>; // [TM][ROW_V]
var<workgroup> x_h: array<vec4<f16>, 576>; // [TN][ROW_V]
var<workgroup> x_d: array<f32, 64>; // [TN]: each token's activation scale for this K step

// Scale d of the activation block holding column k of token t: quantize_act stores one per block
// after the values (and after the Q8_1 sums).
fn act_scale(t: u32, k: u32) -> f32 {
    let k_quant = WTYPE == TY_Q2_K || WTYPE == TY_Q3_K || WTYPE == TY_Q4_K || WTYPE == TY_Q5_K
        || WTYPE == TY_Q6_K;
    let bl = select(32u, 256u, k_quant);
    var off = p.n_tok * p.cols;
    if is_q1() {
        off += p.n_tok * (p.cols / 32u);
    }
    return x[off + t * (p.cols / bl) + k / bl];
}

@compute @workgroup_size(16, 16)
fn matmul_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let r0 = wid.x * TM;
    let t0 = wid.y * TN;
    // acc_i[j]: row l.y + 16 i, token l.x + 16 j.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // The weight group this invocation decodes each step (row r0 + lid / 4, group lid % 4) and
    // the token whose 8 quants it stages (t0 + lid / 4, the same 8 columns).
    let own = lid / 4u;
    let wr = r0 + own;
    let xt = t0 + own;
    let wg_in = lid % 4u;
    let at = own * ROW_V + wg_in * 2u;
    // Quantized rows are whole blocks (of 32 or 256 values), so every group of 8 is in the row.
    for (var k0 = 0u; k0 < p.cols; k0 += TK) {
        let c = k0 + wg_in * 8u;
        var v = V8(vec4<f32>(0.0), vec4<f32>(0.0));
        if wr < p.rows {
            v = get8(WTYPE, wr * p.row_bytes, c / 8u);
            if is_q1() {
                let m = q1_min(wr * p.row_bytes, k0 / 32u);
                v.a -= vec4<f32>(m);
                v.b -= vec4<f32>(m);
            }
        }
        w_h[at] = vec4<f16>(v.a);
        w_h[at + 1u] = vec4<f16>(v.b);
        var qa = vec4<f32>(0.0);
        var qb = vec4<f32>(0.0);
        if xt < p.n_tok {
            let d = act_scale(xt, k0);
            if d != 0.0 {
                // q * d was rounded to f32 (exactly, for the f16 scales of Q8_0 / Q8_1):
                // rounding the quotient recovers the integer q.
                let xi = xt * p.cols + c;
                qa = round(x4(xi) / d);
                qb = round(x4(xi + 4u) / d);
            }
        }
        x_h[at] = vec4<f16>(qa);
        x_h[at + 1u] = vec4<f16>(qb);
        if lid < TN {
            var d = 0.0;
            if t0 + lid < p.n_tok {
                d = act_scale(t0 + lid, k0);
            }
            x_d[lid] = d;
        } else if is_q1() {
            stage_q1(lid - TN, r0, t0, k0);
        }
        workgroupBarrier();
        // Σ w · q over the step, per (row, token), then times each token's scale.
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        var s2 = vec4<f32>(0.0);
        var s3 = vec4<f32>(0.0);
        let wa = l.y * ROW_V;
        let xb = l.x * ROW_V;
        for (var kq = 0u; kq < TK / 4u; kq++) {
            let a0 = vec4<f32>(w_h[wa + kq]);
            let a1 = vec4<f32>(w_h[wa + 16u * ROW_V + kq]);
            let a2 = vec4<f32>(w_h[wa + 32u * ROW_V + kq]);
            let a3 = vec4<f32>(w_h[wa + 48u * ROW_V + kq]);
            let b0 = vec4<f32>(x_h[xb + kq]);
            let b1 = vec4<f32>(x_h[xb + 16u * ROW_V + kq]);
            let b2 = vec4<f32>(x_h[xb + 32u * ROW_V + kq]);
            let b3 = vec4<f32>(x_h[xb + 48u * ROW_V + kq]);
            s0 += vec4<f32>(dot(a0, b0), dot(a0, b1), dot(a0, b2), dot(a0, b3));
            s1 += vec4<f32>(dot(a1, b0), dot(a1, b1), dot(a1, b2), dot(a1, b3));
            s2 += vec4<f32>(dot(a2, b0), dot(a2, b1), dot(a2, b2), dot(a2, b3));
            s3 += vec4<f32>(dot(a3, b0), dot(a3, b1), dot(a3, b2), dot(a3, b3));
        }
        let d = vec4<f32>(x_d[l.x], x_d[l.x + 16u], x_d[l.x + 32u], x_d[l.x + 48u]);
        acc0 += s0 * d;
        acc1 += s1 * d;
        acc2 += s2 * d;
        acc3 += s3 * d;
        if is_q1() {
            let sv = vec4<f32>(q1_s[l.x], q1_s[l.x + 16u], q1_s[l.x + 32u], q1_s[l.x + 48u]);
            acc0 += q1_m[l.y] * sv;
            acc1 += q1_m[l.y + 16u] * sv;
            acc2 += q1_m[l.y + 32u] * sv;
            acc3 += q1_m[l.y + 48u] * sv;
        }
        workgroupBarrier();
    }
    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let r = r0 + l.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let t = t0 + l.x + 16u * j;
            if r < p.rows && t < p.n_tok {
                out[t * p.out_stride + p.row0 + r] = accs[i][j];
            }
        }
    }
}
