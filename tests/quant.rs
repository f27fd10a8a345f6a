//! ggml block decoding, activation quantization and fused dequant-dot kernels.
//!
//! - Fused dots (scalar and every SIMD path this CPU supports) against
//!   dequantize-then-dot on random blocks of every type.
//! - SIMD activation quantizers are bit-identical to the scalar references.
//! - `dequantize_row` against gguf-py's independent decoder (fixtures written by
//!   `tools/gen-quant-fixtures.py`), Q8_0 activation quantization against
//!   `gguf.quants.quantize`, and hand-checked Q8_1 / Q8_K blocks.

use std::path::PathBuf;

use half::f16;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use torchless::backend::cpu::caps::{parse_request, requested_path, CpuCaps, KernelPath};
use torchless::backend::cpu::dot::{
    DotError, DotKernels, Lanes, TokenLanes, TokenTiles, LANE_TOKENS, MAX_LANE_ROWS, TILE_TOKENS,
};
use torchless::quant::{dequantize_row, ActKind, ActRow, Acts, BlockQ8_0, GgmlType};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Scalar plus every kernel path this CPU supports.
fn kernel_sets() -> Vec<DotKernels> {
    let caps = CpuCaps::detect();
    let mut v = vec![DotKernels::scalar()];
    for p in KernelPath::ALL {
        if caps.supports(p).is_ok() {
            v.push(DotKernels::select(&caps, Some(p)).expect("supported path"));
        }
    }
    v
}

/// Offsets of the f16 scale fields within one block of `ty`.
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

/// A finite f16 of moderate magnitude and random sign.
fn moderate_f16(rng: &mut StdRng) -> f16 {
    let e: f32 = rng.gen_range(-10.0..1.0);
    let s = if rng.gen_bool(0.5) { -1.0 } else { 1.0 };
    f16::from_f32(s * e.exp2())
}

/// Random bytes of `nb` blocks of `ty`, with every scale field finite and moderate.
fn random_row(ty: GgmlType, nb: usize, rng: &mut StdRng) -> Vec<u8> {
    let n = nb * ty.block_len();
    match ty {
        GgmlType::F32 => (0..n)
            .flat_map(|_| rng.gen_range(-4.0f32..4.0).to_le_bytes())
            .collect(),
        GgmlType::F16 => (0..n)
            .flat_map(|_| f16::from_f32(rng.gen_range(-4.0f32..4.0)).to_le_bytes())
            .collect(),
        GgmlType::BF16 => (0..n)
            .flat_map(|_| half::bf16::from_f32(rng.gen_range(-4.0f32..4.0)).to_le_bytes())
            .collect(),
        _ => {
            let bb = ty.block_bytes();
            let mut raw: Vec<u8> = (0..nb * bb).map(|_| rng.gen()).collect();
            for b in 0..nb {
                for &off in f16_fields(ty) {
                    let h = moderate_f16(rng).to_le_bytes();
                    raw[b * bb + off..b * bb + off + 2].copy_from_slice(&h);
                }
                if ty == GgmlType::Q8_K {
                    let d = moderate_f16(rng).to_f32().to_le_bytes();
                    raw[b * bb..b * bb + 4].copy_from_slice(&d);
                }
            }
            raw
        }
    }
}

fn random_acts(n: usize, rng: &mut StdRng) -> Vec<f32> {
    let scale: f32 = rng.gen_range(-6.0f32..4.0).exp2();
    (0..n)
        .map(|i| {
            // Sprinkle exact zeros and a zero block now and then.
            if (i / 32) % 11 == 10 || rng.gen_ratio(1, 50) {
                0.0
            } else {
                rng.gen_range(-1.0f32..1.0) * scale
            }
        })
        .collect()
}

/// The bytes of an activation row, for bit-exact comparisons.
fn row_bytes(r: ActRow<'_>) -> Vec<u8> {
    match r {
        ActRow::F32(x) => bytemuck::cast_slice(x).to_vec(),
        ActRow::Q8_0(b) => bytemuck::cast_slice(b).to_vec(),
        ActRow::Q8_1(b) => bytemuck::cast_slice(b).to_vec(),
        ActRow::Q8_K(b) => bytemuck::cast_slice(b).to_vec(),
    }
}

/// Misalign `bytes` by one so kernels never see an aligned weight row.
fn misaligned(bytes: &[u8]) -> (Vec<u8>, std::ops::Range<usize>) {
    let mut buf = vec![0u8; bytes.len() + 1];
    buf[1..].copy_from_slice(bytes);
    (buf, 1..bytes.len() + 1)
}

