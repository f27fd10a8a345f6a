// embed.wgsl: embedding lookup, out[t] = table[ids[t]] * scale, dequantizing the table's rows
// with the decoders of quant.wgsl (the weight type is the pipeline-override constant WTYPE).
//
// A table larger than one storage binding is uploaded in parts of whole rows; the host runs this
// once per part, and each invocation writes only the tokens whose id falls in its part.
//
// Entry point: get_rows, one invocation per 8 values of one token's row; y of the grid is the
// token.

override WTYPE: u32;
const WG: u32 = 64u;

struct Params {
    cols: u32,
    row_bytes: u32,
    // The part's first row and row count.
    row0: u32,
    rows: u32,
    n_tok: u32,
    scale: f32,
}
var<immediate> p: Params;

@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn get_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let g = gid.x;
    let t = gid.y;
    let id = ids[t];
    if t >= p.n_tok || id < p.row0 || id >= p.row0 + p.rows || g * 8u >= p.cols {
        return;
    }
    let rb = (id - p.row0) * p.row_bytes;
    let o = t * p.cols + g * 8u;
    if g * 8u + 8u <= p.cols {
        let v = get8(WTYPE, rb, g);
        out[o] = v.a.x * p.scale;
        out[o + 1u] = v.a.y * p.scale;
        out[o + 2u] = v.a.z * p.scale;
        out[o + 3u] = v.a.w * p.scale;
        out[o + 4u] = v.b.x * p.scale;
        out[o + 5u] = v.b.y * p.scale;
        out[o + 6u] = v.b.z * p.scale;
        out[o + 7u] = v.b.w * p.scale;
    } else {
        // The tail of a float row whose width is not a multiple of 8.
        for (var i = g * 8u; i < p.cols; i++) {
            out[t * p.cols + i] = getf(WTYPE, rb, i) * p.scale;
        }
    }
}
