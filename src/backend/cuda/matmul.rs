//! Launch wrappers for `kernels/matmul.cu`: `out[t] = W · x[t]` with the dequantization fused into
//! the kernel, for every weight type in `KERNEL_TYPES` (the weights stay in their ggml block
//! layout on the device).
//!
//! Two kernels per type: `matvec_<t>` (a warp per output row or pair of rows, memory bound; the
//! decode path) and `matmul_<t>` (64 x 64 output tiles through shared memory; prefill); and for
//! the types whose matvec pairs rows, `matvec_glu_<t>` (a gated feed-forward block's gate, up and
//! GLU in one decode launch).

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::{CudaBuf, CudaWeight, Dev};
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
        .flat_map(|n| [n.matvec.to_string(), n.matmul.to_string()])
        .chain(
            KERNEL_TYPES
                .iter()
                .filter_map(|&t| glu_kernel(t))
                .map(String::from),
        )
        .chain([QUANTIZE_Q8.to_string(), MATVEC_Q8_Q4_K.to_string()])
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

/// x to Q8 form (`quantize_q8`) and the int8 one-token Q4_K matvec (`matvec_q8_q4_k`).
const QUANTIZE_Q8: &str = "quantize_q8";
const MATVEC_Q8_Q4_K: &str = "matvec_q8_q4_k";

/// Bytes of x in Q8 form for `cols` values: `cols` int8, then a (d, d * sum) f32 pair per 32.
fn q8_bytes(cols: usize) -> usize {
    cols + 8 * (cols / 32)
}

/// Kernel names of one weight type, as static strings so that launching allocates nothing.
pub(crate) struct Names {
    /// `<t>`.
    pub suffix: &'static str,
    /// `matvec_<t>`.
    pub matvec: &'static str,
    /// `matmul_<t>`.
    pub matmul: &'static str,
    /// `get_rows_<t>` (kernels/embed.cu).
    pub get_rows: &'static str,
}

macro_rules! names {
    ($s:literal) => {
        Names {
            suffix: $s,
            matvec: concat!("matvec_", $s),
            matmul: concat!("matmul_", $s),
            get_rows: concat!("get_rows_", $s),
        }
    };
}

