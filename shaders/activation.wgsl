// activation.wgsl: element-wise ops, with the formulas of src/backend/cpu/activation.rs.
//
// Entry points (one invocation per element; the host spreads long arrays over a 2-D grid):
//   act_unary    x = act(x)
//   act_glu      out = act(gate) * up
//   act_add      x += y
//   act_softcap  x = c * tanh(x / c)

const ACT_SILU: u32 = 0u;
const ACT_GELU_TANH: u32 = 1u;
const WG: u32 = 256u;

struct Params {
    len: u32,
    act: u32,
    c: f32,
}
var<immediate> p: Params;

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// SiLU: x / (1 + exp(-x)); exp overflowing to +inf gives -0 for very negative x, like the CPU.
fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
fn gelu_tanh(v: f32) -> f32 {
    let k = 0.7978846; // sqrt(2 / pi), the CPU's SQRT_2_OVER_PI
    return 0.5 * v * (1.0 + tanh_accurate(k * v * (1.0 + 0.044715 * v * v)));
}

fn act_apply(v: f32) -> f32 {
    if p.act == ACT_GELU_TANH {
        return gelu_tanh(v);
    }
    return silu(v);
}

// The element of this invocation in a grid of (x, y) workgroups of WG.
fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn act_unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if i < p.len {
        x[i] = act_apply(x[i]);
    }
}

// gate is bound at 1 (`y`), up at 2, out at 3.
@compute @workgroup_size(WG)
fn act_glu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if i < p.len {
        out[i] = act_apply(y[i]) * up[i];
    }
}

@compute @workgroup_size(WG)
fn act_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if i < p.len {
        x[i] = x[i] + y[i];
    }
}

@compute @workgroup_size(WG)
fn act_softcap(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if i < p.len {
        x[i] = p.c * tanh_accurate(x[i] / p.c);
    }
}
