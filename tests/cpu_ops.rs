//! CPU ops against direct, naive formulas (the op-by-op harness the GPU backends will share
//! starts from these references).

use torchless::backend::cpu::attention::AttnScratch;
use torchless::backend::cpu::caps::{CpuCaps, KernelPath};
use torchless::backend::cpu::{activation, attention, norm, rope};
use torchless::backend::{AttnShape, NormSpec};
use torchless::model::arch::{Activation, NormKind, RopeLayout};
use torchless::model::config::RopeParams;
use torchless::model::rope::RopeScaling;
use torchless::quant::GgmlType;

fn vector(v: &[f32]) -> norm::Vector<'_> {
    norm::Vector::new(GgmlType::F32, bytemuck::cast_slice(v))
}

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn close(a: &[f32], b: &[f32], tol: f32) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "[{i}] {x} vs {y}");
    }
}

#[test]
fn rms_and_layer_norm_match_the_formula() {
    let mut s = 1;
    let dim = 48;
    let x: Vec<f32> = (0..3 * dim).map(|_| lcg(&mut s) * 4.0).collect();
    let w: Vec<f32> = (0..dim).map(|_| lcg(&mut s)).collect();
    let b: Vec<f32> = (0..dim).map(|_| lcg(&mut s)).collect();
    for kind in [NormKind::Rms, NormKind::Layer] {
        let mut out = vec![0.0; x.len()];
        let bias = (kind == NormKind::Layer).then_some(&b[..]);
        let spec = NormSpec {
            kind,
            eps: 1e-5,
            w_offset: 0.0,
        };
        norm::norm_rows(spec, &x, vector(&w), bias.map(vector), dim, &mut out);
        let mut want = vec![0.0; x.len()];
        for r in 0..3 {
            let row = &x[r * dim..(r + 1) * dim];
            let mean = if kind == NormKind::Layer {
                row.iter().sum::<f32>() / dim as f32
            } else {
                0.0
            };
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / dim as f32;
            for i in 0..dim {
                want[r * dim + i] =
                    (row[i] - mean) / (var + 1e-5).sqrt() * w[i] + bias.map_or(0.0, |b| b[i]);
            }
        }
        close(&out, &want, 1e-5);
        let mut inplace = x.clone();
        if kind == NormKind::Rms {
            norm::norm_rows_inplace(spec, &mut inplace, vector(&w), dim);
            close(&inplace, &want, 1e-5);
        }
    }
}

#[test]
fn rope_rotates_the_right_pairs() {
    let (heads, hd, n_rot) = (2, 8, 6);
    let p = RopeParams {
        base: 100.0,
        n_rot,
        scaling: RopeScaling::None,
    };
    let mut s = 3;
    let x: Vec<f32> = (0..heads * hd).map(|_| lcg(&mut s)).collect();
    for layout in [RopeLayout::Adjacent, RopeLayout::Halves] {
        let mut y = x.clone();
        rope::rope(&mut y, 1, heads, hd, 5, layout, &p);
        for h in 0..heads {
            let (xh, yh) = (&x[h * hd..(h + 1) * hd], &y[h * hd..(h + 1) * hd]);
            for i in 0..n_rot / 2 {
                let th = 5.0f64 * 100f64.powf(-2.0 * i as f64 / n_rot as f64);
                let (a, b) = match layout {
                    RopeLayout::Adjacent => (2 * i, 2 * i + 1),
                    RopeLayout::Halves => (i, i + n_rot / 2),
                };
                let (c, sn) = (th.cos() as f32, th.sin() as f32);
                close(
                    &[yh[a], yh[b]],
                    &[xh[a] * c - xh[b] * sn, xh[a] * sn + xh[b] * c],
                    1e-5,
                );
            }
            // Dimensions past n_rot are untouched (partial rotary).
            assert_eq!(&yh[n_rot..], &xh[n_rot..]);
        }
        let mut z = x.clone();
        rope::rope(&mut z, 1, heads, hd, 0, layout, &p);
        assert_eq!(z, x, "position 0 is the identity");
    }
}

