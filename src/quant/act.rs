//! Activation quantization (scalar reference) and the [`Acts`] / [`ActRow`] containers.
//!
//! The quantizers round exactly like ggml's `quantize_row_q8_0_ref`,
//! `quantize_row_q8_1_ref` and `quantize_row_q8_K_ref` (and therefore like gguf-py's
//! `gguf.quants.quantize(.., Q8_0)`):
//! - Q8_0 / Q8_1: `d = amax / 127`, `id = 1/d` (0 when d is 0), `q = roundf(x * id)`
//!   (half away from zero); `d` is stored as f16 (round to nearest even), Q8_1 also stores
//!   `s = f16(sum(q) * d)`.
//! - Q8_K: `max` is the first value of largest magnitude, `iscale = -127 / max`,
//!   `q = min(127, round_half_even(iscale * x))`, `d = 1 / iscale` kept as f32, plus the
//!   sums of each group of 16 quants.
//!
//! Note: llama.cpp's x86 build quantizes Q8_0/Q8_1 activations with an AVX variant that
//! multiplies by `127 / amax` and rounds half to even; it differs from the reference only
//! on exact ties and one-ulp differences of the multiplier (rare, and at most one quant step).

use super::blocks::{BlockQ8_0, BlockQ8_1, BlockQ8_K, QK8_0, QK8_1, QK_K};
use super::types::ActKind;
use half::f16;

/// Quantize one 32-value block to `qs` with scale `amax / 127`; returns that scale (f32).
fn quantize_block_q8(xb: &[f32], qs: &mut [i8; 32]) -> f32 {
    let amax = xb.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in qs.iter_mut().zip(xb) {
        *q = (v * id).round() as i8;
    }
    d
}

/// Reference Q8_0 quantization of `x` (a multiple of 32 long) into `y` (`x.len() / 32` blocks).
pub fn quantize_row_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    assert_eq!(
        x.len(),
        y.len() * QK8_0,
        "quantize_row_q8_0: length mismatch"
    );
    for (xb, yb) in x.chunks_exact(QK8_0).zip(y.iter_mut()) {
        yb.d = f16::from_f32(quantize_block_q8(xb, &mut yb.qs));
    }
}

/// Reference Q8_1 quantization of `x` (a multiple of 32 long) into `y` (`x.len() / 32` blocks).
pub fn quantize_row_q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    assert_eq!(
        x.len(),
        y.len() * QK8_1,
        "quantize_row_q8_1: length mismatch"
    );
    for (xb, yb) in x.chunks_exact(QK8_1).zip(y.iter_mut()) {
        let d = quantize_block_q8(xb, &mut yb.qs);
        yb.d = f16::from_f32(d);
        let sum: i32 = yb.qs.iter().map(|&q| q as i32).sum();
        yb.s = f16::from_f32(sum as f32 * d);
    }
}

/// Reference Q8_K quantization of `x` (a multiple of 256 long) into `y` (`x.len() / 256` blocks).
pub fn quantize_row_q8_k(x: &[f32], y: &mut [BlockQ8_K]) {
    assert_eq!(
        x.len(),
        y.len() * QK_K,
        "quantize_row_q8_k: length mismatch"
    );
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax == 0.0 {
            yb.d = 0.0;
            yb.qs = [0; QK_K];
            // ggml leaves bsums untouched here; zero them so the block is well defined.
            yb.bsums = [0; QK_K / 16];
            continue;
        }
        let iscale = -127.0f32 / max;
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            let r = (iscale * v).round_ties_even() as i32;
            *q = r.min(127) as i8;
        }
        for (j, s) in yb.bsums.iter_mut().enumerate() {
            *s = yb.qs[j * 16..j * 16 + 16].iter().map(|&q| q as i16).sum();
        }
        yb.d = 1.0 / iscale;
    }
}

