//! RoPE (cos, sin) tables for device backends: computed on the host in f64 exactly as the CPU
//! does (every scaling mode lives in `RopeParams::table`), so a device only applies them and
//! rotates by the same f32 values as the CPU. Recent tables are kept on the device.

use std::sync::Arc;

use crate::model::config::RopeParams;

/// Distinct tables kept (Gemma 3 alternates two RoPE bases; the rest are stale steps).
const KEEP: usize = 4;

/// What determines a table.
#[derive(PartialEq)]
struct Key {
    pos0: usize,
    n_tok: usize,
    inv_freq: Vec<u64>,
    attn_factor: u64,
}

/// Device-side tables of recent calls; `T` is the backend's device buffer.
pub struct RopeTables<T> {
    entries: Vec<(Key, Arc<T>)>,
}

impl<T> Default for RopeTables<T> {
    fn default() -> Self {
        RopeTables {
            entries: Vec::new(),
        }
    }
}

impl<T> RopeTables<T> {
    /// The table `[n_tok][n_rot / 2][2]` of (cos, sin) × attention factor for positions
    /// `pos0..pos0 + n_tok`, uploaded by `upload` once per distinct table (`None`: the upload
    /// failed and the backend recorded why).
    pub fn get(
        &mut self,
        p: &RopeParams,
        pos0: usize,
        n_tok: usize,
        upload: impl FnOnce(&[f32]) -> Option<T>,
    ) -> Option<Arc<T>> {
        let (inv_freq, attn_factor) = p.table(pos0 + n_tok);
        let key = Key {
            pos0,
            n_tok,
            inv_freq: inv_freq.iter().map(|f| f.to_bits()).collect(),
            attn_factor: attn_factor.to_bits(),
        };
        if let Some((_, t)) = self.entries.iter().find(|(k, _)| *k == key) {
            return Some(t.clone());
        }
        let cs = table_values(&inv_freq, attn_factor, pos0, n_tok);
        let table = Arc::new(upload(&cs)?);
        if self.entries.len() >= KEEP {
            self.entries.remove(0);
        }
        self.entries.push((key, table.clone()));
        Some(table)
    }
}

/// The table `[n_tok][n_rot / 2][2]` of (cos, sin) × attention factor of `p` for positions
/// `pos0..pos0 + n_tok` (what [`RopeTables::get`] uploads; a recorded decode step writes it into
/// its step inputs instead).
pub fn rope_table(p: &RopeParams, pos0: usize, n_tok: usize) -> Vec<f32> {
    let (inv_freq, attn_factor) = p.table(pos0 + n_tok);
    table_values(&inv_freq, attn_factor, pos0, n_tok)
}

fn table_values(inv_freq: &[f64], attn_factor: f64, pos0: usize, n_tok: usize) -> Vec<f32> {
    let mut cs = Vec::with_capacity(n_tok * inv_freq.len() * 2);
    for t in 0..n_tok {
        let pos = (pos0 + t) as f64;
        for f in inv_freq {
            let th = pos * f;
            cs.push((th.cos() * attn_factor) as f32);
            cs.push((th.sin() * attn_factor) as f32);
        }
    }
    cs
}
