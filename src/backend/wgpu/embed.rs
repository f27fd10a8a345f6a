//! Embedding lookup (`shaders/embed.wgsl`): rows of the table dequantized in the shader, once per
//! part of a table split across storage bindings.

use super::{f, u, Gpu, WgpuBuf, WgpuWeight};

/// Invocations per workgroup (`WG` in the shader).
const WG: usize = 64;

/// `out[t] = table[ids[t]] * scale` (ids already checked against the table's rows).
pub(crate) fn embed(gpu: &Gpu, table: &WgpuWeight, ids: &[u32], scale: f32, out: &mut WgpuBuf) {
    if ids.is_empty() {
        return;
    }
    let Some(ids_buf) = gpu.upload_words("token ids", ids) else {
        return;
    };
    let groups_x = table.cols.div_ceil(8).div_ceil(WG);
    for part in table.parts.iter() {
        let params = [
            u(table.cols),
            u(table.row_bytes),
            u(part.row0),
            u(part.rows),
            u(ids.len()),
            f(scale),
        ];
        gpu.dispatch(
            "embed",
            "get_rows",
            table.ty.ggml_id(),
            &[(0, &part.buf), (1, &ids_buf), (2, &out.buf)],
            &params,
            [u(groups_x), u(ids.len()), 1],
        );
    }
}
