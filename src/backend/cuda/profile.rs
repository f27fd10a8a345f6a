//! The kernel profiler behind `torchless bench --profile`: how long each kernel of a decode
//! step takes on the device, and how many weight bytes per second the matmuls among them read.
//!
//! How: while a profile is open, every decode step runs eagerly (no graph), queued behind
//! `profile_hold` (kernels/profile.cu), a kernel that keeps the stream busy for a few
//! milliseconds. The step's first event is recorded after the hold and one more after each
//! launch, so the time between two events is one kernel's, from the moment the one before it
//! completed to its own completion. Because the host has queued the whole step by the time the
//! hold ends, that time holds no host launch latency. It does hold the device's own gap between
//! two dependent launches, which a replayed graph with programmatic dependent launch hides in
//! part: the sum over a step is an upper bound on a graph step, and the difference between them
//! is what the overlap saves.
//!
//! Host-to-device copies queued inside a step (the token id, a new position's RoPE table) get
//! an event of their own too ([`queued`]), so they are rows of their own, not part of the next
//! kernel's time.
//!
//! A step whose host side took longer than its hold is counted as late (its times may include
//! host time); the next step's hold is twice this step's queueing (2 to 100 ms).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaContext, CudaEvent, CudaStream, DriverError};

use crate::bench::{KernelProfile, KernelTime};

/// The hold of the first step, and its bounds.
const FIRST_HOLD: Duration = Duration::from_millis(5);
const MIN_HOLD: Duration = Duration::from_millis(2);
const MAX_HOLD: Duration = Duration::from_millis(100);

/// What one kernel, at one weight size, added up to over the profiled steps.
#[derive(Default)]
struct Total {
    launches: u64,
    ms: f64,
}

/// The kernel the profiler launches before each step.
pub(crate) const HOLD_KERNEL: &str = "profile_hold";

/// Entry points the profiler launches.
pub(crate) fn entry_points() -> Vec<String> {
    vec![HOLD_KERNEL.to_string()]
}

/// Notes a kernel launch or a copy (`what`: the entry point, or e.g. "(copy) token ids") just
/// queued on `stream`, which reads `weight_bytes` of weights, and records the event that ends
/// it, when `slot` holds a profile whose step is being queued; does nothing otherwise.
pub(crate) fn queued(
    slot: &Mutex<Option<Profiler>>,
    ctx: &Arc<CudaContext>,
    stream: &CudaStream,
    what: &str,
    weight_bytes: u64,
) -> Result<(), DriverError> {
    match super::lock(slot).as_mut() {
        Some(p) if p.in_step() => {
            p.launches.push((what.to_string(), weight_bytes));
            p.record(ctx, stream)
        }
        _ => Ok(()),
    }
}

/// An open profile ([`super::CudaBackend::start_kernel_profile`]).
pub(crate) struct Profiler {
    /// Timing events, reused step after step.
    events: Vec<CudaEvent>,
    /// Events recorded in the step under way.
    used: usize,
    /// The step's launches in order: kernel and the weight bytes it reads.
    launches: Vec<(String, u64)>,
    /// Per (kernel, weight bytes per launch) over the finished steps.
    totals: HashMap<(String, u64), Total>,
    steps: u64,
    /// The steps' device time, first event to last.
    step_ms: f64,
    /// The host time spent queueing the steps.
    enqueue: Duration,
    hold: Duration,
    late_steps: u64,
    /// Whether a step is being queued, and since when.
    step_start: Option<Instant>,
}

impl Profiler {
    pub(crate) fn new() -> Self {
        Profiler {
            events: Vec::new(),
            used: 0,
            launches: Vec::new(),
            totals: HashMap::new(),
            steps: 0,
            step_ms: 0.0,
            enqueue: Duration::ZERO,
            hold: FIRST_HOLD,
            late_steps: 0,
            step_start: None,
        }
    }

    /// The hold for the next step, in nanoseconds of the device's global timer.
    pub(crate) fn hold_ns(&self) -> u64 {
        self.hold.as_nanos() as u64
    }

    /// Whether a step is being queued: its launches are timed.
    pub(crate) fn in_step(&self) -> bool {
        self.step_start.is_some()
    }

    /// Starts a step after its hold was queued: records the step's first event.
    pub(crate) fn begin_step(
        &mut self,
        ctx: &Arc<CudaContext>,
        stream: &CudaStream,
    ) -> Result<(), DriverError> {
        self.used = 0;
        self.launches.clear();
        self.step_start = Some(Instant::now());
        self.record(ctx, stream)
    }

    fn record(&mut self, ctx: &Arc<CudaContext>, stream: &CudaStream) -> Result<(), DriverError> {
        if self.used == self.events.len() {
            self.events
                .push(ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?);
        }
        self.events[self.used].record(stream)?;
        self.used += 1;
        Ok(())
    }

    /// Ends the step: waits for it, adds each kernel's time to the totals and sizes the next
    /// hold.
    pub(crate) fn end_step(&mut self) -> Result<(), DriverError> {
        let Some(start) = self.step_start.take() else {
            return Ok(());
        };
        let enqueue = start.elapsed();
        if enqueue >= self.hold {
            self.late_steps += 1;
        }
        self.enqueue += enqueue;
        // Twice this step's queueing: a slow step lengthens the next hold, not every later one.
        self.hold = (2 * enqueue).clamp(MIN_HOLD, MAX_HOLD);
        // An event record that failed left a launch without the event that ends it (the error
        // is reported by the next read); such a step is not counted.
        if self.used != self.launches.len() + 1 || self.launches.is_empty() {
            return Ok(());
        }
        // Event i + 1 follows launch i. The step counts only once every time is read.
        let ms = (0..self.used - 1)
            .map(|i| {
                self.events[i]
                    .elapsed_ms(&self.events[i + 1])
                    .map(f64::from)
            })
            .collect::<Result<Vec<f64>, DriverError>>()?;
        for ((kernel, bytes), ms) in self.launches.iter().zip(ms) {
            let t = self.totals.entry((kernel.clone(), *bytes)).or_default();
            t.launches += 1;
            t.ms += ms;
        }
        self.step_ms += f64::from(self.events[0].elapsed_ms(&self.events[self.used - 1])?);
        self.steps += 1;
        Ok(())
    }

    /// The profile of the steps so far, the slowest kernels first.
    pub(crate) fn report(self) -> KernelProfile {
        let steps = self.steps.max(1) as f64;
        let mut kernels: Vec<KernelTime> = self
            .totals
            .into_iter()
            .map(|((kernel, weight_bytes), t)| KernelTime {
                kernel,
                weight_bytes,
                launches_per_step: t.launches as f64 / steps,
                us_per_step: 1e3 * t.ms / steps,
            })
            .collect();
        kernels.sort_by(|a, b| {
            b.us_per_step
                .total_cmp(&a.us_per_step)
                .then_with(|| a.kernel.cmp(&b.kernel))
        });
        KernelProfile {
            steps: self.steps,
            step_ms: self.step_ms / steps,
            enqueue_ms: 1e3 * self.enqueue.as_secs_f64() / steps,
            late_steps: self.late_steps,
            kernels,
        }
    }
}
