use torchless::backend::cpu::gelu512::{expm1_16, tanh16};
fn main() {
    let step: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1);
    let (mut bad_t, mut bad_e, mut n) = (0u64, 0u64, 0u64);
    let mut b: u64 = 0;
    while b < (1u64 << 32) {
        let mut x = [0f32; 16];
        for (j, v) in x.iter_mut().enumerate() {
            *v = f32::from_bits(((b + j as u64 * step) & 0xffff_ffff) as u32);
        }
        let t = tanh16(&x).unwrap();
        let e = expm1_16(&x).unwrap();
        for j in 0..16 {
            let (rt, re) = (x[j].tanh(), x[j].exp_m1());
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            if !same(t[j], rt) {
                if bad_t < 10 {
                    eprintln!(
                        "tanh {:e} ({:#x}): {:e} vs {:e}",
                        x[j],
                        x[j].to_bits(),
                        t[j],
                        rt
                    );
                }
                bad_t += 1;
            }
            if !same(e[j], re) {
                if bad_e < 10 {
                    eprintln!(
                        "expm1 {:e} ({:#x}): {:e} vs {:e}",
                        x[j],
                        x[j].to_bits(),
                        e[j],
                        re
                    );
                }
                bad_e += 1;
            }
        }
        n += 16;
        b += 16 * step;
    }
    println!("{n} values: tanh mismatches {bad_t}, expm1 mismatches {bad_e}");
}
