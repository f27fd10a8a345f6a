//! Launch wrappers for `kernels/matmul.cu`: `out[t] = W · x[t]` with the dequantization fused into
//! the kernel, for every weight type in `KERNEL_TYPES` (the weights stay in their ggml block
//! layout on the device).
//!
//! Two kernels per type: `matvec_<t>` (a warp per output row or pair of rows, memory bound; the
//! decode path) and `matmul_<t>` (64 x 64 output tiles through shared memory; prefill), with
//! `matmul_mma_<t>` (the same tiles on the tensor cores) for the quantized types; and for
//! the types whose matvec pairs rows, `matvec_glu_<t>` (a gated feed-forward block's gate, up and
//! GLU in one decode launch). With the int8 decode matvec on, one-token products of the types
//! in `int8_kernels` take `matvec_q8_<t>` / `matvec_glu_q8_<t>` instead, on x rounded to Q8, and
//! a decode token's Q, K and V take `matvec_qkv_rope_q8_<t>`, which also applies RoPE and stores
//! K and V in the cache.

use cudarc::driver::{CudaSlice, CudaView, LaunchConfig};

use super::launch::Launch;

use super::attention::{CudaKvCache, RopeHeads};
use super::{CudaBuf, CudaWeight, Dev, Q8Ready};
use crate::backend::NormSpec;
use crate::model::arch::NormKind;
use crate::quant::GgmlType;

/// Weight types with matmul and embedding kernels: every GGUF weight type.
pub(crate) const KERNEL_TYPES: &[GgmlType] = &GgmlType::WEIGHTS;

/// The `<t>` of the kernel names for `ty`, or None when no kernel handles it (the activation-only
/// Q8_1 / Q8_K, and I8, whose per-row scales the kernels do not take).
pub(crate) fn type_suffix(ty: GgmlType) -> Option<&'static str> {
    names(ty).map(|n| n.suffix)
}

/// Every entry point of `kernels/matmul.cu`.
pub(crate) fn entry_points() -> Vec<String> {
    KERNEL_TYPES
        .iter()
        .filter_map(|&t| names(t))
        .flat_map(|n| [Some(n.matvec), Some(n.matmul), n.matmul_mma])
        .flatten()
        .map(String::from)
        .chain(
            KERNEL_TYPES
                .iter()
                .filter_map(|&t| glu_kernel(t))
                .map(String::from),
        )
        .chain(
            KERNEL_TYPES
                .iter()
                .filter_map(|&t| matvec3_kernel(t))
                .map(String::from),
        )
        .chain(
            KERNEL_TYPES
                .iter()
                .filter_map(|&t| int8_kernels(t))
                .flat_map(|k| [k.matvec, k.glu, k.qkv_rope])
                .map(String::from),
        )
        .chain(std::iter::once(QUANTIZE_Q8.to_string()))
        .collect()
}

/// `matvec_glu_<t>`, the gated feed-forward matvec (gate, up and the GLU in one launch), for the
/// types whose layout-C loop works on two rows at once (the kernel pairs gate and up as those
/// two rows; see [`matvec_rows_per_warp`]).
fn glu_kernel(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::Q4_0 => "matvec_glu_q4_0",
        GgmlType::Q4_1 => "matvec_glu_q4_1",
        GgmlType::Q5_0 => "matvec_glu_q5_0",
        GgmlType::Q5_1 => "matvec_glu_q5_1",
        GgmlType::Q8_0 => "matvec_glu_q8_0",
        GgmlType::Q4_K => "matvec_glu_q4_k",
        GgmlType::Q5_K => "matvec_glu_q5_k",
        _ => return None,
    })
}

/// `matvec3_<t>`, up to [`SEGMENTS`] matrices of one type and width over one input in one decode
/// launch (Q, K and V), for the types with the layout-C loop.
fn matvec3_kernel(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::Q4_0 => "matvec3_q4_0",
        GgmlType::Q4_1 => "matvec3_q4_1",
        GgmlType::Q5_0 => "matvec3_q5_0",
        GgmlType::Q5_1 => "matvec3_q5_1",
        GgmlType::Q8_0 => "matvec3_q8_0",
        GgmlType::Q4_K => "matvec3_q4_k",
        GgmlType::Q5_K => "matvec3_q5_k",
        GgmlType::Q6_K => "matvec3_q6_k",
        _ => return None,
    })
}

/// x to Q8 form, read by the int8 matvecs ([`int8_kernels`]).
const QUANTIZE_Q8: &str = "quantize_q8";

/// The int8 one-token matvec of one weight type: `matvec_q8_<t>` over up to [`SEGMENTS`]
/// matrices, its gated feed-forward form `matvec_glu_q8_<t>` (kernels/q8dot.cuh), and
/// `matvec_qkv_rope_q8_<t>`, Q/K/V with RoPE and the K/V cache store in one launch
/// ([`matvec_qkv_rope_q8`]).
#[derive(Clone, Copy)]
pub(crate) struct Int8Kernels {
    matvec: &'static str,
    glu: &'static str,
    qkv_rope: &'static str,
}

/// The int8 kernels of `ty`: every quantized type. None for the float types, which keep the
/// float matvec in every mode.
pub(crate) fn int8_kernels(ty: GgmlType) -> Option<Int8Kernels> {
    macro_rules! k {
        ($s:literal) => {
            Int8Kernels {
                matvec: concat!("matvec_q8_", $s),
                glu: concat!("matvec_glu_q8_", $s),
                qkv_rope: concat!("matvec_qkv_rope_q8_", $s),
            }
        };
    }
    Some(match ty {
        GgmlType::Q4_0 => k!("q4_0"),
        GgmlType::Q4_1 => k!("q4_1"),
        GgmlType::Q5_0 => k!("q5_0"),
        GgmlType::Q5_1 => k!("q5_1"),
        GgmlType::Q8_0 => k!("q8_0"),
        GgmlType::Q2_K => k!("q2_k"),
        GgmlType::Q3_K => k!("q3_k"),
        GgmlType::Q4_K => k!("q4_k"),
        GgmlType::Q5_K => k!("q5_k"),
        GgmlType::Q6_K => k!("q6_k"),
        _ => return None,
    })
}