/// Check every kernel set's fused dot of `w` with `x` against dequantize-then-dot.
fn check_dot(ty: GgmlType, w: &[u8], x: &[f32]) {
    let n = x.len();
    let kind = ty.act_kind();
    let mut reference = Acts::new();
    reference.quantize(kind, x, n);
    assert_eq!(reference.rows(), 1);

    let mut wf = vec![0.0f32; n];
    dequantize_row(ty, w, &mut wf);
    let mut af = vec![0.0f32; n];
    reference.row(0).dequantize(&mut af);
    let (mut exact, mut mag) = (0.0f64, 0.0f64);
    for (&a, &b) in wf.iter().zip(&af) {
        exact += a as f64 * b as f64;
        mag += (a as f64 * b as f64).abs();
    }
    // Q4_1 / Q5_1 use the activation block's s = f16(d * sum(q)) for the min term, exactly
    // as llama.cpp does, while the dequantized activations use f16(d): allow for both f16
    // roundings (half an ulp each, plus the subnormal step of s).
    let mut extra = 0.0f64;
    if let (GgmlType::Q4_1 | GgmlType::Q5_1, ActRow::Q8_1(blocks)) = (ty, reference.row(0)) {
        let bb = ty.block_bytes();
        for (i, b) in blocks.iter().enumerate() {
            let m = f16::from_le_bytes([w[i * bb + 2], w[i * bb + 3]]).to_f32() as f64;
            let s = b.s.to_f32() as f64;
            extra += m.abs() * (s.abs() * 2f64.powi(-10) + 2f64.powi(-24));
        }
    }
    let tol = 1e-5 * mag + extra + 1e-30;

    let (buf, range) = misaligned(w);
    let w_mis = &buf[range];
    for k in kernel_sets() {
        let mut acts = Acts::new();
        k.quantize(kind, x, n, &mut acts);
        assert_eq!(
            row_bytes(acts.row(0)),
            row_bytes(reference.row(0)),
            "{ty}: {} quantizer differs from the reference",
            k.path()
        );
        let got = k.dot(ty, w_mis, acts.row(0), n) as f64;
        assert!(
            (got - exact).abs() <= tol,
            "{ty} n={n} path={}: fused {got} vs dequantized {exact} (tol {tol:e}, sum|terms| {mag:e})",
            k.path()
        );
    }
}

// ---------------------------------------------------------------------------
// Types and shapes
// ---------------------------------------------------------------------------

#[test]
fn type_metadata() {
    for ty in GgmlType::ALL {
        assert_eq!(GgmlType::from_ggml_id(ty.ggml_id()), Some(ty));
        assert_eq!(ty.row_bytes(ty.block_len() * 3), Some(ty.block_bytes() * 3));
        assert_eq!(ty.to_string(), ty.name());
    }
    assert_eq!(GgmlType::from_ggml_id(4), None); // removed Q4_2
    assert_eq!(GgmlType::from_ggml_id(30), Some(GgmlType::BF16));
    assert_eq!(GgmlType::Q4_K.row_bytes(640), None);
    assert_eq!(GgmlType::Q4_K.row_bytes(2048), Some(8 * 144));
    assert_eq!(GgmlType::Q8_0.row_bytes(usize::MAX - 31), None);
    let sizes = [
        (GgmlType::Q4_0, 18),
        (GgmlType::Q4_1, 20),
        (GgmlType::Q5_0, 22),
        (GgmlType::Q5_1, 24),
        (GgmlType::Q8_0, 34),
        (GgmlType::Q2_K, 84),
        (GgmlType::Q3_K, 110),
        (GgmlType::Q4_K, 144),
        (GgmlType::Q5_K, 176),
        (GgmlType::Q6_K, 210),
        (GgmlType::Q8_K, 292),
    ];
    for (ty, b) in sizes {
        assert_eq!(ty.block_bytes(), b, "{ty}");
    }
    use ActKind as A;
    let acts = [
        (GgmlType::F32, A::F32),
        (GgmlType::F16, A::F32),
        (GgmlType::BF16, A::F32),
        (GgmlType::Q4_0, A::Q8_0),
        (GgmlType::Q5_0, A::Q8_0),
        (GgmlType::Q8_0, A::Q8_0),
        (GgmlType::Q4_1, A::Q8_1),
        (GgmlType::Q5_1, A::Q8_1),
        (GgmlType::Q2_K, A::Q8_K),
        (GgmlType::Q3_K, A::Q8_K),
        (GgmlType::Q4_K, A::Q8_K),
        (GgmlType::Q5_K, A::Q8_K),
        (GgmlType::Q6_K, A::Q8_K),
    ];
    for (ty, a) in acts {
        assert_eq!(ty.act_kind(), a, "{ty}");
    }
}

// ---------------------------------------------------------------------------
// Capability detection and dispatch
// ---------------------------------------------------------------------------

