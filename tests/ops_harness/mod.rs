//! The op-by-op backend harness (in the spirit of llama.cpp's `test-backend-ops`): every op of
//! [`Backend`] runs on the backend under test and on the CPU scalar reference
//! ([`reference`]: `CpuBackend` pinned to the portable scalar dot kernels) with the same random
//! inputs, and the outputs are compared.
//!
//! - Inputs are fresh each run: the seed comes from the clock unless `TORCHLESS_OPS_SEED` is set
//!   (decimal or `0x` hex), and every report and failure message prints it, so a failure replays
//!   with `TORCHLESS_OPS_SEED=<seed> cargo test ...`. Each family draws from its own stream of
//!   that seed, so it replays alone too.
//! - Activations reach a backend the only way the trait allows, through `embed`: the data is
//!   written into an F32 "embedding table" of 64-wide rows and rows `0..n` are looked up, which
//!   lays the values out contiguously. Every buffer is longer than the op's prefix and its tail
//!   holds a sentinel, so a kernel that writes past the sizes it was given is caught.
//! - Weights are random bytes in a temporary file (unlinked at once, mapped for the life of the
//!   process), with sane random f16 scales in each block's scale fields so values are finite and
//!   O(1). Maps are never dropped: a device backend may cache uploads by map address, and a new
//!   map at a freed address must not alias an old upload.
//! - The error of one op case is `max |got - ref| / max |ref|` over the op's output (for matmul
//!   the denominator is at least the typical output magnitude, [`matmul_floor`]). Matmul also
//!   reports both backends against an f64 product of the dequantized weights with the f32
//!   activations (`vs f64`), which separates kernel error from activation quantization.
//! - [`Report::table`] is one line per op and group (weight type, activation, norm kind, RoPE
//!   layout and scaling, attention shape) with the worst error, its bound and its case, then every
//!   failing case in full; tests print it (`-- --nocapture`) and put it in failure messages.
//!
//! Families ([`Family`]) run independently: a device backend's errors are sticky, so the device
//! tests start a fresh backend per family and one failing kernel does not hide the others.
//!
//! The end-to-end helpers at the bottom ([`logit_diff`], [`check_arch_fixtures`]) compare whole
//! models on two backends.

#![allow(dead_code)]

pub mod models;

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use half::{bf16, f16};
use memmap2::Mmap;
use torchless::backend::cpu::caps::CpuCaps;
use torchless::backend::cpu::dot::DotKernels;
use torchless::backend::cpu::CpuBackend;
use torchless::backend::{AttnShape, Backend, NormSpec};
use torchless::model::arch::{Activation, NormKind, RopeLayout};
use torchless::model::config::RopeParams;
use torchless::model::rope::RopeScaling;
use torchless::model::weights::{Role, WeightView};
use torchless::quant::{dequantize_row, GgmlType};

/// Environment variable that fixes the seed (decimal, or hex with `0x`).
pub const SEED_ENV: &str = "TORCHLESS_OPS_SEED";

// ---------------------------------------------------------------------------------------------
// Error bounds. Each is `max |got - ref| / max |ref|` over one op call's output.
// ---------------------------------------------------------------------------------------------

/// Pure data movement (`copy_row`) and single IEEE operations (`add`: one correctly rounded f32
/// add on both sides; `add_bias`: F16/BF16 → f32 widening is exact, then one add) must be
/// bit-identical.
const EXACT: f64 = 0.0;
/// Dequantization (`embed`): the formulas of src/quant/dequant.rs are one or two f32 operations
/// per value (`d * q`, `d * q + m`, `d * sc * q - dmin * m`) plus the lookup scale; a device
/// compiler may contract `a * b + c` into one FMA, which moves the result by at most an ulp or two
/// of the larger term, i.e. ≲ 2.4e-7 of max |ref|. 1e-6 leaves 4×; any wrong bit of a quant,
/// nibble or scale moves a value by ≥ 1/63 of its scale, orders of magnitude above it.
const DEQUANT: f64 = 1e-6;
/// RoPE: both backends apply the same f32 (cos, sin) table (the contract has the device build it
/// on the host in f64 exactly as the CPU does), so each output is `x0 * c - x1 * s`: two products
/// and one add, ≤ 2 ulp apart under FMA contraction. A wrong angle (position, frequency, scaling
/// or attention factor) moves outputs by far more than 2e-6.
const ROPE: f64 = 2e-6;
/// Activations and soft-capping go through `exp` / `tanh`. The device uses `ex2.approx` (≈ 2 ulp)
/// after a multiply by log2(e) (another ≈ |x|·2^-24 relative) and builds tanh as
/// `1 - 2 / (exp(2|x|) + 1)`, whose cancellation near 0 costs a few ulp of 1 in absolute terms.
/// Inputs span ±8 (activations) and ±3c (softcap), so max |ref| is O(1) (O(c)) and the expected
/// error is ≲ 5e-7 of it; 1e-5 leaves 20×, while any formula slip (sigmoid vs tanh form, a
/// missing 0.044715 x³ term, a wrong c) is ≥ 1e-3.
const TRANSCENDENTAL: f64 = 1e-5;
/// RMSNorm / LayerNorm: the CPU sums squares in f64, a device in f32 (tree reduction:
/// O(log n)·2^-24 relative; a plain loop would be ≲ sqrt(n)·2^-24 ≈ 4e-6 at n = 4096 for random
/// data), then `rsqrt` (two correctly rounded steps) and three products. LayerNorm inputs carry a
/// mean of 3 to punish a one-pass `E[x²] - E[x]²` (its cancellation costs another ×10). 2e-5 is
/// 5× the plain-loop estimate; a wrong eps is caught by the tiny-row cases (var ≈ eps), a missing
/// w_offset / bias / mean by O(1).
const NORM: f64 = 2e-5;
/// Attention: Q and K are rounded to f16 on both sides (the contract), so scores differ only by
/// f32 accumulation order over head_dim ≤ 256 (≲ 16·2^-24 relative), the approximate exp (≈ 2 ulp
/// plus |s|·2^-24 from the log2(e) multiply, |s| ≲ 90 in the peaky cases) and the order of the
/// softmax and P·V sums over ≤ ~300 positions (online-softmax rescaling adds a few roundings per
/// tile). That is ≲ 1e-5 of max |ref|; 1e-4 leaves 10×, while attending to one position too many
/// or too few, a wrong GQA group, window edge or softcap is ≥ 1e-3.
const ATTENTION: f64 = 1e-4;
/// Matmul with F32 / F16 / BF16 weights: f32 activations on both sides (the CPU does not round
/// them), so only the accumulation order differs: ≲ sqrt(cols)·2^-24·Σ|w x| / |y| per output,
/// i.e. ≲ 2e-6 of max |ref| at cols ≈ 2000 for random data (the AVX2 path, with FMA and another
/// order, measures ≈ 3e-7). 2e-5 leaves 10×; rounding activations to f16 (≈ 3e-4) is rejected.
const MATMUL_FLOAT: f64 = 2e-5;
/// Matmul with quantized weights: the CPU reference quantizes each activation row to Q8_0, Q8_1
/// or Q8_K (step = amax/127 per 32 or 256 values: rounding noise σ ≈ amax/440, ≈ 0.4% of a
/// uniform row's rms), so it is itself that far from the exact product: the `ref vs f64` column
/// measures 0.6–1.0% (max error over up to 16k outputs against max |ref|). A backend that
/// quantizes the same way agrees with it to ≈ 1e-6; one that keeps f32 activations is ≈ 1% away,
/// and one that quantizes into other blocks (Q8_1 for K-quants, like llama.cpp's CUDA kernels)
/// adds its own independent noise, up to √2 × 1% ≈ 1.4%. 3e-2 is 2× that worst design; a wrong
/// sub-block scale or min, a swapped nibble order or a wrong block stride moves outputs by ≥ 10%
/// (and `embed` checks every decoder to 1e-6 on its own). Each case adds the reference's own
/// measured distance from the exact product to this bound (`check_with`); the device is held to
/// the exact product by [`MATMUL_QUANT_F64`] all the same.
const MATMUL_QUANT: f64 = 3e-2;
/// The backend under test against the exact f64 product: whatever activation format it uses, it
/// must be within Q8 rounding noise of the true product (the reference measures ≤ 1%).
const MATMUL_QUANT_F64: f64 = 3e-2;
/// F32 / F16 / BF16 weights against the f64 product: accumulation order only (as
/// [`MATMUL_FLOAT`]).
const MATMUL_FLOAT_F64: f64 = 2e-5;

/// The weight types every backend must handle (the contract's list).
pub const WEIGHT_TYPES: [GgmlType; 13] = GgmlType::WEIGHTS;

// ---------------------------------------------------------------------------------------------
// Seed and random numbers.
// ---------------------------------------------------------------------------------------------

/// The run's seed: `TORCHLESS_OPS_SEED` when set, else from the clock (fresh inputs each run).
pub fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| match std::env::var(SEED_ENV) {
        Ok(s) => {
            let t = s.trim();
            let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(h, 16),
                None => t.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{SEED_ENV}={s:?} is not a u64: {e}"))
        }
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            splitmix(now ^ (std::process::id() as u64).rotate_left(32))
        }
    })
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic generator (splitmix64), one stream per (seed, name).
pub struct Rng(u64);

impl Rng {
    /// The stream `name` of `seed` (FNV-1a of the name mixed into the seed).
    pub fn new(seed: u64, name: &str) -> Rng {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(seed ^ h)
    }
    /// 64 random bits.
    pub fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix(self.0)
    }
    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.u64() % n as u64) as usize
    }
    /// One element of `v`.
    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
    /// `n` values uniform in `[lo, hi)`.
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.range(lo, hi)).collect()
    }
    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u64() as u8).collect()
    }
    /// +1 or -1.
    pub fn sign(&mut self) -> f32 {
        if self.u64() & 1 == 0 {
            1.0
        } else {
            -1.0
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Host-side tensors in file maps.
// ---------------------------------------------------------------------------------------------

/// Every map made by the harness, kept for the life of the process (see the module docs).
fn keep_alive(m: Arc<Mmap>) {
    static MAPS: Mutex<Vec<Arc<Mmap>>> = Mutex::new(Vec::new());
    MAPS.lock().unwrap_or_else(|p| p.into_inner()).push(m);
}

/// `bytes` in a fresh file map (the file is removed at once; the map stays valid).
fn map_bytes(bytes: &[u8]) -> Arc<Mmap> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "torchless-ops-{}-{}-{:x}.bin",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        seed()
    ));
    let map = {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // An empty file cannot be mapped: every tensor has at least one element, plus padding.
        f.write_all(bytes).expect("write temp tensor file");
        f.write_all(&[0u8; 8]).expect("write temp tensor file");
        // SAFETY: the file is private to this process (unique name, created here) and nothing
        // writes it after this point; it is unlinked below, so nothing else can open it.
        unsafe { Mmap::map(&f) }.expect("map temp tensor file")
    };
    // Unlinking a mapped file is fine on Unix; elsewhere the file stays in the temp dir.
    let _ = std::fs::remove_file(&path);
    let map = Arc::new(map);
    keep_alive(map.clone());
    map
}

/// A tensor as a model file would hold it: `rows` rows of `cols` values of `ty`, at some offset
/// in a file map.
pub struct HostTensor {
    /// Name (for error messages).
    pub name: String,
    /// Storage type.
    pub ty: GgmlType,
    /// Rows.
    pub rows: usize,
    /// Values per row.
    pub cols: usize,
    map: Arc<Mmap>,
    start: usize,
    len: usize,
}

impl HostTensor {
    /// `data` (exactly `rows * ty.row_bytes(cols)` bytes) behind `pad` bytes of other data, so
    /// the tensor does not start at the beginning of its map.
    fn new(name: String, ty: GgmlType, rows: usize, cols: usize, data: &[u8], pad: usize) -> Self {
        let row_bytes = ty
            .row_bytes(cols)
            .expect("cols is a whole number of blocks");
        assert_eq!(data.len(), rows * row_bytes, "{name}: wrong byte count");
        let mut bytes = vec![0xA5u8; pad];
        bytes.extend_from_slice(data);
        HostTensor {
            name,
            ty,
            rows,
            cols,
            map: map_bytes(&bytes),
            start: pad,
            len: data.len(),
        }
    }

    /// The checked view a model loader would hand to `Backend::weight`.
    pub fn view(&self) -> WeightView<'_> {
        WeightView {
            name: &self.name,
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            map: &self.map,
            start: self.start,
            len: self.len,
            scale: None,
        }
    }

    /// Every value, dequantized by the reference dequantizer (`rows * cols`, row-major).
    pub fn values(&self) -> Vec<f32> {
        let data = &self.map[self.start..self.start + self.len];
        let rb = self.len / self.rows;
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, o) in out.chunks_mut(self.cols).enumerate() {
            dequantize_row(self.ty, &data[r * rb..(r + 1) * rb], o);
        }
        out
    }
}

