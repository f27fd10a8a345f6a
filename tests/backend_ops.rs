//! The op-by-op harness (tests/ops_harness) on the CPU backend: every kernel path this CPU
//! supports (scalar, AVX2, AVX-512; so also the best one, which `CpuBackend::new` picks) against
//! the scalar reference, on fresh random inputs each run
//! (`TORCHLESS_OPS_SEED=<seed>` replays one; every failure prints its seed). The table of errors
//! per op and type prints with `cargo test --release --test backend_ops -- --nocapture`.
//!
//! The same harness runs on the CUDA backend in tests/cuda_device.rs (tools/gpu-check.sh).

mod ops_harness;

use ops_harness::{Family, Report};
use torchless::backend::cpu::caps::{CpuCaps, KernelPath};
use torchless::backend::cpu::dot::DotKernels;
use torchless::backend::cpu::CpuBackend;

/// The CPU backend on `path`, or `None` when this CPU cannot run it.
fn cpu(path: KernelPath) -> Option<CpuBackend> {
    let caps = CpuCaps::detect();
    let kernels = DotKernels::select(&caps, Some(path)).ok()?;
    Some(CpuBackend::with_kernels(caps, kernels, 2).expect("CPU backend"))
}

/// Every family on `path` against the scalar reference, within the harness's bounds.
fn check_path(path: KernelPath) {
    match cpu(path) {
        Some(b) => ops_harness::check_backend(&b, &format!("cpu {path}")),
        None => eprintln!(
            "cpu {path}: not supported here ({}), skipped",
            CpuCaps::detect().describe()
        ),
    }
}

/// The scalar path against the scalar reference (the same code on both sides): every op must
/// match bit for bit. This checks the harness itself: inputs reach both backends identically,
/// outputs are read back whole, and nothing depends on run order or threads.
#[test]
fn scalar_path_is_bit_identical_to_the_reference() {
    let b = cpu(KernelPath::Scalar).expect("the scalar path runs everywhere");
    let mut report = Report::new(&b, "cpu scalar");
    for fam in Family::ALL {
        ops_harness::run_family(&b, fam, &mut report);
    }
    report.print();
    report.assert_exact();
}

#[test]
fn avx2_path_matches_the_scalar_reference() {
    check_path(KernelPath::Avx2);
}

#[test]
fn avx512_path_matches_the_scalar_reference() {
    check_path(KernelPath::Avx512);
}

/// The harness must fail a backend with a bug: the CPU backend with one deliberate slip per op
/// family, each of the size a real kernel bug would have.
mod catches_bugs {
    use super::*;
    use torchless::backend::cpu::attention::CpuKvCache;
    use torchless::backend::cpu::CpuWeight;
    use torchless::backend::{AttnShape, Backend, NormSpec};
    use torchless::model::arch::{Activation, RopeLayout};
    use torchless::model::config::RopeParams;
    use torchless::model::weights::{Role, WeightView};

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Bug {
        /// `embed` ignores its scale.
        EmbedScale,
        /// `add` writes one value past `len`.
        AddWritesPast,
        /// `glu` always applies SiLU.
        GluAlwaysSilu,
        /// `norm` uses 10 × eps.
        NormEps,
        /// `rope` is one position late.
        RopeOffByOne,
        /// `attention` sees one position more than the window.
        WindowOffByOne,
        /// `attention` ignores the softcap.
        NoSoftcap,
        /// `matmul` skips the last token of a batch.
        MatmulLastToken,
        /// `weight` refuses BF16 norm vectors.
        RefuseBf16Norm,
    }

    struct Broken {
        inner: CpuBackend,
        bug: Bug,
    }

