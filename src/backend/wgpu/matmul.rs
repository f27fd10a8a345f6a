//! Matrix products with the weight dequantized in the shader (`shaders/matmul.wgsl`): `matvec`
//! for decode (a few tokens; `matvec_subgroup` where the adapter has subgroups), the tiled
//! `matmul` or barrier-free `matmul_rows` for prefill. Each weight type gets its own
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

/// How `matvec` (decode) sums the lanes of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matvec {
    /// Through workgroup memory and one barrier (`matvec`): every adapter.
    Workgroup,
    /// In registers by subgroup shuffles (`matvec_subgroup`): adapters with the `subgroup`
    /// feature whose subgroups hold whole rows.
    Subgroup,
}

/// Environment variable that forces the decode shader (`workgroup` or `subgroup`).
pub const MATVEC_ENV: &str = "TORCHLESS_WGPU_MATVEC";

/// Subgroup sizes `matvec_subgroup` handles: at least one row of `MV_LANES` (8) lanes, and
/// whole subgroups in a workgroup of 64.
const SUBGROUP_SIZES: std::ops::RangeInclusive<u32> = 8..=64;

impl Matvec {
    /// `subgroup` where the adapter has the feature and a usable subgroup size, else
    /// `workgroup`; or what `forced` (else [`MATVEC_ENV`]) names. Forcing `subgroup` on an
    /// adapter that cannot run it is an error saying why.
    pub fn choose(
        forced: Option<Matvec>,
        features: wgpu::Features,
        info: &wgpu::AdapterInfo,
    ) -> Result<Matvec, String> {
        let usable = if !features.contains(wgpu::Features::SUBGROUP) {
            Err("the adapter lacks the `subgroup` feature".to_string())
        } else if !SUBGROUP_SIZES.contains(&info.subgroup_min_size)
            || !SUBGROUP_SIZES.contains(&info.subgroup_max_size)
        {
            Err(format!(
                "its subgroups are {}..={} invocations, outside the {}..={} the shader handles",
                info.subgroup_min_size,
                info.subgroup_max_size,
                SUBGROUP_SIZES.start(),
                SUBGROUP_SIZES.end()
            ))
        } else {
            Ok(())
        };
        let forced = match forced {
            Some(m) => Some(m),
            None => match std::env::var(MATVEC_ENV).ok().as_deref() {
                None | Some("") | Some("auto") => None,
                Some("workgroup") => Some(Matvec::Workgroup),
                Some("subgroup") => Some(Matvec::Subgroup),
                Some(other) => {
                    return Err(format!(
                        "{MATVEC_ENV}={other}: expected workgroup, subgroup or auto"
                    ))
                }
            },
        };
        match (forced, usable) {
            (Some(Matvec::Subgroup), Err(why)) => Err(format!(
                "the subgroup matvec shader cannot run on '{}': {why}",
                info.name
            )),
            (Some(m), _) => Ok(m),
            (None, Ok(())) => Ok(Matvec::Subgroup),
            (None, Err(_)) => Ok(Matvec::Workgroup),
        }
    }

    /// The shader's name.
    pub fn name(self) -> &'static str {
        match self {
            Matvec::Workgroup => "workgroup",
            Matvec::Subgroup => "subgroup",
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
            match gpu.matvec {
                Matvec::Workgroup => {
                    gpu.dispatch("matmul", "matvec", ty, &bindings, &params, groups)
                }
                Matvec::Subgroup => gpu.dispatch(
                    "matvec_subgroup",
                    "matvec_subgroup",
                    ty,
                    &bindings,
                    &params,
                    groups,
                ),
            }
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
