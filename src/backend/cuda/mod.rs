//! The CUDA backend (`--backend cuda`, cargo feature `cuda`): our own kernels from `kernels/*.cu`,
//! compiled to PTX at build time and loaded through the driver API at run time (`cudarc` with
//! dynamic loading: no CUDA toolkit is needed to run, and a machine without a driver gets a
//! one-line error instead of a link failure).
//!
//! Weights are uploaded once, byte for byte in their own block format (tied matrices once), and
//! dequantized inside the matmul kernels. Activations and the f16 KV cache live on the device.
//! Every op is queued on one stream without waiting; the only synchronisation is
//! [`Backend::read`] of the logits, which is also where any failure of the queued ops is reported
//! (errors are sticky: after the first, ops return at once).
//!
//! One file per op family, each a set of launch wrappers for the kernels of the same name in
//! `kernels/`: [`matmul`], [`embed`], [`norm`], [`rope`], [`activation`], [`attention`].

pub mod activation;
pub mod attention;
pub mod embed;
mod graph;
pub mod launch;
pub mod matmul;
pub mod norm;
mod profile;
pub mod rope;

/// The PTX of every kernel file, embedded by build.rs.
mod ptx {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::driver::sys::CUdevice_attribute as Attr;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, CudaView, DriverError, LaunchConfig};
use cudarc::nvrtc::Ptx;
use serde::Serialize;

use self::attention::CudaKvCache;
use self::graph::{StepGraphs, StepInputs, StepMode};
pub use self::launch::PdlTrigger;
use self::launch::{Kernel, Launch};
use super::rope_tables::RopeTables;
use super::{AttnShape, Backend, NormSpec, StepInput, StepKey};
use crate::error::{Error, Result};
use crate::model::arch::{Activation, RopeLayout};
use crate::model::config::RopeParams;
use crate::model::weights::{Role, WeightView};
use crate::quant::GgmlType;

/// The kernels are compiled for this compute capability (PTX, JIT-compiled for newer GPUs).
const MIN_COMPUTE: (i32, i32) = (8, 0);
/// Device memory left free after the weights, for activations and the KV cache.
const HEADROOM: usize = 256 << 20;

/// An activation buffer on the device.
pub type CudaBuf = CudaSlice<f32>;

/// A weight on the device: its bytes exactly as in the file.
pub struct CudaWeight {
    /// Tensor name (for error messages).
    pub name: String,
    /// Storage type of the bytes.
    pub ty: GgmlType,
    /// Output rows (1 for a vector).
    pub rows: usize,
    /// Values per row.
    pub cols: usize,
    /// The bytes, shared between views of the same tensor (a tied embedding and output).
    pub data: Arc<CudaSlice<u8>>,
}

/// Kernel id of a norm-weight or bias vector's element type (`TL_VEC_*` in prelude.cuh).
pub(crate) fn vec_type_id(ty: GgmlType) -> i32 {
    match ty {
        GgmlType::F16 => 1,
        GgmlType::BF16 => 2,
        // `weight()` admits only F32, F16 and BF16 vectors.
        _ => 0,
    }
}

/// What the device is and what it offers (`torchless info --backend cuda`).
#[derive(Clone, Debug, Serialize)]
pub struct DeviceInfo {
    /// Device ordinal.
    pub ordinal: usize,
    /// Marketing name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Compute capability, e.g. "9.0".
    pub compute_capability: String,
    /// Streaming multiprocessors.
    pub multiprocessors: i32,
    /// Total device memory in bytes.
    pub memory_bytes: usize,
    /// Free device memory in bytes when the backend started.
    pub free_bytes: usize,
    /// Driver API version, e.g. "13.0".
    pub driver: String,
    /// Weight types with matmul and embedding kernels.
    pub weight_types: Vec<&'static str>,
    /// The PTX target the kernels were built for.
    pub ptx_target: String,
    /// Whether decode steps are recorded as CUDA graphs and replayed (`TORCHLESS_CUDA_GRAPH`).
    pub decode_graphs: bool,
    /// How one-token matvecs of the int8-capable types run (`TORCHLESS_CUDA_MATVEC`): "float" or
    /// "int8".
    pub matvec: &'static str,
    /// Whether the fused kernels run (`TORCHLESS_CUDA_FUSE`): RoPE with the K/V store, a gated
    /// FFN's gate, up and GLU.
    pub fused: bool,
    /// Whether the int8 residual projections fold the RMSNorm after them into their own launch
    /// (`TORCHLESS_CUDA_NORM_FOLD`, with `fused` and the int8 matvec).
    pub norm_fold: bool,
    /// Whether a decode token's Q, K and V projections apply RoPE and store K and V in the cache
    /// in their own launch (`TORCHLESS_CUDA_QKV_ROPE`, with `fused` and the int8 matvec).
    pub qkv_rope: bool,
    /// Whether kernels are launched with programmatic dependent launch, each free to start while
    /// the one before it finishes (`TORCHLESS_CUDA_PDL`; compute capability 9.0 and driver 12.3
    /// or newer): see [`launch`].
    pub pdl: bool,
    /// With `pdl`, the kernels launched the ordinary way all the same (none with our build:
    /// each waits for its predecessor before touching memory, checked by tests/cuda_build.rs).
    pub pdl_ordinary: Vec<String>,
    /// Whether, with `pdl`, the decode matvecs ask L2 for their first weight rows before they
    /// wait for the kernel before them (`TORCHLESS_CUDA_PREFETCH`; see [`launch`]).
    pub pdl_prefetch: bool,
    /// With `pdl`, where each kernel lets the next one launch (`TORCHLESS_CUDA_PDL_TRIGGER`).
    pub pdl_trigger: PdlTrigger,
    /// Whether the quantized types' prefill tiles run on the tensor cores (`TORCHLESS_CUDA_MMA`).
    pub mma_prefill: bool,
}

