//! The CPU backend: rayon across rows, a fused dequant-dot kernel table chosen once from the CPU's
//! detected features (`caps`), and weights read in place from the file map.

pub mod activation;
pub mod attention;
pub mod caps;
pub mod dot;
#[cfg(target_arch = "x86_64")]
pub mod gelu512;
pub mod int8;
pub mod matmul;
pub mod norm;
pub mod rope;

use std::sync::{Arc, Mutex};

use memmap2::Mmap;
use rayon::prelude::*;

use self::attention::{AttnScratch, CpuKvCache};
use self::caps::{CpuCaps, KernelPath};
use self::dot::DotKernels;
use self::matmul::MatmulScratch;
use super::{AttnShape, Backend, NormSpec};
use crate::error::{Error, Result};
use crate::model::arch::{Activation, RopeLayout};
use crate::model::config::RopeParams;
use crate::model::weights::{Role, WeightView};
use crate::quant::{self, GgmlType};

/// More threads than this is a typo, not a machine: refuse before spawning them.
const MAX_THREADS: usize = 1024;

/// A weight kept as a view into the file map: no copy, no conversion.
pub struct CpuWeight {
    /// Tensor name in the GGUF file (for error messages).
    pub name: String,
    /// Storage type of the bytes.
    pub ty: GgmlType,
    /// Output rows (the GGUF `ne[1]`; 1 for a vector).
    pub rows: usize,
    /// Values per row (the GGUF `ne[0]`, the contiguous dimension).
    pub cols: usize,
    map: Arc<Mmap>,
    start: usize,
    len: usize,
    /// I8 weights: the per-row scales (type, map, start, len).
    scales: Option<(GgmlType, Arc<Mmap>, usize, usize)>,
}

impl CpuWeight {
    /// The tensor's raw bytes in the map: `rows` rows of `ty.row_bytes(cols)` bytes, any alignment.
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }
    /// The weight as a norm / bias vector (`weight()` checked the type is F32, F16 or BF16).
    fn vector(&self) -> norm::Vector<'_> {
        norm::Vector::new(self.ty, self.bytes())
    }
}

/// The CPU implementation of [`Backend`]: a private rayon pool of `threads` workers, a dot-kernel
/// table fixed at construction, and one matmul scratch shared behind a mutex.
pub struct CpuBackend {
    caps: CpuCaps,
    kernels: DotKernels,
    pool: rayon::ThreadPool,
    threads: usize,
    /// Matmul scratch: quantized activations (block formats, their tiled layout and per-token
    /// int8) and the transposed batch output.
    scratch: Mutex<(MatmulScratch, int8::I8Acts)>,
    /// Attention scratch: one layer's cached K/V rows widened to f32.
    attn: Mutex<AttnScratch>,
}

impl CpuBackend {
    /// `threads`: 0 = one per core. The kernel path is the best the CPU supports unless
    /// `TORCHLESS_CPU=scalar|avx2|avx512` asks for another (an unsupported request is an error).
    pub fn new(threads: usize) -> Result<Self> {
        let caps = CpuCaps::detect();
        let request = caps::requested_path().map_err(Error::CpuKernels)?;
        let kernels =
            DotKernels::select(&caps, request).map_err(|e| Error::CpuKernels(e.to_string()))?;
        Self::with_kernels(caps, kernels, threads)
    }

