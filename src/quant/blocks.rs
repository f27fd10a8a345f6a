//! `#[repr(C)]` block structs with ggml's exact layouts.
//!
//! Two families:
//! - Activation blocks ([`BlockQ8_0`], [`BlockQ8_1`], [`BlockQ8_K`]) live in buffers we
//!   allocate ourselves, so they use typed, naturally aligned fields. On a
//!   little-endian host their bytes are identical to ggml's `block_q8_*`.
//! - Weight block views (`WBlock*`) are made of byte arrays only, so their alignment
//!   is 1 and any `&[u8]` of the right length — e.g. a row straight from the memory
//!   map, at any address — can be viewed as a slice of them with [`weight_blocks`].
//!   Multi-byte fields are decoded with `from_le_bytes` (GGUF is little-endian).

use bytemuck::{Pod, Zeroable};
use half::{bf16, f16};

/// Values per block of the 32-wide formats.
pub const QK8_0: usize = 32;
/// Values per block of Q8_1.
pub const QK8_1: usize = 32;
/// Values per super-block of the K-quants.
pub const QK_K: usize = 256;

#[inline(always)]
pub fn f16_le(b: [u8; 2]) -> f32 {
    f16::from_le_bytes(b).to_f32()
}

#[inline(always)]
pub fn bf16_le(b: [u8; 2]) -> f32 {
    bf16::from_le_bytes(b).to_f32()
}

// ---------------------------------------------------------------------------
// Activation blocks
// ---------------------------------------------------------------------------

/// ggml `block_q8_0`: 32 int8 quants with an f16 scale.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK8_0],
}

/// ggml `block_q8_1`: 32 int8 quants, f16 scale `d` and `s = d * sum(qs)` (as f16).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; QK8_1],
}

/// ggml `block_q8_K`: 256 int8 quants, an f32 scale, and sums of each group of 16 quants.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

impl Default for BlockQ8_K {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

// ---------------------------------------------------------------------------
// Weight block views (alignment 1)
// ---------------------------------------------------------------------------

/// ggml `block_q4_0`: x = d * (q - 8).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ4_0 {
    pub d: [u8; 2],
    pub qs: [u8; 16],
}

/// ggml `block_q4_1`: x = d * q + m.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ4_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qs: [u8; 16],
}

/// ggml `block_q5_0`: x = d * (q - 16), the 5th bit of quant j is bit j of `qh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ5_0 {
    pub d: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// ggml `block_q5_1`: x = d * q + m.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ5_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// ggml `block_q8_0` as stored in a model file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ8_0 {
    pub d: [u8; 2],
    pub qs: [i8; 32],
}

/// ggml `block_q8_1` as stored in a file (not a GGUF weight type in practice).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ8_1 {
    pub d: [u8; 2],
    pub s: [u8; 2],
    pub qs: [i8; 32],
}

/// ggml `block_q2_K`: 16 sub-blocks of 16; x = d*(sc&15)*q - dmin*(sc>>4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ2_K {
    pub scales: [u8; 16],
    pub qs: [u8; 64],
    pub d: [u8; 2],
    pub dmin: [u8; 2],
}

/// ggml `block_q3_K`: 16 sub-blocks of 16 with 6-bit signed scales; x = d*(sc-32)*(q-4*!hbit).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ3_K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: [u8; 2],
}

/// ggml `block_q4_K`: 8 sub-blocks of 32 with 6-bit scales and mins; x = d*sc*q - dmin*m.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ4_K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}

/// ggml `block_q5_K`: as Q4_K plus one high bit per quant.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ5_K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}

/// ggml `block_q6_K`: 16 sub-blocks of 16 with int8 scales; x = d*sc*(q-32).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ6_K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: [u8; 2],
}

/// ggml `block_q8_K` as bytes (activation-only in ggml; here for completeness).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ8_K {
    pub d: [u8; 4],
    pub qs: [i8; 256],
    pub bsums: [[u8; 2]; 16],
}

const _: () = {
    assert!(std::mem::size_of::<BlockQ8_0>() == 34);
    assert!(std::mem::size_of::<BlockQ8_1>() == 36);
    assert!(std::mem::size_of::<BlockQ8_K>() == 292);
    assert!(std::mem::size_of::<WBlockQ4_0>() == 18);
    assert!(std::mem::size_of::<WBlockQ4_1>() == 20);
    assert!(std::mem::size_of::<WBlockQ5_0>() == 22);
    assert!(std::mem::size_of::<WBlockQ5_1>() == 24);
    assert!(std::mem::size_of::<WBlockQ8_0>() == 34);
    assert!(std::mem::size_of::<WBlockQ8_1>() == 36);
    assert!(std::mem::size_of::<WBlockQ2_K>() == 84);
    assert!(std::mem::size_of::<WBlockQ3_K>() == 110);
    assert!(std::mem::size_of::<WBlockQ4_K>() == 144);
    assert!(std::mem::size_of::<WBlockQ5_K>() == 176);
    assert!(std::mem::size_of::<WBlockQ6_K>() == 210);
    assert!(std::mem::size_of::<WBlockQ8_K>() == 292);
    assert!(std::mem::align_of::<WBlockQ4_0>() == 1);
    assert!(std::mem::align_of::<WBlockQ4_1>() == 1);
    assert!(std::mem::align_of::<WBlockQ5_0>() == 1);
    assert!(std::mem::align_of::<WBlockQ5_1>() == 1);
    assert!(std::mem::align_of::<WBlockQ8_0>() == 1);
    assert!(std::mem::align_of::<WBlockQ8_1>() == 1);
    assert!(std::mem::align_of::<WBlockQ2_K>() == 1);
    assert!(std::mem::align_of::<WBlockQ3_K>() == 1);
    assert!(std::mem::align_of::<WBlockQ4_K>() == 1);
    assert!(std::mem::align_of::<WBlockQ5_K>() == 1);
    assert!(std::mem::align_of::<WBlockQ6_K>() == 1);
    assert!(std::mem::align_of::<WBlockQ8_K>() == 1);
};