fn put_f16(blk: &mut [u8], at: usize, v: f32) {
    blk[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// Random bytes for a `rows x cols` tensor of `ty`: uniform values in ±1 for the float types;
/// for block types random quant bits with each block's f16 scales overwritten by sane random
/// values (sized so the dequantized values are O(1); signs as ggml's quantizers produce them).
fn random_tensor_bytes(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let n = rows * cols;
    match ty {
        GgmlType::F32 => (0..n)
            .flat_map(|_| rng.range(-1.0, 1.0).to_le_bytes())
            .collect(),
        GgmlType::F16 => (0..n)
            .flat_map(|_| f16::from_f32(rng.range(-1.0, 1.0)).to_le_bytes())
            .collect(),
        GgmlType::BF16 => (0..n)
            .flat_map(|_| bf16::from_f32(rng.range(-1.0, 1.0)).to_le_bytes())
            .collect(),
        _ => {
            let bb = ty.block_bytes();
            let mut bytes = rng.bytes(n / ty.block_len() * bb);
            for blk in bytes.chunks_mut(bb) {
                set_scales(rng, ty, blk);
            }
            bytes
        }
    }
}

/// Overwrite the f16 scale fields of one block (offsets from src/quant/blocks.rs).
fn set_scales(rng: &mut Rng, ty: GgmlType, blk: &mut [u8]) {
    match ty {
        // x = d (q - 8), |q - 8| <= 8; ggml's Q4_0 d takes the sign of the largest value.
        GgmlType::Q4_0 => {
            let d = rng.sign() * rng.range(0.05, 0.15);
            put_f16(blk, 0, d)
        }
        // x = d q + m, q <= 15.
        GgmlType::Q4_1 => {
            put_f16(blk, 0, rng.range(0.05, 0.12));
            put_f16(blk, 2, rng.range(-1.0, 0.0));
        }
        // x = d (q - 16), |q - 16| <= 16.
        GgmlType::Q5_0 => {
            let d = rng.sign() * rng.range(0.03, 0.06);
            put_f16(blk, 0, d)
        }
        // x = d q + m, q <= 31.
        GgmlType::Q5_1 => {
            put_f16(blk, 0, rng.range(0.02, 0.06));
            put_f16(blk, 2, rng.range(-1.0, 0.0));
        }
        // x = d q, |q| <= 128.
        GgmlType::Q8_0 => {
            let d = rng.sign() * rng.range(0.003, 0.008);
            put_f16(blk, 0, d)
        }
        // scales[16] qs[64] d dmin: x = d (sc & 15) q - dmin (sc >> 4), q <= 3.
        GgmlType::Q2_K => {
            put_f16(blk, 80, rng.range(0.01, 0.03));
            put_f16(blk, 82, rng.range(0.005, 0.02));
        }
        // hmask[32] qs[64] scales[12] d: x = d s q, |s| <= 32, |q| <= 4.
        GgmlType::Q3_K => put_f16(blk, 108, rng.range(0.005, 0.01)),
        // d dmin scales[12] qs[128]: x = d sc q - dmin m, sc, m <= 63, q <= 15.
        GgmlType::Q4_K => {
            put_f16(blk, 0, rng.range(0.0005, 0.0015));
            put_f16(blk, 2, rng.range(0.0002, 0.002));
        }
        // d dmin scales[12] qh[32] qs[128]: as Q4_K with q <= 31.
        GgmlType::Q5_K => {
            put_f16(blk, 0, rng.range(0.0003, 0.0008));
            put_f16(blk, 2, rng.range(0.0002, 0.002));
        }
        // ql[128] qh[64] scales[16] (i8) d: x = d sc q, |sc| <= 128, |q| <= 32.
        GgmlType::Q6_K => put_f16(blk, 208, rng.range(0.0001, 0.0003)),
        other => panic!("no random block generator for {other}"),
    }
}

/// A random weight tensor (finite, O(1) values: checked).
fn random_tensor(rng: &mut Rng, name: &str, ty: GgmlType, rows: usize, cols: usize) -> HostTensor {
    let data = random_tensor_bytes(rng, ty, rows, cols);
    let pad = rng.below(8);
    let t = HostTensor::new(format!("{name}.{ty}"), ty, rows, cols, &data, pad);
    let max = t.values().iter().fold(0f32, |m, v| {
        assert!(v.is_finite(), "{}: non-finite random value", t.name);
        m.max(v.abs())
    });
    assert!(max < 16.0, "{}: random values too large ({max})", t.name);
    t
}

/// A vector (norm weight or bias) of `values` stored as `ty` (F32, F16 or BF16).
fn vector(rng: &mut Rng, name: &str, ty: GgmlType, values: &[f32]) -> HostTensor {
    let bytes: Vec<u8> = match ty {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        GgmlType::BF16 => values
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
        other => panic!("vector of {other}"),
    };
    let pad = rng.below(8);
    HostTensor::new(format!("{name}.{ty}"), ty, 1, values.len(), &bytes, pad)
}

// ---------------------------------------------------------------------------------------------
// Activation buffers, through `embed`.
// ---------------------------------------------------------------------------------------------

/// Width of the upload table's rows.
const ROW: usize = 64;
/// Fills every buffer past the data; it must still be there after the op.
const SENTINEL: f32 = 1234.5;
/// Sentinel values past the longest prefix an op may touch.
const SLACK: usize = 37;

/// Data for one activation buffer: an F32 table whose rows, looked up in order, lay out `len`
/// values followed by sentinels up to `cap`.
pub struct Input {
    table: HostTensor,
    /// Meaningful values.
    pub len: usize,
    /// Buffer length (`len` + at least [`SLACK`] sentinels, a multiple of 64).
    pub cap: usize,
    /// The values (host copy, for host-side references).
    pub values: Vec<f32>,
}

impl Input {
    /// `values`, in a buffer with room for `need` values plus slack.
    fn new(values: &[f32], need: usize) -> Input {
        let len = values.len();
        let cap = (len.max(need) + SLACK).div_ceil(ROW) * ROW;
        let mut all = values.to_vec();
        all.resize(cap, SENTINEL);
        let bytes: Vec<u8> = all.iter().flat_map(|v| v.to_le_bytes()).collect();
        Input {
            table: HostTensor::new(
                "harness.upload".into(),
                GgmlType::F32,
                cap / ROW,
                ROW,
                &bytes,
                0,
            ),
            len,
            cap,
            values: values.to_vec(),
        }
    }

    /// An output buffer of `need` values (all sentinels before the op).
    fn output(need: usize) -> Input {
        Input::new(&[], need)
    }

    /// The buffer on backend `x`.
    fn put<X: Backend>(&self, x: &X) -> Run<X::Buf> {
        let t = x
            .weight(self.table.view(), Role::Embedding)
            .map_err(|e| RunError::Refused(format!("F32 upload table: {e}")))?;
        let mut b = x
            .buf(self.cap)
            .map_err(|e| RunError::Failed(format!("buf({}): {e}", self.cap)))?;
        let ids: Vec<u32> = (0..(self.cap / ROW) as u32).collect();
        x.embed(&t, &ids, 1.0, &mut b);
        Ok(b)
    }
}

/// The first `len` values of `buf`.
fn get<X: Backend>(x: &X, buf: &X::Buf, len: usize) -> Run<Vec<f32>> {
    let mut out = Vec::new();
    x.read(buf, len, &mut out)
        .map_err(|e| RunError::Failed(e.to_string()))?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Op cases: each runs one op on any backend and returns the whole output buffer.
// ---------------------------------------------------------------------------------------------

/// Why a case could not run on a backend.
enum RunError {
    /// `weight()` refused a tensor (the backend is still usable).
    Refused(String),
    /// Allocation or a device failure (a device's errors are sticky: later ops fail too).
    Failed(String),
}

type Run<T> = Result<T, RunError>;

fn refused(e: torchless::Error) -> RunError {
    RunError::Refused(e.to_string())
}

/// One op call with fixed inputs, runnable on any backend.
trait Case {
    /// Builds the inputs on `x`, runs the op, returns the output buffer (all of it, so the
    /// sentinel tail is checked too).
    fn run<X: Backend>(&self, x: &X) -> Run<Vec<f32>>;
}

struct EmbedCase<'a> {
    table: &'a HostTensor,
    ids: Vec<u32>,
    scale: f32,
    out: Input,
}

impl Case for EmbedCase<'_> {
    fn run<X: Backend>(&self, x: &X) -> Run<Vec<f32>> {
        let t = x
            .weight(self.table.view(), Role::Embedding)
            .map_err(refused)?;
        let mut out = self.out.put(x)?;
        x.embed(&t, &self.ids, self.scale, &mut out);
        get(x, &out, self.out.cap)
    }
}

enum Unary {
    Act(Activation),
    Softcap(f32),
}

struct UnaryCase {
    op: Unary,
    x: Input,
}

impl Case for UnaryCase {
    fn run<X: Backend>(&self, x: &X) -> Run<Vec<f32>> {
        let mut b = self.x.put(x)?;
        match self.op {
            Unary::Act(a) => x.act(a, &mut b, self.x.len),
            Unary::Softcap(c) => x.softcap(&mut b, c, self.x.len),
        }
        get(x, &b, self.x.cap)
    }
}

/// `add` (`act` = None: `x += y`) or `glu` (`out = act(x) * y`).
struct BinaryCase {
    act: Option<Activation>,
    a: Input,
    b: Input,
    out: Input,
}

impl Case for BinaryCase {
    fn run<X: Backend>(&self, x: &X) -> Run<Vec<f32>> {
        let mut a = self.a.put(x)?;
        let b = self.b.put(x)?;
        let n = self.a.len;
        match self.act {
            None => {
                x.add(&mut a, &b, n);
                get(x, &a, self.a.cap)
            }
            Some(act) => {
                let mut o = self.out.put(x)?;
                x.glu(act, &a, &b, n, &mut o);
                get(x, &o, self.out.cap)
            }
        }
    }
}

struct AddBiasCase {
    x: Input,
    b: HostTensor,
    rows: usize,
}

impl Case for AddBiasCase {
    fn run<X: Backend>(&self, x: &X) -> Run<Vec<f32>> {
        let b = x.weight(self.b.view(), Role::Norm).map_err(refused)?;
        let mut xb = self.x.put(x)?;
        x.add_bias(&mut xb, &b, self.rows);
        get(x, &xb, self.x.cap)
    }
}

struct CopyRowCase {
    x: Input,
    row: usize,
    width: usize,
    out: Input,
}

impl Case for CopyRowCase {
    fn run<X: Backend>(&self, x: &X) -> Run<Vec<f32>> {
        let xb = self.x.put(x)?;
        let mut o = self.out.put(x)?;
        x.copy_row(&xb, self.row, self.width, &mut o);
        get(x, &o, self.out.cap)
    }
}

struct NormCase {
    spec: NormSpec,
    x: Input,
    w: HostTensor,
    b: Option<HostTensor>,
    rows: usize,
    dim: usize,
    /// `None`: `norm_inplace` on `x`.
    out: Option<Input>,
}

impl Case for NormCase {
    fn run<X: Backend>(&self, x: &X) -> Run<Vec<f32>> {
        let w = x.weight(self.w.view(), Role::Norm).map_err(refused)?;
        let b = match &self.b {
            Some(b) => Some(x.weight(b.view(), Role::Norm).map_err(refused)?),
            None => None,
        };
        let mut xb = self.x.put(x)?;
        match &self.out {
            Some(out) => {
                let mut o = out.put(x)?;
                x.norm(self.spec, &xb, &w, b.as_ref(), self.rows, self.dim, &mut o);
                get(x, &o, out.cap)
            }
            None => {
                x.norm_inplace(self.spec, &mut xb, &w, self.rows, self.dim);
                get(x, &xb, self.x.cap)
            }
        }
    }
}

struct RopeCase {
    x: Input,
    n_tok: usize,
    n_heads: usize,
    head_dim: usize,
    pos0: usize,
    layout: RopeLayout,
    p: RopeParams,
}

impl Case for RopeCase {
    fn run<X: Backend>(&self, x: &X) -> Run<Vec<f32>> {
        let mut b = self.x.put(x)?;
        x.rope(
            &mut b,
            self.n_tok,
            self.n_heads,
            self.head_dim,
            self.pos0,
            self.layout,
            &self.p,
        );
        get(x, &b, self.x.cap)
    }
}

/// K and V rows for positions `pos..pos + n` of one layer.
struct KvRows {
    pos: usize,
    n: usize,
    k: Input,
    v: Input,
}

struct AttnCase {
    shape: AttnShape,
    n_layer: usize,
    layer: usize,
    n_ctx: usize,
    pos0: usize,
    n_tok: usize,
    /// Stored in order into `layer` (the junk first, the history and this call's rows last).
    stores: Vec<KvRows>,
    /// Stored into every other layer, all positions.
    other: KvRows,
    q: Input,
    out: Input,
}

impl Case for AttnCase {
    fn run<X: Backend>(&self, x: &X) -> Run<Vec<f32>> {
        let s = &self.shape;
        let (kw, vw) = (s.n_head_kv * s.head_dim, s.n_head_kv * s.head_dim_v);
        let mut kv = x
            .kv_cache(self.n_layer, self.n_ctx, kw, vw)
            .map_err(|e| RunError::Failed(e.to_string()))?;
        let (ok, ov) = (self.other.k.put(x)?, self.other.v.put(x)?);
        for l in (0..self.n_layer).filter(|&l| l != self.layer) {
            x.kv_store(&mut kv, l, self.other.pos, self.other.n, &ok, &ov);
        }
        for st in &self.stores {
            let (k, v) = (st.k.put(x)?, st.v.put(x)?);
            x.kv_store(&mut kv, self.layer, st.pos, st.n, &k, &v);
        }
        let q = self.q.put(x)?;
        let mut o = self.out.put(x)?;
        x.attention(&q, &kv, self.layer, self.pos0, self.n_tok, s, &mut o);
        get(x, &o, self.out.cap)
    }
}

/// Which matmul entry point a [`MatmulCase`] calls.
#[derive(Clone, Copy)]
enum MatmulOp {
    /// `matmul`: out = W x.
    Write,
    /// `matmul_add`: out += W x.
    Add,
    /// `matmul_many` with the weight twice over the same x (both outputs, concatenated).
    Many,
    /// `matmul_glu`: out = act(W x) * (U x), with `w` as the gate and `up` as U.
    Glu(Activation),
}

struct MatmulCase<'a> {
    w: &'a HostTensor,
    /// The up projection of a `Glu` case.
    up: Option<&'a HostTensor>,
    x: Input,
    n_tok: usize,
    /// Sentinels, or for `Add` the values the products add to.
    out: Input,
    op: MatmulOp,
}

