//! Matrix products with the weight dequantized in the shader (`shaders/matmul.wgsl`): `matvec`
//! for decode (a few tokens; `matvec_subgroup` where the adapter has subgroups), the tiled
//! `matmul` (f32 tiles, or `matmul_f16` with f16 tiles where the adapter has `shader-f16`) or
//! the barrier-free `matmul_rows` for prefill. Each weight type gets its own
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
    /// `matmul`: 64 × 64 tiles staged in f32 workgroup memory (GPUs without `shader-f16`).
    Tiled,
    /// `matmul_f16` (shaders/matmul_f16.wgsl) for quantized weights: the same tiles in f16
    /// workgroup memory, holding the activations' integer quants (GPUs with the `shader-f16`
    /// feature). Float weights run `matmul`, whose activations are not quantized.
    TiledF16,
    /// `matmul_rows`: no workgroup memory or barriers, one row and up to 8 tokens per
    /// invocation (only when forced: the tiles are faster even on llvmpipe).
    Rows,
}

/// Environment variable that forces the prefill shader (`tiled`, `tiled-f16` or `rows`); tests
/// run each.
pub const PREFILL_ENV: &str = "TORCHLESS_WGPU_PREFILL";

/// `forced`, else the variant of `all` that the environment variable `var` names (unset, empty
/// or `auto`: none); another value is an error listing the names.
fn forced_or_env<T: Copy>(
    forced: Option<T>,
    var: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<Option<T>, String> {
    if forced.is_some() {
        return Ok(forced);
    }
    match std::env::var(var).ok().as_deref() {
        None | Some("") | Some("auto") => Ok(None),
        Some(v) => match all.iter().copied().find(|&t| name(t) == v) {
            Some(t) => Ok(Some(t)),
            None => {
                let names: Vec<&str> = all.iter().map(|&t| name(t)).collect();
                Err(format!("{var}={v}: expected {} or auto", names.join(", ")))
            }
        },
    }
}

impl Prefill {
    /// Every prefill shader.
    pub const ALL: [Prefill; 3] = [Prefill::Tiled, Prefill::TiledF16, Prefill::Rows];

    /// `tiled-f16` where the adapter has the `shader-f16` feature, else `tiled`; or what
    /// `forced` (else [`PREFILL_ENV`]) names. Forcing `tiled-f16` on an adapter without the
    /// feature is an error saying so. `rows` is never the default: even on llvmpipe, which pays
    /// for every barrier, the tiles are faster (pp128 on SmolLM2 / Gemma: rows 12.8 / 16.1
    /// tok/s, tiled 15.4 / 19.4, tiled-f16 20.9 / 27.7; docs/performance.md).
    pub fn choose(
        forced: Option<Prefill>,
        features: wgpu::Features,
        adapter: &str,
    ) -> Result<Prefill, String> {
        let f16 = features.contains(wgpu::Features::SHADER_F16);
        let forced = forced_or_env(forced, PREFILL_ENV, &Prefill::ALL, Prefill::name)?;
        match forced {
            Some(Prefill::TiledF16) if !f16 => Err(format!(
                "the tiled-f16 prefill shader cannot run on '{adapter}': the adapter lacks the \
                 `shader-f16` feature (use tiled or rows)"
            )),
            Some(p) => Ok(p),
            None if f16 => Ok(Prefill::TiledF16),
            None => Ok(Prefill::Tiled),
        }
    }

    /// The shader's name.
    pub fn name(self) -> &'static str {
        match self {
            Prefill::Tiled => "tiled",
            Prefill::TiledF16 => "tiled-f16",
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
    /// Every decode shader.
    pub const ALL: [Matvec; 2] = [Matvec::Workgroup, Matvec::Subgroup];

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
        let forced = forced_or_env(forced, MATVEC_ENV, &Matvec::ALL, Matvec::name)?;
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
            // After the values: Q8_1's f16 block sums s, then every block's scale d.
            let block = if kind == ActKind::Q8_K { 256 } else { 32 };
            let sums = if kind == ActKind::Q8_1 { n / 32 } else { 0 };
            let Some(buf) = gpu.act_scratch(n + sums + n / block) else {
                return;
            };
            scratch = buf;
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
            if gpu.prefill == Prefill::TiledF16 && w.ty.act_kind() != ActKind::F32 {
                gpu.dispatch("matmul_f16", "matmul_f16", ty, &bindings, &params, groups);
            } else {
                gpu.dispatch("matmul", "matmul", ty, &bindings, &params, groups);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Prefill;

    /// A forced prefill shader is taken as named, except `tiled-f16` on an adapter without
    /// `shader-f16`, which is refused with the reason (never silently replaced).
    #[test]
    fn forced_prefill_needs_its_feature() {
        let none = wgpu::Features::empty();
        let f16 = wgpu::Features::SHADER_F16;
        for p in [Prefill::Tiled, Prefill::Rows] {
            assert_eq!(Prefill::choose(Some(p), none, "gpu"), Ok(p));
        }
        assert_eq!(
            Prefill::choose(Some(Prefill::TiledF16), f16, "gpu"),
            Ok(Prefill::TiledF16)
        );
        let err = Prefill::choose(Some(Prefill::TiledF16), none, "gpu").unwrap_err();
        assert!(
            err.contains("'gpu'") && err.contains("`shader-f16`"),
            "{err}"
        );
    }
}
