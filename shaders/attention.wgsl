// attention.wgsl: the f16 KV cache and causal attention over it, as src/backend/cpu/attention.rs.
//
// The cache of one layer is two buffers, K and V, of [n_ctx][width] halves (all K/V heads side by
// side), held as u32 pairs: without the SHADER_F16 feature WGSL has no 16-bit storage type, and
// head widths are even, so a pair never straddles two heads.
//
// Entry points:
//   kv_store   one invocation per pair of values: K and V rows of n_tok tokens at pos0.. (f16,
//              rounded to nearest even by pack2x16float, like the CPU's f16::from_f32)
//   attention  one workgroup of WG invocations per (query head, token). Query position
//              pos = pos0 + t attends to lo..=pos, lo = max(0, pos + 1 - window). Keys are taken
//              WG at a time, one per invocation (score = q·k * scale, soft-capped), and folded
//              into a running softmax (max m, sum l, rescaled accumulators) so no score array of
//              the context's length is needed; each invocation owns output dims lid, lid + WG, ...

const WG: u32 = 64u;
// Widest value head: each invocation owns MAX_DV / WG output dims.
const MAX_DV: u32 = 512u;
const DV_PER: u32 = MAX_DV / WG;
// Widest query/key head (the query is staged in workgroup memory).
const MAX_DK: u32 = 512u;

// One parameter block for both entry points (a module has one immediate range): kv_store reads
// the first four fields only.
struct Params {
    n_tok: u32,
    pos0: u32,
    k_width: u32,
    v_width: u32,
    n_head: u32,
    n_head_kv: u32,
    head_dim: u32,
    head_dim_v: u32,
    scale: f32,
    // 0: no sliding window.
    window: u32,
    // 0.0: no soft-cap.
    softcap: f32,
}
var<immediate> pa: Params;

@group(0) @binding(0) var<storage, read> k_in: array<f32>;
@group(0) @binding(1) var<storage, read> v_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(3) var<storage, read_write> v_cache: array<u32>;

@group(0) @binding(4) var<storage, read> q: array<f32>;
@group(0) @binding(5) var<storage, read> k_ro: array<u32>;
@group(0) @binding(6) var<storage, read> v_ro: array<u32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn kv_store(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    let kp = pa.k_width / 2u;
    let vp = pa.v_width / 2u;
    let nk = pa.n_tok * kp;
    if i < nk {
        let t = i / kp;
        let j = i % kp;
        let src = t * pa.k_width + 2u * j;
        k_cache[(pa.pos0 + t) * kp + j] = pack2x16float(vec2<f32>(k_in[src], k_in[src + 1u]));
    } else if i < nk + pa.n_tok * vp {
        let iv = i - nk;
        let t = iv / vp;
        let j = iv % vp;
        let src = t * pa.v_width + 2u * j;
        v_cache[(pa.pos0 + t) * vp + j] = pack2x16float(vec2<f32>(v_in[src], v_in[src + 1u]));
    }
}

var<workgroup> q_sh: array<f32, MAX_DK>;
var<workgroup> p_sh: array<f32, WG>;

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t = wid.y;
    let hd = pa.head_dim;
    let dv = pa.head_dim_v;
    let kvh = h / (pa.n_head / pa.n_head_kv);
    let pos = pa.pos0 + t;
    var lo = 0u;
    if pa.window != 0u && pos + 1u > pa.window {
        lo = pos + 1u - pa.window;
    }
    let q_base = (t * pa.n_head + h) * hd;
    // Q is rounded to f16 like K, as the CPU (and llama.cpp before its f16 dot) does, so the
    // scores see the same rounding.
    for (var d = lid; d < hd; d += WG) {
        q_sh[d] = unpack2x16float(pack2x16float(vec2<f32>(q[q_base + d], 0.0))).x;
    }
    workgroupBarrier();

    // Word offsets of this K/V head inside a cache row.
    let k_off = kvh * hd / 2u;
    let v_off = kvh * dv / 2u;
    let kp = pa.k_width / 2u;
    let vp = pa.v_width / 2u;

    var m = -3.4028235e38;
    var l = 0.0;
    var acc: array<f32, DV_PER>;
    for (var j = 0u; j < DV_PER; j++) {
        acc[j] = 0.0;
    }
    for (var base = lo; base <= pos; base += WG) {
        let key = base + lid;
        var s = -3.4028235e38;
        if key <= pos {
            let row = key * kp + k_off;
            var dot = 0.0;
            for (var d = 0u; d < hd / 2u; d++) {
                let kk = unpack2x16float(k_ro[row + d]);
                dot += q_sh[2u * d] * kk.x + q_sh[2u * d + 1u] * kk.y;
            }
            s = dot * pa.scale;
            if pa.softcap != 0.0 {
                s = pa.softcap * tanh_accurate(s / pa.softcap);
            }
        }
        // The chunk's max, shared through p_sh.
        p_sh[lid] = s;
        workgroupBarrier();
        var mc = m;
        for (var j = 0u; j < WG; j++) {
            mc = max(mc, p_sh[j]);
        }
        workgroupBarrier();
        let corr = exp(m - mc);
        var pj = 0.0;
        if key <= pos {
            pj = exp(s - mc);
        }
        p_sh[lid] = pj;
        workgroupBarrier();
        var lsum = 0.0;
        let n_keys = min(WG, pos + 1u - base);
        for (var i = 0u; i < DV_PER; i++) {
            acc[i] *= corr;
        }
        for (var j = 0u; j < n_keys; j++) {
            let pk = p_sh[j];
            lsum += pk;
            let vrow = (base + j) * vp + v_off;
            for (var i = 0u; i < DV_PER; i++) {
                let d = lid + i * WG;
                if d < dv {
                    let pair = unpack2x16float(v_ro[vrow + d / 2u]);
                    let vv = select(pair.x, pair.y, (d & 1u) == 1u);
                    acc[i] += pk * vv;
                }
            }
        }
        l = l * corr + lsum;
        m = mc;
        // p_sh is overwritten by the next chunk.
        workgroupBarrier();
    }
    let o_base = (t * pa.n_head + h) * dv;
    for (var i = 0u; i < DV_PER; i++) {
        let d = lid + i * WG;
        if d < dv {
            out[o_base + d] = acc[i] / l;
        }
    }
}