/// One row of an `Acts`: the activation values in the format the weight type's fused
/// dot consumes. Cheap to copy.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
pub enum ActRow<'a> {
    /// Unquantized values.
    F32(&'a [f32]),
    /// Q8_0 blocks of 32 values.
    Q8_0(&'a [BlockQ8_0]),
    /// Q8_1 blocks of 32 values (with block sums).
    Q8_1(&'a [BlockQ8_1]),
    /// Q8_K super-blocks of 256 values (with sums of each 16).
    Q8_K(&'a [BlockQ8_K]),
}

impl<'a> ActRow<'a> {
    /// The format of the row.
    pub fn kind(&self) -> ActKind {
        match self {
            ActRow::F32(_) => ActKind::F32,
            ActRow::Q8_0(_) => ActKind::Q8_0,
            ActRow::Q8_1(_) => ActKind::Q8_1,
            ActRow::Q8_K(_) => ActKind::Q8_K,
        }
    }

    /// Number of activation values in the row.
    pub fn len(&self) -> usize {
        match self {
            ActRow::F32(x) => x.len(),
            ActRow::Q8_0(b) => b.len() * QK8_0,
            ActRow::Q8_1(b) => b.len() * QK8_1,
            ActRow::Q8_K(b) => b.len() * QK_K,
        }
    }

    /// True when the row holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values the row represents, as f32. Panics unless `out.len() == self.len()`.
    pub fn dequantize(&self, out: &mut [f32]) {
        use super::dequant::*;
        match *self {
            ActRow::F32(x) => out.copy_from_slice(x),
            ActRow::Q8_0(b) => dequantize_q8_0_act(b, out),
            ActRow::Q8_1(b) => dequantize_q8_1_act(b, out),
            ActRow::Q8_K(b) => dequantize_q8_k_act(b, out),
        }
    }
}

/// Mutable storage of an `Acts`, as handed out by [`Acts::reset`] for a quantizer to fill.
#[allow(non_camel_case_types)]
pub enum ActBufMut<'a> {
    /// `rows * n` values.
    F32(&'a mut [f32]),
    /// `rows * n / 32` blocks.
    Q8_0(&'a mut [BlockQ8_0]),
    /// `rows * n / 32` blocks.
    Q8_1(&'a mut [BlockQ8_1]),
    /// `rows * n / 256` blocks.
    Q8_K(&'a mut [BlockQ8_K]),
}

/// A batch of activation rows (each `n` long) quantized into one `ActKind`.
///
/// Each kind has its own typed (hence aligned) buffer; switching kinds keeps the other
/// buffers' allocations, so a long-lived `Acts` stops allocating once it has seen the
/// largest shape of each kind.
pub struct Acts {
    kind: ActKind,
    rows: usize,
    n: usize,
    f32s: Vec<f32>,
    q8_0: Vec<BlockQ8_0>,
    q8_1: Vec<BlockQ8_1>,
    q8_k: Vec<BlockQ8_K>,
}

impl Default for Acts {
    fn default() -> Self {
        Acts {
            kind: ActKind::F32,
            rows: 0,
            n: 0,
            f32s: Vec::new(),
            q8_0: Vec::new(),
            q8_1: Vec::new(),
            q8_k: Vec::new(),
        }
    }
}

impl Acts {
    /// An empty batch (0 rows of F32); allocates nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the shape to `rows` rows of `n` values of `kind` and return the storage to fill
    /// (`rows * n / kind.block_len()` elements, contents unspecified). Panics when `n` is not
    /// a multiple of `kind.block_len()`.
    pub fn reset(&mut self, kind: ActKind, rows: usize, n: usize) -> ActBufMut<'_> {
        let bl = kind.block_len();
        assert!(
            n.is_multiple_of(bl),
            "activation row of {n} values is not a whole number of {kind} blocks ({bl})"
        );
        let len = rows
            .checked_mul(n / bl)
            .expect("activation buffer size overflows");
        self.kind = kind;
        self.rows = rows;
        self.n = n;
        match kind {
            ActKind::F32 => {
                self.f32s.resize(len, 0.0);
                ActBufMut::F32(&mut self.f32s[..])
            }
            ActKind::Q8_0 => {
                self.q8_0.resize(len, BlockQ8_0::default());
                ActBufMut::Q8_0(&mut self.q8_0[..])
            }
            ActKind::Q8_1 => {
                self.q8_1.resize(len, BlockQ8_1::default());
                ActBufMut::Q8_1(&mut self.q8_1[..])
            }
            ActKind::Q8_K => {
                self.q8_k.resize(len, BlockQ8_K::default());
                ActBufMut::Q8_K(&mut self.q8_k[..])
            }
        }
    }

    /// Quantize `x` (`rows * n` values, row-major) into `kind`, reusing the allocation.
    /// Scalar reference; `DotKernels::quantize` gives bit-identical results faster.
    pub fn quantize(&mut self, kind: ActKind, x: &[f32], n: usize) {
        let rows = rows_of(x.len(), n);
        match self.reset(kind, rows, n) {
            ActBufMut::F32(out) => out.copy_from_slice(x),
            ActBufMut::Q8_0(out) => quantize_row_q8_0(x, out),
            ActBufMut::Q8_1(out) => quantize_row_q8_1(x, out),
            ActBufMut::Q8_K(out) => quantize_row_q8_k(x, out),
        }
    }

    /// Number of rows in the batch.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The format every row is stored in.
    pub fn kind(&self) -> ActKind {
        self.kind
    }

    /// Row `r`. Panics when `r >= self.rows()`.
    pub fn row(&self, r: usize) -> ActRow<'_> {
        assert!(r < self.rows, "activation row {r} out of {}", self.rows);
        self.rows_span(r, 1)
    }

    /// Rows `r0 .. r0 + count` as one contiguous `ActRow` of `count * n` values (row-major).
    /// Panics when the range goes past `self.rows()`.
    pub fn rows_span(&self, r0: usize, count: usize) -> ActRow<'_> {
        assert!(
            r0.checked_add(count).is_some_and(|end| end <= self.rows),
            "activation rows {r0}..{r0}+{count} out of {}",
            self.rows
        );
        let per = self.n / self.kind.block_len();
        let range = r0 * per..(r0 + count) * per;
        match self.kind {
            ActKind::F32 => ActRow::F32(&self.f32s[range]),
            ActKind::Q8_0 => ActRow::Q8_0(&self.q8_0[range]),
            ActKind::Q8_1 => ActRow::Q8_1(&self.q8_1[range]),
            ActKind::Q8_K => ActRow::Q8_K(&self.q8_k[range]),
        }
    }
}

/// Number of rows of `n` in `len` values; panics when `len` is not a multiple of `n`
/// (`n == 0` gives 0 rows and requires `len == 0`).
pub fn rows_of(len: usize, n: usize) -> usize {
    if n == 0 {
        assert!(len == 0, "rows of 0 values but {len} values given");
        return 0;
    }
    assert!(
        len.is_multiple_of(n),
        "{len} activation values are not a whole number of rows of {n}"
    );
    len / n
}
