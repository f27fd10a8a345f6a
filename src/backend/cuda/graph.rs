//! Decode steps recorded as CUDA graphs and replayed.
//!
//! A single-token step is about fifteen launches per layer. Issued one by one from the host, their
//! launch cost was about half of a 7B-shaped decode step on an H100 (docs/performance.md). The
//! executor hands every decode step to [`Backend::decode_step`](crate::backend::Backend) with a
//! key naming its state's buffers, and per key this module:
//!
//! 1. **warms up** on the first step: the ops run eagerly while the RoPE parameter sets they use
//!    are noted. Every buffer a step needs (logits, attention scratch) exists afterwards.
//! 2. **records** on the second step: the step inputs (token, position, one RoPE table per
//!    parameter set) are written to a small device buffer, and the ops are captured into a graph
//!    in which the embedding, RoPE, KV store and attention read those inputs instead of host
//!    values. Then the graph is launched.
//! 3. **replays** every later step: the inputs are written (one small copy), the graph launched.
//!
//! Eager steps run the same kernels with the same launch shapes: attention's split count depends
//! on the context size only, and each split's key range is derived on the device from the
//! position. A replayed step is therefore bit-identical to an eager one; tests/cuda_device.rs
//! checks it. `TORCHLESS_CUDA_GRAPH=off` runs every step eagerly.

use std::sync::Arc;

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaGraph, CudaSlice, CudaView};

use super::Dev;
use crate::backend::rope_tables::rope_table;
use crate::backend::{StepInput, StepKey};
use crate::error::{Error, Result};
use crate::model::config::RopeParams;

/// Recorded steps kept (least recently used dropped first): one per live sequence, so a server
/// with this many slots never records twice.
const KEEP: usize = 16;
/// Words before the RoPE tables in the step inputs: the token id and the position.
const HEADER: usize = 2;

/// How the op wrappers take the step's token, position and RoPE tables.
#[derive(Default)]
pub(crate) enum StepMode {
    /// From the host, as arguments and uploads.
    #[default]
    Eager,
    /// From the host, while noting the RoPE parameter sets of a decode step's first run.
    Warmup(Vec<RopeParams>),
    /// From the step inputs on the device (the ops are being captured into a graph).
    Capture(Arc<StepInputs>),
}

/// A recorded step's inputs on the device: `[token, pos, tables...]` as 32-bit words, each RoPE
/// table `[n_rot / 2][2]` f32 (cos, sin) for the step's one position.
pub(crate) struct StepInputs {
    buf: CudaSlice<u32>,
    /// Each parameter set with the word offset of its table.
    ropes: Vec<(RopeParams, usize)>,
}

impl StepInputs {
    fn new(dev: &Dev, params: Vec<RopeParams>) -> Result<Self> {
        let mut ropes = Vec::with_capacity(params.len());
        let mut len = HEADER;
        for p in params {
            let n = table_len(&p);
            ropes.push((p, len));
            len += n;
        }
        let buf = dev
            .stream
            .alloc_zeros::<u32>(len)
            .map_err(|e| Error::Cuda(format!("allocating a decode graph's inputs: {e}")))?;
        Ok(StepInputs { buf, ropes })
    }

    /// The words of `step`'s inputs.
    fn words(&self, step: StepInput) -> Result<Vec<u32>> {
        let pos = u32::try_from(step.pos)
            .ok()
            .filter(|&p| p <= i32::MAX as u32)
            .ok_or_else(|| {
                Error::Cuda(format!(
                    "position {} exceeds the kernels' 32-bit indexing",
                    step.pos
                ))
            })?;
        let mut w = Vec::with_capacity(self.buf.len());
        w.extend([step.token, pos]);
        for (p, _) in &self.ropes {
            w.extend(rope_table(p, step.pos, 1).iter().map(|v| v.to_bits()));
        }
        Ok(w)
    }

    /// The token id, as the embedding kernel's one-element id list.
    pub(crate) fn ids(&self) -> CudaView<'_, u32> {
        self.buf.slice(0..1)
    }

    /// The position, as the `pos_dev` argument of the KV-store and attention kernels.
    pub(crate) fn pos(&self) -> CudaView<'_, u32> {
        self.buf.slice(1..2)
    }

    /// The RoPE table of parameter set `p`, if the warm-up step used it.
    pub(crate) fn rope(&self, p: &RopeParams) -> Option<CudaView<'_, f32>> {
        let &(_, off) = self.ropes.iter().find(|(q, _)| q == p)?;
        let n = table_len(p);
        // SAFETY: f32 and u32 have the same size and alignment and every bit pattern is a valid
        // f32; the view covers exactly the n words of this table inside the buffer.
        unsafe { self.buf.slice(off..off + n).transmute::<f32>(n) }
    }
}

/// Words of one position's RoPE table.
fn table_len(p: &RopeParams) -> usize {
    p.n_rot / 2 * 2
}

/// An instantiated graph. cudarc leaves it `!Send` (it holds raw driver handles).
struct Graph(CudaGraph);

// SAFETY: the graph is only touched (launched, dropped) under the `StepGraphs` mutex of the
// backend that made it, so calls on it are serialized as the driver requires; the driver handles
// themselves are valid from any thread of the process.
unsafe impl Send for Graph {}

