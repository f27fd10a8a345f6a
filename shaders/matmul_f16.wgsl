// matmul_f16.wgsl: matmul.wgsl's tiled prefill `matmul` with its workgroup tiles in f16, for
// adapters with the SHADER_F16 feature and quantized weights. Composed FIRST (the `enable`
// directive must open the module), then common, quant and matmul, whose declarations it reuses
// (WGSL module-scope names may be used before they are declared).
//
// Why f16 tiles: half the workgroup memory of the f32 tiles (8 KiB instead of 16 KiB for the same
// 64 × 64 × 32 step: more workgroups resident per compute unit), and a layout of 4 rows (tokens)
// per vec4<f16> at each k, so the inner loop reads one vector per operand where `matmul` reads
// four scalars. Sums stay f32.
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

var<workgroup> w_h: array<vec4<f16>, 512>; // [TK][TM / 4]: rows 4i .. 4i + 3 at one k
var<workgroup> x_h: array<vec4<f16>, 512>; // [TK][TN / 4]: tokens 4j .. 4j + 3 at one k
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
    // acc_i[j]: row l.y * 4 + i, token l.x * 4 + j.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // The weight group this invocation decodes each step (row r0 + lid / 4, group lid % 4) and
    // the token whose 8 quants it stages (t0 + lid / 4, the same 8 columns).
    let own = lid / 4u;
    let wr = r0 + own;
    let wg_in = lid % 4u;
    let vec_at = own / 4u;
    let comp = own % 4u;
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
        let base = (wg_in * 8u) * (TM / 4u) + vec_at;
        for (var i = 0u; i < 4u; i++) {
            w_h[base + i * (TM / 4u)][comp] = f16(v.a[i]);
            w_h[base + (i + 4u) * (TM / 4u)][comp] = f16(v.b[i]);
        }
        let xt = t0 + own;
        var id = 0.0;
        if xt < p.n_tok {
            let d = act_scale(xt, k0);
            if d != 0.0 {
                id = 1.0 / d;
            }
        }
        for (var i = 0u; i < 8u; i++) {
            var q = 0.0;
            if xt < p.n_tok {
                // q * d was rounded to f32 (exactly, for the f16 scales of Q8_0 / Q8_1):
                // rounding the quotient recovers the integer q.
                q = round(x[xt * p.cols + c + i] * id);
            }
            x_h[base + i * (TN / 4u)][comp] = f16(q);
        }
        if lid < TN {
            var d = 0.0;
            if t0 + lid < p.n_tok {
                d = act_scale(t0 + lid, k0);
            }
            x_d[lid] = d;
        } else if is_q1() && lid < TN + TM {
            // One K step is exactly one 32-value block: its m per row and s per token.
            let r = lid - TN;
            var m = 0.0;
            if r0 + r < p.rows {
                m = q1_min((r0 + r) * p.row_bytes, k0 / 32u);
            }
            q1_m[r] = m;
        } else if is_q1() && lid < TN + TM + TN {
            let t = lid - TN - TM;
            var sv = 0.0;
            if t0 + t < p.n_tok {
                sv = act_sum(t0 + t, k0 / 32u);
            }
            q1_s[t] = sv;
        }
        workgroupBarrier();
        // Σ w · q over the step, per (row, token), then times each token's scale.
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        var s2 = vec4<f32>(0.0);
        var s3 = vec4<f32>(0.0);
        for (var k = 0u; k < TK; k++) {
            let a = vec4<f32>(w_h[k * (TM / 4u) + l.y]);
            let b = vec4<f32>(x_h[k * (TN / 4u) + l.x]);
            s0 += a.x * b;
            s1 += a.y * b;
            s2 += a.z * b;
            s3 += a.w * b;
        }
        let d = vec4<f32>(x_d[l.x * 4u], x_d[l.x * 4u + 1u], x_d[l.x * 4u + 2u],
                          x_d[l.x * 4u + 3u]);
        acc0 += s0 * d;
        acc1 += s1 * d;
        acc2 += s2 * d;
        acc3 += s3 * d;
        if is_q1() {
            let sv = vec4<f32>(q1_s[l.x * 4u], q1_s[l.x * 4u + 1u], q1_s[l.x * 4u + 2u],
                               q1_s[l.x * 4u + 3u]);
            acc0 += q1_m[l.y * 4u] * sv;
            acc1 += q1_m[l.y * 4u + 1u] * sv;
            acc2 += q1_m[l.y * 4u + 2u] * sv;
            acc3 += q1_m[l.y * 4u + 3u] * sv;
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