impl Case for MatmulCase<'_> {
    fn run<X: Backend>(&self, x: &X) -> Run<Vec<f32>> {
        let w = x.weight(self.w.view(), Role::Matmul).map_err(refused)?;
        let xb = self.x.put(x)?;
        let mut o = self.out.put(x)?;
        match self.op {
            MatmulOp::Write => x.matmul(&w, &xb, self.n_tok, &mut o),
            MatmulOp::Add => {
                let mut tmp = Input::output(self.out.len).put(x)?;
                x.matmul_add(&w, &xb, self.n_tok, &mut o, &mut tmp, self.out.len);
            }
            MatmulOp::Many => {
                let mut o2 = self.out.put(x)?;
                x.matmul_many(&[&w, &w], &xb, self.n_tok, &mut [&mut o, &mut o2]);
                // The first output's values, then the second's with its sentinel tail.
                let mut both = get(x, &o, self.n_tok * self.w.rows)?;
                both.extend(get(x, &o2, self.out.cap)?);
                return Ok(both);
            }
            MatmulOp::Glu(act) => {
                let up = self.up.expect("a Glu case has an up weight");
                let u = x.weight(up.view(), Role::Matmul).map_err(refused)?;
                let len = self.n_tok * self.w.rows;
                let (mut g_out, mut u_out) =
                    (Input::output(len).put(x)?, Input::output(len).put(x)?);
                x.matmul_glu(
                    act,
                    &w,
                    &u,
                    &xb,
                    self.n_tok,
                    [&mut g_out, &mut u_out],
                    len,
                    &mut o,
                );
            }
        }
        get(x, &o, self.out.cap)
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison and the report.
// ---------------------------------------------------------------------------------------------

/// The error scale of `act(x)` (or `act(x) * up`): max |x| (times |up|). GELU's tanh form,
/// 0.5 x (1 + tanh(y)), loses the low bits of 1 + tanh(y) to cancellation for x below about -3,
/// so its f32 value is only good to ~1e-7 |x| absolute on every implementation (the CPU's
/// included); scaled by its output alone, a case whose largest output is such a near-zero value
/// would compare two roundings of that cancellation.
fn act_floor(x: &[f32], up: Option<&[f32]>) -> f64 {
    let up = |i: usize| up.map_or(1.0, |u| (u[i] as f64).abs());
    (0..x.len()).fold(0.0, |m, i| m.max((x[i] as f64).abs() * up(i)))
}

/// `max |got - want| / scale` over the first `n` values, with `scale = max(max |want|, floor)`
/// (1 when both are zero), and where it is worst; infinite when `got` has a non-finite value.
fn rel_err(got: &[f32], want: &[f32], n: usize, floor: f64) -> (f64, usize) {
    let scale = want[..n]
        .iter()
        .fold(floor, |m, &v| m.max((v as f64).abs()));
    let scale = if scale > 0.0 { scale } else { 1.0 };
    let (mut worst, mut at) = (0f64, 0);
    for (i, (&g, &w)) in got[..n].iter().zip(&want[..n]).enumerate() {
        let d = if g.is_finite() {
            (g as f64 - w as f64).abs() / scale
        } else {
            f64::INFINITY
        };
        if d > worst {
            worst = d;
            at = i;
        }
    }
    (worst, at)
}

/// One op case's outcome.
#[derive(Clone, Debug)]
pub struct Row {
    /// The op (`matmul`, `attention`, ...).
    pub op: &'static str,
    /// The summary group (weight type, activation, norm kind, ...).
    pub group: String,
    /// The case in full (shapes and parameters).
    pub case: String,
    /// Error against the CPU scalar reference.
    pub err: f64,
    /// Its bound.
    pub bound: f64,
    /// Error of the backend under test against the f64 product (matmul).
    pub err_f64: Option<f64>,
    /// The reference's own error against the f64 product (matmul; informational).
    pub ref_f64: Option<f64>,
    /// The bound on `err_f64`.
    pub bound_f64: Option<f64>,
    /// What else went wrong (backend error, write past the output, ...).
    pub problem: Option<String>,
}

impl Row {
    /// Over a bound, or something else went wrong.
    pub fn failed(&self) -> bool {
        self.problem.is_some()
            || self.err.is_nan()
            || self.err > self.bound
            || matches!((self.err_f64, self.bound_f64), (Some(e), Some(b)) if e > b || e.is_nan())
    }
}

/// The results of one or more families on one backend.
pub struct Report {
    /// What was tested (e.g. `"cpu avx2"`).
    pub label: String,
    /// The backend's own description.
    pub describe: String,
    /// The seed the inputs came from.
    pub seed: u64,
    /// Every case run.
    pub rows: Vec<Row>,
}

impl Report {
    /// An empty report for `b`.
    pub fn new<B: Backend>(b: &B, label: &str) -> Report {
        Report {
            label: label.to_string(),
            describe: b.describe(),
            seed: seed(),
            rows: Vec::new(),
        }
    }

    fn replay(&self) -> String {
        format!(
            "seed {:#x}; replay with {SEED_ENV}={:#x}",
            self.seed, self.seed
        )
    }

    /// The summary table (one line per op and group: cases, worst error, bound) and every failing
    /// case in full.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "ops harness: {} vs the CPU scalar reference ({})\n  backend: {}",
            self.label,
            self.replay(),
            self.describe
        );
        let _ = writeln!(
            s,
            "  {:<12} {:<28} {:>5} {:>10} {:>9} {:>10} {:>10} {:>9}  worst case",
            "op", "group", "cases", "max err", "bound", "vs f64", "ref vs f64", "bound"
        );
        let mut groups: Vec<(&'static str, &str)> = Vec::new();
        for r in &self.rows {
            if !groups.contains(&(r.op, r.group.as_str())) {
                groups.push((r.op, r.group.as_str()));
            }
        }
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2e}"));
        for (op, group) in groups {
            let rows: Vec<&Row> = self
                .rows
                .iter()
                .filter(|r| r.op == op && r.group == group)
                .collect();
            let worst = rows
                .iter()
                .copied()
                .max_by(|a, b| a.err.total_cmp(&b.err))
                .expect("a group has rows");
            let max_of = |f: fn(&Row) -> Option<f64>| {
                rows.iter()
                    .filter_map(|r| f(r))
                    .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
            };
            let fails = rows.iter().filter(|r| r.failed()).count();
            let _ = writeln!(
                s,
                "  {:<12} {:<28} {:>5} {:>10.2e} {:>9.1e} {:>10} {:>10} {:>9}  {}{}",
                op,
                group,
                rows.len(),
                worst.err,
                worst.bound,
                opt(max_of(|r| r.err_f64)),
                opt(max_of(|r| r.ref_f64)),
                opt(worst.bound_f64),
                worst.case,
                if fails > 0 {
                    format!("   <-- {fails} FAILED")
                } else {
                    String::new()
                }
            );
        }
        let failures: Vec<&Row> = self.rows.iter().filter(|r| r.failed()).collect();
        if !failures.is_empty() {
            let _ = writeln!(s, "  FAILED cases ({}):", failures.len());
            for r in failures {
                let _ = writeln!(s, "    {}", describe_failure(r));
            }
        }
        s
    }

    /// Print the table (shown with `--nocapture`, and with the failure otherwise).
    pub fn print(&self) {
        eprintln!("{}", self.table());
    }

    /// Panics with the table when any case is over its bound or went wrong.
    pub fn assert_ok(&self) {
        let failures: Vec<&Row> = self.rows.iter().filter(|r| r.failed()).collect();
        assert!(!self.rows.is_empty(), "{}: no op case ran", self.label);
        if let Some(first) = failures.first() {
            panic!(
                "{}: {} of {} op cases failed ({}); first: {}\n{}",
                self.label,
                failures.len(),
                self.rows.len(),
                self.replay(),
                describe_failure(first),
                self.table()
            );
        }
    }

    /// Panics unless every case matched the reference bit for bit (a backend running the very
    /// same code as the reference: checks the harness itself is deterministic).
    pub fn assert_exact(&self) {
        assert!(!self.rows.is_empty(), "{}: no op case ran", self.label);
        if let Some(r) = self
            .rows
            .iter()
            .find(|r| r.err != 0.0 || r.problem.is_some())
        {
            panic!(
                "{}: expected bit-identical results ({}): {}\n{}",
                self.label,
                self.replay(),
                describe_failure(r),
                self.table()
            );
        }
    }
}

fn describe_failure(r: &Row) -> String {
    let mut s = format!(
        "{} [{}] {}: err {:.3e} (bound {:.1e})",
        r.op, r.group, r.case, r.err, r.bound
    );
    if let (Some(e), Some(b)) = (r.err_f64, r.bound_f64) {
        let _ = write!(s, ", vs f64 {e:.3e} (bound {b:.1e})");
    }
    if let Some(p) = &r.problem {
        let _ = write!(s, ": {p}");
    }
    let _ = write!(s, " [seed {:#x}, {SEED_ENV}={:#x}]", seed(), seed());
    s
}

// ---------------------------------------------------------------------------------------------
// The harness.
// ---------------------------------------------------------------------------------------------

/// The CPU scalar reference: portable scalar dot kernels, one pool thread.
pub fn reference() -> CpuBackend {
    CpuBackend::with_kernels(CpuCaps::detect(), DotKernels::scalar(), 1)
        .expect("the CPU scalar reference backend")
}

/// A group of ops checked together (and, on a device, on a backend of their own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `embed` for every weight type (the dequantizers on their own).
    Embed,
    /// `add`, `act`, `glu`, `softcap`, `add_bias`, `copy_row`.
    Elementwise,
    /// `norm` (RMS, LayerNorm, bias, w_offset) and `norm_inplace` (QK-norm shapes).
    Norm,
    /// `rope`: both layouts, partial rotary, every scaling mode, pos0 > 0.
    Rope,
    /// `kv_cache` + `kv_store` + `attention`: GQA, head dims, window, softcap, history.
    Attention,
    /// `matmul` for every weight type, n_tok 1, 2, 7, 8, 9, 64, 128.
    Matmul,
    /// `matmul` and `embed` of F32 / F16 / BF16 rows of odd width, 1 to 1001 (legal in GGUF,
    /// never seen in the supported models): catches kernels that assume whole 32-value units or
    /// an even, aligned row start. A backend may refuse such a weight at `weight()` (a clear
    /// error at load time is an acceptable answer); what it accepts must be right.
    OddCols,
}

impl Family {
    /// Every family, cheapest first.
    pub const ALL: [Family; 7] = [
        Family::Embed,
        Family::Elementwise,
        Family::Norm,
        Family::Rope,
        Family::Attention,
        Family::Matmul,
        Family::OddCols,
    ];

    /// Name (also the name of its random stream).
    pub fn name(self) -> &'static str {
        match self {
            Family::Embed => "embed",
            Family::Elementwise => "elementwise",
            Family::Norm => "norm",
            Family::Rope => "rope",
            Family::Attention => "attention",
            Family::Matmul => "matmul",
            Family::OddCols => "odd_cols",
        }
    }
}

struct Harness<'a, B: Backend> {
    b: &'a B,
    r: CpuBackend,
    rng: Rng,
    rows: &'a mut Vec<Row>,
    /// The first error of the backend under test (a device's errors are sticky: later cases are
    /// skipped and counted).
    broken: Option<String>,
    skipped: usize,
    /// A refused weight is an acceptable answer (odd shapes no supported model has).
    refusal_ok: bool,
}

/// What a case is and how it is judged.
struct Meta {
    op: &'static str,
    group: String,
    case: String,
    /// Values the op writes (the prefix of the output buffer).
    n: usize,
    bound: f64,
    /// Lower limit of the error's denominator (see [`matmul_floor`]); 0 elsewhere.
    floor: f64,
}