/// Choices a [`CudaBackend`] is opened with; [`CudaOptions::from_env`] reads them from the
/// environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaOptions {
    /// Record decode steps as CUDA graphs and replay them (`TORCHLESS_CUDA_GRAPH=on|off`,
    /// default on).
    pub decode_graphs: bool,
    /// One-token matvecs of quantized weights round x to int8 once and dot it with `dp4a`
    /// (`TORCHLESS_CUDA_MATVEC=int8`, the default) instead of decoding the weights to floats
    /// (`float`). A third to a half of the instructions per weight byte, and on an H100 faster
    /// decode for every type (docs/performance.md, 2026-11-24); x is rounded to 8 bits per 32
    /// values, as the CPU's quantized dots round it per 32 or 256. Float weights keep the float
    /// matvec.
    pub int8_matvec: bool,
    /// Run the fused kernels (`TORCHLESS_CUDA_FUSE=on|off`, default on): RoPE on Q and K with
    /// the K/V store, and a gated FFN's gate, up and GLU on the decode path, each one launch
    /// instead of three with bit-identical results. Off measures what they save.
    pub fused: bool,
    /// With `fused` and the int8 matvec, fold a decode step's RMSNorm into the residual
    /// projection before it (`TORCHLESS_CUDA_NORM_FOLD=on|off`, default on): the output and down
    /// projections round their sum to Q8 group by group for the next block's projections, which
    /// apply the norm's scale to their own sums (kernels/q8act.cuh), so no norm launch runs
    /// between them; two launches fewer a layer. Not bit for bit the norm's launch: the groups
    /// are rounded before the scale instead of after, which moves logits about as much as the
    /// rounding itself. Off measures what it saves.
    pub norm_fold: bool,
    /// With `fused` and the int8 matvec, apply RoPE and store K and V in the cache in the
    /// launch that projects a decode token's Q, K and V (`TORCHLESS_CUDA_QKV_ROPE=on|off`,
    /// default on): `matvec_qkv_rope_q8_<t>`, a warp computing both elements of a RoPE pair and
    /// rotating them itself, instead of `matvec_q8_<t>` and `attn_rope_kv_store`; one launch
    /// fewer a layer, bit for bit the same. Off measures what it saves.
    pub qkv_rope: bool,
    /// Launch kernels with programmatic dependent launch where the device and driver have it
    /// (`TORCHLESS_CUDA_PDL=on|off`, default off; see [`launch`]). The results are the same
    /// either way. Off by default because an H100 measured it slower (docs/performance.md,
    /// 2026-11-24): each kernel lets the next one launch at its start, and the next kernel's
    /// waiting blocks then hold SM slots the running matvec's later waves need.
    pub pdl: bool,
    /// With `pdl`, let each decode matvec ask L2 for the weight rows it reads first before it
    /// waits for the kernel before it (`TORCHLESS_CUDA_PREFETCH=on|off`, default on; see
    /// [`launch`]), so that DRAM keeps streaming through that kernel's tail. Same results either
    /// way; off measures what it saves.
    pub pdl_prefetch: bool,
    /// With `pdl`, where each kernel lets the next one launch (`TORCHLESS_CUDA_PDL_TRIGGER=
    /// start|exit`, default start; see [`launch::PdlTrigger`]): right after its wait, or as its
    /// blocks exit. Same results either way; `exit` is the measurement that says whether the
    /// next kernel's early blocks cost the running one anything.
    pub pdl_trigger: PdlTrigger,
    /// Multiply the prefill tiles of quantized weights on the tensor cores
    /// (`TORCHLESS_CUDA_MMA=on|off`, default on): `matmul_mma_<t>`, with the dequantized weights
    /// and x rounded to bfloat16 and f32 accumulators, instead of f32 FMA (`matmul_<t>`).
    /// Float weights always take the f32 tiles.
    pub mma_prefill: bool,
}

impl CudaOptions {
    /// `TORCHLESS_CUDA_GRAPH`, `TORCHLESS_CUDA_MATVEC`, `TORCHLESS_CUDA_FUSE`,
    /// `TORCHLESS_CUDA_NORM_FOLD`, `TORCHLESS_CUDA_QKV_ROPE`, `TORCHLESS_CUDA_PDL`,
    /// `TORCHLESS_CUDA_PREFETCH`, `TORCHLESS_CUDA_PDL_TRIGGER` and `TORCHLESS_CUDA_MMA`; an
    /// unknown value is an error.
    pub fn from_env() -> Result<Self> {
        Ok(CudaOptions {
            decode_graphs: switch_from_env("TORCHLESS_CUDA_GRAPH", true)?,
            int8_matvec: Self::int8_matvec_from_env()?,
            fused: switch_from_env("TORCHLESS_CUDA_FUSE", true)?,
            norm_fold: switch_from_env("TORCHLESS_CUDA_NORM_FOLD", true)?,
            qkv_rope: switch_from_env("TORCHLESS_CUDA_QKV_ROPE", true)?,
            pdl: switch_from_env("TORCHLESS_CUDA_PDL", false)?,
            pdl_prefetch: switch_from_env("TORCHLESS_CUDA_PREFETCH", true)?,
            pdl_trigger: Self::pdl_trigger_from_env()?,
            mma_prefill: switch_from_env("TORCHLESS_CUDA_MMA", true)?,
        })
    }

    /// `TORCHLESS_CUDA_PDL_TRIGGER=start|exit` (default start).
    fn pdl_trigger_from_env() -> Result<PdlTrigger> {
        match std::env::var("TORCHLESS_CUDA_PDL_TRIGGER") {
            Err(_) => Ok(PdlTrigger::Start),
            Ok(v) => match v.as_str() {
                "" | "start" => Ok(PdlTrigger::Start),
                "exit" => Ok(PdlTrigger::Exit),
                other => Err(Error::InvalidArgument(format!(
                    "TORCHLESS_CUDA_PDL_TRIGGER={other}: expected start or exit"
                ))),
            },
        }
    }

    /// `TORCHLESS_CUDA_MATVEC=float|int8` (default int8).
    fn int8_matvec_from_env() -> Result<bool> {
        match std::env::var("TORCHLESS_CUDA_MATVEC") {
            Err(_) => Ok(true),
            Ok(v) => match v.as_str() {
                "" | "int8" => Ok(true),
                "float" => Ok(false),
                other => Err(Error::InvalidArgument(format!(
                    "TORCHLESS_CUDA_MATVEC={other}: expected float or int8"
                ))),
            },
        }
    }
}

/// An on/off choice from the environment variable `name`: `default` when unset or empty, on
/// for `on` or `1`, off for `off` or `0`; any other value is an error.
fn switch_from_env(name: &str, default: bool) -> Result<bool> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => match v.as_str() {
            "" => Ok(default),
            "on" | "1" => Ok(true),
            "off" | "0" => Ok(false),
            other => Err(Error::InvalidArgument(format!(
                "{name}={other}: expected on or off"
            ))),
        },
    }
}

/// How `info` names the weight prefetch of PDL launches ([`CudaOptions::pdl_prefetch`]).
fn prefetch_note(on: bool) -> &'static str {
    if on {
        " (decode matvecs prefetch their first weight rows to L2 before waiting)"
    } else {
        " (no weight prefetch: TORCHLESS_CUDA_PREFETCH=off)"
    }
}