/// Marker for the alignment-1 weight block views.
pub trait WeightBlock: Pod {}
impl WeightBlock for WBlockQ4_0 {}
impl WeightBlock for WBlockQ4_1 {}
impl WeightBlock for WBlockQ5_0 {}
impl WeightBlock for WBlockQ5_1 {}
impl WeightBlock for WBlockQ8_0 {}
impl WeightBlock for WBlockQ8_1 {}
impl WeightBlock for WBlockQ2_K {}
impl WeightBlock for WBlockQ3_K {}
impl WeightBlock for WBlockQ4_K {}
impl WeightBlock for WBlockQ5_K {}
impl WeightBlock for WBlockQ6_K {}
impl WeightBlock for WBlockQ8_K {}

/// View raw weight bytes (any address) as blocks. Panics when `bytes.len()` is not a
/// whole number of blocks.
#[inline]
pub fn weight_blocks<B: WeightBlock>(bytes: &[u8]) -> &[B] {
    assert!(
        bytes.len().is_multiple_of(std::mem::size_of::<B>()),
        "weight row of {} bytes is not a whole number of {}-byte blocks",
        bytes.len(),
        std::mem::size_of::<B>()
    );
    // Alignment of B is 1 and the length divides, so this never fails.
    bytemuck::cast_slice(bytes)
}

macro_rules! d_accessors {
    ($($t:ty),*) => {$(
        impl $t {
            /// The f16 block scale as f32.
            #[inline(always)]
            pub fn d(&self) -> f32 {
                f16_le(self.d)
            }
        }
    )*};
}
d_accessors!(
    WBlockQ4_0, WBlockQ4_1, WBlockQ5_0, WBlockQ5_1, WBlockQ8_0, WBlockQ8_1, WBlockQ2_K, WBlockQ3_K,
    WBlockQ4_K, WBlockQ5_K, WBlockQ6_K
);

impl WBlockQ4_1 {
    #[inline(always)]
    pub fn m(&self) -> f32 {
        f16_le(self.m)
    }
}
impl WBlockQ5_1 {
    #[inline(always)]
    pub fn m(&self) -> f32 {
        f16_le(self.m)
    }
    #[inline(always)]
    pub fn qh(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }
}
impl WBlockQ5_0 {
    #[inline(always)]
    pub fn qh(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }
}
impl WBlockQ8_1 {
    #[inline(always)]
    pub fn s(&self) -> f32 {
        f16_le(self.s)
    }
}
impl WBlockQ2_K {
    #[inline(always)]
    pub fn dmin(&self) -> f32 {
        f16_le(self.dmin)
    }
}
impl WBlockQ4_K {
    #[inline(always)]
    pub fn dmin(&self) -> f32 {
        f16_le(self.dmin)
    }
}
impl WBlockQ5_K {
    #[inline(always)]
    pub fn dmin(&self) -> f32 {
        f16_le(self.dmin)
    }
}
impl WBlockQ8_K {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }
    #[inline(always)]
    pub fn bsum(&self, j: usize) -> i16 {
        i16::from_le_bytes(self.bsums[j])
    }
}

/// Unpack the 12-byte Q4_K/Q5_K scale field into 8 six-bit scales and 8 six-bit mins
/// (ggml's `get_scale_min_k4` for j = 0..8).
#[inline(always)]
pub fn unpack_scales_k4(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..4 {
        sc[j] = q[j] & 63;
        m[j] = q[j + 4] & 63;
    }
    for j in 4..8 {
        sc[j] = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        m[j] = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
    (sc, m)
}

/// Unpack the 12-byte Q3_K scale field into 16 signed scales (already minus 32).
#[inline(always)]
pub fn unpack_scales_q3k(q: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for j in 0..16 {
        // Low 4 bits: bytes 0..8, low nibble for j < 8, high nibble for j >= 8.
        let lo = if j < 8 { q[j] & 0xF } else { q[j - 8] >> 4 };
        // High 2 bits: byte 8 + (j % 4), bit pair j / 4.
        let hi = (q[8 + (j % 4)] >> (2 * (j / 4))) & 3;
        out[j] = ((lo | (hi << 4)) as i8) - 32;
    }
    out
}