impl<B: Backend> Harness<'_, B> {
    fn check<C: Case>(&mut self, c: &C, m: Meta) {
        self.check_with(c, m, None);
    }

    /// Run `c` on both backends and record the comparison; with `exact` (values and bound), also
    /// compare both against it.
    fn check_with<C: Case>(&mut self, c: &C, m: Meta, exact: Option<(&[f32], f64)>) {
        if self.broken.is_some() {
            self.skipped += 1;
            return;
        }
        let want = match c.run(&self.r) {
            Ok(v) => v,
            Err(RunError::Refused(e) | RunError::Failed(e)) => {
                panic!("reference backend failed on {} {}: {e}", m.op, m.case)
            }
        };
        assert!(
            want[m.n..].iter().all(|&v| v == SENTINEL),
            "harness bug: the reference wrote past {} values in {} {}",
            m.n,
            m.op,
            m.case
        );
        let mut row = Row {
            op: m.op,
            group: m.group,
            case: m.case,
            err: f64::INFINITY,
            bound: m.bound,
            err_f64: None,
            ref_f64: None,
            bound_f64: exact.map(|(_, b)| b),
            problem: None,
        };
        // A panic in the backend is reported as this case's failure, not as the whole test's.
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.run(self.b)))
            .unwrap_or_else(|p| {
                let why = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Err(RunError::Failed(format!("panicked: {why}")))
            });
        match got {
            Err(RunError::Refused(e)) if self.refusal_ok => {
                row.err = 0.0;
                row.case = format!("{} [refused, allowed here: {e}]", row.case);
            }
            Err(RunError::Refused(e)) => {
                row.problem = Some(format!("weight refused: {e}"));
            }
            Err(RunError::Failed(e)) => {
                row.problem = Some(format!("backend error: {e}"));
                self.broken = Some(e);
            }
            Ok(got) if got.len() != want.len() => {
                row.problem = Some(format!(
                    "read {} values, expected {}",
                    got.len(),
                    want.len()
                ));
            }
            Ok(got) => {
                // Against the reference, the window widens by the reference's own distance from
                // the exact product, where there is one: a device within `bound_f64` of the truth
                // (checked below) can be that much further from a reference that is off itself.
                // The CPU's quantized GLU cases measure up to 2.2e-2 from exact, which left a
                // correct device under a fixed 3e-2 less than 1e-2 of room.
                if let Some((ex, _)) = exact {
                    let r = rel_err(&want, ex, m.n, m.floor).0;
                    row.ref_f64 = Some(r);
                    row.bound = m.bound + r;
                }
                let (err, at) = rel_err(&got, &want, m.n, m.floor);
                row.err = err;
                if err > row.bound {
                    row.problem = Some(format!(
                        "worst at [{at}]: got {} want {}",
                        got[at], want[at]
                    ));
                }
                if let Some(i) = (m.n..got.len()).find(|&i| got[i].to_bits() != SENTINEL.to_bits())
                {
                    row.problem = Some(format!(
                        "wrote past the {} output values: [{i}] = {} (buffer of {})",
                        m.n,
                        got[i],
                        got.len()
                    ));
                }
                if let Some((ex, _)) = exact {
                    row.err_f64 = Some(rel_err(&got, ex, m.n, m.floor).0);
                }
            }
        }
        self.rows.push(row);
    }

    fn finish(self) {
        if let Some(e) = self.broken {
            self.rows.push(Row {
                op: "(skipped)",
                group: "after a backend error".into(),
                case: format!("{} cases not run", self.skipped),
                err: 0.0,
                bound: 0.0,
                err_f64: None,
                ref_f64: None,
                bound_f64: None,
                problem: Some(format!("the backend failed earlier: {e}")),
            });
        }
    }
}

/// Run `fam` on `b`, appending its cases to `report`.
pub fn run_family<B: Backend>(b: &B, fam: Family, report: &mut Report) {
    // First, so that a crash mid-family still shows how to replay it.
    eprintln!(
        "ops harness: {} family {} ({})",
        report.label,
        fam.name(),
        report.replay()
    );
    let mut h = Harness {
        b,
        r: reference(),
        rng: Rng::new(report.seed, fam.name()),
        rows: &mut report.rows,
        broken: None,
        skipped: 0,
        refusal_ok: false,
    };
    match fam {
        Family::Embed => embed_family(&mut h),
        Family::Elementwise => elementwise_family(&mut h),
        Family::Norm => norm_family(&mut h),
        Family::Rope => rope_family(&mut h),
        Family::Attention => attention_family(&mut h),
        Family::Matmul => matmul_family(&mut h),
        Family::OddCols => odd_cols_family(&mut h),
    }
    h.finish();
}

/// Check one family on `b`: print the table, panic on any failure.
pub fn check_family<B: Backend>(b: &B, label: &str, fam: Family) {
    let mut report = Report::new(b, &format!("{label} [{}]", fam.name()));
    run_family(b, fam, &mut report);
    report.print();
    report.assert_ok();
}

/// Check every op of the `Backend` trait on `b` against the CPU scalar reference: print the
/// table, panic on any failure.
pub fn check_backend<B: Backend>(b: &B, label: &str) {
    let mut report = Report::new(b, label);
    for fam in Family::ALL {
        run_family(b, fam, &mut report);
    }
    report.print();
    report.assert_ok();
}

// ---------------------------------------------------------------------------------------------
// The families.
// ---------------------------------------------------------------------------------------------

/// Values per block of a type, with 32 standing in for the float types (their natural unit in
/// model shapes).
fn unit(ty: GgmlType) -> usize {
    ty.block_len().max(32)
}

fn is_float(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

const VEC_TYPES: [GgmlType; 3] = [GgmlType::F32, GgmlType::F16, GgmlType::BF16];

fn embed_case<B: Backend>(
    h: &mut Harness<'_, B>,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    tag: &str,
) {
    let table = random_tensor(&mut h.rng, "token_embd", ty, rows, cols);
    for n in [1usize, 3, 9, 33] {
        let ids: Vec<u32> = (0..n).map(|_| h.rng.below(rows) as u32).collect();
        let scale = h.rng.pick(&[1.0f32, 8.0, 0.37]);
        let c = EmbedCase {
            out: Input::output(n * cols),
            table: &table,
            ids,
            scale,
        };
        h.check(
            &c,
            Meta {
                op: "embed",
                group: format!("{ty}{tag}"),
                case: format!("{rows}x{cols} table, {n} ids, scale {scale}"),
                n: n * cols,
                bound: DEQUANT,
                floor: 0.0,
            },
        );
    }
}

fn embed_family<B: Backend>(h: &mut Harness<'_, B>) {
    for ty in WEIGHT_TYPES {
        let u = unit(ty);
        // 1, 2 and 3 blocks, and a wide table like a model's (not a power of two).
        let wide = u * if ty.block_len() == 256 { 9 } else { 70 };
        for cols in [u, 2 * u, 3 * u, wide] {
            let rows = h.rng.pick(&[5usize, 37, 130]);
            embed_case(h, ty, rows, cols, "");
        }
    }
}

fn elementwise_family<B: Backend>(h: &mut Harness<'_, B>) {
    let lens = [1usize, 31, 1000, 4099, 70_001];
    for &len in &lens {
        let a = h.rng.vec(len, -4.0, 4.0);
        let b = h.rng.vec(len, -4.0, 4.0);
        let c = BinaryCase {
            act: None,
            a: Input::new(&a, len),
            b: Input::new(&b, len),
            out: Input::output(0),
        };
        h.check(
            &c,
            Meta {
                op: "add",
                group: "f32".into(),
                case: format!("len {len}"),
                n: len,
                bound: EXACT,
                floor: 0.0,
            },
        );
    }
    for act in [Activation::Silu, Activation::GeluTanh] {
        for &len in &lens {
            let x = h.rng.vec(len, -8.0, 8.0);
            let c = UnaryCase {
                op: Unary::Act(act),
                x: Input::new(&x, len),
            };
            h.check(
                &c,
                Meta {
                    op: "act",
                    group: format!("{act:?}"),
                    case: format!("len {len}"),
                    n: len,
                    bound: TRANSCENDENTAL,
                    floor: act_floor(&x, None),
                },
            );
            let g = h.rng.vec(len, -8.0, 8.0);
            let u = h.rng.vec(len, -2.0, 2.0);
            let c = BinaryCase {
                act: Some(act),
                a: Input::new(&g, len),
                b: Input::new(&u, len),
                out: Input::output(len),
            };
            h.check(
                &c,
                Meta {
                    op: "glu",
                    group: format!("{act:?}"),
                    case: format!("len {len}"),
                    n: len,
                    bound: TRANSCENDENTAL,
                    floor: act_floor(&g, Some(&u)),
                },
            );
        }
    }
    for cap in [3.0f32, 30.0, 50.0] {
        for &len in &lens {
            let x = h.rng.vec(len, -3.0 * cap, 3.0 * cap);
            let c = UnaryCase {
                op: Unary::Softcap(cap),
                x: Input::new(&x, len),
            };
            h.check(
                &c,
                Meta {
                    op: "softcap",
                    group: format!("c = {cap}"),
                    case: format!("len {len}, x in ±{}", 3.0 * cap),
                    n: len,
                    bound: TRANSCENDENTAL,
                    floor: 0.0,
                },
            );
        }
    }
    for ty in VEC_TYPES {
        for (rows, cols) in [(1usize, 1usize), (3, 7), (9, 64), (33, 896), (128, 576)] {
            let bv = h.rng.vec(cols, -1.0, 1.0);
            let b = vector(&mut h.rng, "bias", ty, &bv);
            let x = h.rng.vec(rows * cols, -2.0, 2.0);
            let c = AddBiasCase {
                x: Input::new(&x, rows * cols),
                b,
                rows,
            };
            h.check(
                &c,
                Meta {
                    op: "add_bias",
                    group: ty.name().into(),
                    case: format!("{rows} rows of {cols}"),
                    n: rows * cols,
                    bound: EXACT,
                    floor: 0.0,
                },
            );
        }
    }
    for (rows, width) in [(1usize, 1usize), (3, 64), (9, 576), (128, 640), (33, 4099)] {
        let x = h.rng.vec(rows * width, -2.0, 2.0);
        let row = if h.rng.below(2) == 0 {
            rows - 1
        } else {
            h.rng.below(rows)
        };
        let c = CopyRowCase {
            x: Input::new(&x, rows * width),
            row,
            width,
            out: Input::output(width),
        };
        h.check(
            &c,
            Meta {
                op: "copy_row",
                group: "f32".into(),
                case: format!("row {row} of {rows}, width {width}"),
                n: width,
                bound: EXACT,
                floor: 0.0,
            },
        );
    }
}

/// Norm weights as a checkpoint stores them: around 1, or around 0 when the family adds 1.
fn norm_weight(rng: &mut Rng, ty: GgmlType, dim: usize, w_offset: f32) -> HostTensor {
    let v = rng.vec(dim, 0.5 - w_offset, 1.5 - w_offset);
    vector(rng, "norm", ty, &v)
}

/// `rows x dim` norm inputs: uniform ±2 around `mean`; with `tiny`, every row is scaled down so
/// its mean square is comparable to eps (then eps matters to O(1)).
fn norm_input(rng: &mut Rng, rows: usize, dim: usize, mean: f32, tiny: bool) -> Vec<f32> {
    let s = if tiny { 1e-3 } else { 1.0 };
    (0..rows * dim)
        .map(|_| (mean + rng.range(-2.0, 2.0)) * s)
        .collect()
}

fn norm_family<B: Backend>(h: &mut Harness<'_, B>) {
    let shapes = [
        (1usize, 1usize),
        (1, 7),
        (3, 64),
        (9, 576),
        (33, 640),
        (8, 2048),
        (128, 576),
        (2, 4096),
        (3, 5000),
    ];
    for kind in [NormKind::Rms, NormKind::Layer] {
        for (i, &(rows, dim)) in shapes.iter().enumerate() {
            let wty = VEC_TYPES[i % 3];
            let w_offset = if i % 2 == 0 { 0.0 } else { 1.0 };
            let eps = h.rng.pick(&[1e-5f32, 1e-6]);
            let tiny = i % 4 == 3;
            let mean = if kind == NormKind::Layer { 3.0 } else { 0.0 };
            // LayerNorm families have a bias; RMS adds one when given (try both).
            let bias = kind == NormKind::Layer || i % 3 == 1;
            let spec = NormSpec {
                kind,
                eps,
                w_offset,
            };
            let x = norm_input(&mut h.rng, rows, dim, mean, tiny);
            let w = norm_weight(&mut h.rng, wty, dim, w_offset);
            let b = bias.then(|| {
                let bty = h.rng.pick(&VEC_TYPES);
                let v = h.rng.vec(dim, -0.5, 0.5);
                vector(&mut h.rng, "norm_bias", bty, &v)
            });
            let case = format!(
                "{rows}x{dim}, w {wty} +{w_offset}, bias {}, eps {eps:e}{}",
                b.as_ref().map_or("none", |b| b.ty.name()),
                if tiny { ", tiny rows" } else { "" }
            );
            let c = NormCase {
                spec,
                x: Input::new(&x, rows * dim),
                w,
                b,
                rows,
                dim,
                out: Some(Input::output(rows * dim)),
            };
            h.check(
                &c,
                Meta {
                    op: "norm",
                    group: format!("{kind:?}"),
                    case,
                    n: rows * dim,
                    bound: NORM,
                    floor: 0.0,
                },
            );
        }
    }
    // QK-norm: rows = n_tok * n_heads, dim = head_dim.
    for (i, &hd) in [64usize, 80, 128, 256].iter().enumerate() {
        for (j, &(n_tok, n_heads)) in [(1usize, 8usize), (9, 4), (33, 2), (128, 1)]
            .iter()
            .enumerate()
        {
            let kind = if (i + j) % 4 == 3 {
                NormKind::Layer
            } else {
                NormKind::Rms
            };
            let wty = VEC_TYPES[(i + j) % 3];
            let w_offset = if j % 2 == 0 { 0.0 } else { 1.0 };
            let rows = n_tok * n_heads;
            let tiny = (i + j) % 5 == 4;
            let x = norm_input(&mut h.rng, rows, hd, 0.0, tiny);
            let c = NormCase {
                spec: NormSpec {
                    kind,
                    eps: 1e-6,
                    w_offset,
                },
                x: Input::new(&x, rows * hd),
                w: norm_weight(&mut h.rng, wty, hd, w_offset),
                b: None,
                rows,
                dim: hd,
                out: None,
            };
            h.check(
                &c,
                Meta {
                    op: "norm_inplace",
                    group: format!("{kind:?}"),
                    case: format!(
                        "{n_tok} tok x {n_heads} heads x {hd}, w {wty} +{w_offset}{}",
                        if tiny { ", tiny rows" } else { "" }
                    ),
                    n: rows * hd,
                    bound: NORM,
                    floor: 0.0,
                },
            );
        }
    }
}

/// Every RoPE scaling mode, with parameters that make it matter at the positions tested.
fn rope_scalings(rng: &mut Rng, n_rot: usize) -> Vec<RopeScaling> {
    let half = n_rot / 2;
    vec![
        RopeScaling::None,
        RopeScaling::Linear { factor: 4.0 },
        RopeScaling::DynamicNtk {
            factor: 2.0,
            original_max_pos: 64,
        },
        RopeScaling::Yarn {
            factor: 4.0,
            original_max_pos: 256,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: None,
            mscale: None,
            mscale_all_dim: None,
            truncate: true,
        },
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_pos: 512,
        },
        RopeScaling::LongRope {
            short_factor: (0..half).map(|_| rng.range(1.0, 2.0) as f64).collect(),
            long_factor: (0..half).map(|_| rng.range(1.0, 8.0) as f64).collect(),
            original_max_pos: 128,
            max_pos: 1024,
            attention_factor: None,
        },
        RopeScaling::Factors {
            factors: (0..half).map(|_| rng.range(1.0, 8.0) as f64).collect(),
        },
    ]
}

