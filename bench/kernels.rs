//! Criterion benches of the CPU fused dequant-dot kernels, single-threaded, for every weight
//! type at the real models' shapes, on every kernel path this CPU supports: `matvec/*`
//! (`DotKernels::dot_rows` over the whole matrix, as decode runs it) and `prefill128/*` (the batched matmul of a
//! 128-token prompt, tiled kernels included). Throughput is weight bytes read (once per call).
//!
//! Shapes are `n x rows` (row length x number of rows, GGUF's `[n, rows]`):
//! SmolLM2 ffn 576x1536 / 1536x576, gemma3 ffn 640x2048 / 2048x640, and the gemma3 Q8_0
//! output/embedding 640x262144. K-quants only run where `n` is a multiple of 256.
//!
//! `cargo bench --bench kernels -- Q4_1` filters as usual.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::f16;

use torchless::backend::cpu::caps::{CpuCaps, KernelPath};
use torchless::backend::cpu::dot::DotKernels;
use torchless::backend::cpu::matmul::{matmul_rows, MatmulScratch, WeightRows};
use torchless::quant::{Acts, GgmlType};

const SHAPES: [(usize, usize); 4] = [(576, 1536), (1536, 576), (640, 2048), (2048, 640)];
const BIG: (usize, usize) = (640, 262144);

/// Tiny deterministic generator (xorshift64*), so benches do not depend on `rand`'s API.
struct Gen(u64);
impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => &[],
    }
}

/// `rows` rows of `n` random weights of `ty` with sane (finite, moderate) scales.
fn weights(ty: GgmlType, n: usize, rows: usize, g: &mut Gen) -> Vec<u8> {
    let total = n * rows;
    match ty {
        GgmlType::F32 => (0..total).flat_map(|_| g.f32().to_le_bytes()).collect(),
        GgmlType::F16 => (0..total)
            .flat_map(|_| f16::from_f32(g.f32()).to_le_bytes())
            .collect(),
        GgmlType::BF16 => (0..total)
            .flat_map(|_| half::bf16::from_f32(g.f32()).to_le_bytes())
            .collect(),
        _ => {
            let bb = ty.block_bytes();
            let nb = total / ty.block_len();
            let mut raw: Vec<u8> = (0..nb * bb).map(|_| g.next() as u8).collect();
            for b in 0..nb {
                for &off in f16_fields(ty) {
                    let h = f16::from_f32(0.01 + 0.01 * g.f32()).to_le_bytes();
                    raw[b * bb + off..b * bb + off + 2].copy_from_slice(&h);
                }
            }
            raw
        }
    }
}

fn kernel_sets() -> Vec<DotKernels> {
    let caps = CpuCaps::detect();
    KernelPath::ALL
        .into_iter()
        .filter(|p| caps.supports(*p).is_ok())
        .map(|p| DotKernels::select(&caps, Some(p)).unwrap())
        .collect()
}

fn matvec(k: &DotKernels, ty: GgmlType, w: &[u8], n: usize, acts: &Acts, out: &mut [f32]) {
    k.dot_rows(ty, w, acts.row(0), n, out);
}

fn bench_shape(c: &mut Criterion, kernels: &[DotKernels], ty: GgmlType, n: usize, rows: usize) {
    let mut g = Gen(0x9E3779B97F4A7C15 ^ (n * rows) as u64 ^ ty.ggml_id() as u64);
    let w = weights(ty, n, rows, &mut g);
    let x: Vec<f32> = (0..n).map(|_| g.f32()).collect();
    let mut out = vec![0.0f32; rows];
    let mut group = c.benchmark_group(format!("matvec/{ty}"));
    group.throughput(Throughput::Bytes(w.len() as u64));
    if rows > 100_000 {
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(4));
    }
    for k in kernels {
        let mut acts = Acts::new();
        k.quantize(ty.act_kind(), &x, n, &mut acts);
        group.bench_with_input(
            BenchmarkId::new(k.path().as_str(), format!("{n}x{rows}")),
            &w,
            |b, w| {
                b.iter(|| {
                    matvec(k, ty, black_box(w), n, &acts, &mut out);
                    black_box(&out);
                })
            },
        );
    }
    group.finish();
}

fn bench_matvec(c: &mut Criterion) {
    let kernels = kernel_sets();
    for ty in GgmlType::WEIGHTS {
        for (n, rows) in SHAPES {
            if n % ty.block_len() == 0 {
                bench_shape(c, &kernels, ty, n, rows);
            }
        }
    }
    bench_shape(c, &kernels, GgmlType::Q8_0, BIG.0, BIG.1);
}

/// Tokens in a prefill batch (llama-bench's pp128).
const PREFILL_TOKENS: usize = 128;

/// The prefill matmul (quantize the batch, then every row against every token, as
/// `CpuBackend::matmul` runs it) on one thread; throughput counts weight bytes once per batch.
fn bench_prefill(c: &mut Criterion) {
    let kernels = kernel_sets();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for ty in GgmlType::WEIGHTS {
        for (n, rows) in SHAPES {
            if n % ty.block_len() != 0 {
                continue;
            }
            let mut g = Gen(0x5EED ^ (n * rows) as u64 ^ ty.ggml_id() as u64);
            let w = weights(ty, n, rows, &mut g);
            let x: Vec<f32> = (0..n * PREFILL_TOKENS).map(|_| g.f32()).collect();
            let mut out = vec![0.0f32; rows * PREFILL_TOKENS];
            let mut group = c.benchmark_group(format!("prefill{PREFILL_TOKENS}/{ty}"));
            group.throughput(Throughput::Bytes(w.len() as u64));
            for k in &kernels {
                let mut scratch = MatmulScratch::default();
                let rows_of = WeightRows {
                    ty,
                    data: &w,
                    rows,
                    cols: n,
                };
                group.bench_function(
                    BenchmarkId::new(k.path().as_str(), format!("{n}x{rows}")),
                    |b| {
                        b.iter(|| {
                            pool.install(|| {
                                matmul_rows(k, rows_of, &x, PREFILL_TOKENS, &mut scratch, &mut out)
                            });
                            black_box(&out);
                        })
                    },
                );
            }
            group.finish();
        }
    }
}

fn bench_quantize(c: &mut Criterion) {
    let kernels = kernel_sets();
    let n = 2048;
    let mut g = Gen(42);
    let x: Vec<f32> = (0..n).map(|_| g.f32()).collect();
    let mut group = c.benchmark_group("quantize_acts");
    group.throughput(Throughput::Bytes((n * 4) as u64));
    for kind in [
        torchless::quant::ActKind::Q8_0,
        torchless::quant::ActKind::Q8_1,
        torchless::quant::ActKind::Q8_K,
    ] {
        for k in &kernels {
            let mut acts = Acts::new();
            group.bench_function(
                BenchmarkId::new(k.path().as_str(), format!("{kind}/{n}")),
                |b| b.iter(|| k.quantize(kind, black_box(&x), n, &mut acts)),
            );
        }
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_matvec, bench_prefill, bench_quantize
}
criterion_main!(benches);
