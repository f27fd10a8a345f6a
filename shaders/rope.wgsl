// rope.wgsl: rotary position embedding, in place, as src/backend/cpu/rope.rs.
//
// The host computes the table `cs` = [n_tok][n_rot / 2][2] of (cos, sin), already multiplied by
// the attention factor, in f64 exactly like the CPU (every RoPE scaling mode lives there); the
// shader only applies it, so both backends rotate by the same f32 values.
//
// Entry point: rope_rotate, one invocation per (token, head, pair); dims >= n_rot are untouched.
// Each pair is owned by exactly one invocation (the pairs of a head are disjoint in both layouts).

const ROPE_ADJACENT: u32 = 0u; // pairs (2i, 2i + 1): ggml "NORM"
const WG: u32 = 256u;

struct Params {
    n_tok: u32,
    n_heads: u32,
    head_dim: u32,
    n_rot: u32,
    pairing: u32,
}
var<immediate> p: Params;

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read> cs: array<f32>;

@compute @workgroup_size(WG)
fn rope_rotate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let half = p.n_rot / 2u;
    let idx = (wid.x + wid.y * nwg.x) * WG + lid;
    if idx >= p.n_tok * p.n_heads * half {
        return;
    }
    let i = idx % half;
    let th = idx / half; // token * n_heads + head
    let t = th / p.n_heads;
    let c = cs[(t * half + i) * 2u];
    let s = cs[(t * half + i) * 2u + 1u];
    let base = th * p.head_dim;
    var a = base + i;
    var b = base + i + half;
    if p.pairing == ROPE_ADJACENT {
        a = base + 2u * i;
        b = a + 1u;
    }
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
}