fn rope_family<B: Backend>(h: &mut Harness<'_, B>) {
    let n_toks = [1usize, 3, 8, 9, 33, 128];
    let pos0s = [0usize, 7, 100, 1000, 5000];
    let mut i = 0usize;
    for hd in [64usize, 80, 128, 256] {
        for layout in [RopeLayout::Adjacent, RopeLayout::Halves] {
            // Full, half and quarter rotary (n_rot even).
            let n_rot = [hd, hd / 2, (hd / 4) & !1][i % 3];
            let scalings = rope_scalings(&mut h.rng, n_rot);
            for scaling in scalings {
                i += 1;
                let n_tok = n_toks[i % n_toks.len()];
                let pos0 = pos0s[(i / 2) % pos0s.len()];
                let n_heads = [1usize, 3, 8][i % 3];
                let base = h.rng.pick(&[10_000.0f64, 500_000.0, 1_000_000.0]);
                let kind = scaling.rope_type();
                let p = RopeParams {
                    base,
                    n_rot,
                    scaling,
                };
                let n = n_tok * n_heads * hd;
                let x = h.rng.vec(n, -2.0, 2.0);
                let c = RopeCase {
                    x: Input::new(&x, n),
                    n_tok,
                    n_heads,
                    head_dim: hd,
                    pos0,
                    layout,
                    p,
                };
                h.check(
                    &c,
                    Meta {
                        op: "rope",
                        group: format!("{layout:?} {kind}"),
                        case: format!(
                            "{n_tok} tok at {pos0}, {n_heads} heads x {hd}, n_rot {n_rot}, base {base}"
                        ),
                        n,
                        bound: ROPE,
                        floor: 0.0,
                    },
                );
            }
        }
    }
}

fn kv_rows(rng: &mut Rng, pos: usize, n: usize, kw: usize, vw: usize, amp: f32) -> KvRows {
    let k = rng.vec(n * kw, -amp, amp);
    let v = rng.vec(n * vw, -1.0, 1.0);
    KvRows {
        pos,
        n,
        k: Input::new(&k, n * kw),
        v: Input::new(&v, n * vw),
    }
}

fn attention_family<B: Backend>(h: &mut Harness<'_, B>) {
    // (n_head, n_head_kv, head_dim, head_dim_v): MHA, MQA, GQA 2/3/4/8, head dims 64/80/128/256,
    // and a value width that differs from the key width.
    let shapes = [
        (1usize, 1usize, 64usize, 64usize),
        (4, 1, 64, 64),
        (8, 2, 128, 128),
        (6, 3, 80, 80),
        (4, 1, 256, 256),
        (8, 8, 128, 128),
        (12, 4, 64, 64),
        (4, 2, 128, 64),
    ];
    let n_toks = [1usize, 3, 8, 9, 33, 128];
    let mut i = 0usize;
    for &(n_head, n_head_kv, hd, hdv) in &shapes {
        for &n_tok in &n_toks {
            i += 1;
            let pos0 = match i % 4 {
                0 => 0,
                1 => 1 + h.rng.below(8),
                2 => 50 + h.rng.below(150),
                _ => h.rng.below(40),
            };
            let end = pos0 + n_tok;
            let window = match (i / 2) % 5 {
                0 | 3 => None,
                1 => Some(1),
                2 => Some(2 + h.rng.below(16)),
                _ => Some(end.max(2) - 1 + h.rng.below(3)),
            };
            // Softcap off, a tight cap, and Gemma 2's 50. Peaky cases scale the scores to a std of
            // ~21: the largest reach ~90, past f32 exp's range (88.7) without the max subtraction.
            let (softcap, peaky) = match i % 3 {
                0 => (None, i.is_multiple_of(2)),
                1 => (Some(3.0f32), false),
                _ => (Some(50.0f32), true),
            };
            let scale = if peaky {
                16.0 / (hd as f32).sqrt()
            } else {
                1.0 / (hd as f32).sqrt()
            };
            let shape = AttnShape {
                n_head,
                n_head_kv,
                head_dim: hd,
                head_dim_v: hdv,
                scale,
                window,
                softcap,
            };
            check_attention(h, shape, pos0, n_tok);
        }
    }
    // Single decode tokens deep into a context: on CUDA the key range is cut into more splits
    // than the merge reads at once (a dozen, and the most, 64).
    for (n_head, n_head_kv, hd, pos0) in [(2usize, 1usize, 64usize, 700usize), (4, 2, 128, 4100)] {
        check_attention(h, plain_attn_shape(n_head, n_head_kv, hd, hd), pos0, 1);
    }
}

/// One attention case of `shape`: n_tok tokens at pos0 over a history stored in three calls,
/// with junk past the live positions and in another layer.
fn check_attention<B: Backend>(
    h: &mut Harness<'_, B>,
    shape: AttnShape,
    pos0: usize,
    n_tok: usize,
) {
    let (n_head, n_head_kv) = (shape.n_head, shape.n_head_kv);
    let (hd, hdv) = (shape.head_dim, shape.head_dim_v);
    let (window, softcap, scale) = (shape.window, shape.softcap, shape.scale);
    let end = pos0 + n_tok;
    let (kw, vw) = (n_head_kv * hd, n_head_kv * hdv);
    let n_ctx = end + h.rng.below(6);
    let (n_layer, layer) = (2, h.rng.below(2));
    let rng = &mut h.rng;
    let mut stores = Vec::new();
    // Junk past the live positions: a kernel that reads the future picks it up.
    if n_ctx > end {
        stores.push(kv_rows(rng, end, n_ctx - end, kw, vw, 4.0));
    }
    // The history in two earlier calls, then this call's rows.
    let split = pos0 / 2;
    if split > 0 {
        stores.push(kv_rows(rng, 0, split, kw, vw, 2.0));
    }
    if pos0 > split {
        stores.push(kv_rows(rng, split, pos0 - split, kw, vw, 2.0));
    }
    stores.push(kv_rows(rng, pos0, n_tok, kw, vw, 2.0));
    let other = kv_rows(rng, 0, n_ctx, kw, vw, 4.0);
    let q = rng.vec(n_tok * n_head * hd, -2.0, 2.0);
    let n = n_tok * n_head * hdv;
    let c = AttnCase {
        shape,
        n_layer,
        layer,
        n_ctx,
        pos0,
        n_tok,
        stores,
        other,
        q: Input::new(&q, n_tok * n_head * hd),
        out: Input::output(n),
    };
    h.check(
        &c,
        Meta {
            op: "attention",
            group: format!("hd {hd}/{hdv}, {n_head}q/{n_head_kv}kv"),
            case: format!(
                "{n_tok} tok at {pos0}, ctx {n_ctx}, layer {layer}, window {window:?}, \
                 softcap {softcap:?}, scale {scale:.4}"
            ),
            n,
            bound: ATTENTION,
            floor: 0.0,
        },
    );
}

/// `out[t][r] = Σ_c w[r][c] x[t][c]` in f64, rounded to f32.
fn matmul_f64(w: &[f32], rows: usize, cols: usize, x: &[f32], n_tok: usize) -> Vec<f32> {
    let mut out = vec![0f32; n_tok * rows];
    for t in 0..n_tok {
        let xt = &x[t * cols..(t + 1) * cols];
        for r in 0..rows {
            let wr = &w[r * cols..(r + 1) * cols];
            let s: f64 = wr.iter().zip(xt).map(|(&a, &b)| a as f64 * b as f64).sum();
            out[t * rows + r] = s as f32;
        }
    }
    out
}

/// The typical magnitude of a matmul output, `sqrt(cols) * rms(w row) * rms(x row)` (maximised
/// over rows and tokens), used as the least denominator of its error: with few outputs (one row,
/// one token) max |ref| may be a lucky near-cancellation, and the activation-quantization noise,
/// which scales with the row norms and not with the result, would look huge relative to it.
fn matmul_floor(w: &[f32], cols: usize, x: &[f32]) -> f64 {
    let rms = |v: &[f32]| (v.iter().map(|&a| (a as f64).powi(2)).sum::<f64>() / cols as f64).sqrt();
    let max_rms = |m: &[f32]| m.chunks(cols).map(rms).fold(0f64, f64::max);
    (cols as f64).sqrt() * max_rms(w) * max_rms(x)
}

/// Activations for a matmul: uniform ±1, each token scaled by its own factor in [1/4, 4] (a
/// kernel that mixes up token rows or their quantization scales shows).
fn matmul_input(rng: &mut Rng, n_tok: usize, cols: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(n_tok * cols);
    for _ in 0..n_tok {
        let s = 2f32.powf(rng.range(-2.0, 2.0));
        x.extend((0..cols).map(|_| rng.range(-1.0, 1.0) * s));
    }
    x
}

fn matmul_shape<B: Backend>(
    h: &mut Harness<'_, B>,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    tag: &str,
) {
    let w = random_tensor(&mut h.rng, "ffn_gate", ty, rows, cols);
    let up = random_tensor(&mut h.rng, "ffn_up", ty, rows, cols);
    let wv = w.values();
    let (bound, bound_f64) = if is_float(ty) {
        (MATMUL_FLOAT, MATMUL_FLOAT_F64)
    } else {
        (MATMUL_QUANT, MATMUL_QUANT_F64)
    };
    for n_tok in [1usize, 2, 7, 8, 9, 64, 128] {
        let x = matmul_input(&mut h.rng, n_tok, cols);
        let exact = matmul_f64(&wv, rows, cols, &x, n_tok);
        let case = |out: Input, op| MatmulCase {
            w: &w,
            up: None,
            x: Input::new(&x, n_tok * cols),
            n_tok,
            out,
            op,
        };
        let c = case(Input::output(n_tok * rows), MatmulOp::Write);
        let floor = matmul_floor(&wv, cols, &x);
        let meta = |op| Meta {
            op,
            group: format!("{ty}{tag}"),
            case: format!("{rows}x{cols}, n_tok {n_tok}"),
            n: n_tok * rows,
            bound,
            floor,
        };
        h.check_with(&c, meta("matmul"), Some((&exact, bound_f64)));
        // The fused residual add, on the decode (matvec) and prefill (tiled) paths: a residual
        // of the products' own size, so a dropped or doubled add shows.
        if n_tok == 1 || n_tok == 64 {
            let acc: Vec<f32> = (0..n_tok * rows)
                .map(|_| h.rng.range(-1.0, 1.0) * floor as f32)
                .collect();
            let sum: Vec<f32> = acc.iter().zip(&exact).map(|(a, e)| a + e).collect();
            let c = case(Input::new(&acc, n_tok * rows), MatmulOp::Add);
            h.check_with(&c, meta("matmul_add"), Some((&sum, bound_f64)));
        }
        // Two projections of one input (Q/K/V, gate/up): a backend that prepares x once for both
        // must give both the plain results.
        if n_tok == 1 || n_tok == 8 {
            let c = case(Input::output(n_tok * rows), MatmulOp::Many);
            let twice: Vec<f32> = exact.iter().chain(&exact).copied().collect();
            let meta2 = Meta {
                n: 2 * n_tok * rows,
                ..meta("matmul_many")
            };
            h.check_with(&c, meta2, Some((&twice, bound_f64)));
        }
        // A gated feed-forward block (gate, up, GLU; one kernel on CUDA's decode path): both
        // activations over one and seven tokens (seven: passes of two and four tokens with a
        // partial last one), one at 8 and 64 (the tiled path).
        let acts: &[Activation] = match n_tok {
            1 | 7 => &[Activation::Silu, Activation::GeluTanh],
            8 => &[Activation::GeluTanh],
            64 => &[Activation::Silu],
            _ => &[],
        };
        for &act in acts {
            let upv = up.values();
            let up_exact = matmul_f64(&upv, rows, cols, &x, n_tok);
            let want: Vec<f32> = exact
                .iter()
                .zip(&up_exact)
                .map(|(&g, &u)| (act_f64(act, g as f64) * u as f64) as f32)
                .collect();
            let c = MatmulCase {
                up: Some(&up),
                ..case(Input::output(n_tok * rows), MatmulOp::Glu(act))
            };
            let meta3 = Meta {
                group: format!("{ty}{tag} {act:?}"),
                floor: floor * matmul_floor(&upv, cols, &x),
                ..meta("matmul_glu")
            };
            h.check_with(&c, meta3, Some((&want, bound_f64)));
        }
    }
}