#[test]
fn kernel_path_parsing() {
    assert_eq!(parse_request("scalar"), Ok(Some(KernelPath::Scalar)));
    assert_eq!(parse_request("AVX2"), Ok(Some(KernelPath::Avx2)));
    assert_eq!(parse_request("avx512"), Ok(Some(KernelPath::Avx512)));
    assert_eq!(parse_request("auto"), Ok(None));
    assert_eq!(parse_request(""), Ok(None));
    let e = parse_request("sse9").unwrap_err();
    assert!(e.contains("sse9") && e.contains("TORCHLESS_CPU"), "{e}");
    assert_eq!("avx2".parse::<KernelPath>(), Ok(KernelPath::Avx2));
    assert!("neon".parse::<KernelPath>().is_err());
    for p in KernelPath::ALL {
        assert_eq!(p.to_string().parse::<KernelPath>(), Ok(p));
    }

    // The only test touching the variable.
    std::env::set_var("TORCHLESS_CPU", "bogus-path");
    let e = requested_path().unwrap_err();
    std::env::set_var("TORCHLESS_CPU", "scalar");
    let ok = requested_path();
    std::env::remove_var("TORCHLESS_CPU");
    assert!(e.contains("bogus-path"), "{e}");
    assert_eq!(ok, Ok(Some(KernelPath::Scalar)));
    assert_eq!(requested_path(), Ok(None));
}