#[test]
fn attention_is_causal_grouped_and_windowed() {
    let (n_head, n_kv, hd, n) = (4, 2, 8, 5);
    let mut s = 9;
    let q: Vec<f32> = (0..n * n_head * hd).map(|_| lcg(&mut s)).collect();
    let k: Vec<f32> = (0..n * n_kv * hd).map(|_| lcg(&mut s)).collect();
    let v: Vec<f32> = (0..n * n_kv * hd).map(|_| lcg(&mut s)).collect();
    let mut kv = attention::CpuKvCache::new(1, 8, n_kv * hd, n_kv * hd);
    kv.store(0, 0, n, &k, &v);
    let f16r = |x: f32| half::f16::from_f32(x).to_f32();
    for (window, softcap) in [
        (None, None),
        (Some(2), None),
        (Some(1), None),
        (None, Some(0.3)),
    ] {
        let shape = AttnShape {
            n_head,
            n_head_kv: n_kv,
            head_dim: hd,
            head_dim_v: hd,
            scale: 0.5,
            window,
            softcap,
        };
        let simd_ok = CpuCaps::detect().supports(KernelPath::Avx2).is_ok();
        let mut scratch = AttnScratch::default();
        let mut out = vec![0.0; n * n_head * hd];
        attention::attention(&q, &kv, 0, 0, n, &shape, false, &mut scratch, &mut out);
        // The AVX2 build of the same loops, and single-token calls at each position (decode),
        // give bit-identical rows.
        let width = n_head * hd;
        for simd in [false, true].into_iter().filter(|&s| !s || simd_ok) {
            let mut batch = vec![0.0; n * width];
            attention::attention(&q, &kv, 0, 0, n, &shape, simd, &mut scratch, &mut batch);
            assert_eq!(batch, out, "simd={simd} batch");
            for t in 0..n {
                let mut one = vec![0.0; width];
                let qt = &q[t * width..(t + 1) * width];
                attention::attention(qt, &kv, 0, t, 1, &shape, simd, &mut scratch, &mut one);
                assert_eq!(one, out[t * width..(t + 1) * width], "simd={simd} pos {t}");
            }
        }
        for t in 0..n {
            for h in 0..n_head {
                let g = h / (n_head / n_kv);
                let lo = window.map_or(0, |w| (t + 1).saturating_sub(w));
                let qh = &q[(t * n_head + h) * hd..][..hd];
                let sc: Vec<f32> = (lo..=t)
                    .map(|j| {
                        (0..hd)
                            .map(|d| f16r(qh[d]) * f16r(k[(j * n_kv + g) * hd + d]))
                            .sum::<f32>()
                            * 0.5
                    })
                    .map(|x| softcap.map_or(x, |c: f32| c * (x / c).tanh()))
                    .collect();
                let m = sc.iter().cloned().fold(f32::MIN, f32::max);
                let e: Vec<f32> = sc.iter().map(|x| (x - m).exp()).collect();
                let z: f32 = e.iter().sum();
                let want: Vec<f32> = (0..hd)
                    .map(|d| {
                        (lo..=t)
                            .zip(&e)
                            .map(|(j, p)| p / z * f16r(v[(j * n_kv + g) * hd + d]))
                            .sum()
                    })
                    .collect();
                close(&out[(t * n_head + h) * hd..][..hd], &want, 1e-5);
            }
        }
    }
}

#[test]
fn gated_activations() {
    let g = [-2.0f32, 0.0, 1.5];
    let u = [1.0f32, 2.0, -1.0];
    let mut o = [0.0; 3];
    activation::glu(Activation::Silu, &g, &u, &mut o);
    let silu = |x: f32| x / (1.0 + (-x).exp());
    close(&o, &[silu(-2.0), 0.0, -silu(1.5)], 1e-6);
    activation::glu(Activation::GeluTanh, &g, &u, &mut o);
    // GELU-tanh reference values (PyTorch gelu(approximate="tanh")).
    close(&o, &[-0.045_402_3, 0.0, -1.399_572_8], 1e-5);
}

/// The AVX-512 GELU is a lane-wise port of the C library's `tanhf` / `expm1f` and must equal
/// them bit for bit (a different last bit moves the parity numbers; see `gelu512.rs`). Checked
/// here on every 251st f32 bit pattern (17 million values: every sign, exponent and NaN/inf
/// class) plus every float in [-16, 16) at a step of 2^-12, where GELU's arguments live. The
/// whole 2^32 range was checked once with `cargo run --release --example tanh_exhaustive`.
#[test]
fn avx512_tanh_and_gelu_bit_identical_to_libm() {
    use torchless::backend::cpu::gelu512::{expm1_16, tanh16};
    let caps = CpuCaps::detect();
    if caps.supports(KernelPath::Avx512).is_err() {
        // No AVX-512 here: the scalar GELU (libm itself) is the only path, so nothing differs.
        assert!(tanh16(&[0.0; 16]).is_none() || std::arch::is_x86_feature_detected!("avx512f"));
        return;
    }
    let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    let check = |x: [f32; 16]| {
        let (t, e) = (tanh16(&x).unwrap(), expm1_16(&x).unwrap());
        for j in 0..16 {
            assert!(
                same(t[j], x[j].tanh()),
                "tanh({:e} = {:#x}): {:e} vs libm {:e}",
                x[j],
                x[j].to_bits(),
                t[j],
                x[j].tanh()
            );
            assert!(
                same(e[j], x[j].exp_m1()),
                "expm1({:e} = {:#x}): {:e} vs libm {:e}",
                x[j],
                x[j].to_bits(),
                e[j],
                x[j].exp_m1()
            );
        }
    };
    let mut b = 0u64;
    while b < 1 << 32 {
        check(std::array::from_fn(|j| {
            f32::from_bits(((b + 251 * j as u64) & 0xffff_ffff) as u32)
        }));
        b += 251 * 16;
    }
    let mut x = -16.0f32;
    while x < 16.0 {
        check(std::array::from_fn(|j| x + j as f32 / 4096.0));
        x += 16.0 / 4096.0;
    }
    // And the whole GELU-gated product, tail included, against the scalar path.
    let k =
        torchless::backend::cpu::dot::DotKernels::select(&caps, Some(KernelPath::Avx512)).unwrap();
    let n = 16 * 300 + 7;
    let g: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.7318).sin() * 6.0).collect();
    let u: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.2113).cos()).collect();
    let (mut fast, mut slow) = (vec![0f32; n], vec![0f32; n]);
    activation::glu_on(k.path(), Activation::GeluTanh, &g, &u, &mut fast);
    activation::glu(Activation::GeluTanh, &g, &u, &mut slow);
    assert_eq!(
        fast.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        slow.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let mut x1 = g.clone();
    let mut x2 = g.clone();
    activation::unary_on(k.path(), Activation::GeluTanh, &mut x1);
    activation::unary(Activation::GeluTanh, &mut x2);
    assert_eq!(
        x1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        x2.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}
