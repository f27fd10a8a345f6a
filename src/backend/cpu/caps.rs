//! Explicit CPU capability detection and the choice of CPU kernel path.

use std::fmt;
use std::str::FromStr;

/// Environment variable that forces a CPU kernel path (`scalar`, `avx2`, `avx512`, or `auto`).
pub const CPU_PATH_ENV: &str = "TORCHLESS_CPU";

/// CPU features the kernels care about, detected at run time.
///
/// x86_64 flags are always false on other architectures and vice versa. Only the AVX2 and
/// AVX-512 F/BW/VL sets gate a kernel path today; the rest are reported by [`CpuCaps::describe`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuCaps {
    /// x86_64 AVX2 (256-bit integer SIMD).
    pub avx2: bool,
    /// x86_64 FMA3 fused multiply-add.
    pub fma: bool,
    /// x86_64 F16C half-precision conversions.
    pub f16c: bool,
    /// x86_64 AVX-512 Foundation.
    pub avx512f: bool,
    /// x86_64 AVX-512 byte/word instructions.
    pub avx512bw: bool,
    /// x86_64 AVX-512 vector-length extensions (128/256-bit forms).
    pub avx512vl: bool,
    /// x86_64 AVX-512 doubleword/quadword instructions.
    pub avx512dq: bool,
    /// x86_64 AVX-512 VNNI (`vpdpbusd` int8 dot products).
    pub avx512vnni: bool,
    /// x86_64 AVX-512 BF16 instructions.
    pub avx512bf16: bool,
    /// x86_64 AVX-VNNI (VEX-encoded int8 dot products).
    pub avxvnni: bool,
    /// aarch64 Advanced SIMD.
    pub neon: bool,
    /// aarch64 SDOT/UDOT (`dotprod`).
    pub dotprod: bool,
    /// aarch64 int8 matrix multiply (`i8mm`).
    pub i8mm: bool,
}

impl CpuCaps {
    /// Detect the features of the CPU we are running on.
    pub fn detect() -> CpuCaps {
        #[allow(unused_mut)]
        let mut c = CpuCaps::default();
        #[cfg(target_arch = "x86_64")]
        {
            c.avx2 = std::arch::is_x86_feature_detected!("avx2");
            c.fma = std::arch::is_x86_feature_detected!("fma");
            c.f16c = std::arch::is_x86_feature_detected!("f16c");
            c.avx512f = std::arch::is_x86_feature_detected!("avx512f");
            c.avx512bw = std::arch::is_x86_feature_detected!("avx512bw");
            c.avx512vl = std::arch::is_x86_feature_detected!("avx512vl");
            c.avx512dq = std::arch::is_x86_feature_detected!("avx512dq");
            c.avx512vnni = std::arch::is_x86_feature_detected!("avx512vnni");
            c.avx512bf16 = std::arch::is_x86_feature_detected!("avx512bf16");
            c.avxvnni = std::arch::is_x86_feature_detected!("avxvnni");
        }
        #[cfg(target_arch = "aarch64")]
        {
            c.neon = std::arch::is_aarch64_feature_detected!("neon");
            c.dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
            c.i8mm = std::arch::is_aarch64_feature_detected!("i8mm");
        }
        c
    }

    /// The features the [`KernelPath::Avx2`] kernels need (AVX2 + FMA + F16C).
    pub fn has_avx2_path(&self) -> bool {
        self.avx2 && self.fma && self.f16c
    }

    /// The features the [`KernelPath::Avx512`] kernels need (the AVX2 set plus
    /// AVX-512 F/BW/VL, since that path falls back to AVX2 kernels where it has none).
    pub fn has_avx512_path(&self) -> bool {
        self.has_avx2_path() && self.avx512f && self.avx512bw && self.avx512vl
    }