/// Matrices one `matvec3_<t>` or `matvec_q8_<t>` launch takes (Q, K and V of one input).
const SEGMENTS: usize = 3;

/// Bytes of x in Q8 form for `cols` values: `cols` int8, then a (d, d * sum) f32 pair per 32.
fn q8_bytes(cols: usize) -> usize {
    // The int8 values, a (d, d * sum q) float pair per 32-value group, and per group a float the
    // pending-RMSNorm form adds (its sum of squares; kernels/q8act.cuh).
    cols + 12 * (cols / 32)
}

/// Kernel names of one weight type, as static strings so that launching allocates nothing.
pub(crate) struct Names {
    /// `<t>`.
    pub suffix: &'static str,
    /// `matvec_<t>`.
    pub matvec: &'static str,
    /// `matmul_<t>`.
    pub matmul: &'static str,
    /// `matmul_mma_<t>`, the tensor-core tiles: quantized types only. Float weights keep exact
    /// f32 products: rounding x (and F32 weights) to bfloat16 would cost them the agreement with
    /// the CPU that they have now (2e-5 of the largest output, docs/performance.md), where a
    /// quantized weight's own rounding and the CPU's 8-bit x already dominate the error.
    pub matmul_mma: Option<&'static str>,
    /// `get_rows_<t>` (kernels/embed.cu).
    pub get_rows: &'static str,
}

macro_rules! names {
    ($s:literal) => {
        Names {
            suffix: $s,
            matvec: concat!("matvec_", $s),
            matmul: concat!("matmul_", $s),
            matmul_mma: None,
            get_rows: concat!("get_rows_", $s),
        }
    };
    ($s:literal, mma) => {
        Names {
            matmul_mma: Some(concat!("matmul_mma_", $s)),
            ..names!($s)
        }
    };
}

/// The kernel names for `ty` (None: no kernel, see [`type_suffix`]).
pub(crate) fn names(ty: GgmlType) -> Option<Names> {
    Some(match ty {
        GgmlType::F32 => names!("f32"),
        GgmlType::F16 => names!("f16"),
        GgmlType::BF16 => names!("bf16"),
        GgmlType::Q4_0 => names!("q4_0", mma),
        GgmlType::Q4_1 => names!("q4_1", mma),
        GgmlType::Q5_0 => names!("q5_0", mma),
        GgmlType::Q5_1 => names!("q5_1", mma),
        GgmlType::Q8_0 => names!("q8_0", mma),
        GgmlType::Q2_K => names!("q2_k", mma),
        GgmlType::Q3_K => names!("q3_k", mma),
        GgmlType::Q4_K => names!("q4_k", mma),
        GgmlType::Q5_K => names!("q5_k", mma),
        GgmlType::Q6_K => names!("q6_k", mma),
        GgmlType::Q8_1 | GgmlType::Q8_K | GgmlType::I8 => return None,
    })
}

/// Up to this many tokens take `matvec_<t>` (which handles 1-4 tokens per pass over the weights
/// and loops over passes); more take the tiled `matmul_<t>`. Measured on an H100 (4096 x 4096 and
/// 11008 x 4096 matrices, Q4_K / Q6_K / Q8_0): at 16 tokens matvec is 4-6x faster than the tiled
/// kernel, at 64 still faster, at 128 slower; 32 keeps a clear margin.
pub(crate) const MATVEC_MAX_TOK: usize = 32;

/// Warps per block of `matvec_<t>` (`MV_WARPS` in matmul.cu).
const MV_WARPS: u32 = 4;
/// Output tile of `matmul_<t>` (`MM_BM` x `MM_BN`) and its threads per block.
const MM_TILE: usize = 64;
const MM_THREADS: u32 = 256;
/// Sizes beyond this are rejected: the kernels index with 32-bit ints and add a tile or a grid
/// stride to them.
const MAX_DIM: usize = 1 << 30;

/// Output rows one warp of `matvec_<t>` handles at a time (`R` of the kernel's row loop: two for
/// the types with the coalesced-layout row loop, except Q6_K). Any grid is correct (the kernel
/// grid-strides over rows); this one gives each warp one row group.
fn matvec_rows_per_warp(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::Q4_0
        | GgmlType::Q4_1
        | GgmlType::Q5_0
        | GgmlType::Q5_1
        | GgmlType::Q8_0
        | GgmlType::Q4_K
        | GgmlType::Q5_K => 2,
        _ => 1,
    }
}

/// Whether a matmul writes its outputs or adds them to what the output buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Store {
    /// `out = W x`.
    Write,
    /// `out += W x` (the residual add fused into the projection).
    Add,
}

