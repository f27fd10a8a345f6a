//! ggml weight types: block layouts, scalar reference dequantizers, and the
//! activation formats that the fused dequant-dot kernels consume.
//!
//! Layout of this module:
//! - [`types`]: [`GgmlType`] / [`ActKind`] metadata (ids, block sizes, vec_dot_type).
//! - [`blocks`]: `#[repr(C)]` block structs. Activation blocks ([`BlockQ8_0`],
//!   [`BlockQ8_1`], [`BlockQ8_K`]) are naturally aligned and live in our own buffers;
//!   weight block views (`WBlock*`) consist only of byte arrays (alignment 1), so a
//!   row straight from the memory map can be viewed as blocks without any alignment
//!   assumption, and every scale is read with `from_le_bytes`.
//! - [`dequant`]: scalar reference dequantizers (bit-exact with ggml's `dequantize_row_*`).
//! - [`act`]: activation quantization (bit-exact with ggml's `quantize_row_q8_*_ref`)
//!   and the [`Acts`] / [`ActRow`] containers.
//! - [`dot_ref`]: scalar reference fused dots (integer dot of weight quants with
//!   Q8 activation quants per block, like ggml's `ggml_vec_dot_*_generic`).

pub mod act;
pub mod blocks;
pub mod dequant;
pub mod dot_ref;
pub mod types;

pub use act::{quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k, ActBufMut, ActRow, Acts};
pub use blocks::{BlockQ8_0, BlockQ8_1, BlockQ8_K, QK8_0, QK8_1, QK_K};
pub use dequant::dequantize_row;
pub use types::{ActKind, GgmlType};