/// The kernel names for `ty` (None: no kernel, see [`type_suffix`]).
pub(crate) fn names(ty: GgmlType) -> Option<Names> {
    Some(match ty {
        GgmlType::F32 => names!("f32"),
        GgmlType::F16 => names!("f16"),
        GgmlType::BF16 => names!("bf16"),
        GgmlType::Q4_0 => names!("q4_0"),
        GgmlType::Q4_1 => names!("q4_1"),
        GgmlType::Q5_0 => names!("q5_0"),
        GgmlType::Q5_1 => names!("q5_1"),
        GgmlType::Q8_0 => names!("q8_0"),
        GgmlType::Q2_K => names!("q2_k"),
        GgmlType::Q3_K => names!("q3_k"),
        GgmlType::Q4_K => names!("q4_k"),
        GgmlType::Q5_K => names!("q5_k"),
        GgmlType::Q6_K => names!("q6_k"),
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
        if quantize_x(dev, &mut q8, w, x) {
            matvec_q8_q4_k(dev, w, &q8, out, add);
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
        (names.matmul, cfg)
    };
    let mut b = dev.stream.launch_builder(dev.func(name));
    b.arg(&*w.data)
        .arg(x)
        .arg(out)
        .arg(&rows)
        .arg(&cols)
        .arg(&nt)
        .arg(&add);
    // SAFETY: both kernels read W row r < rows at byte r * row_bytes(cols) (data holds
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
/// loop; weight and buffer allocations are 256-byte aligned), not taken by the int8 matvec, and
/// fused kernels on ([`super::CudaOptions::fused`]).
/// Returns false, launching nothing, otherwise: the caller runs the projections and the GLU
/// apart, which computes the same values in three launches.
pub(crate) fn matvec_glu(
    dev: &Dev,
    act: crate::model::arch::Activation,
    gate: &CudaWeight,
    up: &CudaWeight,
    x: &CudaBuf,
    n_tok: usize,
    out: &mut CudaBuf,
) -> bool {
    let Some(name) = glu_kernel(gate.ty) else {
        return false;
    };
    if !dev.fused
        || n_tok == 0
        || n_tok > MATVEC_MAX_TOK
        || up.ty != gate.ty
        || (up.rows, up.cols) != (gate.rows, gate.cols)
        || !gate.cols.is_multiple_of(128)
        || takes_int8(dev, gate, n_tok)
    {
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
    let mut b = dev.stream.launch_builder(dev.func(name));
    b.arg(&*gate.data)
        .arg(&*up.data)
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

/// Whether `W x` for `n_tok` tokens takes the int8 kernels (one-token Q4_K, when enabled; whole
/// 256-value blocks, so cols % 256 == 0, hold for every Q4_K weight).
fn takes_int8(dev: &Dev, w: &CudaWeight, n_tok: usize) -> bool {
    dev.int8_matvec && w.ty == GgmlType::Q4_K && n_tok == 1
}

/// `outs[i] = ws[i] x` over one input: with two or more weights taking the int8 kernels, x is
/// rounded to Q8 once for all of them (the rest run as [`matmul`] does).
pub(crate) fn matmul_many(
    dev: &Dev,
    ws: &[&CudaWeight],
    x: &CudaBuf,
    n_tok: usize,
    outs: &mut [&mut CudaBuf],
) {
    assert_eq!(ws.len(), outs.len(), "matmul_many: one output per weight");
    let int8 = ws.iter().filter(|w| takes_int8(dev, w, n_tok)).count();
    if int8 < 2 {
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            matmul(dev, w, x, n_tok, out, Store::Write);
        }
        return;
    }
    let mut q8 = super::lock(&dev.q8);
    let mut quantized: Option<usize> = None;
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        if dev.failed() || w.rows == 0 {
            continue;
        }
        if !takes_int8(dev, w, n_tok) {
            // Float kernels; they leave the Q8 scratch alone.
            matmul(dev, w, x, n_tok, out, Store::Write);
            continue;
        }
        check_shapes(w, x, n_tok, out);
        if quantized != Some(w.cols) {
            if !quantize_x(dev, &mut q8, w, x) {
                return;
            }
            quantized = Some(w.cols);
        }
        matvec_q8_q4_k(dev, w, &q8, out, 0);
    }
}

/// The int8 kernels' x in Q8 form. Recorded decode graphs hold the buffer's address, so a
/// buffer once used is never freed while the backend lives: growing keeps the old one in
/// `retired`. Weights reserve it as they load ([`reserve_q8`]), so decode steps never grow it.
#[derive(Default)]
pub(crate) struct Q8Scratch {
    cur: Option<CudaSlice<u8>>,
    retired: Vec<CudaSlice<u8>>,
}

/// Makes the Q8 scratch hold x for `w`'s columns when `w` will take the int8 matvec.
pub(crate) fn reserve_q8(dev: &Dev, w: &CudaWeight) -> crate::error::Result<()> {
    if !dev.int8_matvec || w.ty != GgmlType::Q4_K {
        return Ok(());
    }
    let need = q8_bytes(w.cols);
    let mut q8 = super::lock(&dev.q8);
    if q8.cur.as_ref().is_some_and(|b| b.len() >= need) {
        return Ok(());
    }
    if dev.captured_inputs().is_some() {
        return Err(crate::error::Error::Cuda(format!(
            "{}: the int8 matvec scratch cannot grow while a decode graph is being recorded",
            w.name
        )));
    }
    let buf = dev.stream.alloc_zeros::<u8>(need).map_err(|e| {
        crate::error::Error::Cuda(format!("allocating the int8 matvec scratch: {e}"))
    })?;
    if let Some(old) = q8.cur.replace(buf) {
        q8.retired.push(old);
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
    let need = q8_bytes(w.cols);
    let xq = match q8.cur.as_mut() {
        Some(b) if b.len() >= need => b,
        // Every weight reserves its scratch when it is made (CudaBackend::weight).
        _ => {
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
    let mut b = dev.stream.launch_builder(dev.func(QUANTIZE_Q8));
    b.arg(x).arg(&mut *xq).arg(&cols);
    // SAFETY: the kernel reads x[0 .. cols) (x holds n_tok * cols >= cols floats, checked by
    // check_shapes) and writes the first q8_bytes(cols) bytes of xq (which holds at least that
    // many, matched above), with one warp per 32 values (cols is whole 256-value blocks) and
    // grid-stride past the grid; the arguments match quantize_q8 (x, xq, cols).
    let r = unsafe { b.launch(cfg) };
    dev.check(QUANTIZE_Q8, r).is_some()
}

/// `out (+)= W x` for one token and Q4_K weights from x in Q8 form, which [`quantize_x`] wrote to
/// the start of the scratch for `w.cols` values (`matvec_q8_q4_k`). Shapes were checked by
/// [`check_shapes`].
fn matvec_q8_q4_k(dev: &Dev, w: &CudaWeight, q8: &Q8Scratch, out: &mut CudaBuf, add: i32) {
    let Some(xq) = q8.cur.as_ref() else { return };
    let (rows, cols) = (w.rows as i32, w.cols as i32);
    let cfg = warp_per_unit_cfg(w.rows);
    let mut b = dev.stream.launch_builder(dev.func(MATVEC_Q8_Q4_K));
    b.arg(&*w.data)
        .arg(xq)
        .arg(out)
        .arg(&rows)
        .arg(&cols)
        .arg(&add);
    // SAFETY: the kernel reads W rows r < rows at r * (cols / 256) * 144 bytes (data holds every
    // row, checked by check_shapes, and starts its own device allocation, 256-byte aligned, as
    // the 16-byte loads need), reads the Q8 form of cols values from the start of xq (written by
    // quantize_x for these cols, which sized it; also the start of an allocation) and writes
    // (with `add` also reads) out[r] for r < rows (checked by check_shapes); one warp per row,
    // grid-stride past the grid; the arguments match matvec_q8_q4_k (w, xq, y, rows, cols, add).
    let r = unsafe { b.launch(cfg) };
    dev.check(MATVEC_Q8_Q4_K, r);
}