/// How `info` names where PDL launches trigger the next kernel ([`CudaOptions::pdl_trigger`]).
fn trigger_note(t: PdlTrigger) -> &'static str {
    match t {
        PdlTrigger::Start => ", the next kernel launched at each kernel's start",
        PdlTrigger::Exit => {
            ", the next kernel launched as each kernel's blocks exit (TORCHLESS_CUDA_PDL_TRIGGER=exit)"
        }
    }
}

/// The device context, its stream and every kernel, shared by the op wrappers.
pub(crate) struct Dev {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    funcs: HashMap<String, Kernel>,
    error: Mutex<Option<String>>,
    /// Where the ops take a decode step's token, position and RoPE tables from (graph.rs).
    step: Mutex<StepMode>,
    /// One-token matvecs through the int8 kernels ([`CudaOptions::int8_matvec`]).
    pub(crate) int8_matvec: bool,
    /// The fused kernels run ([`CudaOptions::fused`]).
    pub(crate) fused: bool,
    /// Residual projections fold the next RMSNorm in ([`CudaOptions::norm_fold`]).
    pub(crate) norm_fold: bool,
    /// A decode token's Q/K/V launch also does RoPE and the K/V store
    /// ([`CudaOptions::qkv_rope`]).
    pub(crate) qkv_rope: bool,
    /// Quantized prefill tiles on the tensor cores ([`CudaOptions::mma_prefill`]).
    pub(crate) mma_prefill: bool,
    /// x in Q8 form for those kernels (matmul.rs).
    pub(crate) q8: Mutex<matmul::Q8Scratch>,
    /// Which buffer the Q8 scratch holds in Q8 form (its host address, its width and the slot),
    /// when a fused kernel wrote it (a norm, attention, the gated FFN, a residual projection
    /// with the norm folded in) and nothing was launched since: the next matmul of that buffer
    /// takes it instead of rounding x again. Every launch ([`Dev::kernel`]) clears it, so it
    /// never outlives the launch after the norm.
    q8_input: Mutex<Option<(usize, usize, Q8Ready)>>,
    /// Kernels queued so far ([`CudaBackend::kernel_launches`]).
    launches: AtomicU64,
    /// The open kernel profile, if any ([`CudaBackend::start_kernel_profile`]).
    pub(crate) profile: Mutex<Option<profile::Profiler>>,
}

/// Where a fused kernel left a matmul's input in Q8 form ([`Dev::set_q8_input`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Q8Ready {
    /// The slot of the Q8 scratch.
    pub(crate) slot: usize,
    /// `Some(eps)`: the slot holds the row in pending-RMSNorm form ([`Dev::set_q8_pending`]).
    pub(crate) pending_eps: Option<f32>,
}

impl Q8Ready {
    /// Plain Q8 form in `slot`.
    pub(crate) fn plain(slot: usize) -> Self {
        Q8Ready {
            slot,
            pending_eps: None,
        }
    }

    /// The int8 kernels' `eps` argument: negative for plain Q8 form.
    pub(crate) fn eps_arg(self) -> f32 {
        self.pending_eps.unwrap_or(-1.0)
    }
}

