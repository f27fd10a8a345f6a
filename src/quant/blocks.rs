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

/// Decode a little-endian IEEE half (as stored in GGUF) to f32.
#[inline(always)]
pub fn f16_le(b: [u8; 2]) -> f32 {
    f16::from_le_bytes(b).to_f32()
}

/// Decode a little-endian bfloat16 (as stored in GGUF) to f32.
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
    /// Scale: value `j` is `d * qs[j]`.
    pub d: f16,
    /// The quants, in element order.
    pub qs: [i8; QK8_0],
}

/// ggml `block_q8_1`: 32 int8 quants, f16 scale `d` and `s = d * sum(qs)` (as f16).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_1 {
    /// Scale: value `j` is `d * qs[j]`.
    pub d: f16,
    /// `sum(qs) * d` (with `d` before its f16 rounding), stored as f16; lets the Q4_1/Q5_1 dots
    /// apply the weight min `m` once per block.
    pub s: f16,
    /// The quants, in element order.
    pub qs: [i8; QK8_1],
}

/// ggml `block_q8_K`: 256 int8 quants, an f32 scale, and sums of each group of 16 quants.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_K {
    /// Scale (f32, unlike the 32-wide formats): value `j` is `d * qs[j]`.
    pub d: f32,
    /// The quants, in element order.
    pub qs: [i8; QK_K],
    /// `bsums[g]` = sum of `qs[16 * g..16 * g + 16]`; the K-quant dots use them to apply the
    /// per-sub-block mins without touching the quants again.
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
    /// f16 scale, little-endian (read with [`WBlockQ4_0::d()`]).
    pub d: [u8; 2],
    /// 4-bit quants: low nibble of `qs[j]` is element `j`, high nibble is element `j + 16`.
    pub qs: [u8; 16],
}

/// ggml `block_q4_1`: x = d * q + m.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ4_1 {
    /// f16 scale, little-endian.
    pub d: [u8; 2],
    /// f16 min (offset added to every element), little-endian.
    pub m: [u8; 2],
    /// 4-bit quants, nibble layout as in [`WBlockQ4_0::qs`].
    pub qs: [u8; 16],
}

/// ggml `block_q5_0`: x = d * (q - 16), the 5th bit of quant j is bit j of `qh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ5_0 {
    /// f16 scale, little-endian.
    pub d: [u8; 2],
    /// Little-endian u32 of 5th bits: bit `j` belongs to element `j` (0..32).
    pub qh: [u8; 4],
    /// Low 4 bits of each quant, nibble layout as in [`WBlockQ4_0::qs`].
    pub qs: [u8; 16],
}

/// ggml `block_q5_1`: x = d * q + m.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ5_1 {
    /// f16 scale, little-endian.
    pub d: [u8; 2],
    /// f16 min, little-endian.
    pub m: [u8; 2],
    /// Little-endian u32 of 5th bits: bit `j` belongs to element `j` (0..32).
    pub qh: [u8; 4],
    /// Low 4 bits of each quant, nibble layout as in [`WBlockQ4_0::qs`].
    pub qs: [u8; 16],
}

/// ggml `block_q8_0` as stored in a model file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ8_0 {
    /// f16 scale, little-endian; x = d * q.
    pub d: [u8; 2],
    /// The quants, in element order.
    pub qs: [i8; 32],
}

/// ggml `block_q8_1` as stored in a file (not a GGUF weight type in practice).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ8_1 {
    /// f16 scale, little-endian; x = d * q.
    pub d: [u8; 2],
    /// f16 `d * sum(qs)`, little-endian.
    pub s: [u8; 2],
    /// The quants, in element order.
    pub qs: [i8; 32],
}

/// ggml `block_q2_K`: 16 sub-blocks of 16; x = d*(sc&15)*q - dmin*(sc>>4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ2_K {
    /// Per sub-block of 16: low nibble is the scale (times `d`), high nibble the min (times `dmin`).
    pub scales: [u8; 16],
    /// 2-bit quants. Each 128-element half `h` uses bytes `32h..32h + 32`; bit pair `2k` of byte
    /// `32h + l` is element `128h + 32k + l`.
    pub qs: [u8; 64],
    /// f16 super-block scale of the sub-block scales, little-endian.
    pub d: [u8; 2],
    /// f16 super-block scale of the sub-block mins, little-endian.
    pub dmin: [u8; 2],
}