#[test]
fn select_respects_capabilities() {
    let none = CpuCaps::default();
    assert_eq!(KernelPath::best(&none), KernelPath::Scalar);
    assert_eq!(
        DotKernels::select(&none, None).unwrap().path(),
        KernelPath::Scalar
    );
    match DotKernels::select(&none, Some(KernelPath::Avx2)) {
        Err(DotError::Unsupported { path, missing, .. }) => {
            assert_eq!(path, KernelPath::Avx2);
            assert_eq!(missing, "avx2");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let e = DotKernels::select(&none, Some(KernelPath::Avx512)).unwrap_err();
    assert!(e.to_string().contains("avx512"), "{e}");

    let caps = CpuCaps::detect();
    let best = DotKernels::select(&caps, None).unwrap();
    assert_eq!(best.path(), KernelPath::best(&caps));
    assert_eq!(DotKernels::scalar().path(), KernelPath::Scalar);
    eprintln!("CPU: {}; best path {}", caps.describe(), best.path());

    // Hand-made caps claiming features the CPU lacks must not install those kernels.
    let all = CpuCaps {
        avx2: true,
        fma: true,
        f16c: true,
        avx512f: true,
        avx512bw: true,
        avx512vl: true,
        ..CpuCaps::default()
    };
    let r = DotKernels::select(&all, Some(KernelPath::Avx512));
    assert_eq!(r.is_ok(), caps.supports(KernelPath::Avx512).is_ok());
}

#[test]
#[should_panic(expected = "activations must be Q8_1")]
fn dot_rejects_wrong_activation_kind() {
    let w = vec![0u8; 20];
    let mut acts = Acts::new();
    acts.quantize(ActKind::Q8_0, &[0.5; 32], 32);
    DotKernels::scalar().dot(GgmlType::Q4_1, &w, acts.row(0), 32);
}

/// A weight row of the wrong length is a panic on every path, never an out-of-bounds read.
#[test]
fn dot_rejects_wrong_weight_row_length() {
    let mut rng = StdRng::seed_from_u64(3);
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    for ty in GgmlType::ALL {
        let n = 512;
        let w = random_row(ty, n / ty.block_len(), &mut rng);
        let x = random_acts(n, &mut rng);
        for k in kernel_sets() {
            let mut acts = Acts::new();
            k.quantize(ty.act_kind(), &x, n, &mut acts);
            for bad in [&w[..w.len() - ty.block_bytes()], &w[..w.len() - 1]] {
                let r = std::panic::catch_unwind(|| k.dot(ty, bad, acts.row(0), n));
                if r.is_ok() {
                    failures.push(format!("{ty} {} accepted {} bytes", k.path(), bad.len()));
                }
            }
        }
    }
    std::panic::set_hook(prev);
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn acts_reuse_across_kinds_and_shapes() {
    let x: Vec<f32> = (0..1024).map(|i| (i as f32 * 0.01).cos()).collect();
    let k = DotKernels::select(&CpuCaps::detect(), None).unwrap();
    let mut acts = Acts::new();
    assert_eq!(acts.rows(), 0);
    k.quantize(ActKind::Q8_K, &x, 512, &mut acts);
    assert_eq!(
        (acts.rows(), acts.n(), acts.kind()),
        (2, 512, ActKind::Q8_K)
    );
    k.quantize(ActKind::Q8_0, &x[..64], 32, &mut acts);
    assert_eq!((acts.rows(), acts.n(), acts.kind()), (2, 32, ActKind::Q8_0));
    assert_eq!(acts.row(1).len(), 32);
    k.quantize(ActKind::F32, &x[..10], 5, &mut acts);
    let ActRow::F32(r) = acts.row(1) else {
        panic!()
    };
    assert_eq!(r, &x[5..10]);
    k.quantize(ActKind::Q8_1, &[], 64, &mut acts);
    assert_eq!(acts.rows(), 0);
}

// ---------------------------------------------------------------------------
// Fused dots
// ---------------------------------------------------------------------------

#[test]
fn fused_dot_every_type_deterministic() {
    let mut rng = StdRng::seed_from_u64(7);
    for ty in GgmlType::ALL {
        for nb in [1usize, 2, 3, 5, 9] {
            for _ in 0..4 {
                let n = if ty.block_len() == 1 {
                    nb * 37
                } else {
                    nb * ty.block_len()
                };
                let w = random_row(ty, n / ty.block_len(), &mut rng);
                let x = random_acts(n, &mut rng);
                check_dot(ty, &w, &x);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn fused_dot_matches_dequantized(ty_idx in 0usize..15, nb in 1usize..=7, seed in any::<u64>()) {
        let ty = GgmlType::ALL[ty_idx];
        let mut rng = StdRng::seed_from_u64(seed);
        // Float types: any length (odd ones exercise the SIMD tails).
        let n = if ty.block_len() == 1 { nb * 29 + (seed % 7) as usize } else { nb * ty.block_len() };
        let w = random_row(ty, n / ty.block_len(), &mut rng);
        let x = random_acts(n, &mut rng);
        check_dot(ty, &w, &x);
    }

    #[test]
    fn simd_quantizers_are_bit_identical(kind_idx in 0usize..4, nb in 1usize..=5, rows in 1usize..=3, seed in any::<u64>()) {
        let kind = [ActKind::F32, ActKind::Q8_0, ActKind::Q8_1, ActKind::Q8_K][kind_idx];
        let mut rng = StdRng::seed_from_u64(seed);
        let n = nb * kind.block_len().max(32);
        let x = random_acts(rows * n, &mut rng);
        let mut reference = Acts::new();
        reference.quantize(kind, &x, n);
        prop_assert_eq!(reference.rows(), rows);
        for k in kernel_sets() {
            let mut acts = Acts::new();
            k.quantize(kind, &x, n, &mut acts);
            prop_assert_eq!(acts.rows(), rows);
            for r in 0..rows {
                prop_assert_eq!(row_bytes(acts.row(r)), row_bytes(reference.row(r)), "{} row {}", k.path(), r);
            }
        }
        // Each row of a batch equals that row quantized alone.
        for r in 0..rows {
            let mut one = Acts::new();
            one.quantize(kind, &x[r * n..(r + 1) * n], n);
            prop_assert_eq!(row_bytes(one.row(0)), row_bytes(reference.row(r)));
        }
    }
}

/// `dot_tokens` over `count` tokens starting at `t0` equals `dot` per token, bit for bit, on
/// every kernel path (including a misaligned weight row).
fn check_dot_tokens(ty: GgmlType, nb: usize, t0: usize, count: usize, rng: &mut StdRng) {
    let n = if ty.block_len() == 1 {
        nb * 37
    } else {
        nb * ty.block_len()
    };
    let w = random_row(ty, n / ty.block_len(), rng);
    let (buf, range) = misaligned(&w);
    let x = random_acts((t0 + count) * n, rng);
    for k in kernel_sets() {
        let mut acts = Acts::new();
        k.quantize(ty.act_kind(), &x, n, &mut acts);
        let mut out = vec![f32::NAN; count];
        k.dot_tokens(ty, &buf[range.clone()], &acts, t0, &mut out);
        for (i, o) in out.iter().enumerate() {
            let want = k.dot(ty, &w, acts.row(t0 + i), n);
            assert_eq!(
                o.to_bits(),
                want.to_bits(),
                "{ty} {} nb={nb} t0={t0} count={count} token {i}: {o} vs {want}",
                k.path()
            );
        }
    }
}

/// `dot_rows` over `rows` rows equals `dot` per row, bit for bit, on every path.
fn check_dot_rows(ty: GgmlType, nb: usize, rows: usize, rng: &mut StdRng) {
    let n = if ty.block_len() == 1 {
        nb * 37
    } else {
        nb * ty.block_len()
    };
    let w: Vec<u8> = (0..rows)
        .flat_map(|_| random_row(ty, n / ty.block_len(), rng))
        .collect();
    let row_bytes = w.len() / rows;
    let (buf, range) = misaligned(&w);
    let x = random_acts(n, rng);
    for k in kernel_sets() {
        let mut acts = Acts::new();
        k.quantize(ty.act_kind(), &x, n, &mut acts);
        let mut out = vec![f32::NAN; rows];
        k.dot_rows(ty, &buf[range.clone()], acts.row(0), n, &mut out);
        for (r, o) in out.iter().enumerate() {
            let want = k.dot(ty, &w[r * row_bytes..][..row_bytes], acts.row(0), n);
            assert_eq!(
                o.to_bits(),
                want.to_bits(),
                "{ty} {} nb={nb} rows={rows} row {r}: {o} vs {want}",
                k.path()
            );
        }
    }
}

#[test]
fn dot_rows_bit_identical_to_dot() {
    let mut rng = StdRng::seed_from_u64(5151);
    for ty in GgmlType::ALL {
        let nbs: &[usize] = if ty.block_len() >= 256 {
            &[1, 2]
        } else {
            &[1, 2, 3, 5, 18]
        };
        for &nb in nbs {
            for rows in [1, 2, 3, 4, 5, 7, 9] {
                check_dot_rows(ty, nb, rows, &mut rng);
            }
        }
    }
}

#[test]
fn dot_tokens_bit_identical_to_dot() {
    let mut rng = StdRng::seed_from_u64(4242);
    for ty in GgmlType::ALL {
        let nbs: &[usize] = if ty.block_len() >= 256 {
            &[1, 2, 3]
        } else {
            &[1, 2, 3, 5, 7, 8]
        };
        for &nb in nbs {
            for count in 1..=9 {
                for t0 in [0usize, 1] {
                    check_dot_tokens(ty, nb, t0, count, &mut rng);
                }
            }
        }
    }
}

/// The tiled kernels over `count` tokens equal `dot` per token, bit for bit, and give 0 for the
/// padding tokens of the last group, on every path that has them. Returns how many paths did.
fn check_dot_tile(ty: GgmlType, nb: usize, count: usize, rng: &mut StdRng) -> usize {
    let n = nb * ty.block_len();
    let w = random_row(ty, nb, rng);
    let (buf, range) = misaligned(&w);
    let x = random_acts(count * n, rng);
    let mut tiled = 0;
    for k in kernel_sets().into_iter().filter(|k| k.has_tiles(ty)) {
        tiled += 1;
        let mut acts = Acts::new();
        k.quantize(ty.act_kind(), &x, n, &mut acts);
        let mut tiles = TokenTiles::new();
        assert!(tiles.fill(&acts), "{ty}: tiles refused {}", ty.act_kind());
        assert_eq!(tiles.groups(), count.div_ceil(TILE_TOKENS));
        for g in 0..tiles.groups() {
            let mut out = [f32::NAN; TILE_TOKENS];
            assert!(k.dot_tile(ty, &buf[range.clone()], &tiles, g, &mut out));
            for (i, o) in out.iter().enumerate() {
                let t = g * TILE_TOKENS + i;
                let want = if t < count {
                    k.dot(ty, &w, acts.row(t), n)
                } else {
                    0.0
                };
                assert_eq!(
                    o.to_bits(),
                    want.to_bits(),
                    "{ty} {} nb={nb} count={count} token {t}: {o} vs {want}",
                    k.path()
                );
            }
        }
    }
    tiled
}

#[test]
fn dot_tile_bit_identical_to_dot() {
    let mut rng = StdRng::seed_from_u64(777);
    let mut tiled = 0;
    for ty in GgmlType::ALL {
        for nb in [1, 2, 3, 5, 8, 18, 21] {
            for count in [1, 7, 8, 9, 16, 21] {
                tiled += check_dot_tile(ty, nb, count, &mut rng);
            }
        }
    }
    // On a CPU with AVX512-VNNI Q8_0 has a tiled kernel; elsewhere nothing does and
    // `dot_tile` must say so.
    if CpuCaps::detect().supports(KernelPath::Avx512).is_ok()
        && std::arch::is_x86_feature_detected!("avx512vnni")
    {
        assert_eq!(tiled, 7 * 6, "tiled kernels exercised");
    }
    let k = DotKernels::scalar();
    let mut out = [1.0; TILE_TOKENS];
    assert!(!k.dot_tile(GgmlType::Q4_0, &[], &TokenTiles::new(), 0, &mut out));
    assert_eq!(out, [1.0; TILE_TOKENS]);
}

/// The lane kernels over `rows` weight rows × `count` tokens equal the scalar `dot` per
/// (row, token) up to f32 rounding, and give 0 for the padding tokens of the last group, on
/// every path that has them. Returns how many paths did.
fn check_dot_lanes(ty: GgmlType, nb: usize, rows: usize, count: usize, rng: &mut StdRng) -> usize {
    let n = nb * ty.block_len();
    let ws: Vec<Vec<u8>> = (0..rows).map(|_| random_row(ty, nb, rng)).collect();
    let (buf, range) = misaligned(&ws.concat());
    let x = random_acts(count * n, rng);
    let scalar = DotKernels::scalar();
    let mut acts = Acts::new();
    scalar.quantize(ty.act_kind(), &x, n, &mut acts);
    let mut lanes = TokenLanes::new();
    let mut done = 0;
    for k in kernel_sets().into_iter().filter(|k| k.has_lanes(ty)) {
        done += 1;
        assert!(lanes.fill(&acts), "{ty}: lanes refused {}", ty.act_kind());
        assert_eq!(lanes.groups(), count.div_ceil(LANE_TOKENS));
        for g in 0..lanes.groups() {
            let mut out = vec![Lanes([f32::NAN; LANE_TOKENS]); rows];
            assert!(k.dot_lanes(ty, &buf[range.clone()], &lanes, g, &mut out));
            for (r, w) in ws.iter().enumerate() {
                let mut wf = vec![0.0f32; n];
                dequantize_row(ty, w, &mut wf);
                for l in 0..LANE_TOKENS {
                    let (t, got) = (g * LANE_TOKENS + l, out[r].0[l]);
                    if t >= count {
                        assert_eq!(got.to_bits(), 0, "{ty}: padding token {t} row {r}");
                        continue;
                    }
                    let want = scalar.dot(ty, w, acts.row(t), n);
                    let mut af = vec![0.0f32; n];
                    acts.row(t).dequantize(&mut af);
                    let mag: f64 = wf
                        .iter()
                        .zip(&af)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum();
                    let tol = 1e-5 * mag + 1e-30;
                    assert!(
                        (got as f64 - want as f64).abs() <= tol,
                        "{ty} {} nb={nb} rows={rows} count={count} row {r} token {t}: {got} vs {want} (tol {tol:e})",
                        k.path()
                    );
                }
            }
        }
    }
    done
}

#[test]
fn dot_lanes_match_scalar_dot() {
    let mut rng = StdRng::seed_from_u64(1616);
    let mut done = 0;
    for ty in GgmlType::ALL {
        let nbs: &[usize] = if ty.block_len() >= 256 {
            &[1, 2, 3]
        } else {
            &[1, 2, 3, 5, 20, 21]
        };
        for &nb in nbs {
            for rows in 1..=MAX_LANE_ROWS {
                for count in [1, 8, 15, 16, 17, 40] {
                    done += check_dot_lanes(ty, nb, rows, count, &mut rng);
                }
            }
        }
    }
    // On a CPU with AVX512-VNNI Q4_0, Q5_0, Q4_1, Q5_1, Q4_K and Q5_K have lane kernels;
    // elsewhere none do and `dot_lanes` must say so.
    if CpuCaps::detect().supports(KernelPath::Avx512).is_ok()
        && std::arch::is_x86_feature_detected!("avx512vnni")
    {
        assert_eq!(
            done,
            (4 * 6 + 2 * 3) * MAX_LANE_ROWS * 6,
            "lane kernels exercised"
        );
    }
    let k = DotKernels::scalar();
    let mut out = [Lanes([1.0; LANE_TOKENS])];
    assert!(!k.dot_lanes(GgmlType::Q4_0, &[], &TokenLanes::new(), 0, &mut out));
    assert_eq!(out[0].0, [1.0; LANE_TOKENS]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn dot_tile_matches_dot_prop(ty_idx in 0usize..15, nb in 1usize..=24, count in 1usize..=20, seed in any::<u64>()) {
        let ty = GgmlType::ALL[ty_idx];
        let mut rng = StdRng::seed_from_u64(seed);
        check_dot_tile(ty, nb, count, &mut rng);
    }

    #[test]
    fn dot_lanes_match_scalar_dot_prop(ty_idx in 0usize..15, nb in 1usize..=24, rows in 1usize..=MAX_LANE_ROWS, count in 1usize..=40, seed in any::<u64>()) {
        let ty = GgmlType::ALL[ty_idx];
        let mut rng = StdRng::seed_from_u64(seed);
        check_dot_lanes(ty, nb.min(if ty.block_len() >= 256 { 4 } else { 24 }), rows, count, &mut rng);
    }

    #[test]
    fn dot_tokens_matches_dot_prop(ty_idx in 0usize..15, nb in 1usize..=9, t0 in 0usize..3, count in 1usize..=9, seed in any::<u64>()) {
        let ty = GgmlType::ALL[ty_idx];
        let mut rng = StdRng::seed_from_u64(seed);
        check_dot_tokens(ty, nb, t0, count, &mut rng);
    }
}

#[test]
fn matvec_matches_dot() {
    let mut rng = StdRng::seed_from_u64(99);
    for ty in GgmlType::ALL {
        let n = 2 * 256;
        let rows = 5;
        let w: Vec<u8> = (0..rows)
            .flat_map(|_| random_row(ty, n / ty.block_len(), &mut rng))
            .collect();
        let x = random_acts(n, &mut rng);
        for k in kernel_sets() {
            let mut acts = Acts::new();
            k.quantize(ty.act_kind(), &x, n, &mut acts);
            let mut out = vec![0.0; rows];
            k.matvec(ty, &w, n, acts.row(0), &mut out);
            let rb = ty.row_bytes(n).unwrap();
            for r in 0..rows {
                assert_eq!(out[r], k.dot(ty, &w[r * rb..(r + 1) * rb], acts.row(0), n));
            }
        }
    }
}

/// Tie-breaking corners of the quantizers on every path: exact .5 ties after scaling, the
/// sign of the first largest-magnitude value (Q8_K), zero and tiny blocks.
#[test]
fn quantizer_corner_cases_all_paths() {
    let mut x = vec![0.0f32; 1024];
    for (i, v) in x.iter_mut().enumerate().take(256) {
        *v = ((i as i32 % 253) - 126) as f32 + 0.5; // ties everywhere
    }
    x[0] = -127.0;
    x[1] = 127.0;
    for (i, v) in x.iter_mut().enumerate().skip(256).take(256) {
        *v = (i as f32 * 0.37).sin() * 1e-7;
    }
    // x[512..768] stays zero
    for (i, v) in x.iter_mut().enumerate().skip(768) {
        *v = -(((i * 7919) % 255) as f32 - 127.0) * 0.5;
    }
    for kind in [ActKind::Q8_0, ActKind::Q8_1, ActKind::Q8_K] {
        let mut reference = Acts::new();
        reference.quantize(kind, &x, 256);
        for k in kernel_sets() {
            let mut acts = Acts::new();
            k.quantize(kind, &x, 256, &mut acts);
            for r in 0..4 {
                assert_eq!(
                    row_bytes(acts.row(r)),
                    row_bytes(reference.row(r)),
                    "{kind} {} row {r}",
                    k.path()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Activation quantization: hand-checked values
// ---------------------------------------------------------------------------

#[test]
fn q8_1_hand_checked() {
    let mut x = vec![0.0f32; 64];
    x[0] = 127.0;
    x[1] = -63.5; // roundf: away from zero
    x[2] = 0.5;
    x[3] = 1.0;
    x[4] = 0.49999997;
    for v in &mut x[32..] {
        *v = 2.0;
    }
    for k in kernel_sets() {
        let mut a = Acts::new();
        k.quantize(ActKind::Q8_1, &x, 64, &mut a);
        let ActRow::Q8_1(b) = a.row(0) else { panic!() };
        assert_eq!(b[0].d.to_f32(), 1.0);
        assert_eq!(&b[0].qs[..6], &[127, -64, 1, 1, 0, 0]);
        assert_eq!(b[0].s.to_f32(), 65.0);
        // d = 2/127 -> f16 0x2408 = 0.0157470703125; quants 127; s = f16(4064 * d) = 64.
        assert_eq!(b[1].d.to_bits(), 0x2408);
        assert_eq!(b[1].d.to_f32(), 1032.0 / 65536.0);
        assert!(b[1].qs.iter().all(|&q| q == 127));
        assert_eq!(b[1].s.to_f32(), 64.0);
    }
}

#[test]
fn q8_k_hand_checked() {
    let mut x = vec![0.0f32; 512];
    // The first largest-magnitude value is -127, so iscale = -127 / -127 = 1 and d = 1.
    let head = [-127.0, 127.0, 62.5, -62.5, 63.5, 0.5, 1.5, -0.5, 2.5];
    x[..9].copy_from_slice(&head);
    x[16] = 3.0;
    // Second block: max is +8 -> iscale = -127/8 = -15.875, d = 1/iscale.
    x[256] = 8.0;
    x[257] = -4.0;
    x[258] = 1.0;
    for k in kernel_sets() {
        let mut a = Acts::new();
        k.quantize(ActKind::Q8_K, &x, 512, &mut a);
        assert_eq!(a.rows(), 1);
        let ActRow::Q8_K(b) = a.row(0) else { panic!() };
        assert_eq!(b[0].d, 1.0);
        // Round half to even (ggml's nearest_int).
        assert_eq!(&b[0].qs[..9], &[-127, 127, 62, -62, 64, 0, 2, 0, 2]);
        assert_eq!(b[0].qs[16], 3);
        assert_eq!(b[0].bsums[0], 64 + 2 + 2); // -127 + 127 + 62 - 62 + 64 + 0 + 2 + 0 + 2
        assert_eq!(b[0].bsums[1], 3);
        assert!(b[0].bsums[2..].iter().all(|&s| s == 0));
        assert_eq!(b[1].d, 1.0 / (-127.0f32 / 8.0));
        assert_eq!(&b[1].qs[..4], &[-127, 64, -16, 0]); // -63.5 -> -64, 15.875 -> 16
        assert_eq!(b[1].bsums[0], -127 + 64 - 16);
    }
}

// ---------------------------------------------------------------------------
// Fixtures from gguf-py (tools/gen-quant-fixtures.py)
// ---------------------------------------------------------------------------

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant")
}

fn read_f32s(p: &PathBuf) -> Vec<f32> {
    std::fs::read(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn ulp_diff(a: f32, b: f32) -> u32 {
    if a == b {
        return 0;
    }
    let (ia, ib) = (a.to_bits() as i32, b.to_bits() as i32);
    let key = |i: i32| if i < 0 { i32::MIN.wrapping_sub(i) } else { i };
    key(ia).abs_diff(key(ib))
}

#[test]
fn dequantize_matches_gguf_py() {
    let dir = fixture_dir();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let cases = manifest.as_array().unwrap();
    let mut seen = std::collections::HashSet::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let ty_name = c["type"].as_str().unwrap();
        let ty = GgmlType::ALL
            .into_iter()
            .find(|t| t.name() == ty_name)
            .unwrap_or_else(|| panic!("unknown type {ty_name}"));
        seen.insert(ty);
        let n = c["n"].as_u64().unwrap() as usize;
        let raw = std::fs::read(dir.join(c["weights"].as_str().unwrap())).unwrap();
        let want = read_f32s(&dir.join(c["dequant"].as_str().unwrap()));
        assert_eq!(want.len(), n);
        let (buf, range) = misaligned(&raw);
        let mut got = vec![0.0f32; n];
        dequantize_row(ty, &buf[range], &mut got);
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!(
                ulp_diff(g, w) <= 1,
                "{name} ({ty}) weight {i}: ours {g:e} vs gguf-py {w:e}"
            );
        }
    }
    for ty in GgmlType::WEIGHTS {
        assert!(seen.contains(&ty), "no fixture for {ty}");
    }
}

#[test]
fn q8_0_quantization_matches_gguf_py() {
    let dir = fixture_dir();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("act_q8_0.json")).unwrap()).unwrap();
    let n = meta["n"].as_u64().unwrap() as usize;
    let x = read_f32s(&dir.join(meta["x"].as_str().unwrap()));
    let want = std::fs::read(dir.join(meta["blocks"].as_str().unwrap())).unwrap();
    assert_eq!(x.len(), n);
    assert_eq!(want.len(), n / 32 * std::mem::size_of::<BlockQ8_0>());
    for k in kernel_sets() {
        let mut a = Acts::new();
        k.quantize(ActKind::Q8_0, &x, n, &mut a);
        let got = row_bytes(a.row(0));
        for (b, (g, w)) in got.chunks(34).zip(want.chunks(34)).enumerate() {
            assert_eq!(g, w, "{} block {b}", k.path());
        }
    }
}

/// The AVX-512 K-quant kernels (two groups per `vpdpwssd` step) sum the same integers as the
/// AVX2 ones, so their results are bit-identical; checked where both paths run.
#[test]
fn avx512_k_quants_bit_identical_to_avx2() {
    let caps = CpuCaps::detect();
    let (Ok(a2), Ok(a5)) = (
        DotKernels::select(&caps, Some(KernelPath::Avx2)),
        DotKernels::select(&caps, Some(KernelPath::Avx512)),
    ) else {
        // Nothing to compare on a CPU without both paths; the per-path tests still ran.
        return;
    };
    let mut rng = StdRng::seed_from_u64(5150);
    for ty in [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
        for nb in [1, 2, 3, 5] {
            let n = nb * 256;
            let w = random_row(ty, nb, &mut rng);
            let x = random_acts(n, &mut rng);
            let mut acts = Acts::new();
            a2.quantize(ty.act_kind(), &x, n, &mut acts);
            let (r2, r5) = (
                a2.dot(ty, &w, acts.row(0), n),
                a5.dot(ty, &w, acts.row(0), n),
            );
            assert_eq!(r2.to_bits(), r5.to_bits(), "{ty} nb={nb}: {r2} vs {r5}");
        }
    }
}