/// `matmul_glu` on `b` gives bit for bit what `matmul_many` (up, gate) and `glu` give on `b`:
/// a backend that fuses the three (CUDA's `matvec_glu_<t>`) must compute the same sums and
/// products, not merely close ones. Every quantized type over decode-sized batches (one to
/// eight tokens) and both activations, at a width of whole 128-column chunks.
pub fn assert_glu_fusion_exact<B: Backend>(b: &B) {
    let mut rng = Rng::new(seed(), "glu fusion");
    let (rows, cols) = (37, 1536);
    for ty in WEIGHT_TYPES.into_iter().filter(|t| !is_float(*t)) {
        let gate = random_tensor(&mut rng, "ffn_gate", ty, rows, cols);
        let up = random_tensor(&mut rng, "ffn_up", ty, rows, cols);
        let (g, u) = (
            b.weight(gate.view(), Role::Matmul).expect("gate"),
            b.weight(up.view(), Role::Matmul).expect("up"),
        );
        for n_tok in [1usize, 2, 3, 5, 8] {
            let x = matmul_input(&mut rng, n_tok, cols);
            let xb = Input::new(&x, n_tok * cols).put(b).ok().expect("x");
            let len = n_tok * rows;
            let buf = || Input::output(len).put(b).ok().expect("buffer");
            for act in [Activation::Silu, Activation::GeluTanh] {
                let (mut fused, mut g1, mut u1) = (buf(), buf(), buf());
                b.matmul_glu(act, &g, &u, &xb, n_tok, [&mut g1, &mut u1], len, &mut fused);
                let (mut apart, mut g2, mut u2) = (buf(), buf(), buf());
                b.matmul_many(&[&u, &g], &xb, n_tok, &mut [&mut u2, &mut g2]);
                b.glu(act, &g2, &u2, len, &mut apart);
                let read = |o: &B::Buf| get(b, o, len).ok().expect("read");
                let (f, a) = (read(&fused), read(&apart));
                let differ = bits_differ(&f, &a);
                assert_eq!(
                    differ, 0,
                    "{ty} {act:?}, {n_tok} tokens: {differ} of {len} fused GLU outputs differ \
                     from the separate projections and GLU"
                );
            }
        }
    }
}

/// `n_head` / `n_head_kv` heads of `hd`, V heads of `hdv`, scaled by 1/sqrt(hd), no window and
/// no soft-cap.
fn plain_attn_shape(n_head: usize, n_head_kv: usize, hd: usize, hdv: usize) -> AttnShape {
    AttnShape {
        n_head,
        n_head_kv,
        head_dim: hd,
        head_dim_v: hdv,
        scale: 1.0 / (hd as f32).sqrt(),
        window: None,
        softcap: None,
    }
}

/// The attention shape ([`plain_attn_shape`]) and plain RoPE (base 10000) of a fusion test
/// case: `n_head` / `n_head_kv` heads of `hd`, V heads of `hdv`, `n_rot` dims rotated.
fn rope_heads_case(
    n_head: usize,
    n_head_kv: usize,
    hd: usize,
    hdv: usize,
    n_rot: usize,
) -> (AttnShape, RopeParams) {
    let shape = plain_attn_shape(n_head, n_head_kv, hd, hdv);
    let p = RopeParams {
        base: 10_000.0,
        n_rot,
        scaling: RopeScaling::None,
    };
    (shape, p)
}

/// `rope_kv_store` on `b` gives bit for bit what `rope` on Q, `rope` on K and `kv_store` give
/// on `b` (CUDA runs the three as one kernel): the rotated Q and K, and the caches, compared
/// through attention over them. Both layouts, full and partial rotary, grouped K/V heads, a
/// history stored first, one token (decode) and a batch.
pub fn assert_rope_store_fusion_exact<B: Backend>(b: &B) {
    let mut rng = Rng::new(seed(), "rope store fusion");
    let cases = [
        (
            RopeLayout::Halves,
            4usize,
            1usize,
            256usize,
            256usize,
            256usize,
        ),
        (RopeLayout::Adjacent, 8, 2, 64, 64, 64),
        (RopeLayout::Halves, 6, 3, 80, 40, 64),
        (RopeLayout::Adjacent, 4, 4, 128, 32, 128),
    ];
    for (layout, n_head, n_head_kv, hd, n_rot, hdv) in cases {
        let (shape, p) = rope_heads_case(n_head, n_head_kv, hd, hdv, n_rot);
        let (qw, kw, vw) = (n_head * hd, n_head_kv * hd, n_head_kv * hdv);
        let (n_ctx, layer) = (40, 1);
        for (pos0, n_tok) in [(0usize, 1usize), (7, 1), (9, 5), (20, 17)] {
            let rows = |rng: &mut Rng, w: usize| rng.vec(pos0.max(n_tok) * w, -2.0, 2.0);
            let (hq, hk, hv) = (rows(&mut rng, qw), rows(&mut rng, kw), rows(&mut rng, vw));
            let (q, k, v) = (rows(&mut rng, qw), rows(&mut rng, kw), rows(&mut rng, vw));
            let put = |x: &[f32], n: usize| Input::new(&x[..n], n).put(b).ok().expect("upload");
            let read = |o: &B::Buf, n: usize| get(b, o, n).ok().expect("read");
            let mut outs = Vec::new();
            for fused in [true, false] {
                let mut kv = b.kv_cache(2, n_ctx, kw, vw).expect("kv cache");
                // The history (positions 0..pos0), then this call's rows.
                let mut step = |pos: usize, n: usize, q: &[f32], k: &[f32], v: &[f32]| {
                    let (mut qb, mut kb, vb) = (put(q, n * qw), put(k, n * kw), put(v, n * vw));
                    if fused {
                        b.rope_kv_store(
                            [&mut qb, &mut kb],
                            &vb,
                            &mut kv,
                            layer,
                            pos,
                            n,
                            &shape,
                            layout,
                            &p,
                        );
                    } else {
                        b.rope(&mut qb, n, n_head, hd, pos, layout, &p);
                        b.rope(&mut kb, n, n_head_kv, hd, pos, layout, &p);
                        b.kv_store(&mut kv, layer, pos, n, &kb, &vb);
                    }
                    (qb, kb)
                };
                if pos0 > 0 {
                    step(0, pos0, &hq, &hk, &hv);
                }
                let (qb, kb) = step(pos0, n_tok, &q, &k, &v);
                let mut out = Input::output(n_tok * n_head * hdv)
                    .put(b)
                    .ok()
                    .expect("out");
                b.attention(&qb, &kv, layer, pos0, n_tok, &shape, &mut out);
                outs.push([
                    read(&qb, n_tok * qw),
                    read(&kb, n_tok * kw),
                    read(&out, n_tok * n_head * hdv),
                ]);
            }
            for (what, (f, a)) in ["Q", "K", "attention over the caches"]
                .iter()
                .zip(outs[0].iter().zip(&outs[1]))
            {
                let differ = bits_differ(f, a);
                assert_eq!(
                    differ,
                    0,
                    "{layout:?} {n_head}/{n_head_kv} heads x {hd} (rotating {n_rot}), {n_tok} \
                     tokens at {pos0}: {differ} of {} values of {what} differ between the fused \
                     RoPE + KV store and the separate ops",
                    f.len()
                );
            }
        }
    }
}

/// `act(x)` in f64, with the formulas of src/backend/cpu/activation.rs.
fn act_f64(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::GeluTanh => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (k * x * (1.0 + 0.044715 * x * x)).tanh())
        }
    }
}

fn matmul_family<B: Backend>(h: &mut Harness<'_, B>) {
    for ty in WEIGHT_TYPES {
        let u = unit(ty);
        let wide = u * if ty.block_len() == 256 { 9 } else { 68 };
        // Rows that are not multiples of any tile; 1, 2 and 3 blocks per row, and a wide one
        // (whole 128-column chunks, so CUDA's layout-C matvec loops run; the narrow ones take
        // its unit loop for 32-value blocks).
        for (rows, cols) in [(1usize, u), (67, 2 * u), (33, 3 * u), (129, wide)] {
            matmul_shape(h, ty, rows, cols, "");
        }
    }
}

