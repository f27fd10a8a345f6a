// norm.wgsl: RMSNorm / LayerNorm over rows, and projection biases.
//
// Same math as src/backend/cpu/norm.rs: LayerNorm is two-pass (mean, then the mean of squared
// deviations), RMSNorm uses the mean of squares; y = (x - mean) / sqrt(var + eps) * (w + w_offset)
// [+ b]. Sums are f32 reduced as a tree over the workgroup (the CPU sums in f64; a tree keeps the
// f32 error at O(log n) ulp).
//
// Norm weights and biases keep their file dtype (F32, F16 or BF16, `wty` / `bty`) and are read
// through `vec_get`.
//
// Entry points:
//   norm_rows          one workgroup per row: out = norm(x) (bindings x, nw, nb, out)
//   norm_rows_inplace  one workgroup per row: x = norm(x), no bias (QK-norm over heads)
//   norm_add_bias      x[r * cols + i] += b[i], one invocation per element
// Every invocation writes only the elements it read itself, after the row's last reduction, so
// the in-place entry point is race-free.

const NORM_LAYER: u32 = 1u;
const NO_BIAS: u32 = 0xffffffffu;
const WG: u32 = 256u;

struct Params {
    rows: u32,
    dim: u32,
    kind: u32,
    eps: f32,
    w_off: f32,
    wty: u32,
    bty: u32,
}
var<immediate> p: Params;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> nw: array<u32>;
@group(0) @binding(2) var<storage, read> nb: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> xio: array<f32>;

var<workgroup> red: array<f32, WG>;

// Element i of a vector of type ty (F32, F16 or BF16), starting at word 0 of `v`.
fn vec_get_w(ty: u32, i: u32) -> f32 {
    if ty == TY_F32 {
        return bitcast<f32>(nw[i]);
    }
    let h = nw[i >> 1u] >> ((i & 1u) * 16u);
    if ty == TY_F16 {
        return f16_from_bits(h);
    }
    return bf16_from_bits(h);
}

fn vec_get_b(ty: u32, i: u32) -> f32 {
    if ty == TY_F32 {
        return bitcast<f32>(nb[i]);
    }
    let h = nb[i >> 1u] >> ((i & 1u) * 16u);
    if ty == TY_F16 {
        return f16_from_bits(h);
    }
    return bf16_from_bits(h);
}

// Sum of v over the workgroup; every invocation gets the same value.
fn wg_sum(v: f32, lid: u32) -> f32 {
    // The previous call may still be reading `red`: wait before overwriting it.
    workgroupBarrier();
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if lid < s {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    return red[0];
}

fn row_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

@compute @workgroup_size(WG)
fn norm_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let r = row_index(wid, nwg);
    // Uniform per workgroup, so the barriers below are reached by all or none.
    if r >= p.rows {
        return;
    }
    let base = r * p.dim;
    let n = f32(p.dim);
    var mean = 0.0;
    var s = 0.0;
    if p.kind == NORM_LAYER {
        for (var i = lid; i < p.dim; i += WG) {
            s += x[base + i];
        }
        mean = wg_sum(s, lid) / n;
        s = 0.0;
        for (var i = lid; i < p.dim; i += WG) {
            let d = x[base + i] - mean;
            s += d * d;
        }
    } else {
        for (var i = lid; i < p.dim; i += WG) {
            let v = x[base + i];
            s += v * v;
        }
    }
    let var_ = wg_sum(s, lid) / n;
    let scale = 1.0 / sqrt(var_ + p.eps);
    for (var i = lid; i < p.dim; i += WG) {
        var y = (x[base + i] - mean) * scale * (vec_get_w(p.wty, i) + p.w_off);
        if p.bty != NO_BIAS {
            y += vec_get_b(p.bty, i);
        }
        out[base + i] = y;
    }
}

@compute @workgroup_size(WG)
fn norm_rows_inplace(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let r = row_index(wid, nwg);
    if r >= p.rows {
        return;
    }
    let base = r * p.dim;
    let n = f32(p.dim);
    var mean = 0.0;
    var s = 0.0;
    if p.kind == NORM_LAYER {
        for (var i = lid; i < p.dim; i += WG) {
            s += xio[base + i];
        }
        mean = wg_sum(s, lid) / n;
        s = 0.0;
        for (var i = lid; i < p.dim; i += WG) {
            let d = xio[base + i] - mean;
            s += d * d;
        }
    } else {
        for (var i = lid; i < p.dim; i += WG) {
            let v = xio[base + i];
            s += v * v;
        }
    }
    let var_ = wg_sum(s, lid) / n;
    let scale = 1.0 / sqrt(var_ + p.eps);
    for (var i = lid; i < p.dim; i += WG) {
        xio[base + i] = (xio[base + i] - mean) * scale * (vec_get_w(p.wty, i) + p.w_off);
    }
}

// The bias is bound as `nw` (binding 1); `p.dim` is its length, `p.rows` the rows of x.
@compute @workgroup_size(WG)
fn norm_add_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if i < p.rows * p.dim {
        xio[i] = xio[i] + vec_get_w(p.wty, i % p.dim);
    }
}