    /// Whether this CPU can run `path`; `Err` names the first missing feature.
    pub fn supports(&self, path: KernelPath) -> Result<(), &'static str> {
        let need: &[(&'static str, bool)] = match path {
            KernelPath::Scalar => &[],
            KernelPath::Avx2 => &[("avx2", self.avx2), ("fma", self.fma), ("f16c", self.f16c)],
            KernelPath::Avx512 => &[
                ("avx2", self.avx2),
                ("fma", self.fma),
                ("f16c", self.f16c),
                ("avx512f", self.avx512f),
                ("avx512bw", self.avx512bw),
                ("avx512vl", self.avx512vl),
            ],
        };
        match need.iter().find(|(_, have)| !have) {
            Some((name, _)) => Err(name),
            None => Ok(()),
        }
    }

    /// The detected features as a space-separated list, e.g. `"x86_64: avx2 fma f16c"`.
    pub fn describe(&self) -> String {
        let flags = [
            ("avx2", self.avx2),
            ("fma", self.fma),
            ("f16c", self.f16c),
            ("avx512f", self.avx512f),
            ("avx512bw", self.avx512bw),
            ("avx512vl", self.avx512vl),
            ("avx512dq", self.avx512dq),
            ("avx512vnni", self.avx512vnni),
            ("avx512bf16", self.avx512bf16),
            ("avxvnni", self.avxvnni),
            ("neon", self.neon),
            ("dotprod", self.dotprod),
            ("i8mm", self.i8mm),
        ];
        let have: Vec<&str> = flags.iter().filter(|(_, h)| *h).map(|(n, _)| *n).collect();
        let list = if have.is_empty() {
            "no SIMD extensions used by torchless".to_string()
        } else {
            have.join(" ")
        };
        format!("{}: {}", std::env::consts::ARCH, list)
    }
}

impl fmt::Display for CpuCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A family of CPU kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelPath {
    /// Portable scalar reference kernels.
    Scalar,
    /// AVX2 + FMA + F16C kernels.
    Avx2,
    /// AVX-512 (F/BW/VL) kernels; types without one use the AVX2 kernel.
    Avx512,
}

impl KernelPath {
    /// Every path, slowest to fastest.
    pub const ALL: [KernelPath; 3] = [KernelPath::Scalar, KernelPath::Avx2, KernelPath::Avx512];

    /// The fastest path `caps` supports.
    pub fn best(caps: &CpuCaps) -> KernelPath {
        if caps.has_avx512_path() {
            KernelPath::Avx512
        } else if caps.has_avx2_path() {
            KernelPath::Avx2
        } else {
            KernelPath::Scalar
        }
    }

    /// The name `TORCHLESS_CPU` accepts and [`Display`](fmt::Display) prints.
    pub fn as_str(self) -> &'static str {
        match self {
            KernelPath::Scalar => "scalar",
            KernelPath::Avx2 => "avx2",
            KernelPath::Avx512 => "avx512",
        }
    }
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KernelPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Ok(KernelPath::Scalar),
            "avx2" => Ok(KernelPath::Avx2),
            "avx512" | "avx-512" => Ok(KernelPath::Avx512),
            _ => Err(format!(
                "unknown CPU kernel path {s:?}: expected one of scalar, avx2, avx512"
            )),
        }
    }
}

/// The kernel path forced by `TORCHLESS_CPU`: `Ok(None)` when unset, empty or `auto`,
/// `Err` naming the bad value otherwise.
pub fn requested_path() -> Result<Option<KernelPath>, String> {
    match std::env::var(CPU_PATH_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(format!(
            "{CPU_PATH_ENV}={v:?} is not valid UTF-8: expected one of scalar, avx2, avx512, auto"
        )),
        Ok(v) => parse_request(&v),
    }
}

/// Parse a `TORCHLESS_CPU` value (see [`requested_path`]).
pub fn parse_request(v: &str) -> Result<Option<KernelPath>, String> {
    let t = v.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    t.parse::<KernelPath>().map(Some).map_err(|_| {
        format!("{CPU_PATH_ENV}={v:?} is not a CPU kernel path: expected one of scalar, avx2, avx512, auto")
    })
}