fn odd_cols_family<B: Backend>(h: &mut Harness<'_, B>) {
    h.refusal_ok = true;
    for ty in VEC_TYPES {
        for cols in [1usize, 3, 45, 1001] {
            embed_case(h, ty, 7, cols, " odd cols");
            matmul_shape(h, ty, 13, cols, " odd cols");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// End to end: whole models on two backends.
// ---------------------------------------------------------------------------------------------

/// The repository root: where this test was built from, or the current directory when the test
/// binary runs elsewhere (tools/gpu-check.sh --prebuilt runs a bundled binary from a checkout).
pub fn repo_dir() -> std::path::PathBuf {
    let built = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if built.join("tests/fixtures").is_dir() {
        built
    } else {
        std::env::current_dir().expect("current directory")
    }
}

/// The tiny architecture fixtures (tools/make-arch-fixtures.py), one per supported family.
pub const ARCH_CASES: [&str; 10] = [
    "llama", "llama3", "mistral", "phi2", "phi3", "gemma", "gemma2", "gemma3", "qwen2", "qwen3",
];

/// `tests/fixtures/arch/<case>`.
pub fn arch_dir(case: &str) -> std::path::PathBuf {
    repo_dir().join("tests/fixtures/arch").join(case)
}

/// The fixture's token ids (`ref.json`).
pub fn arch_ids(case: &str) -> Vec<u32> {
    let p = arch_dir(case).join("ref.json");
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .expect("ref.json");
    v["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// Every position's logits of `ids` on `backend`, and the vocabulary size.
pub fn executor_logits<B: Backend>(
    path: &std::path::Path,
    backend: B,
    ids: &[u32],
) -> torchless::Result<(Vec<f32>, usize)> {
    use torchless::graph::{Executor, Logits};
    let src = torchless::model::ModelSource::open(path)?;
    let exec = Executor::load(&src, backend)?;
    let mut st = exec.new_state(ids.len())?;
    let out = exec.forward(&mut st, ids, Logits::All)?;
    Ok((out, exec.config.n_vocab))
}

/// How two backends' logits for the same ids differ.
#[derive(Clone, Debug)]
pub struct LogitDiff {
    /// Positions compared.
    pub positions: usize,
    /// max |Δlogit| / max |reference logit|.
    pub max_rel: f64,
    /// Root mean square of Δlogit over every position and token.
    pub rms: f64,
    /// Mean over positions of KL(softmax(reference) ‖ softmax(got)), in f64.
    pub mean_kl: f64,
    /// Positions whose reference top-2 margin is at least the margin asked for.
    pub clear: usize,
    /// (position, reference top-1, got top-1, reference margin) where the two disagree at a
    /// clear position.
    pub top1_mismatch: Vec<(usize, usize, usize, f32)>,
}

fn top2(v: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    let mut second = f32::NEG_INFINITY;
    for (i, &x) in v.iter().enumerate() {
        if x > best.1 {
            second = best.1;
            best = (i, x);
        } else if x > second {
            second = x;
        }
    }
    (best.0, best.1 - second)
}

/// Compare `got` with `want` (both `[positions, n_vocab]`); top-1 is compared where the
/// reference's top-2 margin is at least `margin` (in logits).
pub fn logit_diff(got: &[f32], want: &[f32], n_vocab: usize, margin: f32) -> LogitDiff {
    assert_eq!(got.len(), want.len(), "logit counts differ");
    let scale = want.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
    let (mut max_d, mut sq, mut kl) = (0f64, 0f64, 0f64);
    let (mut clear, mut top1_mismatch) = (0, Vec::new());
    let logp = |v: &[f32]| -> Vec<f64> {
        let m = v.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let z = v.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln() + m;
        v.iter().map(|&x| x as f64 - z).collect()
    };
    let positions = want.len() / n_vocab;
    for (p, (g, w)) in got.chunks(n_vocab).zip(want.chunks(n_vocab)).enumerate() {
        for (&a, &b) in g.iter().zip(w) {
            let d = if a.is_finite() {
                (a as f64 - b as f64).abs()
            } else {
                f64::INFINITY
            };
            max_d = max_d.max(d);
            sq += d * d;
        }
        let (lg, lw) = (logp(g), logp(w));
        kl += lw
            .iter()
            .zip(&lg)
            .map(|(a, b)| a.exp() * (a - b))
            .sum::<f64>();
        let (t, m) = top2(w);
        if m >= margin {
            clear += 1;
            let (tg, _) = top2(g);
            if tg != t {
                top1_mismatch.push((p, t, tg, m));
            }
        }
    }
    LogitDiff {
        positions,
        max_rel: max_d / scale.max(f64::MIN_POSITIVE),
        rms: (sq / want.len() as f64).sqrt(),
        mean_kl: kl / positions as f64,
        clear,
        top1_mismatch,
    }
}

/// Weights of an arch fixture, for the bounds below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchFormat {
    /// f32 or bf16 safetensors, GGUF F32: float weights, f32 activations on every backend.
    Float,
    /// GGUF Q8_0 and I8 (w8a8) safetensors: the CPU quantizes activations to 8 bits.
    Quantized,
}

/// The fixture files of one case: (relative path, format).
pub const ARCH_FILES: [(&str, ArchFormat); 4] = [
    ("f32", ArchFormat::Float),
    ("bf16", ArchFormat::Float),
    ("model-f32.gguf", ArchFormat::Float),
    ("model-q8_0.gguf", ArchFormat::Quantized),
];

/// Whether `d` (another backend against the CPU scalar reference on an arch fixture) is within
/// bounds; `Err` says why not.
///
/// - Float weights: max |Δlogit| ≤ 2e-3 × max |logit|, and the same argmax wherever the
///   reference's top-2 margin is ≥ 1e-2 × max |logit| (tests/arch.rs's bound against f64). Only
///   f32 accumulation order, approximate exp and f16 KV rounding flips differ; through these
///   random tiny models the CPU's own AVX2/AVX-512 path measures up to 4.2e-4 (gemma2 bf16).
/// - 8-bit weights: mean KL ≤ 1e-2 and the same argmax where the margin is ≥ 0.1 × max |logit|.
///   The CPU rounds activations to 8 bits, a device may not: the CPU's Q8_0 logits are up to
///   4e-2 × max |logit| and KL 2.6e-3 from the same weights with f32 activations (phi3, gemma2),
///   and even its AVX path, whose activation quantization is bit-identical, moves them by 1.2e-2
///   (llama3) through rounding flips. 1e-2 is tests/arch.rs's bound for these formats.
pub fn arch_bound(d: &LogitDiff, format: ArchFormat) -> Result<(), String> {
    match format {
        ArchFormat::Float if d.max_rel > 2e-3 => Err(format!(
            "max |Δlogit| {:.3e} × scale > 2e-3 × scale",
            d.max_rel
        )),
        ArchFormat::Quantized if d.mean_kl.is_nan() || d.mean_kl > 1e-2 => {
            Err(format!("mean KL {:.3e} > 1e-2", d.mean_kl))
        }
        _ if !d.top1_mismatch.is_empty() => Err(format!(
            "top-1 differs at clear positions (pos, ref, got, margin): {:?}",
            d.top1_mismatch
        )),
        _ if !d.max_rel.is_finite() => Err("non-finite logits".into()),
        _ => Ok(()),
    }
}

/// The top-1 margin [`arch_bound`] uses for `format`, given the reference's max |logit|.
pub fn arch_margin(format: ArchFormat, scale: f32) -> f32 {
    match format {
        ArchFormat::Float => 1e-2 * scale,
        ArchFormat::Quantized => 0.1 * scale,
    }
}

/// Every arch fixture on `make()` against the CPU scalar reference, within [`arch_bound`]; `files`
/// selects which files of each case. Prints one line per file; panics listing every failure.
pub fn check_arch_fixtures<B: Backend>(
    label: &str,
    files: &[(&str, ArchFormat)],
    make: impl Fn() -> torchless::Result<B>,
) {
    let mut failures = Vec::new();
    for case in ARCH_CASES {
        let ids = arch_ids(case);
        for &(file, format) in files {
            let path = arch_dir(case).join(file);
            let (want, n_vocab) = executor_logits(&path, reference(), &ids)
                .unwrap_or_else(|e| panic!("{}: CPU reference: {e}", path.display()));
            let backend = make().unwrap_or_else(|e| panic!("{label}: {e}"));
            let got = match executor_logits(&path, backend, &ids) {
                Ok((got, _)) => got,
                Err(e) => {
                    failures.push(format!("{case}/{file}: {e}"));
                    continue;
                }
            };
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = logit_diff(&got, &want, n_vocab, arch_margin(format, scale));
            let verdict = arch_bound(&d, format);
            eprintln!(
                "{label}: {case:8} {file:16} max|Δ|/scale {:.2e}  KL {:.2e}  top-1 {}/{} clear  {}",
                d.max_rel,
                d.mean_kl,
                d.clear - d.top1_mismatch.len(),
                d.clear,
                if verdict.is_ok() { "ok" } else { "FAILED" }
            );
            if let Err(why) = verdict {
                failures.push(format!("{case}/{file}: {why}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{label}: arch fixtures differ from the CPU scalar reference:\n  {}",
        failures.join("\n  ")
    );
}

/// How many values of `a` and `b` differ in their bits (the fused-kernel checks: bit for bit).
pub fn bits_differ(a: &[f32], b: &[f32]) -> usize {
    assert_eq!(a.len(), b.len(), "bits_differ: lengths");
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count()
}

/// A norm feeding Q4_K matmuls ([`Backend::norm_feeding`] followed by `matmul_many`,
/// `matmul_glu` or `matmul`) gives bit for bit what a plain `norm` followed by one `matmul` per
/// weight (and `glu`) gives on `b`. On CUDA with the int8 decode matvec this compares the norm
/// that also rounds its output to Q8, the three-matrix launch (Q, K, V) and the gated int8 kernel
/// with `quantize_q8` and one-matrix launches. Rows of 256 (the warp-per-row norm) and 1536 (a
/// block per row), RMSNorm and LayerNorm with a bias, and a Q8_0 weight beside the Q4_K ones.
pub fn assert_norm_feeding_exact<B: Backend>(b: &B) {
    let mut rng = Rng::new(seed(), "norm feeding");
    for (dim, kind) in [(256usize, NormKind::Rms), (1536, NormKind::Layer)] {
        let spec = NormSpec {
            kind,
            eps: 1e-5,
            w_offset: 0.0,
        };
        let nw = b
            .weight(
                norm_weight(&mut rng, GgmlType::F32, dim, 0.0).view(),
                Role::Norm,
            )
            .expect("norm weight");
        let bias = match kind {
            NormKind::Layer => {
                let v = rng.vec(dim, -0.5, 0.5);
                Some(b.weight(
                    vector(&mut rng, "bias", GgmlType::F32, &v).view(),
                    Role::Norm,
                ))
            }
            NormKind::Rms => None,
        }
        .map(|r| r.expect("norm bias"));
        let mut weight = |ty: GgmlType, rows: usize| {
            let t = random_tensor(&mut rng, "w", ty, rows, dim);
            (b.weight(t.view(), Role::Matmul).expect("weight"), rows)
        };
        // Gate and up of 256 rows: the down projection (Q4_K, whole 256-value blocks) reads them.
        let q4k = [37usize, 19, 64, 256, 256].map(|rows| weight(GgmlType::Q4_K, rows));
        let q8 = weight(GgmlType::Q8_0, 24);
        let down = {
            let t = random_tensor(&mut rng, "down", GgmlType::Q4_K, 40, 256);
            b.weight(t.view(), Role::Matmul).expect("down")
        };
        let x = norm_input(&mut rng, 1, dim, 0.3, false);
        let xb = Input::new(&x, dim).put(b).ok().expect("x");
        let buf = |n: usize| Input::output(n).put(b).ok().expect("buffer");
        let read = |o: &B::Buf, n: usize| get(b, o, n).ok().expect("read");
        let norm = |feeds: &[&B::Weight], out: &mut B::Buf| match feeds {
            [] => b.norm(spec, &xb, &nw, bias.as_ref(), 1, dim, out),
            _ => b.norm_feeding(spec, &xb, &nw, bias.as_ref(), 1, dim, out, feeds),
        };
        let same = |what: &str, fused: &[f32], apart: &[f32]| {
            let differ = bits_differ(fused, apart);
            assert_eq!(
                differ,
                0,
                "{kind:?} over {dim}: {differ} of {} values of {what} differ between the norm \
                 feeding its matmuls and the ops apart",
                fused.len()
            );
        };
        // Q, K, V (and a Q8_0 projection among them) through matmul_many.
        let proj = [&q4k[0], &q4k[1], &q8, &q4k[2]];
        let feeds: Vec<&B::Weight> = proj.iter().map(|(w, _)| w).collect();
        let (mut xn_f, mut xn_a) = (buf(dim), buf(dim));
        let mut outs_f: Vec<B::Buf> = proj.iter().map(|(_, r)| buf(*r)).collect();
        let mut outs_a: Vec<B::Buf> = proj.iter().map(|(_, r)| buf(*r)).collect();
        norm(&feeds, &mut xn_f);
        b.matmul_many(&feeds, &xn_f, 1, &mut outs_f.iter_mut().collect::<Vec<_>>());
        norm(&[], &mut xn_a);
        for ((w, _), out) in proj.iter().zip(&mut outs_a) {
            b.matmul(w, &xn_a, 1, out);
        }
        same("the normed row", &read(&xn_f, dim), &read(&xn_a, dim));
        for (((_, rows), f), a) in proj.iter().zip(&outs_f).zip(&outs_a) {
            same("a projection", &read(f, *rows), &read(a, *rows));
        }
        // Gate and up through matmul_glu, feeding the down projection (CUDA's int8 kernel then
        // rounds its output to Q8 itself).
        let ((g, rows), (u, _)) = (&q4k[3], &q4k[4]);
        let (mut h_f, mut h_a) = (buf(*rows), buf(*rows));
        let (mut g1, mut u1, mut g2, mut u2) = (buf(*rows), buf(*rows), buf(*rows), buf(*rows));
        let (mut d_f, mut d_a) = (buf(40), buf(40));
        norm(&[g, u], &mut xn_f);
        let outs = [&mut g1, &mut u1];
        b.matmul_glu_feeding(
            Activation::Silu,
            g,
            u,
            &xn_f,
            1,
            outs,
            *rows,
            &mut h_f,
            &[&down],
        );
        b.matmul(&down, &h_f, 1, &mut d_f);
        norm(&[], &mut xn_a);
        b.matmul(u, &xn_a, 1, &mut u2);
        b.matmul(g, &xn_a, 1, &mut g2);
        b.glu(Activation::Silu, &g2, &u2, *rows, &mut h_a);
        b.matmul(&down, &h_a, 1, &mut d_a);
        same("the gated FFN", &read(&h_f, *rows), &read(&h_a, *rows));
        same("the down projection", &read(&d_f, 40), &read(&d_a, 40));
        // One projection through matmul (the output head).
        let (w, rows) = &q4k[2];
        let (mut y_f, mut y_a) = (buf(*rows), buf(*rows));
        norm(&[w], &mut xn_f);
        b.matmul(w, &xn_f, 1, &mut y_f);
        norm(&[], &mut xn_a);
        b.matmul(w, &xn_a, 1, &mut y_a);
        same(
            "the output projection",
            &read(&y_f, *rows),
            &read(&y_a, *rows),
        );
    }
}

/// A residual projection with the next block's RMSNorm folded in ([`Backend::matmul_add_norm`])
/// against the projection, `norm` and the matmuls apart on `b`: the residual sum bit for bit,
/// and what the matmuls that read the normed row compute (Q/K/V through `matmul_many` with a
/// Q8_0 matrix among Q4_K ones; gate and up through `matmul_glu_feeding` into a down
/// projection; a lone `matmul`, the output head) within what rounding the row to Q8 before the
/// norm's scale instead of after moves them. `launches` counts the kernels queued on `b`: the
/// folded projection must launch what the projection alone does, or this would compare the
/// trait's default with itself.
/// F32 and F16 norm weights, without and with Gemma's weight offset.
pub fn assert_norm_fold_close<B: Backend>(b: &B, launches: &dyn Fn() -> u64) {
    let mut rng = Rng::new(seed(), "norm fold");
    let (dim, inner) = (256usize, 512usize);
    let weight = |rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize| {
        let t = random_tensor(rng, "w", ty, rows, cols);
        b.weight(t.view(), Role::Matmul).expect("weight")
    };
    let proj = weight(&mut rng, GgmlType::Q4_K, dim, inner);
    let qkv = [
        weight(&mut rng, GgmlType::Q4_K, 64, dim),
        weight(&mut rng, GgmlType::Q8_0, 24, dim),
        weight(&mut rng, GgmlType::Q4_K, 32, dim),
    ];
    let (gate, up) = (
        weight(&mut rng, GgmlType::Q4_K, 256, dim),
        weight(&mut rng, GgmlType::Q4_K, 256, dim),
    );
    let down = weight(&mut rng, GgmlType::Q4_K, 40, 256);
    let head = weight(&mut rng, GgmlType::Q6_K, 96, dim);
    let buf = |n: usize| Input::output(n).put(b).ok().expect("buffer");
    let read = |o: &B::Buf, n: usize| get(b, o, n).ok().expect("read");
    for (nty, w_offset) in [(GgmlType::F32, 0.0f32), (GgmlType::F16, 1.0)] {
        let spec = NormSpec {
            kind: NormKind::Rms,
            eps: 1e-6,
            w_offset,
        };
        let nw = b
            .weight(norm_weight(&mut rng, nty, dim, w_offset).view(), Role::Norm)
            .expect("norm weight");
        let x0 = norm_input(&mut rng, 1, dim, 0.3, false);
        let h = rng.vec(inner, -1.0, 1.0);
        let hb = Input::new(&h, inner).put(b).ok().expect("h");
        // Each consumer after its own projection: the folded row is for the very next matmuls,
        // so every buffer they write is made before (making one launches a kernel).
        type Consumer<'a, B> = &'a dyn Fn(&<B as Backend>::Buf, &mut [<B as Backend>::Buf]);
        let many = |xn: &B::Buf, outs: &mut [B::Buf]| {
            let ws: Vec<&B::Weight> = qkv.iter().collect();
            b.matmul_many(&ws, xn, 1, &mut outs.iter_mut().collect::<Vec<_>>());
        };
        let glu = |xn: &B::Buf, outs: &mut [B::Buf]| {
            let [g, u, hid, d] = outs else {
                unreachable!("four buffers")
            };
            let (act, gu) = (Activation::Silu, [g, u]);
            b.matmul_glu_feeding(act, &gate, &up, xn, 1, gu, 256, hid, &[&down]);
            b.matmul(&down, hid, 1, d);
        };
        let lone = |xn: &B::Buf, outs: &mut [B::Buf]| b.matmul(&head, xn, 1, &mut outs[0]);
        // Each case: its feeds, its consumer, the lengths of its buffers and which are results.
        #[allow(clippy::type_complexity)]
        let cases: [(
            &str,
            Vec<&B::Weight>,
            Consumer<'_, B>,
            Vec<usize>,
            Vec<usize>,
        ); 3] = [
            (
                "Q/K/V",
                qkv.iter().collect(),
                &many,
                vec![64, 24, 32],
                vec![0, 1, 2],
            ),
            (
                "gate/up into down",
                vec![&gate, &up],
                &glu,
                vec![256, 256, 256, 40],
                vec![2, 3],
            ),
            ("the output head", vec![&head], &lone, vec![96], vec![0]),
        ];
        for (what, feeds, consume, lens, results) in cases {
            let bufs = || lens.iter().map(|&n| buf(n)).collect::<Vec<_>>();
            let (mut outs_f, mut outs_a) = (bufs(), bufs());
            let read_results = |outs: &[B::Buf]| -> Vec<Vec<f32>> {
                results.iter().map(|&i| read(&outs[i], lens[i])).collect()
            };
            let acc = || Input::new(&x0, dim).put(b).ok().expect("acc");
            let (mut acc_f, mut acc_a) = (acc(), acc());
            let (mut xn_f, mut xn_a, mut tmp) = (buf(dim), buf(dim), buf(dim));
            let before = launches();
            b.matmul_add_norm(
                &proj, &hb, 1, &mut acc_f, &mut tmp, dim, spec, &nw, None, dim, &mut xn_f, &feeds,
            );
            let fold_launches = launches() - before;
            consume(&xn_f, &mut outs_f);
            let before = launches();
            b.matmul_add(&proj, &hb, 1, &mut acc_a, &mut tmp, dim);
            assert_eq!(
                fold_launches,
                launches() - before,
                "{what}: the folded norm costs no launch of its own"
            );
            b.norm(spec, &acc_a, &nw, None, 1, dim, &mut xn_a);
            consume(&xn_a, &mut outs_a);
            let (folded, apart) = (read_results(&outs_f), read_results(&outs_a));
            let differ = bits_differ(&read(&acc_f, dim), &read(&acc_a, dim));
            assert_eq!(differ, 0, "{what}: {differ} residual sums differ");
            for (i, (f, a)) in folded.iter().zip(&apart).enumerate() {
                let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
                let moved = f.iter().zip(a).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                eprintln!(
                    "norm fold, {nty} weight, offset {w_offset}, {what} [{i}]: max |d| {moved:.3e} \
                     of max {scale:.3e}"
                );
                assert!(
                    moved <= 2e-3 * scale,
                    "{what} [{i}]: folded norm moves the output by {moved} (max {scale})"
                );
            }
        }
    }
}

/// `matmul_many` over one input gives bit for bit what one `matmul` per weight gives on `b`
/// (CUDA runs consecutive weights of one type and width as one launch: Q, K and V). Every
/// weight type, 1–8 tokens, three matrices of different heights, and a mixed-type list.
pub fn assert_matmul_many_exact<B: Backend>(b: &B) {
    let mut rng = Rng::new(seed(), "matmul many");
    let cols = 1536;
    let mut lists: Vec<Vec<GgmlType>> = WEIGHT_TYPES.iter().map(|&t| vec![t; 3]).collect();
    lists.push(vec![
        GgmlType::Q4_K,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q4_K,
    ]);
    for types in lists {
        let heights = [37usize, 19, 64, 8];
        let ws: Vec<(B::Weight, usize)> = types
            .iter()
            .zip(heights)
            .map(|(&ty, rows)| {
                let t = random_tensor(&mut rng, "w", ty, rows, cols);
                (b.weight(t.view(), Role::Matmul).expect("weight"), rows)
            })
            .collect();
        let refs: Vec<&B::Weight> = ws.iter().map(|(w, _)| w).collect();
        for n_tok in [1usize, 2, 3, 5, 8] {
            let x = matmul_input(&mut rng, n_tok, cols);
            let xb = Input::new(&x, n_tok * cols).put(b).ok().expect("x");
            let buf = |n: usize| Input::output(n).put(b).ok().expect("buffer");
            let mut many: Vec<B::Buf> = ws.iter().map(|(_, r)| buf(n_tok * r)).collect();
            let mut apart: Vec<B::Buf> = ws.iter().map(|(_, r)| buf(n_tok * r)).collect();
            b.matmul_many(&refs, &xb, n_tok, &mut many.iter_mut().collect::<Vec<_>>());
            for ((w, _), out) in ws.iter().zip(&mut apart) {
                b.matmul(w, &xb, n_tok, out);
            }
            for (((_, rows), m), a) in ws.iter().zip(&many).zip(&apart) {
                let len = n_tok * rows;
                let (m, a) = (
                    get(b, m, len).ok().expect("read"),
                    get(b, a, len).ok().expect("read"),
                );
                let differ = bits_differ(&m, &a);
                assert_eq!(
                    differ, 0,
                    "{types:?}, {n_tok} tokens: {differ} of {len} outputs of matmul_many differ \
                     from one matmul per weight"
                );
            }
        }
    }
}

/// An attention block's projections with RoPE and the K/V store handed over together
/// (`matmul_rope_kv_store`; CUDA runs a decode token's as one kernel) against `matmul_many` and
/// `rope_kv_store` apart: Q, K, V and attention over the caches bit for bit. Both RoPE layouts,
/// GQA, partial rotation, V heads of another width, x uploaded plain and x left by a residual
/// projection with the next RMSNorm folded in, 1 and 3 tokens, with a history in the cache; a
/// mixed-type Q/K/V (which runs apart) too. `launches` counts kernel launches: the combined
/// call may take fewer, never more.
pub fn assert_qkv_rope_fusion_exact<B: Backend>(b: &B, launches: &dyn Fn() -> u64) {
    let mut rng = Rng::new(seed(), "qkv rope fusion");
    let dim = 256usize;
    let cases = [
        (
            RopeLayout::Halves,
            4usize,
            2usize,
            64usize,
            64usize,
            64usize,
            [GgmlType::Q4_K; 3],
        ),
        (RopeLayout::Adjacent, 4, 4, 64, 32, 64, [GgmlType::Q8_0; 3]),
        (RopeLayout::Halves, 6, 3, 80, 40, 48, [GgmlType::Q4_0; 3]),
        (
            RopeLayout::Adjacent,
            2,
            1,
            128,
            128,
            128,
            [GgmlType::Q4_K, GgmlType::Q4_K, GgmlType::Q6_K],
        ),
    ];
    let weight = |rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize| {
        let t = random_tensor(rng, "w", ty, rows, cols);
        b.weight(t.view(), Role::Matmul).expect("weight")
    };
    let read = |o: &B::Buf, n: usize| get(b, o, n).ok().expect("read");
    let put = |x: &[f32]| Input::new(x, x.len()).put(b).ok().expect("upload");
    let spec = NormSpec {
        kind: NormKind::Rms,
        eps: 1e-6,
        w_offset: 0.0,
    };
    let proj = weight(&mut rng, GgmlType::Q4_K, dim, dim);
    let nw = b
        .weight(
            norm_weight(&mut rng, GgmlType::F32, dim, 0.0).view(),
            Role::Norm,
        )
        .expect("norm weight");
    for (layout, n_head, n_head_kv, hd, n_rot, hdv, types) in cases {
        let (shape, p) = rope_heads_case(n_head, n_head_kv, hd, hdv, n_rot);
        let (qw, kw, vw) = (n_head * hd, n_head_kv * hd, n_head_kv * hdv);
        let ws = [
            weight(&mut rng, types[0], qw, dim),
            weight(&mut rng, types[1], kw, dim),
            weight(&mut rng, types[2], vw, dim),
        ];
        let ws = [&ws[0], &ws[1], &ws[2]];
        let (n_ctx, layer, pos0) = (16, 1, 5);
        let hist = [rng.vec(pos0 * kw, -2.0, 2.0), rng.vec(pos0 * vw, -2.0, 2.0)];
        for (n_tok, folded) in [(1usize, false), (1, true), (3, false)] {
            let x = matmul_input(&mut rng, n_tok, dim);
            let (x0, h) = (
                norm_input(&mut rng, 1, dim, 0.3, false),
                rng.vec(dim, -1.0, 1.0),
            );
            let mut outs = Vec::new();
            let mut counts = Vec::new();
            for fused in [true, false] {
                let mut kv = b.kv_cache(2, n_ctx, kw, vw).expect("kv cache");
                b.kv_store(&mut kv, layer, 0, pos0, &put(&hist[0]), &put(&hist[1]));
                let buf = |n: usize| Input::output(n).put(b).ok().expect("buffer");
                let [mut qb, mut kb, mut vb] = [buf(n_tok * qw), buf(n_tok * kw), buf(n_tok * vw)];
                let mut out = buf(n_tok * n_head * hdv);
                let mut xn = put(&x);
                if folded {
                    let (mut acc, hb, mut tmp) = (put(&x0), put(&h), buf(dim));
                    let feeds = ws;
                    b.matmul_add_norm(
                        &proj, &hb, 1, &mut acc, &mut tmp, dim, spec, &nw, None, dim, &mut xn,
                        &feeds,
                    );
                }
                let before = launches();
                let bufs = [&mut qb, &mut kb, &mut vb];
                if fused {
                    b.matmul_rope_kv_store(
                        ws, &xn, n_tok, bufs, &mut kv, layer, pos0, &shape, layout, &p,
                    );
                } else {
                    torchless::backend::matmul_rope_kv_store_apart(
                        b, ws, &xn, n_tok, bufs, &mut kv, layer, pos0, &shape, layout, &p,
                    );
                }
                counts.push(launches() - before);
                b.attention(&qb, &kv, layer, pos0, n_tok, &shape, &mut out);
                outs.push([
                    read(&qb, n_tok * qw),
                    read(&kb, n_tok * kw),
                    read(&vb, n_tok * vw),
                    read(&out, n_tok * n_head * hdv),
                ]);
            }
            let what = format!(
                "{layout:?} {n_head}/{n_head_kv} heads x {hd} (rotating {n_rot}, V {hdv}), \
                 {types:?}, {n_tok} tokens, x {}",
                if folded {
                    "with a norm folded in"
                } else {
                    "plain"
                }
            );
            eprintln!(
                "qkv + rope, {what}: {} launches, apart {}",
                counts[0], counts[1]
            );
            assert!(
                counts[0] <= counts[1],
                "{what}: more launches combined than apart"
            );
            if n_tok == 1 && types.iter().all(|&t| t == types[0]) {
                // One kernel where apart the RoPE + store takes one of its own.
                assert_eq!(
                    counts[0] + 1,
                    counts[1],
                    "{what}: one launch fewer combined"
                );
            }
            for (name, (f, a)) in ["Q", "K", "V", "attention over the caches"]
                .iter()
                .zip(outs[0].iter().zip(&outs[1]))
            {
                let differ = bits_differ(f, a);
                assert_eq!(
                    differ,
                    0,
                    "{what}: {differ} of {} values of {name} differ between the combined \
                     projections + RoPE + KV store and the separate ops",
                    f.len()
                );
            }
        }
    }
}