impl Dev {
    /// A launch of the kernel `name`. Every name the wrappers use is checked at start-up
    /// ([`all_entry_points`]), so a miss is a bug in this crate.
    /// Every launch starts here, which counts it and forgets the Q8 input mark
    /// ([`Dev::set_q8_input`]): any launch may write the buffer the mark names.
    pub(crate) fn kernel(&self, name: &str) -> Launch<'_> {
        *lock(&self.q8_input) = None;
        self.launches.fetch_add(1, Ordering::Relaxed);
        let (name, k) = self
            .funcs
            .get_key_value(name)
            .unwrap_or_else(|| panic!("kernel {name} missing (entry-point table out of sync)"));
        Launch::new(&self.ctx, &self.stream, (name, k), &self.profile)
    }

    /// Gives a copy just queued inside a profiled decode step (`what`) its own profile row, so
    /// that the next kernel's time does not include it. Does nothing otherwise.
    pub(crate) fn profile_copy(&self, what: &str) {
        let r = profile::queued(&self.profile, &self.ctx, &self.stream, what, 0);
        self.check("profiling a decode step", r);
    }

    /// Records the first error (sticky, reported by the next `read`); returns the value on success.
    pub(crate) fn check<T>(&self, what: &str, r: std::result::Result<T, DriverError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                let mut slot = lock(&self.error);
                if slot.is_none() {
                    *slot = Some(format!("{what}: {e}"));
                }
                None
            }
        }
    }

    /// Records a failure found on the host (sticky, like a driver error).
    pub(crate) fn fail(&self, why: String) {
        let mut slot = lock(&self.error);
        if slot.is_none() {
            *slot = Some(why);
        }
    }

    /// True once an error was recorded: ops then return at once.
    pub(crate) fn failed(&self) -> bool {
        lock(&self.error).is_some()
    }

    fn take_error(&self) -> Option<String> {
        lock(&self.error).clone()
    }

    /// The step inputs the ops read while a decode step is being captured into a graph.
    pub(crate) fn captured_inputs(&self) -> Option<Arc<StepInputs>> {
        match &*lock(&self.step) {
            StepMode::Capture(inputs) => Some(inputs.clone()),
            _ => None,
        }
    }

    /// Marks slot `slot` of the Q8 scratch as holding `buf`'s first `cols` values in Q8 form, as
    /// written by the launch just made (a fused norm, attention or the gated FFN kernel). The
    /// next kernel lookup clears the mark.
    pub(crate) fn set_q8_input(&self, buf: &CudaBuf, cols: usize, slot: usize) {
        *lock(&self.q8_input) = Some((buf as *const CudaBuf as usize, cols, Q8Ready::plain(slot)));
    }

    /// [`Dev::set_q8_input`] for a row in pending-RMSNorm form: `buf` stands for norm(x), which
    /// the launch just made left unwritten, and the slot holds x times the norm weight with
    /// each group's sum of squares (kernels/q8act.cuh); the matvecs reading it apply the scale
    /// with `eps`.
    pub(crate) fn set_q8_pending(&self, buf: &CudaBuf, cols: usize, slot: usize, eps: f32) {
        let ready = Q8Ready {
            slot,
            pending_eps: Some(eps),
        };
        *lock(&self.q8_input) = Some((buf as *const CudaBuf as usize, cols, ready));
    }

    /// Takes the Q8 input mark: the slot holding `x`'s `cols` values in Q8 form, when the mark
    /// names them. Called by a matmul before its first launch, which would clear it.
    pub(crate) fn take_q8_input(&self, x: &CudaBuf, cols: usize) -> Option<Q8Ready> {
        match lock(&self.q8_input).take() {
            Some((addr, c, ready)) if addr == x as *const CudaBuf as usize && c == cols => {
                Some(ready)
            }
            _ => None,
        }
    }

    /// Notes a RoPE parameter set used by a decode step's warm-up run.
    fn note_rope(&self, p: &RopeParams) {
        if let StepMode::Warmup(seen) = &mut *lock(&self.step) {
            if !seen.contains(p) {
                seen.push(p.clone());
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every entry point the wrappers launch; start-up checks the loaded PTX has each.
pub(crate) fn all_entry_points() -> Vec<String> {
    let mut v = matmul::entry_points();
    v.extend(embed::entry_points());
    v.extend(norm::entry_points());
    v.extend(rope::entry_points());
    v.extend(activation::entry_points());
    v.extend(attention::entry_points());
    v.extend(profile::entry_points());
    v
}

/// Entry points (`.entry NAME(`) declared in a PTX text.
pub fn ptx_entry_points(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix(".visible .entry ")?;
            Some(rest.split('(').next()?.trim().to_string())
        })
        .collect()
}

/// The PTX ISA version and target of a module's header (`.version 7.5`, `.target sm_80`), e.g.
/// `("7.5", "sm_80")`; "?" for a directive that is missing.
pub fn ptx_header(ptx: &str) -> (String, String) {
    let directive = |name: &str| {
        ptx.lines()
            .find_map(|l| l.trim_start().strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .map_or_else(|| "?".to_string(), |v| v.trim_end_matches(',').to_string())
    };
    (directive(".version "), directive(".target "))
}

/// The error for a module the driver would not load. A driver older than the nvcc that wrote
/// the PTX rejects its ISA version; that case says what to do about it.
fn module_load_error(stem: &str, ptx: &str, driver: &str, e: DriverError) -> Error {
    let (isa, target) = ptx_header(ptx);
    if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION {
        Error::Cuda(format!(
            "loading kernels/{stem}.cu: this driver (CUDA {driver}) cannot read PTX ISA {isa}, \
             written by an nvcc newer than the driver; update the NVIDIA driver, or rebuild \
             torchless with TORCHLESS_CUDA_COMPILER=clang (PTX ISA 7.5)"
        ))
    } else {
        Error::Cuda(format!(
            "loading kernels/{stem}.cu ({target}, PTX ISA {isa}): {e}"
        ))
    }
}

/// Every embedded kernel module, as (file stem, PTX text).
pub fn ptx_modules() -> &'static [(&'static str, &'static str)] {
    ptx::MODULES
}

/// Entry points the backend needs (for the build's PTX coverage test).
pub fn required_entry_points() -> Vec<String> {
    all_entry_points()
}

/// The driver's CUDA API version as cuDriverGetVersion gives it (12030 for 12.3).
fn driver_api() -> Option<i32> {
    let mut v: std::ffi::c_int = 0;
    // SAFETY: cuDriverGetVersion writes one int through a valid pointer; the library is loaded.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    (r == cudarc::driver::sys::CUresult::CUDA_SUCCESS).then_some(v)
}

/// The driver's CUDA API version, e.g. "13.0".
fn driver_version() -> String {
    match driver_api() {
        Some(v) => format!("{}.{}", v / 1000, (v % 1000) / 10),
        None => "unknown".into(),
    }
}

/// A tensor's bytes by (map address, start, len).
type UploadKey = (usize, usize, usize);
/// The map is kept alive with its upload so its address cannot be reused by another map while the
/// key is cached.
type Upload = (Arc<memmap2::Mmap>, Arc<CudaSlice<u8>>);

/// The CUDA implementation of [`Backend`] on one device. It runs one forward pass at a time:
/// every op goes to one stream, and while a decode step is being recorded as a graph (graph.rs)
/// any op issued from another thread would be recorded into it too.
pub struct CudaBackend {
    /// Recorded decode steps; declared first so they are destroyed before `dev` unloads the
    /// kernels they launch.
    graphs: Mutex<StepGraphs>,
    dev: Dev,
    info: DeviceInfo,
    /// Uploaded tensors: tied views share one upload.
    uploads: Mutex<HashMap<UploadKey, Upload>>,
    /// Token ids of the current embedding lookup.
    ids: Mutex<Option<CudaSlice<u32>>>,
    rope: Mutex<RopeTables<CudaSlice<f32>>>,
}

/// Whether the NVIDIA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library by its usual names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

impl CudaBackend {
    /// Opens device `ordinal`: loads the driver, checks the device and its compute capability,
    /// and loads every kernel. A missing driver or device is a one-line error.
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::with_options(ordinal, CudaOptions::from_env()?)
    }

    /// [`CudaBackend::new`], recording decode steps as CUDA graphs or not (the other options
    /// still come from the environment).
    pub fn with_graphs(ordinal: usize, graphs: bool) -> Result<Self> {
        let opts = CudaOptions {
            decode_graphs: graphs,
            ..CudaOptions::from_env()?
        };
        Self::with_options(ordinal, opts)
    }

    /// [`CudaBackend::new`] with explicit options.
    pub fn with_options(ordinal: usize, opts: CudaOptions) -> Result<Self> {
        if !driver_present() {
            return Err(Error::Cuda(
                "no CUDA driver found (libcuda.so could not be loaded): --backend cuda needs an \
                 NVIDIA GPU with its driver installed; use --backend cpu on this machine"
                    .into(),
            ));
        }
        // cudarc panics on a driver too old to have a symbol it binds; turn that into an error.
        std::panic::catch_unwind(|| Self::open(ordinal, opts)).unwrap_or_else(|p| {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown failure".into());
            Err(Error::Cuda(format!(
                "the CUDA driver could not be used ({why}); update the NVIDIA driver"
            )))
        })
    }

    fn open(ordinal: usize, opts: CudaOptions) -> Result<Self> {
        let graphs = opts.decode_graphs;
        let drv = |what: &str| {
            let what = what.to_string();
            move |e: DriverError| Error::Cuda(format!("{what}: {e}"))
        };
        let count = CudaContext::device_count().map_err(drv("cannot initialise the driver"))?;
        if count <= 0 {
            return Err(Error::Cuda(
                "the CUDA driver is installed but reports no device".into(),
            ));
        }
        if ordinal >= count as usize {
            return Err(Error::Cuda(format!(
                "--device {ordinal}: only {count} CUDA device(s) (0..{})",
                count - 1
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(drv("cannot open the device"))?;
        let name = ctx.name().map_err(drv("device name"))?;
        let cc = ctx
            .compute_capability()
            .map_err(drv("compute capability"))?;
        if cc < MIN_COMPUTE {
            return Err(Error::Cuda(format!(
                "{name} has compute capability {}.{}; the kernels need {}.{} or newer (Ampere)",
                cc.0, cc.1, MIN_COMPUTE.0, MIN_COMPUTE.1
            )));
        }
        let sms = ctx
            .attribute(Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(drv("device attributes"))?;
        let (free, total) = ctx.mem_get_info().map_err(drv("device memory"))?;
        let driver = driver_version();
        // SAFETY: this backend uses one stream for every op, so the per-buffer events cudarc
        // records to order work across streams are never needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(drv("cannot create a stream"))?;
        let pdl = opts.pdl
            && cc >= launch::PDL_MIN_COMPUTE
            && driver_api().is_some_and(|v| v >= launch::PDL_MIN_DRIVER);
        let mut funcs = HashMap::new();
        // Kernels launched the ordinary way although PDL is on (reported by `info`).
        let mut pdl_ordinary = Vec::new();
        for (stem, text) in ptx::MODULES {
            // Kernels that would touch memory before waiting for their predecessor keep the
            // ordinary launch, and so does a module whose header cannot be rewritten
            // (tests/cuda_build.rs checks that neither happens to ours).
            let (src, ordinary) =
                match pdl.then(|| launch::ptx_for_pdl(text, opts.pdl_prefetch, opts.pdl_trigger)) {
                    Some(Ok(src)) => (src, launch::entries_without_wait(text)),
                    Some(Err(_)) => (text.to_string(), ptx_entry_points(text)),
                    None => (text.to_string(), Vec::new()),
                };
            pdl_ordinary.extend(ordinary.iter().cloned());
            let module = ctx
                .load_module(Ptx::from_src(src.as_str()))
                .map_err(|e| module_load_error(stem, &src, &driver, e))?;
            for entry in ptx_entry_points(text) {
                let f = module
                    .load_function(&entry)
                    .map_err(drv(&format!("kernel {entry}")))?;
                let pdl = pdl && !ordinary.contains(&entry);
                funcs.insert(entry, Kernel { f, pdl });
            }
        }
        if let Some(missing) = all_entry_points()
            .into_iter()
            .find(|e| !funcs.contains_key(e))
        {
            return Err(Error::Cuda(format!(
                "the embedded PTX has no kernel {missing}; rebuild torchless"
            )));
        }
        let info = DeviceInfo {
            ordinal,
            name,
            compute_capability: format!("{}.{}", cc.0, cc.1),
            multiprocessors: sms,
            memory_bytes: total,
            free_bytes: free,
            driver,
            weight_types: matmul::KERNEL_TYPES.iter().map(|t| t.name()).collect(),
            ptx_target: {
                let (isa, target) = ptx_modules()
                    .first()
                    .map(|m| ptx_header(m.1))
                    .unwrap_or_default();
                let pdl_note = if pdl {
                    ", loaded as sm_90 / ISA 7.8 with griddepcontrol"
                } else {
                    ""
                };
                format!("{target} (PTX ISA {isa}{pdl_note}, JIT-compiled for the device)")
            },
            decode_graphs: graphs,
            matvec: if opts.int8_matvec { "int8" } else { "float" },
            fused: opts.fused,
            norm_fold: opts.norm_fold && opts.fused && opts.int8_matvec,
            qkv_rope: opts.qkv_rope && opts.fused && opts.int8_matvec,
            pdl,
            pdl_ordinary,
            pdl_prefetch: pdl && opts.pdl_prefetch,
            pdl_trigger: opts.pdl_trigger,
            mma_prefill: opts.mma_prefill,
        };
        Ok(CudaBackend {
            graphs: Mutex::new(StepGraphs::new(graphs)),
            dev: Dev {
                ctx,
                stream,
                funcs,
                error: Mutex::new(None),
                step: Mutex::new(StepMode::Eager),
                int8_matvec: opts.int8_matvec,
                fused: opts.fused,
                norm_fold: opts.norm_fold && opts.fused && opts.int8_matvec,
                qkv_rope: opts.qkv_rope && opts.fused && opts.int8_matvec,
                mma_prefill: opts.mma_prefill,
                q8: Mutex::new(matmul::Q8Scratch::default()),
                q8_input: Mutex::new(None),
                launches: AtomicU64::new(0),
                profile: Mutex::new(None),
            },
            info,
            uploads: Mutex::new(HashMap::new()),
            ids: Mutex::new(None),
            rope: Mutex::new(RopeTables::default()),
        })
    }

    /// The device and what it supports.
    pub fn device_info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Kernels queued on this backend so far, counting those recorded into a decode graph as
    /// they are recorded (a replayed graph adds none). With decode graphs off, the difference
    /// over a decode step is that step's launches.
    pub fn kernel_launches(&self) -> u64 {
        self.dev.launches.load(Ordering::Relaxed)
    }

    /// Device-to-device copy bandwidth in bytes/s, counting bytes read and written (the usual
    /// convention; `bench` compares decode's weight reads against it): the best of 5 copies of
    /// 1 GiB.
    pub fn copy_bandwidth(&self) -> Result<f64> {
        const BYTES: usize = 1 << 30;
        let cuda = |e: DriverError| Error::Cuda(format!("bandwidth probe: {e}"));
        let src = self.dev.stream.alloc_zeros::<u8>(BYTES).map_err(cuda)?;
        let mut dst = self.dev.stream.alloc_zeros::<u8>(BYTES).map_err(cuda)?;
        let mut best = f64::MAX;
        for _ in 0..6 {
            self.dev.stream.synchronize().map_err(cuda)?;
            let t0 = std::time::Instant::now();
            self.dev.stream.memcpy_dtod(&src, &mut dst).map_err(cuda)?;
            self.dev.stream.synchronize().map_err(cuda)?;
            best = best.min(t0.elapsed().as_secs_f64());
        }
        Ok(2.0 * BYTES as f64 / best)
    }

    /// Starts timing each kernel of the decode steps that follow, which then run eagerly, one
    /// kernel after another (how: src/backend/cuda/profile.rs); a profile already open starts over.
    pub fn start_kernel_profile(&self) {
        *lock(&self.dev.profile) = Some(profile::Profiler::new());
    }

    /// Closes the profile [`CudaBackend::start_kernel_profile`] opened and returns what it
    /// measured.
    pub fn finish_kernel_profile(&self) -> Result<crate::bench::KernelProfile> {
        let profiler = lock(&self.dev.profile).take();
        self.synchronize()?;
        profiler
            .map(profile::Profiler::report)
            .ok_or_else(|| Error::InvalidArgument("no kernel profile was started".into()))
    }

    /// One profiled decode step: the hold, the step's first event, `ops` (each launch records
    /// the event that ends it, [`Dev::kernel`]), then the step's times into the profile.
    fn profiled_step(&self, ops: impl FnOnce()) {
        let dev = &self.dev;
        let Some(hold_ns) = lock(&dev.profile).as_ref().map(profile::Profiler::hold_ns) else {
            return ops();
        };
        if !dev.failed() {
            let mut b = dev.kernel(profile::HOLD_KERNEL);
            b.arg(&hold_ns);
            let one = LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (1, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: profile_hold takes one u64 and touches no memory.
            let r = unsafe { b.launch(one) };
            dev.check(profile::HOLD_KERNEL, r);
            let r = lock(&dev.profile)
                .as_mut()
                .map_or(Ok(()), |p| p.begin_step(&dev.ctx, &dev.stream));
            dev.check("profiling a decode step", r);
        }
        ops();
        let r = lock(&dev.profile)
            .as_mut()
            .map_or(Ok(()), profile::Profiler::end_step);
        dev.check("profiling a decode step", r);
    }

    /// Waits for every queued op; reports the first failure.
    pub fn synchronize(&self) -> Result<()> {
        let r = self.dev.stream.synchronize();
        self.dev.check("synchronize", r);
        match self.dev.take_error() {
            Some(e) => Err(Error::Cuda(e)),
            None => Ok(()),
        }
    }

    fn upload(&self, v: &WeightView<'_>) -> Result<Arc<CudaSlice<u8>>> {
        let key = (Arc::as_ptr(v.map) as usize, v.start, v.len);
        if let Some((_, d)) = lock(&self.uploads).get(&key) {
            return Ok(d.clone());
        }
        let (free, total) = self
            .dev
            .ctx
            .mem_get_info()
            .map_err(|e| Error::Cuda(format!("device memory: {e}")))?;
        if v.len + HEADROOM > free {
            return Err(Error::Cuda(format!(
                "the model does not fit on {}: tensor '{}' needs {} MiB but only {} MiB of {} MiB \
                 are free (keeping {} MiB for activations)",
                self.info.name,
                v.name,
                v.len >> 20,
                free >> 20,
                total >> 20,
                HEADROOM >> 20
            )));
        }
        let d = self
            .dev
            .stream
            .clone_htod(v.bytes())
            .map_err(|e| Error::Cuda(format!("uploading '{}': {e}", v.name)))?;
        let d = Arc::new(d);
        lock(&self.uploads).insert(key, (v.map.clone(), d.clone()));
        Ok(d)
    }

    /// The device (cos, sin) table for `n_tok` positions from `pos0` (see [`RopeTables`]).
    fn rope_table(&self, p: &RopeParams, pos0: usize, n_tok: usize) -> Option<Arc<CudaSlice<f32>>> {
        lock(&self.rope).get(p, pos0, n_tok, |cs| {
            let r = self.dev.stream.clone_htod(cs);
            self.dev.profile_copy("(copy) RoPE table");
            self.dev.check("rope table upload", r)
        })
    }

    /// Runs `f` with the (cos, sin) table of `p` for positions `pos0..pos0 + n_tok`: the step
    /// inputs' copy while a decode graph is recorded, else the cached upload. Where there is no
    /// table (a recording meets a parameter set its warm-up step did not use, or the upload
    /// failed) the error is recorded and `f` does not run.
    fn with_rope_table(
        &self,
        p: &RopeParams,
        pos0: usize,
        n_tok: usize,
        f: impl FnOnce(&CudaView<'_, f32>),
    ) {
        if let Some(inputs) = self.dev.captured_inputs() {
            match inputs.rope(p) {
                Some(cs) => f(&cs),
                None => self.dev.fail(
                    "recording a decode graph: a RoPE parameter set the warm-up step did not use"
                        .into(),
                ),
            }
            return;
        }
        self.dev.note_rope(p);
        if let Some(cs) = self.rope_table(p, pos0, n_tok) {
            f(&cs.slice(..));
        }
    }
}

impl Backend for CudaBackend {
    type Weight = CudaWeight;
    type Buf = CudaBuf;
    type KvCache = CudaKvCache;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn describe(&self) -> String {
        let i = &self.info;
        format!(
            "cuda: {} (compute {}, {} SMs, {:.1} GiB, driver {}), kernels PTX {}, decode {}, \
             quantized decode matvec {}, quantized prefill tiles {}, fused kernels {}, \
             programmatic dependent launch {}",
            i.name,
            i.compute_capability,
            i.multiprocessors,
            i.memory_bytes as f64 / (1u64 << 30) as f64,
            i.driver,
            i.ptx_target,
            if i.decode_graphs {
                "recorded as CUDA graphs"
            } else {
                "launched op by op (TORCHLESS_CUDA_GRAPH=off)"
            },
            if i.matvec == "int8" {
                "int8 x dp4a"
            } else {
                "float (TORCHLESS_CUDA_MATVEC=float)"
            },
            if i.mma_prefill {
                "bf16 tensor cores"
            } else {
                "f32 FMA (TORCHLESS_CUDA_MMA=off)"
            },
            match (i.fused, i.norm_fold, i.qkv_rope) {
                (true, true, true) => {
                    "on, RMSNorms folded into the int8 residual projections, RoPE and the K/V \
                     store into the int8 Q/K/V projection"
                }
                (true, true, false) => "on, RMSNorms folded into the int8 residual projections",
                (true, false, true) => "on, RoPE and the K/V store in the int8 Q/K/V projection",
                (true, false, false) => "on",
                (false, _, _) => "off (TORCHLESS_CUDA_FUSE=off)",
            },
            match (i.pdl, i.pdl_ordinary.len()) {
                (true, 0) => format!(
                    "on{}{}",
                    prefetch_note(i.pdl_prefetch),
                    trigger_note(i.pdl_trigger)
                ),
                (true, n) => format!(
                    "on{}{}, except {n} kernels that touch memory before waiting: {}",
                    prefetch_note(i.pdl_prefetch),
                    trigger_note(i.pdl_trigger),
                    i.pdl_ordinary.join(" ")
                ),
                (false, _) => {
                    "off (TORCHLESS_CUDA_PDL=on asks for it: compute 9.0 and driver 12.3 or newer)"
                        .to_string()
                }
            }
        )
    }

    fn weight(&self, v: WeightView<'_>, role: Role) -> Result<CudaWeight> {
        let supported = match role {
            Role::Norm => matches!(v.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16),
            Role::Matmul | Role::Embedding => matmul::type_suffix(v.ty).is_some(),
        };
        if !supported {
            return Err(Error::UnsupportedType {
                name: v.name.to_string(),
                ty: v.ty.name(),
                backend: "cuda",
                role: role.name(),
            });
        }
        let w = CudaWeight {
            name: v.name.to_string(),
            ty: v.ty,
            rows: v.rows,
            cols: v.cols,
            data: self.upload(&v)?,
        };
        if !matches!(role, Role::Norm) {
            // Sized while the model loads, before any decode step can be recorded (a tied
            // embedding table is also the output matmul).
            matmul::reserve_q8(&self.dev, &w)?;
        }
        Ok(w)
    }

    fn buf(&self, len: usize) -> Result<CudaBuf> {
        // A new buffer may take a dropped one's host address: no Q8 input mark may name it.
        *lock(&self.dev.q8_input) = None;
        self.dev
            .stream
            .alloc_zeros::<f32>(len.max(1))
            .map_err(|e| Error::Cuda(format!("allocating {len} activations: {e}")))
    }

    fn buf_len(&self, buf: &CudaBuf) -> usize {
        buf.len()
    }

    fn read(&self, buf: &CudaBuf, len: usize, out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        out.resize(len, 0.0);
        if !self.dev.failed() {
            let r = self.dev.stream.memcpy_dtoh(&buf.slice(..len), &mut out[..]);
            self.dev.check("reading results", r);
        }
        self.synchronize()
    }

    fn kv_cache(
        &self,
        n_layer: usize,
        n_ctx: usize,
        k_width: usize,
        v_width: usize,
    ) -> Result<CudaKvCache> {
        CudaKvCache::new(&self.dev, n_layer, n_ctx, k_width, v_width).map_err(|e| {
            Error::Cuda(format!(
                "allocating the KV cache ({n_layer} layers × {n_ctx} positions): {e}"
            ))
        })
    }

    fn decode_step(&self, key: StepKey, step: StepInput, ops: impl FnOnce()) {
        if lock(&self.dev.profile).is_some() {
            return self.profiled_step(ops);
        }
        lock(&self.graphs).step(&self.dev, key, step, ops);
    }

    fn embed(&self, table: &CudaWeight, ids: &[u32], scale: f32, out: &mut CudaBuf) {
        if self.dev.failed() {
            return;
        }
        // get_rows reads row ids[t] unchecked: refuse an id past the table here. (A replayed
        // decode step skips this: the executor checks ids against n_vocab, the table's rows.)
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= table.rows) {
            self.dev.fail(format!(
                "token id {bad} is past the {} rows of '{}'",
                table.rows, table.name
            ));
            return;
        }
        if let Some(inputs) = self.dev.captured_inputs() {
            return embed::embed(&self.dev, table, &inputs.ids(), 1, scale, out);
        }
        let mut slot = lock(&self.ids);
        if slot.as_ref().is_none_or(|d| d.len() < ids.len()) {
            let r = self.dev.stream.alloc_zeros::<u32>(ids.len().max(128));
            *slot = self.dev.check("allocating token ids", r);
        }
        let Some(dev_ids) = slot.as_mut() else { return };
        let r = self
            .dev
            .stream
            .memcpy_htod(ids, &mut dev_ids.slice_mut(..ids.len()));
        if self.dev.check("uploading token ids", r).is_none() {
            return;
        }
        self.dev.profile_copy("(copy) token ids");
        embed::embed(&self.dev, table, &dev_ids.slice(..), ids.len(), scale, out);
    }

    fn norm(
        &self,
        spec: NormSpec,
        x: &CudaBuf,
        w: &CudaWeight,
        b: Option<&CudaWeight>,
        rows: usize,
        dim: usize,
        out: &mut CudaBuf,
    ) {
        norm::norm(&self.dev, spec, x, w, b, rows, dim, out);
    }

    fn norm_feeding(
        &self,
        spec: NormSpec,
        x: &CudaBuf,
        w: &CudaWeight,
        b: Option<&CudaWeight>,
        rows: usize,
        dim: usize,
        out: &mut CudaBuf,
        feeds: &[&CudaWeight],
    ) {
        if !norm::norm_q8(&self.dev, spec, x, w, b, rows, dim, out, feeds) {
            norm::norm(&self.dev, spec, x, w, b, rows, dim, out);
        }
    }

    fn norm_inplace(
        &self,
        spec: NormSpec,
        x: &mut CudaBuf,
        w: &CudaWeight,
        rows: usize,
        dim: usize,
    ) {
        norm::norm_inplace(&self.dev, spec, x, w, rows, dim);
    }

    fn matmul(&self, w: &CudaWeight, x: &CudaBuf, n_tok: usize, out: &mut CudaBuf) {
        matmul::matmul(&self.dev, w, x, n_tok, out, matmul::Store::Write);
    }

    fn matmul_many(
        &self,
        ws: &[&CudaWeight],
        x: &CudaBuf,
        n_tok: usize,
        outs: &mut [&mut CudaBuf],
    ) {
        matmul::matmul_many(&self.dev, ws, x, n_tok, outs);
    }

    fn matmul_glu(
        &self,
        act: Activation,
        gate: &CudaWeight,
        up: &CudaWeight,
        x: &CudaBuf,
        n_tok: usize,
        outs: [&mut CudaBuf; 2],
        len: usize,
        out: &mut CudaBuf,
    ) {
        self.matmul_glu_feeding(act, gate, up, x, n_tok, outs, len, out, &[]);
    }

    fn matmul_glu_feeding(
        &self,
        act: Activation,
        gate: &CudaWeight,
        up: &CudaWeight,
        x: &CudaBuf,
        n_tok: usize,
        outs: [&mut CudaBuf; 2],
        len: usize,
        out: &mut CudaBuf,
        next: &[&CudaWeight],
    ) {
        debug_assert_eq!(len, n_tok * gate.rows, "matmul_glu: len is n_tok x rows");
        if !matmul::matvec_glu(&self.dev, act, [gate, up], x, n_tok, out, next) {
            crate::backend::matmul_glu_apart(self, act, gate, up, x, n_tok, outs, len, out);
        }
    }

    fn matmul_add(
        &self,
        w: &CudaWeight,
        x: &CudaBuf,
        n_tok: usize,
        acc: &mut CudaBuf,
        _tmp: &mut CudaBuf,
        len: usize,
    ) {
        debug_assert_eq!(len, n_tok * w.rows, "matmul_add: len is n_tok x rows");
        matmul::matmul(&self.dev, w, x, n_tok, acc, matmul::Store::Add);
    }

    fn matmul_add_norm(
        &self,
        w: &CudaWeight,
        x: &CudaBuf,
        n_tok: usize,
        acc: &mut CudaBuf,
        tmp: &mut CudaBuf,
        len: usize,
        spec: NormSpec,
        nw: &CudaWeight,
        nb: Option<&CudaWeight>,
        dim: usize,
        out: &mut CudaBuf,
        feeds: &[&CudaWeight],
    ) {
        debug_assert_eq!(len, n_tok * w.rows, "matmul_add_norm: len is n_tok x rows");
        let folded = w.rows == dim
            && matmul::matvec_add_norm_q8(&self.dev, w, x, n_tok, acc, spec, nw, nb, out, feeds);
        if !folded {
            self.matmul_add(w, x, n_tok, acc, tmp, len);
            self.norm_feeding(spec, acc, nw, nb, n_tok, dim, out, feeds);
        }
    }

    fn rope(
        &self,
        x: &mut CudaBuf,
        n_tok: usize,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        layout: RopeLayout,
        p: &RopeParams,
    ) {
        if self.dev.failed() || p.n_rot == 0 {
            return;
        }
        self.with_rope_table(p, pos0, n_tok, |cs| {
            rope::rope(&self.dev, x, n_tok, n_heads, head_dim, p.n_rot, layout, cs)
        });
    }

    fn kv_store(
        &self,
        kv: &mut CudaKvCache,
        layer: usize,
        pos0: usize,
        n_tok: usize,
        k: &CudaBuf,
        v: &CudaBuf,
    ) {
        kv.store(&self.dev, layer, pos0, n_tok, k, v);
    }

    fn rope_kv_store(
        &self,
        [q, k]: [&mut CudaBuf; 2],
        v: &CudaBuf,
        kv: &mut CudaKvCache,
        layer: usize,
        pos0: usize,
        n_tok: usize,
        shape: &AttnShape,
        layout: RopeLayout,
        p: &RopeParams,
    ) {
        if self.dev.failed() {
            return;
        }
        if p.n_rot == 0 || !self.dev.fused {
            return crate::backend::rope_kv_store_apart(
                self,
                [q, k],
                v,
                kv,
                layer,
                pos0,
                n_tok,
                shape,
                layout,
                p,
            );
        }
        let heads = attention::RopeHeads::new(shape, p.n_rot, layout);
        self.with_rope_table(p, pos0, n_tok, |cs| {
            kv.rope_store(&self.dev, layer, pos0, n_tok, [q, k], v, &heads, cs)
        });
    }

    fn matmul_rope_kv_store(
        &self,
        ws: [&CudaWeight; 3],
        x: &CudaBuf,
        n_tok: usize,
        [q, k, v]: [&mut CudaBuf; 3],
        kv: &mut CudaKvCache,
        layer: usize,
        pos0: usize,
        shape: &AttnShape,
        layout: RopeLayout,
        p: &RopeParams,
    ) {
        let heads = attention::RopeHeads::new(shape, p.n_rot, layout);
        let (kw, vw) = (kv.k_width, kv.v_width);
        if self.dev.failed() || !matmul::takes_qkv_rope(&self.dev, ws, n_tok, &heads, kw, vw) {
            let outs = [q, k, v];
            return crate::backend::matmul_rope_kv_store_apart(
                self, ws, x, n_tok, outs, kv, layer, pos0, shape, layout, p,
            );
        }
        self.with_rope_table(p, pos0, n_tok, |cs| {
            matmul::matvec_qkv_rope_q8(&self.dev, ws, x, [q, k, v], kv, layer, pos0, &heads, cs)
        });
    }

    fn attention(
        &self,
        q: &CudaBuf,
        kv: &CudaKvCache,
        layer: usize,
        pos0: usize,
        n_tok: usize,
        shape: &AttnShape,
        out: &mut CudaBuf,
    ) {
        attention::attention(&self.dev, q, kv, layer, pos0, n_tok, shape, out, &[]);
    }

    fn attention_feeding(
        &self,
        q: &CudaBuf,
        kv: &CudaKvCache,
        layer: usize,
        pos0: usize,
        n_tok: usize,
        shape: &AttnShape,
        out: &mut CudaBuf,
        feeds: &[&CudaWeight],
    ) {
        attention::attention(&self.dev, q, kv, layer, pos0, n_tok, shape, out, feeds);
    }

    fn add_bias(&self, x: &mut CudaBuf, b: &CudaWeight, rows: usize) {
        norm::add_bias(&self.dev, x, b, rows);
    }

    fn act(&self, act: Activation, x: &mut CudaBuf, len: usize) {
        activation::act(&self.dev, act, x, len);
    }

    fn glu(&self, act: Activation, gate: &CudaBuf, up: &CudaBuf, len: usize, out: &mut CudaBuf) {
        activation::glu(&self.dev, act, gate, up, len, out);
    }

    fn add(&self, x: &mut CudaBuf, y: &CudaBuf, len: usize) {
        activation::add(&self.dev, x, y, len);
    }

    fn softcap(&self, x: &mut CudaBuf, c: f32, len: usize) {
        activation::softcap(&self.dev, x, c, len);
    }

    fn copy_row(&self, x: &CudaBuf, src_row: usize, width: usize, out: &mut CudaBuf) {
        if self.dev.failed() {
            return;
        }
        let r = self.dev.stream.memcpy_dtod(
            &x.slice(src_row * width..(src_row + 1) * width),
            &mut out.slice_mut(..width),
        );
        self.dev.check("copy_row", r);
        self.dev.profile_copy("(copy) copy_row");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cudarc::driver::sys::CUresult;

    #[test]
    fn ptx_header_reads_version_and_target() {
        let ptx = "//\n// Generated by NVIDIA NVVM Compiler\n\n.version 9.5\n.target sm_80\n\
                   .address_size 64\n";
        assert_eq!(ptx_header(ptx), ("9.5".into(), "sm_80".into()));
        assert_eq!(ptx_header("// nothing\n"), ("?".into(), "?".into()));
    }

    #[test]
    fn a_ptx_version_the_driver_cannot_read_says_what_to_do() {
        let ptx = ".version 9.5\n.target sm_80\n";
        let e = DriverError(CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION);
        let msg = module_load_error("matmul", ptx, "13.0", e).to_string();
        assert!(msg.contains("kernels/matmul.cu"), "{msg}");
        assert!(
            msg.contains("CUDA 13.0") && msg.contains("PTX ISA 9.5"),
            "{msg}"
        );
        assert!(msg.contains("TORCHLESS_CUDA_COMPILER=clang"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}