    /// Build with an explicit kernel table (tests and benches pin a path this way); `threads` as
    /// in [`CpuBackend::new`]. Errors when `threads` exceeds 1024 or the pool cannot start.
    pub fn with_kernels(caps: CpuCaps, kernels: DotKernels, threads: usize) -> Result<Self> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        if threads > MAX_THREADS {
            return Err(Error::InvalidArgument(format!(
                "--threads {threads} is more than {MAX_THREADS}; use at most one per core"
            )));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("torchless-cpu-{i}"))
            .build()
            .map_err(|e| Error::CpuKernels(format!("cannot start {threads} threads: {e}")))?;
        Ok(CpuBackend {
            caps,
            kernels,
            pool,
            threads,
            scratch: Mutex::new((MatmulScratch::default(), int8::I8Acts::default())),
            attn: Mutex::new(AttnScratch::default()),
        })
    }

    /// The dot-kernel path in use.
    pub fn kernel_path(&self) -> KernelPath {
        self.kernels.path()
    }
    /// The CPU features detected at construction.
    pub fn caps(&self) -> &CpuCaps {
        &self.caps
    }
    /// Worker threads in the pool (after resolving 0 to the core count).
    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl Backend for CpuBackend {
    type Weight = CpuWeight;
    type Buf = Vec<f32>;
    type KvCache = CpuKvCache;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn describe(&self) -> String {
        format!(
            "cpu: {} kernels, {} threads (features: {})",
            self.kernels.path(),
            self.threads,
            self.caps.describe()
        )
    }

    fn weight(&self, v: WeightView<'_>, role: Role) -> Result<CpuWeight> {
        let unsupported = || Error::UnsupportedType {
            name: v.name.to_string(),
            ty: v.ty.name(),
            backend: "cpu",
            role: role.name(),
        };
        match role {
            Role::Norm if !matches!(v.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) => {
                return Err(unsupported())
            }
            // Q8_1 and Q8_K are activation formats; ggml never stores weights in them.
            Role::Matmul | Role::Embedding if matches!(v.ty, GgmlType::Q8_1 | GgmlType::Q8_K) => {
                return Err(unsupported())
            }
            // Int8 rows mean something only with their per-row scales (w8a8 matmul).
            Role::Matmul if v.ty == GgmlType::I8 && v.scale.is_none() => return Err(unsupported()),
            Role::Embedding if v.ty == GgmlType::I8 => return Err(unsupported()),
            _ => {}
        }
        Ok(CpuWeight {
            name: v.name.to_string(),
            ty: v.ty,
            rows: v.rows,
            cols: v.cols,
            map: v.map.clone(),
            start: v.start,
            len: v.len,
            scales: v.scale.map(|s| (s.ty, s.map.clone(), s.start, s.len)),
        })
    }

    fn buf(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn buf_len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn read(&self, buf: &Vec<f32>, len: usize, out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        out.extend_from_slice(&buf[..len]);
        Ok(())
    }

    fn kv_cache(
        &self,
        n_layer: usize,
        n_ctx: usize,
        k_width: usize,
        v_width: usize,
    ) -> Result<CpuKvCache> {
        Ok(CpuKvCache::new(n_layer, n_ctx, k_width, v_width))
    }

    fn scope<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    fn embed(&self, table: &CpuWeight, ids: &[u32], scale: f32, out: &mut Vec<f32>) {
        let data = table.bytes();
        let row_bytes = data.len() / table.rows;
        for (t, &id) in ids.iter().enumerate() {
            let id = id as usize;
            let o = &mut out[t * table.cols..(t + 1) * table.cols];
            quant::dequantize_row(table.ty, &data[id * row_bytes..(id + 1) * row_bytes], o);
            if scale != 1.0 {
                o.iter_mut().for_each(|v| *v *= scale);
            }
        }
    }

    fn norm(
        &self,
        spec: NormSpec,
        x: &Vec<f32>,
        w: &CpuWeight,
        b: Option<&CpuWeight>,
        rows: usize,
        dim: usize,
        out: &mut Vec<f32>,
    ) {
        norm::norm_rows(
            spec,
            &x[..rows * dim],
            w.vector(),
            b.map(|b| b.vector()),
            dim,
            &mut out[..rows * dim],
        );
    }

    fn norm_inplace(
        &self,
        spec: NormSpec,
        x: &mut Vec<f32>,
        w: &CpuWeight,
        rows: usize,
        dim: usize,
    ) {
        norm::norm_rows_inplace(spec, &mut x[..rows * dim], w.vector(), dim);
    }

    fn matmul(&self, w: &CpuWeight, x: &Vec<f32>, n_tok: usize, out: &mut Vec<f32>) {
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let (mm, i8_acts) = &mut *guard;
        if let Some((sty, map, start, len)) = &w.scales {
            let scales = norm::Vector::new(*sty, &map[*start..*start + *len]);
            int8::matmul(
                w.bytes(),
                scales,
                w.rows,
                w.cols,
                x,
                n_tok,
                i8_acts,
                &mut mm.tmp,
                out,
            );
            return;
        }
        matmul::matmul(&self.kernels, w, x, n_tok, mm, out);
    }

    fn rope(
        &self,
        x: &mut Vec<f32>,
        n_tok: usize,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        layout: RopeLayout,
        p: &RopeParams,
    ) {
        rope::rope(x, n_tok, n_heads, head_dim, pos0, layout, p);
    }

    fn kv_store(
        &self,
        kv: &mut CpuKvCache,
        layer: usize,
        pos0: usize,
        n_tok: usize,
        k: &Vec<f32>,
        v: &Vec<f32>,
    ) {
        kv.store(layer, pos0, n_tok, k, v);
    }

    fn attention(
        &self,
        q: &Vec<f32>,
        kv: &CpuKvCache,
        layer: usize,
        pos0: usize,
        n_tok: usize,
        shape: &AttnShape,
        out: &mut Vec<f32>,
    ) {
        let mut scratch = self.attn.lock().unwrap_or_else(|p| p.into_inner());
        let simd = self.kernels.path() != KernelPath::Scalar;
        attention::attention(q, kv, layer, pos0, n_tok, shape, simd, &mut scratch, out);
    }

    fn add_bias(&self, x: &mut Vec<f32>, b: &CpuWeight, rows: usize) {
        let v = b.vector();
        for row in x[..rows * b.cols].chunks_mut(b.cols) {
            for (i, x) in row.iter_mut().enumerate() {
                *x += v.get(i);
            }
        }
    }

    fn act(&self, act: Activation, x: &mut Vec<f32>, len: usize) {
        activation::unary_on(self.kernels.path(), act, &mut x[..len]);
    }

    fn glu(&self, act: Activation, gate: &Vec<f32>, up: &Vec<f32>, len: usize, out: &mut Vec<f32>) {
        // Split across the pool only when there is enough work to pay for the wake-ups
        // (prefill batches; a decode step's few thousand elements stay on one thread).
        const CHUNK: usize = 8192;
        let (g, u, o) = (&gate[..len], &up[..len], &mut out[..len]);
        let path = self.kernels.path();
        if len >= 2 * CHUNK && self.threads > 1 {
            o.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
                .for_each(|(o, (g, u))| activation::glu_on(path, act, g, u, o));
        } else {
            activation::glu_on(path, act, g, u, o);
        }
    }

    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) {
        activation::add(&mut x[..len], &y[..len]);
    }

    fn softcap(&self, x: &mut Vec<f32>, c: f32, len: usize) {
        activation::softcap(&mut x[..len], c);
    }

    fn copy_row(&self, x: &Vec<f32>, src_row: usize, width: usize, out: &mut Vec<f32>) {
        out[..width].copy_from_slice(&x[src_row * width..(src_row + 1) * width]);
    }
}
