//! [`GgmlType`] and [`ActKind`]: ids, names, block geometry and the activation
//! format each weight type's fused dot consumes.

use std::fmt;

/// A ggml tensor element type (ids as in ggml.h).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// IEEE f32, little-endian (id 0).
    F32,
    /// IEEE half precision, little-endian (id 1).
    F16,
    /// bfloat16, little-endian (id 30).
    BF16,
    /// 32 4-bit quants with an f16 scale, x = d * (q - 8); 18 bytes per block (id 2).
    Q4_0,
    /// 32 4-bit quants with f16 scale and min, x = d * q + m; 20 bytes per block (id 3).
    Q4_1,
    /// 32 5-bit quants with an f16 scale, x = d * (q - 16); 22 bytes per block (id 6).
    Q5_0,
    /// 32 5-bit quants with f16 scale and min, x = d * q + m; 24 bytes per block (id 7).
    Q5_1,
    /// 32 int8 quants with an f16 scale; 34 bytes per block (id 8).
    Q8_0,
    /// 32 int8 quants with f16 scale and scaled sum; 36 bytes per block (id 9).
    /// An activation format in ggml, not seen as a model weight.
    Q8_1,
    /// K-quant: 256 2-bit quants in 16 sub-blocks with 4-bit scales and mins; 84 bytes (id 10).
    Q2_K,
    /// K-quant: 256 3-bit quants in 16 sub-blocks with 6-bit scales; 110 bytes (id 11).
    Q3_K,
    /// K-quant: 256 4-bit quants in 8 sub-blocks with 6-bit scales and mins; 144 bytes (id 12).
    Q4_K,
    /// K-quant: 256 5-bit quants in 8 sub-blocks with 6-bit scales and mins; 176 bytes (id 13).
    Q5_K,
    /// K-quant: 256 6-bit quants in 16 sub-blocks with int8 scales; 210 bytes (id 14).
    Q6_K,
    /// 256 int8 quants with an f32 scale and 16 group sums; 292 bytes (id 15).
    /// An activation format in ggml, not seen as a model weight.
    Q8_K,
    /// Plain int8 (ggml id 24). As a weight it comes from compressed-tensors w8a8 checkpoints
    /// with a separate per-output-row scale tensor; its elements dequantize to the bare integers.
    I8,
}

/// The format activations are converted into before a fused dot with a weight row.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActKind {
    /// Plain f32 activations (for F32/F16/BF16 weights).
    F32,
    /// [`BlockQ8_0`](super::BlockQ8_0) blocks (for Q4_0, Q5_0, Q8_0 weights).
    Q8_0,
    /// [`BlockQ8_1`](super::BlockQ8_1) blocks, which carry the block sum the weight min
    /// needs (for Q4_1, Q5_1 weights).
    Q8_1,
    /// [`BlockQ8_K`](super::BlockQ8_K) super-blocks (for all K-quant weights).
    Q8_K,
}

impl GgmlType {
    /// Every type this crate knows, in ggml id order.
    pub const ALL: [GgmlType; 15] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::BF16,
    ];

    /// The types that occur as model weights in GGUF files (everything except the
    /// activation-only Q8_1 and Q8_K).
    pub const WEIGHTS: [GgmlType; 13] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    /// The type with ggml id `id` (the `ggml_type` stored per tensor in GGUF), or None for
    /// ids this crate does not support (removed types, IQ*, I8..I64, ...).
    pub fn from_ggml_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            9 => GgmlType::Q8_1,
            10 => GgmlType::Q2_K,
            11 => GgmlType::Q3_K,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            15 => GgmlType::Q8_K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// The ggml id (inverse of [`GgmlType::from_ggml_id`]).
    pub fn ggml_id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q8_1 => 9,
            GgmlType::Q2_K => 10,
            GgmlType::Q3_K => 11,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::Q8_K => 15,
            GgmlType::BF16 => 30,
            GgmlType::I8 => 24,
        }
    }

    /// The name GGUF tooling uses (`GGMLQuantizationType` in gguf-py).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::Q8_K => "Q8_K",
            GgmlType::I8 => "I8",
        }
    }

    /// Weights per block.
    pub fn block_len(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::I8 => 1,
            GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q8_1 => 32,
            GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::Q8_K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::I8 => 1,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q8_1 => 36,
            GgmlType::Q2_K => 84,
            GgmlType::Q3_K => 110,
            GgmlType::Q4_K => 144,
            GgmlType::Q5_K => 176,
            GgmlType::Q6_K => 210,
            GgmlType::Q8_K => 292,
        }
    }

    /// Bytes of a row of `n` weights; None when `n` is not a whole number of blocks or overflows.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        let bl = self.block_len();
        if !n.is_multiple_of(bl) {
            return None;
        }
        (n / bl).checked_mul(self.block_bytes())
    }

    /// The activation format the fused dot for this weight type consumes (llama.cpp's vec_dot_type).
    /// I8 weights are not dotted through this table: their matmul quantizes each token row to
    /// int8 with its own scale (w8a8), so they report F32 input.
    pub fn act_kind(self) -> ActKind {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::I8 => ActKind::F32,
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => ActKind::Q8_0,
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 => ActKind::Q8_1,
            GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::Q8_K => ActKind::Q8_K,
        }
    }

    /// True for the block-quantized types (everything but F32/F16/BF16/I8).
    pub fn is_quantized(self) -> bool {
        self.block_len() > 1
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl ActKind {
    /// Values per activation block (1 for F32).
    pub fn block_len(self) -> usize {
        match self {
            ActKind::F32 => 1,
            ActKind::Q8_0 | ActKind::Q8_1 => 32,
            ActKind::Q8_K => 256,
        }
    }

    /// Short display name, matching the corresponding [`GgmlType`] name.
    pub fn name(self) -> &'static str {
        match self {
            ActKind::F32 => "F32",
            ActKind::Q8_0 => "Q8_0",
            ActKind::Q8_1 => "Q8_1",
            ActKind::Q8_K => "Q8_K",
        }
    }
}

impl fmt::Display for ActKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