    impl Backend for Broken {
        type Weight = CpuWeight;
        type Buf = Vec<f32>;
        type KvCache = CpuKvCache;
        fn name(&self) -> &'static str {
            "broken"
        }
        fn describe(&self) -> String {
            format!("cpu with bug {:?}", self.bug)
        }
        fn weight(&self, v: WeightView<'_>, role: Role) -> torchless::Result<CpuWeight> {
            if self.bug == Bug::RefuseBf16Norm
                && role == Role::Norm
                && v.ty == torchless::quant::GgmlType::BF16
            {
                return Err(torchless::Error::UnsupportedType {
                    name: v.name.to_string(),
                    ty: "BF16",
                    backend: "broken",
                    role: role.name(),
                });
            }
            self.inner.weight(v, role)
        }
        fn buf(&self, len: usize) -> torchless::Result<Vec<f32>> {
            self.inner.buf(len)
        }
        fn buf_len(&self, buf: &Vec<f32>) -> usize {
            buf.len()
        }
        fn read(&self, buf: &Vec<f32>, len: usize, out: &mut Vec<f32>) -> torchless::Result<()> {
            self.inner.read(buf, len, out)
        }
        fn kv_cache(
            &self,
            n_layer: usize,
            n_ctx: usize,
            k_width: usize,
            v_width: usize,
        ) -> torchless::Result<CpuKvCache> {
            self.inner.kv_cache(n_layer, n_ctx, k_width, v_width)
        }
        fn embed(&self, table: &CpuWeight, ids: &[u32], scale: f32, out: &mut Vec<f32>) {
            let scale =
                if self.bug == Bug::EmbedScale && table.ty != torchless::quant::GgmlType::F32 {
                    1.0
                } else {
                    scale
                };
            self.inner.embed(table, ids, scale, out)
        }
        fn norm(
            &self,
            mut spec: NormSpec,
            x: &Vec<f32>,
            w: &CpuWeight,
            b: Option<&CpuWeight>,
            rows: usize,
            dim: usize,
            out: &mut Vec<f32>,
        ) {
            if self.bug == Bug::NormEps {
                spec.eps *= 10.0;
            }
            self.inner.norm(spec, x, w, b, rows, dim, out)
        }
        fn norm_inplace(
            &self,
            spec: NormSpec,
            x: &mut Vec<f32>,
            w: &CpuWeight,
            rows: usize,
            dim: usize,
        ) {
            self.inner.norm_inplace(spec, x, w, rows, dim)
        }
        fn matmul(&self, w: &CpuWeight, x: &Vec<f32>, n_tok: usize, out: &mut Vec<f32>) {
            let n = if self.bug == Bug::MatmulLastToken && n_tok > 1 {
                n_tok - 1
            } else {
                n_tok
            };
            self.inner.matmul(w, x, n, out)
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
            let pos0 = pos0 + usize::from(self.bug == Bug::RopeOffByOne);
            self.inner
                .rope(x, n_tok, n_heads, head_dim, pos0, layout, p)
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
            self.inner.kv_store(kv, layer, pos0, n_tok, k, v)
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
            let mut s = *shape;
            match self.bug {
                Bug::WindowOffByOne => s.window = s.window.map(|w| w + 1),
                Bug::NoSoftcap => s.softcap = None,
                _ => {}
            }
            self.inner.attention(q, kv, layer, pos0, n_tok, &s, out)
        }
        fn add_bias(&self, x: &mut Vec<f32>, b: &CpuWeight, rows: usize) {
            self.inner.add_bias(x, b, rows)
        }
        fn act(&self, act: Activation, x: &mut Vec<f32>, len: usize) {
            self.inner.act(act, x, len)
        }
        fn glu(
            &self,
            act: Activation,
            gate: &Vec<f32>,
            up: &Vec<f32>,
            len: usize,
            out: &mut Vec<f32>,
        ) {
            let act = if self.bug == Bug::GluAlwaysSilu {
                Activation::Silu
            } else {
                act
            };
            self.inner.glu(act, gate, up, len, out)
        }
        fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) {
            self.inner.add(x, y, len);
            if self.bug == Bug::AddWritesPast {
                x[len] = 0.0;
            }
        }
        fn softcap(&self, x: &mut Vec<f32>, c: f32, len: usize) {
            self.inner.softcap(x, c, len)
        }
        fn copy_row(&self, x: &Vec<f32>, src_row: usize, width: usize, out: &mut Vec<f32>) {
            self.inner.copy_row(x, src_row, width, out)
        }
    }

    /// Run `fam` on the CPU with `bug`; the harness must flag `op`.
    fn caught(bug: Bug, fam: Family, op: &str) {
        let b = Broken {
            inner: cpu(KernelPath::Scalar).expect("scalar path"),
            bug,
        };
        let mut report = Report::new(&b, &format!("bug {bug:?}"));
        ops_harness::run_family(&b, fam, &mut report);
        let flagged = report
            .rows
            .iter()
            .filter(|r| r.op == op && r.failed())
            .count();
        assert!(
            flagged > 0,
            "the harness missed {bug:?} in {op}\n{}",
            report.table()
        );
        eprintln!("{bug:?}: {flagged} {op} cases flagged");
    }

    #[test]
    fn elementwise_bugs() {
        caught(Bug::EmbedScale, Family::Embed, "embed");
        caught(Bug::AddWritesPast, Family::Elementwise, "add");
        caught(Bug::GluAlwaysSilu, Family::Elementwise, "glu");
        caught(Bug::NormEps, Family::Norm, "norm");
        caught(Bug::RopeOffByOne, Family::Rope, "rope");
        caught(Bug::RefuseBf16Norm, Family::Elementwise, "add_bias");
    }

    #[test]
    fn attention_bugs() {
        caught(Bug::WindowOffByOne, Family::Attention, "attention");
        caught(Bug::NoSoftcap, Family::Attention, "attention");
    }

    #[test]
    fn matmul_bug() {
        caught(Bug::MatmulLastToken, Family::Matmul, "matmul");
    }
}

/// The whole-model comparison the CUDA device tests make, here between the CPU's default path and
/// its scalar path on every tiny architecture fixture (I8 w8a8 included: the CPU supports it).
#[test]
fn arch_fixtures_default_path_vs_scalar() {
    let mut files = ops_harness::ARCH_FILES.to_vec();
    files.push(("i8", ops_harness::ArchFormat::Quantized));
    ops_harness::check_arch_fixtures("cpu default", &files, || CpuBackend::new(2));
}
