//! Matrix products with the weight dequantized in the shader (`shaders/matmul.wgsl`): `matvec`
//! for decode (a few tokens), the tiled `matmul` for prefill. Each weight type gets its own
//! pipeline (the override constant `WTYPE`), and a weight split across storage bindings runs one
//! dispatch per part, each writing its rows' columns of the output.

use super::{grid, u, Gpu, WgpuBuf, WgpuWeight};
use crate::quant::ActKind;

/// Most tokens `matvec` takes (`MV_TOK` in the shader); more go to the tiled `matmul`.
pub const MATVEC_MAX_TOK: usize = 8;
/// Rows and tokens of one `matmul` workgroup (`TM`, `TN`).
const TILE: usize = 64;
/// Rows of one `matvec` workgroup (`MV_ROWS`).
const MATVEC_ROWS: usize = 8;

/// Which shader runs prefill (more than [`MATVEC_MAX_TOK`] tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefill {
    /// `matmul`: 64 × 64 tiles staged in workgroup memory (GPUs).
    Tiled,
    /// `matmul_rows`: no workgroup memory or barriers (software adapters such as llvmpipe,
    /// which pay for every barrier).
    Rows,
}

/// Environment variable that forces the prefill shader (`tiled` or `rows`); tests run both.
pub const PREFILL_ENV: &str = "TORCHLESS_WGPU_PREFILL";

impl Prefill {
    /// `rows` for an adapter that is a CPU (a software rasteriser), else `tiled`; or what
    /// [`PREFILL_ENV`] names.
    pub fn choose(device_type: wgpu::DeviceType) -> Result<Prefill, String> {
        match std::env::var(PREFILL_ENV).ok().as_deref() {
            None | Some("") | Some("auto") => Ok(if device_type == wgpu::DeviceType::Cpu {
                Prefill::Rows
            } else {
                Prefill::Tiled
            }),
            Some("tiled") => Ok(Prefill::Tiled),
            Some("rows") => Ok(Prefill::Rows),
            Some(other) => Err(format!(
                "{PREFILL_ENV}={other}: expected tiled, rows or auto"
            )),
        }
    }

    /// The shader's name.
    pub fn name(self) -> &'static str {
        match self {
            Prefill::Tiled => "tiled",
            Prefill::Rows => "rows",
        }
    }
}

/// Invocations per workgroup of `quantize_act` (`WG`).
const WG: usize = 64;

/// `out[t] = W · x[t]` for `n_tok` rows of `x`. For a quantized weight the activations are
/// first rounded as the CPU's fused dots see them (`quantize_act`), into the backend's scratch
/// buffer.
pub(crate) fn matmul(gpu: &Gpu, w: &WgpuWeight, x: &WgpuBuf, n_tok: usize, out: &mut WgpuBuf) {
    if n_tok == 0 || gpu.failed() {
        return;
    }
    let n = n_tok * w.cols;
    let scratch;
    let x = match w.ty.act_kind() {
        ActKind::F32 => &x.buf,
        kind => {
            // Q8_1 blocks also store their f16 sum s after the values.
            let len = if kind == ActKind::Q8_1 { n + n / 32 } else { n };
            let Some(buf) = gpu.act_scratch(len) else {
                return;
            };
            scratch = buf;
            let block = if kind == ActKind::Q8_K { 256 } else { 32 };
            let params = [0, u(n), 0, 0, 0, 0];
            gpu.dispatch(
                "matmul",
                "quantize_act",
                w.ty.ggml_id(),
                &[(1, &x.buf), (2, &scratch)],
                &params,
                grid(
                    (n / block).div_ceil(WG),
                    gpu.limits.max_compute_workgroups_per_dimension,
                ),
            );
            &scratch
        }
    };
    for part in w.parts.iter() {
        let params = [
            u(part.rows),
            u(w.cols),
            u(n_tok),
            u(w.row_bytes),
            u(part.row0),
            u(w.rows),
        ];
        let bindings = [(0, &part.buf), (1, x), (2, &out.buf)];
        let ty = w.ty.ggml_id();
        if n_tok <= MATVEC_MAX_TOK {
            let groups = grid(
                part.rows.div_ceil(MATVEC_ROWS),
                gpu.limits.max_compute_workgroups_per_dimension,
            );
            gpu.dispatch("matmul", "matvec", ty, &bindings, &params, groups);
        } else if gpu.prefill == Prefill::Rows {
            let groups = [
                u(part.rows.div_ceil(WG)),
                u(n_tok.div_ceil(MATVEC_MAX_TOK)),
                1,
            ];
            gpu.dispatch("matmul", "matmul_rows", ty, &bindings, &params, groups);
        } else {
            let groups = [u(part.rows.div_ceil(TILE)), u(n_tok.div_ceil(TILE)), 1];
            gpu.dispatch("matmul", "matmul", ty, &bindings, &params, groups);
        }
    }
}