struct Recorded {
    key: StepKey,
    inputs: Arc<StepInputs>,
    /// None between the warm-up and the recording step.
    graph: Option<Graph>,
    last_used: u64,
}

/// Every recorded decode step of one backend.
pub(crate) struct StepGraphs {
    /// False with `TORCHLESS_CUDA_GRAPH=off`: every step runs eagerly.
    pub(crate) enabled: bool,
    steps: Vec<Recorded>,
    clock: u64,
}

impl StepGraphs {
    pub(crate) fn new(enabled: bool) -> Self {
        StepGraphs {
            enabled,
            steps: Vec::new(),
            clock: 0,
        }
    }

    /// Queue one decode step (see the module docs): warm up, record or replay `key`.
    pub(crate) fn step(&mut self, dev: &Dev, key: StepKey, step: StepInput, ops: impl FnOnce()) {
        if !self.enabled || dev.failed() {
            return ops();
        }
        self.clock += 1;
        let now = self.clock;
        let Some(i) = self.steps.iter().position(|r| r.key == key) else {
            return self.warm_up(dev, key, ops);
        };
        let rec = &mut self.steps[i];
        rec.last_used = now;
        if let Err(e) = write_inputs(dev, &mut rec.inputs, step) {
            return dev.fail(e.to_string());
        }
        if rec.graph.is_none() {
            match record(dev, &rec.inputs, ops) {
                Ok(g) => rec.graph = Some(Graph(g)),
                Err(e) => return dev.fail(e.to_string()),
            }
        }
        if let Some(g) = &rec.graph {
            let r = g.0.launch();
            dev.check("launching the decode graph", r);
        }
    }

    /// The first step of `key`: run `ops` eagerly, noting its RoPE parameter sets, and keep the
    /// inputs buffer the recording will use.
    fn warm_up(&mut self, dev: &Dev, key: StepKey, ops: impl FnOnce()) {
        let params = {
            let _mode = ModeGuard::set(dev, StepMode::Warmup(Vec::new()));
            ops();
            // A `let`, not the block's tail expression: a tail's temporaries (this lock guard)
            // outlive the block's locals in edition 2021, and `_mode`'s drop takes the same lock.
            let mode = std::mem::take(&mut *super::lock(&dev.step));
            match mode {
                StepMode::Warmup(p) => p,
                _ => Vec::new(),
            }
        };
        if dev.failed() {
            return;
        }
        let inputs = match StepInputs::new(dev, params) {
            Ok(i) => i,
            Err(e) => return dev.fail(e.to_string()),
        };
        if self.steps.len() >= KEEP {
            if let Some(oldest) = (0..self.steps.len()).min_by_key(|&i| self.steps[i].last_used) {
                self.steps.swap_remove(oldest);
            }
        }
        self.steps.push(Recorded {
            key,
            inputs: Arc::new(inputs),
            graph: None,
            last_used: self.clock,
        });
    }
}

/// Write `step`'s inputs (queued on the stream, so after the previous step's work).
fn write_inputs(dev: &Dev, inputs: &mut Arc<StepInputs>, step: StepInput) -> Result<()> {
    let words = inputs.words(step)?;
    // Only the recording step lends the inputs out (to the op wrappers, while capturing), and
    // it has given them back by now.
    let inputs = Arc::get_mut(inputs)
        .ok_or_else(|| Error::Cuda("decode graph inputs still borrowed by a capture".into()))?;
    dev.stream
        .memcpy_htod(&words[..], &mut inputs.buf)
        .map_err(|e| Error::Cuda(format!("writing a decode step's inputs: {e}")))
}

/// Capture `ops` into a graph whose kernels read `inputs`.
fn record(dev: &Dev, inputs: &Arc<StepInputs>, ops: impl FnOnce()) -> Result<CudaGraph> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::Cuda(format!(
            "recording the decode step as a CUDA graph ({what}: {e}); TORCHLESS_CUDA_GRAPH=off \
             runs decode steps without graphs"
        ))
    };
    dev.stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .map_err(|e| fail("begin", &e))?;
    {
        let capture = CaptureGuard(dev);
        let _mode = ModeGuard::set(dev, StepMode::Capture(inputs.clone()));
        ops();
        // Ended below, where its result is needed.
        std::mem::forget(capture);
    }
    let graph = dev
        .stream
        .end_capture(CUgraphInstantiate_flags(0))
        .map_err(|e| fail("end", &e))?;
    if let Some(why) = dev.take_error() {
        return Err(fail("an op", &why));
    }
    let graph = graph.ok_or_else(|| fail("end", &"the capture recorded nothing"))?;
    graph.upload().map_err(|e| fail("upload", &e))?;
    Ok(graph)
}

/// Sets the op wrappers' [`StepMode`] and restores `Eager` when dropped (also on a panic).
struct ModeGuard<'a>(&'a Dev);

impl<'a> ModeGuard<'a> {
    fn set(dev: &'a Dev, mode: StepMode) -> Self {
        *super::lock(&dev.step) = mode;
        ModeGuard(dev)
    }
}

impl Drop for ModeGuard<'_> {
    fn drop(&mut self) {
        *super::lock(&self.0.step) = StepMode::Eager;
    }
}

/// Ends a capture that `ops` left by panicking, so the stream is usable again.
struct CaptureGuard<'a>(&'a Dev);

impl Drop for CaptureGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.stream.end_capture(CUgraphInstantiate_flags(0));
    }
}