/// ggml `block_q3_K`: 16 sub-blocks of 16 with 6-bit signed scales; x = d*(sc-32)*(q-4*!hbit).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ3_K {
    /// High bits: bit `k` of `hmask[l]` belongs to element `32k + l`; when it is *clear*, 4 is
    /// subtracted from the 2-bit quant.
    pub hmask: [u8; 32],
    /// Low 2 bits of each quant, same layout as [`WBlockQ2_K::qs`].
    pub qs: [u8; 64],
    /// 16 packed 6-bit scales biased by 32; decode with [`unpack_scales_q3k`].
    pub scales: [u8; 12],
    /// f16 super-block scale, little-endian.
    pub d: [u8; 2],
}

/// ggml `block_q4_K`: 8 sub-blocks of 32 with 6-bit scales and mins; x = d*sc*q - dmin*m.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ4_K {
    /// f16 super-block scale of the sub-block scales, little-endian.
    pub d: [u8; 2],
    /// f16 super-block scale of the sub-block mins, little-endian.
    pub dmin: [u8; 2],
    /// 8 six-bit scales and 8 six-bit mins, packed; decode with [`unpack_scales_k4`].
    pub scales: [u8; 12],
    /// 4-bit quants: byte `32j + l` holds element `64j + l` in its low nibble and element
    /// `64j + 32 + l` in its high nibble (`j` in 0..4).
    pub qs: [u8; 128],
}

/// ggml `block_q5_K`: as Q4_K plus one high bit per quant.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ5_K {
    /// f16 super-block scale of the sub-block scales, little-endian.
    pub d: [u8; 2],
    /// f16 super-block scale of the sub-block mins, little-endian.
    pub dmin: [u8; 2],
    /// 8 six-bit scales and 8 six-bit mins, packed; decode with [`unpack_scales_k4`].
    pub scales: [u8; 12],
    /// 5th bits: bit `k` of `qh[l]` belongs to element `32k + l`.
    pub qh: [u8; 32],
    /// Low 4 bits of each quant, same layout as [`WBlockQ4_K::qs`].
    pub qs: [u8; 128],
}

/// ggml `block_q6_K`: 16 sub-blocks of 16 with int8 scales; x = d*sc*(q-32).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ6_K {
    /// Low 4 bits. For 128-element half `h` and `l` in 0..32: `ql[64h + l]` holds elements
    /// `128h + l` (low nibble) and `128h + 64 + l` (high nibble); `ql[64h + 32 + l]` holds
    /// `128h + 32 + l` and `128h + 96 + l`.
    pub ql: [u8; 128],
    /// High 2 bits: bit pair `2k` of `qh[32h + l]` belongs to element `128h + 32k + l`.
    pub qh: [u8; 64],
    /// Signed scale per sub-block of 16 elements.
    pub scales: [i8; 16],
    /// f16 super-block scale, little-endian.
    pub d: [u8; 2],
}

/// ggml `block_q8_K` as bytes (activation-only in ggml; here for completeness).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WBlockQ8_K {
    /// f32 scale, little-endian.
    pub d: [u8; 4],
    /// The quants, in element order.
    pub qs: [i8; 256],
    /// Little-endian i16 sums of each group of 16 quants.
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
    /// The f16 block min as f32.
    #[inline(always)]
    pub fn m(&self) -> f32 {
        f16_le(self.m)
    }
}
impl WBlockQ5_1 {
    /// The f16 block min as f32.
    #[inline(always)]
    pub fn m(&self) -> f32 {
        f16_le(self.m)
    }
    /// The 5th bits as a u32 (bit `j` for element `j`).
    #[inline(always)]
    pub fn qh(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }
}
impl WBlockQ5_0 {
    /// The 5th bits as a u32 (bit `j` for element `j`).
    #[inline(always)]
    pub fn qh(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }
}
impl WBlockQ8_1 {
    /// The f16 `d * sum(qs)` as f32.
    #[inline(always)]
    pub fn s(&self) -> f32 {
        f16_le(self.s)
    }
}
impl WBlockQ2_K {
    /// The f16 super-block scale of the mins as f32.
    #[inline(always)]
    pub fn dmin(&self) -> f32 {
        f16_le(self.dmin)
    }
}
impl WBlockQ4_K {
    /// The f16 super-block scale of the mins as f32.
    #[inline(always)]
    pub fn dmin(&self) -> f32 {
        f16_le(self.dmin)
    }
}
impl WBlockQ5_K {
    /// The f16 super-block scale of the mins as f32.
    #[inline(always)]
    pub fn dmin(&self) -> f32 {
        f16_le(self.dmin)
    }
}
impl WBlockQ8_K {
    /// The f32 block scale.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }
    /// Sum of quants `16 * j..16 * j + 16`. Panics when `j >= 16`.
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