/// `out[t * w.rows + r] (+)= sum_c W[r][c] * x[t * w.cols + c]` for `t < n_tok`.
///
/// Panics when `x` or `out` is shorter than `n_tok` rows, when `w.data` is shorter than its rows,
/// or for a type without a kernel (rejected when the weight is loaded).
pub(crate) fn matmul(
    dev: &Dev,
    w: &CudaWeight,
    x: &CudaBuf,
    n_tok: usize,
    out: &mut CudaBuf,
    store: Store,
) {
    let ready = dev.take_q8_input(x, w.cols);
    if dev.failed() || n_tok == 0 || w.rows == 0 {
        return;
    }
    let names =
        names(w.ty).unwrap_or_else(|| panic!("matmul: no CUDA kernel for {} ({})", w.ty, w.name));
    check_shapes(w, x, n_tok, out);
    let (rows, cols, nt) = (w.rows as i32, w.cols as i32, n_tok as i32);
    let add = i32::from(store == Store::Add);
    if takes_int8(dev, w, n_tok) {
        let mut q8 = super::lock(&dev.q8);
        let eps = ready.map_or(-1.0, Q8Ready::eps_arg);
        if let Some(xq) = q8_x(dev, &mut q8, ready, w, x) {
            matvec_q8(dev, &mut [(w, out)], xq, add, eps, None);
        }
        return;
    }
    let (name, cfg) = if n_tok <= MATVEC_MAX_TOK {
        let rows_per_block = (MV_WARPS * matvec_rows_per_warp(w.ty)) as usize;
        let cfg = LaunchConfig {
            grid_dim: (w.rows.div_ceil(rows_per_block) as u32, 1, 1),
            block_dim: (32 * MV_WARPS, 1, 1),
            shared_mem_bytes: 0,
        };
        (names.matvec, cfg)
    } else {
        let name = match names.matmul_mma {
            Some(mma) if dev.mma_prefill => mma,
            _ => names.matmul,
        };
        assert!(
            n_tok.div_ceil(MM_TILE) <= 65_535,
            "matmul: {n_tok} tokens exceed the launch grid (65535 tiles of {MM_TILE})"
        );
        let cfg = LaunchConfig {
            grid_dim: (
                w.rows.div_ceil(MM_TILE) as u32,
                n_tok.div_ceil(MM_TILE) as u32,
                1,
            ),
            block_dim: (MM_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        (name, cfg)
    };
    let mut b = dev.kernel(name);
    b.weight(&w.data)
        .arg(x)
        .arg(out)
        .arg(&rows)
        .arg(&cols)
        .arg(&nt)
        .arg(&add);
    // SAFETY: each of the three kernels reads W row r < rows at byte r * row_bytes(cols) (data holds
    // rows * row_bytes bytes, asserted), read x[t * cols + c] and write out[t * rows + r] only for
    // t < n_tok, c < cols, r < rows (buffer lengths asserted; with `add` they also read those
    // outputs); every block outside the matrix returns or is masked; the sizes fit i32
    // (asserted); the arguments match the kernels' (w, x, y, rows, cols, n_tok, add).
    let r = unsafe { b.launch(cfg) };
    dev.check(name, r);
}

/// `out[t * rows + r] = act(gate_r · x_t) * (up_r · x_t)` as one `matvec_glu_<t>` launch, where
/// the pair allows it: at most [`MATVEC_MAX_TOK`] tokens (the decode path), gate and up of one
/// type that has the kernel and of one shape, columns in whole 128-column chunks (the layout-C
/// loop; weight and buffer allocations are 256-byte aligned), and fused kernels on
/// ([`super::CudaOptions::fused`]); or one token of a type taking the int8 matvec
/// (`matvec_glu_q8_<t>`, see [`matvec_glu_q8`]; `next` names the down projection that reads
/// `out`). Returns false, launching nothing, otherwise: the caller runs the projections and the
/// GLU apart, which computes the same values in three launches.
pub(crate) fn matvec_glu(
    dev: &Dev,
    act: crate::model::arch::Activation,
    [gate, up]: [&CudaWeight; 2],
    x: &CudaBuf,
    n_tok: usize,
    out: &mut CudaBuf,
    next: &[&CudaWeight],
) -> bool {
    if !dev.fused
        || n_tok == 0
        || n_tok > MATVEC_MAX_TOK
        || up.ty != gate.ty
        || (up.rows, up.cols) != (gate.rows, gate.cols)
    {
        return false;
    }
    if takes_int8(dev, gate, n_tok) {
        return matvec_glu_q8(dev, act, [gate, up], x, out, next);
    }
    let Some(name) = glu_kernel(gate.ty) else {
        return false;
    };
    if !gate.cols.is_multiple_of(128) {
        return false;
    }
    if dev.failed() || gate.rows == 0 {
        return true;
    }
    check_shapes(gate, x, n_tok, out);
    check_shapes(up, x, n_tok, out);
    let (rows, cols, nt) = (gate.rows as i32, gate.cols as i32, n_tok as i32);
    let a = super::activation::act_id(act);
    let cfg = LaunchConfig {
        grid_dim: (gate.rows.div_ceil(MV_WARPS as usize) as u32, 1, 1),
        block_dim: (32 * MV_WARPS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = dev.kernel(name);
    b.weight(&gate.data)
        .weight(&up.data)
        .arg(x)
        .arg(out)
        .arg(&rows)
        .arg(&cols)
        .arg(&nt)
        .arg(&a);
    // SAFETY: the kernel reads row r < rows of each weight at byte r * row_bytes(cols) (both hold
    // rows * row_bytes bytes and share the shape, asserted), reads x[t * cols + c] and writes
    // out[t * rows + r] only for t < n_tok, c < cols, r < rows (buffer lengths asserted); its
    // 16-byte loads need cols % 128 == 0 (checked) and aligned bases (fresh allocations); the
    // sizes fit i32 (asserted); the arguments match (wg, wu, x, y, rows, cols, n_tok, act).
    let r = unsafe { b.launch(cfg) };
    dev.check(name, r);
    true
}

/// [`matvec_glu`]'s int8 form (`matvec_glu_q8_<t>`, one token, gate and up of one type and shape):
/// x rounded to Q8 unless a fused kernel just did ([`super::Dev::take_q8_input`]), then one
/// launch. When one of `next` (the down projection) takes the int8 matvec, the kernel also
/// writes its output in Q8 form to [`GLU_SLOT`] (each 32-row group by the warp that finishes it
/// last) and marks it, so the down projection needs no `quantize_q8` either.
fn matvec_glu_q8(
    dev: &Dev,
    act: crate::model::arch::Activation,
    [gate, up]: [&CudaWeight; 2],
    x: &CudaBuf,
    out: &mut CudaBuf,
    next: &[&CudaWeight],
) -> bool {
    let ready = dev.take_q8_input(x, gate.cols);
    if dev.failed() || gate.rows == 0 {
        return true;
    }
    check_shapes(gate, x, 1, out);
    check_shapes(up, x, 1, out);
    let rows_n = gate.rows;
    let q8_out = feeds_int8(dev, next, rows_n);
    let mut guard = super::lock(&dev.q8);
    let q8 = &mut *guard;
    let eps = ready.map_or(-1.0, Q8Ready::eps_arg);
    let Some(in_slot) = q8_slot(dev, q8, ready, gate, x) else {
        return true;
    };
    let out_slot = other_slot(in_slot);
    // Where the Q8 output goes, with its group counters (both reserved with the weights).
    let (xq, q8_dst) = q8.in_and_out(in_slot, gate.cols, rows_n);
    let Some(xq) = xq else {
        return true;
    };
    let q8_dst = q8_dst.filter(|_| q8_out);
    let wrote_q8 = q8_dst.is_some();
    let (rows, cols, null) = (rows_n as i32, gate.cols as i32, 0u64);
    let a = super::activation::act_id(act);
    let name = int8_kernels(gate.ty)
        .expect("takes_int8 checked the type")
        .glu;
    let mut b = dev.kernel(name);
    b.weight(&gate.data)
        .weight(&up.data)
        .arg(xq)
        .arg(&mut *out)
        .arg(&rows)
        .arg(&cols)
        .arg(&a);
    match q8_dst {
        Some((yq, c)) => b.arg(yq).arg(c),
        None => b.arg(&null).arg(&null),
    };
    b.arg(&eps);
    // SAFETY: the kernel reads rows r < rows of both weights at r * row_bytes(cols) (both hold
    // every row and share the shape, checked by check_shapes; each starts its own 256-byte
    // aligned allocation, as its loads need, see int8_kernels), reads the Q8 form of cols values
    // from the start of xq (written for these cols by quantize_x or a fused kernel; its size
    // checked above) and writes out[r] for r < rows (checked); with a Q8 output (rows % 32 ==
    // 0), yq, another buffer than xq, holds q8_bytes(rows) bytes and the counters rows / 32
    // (checked above), zero before the launch and re-armed by it; otherwise both are null; one
    // warp per row, grid-stride past the grid; the arguments match matvec_glu_q8_<t> (wg, wu,
    // xq, y, rows, cols, act, yq, counters, eps; eps >= 0 only for a slot in pending form, which
    // holds the group sums after the pairs: q8_bytes counts them).
    let r = unsafe { b.launch(warp_per_unit_cfg(rows_n)) };
    if dev.check(name, r).is_some() && wrote_q8 {
        dev.set_q8_input(out, rows_n, out_slot);
    }
    true
}

/// The asserts every launch relies on: W holds its rows, x and out hold `n_tok` rows, the sizes
/// fit the kernels' 32-bit indexing. Panics otherwise (shapes come from a validated model).
fn check_shapes(w: &CudaWeight, x: &CudaBuf, n_tok: usize, out: &CudaBuf) {
    let row_bytes = w.ty.row_bytes(w.cols).unwrap_or_else(|| {
        panic!(
            "matmul: {} has {} columns, not whole {} blocks",
            w.name, w.cols, w.ty
        )
    });
    assert!(
        w.rows < MAX_DIM && w.cols < MAX_DIM && n_tok < MAX_DIM,
        "matmul: {} x {} for {n_tok} tokens exceeds the kernels' 32-bit indexing",
        w.rows,
        w.cols
    );
    assert!(
        w.data.len() >= w.rows * row_bytes,
        "matmul: {} holds {} bytes, {} rows need {}",
        w.name,
        w.data.len(),
        w.rows,
        w.rows * row_bytes
    );
    assert!(
        x.len() >= n_tok * w.cols,
        "matmul: input shorter than {n_tok} x {}",
        w.cols
    );
    assert!(
        out.len() >= n_tok * w.rows,
        "matmul: output shorter than {n_tok} x {}",
        w.rows
    );
}

/// Whether `W x` for `n_tok` tokens takes the int8 kernels: one token of a type that has them
/// ([`int8_kernels`]), when enabled. Every such weight's rows are whole blocks of 32 or 256
/// values, the Q8 form's 32-value groups.
pub(crate) fn takes_int8(dev: &Dev, w: &CudaWeight, n_tok: usize) -> bool {
    dev.int8_matvec && n_tok == 1 && int8_kernels(w.ty).is_some()
}

/// Whether a fused kernel should also write its one-row output of `cols` values in Q8 form: the
/// fused kernels run, the width is whole 32-value groups, and one of `next` (the weights that
/// read the output next) takes the int8 matvec.
pub(crate) fn feeds_int8(dev: &Dev, next: &[&CudaWeight], cols: usize) -> bool {
    dev.fused
        && cols.is_multiple_of(32)
        && next.iter().any(|f| f.cols == cols && takes_int8(dev, f, 1))
}

/// `outs[i] = ws[i] x` over one input. With fused kernels on, consecutive weights of one type and
/// width share one launch (Q, K and V): `matvec3_<t>` for decode-sized batches, or for the ones
/// taking the int8 kernels `matvec_q8_<t>`, after one rounding of x to Q8 for all of them (none
/// when a fused norm just wrote it). The rest run as [`matmul`] does.
pub(crate) fn matmul_many(
    dev: &Dev,
    ws: &[&CudaWeight],
    x: &CudaBuf,
    n_tok: usize,
    outs: &mut [&mut CudaBuf],
) {
    assert_eq!(ws.len(), outs.len(), "matmul_many: one output per weight");
    // The slot and width of x in Q8 form, once it is there.
    let mut quantized = ws
        .iter()
        .find(|w| takes_int8(dev, w, n_tok))
        .and_then(|w| dev.take_q8_input(x, w.cols).map(|ready| (ready, w.cols)));
    // A weight without rows has nothing to write.
    let mut pairs: Vec<(&CudaWeight, &mut CudaBuf)> = ws
        .iter()
        .copied()
        .zip(outs.iter_mut().map(|o| &mut **o))
        .filter(|(w, _)| w.rows > 0)
        .collect();
    let mut rest = &mut pairs[..];
    while !rest.is_empty() && !dev.failed() {
        let (w0, int8) = (rest[0].0, takes_int8(dev, rest[0].0, n_tok));
        let shared = dev.fused && (int8 || takes_matvec3(w0, n_tok));
        let n = if shared {
            rest.iter()
                .take(SEGMENTS)
                .take_while(|(w, _)| {
                    (w.ty, w.cols) == (w0.ty, w0.cols) && takes_int8(dev, w, n_tok) == int8
                })
                .count()
        } else {
            1
        };
        let (group, tail) = rest.split_at_mut(n);
        rest = tail;
        for (w, out) in group.iter() {
            check_shapes(w, x, n_tok, out);
        }
        if int8 {
            let mut q8 = super::lock(&dev.q8);
            let ready = quantized
                .filter(|&(_, cols)| cols == w0.cols)
                .map(|(r, _)| r);
            let Some(xq) = q8_x(dev, &mut q8, ready, w0, x) else {
                return;
            };
            let ready = ready.unwrap_or(Q8Ready::plain(X_SLOT));
            quantized = Some((ready, w0.cols));
            matvec_q8(dev, group, xq, 0, ready.eps_arg(), None);
        } else if shared {
            matvec3(dev, group, x, n_tok);
        } else {
            let (w, out) = &mut group[0];
            matmul(dev, w, x, n_tok, out, Store::Write);
        }
    }
}

/// The rows of each of up to [`SEGMENTS`] matrices of one launch, 0 for the unused ones; panics
/// when there are none or too many, or their rows together exceed the kernels' 32-bit indexing.
fn segment_rows(what: &str, segs: &[(&CudaWeight, &mut CudaBuf)]) -> [i32; SEGMENTS] {
    assert!(
        (1..=SEGMENTS).contains(&segs.len()),
        "{what}: 1 to {SEGMENTS} matrices"
    );
    let total: usize = segs.iter().map(|(w, _)| w.rows).sum();
    assert!(
        total < MAX_DIM,
        "{what}: {total} rows exceed 32-bit indexing"
    );
    std::array::from_fn(|i| segs.get(i).map_or(0, |(w, _)| w.rows as i32))
}

/// Pushes the (w, y, rows) arguments of a [`SEGMENTS`]-matrix kernel; unused matrices get null
/// pointers (their 0 rows are never read).
fn push_segments(
    b: &mut Launch<'_>,
    segs: &mut [(&CudaWeight, &mut CudaBuf)],
    rows: &[i32; SEGMENTS],
    null: &u64,
) {
    let used = segs.len();
    for ((w, out), rows) in segs.iter_mut().zip(rows) {
        b.weight(&w.data).arg(&mut **out).arg(rows);
    }
    for rows in &rows[used..] {
        b.arg(null).arg(null).arg(rows);
    }
}

/// Whether `matvec3_<t>` can take `w` for `n_tok` tokens: a decode-sized batch and the
/// layout-C loop (whole 128-column chunks; weight and buffer allocations are 256-byte aligned).
fn takes_matvec3(w: &CudaWeight, n_tok: usize) -> bool {
    matvec3_kernel(w.ty).is_some()
        && (1..=MATVEC_MAX_TOK).contains(&n_tok)
        && w.cols.is_multiple_of(128)
}

/// `out_s = W_s x` for each of up to [`SEGMENTS`] weights of one type and width in one
/// `matvec3_<t>` launch ([`takes_matvec3`] holds; shapes checked by [`check_shapes`]).
fn matvec3(dev: &Dev, segs: &mut [(&CudaWeight, &mut CudaBuf)], x: &CudaBuf, n_tok: usize) {
    let rows = segment_rows("matvec3", segs);
    let (ty, cols) = (segs[0].0.ty, segs[0].0.cols);
    assert!(
        segs.iter().all(|(w, _)| (w.ty, w.cols) == (ty, cols)),
        "matvec3: matrices of one type and width"
    );
    let name = matvec3_kernel(ty).expect("takes_matvec3 checked the type");
    let per_warp = matvec_rows_per_warp(ty) as usize;
    let groups: usize = segs.iter().map(|(w, _)| w.rows.div_ceil(per_warp)).sum();
    let (cols, nt, null) = (cols as i32, n_tok as i32, 0u64);
    let mut b = dev.kernel(name);
    push_segments(&mut b, segs, &rows, &null);
    b.arg(x).arg(&cols).arg(&nt);
    let cfg = LaunchConfig {
        grid_dim: (groups.div_ceil(MV_WARPS as usize) as u32, 1, 1),
        block_dim: (32 * MV_WARPS, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the kernel reads rows r < rows_s of each W_s at r * row_bytes(cols) (data holds
    // every row, checked by check_shapes), reads x[t * cols + c] and writes out_s[t * rows_s + r]
    // only for t < n_tok, c < cols, r < rows_s (checked); its 16-byte loads need cols % 128 == 0
    // (takes_matvec3) and aligned bases (fresh allocations); matrices beyond segs have 0 rows;
    // the sizes fit i32 (asserted); the arguments match ((w, y, rows) x 3, x, cols, n_tok).
    let r = unsafe { b.launch(cfg) };
    dev.check(name, r);
}

/// The int8 kernels' x in Q8 form, in two slots: [`X_SLOT`] takes what `quantize_q8`, the
/// fused norms and attention write; [`GLU_SLOT`] the gated FFN kernel's output, which the down
/// projection reads (the kernel still reads its own input from the other slot while it writes).
/// Also the gated kernel's arrival counters, one per 32 output rows (zero between launches).
/// Recorded decode graphs hold these buffers' addresses, so a buffer once used is never freed
/// while the backend lives: growing keeps the old one in `retired`. Weights reserve them as they
/// load ([`reserve_q8`]), so decode steps never grow them.
#[derive(Default)]
pub(crate) struct Q8Scratch {
    slots: [Option<CudaSlice<u8>>; 2],
    counters: Option<CudaSlice<u32>>,
    retired: Vec<CudaSlice<u8>>,
    retired_counters: Vec<CudaSlice<u32>>,
}

/// The Q8 slot of the int8 matvecs' x.
pub(crate) const X_SLOT: usize = 0;
/// The Q8 slot of the gated FFN kernel's output.
const GLU_SLOT: usize = 1;

/// The slot a kernel reading x from `slot` writes its own output's Q8 form to (it still reads
/// its input while it writes).
fn other_slot(slot: usize) -> usize {
    if slot == GLU_SLOT {
        X_SLOT
    } else {
        GLU_SLOT
    }
}

impl Q8Scratch {
    /// For a kernel that reads x from slot `input` and writes its output's Q8 form to the other
    /// one: the input slot when it has room for `in_cols` values, and the other slot with the
    /// group counters when they have room for `out_cols` values (32 rows a counter).
    #[allow(clippy::type_complexity)]
    fn in_and_out(
        &mut self,
        input: usize,
        in_cols: usize,
        out_cols: usize,
    ) -> (
        Option<&CudaSlice<u8>>,
        Option<(&mut CudaSlice<u8>, &mut CudaSlice<u32>)>,
    ) {
        let [s0, s1] = &mut self.slots;
        let (xin, xout) = if input == X_SLOT { (s0, s1) } else { (s1, s0) };
        let xq = xin.as_ref().filter(|b| b.len() >= q8_bytes(in_cols));
        let out = xout
            .as_mut()
            .filter(|b| b.len() >= q8_bytes(out_cols))
            .zip(self.counters.as_mut().filter(|c| c.len() >= out_cols / 32));
        (xq, out)
    }

    /// Slot `slot`, when it has room for `cols` values in Q8 form.
    pub(crate) fn slot(&mut self, slot: usize, cols: usize) -> Option<&mut CudaSlice<u8>> {
        self.slots[slot]
            .as_mut()
            .filter(|b| b.len() >= q8_bytes(cols))
    }

    /// [`X_SLOT`], when it has room for `cols` values in Q8 form.
    pub(crate) fn holding(&mut self, cols: usize) -> Option<&mut CudaSlice<u8>> {
        self.slot(X_SLOT, cols)
    }
}

/// Makes the Q8 scratch hold x for `w`'s columns, and the gated kernel's counters cover its rows,
/// when `w` will take the int8 matvec.
pub(crate) fn reserve_q8(dev: &Dev, w: &CudaWeight) -> crate::error::Result<()> {
    if !dev.int8_matvec || int8_kernels(w.ty).is_none() {
        return Ok(());
    }
    let (need, groups) = (q8_bytes(w.cols), w.rows.div_ceil(32));
    let mut q8 = super::lock(&dev.q8);
    let slots_ok = q8
        .slots
        .iter()
        .all(|s| s.as_ref().is_some_and(|b| b.len() >= need));
    let counters_ok = q8.counters.as_ref().is_some_and(|c| c.len() >= groups);
    if slots_ok && counters_ok {
        return Ok(());
    }
    if dev.captured_inputs().is_some() {
        return Err(crate::error::Error::Cuda(format!(
            "{}: the int8 matvec scratch cannot grow while a decode graph is being recorded",
            w.name
        )));
    }
    let alloc_err =
        |e| crate::error::Error::Cuda(format!("allocating the int8 matvec scratch: {e}"));
    let q8 = &mut *q8;
    for slot in &mut q8.slots {
        if slot.as_ref().is_some_and(|b| b.len() >= need) {
            continue;
        }
        let buf = dev.stream.alloc_zeros::<u8>(need).map_err(alloc_err)?;
        if let Some(old) = slot.replace(buf) {
            q8.retired.push(old);
        }
    }
    if !counters_ok {
        let c = dev.stream.alloc_zeros::<u32>(groups).map_err(alloc_err)?;
        if let Some(old) = q8.counters.replace(c) {
            q8.retired_counters.push(old);
        }
    }
    Ok(())
}

/// The int8 kernels' launch: MV_WARPS warps a block, one warp per unit (a 32-value group or a
/// row), at most 65535 blocks (the kernels grid-stride over the rest).
fn warp_per_unit_cfg(units: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (units.div_ceil(MV_WARPS as usize).min(65_535) as u32, 1, 1),
        block_dim: (32 * MV_WARPS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// x (`w.cols` values) to Q8 form at the start of the scratch (`quantize_q8`); false when it
/// could not be (the error is recorded).
fn quantize_x(dev: &Dev, q8: &mut Q8Scratch, w: &CudaWeight, x: &CudaBuf) -> bool {
    let xq = match q8.holding(w.cols) {
        Some(b) => b,
        // Every weight reserves its scratch when it is made (CudaBackend::weight).
        None => {
            dev.fail(format!(
                "matmul {}: no int8 matvec scratch for {} columns (the weight was not made by \
                 this backend)",
                w.name, w.cols
            ));
            return false;
        }
    };
    let cols = w.cols as i32;
    let cfg = warp_per_unit_cfg(w.cols / 32);
    let mut b = dev.kernel(QUANTIZE_Q8);
    b.arg(x).arg(&mut *xq).arg(&cols);
    // SAFETY: the kernel reads x[0 .. cols) (x holds n_tok * cols >= cols floats, checked by
    // check_shapes) and writes the first q8_bytes(cols) bytes of xq (which holds at least that
    // many, matched above), with one warp per 32 values (cols is whole 32-value blocks) and
    // grid-stride past the grid; the arguments match quantize_q8 (x, xq, cols).
    let r = unsafe { b.launch(cfg) };
    dev.check(QUANTIZE_Q8, r).is_some()
}

/// x for `w` in Q8 form: the slot a fused kernel just wrote it to (`ready`, from
/// [`super::Dev::take_q8_input`]), else [`X_SLOT`] after [`quantize_x`]; None when that failed
/// (the error is recorded).
fn q8_x<'a>(
    dev: &Dev,
    q8: &'a mut Q8Scratch,
    ready: Option<Q8Ready>,
    w: &CudaWeight,
    x: &CudaBuf,
) -> Option<&'a CudaSlice<u8>> {
    let slot = q8_slot(dev, q8, ready, w, x)?;
    q8.slot(slot, w.cols).map(|b| &*b)
}

/// The slot holding x for `w` in Q8 form: `ready`, else [`X_SLOT`] after [`quantize_x`]; None
/// when that failed (the error is recorded).
fn q8_slot(
    dev: &Dev,
    q8: &mut Q8Scratch,
    ready: Option<Q8Ready>,
    w: &CudaWeight,
    x: &CudaBuf,
) -> Option<usize> {
    match ready {
        Some(r) => Some(r.slot),
        None => quantize_x(dev, q8, w, x).then_some(X_SLOT),
    }
}

/// The next RMSNorm folded into a residual projection's `matvec_q8_<t>` launch: the norm's
/// weight and offset, where the projection's output goes in pending form, and the group counters.
struct NormFold<'a> {
    w: &'a CudaWeight,
    w_off: f32,
    zq: &'a mut CudaSlice<u8>,
    counters: &'a mut CudaSlice<u32>,
}

/// `out_s (+)= W_s x` for one token and each of up to [`SEGMENTS`] weights of one int8 type and
/// width in one `matvec_q8_<t>` launch, from x in Q8 form at the start of the scratch (written for
/// `w.cols` values by [`quantize_x`], a fused norm, attention or the gated kernel; `xq` holds
/// them, checked by [`Q8Scratch::slot`]; `eps` >= 0 when that is the pending-RMSNorm form).
/// With `fold` (one matrix, see [`matvec_add_norm_q8`]), the kernel also writes its output in
/// pending form. Shapes were checked by [`check_shapes`].
fn matvec_q8(
    dev: &Dev,
    segs: &mut [(&CudaWeight, &mut CudaBuf)],
    xq: &CudaSlice<u8>,
    add: i32,
    eps: f32,
    fold: Option<NormFold<'_>>,
) {
    let rows = segment_rows("matvec_q8", segs);
    let (ty, cols) = (segs[0].0.ty, segs[0].0.cols);
    assert!(
        segs.iter().all(|(w, _)| (w.ty, w.cols) == (ty, cols)),
        "matvec_q8: matrices of one type and width"
    );
    assert!(
        fold.is_none() || (segs.len() == 1 && segs[0].0.rows.is_multiple_of(32)),
        "matvec_q8: a norm folds into one matrix of whole 32-row groups"
    );
    let name = int8_kernels(ty)
        .expect("takes_int8 checked the type")
        .matvec;
    let total: usize = segs.iter().map(|(w, _)| w.rows).sum();
    let (cols, null, zero) = (cols as i32, 0u64, 0i32);
    let mut b = dev.kernel(name);
    push_segments(&mut b, segs, &rows, &null);
    b.arg(xq).arg(&cols).arg(&add).arg(&eps);
    let nwty;
    match fold {
        Some(f) => {
            nwty = super::vec_type_id(f.w.ty);
            b.arg(f.w.data.as_ref())
                .arg(&nwty)
                .arg(&f.w_off)
                .arg(f.zq)
                .arg(f.counters)
        }
        None => b.arg(&null).arg(&zero).arg(&0f32).arg(&null).arg(&null),
    };
    // SAFETY: the kernel reads rows r < rows_s of each W_s at r * row_bytes(cols) (data holds
    // every row, checked by check_shapes, and starts its own device allocation, 256-byte aligned,
    // as the loads of int8_kernels need), reads the Q8 form of cols values from the start of xq
    // (written for these cols by quantize_x or a fused kernel, which checked its size, with the
    // group sums that q8_bytes counts when eps >= 0; also the start of an allocation) and writes
    // (with `add` also reads) out_s[r] for r < rows_s (checked by check_shapes); matrices beyond
    // segs have 0 rows; with a fold, its caller checked that the norm weight holds rows_0
    // values, that zq (another slot than xq) holds q8_bytes(rows_0) bytes and the counters
    // rows_0 / 32, zero before the launch and re-armed by it, and rows_0 % 32 == 0 (asserted);
    // without one, those pointers are null and never read; one warp per row, grid-stride past
    // the grid; the arguments match matvec_q8_<t> ((w, y, rows) x 3, xq, cols, add, eps, nw,
    // nwty, w_off, zq, counters).
    let r = unsafe { b.launch(warp_per_unit_cfg(total)) };
    dev.check(name, r);
}

/// `acc += W x` for one token, then `out = norm(acc)` for the matmuls by `feeds` that come next,
/// folded into the one `matvec_q8_<t>` launch: the kernel writes `acc` in pending-RMSNorm form
/// (kernels/q8act.cuh) to the Q8 slot its input is not in, and marks it as standing for `out`
/// ([`Dev::set_q8_pending`]); `out` itself is not written. Returns false, launching nothing,
/// where that does not apply: the fold is off ([`super::CudaOptions::norm_fold`]), more than one
/// token, not an RMSNorm or one with a bias, `W` without the int8 matvec or its rows not whole
/// 32-value groups, or any of `feeds` not an int8 matvec of `acc`'s width (each reads the row
/// only in Q8 form). The caller then runs the projection and the norm apart.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matvec_add_norm_q8(
    dev: &Dev,
    w: &CudaWeight,
    x: &CudaBuf,
    n_tok: usize,
    acc: &mut CudaBuf,
    spec: NormSpec,
    nw: &CudaWeight,
    nb: Option<&CudaWeight>,
    out: &CudaBuf,
    feeds: &[&CudaWeight],
) -> bool {
    let dim = w.rows;
    let applies = dev.norm_fold
        && n_tok == 1
        && spec.kind == NormKind::Rms
        && nb.is_none()
        && takes_int8(dev, w, 1)
        && dim.is_multiple_of(32)
        && !feeds.is_empty()
        && feeds.iter().all(|f| f.cols == dim && takes_int8(dev, f, 1));
    if !applies {
        return false;
    }
    let ready = dev.take_q8_input(x, w.cols);
    if dev.failed() || dim == 0 {
        return true;
    }
    check_shapes(w, x, 1, acc);
    assert!(nw.cols >= dim, "norm weight {} shorter than {dim}", nw.name);
    let eps = ready.map_or(-1.0, Q8Ready::eps_arg);
    let mut guard = super::lock(&dev.q8);
    let q8 = &mut *guard;
    let Some(in_slot) = q8_slot(dev, q8, ready, w, x) else {
        return true;
    };
    let out_slot = other_slot(in_slot);
    let (Some(xq), Some((zq, counters))) = q8.in_and_out(in_slot, w.cols, dim) else {
        // The feeds reserved both slots for `dim` columns, `w` the counters for its rows.
        dev.fail(format!(
            "{}: no int8 matvec scratch for the norm folded into it (the weights were not made \
             by this backend)",
            w.name
        ));
        return true;
    };
    let fold = NormFold {
        w: nw,
        w_off: spec.w_offset,
        zq,
        counters,
    };
    matvec_q8(dev, &mut [(w, acc)], xq, 1, eps, Some(fold));
    if !dev.failed() {
        dev.set_q8_pending(out, dim, out_slot, spec.eps);
    }
    true
}

/// Whether [`matvec_qkv_rope_q8`] takes Q, K and V (`ws`) of `n_tok` tokens into a cache
/// `k_width` / `v_width` wide: it is on ([`super::CudaOptions::qkv_rope`]), one token, one quantized
/// type and width for all three, Q and K `heads` exactly (head_dim even, n_rot <= head_dim and
/// even), V one cache row (even). Elsewhere the matmuls and the RoPE + store run apart.
pub(crate) fn takes_qkv_rope(
    dev: &Dev,
    ws: [&CudaWeight; 3],
    n_tok: usize,
    h: &RopeHeads,
    k_width: usize,
    v_width: usize,
) -> bool {
    let [wq, wk, wv] = ws;
    dev.qkv_rope
        && n_tok == 1
        && ws
            .iter()
            .all(|w| takes_int8(dev, w, 1) && (w.ty, w.cols) == (wq.ty, wq.cols) && w.rows > 0)
        && h.head_dim.is_multiple_of(2)
        && h.n_rot.is_multiple_of(2)
        && h.n_rot <= h.head_dim
        && wq.rows == h.n_head * h.head_dim
        && wk.rows == h.n_head_kv * h.head_dim
        && wk.rows == k_width
        && wv.rows == v_width
        && v_width.is_multiple_of(2)
        && wq.rows + wk.rows + wv.rows < MAX_DIM
}

/// `q, k, v = Wq x, Wk x, Wv x` for one token, RoPE on `q` and `k` with the (cos, sin) table
/// `cs` (`[n_rot / 2][2]`), and `k`, `v` rounded to f16 at position `pos0` of `layer`'s cache
/// (in a decode graph, the step's position), in one `matvec_qkv_rope_q8_<t>` launch: the sums of
/// [`matmul_many`]'s int8 launch and the rotation and rounding of
/// [`CudaKvCache::rope_store`], bit for bit. [`takes_qkv_rope`] holds.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matvec_qkv_rope_q8(
    dev: &Dev,
    ws: [&CudaWeight; 3],
    x: &CudaBuf,
    [q, k, v]: [&mut CudaBuf; 3],
    kv: &mut CudaKvCache,
    layer: usize,
    pos0: usize,
    h: &RopeHeads,
    cs: &CudaView<'_, f32>,
) {
    let [wq, wk, wv] = ws;
    let ready = dev.take_q8_input(x, wq.cols);
    if dev.failed() {
        return;
    }
    for (w, out) in [(wq, &*q), (wk, &*k), (wv, &*v)] {
        check_shapes(w, x, 1, out);
    }
    assert!(
        cs.len() >= h.n_rot,
        "qkv + rope: table shorter than {}",
        h.n_rot
    );
    let mut q8 = super::lock(&dev.q8);
    let Some(xq) = q8_x(dev, &mut q8, ready, wq, x) else {
        return;
    };
    let eps = ready.map_or(-1.0, Q8Ready::eps_arg);
    let name = int8_kernels(wq.ty)
        .expect("takes_qkv_rope checked the type")
        .qkv_rope;
    let units = (wq.rows + wk.rows + wv.rows) / 2;
    let inputs = dev.captured_inputs();
    let (pos_dev, null) = (inputs.as_ref().map(|i| i.pos()), 0u64);
    let (kc, vc) = kv.layer_for(layer, pos0, 1);
    let (cols, p, lay) = (
        wq.cols as i32,
        pos0 as i32,
        super::rope::layout_id(h.layout),
    );
    let (hq, hk, d, r, vw) = (
        h.n_head as i32,
        h.n_head_kv as i32,
        h.head_dim as i32,
        h.n_rot as i32,
        wv.rows as i32,
    );
    let mut b = dev.kernel(name);
    b.weight(&wq.data)
        .arg(q)
        .weight(&wk.data)
        .arg(k)
        .weight(&wv.data)
        .arg(v);
    b.arg(xq)
        .arg(&cols)
        .arg(&eps)
        .arg(cs)
        .arg(kc)
        .arg(vc)
        .arg(&p);
    super::attention::push_pos(&mut b, &pos_dev, &null);
    b.arg(&hq).arg(&hk).arg(&d).arg(&r).arg(&lay).arg(&vw);
    // SAFETY: the kernel reads every row of Wq, Wk and Wv (data holds them, checked by
    // check_shapes; allocation starts, aligned as int8_kernels' loads need), the Q8 form of cols
    // values from the start of xq (written for these cols, with the group sums when eps >= 0,
    // as in matvec_q8), cs below n_rot (asserted), and writes q / k / v below their rows
    // (checked) and the layer's K / V cache row pos, below (pos + 1) * kw / * vw <= n_ctx * kw /
    // * vw (layer_for checked pos0; in a decode graph the executor checks the step's position
    // against the context before every replay); Q and K rows are whole heads of head_dim (even,
    // n_rot <= head_dim) and V's rows even (takes_qkv_rope); one warp per two rows, grid-stride
    // past the grid; the arguments match matvec_qkv_rope_q8_<t> (wq, q, wk, k, wv, v, xq, cols,
    // eps, cs, kc, vc, pos0, pos_dev, hq, hk, head_dim, n_rot, layout, vw).
    let r = unsafe { b.launch(warp_per_unit_cfg(units)) };
    dev.check(name, r);
}
