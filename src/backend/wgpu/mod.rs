//! The wgpu backend (`--backend wgpu`, cargo feature `wgpu`): our own WGSL compute shaders from
//! `shaders/*.wgsl` (validated with naga and embedded by build.rs), run through wgpu on any
//! Vulkan, Metal or DX12 adapter, including Mesa's software Vulkan driver (lavapipe).
//!
//! Weights are uploaded once, byte for byte in their own block format (tied matrices once), and
//! dequantized inside the shaders. A tensor larger than the adapter's
//! `max_storage_buffer_binding_size` is uploaded in parts of whole rows and each op runs once
//! per part. Activations and the f16 KV cache live on the adapter.
//!
//! Every op is recorded into one command encoder without waiting; [`Backend::read`] of the
//! logits submits the whole step at once (one submission per decode step for all layers) and is
//! also where any failure of the recorded work is reported: errors are sticky, and after the
//! first, ops return at once.
//!
//! Dispatch parameters travel as immediates (push constants), which every shader declares with
//! `var<immediate>`; an adapter without the `IMMEDIATES` feature is refused with a clear error.
//!
//! One file per op family, each a set of dispatch wrappers for the shader of the same name in
//! `shaders/`: [`matmul`], [`embed`], [`norm`], [`rope`], [`activation`], [`attention`].

pub mod activation;
pub mod attention;
pub mod embed;
pub mod matmul;
pub mod norm;
pub mod rope;

/// The composed WGSL of every op family, validated and embedded by build.rs.
mod wgsl {
    use super::{Module, ModuleNeeds};
    include!(concat!(env!("OUT_DIR"), "/shaders.rs"));
}

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use self::attention::WgpuKvCache;
use super::rope_tables::RopeTables;
use super::{AttnShape, Backend, NormSpec};
use crate::error::{Error, Result};
use crate::model::arch::{Activation, RopeLayout};
use crate::model::config::RopeParams;
use crate::model::weights::{Role, WeightView};
use crate::quant::GgmlType;

/// One embedded shader module, validated by build.rs (build/shaders.rs).
pub struct Module {
    /// The op family (or variant) it implements: the name dispatches use.
    pub family: &'static str,
    /// The optional adapter feature it uses: it is built only on devices opened with it.
    pub needs: ModuleNeeds,
    /// The composed WGSL.
    pub wgsl: &'static str,
}

/// The optional adapter feature a shader module uses (build.rs validates it with that naga
/// capability and every other module without it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleNeeds {
    /// Nothing beyond what the backend always requires.
    Base,
    /// Subgroup operations (`matvec_subgroup`).
    Subgroup,
    /// The `f16` type (`matmul_f16`).
    F16,
}

impl ModuleNeeds {
    /// The wgpu feature it needs (empty for `Base`).
    pub fn feature(self) -> wgpu::Features {
        match self {
            ModuleNeeds::Base => wgpu::Features::empty(),
            ModuleNeeds::Subgroup => wgpu::Features::SUBGROUP,
            ModuleNeeds::F16 => wgpu::Features::SHADER_F16,
        }
    }
}

/// Every embedded shader module.
pub fn shader_modules() -> &'static [Module] {
    wgsl::MODULES
}

/// Shader variants forced for a backend instead of chosen for its adapter (tests run every
/// variant the adapter can on one adapter this way).
#[derive(Clone, Copy, Debug, Default)]
pub struct ShaderChoice {
    /// The prefill matmul shader (`None`: [`matmul::Prefill::choose`]).
    pub prefill: Option<matmul::Prefill>,
    /// The decode matvec shader (`None`: [`matmul::Matvec::choose`]).
    pub matvec: Option<matmul::Matvec>,
}

/// An activation buffer on the adapter: `len` f32 values.
pub struct WgpuBuf {
    pub(crate) buf: wgpu::Buffer,
    len: usize,
}

/// Rows `row0 .. row0 + rows` of a weight, in one buffer (one storage binding).
pub struct Part {
    pub(crate) buf: wgpu::Buffer,
    pub(crate) row0: usize,
    pub(crate) rows: usize,
}

/// A weight on the adapter: its bytes exactly as in the file, in parts of whole rows that each
/// fit one storage binding.
pub struct WgpuWeight {
    /// Tensor name (for error messages).
    pub name: String,
    /// Storage type of the bytes.
    pub ty: GgmlType,
    /// Output rows (1 for a vector).
    pub rows: usize,
    /// Values per row.
    pub cols: usize,
    /// Bytes per row.
    pub row_bytes: usize,
    /// The parts, shared between views of the same tensor (a tied embedding and output).
    pub(crate) parts: Arc<[Part]>,
}

/// The weight types the matmul and embedding shaders decode (quant.wgsl): every GGUF weight
/// type.
pub const WEIGHT_TYPES: &[GgmlType] = &GgmlType::WEIGHTS;

/// The adapter's limits that decide what runs (and how tensors are split).
#[derive(Clone, Debug, Serialize)]
pub struct LimitsReport {
    /// Largest storage binding in bytes: bigger tensors are split into parts.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer in bytes.
    pub max_buffer_size: u64,
    /// Workgroups per grid dimension.
    pub max_compute_workgroups_per_dimension: u32,
    /// Invocations per workgroup.
    pub max_compute_invocations_per_workgroup: u32,
    /// Workgroup memory in bytes.
    pub max_compute_workgroup_storage_size: u32,
    /// Immediate (push-constant) bytes per pipeline.
    pub max_immediate_size: u32,
}

/// What the adapter is and what it offers (`torchless info --backend wgpu`).
#[derive(Clone, Debug, Serialize)]
pub struct AdapterReport {
    /// Index among the adapters found (`--device`).
    pub index: usize,
    /// Adapter name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// Graphics API: Vulkan, Metal, Dx12.
    pub api: String,
    /// Discrete, integrated, virtual GPU or CPU (software).
    pub device_type: String,
    /// Driver name and version, as the adapter reports them.
    pub driver: String,
    /// Features the shaders can use that the adapter has (`immediates` is required;
    /// `shader-f16` and `subgroup` are reported).
    pub features: Vec<&'static str>,
    /// The limits that matter to the shaders.
    pub limits: LimitsReport,
    /// Weight types with matmul and embedding shaders.
    pub weight_types: Vec<&'static str>,
    /// The prefill matmul shader chosen for this adapter: `tiled-f16` (f16 workgroup-memory
    /// tiles for quantized weights) where it has `shader-f16`, else `tiled` (f32 tiles); `rows`
    /// (no barriers) only when forced.
    pub prefill_matmul: &'static str,
    /// The decode matvec shader: `subgroup` (shuffles) where the adapter has subgroups of 8 to
    /// 64 invocations, else `workgroup` (workgroup memory and a barrier).
    pub decode_matvec: &'static str,
    /// The adapter's subgroup sizes, smallest and largest.
    pub subgroup_sizes: [u32; 2],
}

/// The device, its queue, the shader modules, the encoder being recorded and the sticky error,
/// shared by the op wrappers.
pub(crate) struct Gpu {
    pub(crate) device: wgpu::Device,
    queue: wgpu::Queue,
    modules: HashMap<&'static str, wgpu::ShaderModule>,
    pipelines: Mutex<HashMap<(&'static str, u32), Arc<Pipe>>>,
    /// Work recorded since the last submission.
    pending: Mutex<Option<wgpu::CommandEncoder>>,
    /// The read-back buffer, grown as needed.
    staging: Mutex<Option<wgpu::Buffer>>,
    /// Quantized activations of the current matmul (see `matmul::matmul`), grown as needed.
    /// One buffer serves every call: recorded passes run in order, with barriers between them.
    scratch: Mutex<Option<wgpu::Buffer>>,
    error: Arc<Mutex<Option<String>>>,
    pub(crate) limits: wgpu::Limits,
    /// The prefill matmul shader for this adapter.
    pub(crate) prefill: matmul::Prefill,
    /// The decode matvec shader for this adapter.
    pub(crate) matvec: matmul::Matvec,
}

/// A compute pipeline and the layout of its bind group 0.
struct Pipe {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// `wtype` of a pipeline with no weight-type specialisation.
pub(crate) const NO_WTYPE: u32 = u32::MAX;

/// Workgroups for `n` groups of work, spread over x and y when `n` exceeds the per-dimension
/// limit (the shaders compute the group index as `wid.x + wid.y * num_workgroups.x` and check it
/// against the real count).
pub(crate) fn grid(n: usize, max_dim: u32) -> [u32; 3] {
    let max = max_dim.max(1) as usize;
    let n = n.max(1);
    let y = n.div_ceil(max);
    [n.div_ceil(y) as u32, y as u32, 1]
}

/// The bits of an f32 parameter.
pub(crate) fn f(v: f32) -> u32 {
    v.to_bits()
}

/// A size or index as a shader `u32` (every size the backend passes is bounded by a storage
/// binding, which is far below 4 G elements).
pub(crate) fn u(v: usize) -> u32 {
    u32::try_from(v).expect("shader sizes fit in u32 (bounded by a storage binding)")
}

impl Gpu {
    /// Records the first error (sticky, reported by the next `read`).
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

    /// The pipeline of `entry` in `family`'s module, specialised to weight type `wtype`
    /// (`NO_WTYPE`: none), created on first use.
    fn pipe(&self, family: &'static str, entry: &'static str, wtype: u32) -> Option<Arc<Pipe>> {
        if let Some(p) = lock(&self.pipelines).get(&(entry, wtype)) {
            return Some(p.clone());
        }
        let Some(module) = self.modules.get(family) else {
            self.fail(format!(
                "no shader module {family} (build table out of sync)"
            ));
            return None;
        };
        let constants = [("WTYPE", wtype as f64)];
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: if wtype == NO_WTYPE { &[] } else { &constants },
                    // Every shader writes workgroup memory before reading it.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            self.fail(format!("shader {family}::{entry} was rejected: {e}"));
            return None;
        }
        let layout = pipeline.get_bind_group_layout(0);
        let p = Arc::new(Pipe { pipeline, layout });
        lock(&self.pipelines).insert((entry, wtype), p.clone());
        Some(p)
    }

    /// Records one dispatch of `entry` (bindings by number, parameters as u32 words) into the
    /// pending encoder.
    pub(crate) fn dispatch(
        &self,
        family: &'static str,
        entry: &'static str,
        wtype: u32,
        bindings: &[(u32, &wgpu::Buffer)],
        params: &[u32],
        groups: [u32; 3],
    ) {
        if self.failed() || groups.contains(&0) {
            return;
        }
        let Some(pipe) = self.pipe(family, entry, wtype) else {
            return;
        };
        let entries: Vec<wgpu::BindGroupEntry<'_>> = bindings
            .iter()
            .map(|&(binding, buf)| wgpu::BindGroupEntry {
                binding,
                resource: buf.as_entire_binding(),
            })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &pipe.layout,
            entries: &entries,
        });
        self.record(|enc| {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(entry),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipe.pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.set_immediates(0, bytemuck::cast_slice(params));
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        });
    }

    /// Runs `f` on the pending encoder (created if there is none).
    pub(crate) fn record(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        let mut slot = lock(&self.pending);
        let enc = slot.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        f(enc);
    }

    /// Submits everything recorded so far.
    fn submit(&self) {
        if let Some(enc) = lock(&self.pending).take() {
            self.queue.submit([enc.finish()]);
        }
    }

    /// Waits for all submitted work.
    fn wait(&self) -> std::result::Result<(), String> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            })
            .map(|_| ())
            .map_err(|e| format!("waiting for the adapter: {e}"))
    }

    /// A storage buffer holding `data` (its size rounded up to 4 bytes), written through a
    /// mapping at creation (no staging copy). Running out of adapter memory is an error naming
    /// `what`.
    fn storage_init(&self, what: &str, data: &[u8]) -> Result<wgpu::Buffer> {
        let size = data.len().div_ceil(4).max(1) * 4;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: size as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: true,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Wgpu(format!(
                "the model does not fit on the adapter: {what} needs {} MiB ({e})",
                size >> 20
            )));
        }
        {
            let mut view = buf
                .get_mapped_range_mut(..)
                .map_err(|e| Error::Wgpu(format!("mapping {what}: {e}")))?;
            // The padding stays zero: buffers mapped at creation start zeroed.
            view.slice(..data.len()).copy_from_slice(data);
        }
        buf.unmap();
        Ok(buf)
    }

    /// A zeroed storage buffer of `bytes` (wgpu zero-initialises new buffers).
    pub(crate) fn storage_zeroed(&self, what: &str, bytes: usize) -> Result<wgpu::Buffer> {
        let max = self.limits.max_storage_buffer_binding_size;
        let size = (bytes.div_ceil(4).max(1) * 4) as u64;
        if size > max {
            return Err(Error::Wgpu(format!(
                "{what} needs {size} bytes, more than the adapter's \
                 max_storage_buffer_binding_size of {max} bytes; use a smaller context (--ctx)"
            )));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        match pollster::block_on(scope.pop()) {
            Some(e) => Err(Error::Wgpu(format!(
                "allocating {what} ({} MiB): {e}",
                size >> 20
            ))),
            None => Ok(buf),
        }
    }

    /// The activation scratch buffer, at least `len` f32 values (a handle to it: wgpu keeps a
    /// replaced buffer alive until the work recorded with it has run).
    pub(crate) fn act_scratch(&self, len: usize) -> Option<wgpu::Buffer> {
        let mut slot = lock(&self.scratch);
        if slot.as_ref().is_none_or(|b| b.size() < (len * 4) as u64) {
            match self.storage_zeroed("the activation scratch buffer", len * 4) {
                Ok(b) => *slot = Some(b),
                Err(e) => {
                    self.fail(e.to_string());
                    return None;
                }
            }
        }
        slot.clone()
    }

    /// A small read-only buffer holding `words` (token ids), created for one dispatch: the
    /// recorded work runs later, so a shared buffer rewritten per call would be overwritten
    /// before a second call's work ran.
    pub(crate) fn upload_words(&self, what: &str, words: &[u32]) -> Option<wgpu::Buffer> {
        let r = self.storage_init(what, bytemuck::cast_slice(words));
        match r {
            Ok(b) => Some(b),
            Err(e) => {
                self.fail(e.to_string());
                None
            }
        }
    }

    /// Upload f32 values (RoPE tables).
    pub(crate) fn upload_f32(&self, what: &str, vals: &[f32]) -> Option<wgpu::Buffer> {
        let r = self.storage_init(what, bytemuck::cast_slice(vals));
        match r {
            Ok(b) => Some(b),
            Err(e) => {
                self.fail(e.to_string());
                None
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A tensor's bytes by (map address, start, len).
type UploadKey = (usize, usize, usize);
/// The map is kept alive with its upload so its address cannot be reused by another map while
/// the key is cached.
type Upload = (Arc<memmap2::Mmap>, Arc<[Part]>);

/// The wgpu implementation of [`Backend`] on one adapter.
pub struct WgpuBackend {
    gpu: Gpu,
    report: AdapterReport,
    uploads: Mutex<HashMap<UploadKey, Upload>>,
    rope: Mutex<RopeTables<wgpu::Buffer>>,
}

/// The graphics APIs searched for adapters: Vulkan, Metal, DX12 (and WebGPU in a browser), or
/// what `WGPU_BACKEND` names.
fn backends() -> wgpu::Backends {
    wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY)
}

/// Every adapter of the graphics APIs searched (Vulkan, Metal, DX12, or what `WGPU_BACKEND`
/// names), in the order `--device` numbers them.
pub fn adapters() -> Vec<wgpu::Adapter> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends();
    let instance = wgpu::Instance::new(desc);
    pollster::block_on(instance.enumerate_adapters(backends()))
}

/// Feature names for the report, in the order the shaders care about them.
fn feature_names(f: wgpu::Features) -> Vec<&'static str> {
    let mut v = Vec::new();
    if f.contains(wgpu::Features::IMMEDIATES) {
        v.push("immediates");
    }
    if f.contains(wgpu::Features::SHADER_F16) {
        v.push("shader-f16");
    }
    if f.contains(wgpu::Features::SUBGROUP) {
        v.push("subgroup");
    }
    v
}

impl WgpuBackend {
    /// Opens adapter `index` (see [`adapters`]): checks it has what the shaders need and builds
    /// every shader module. No adapter, or one without the required feature, is a one-line error.
    pub fn new(index: usize) -> Result<Self> {
        Self::with_shaders(index, ShaderChoice::default())
    }

    /// As [`WgpuBackend::new`], with the shader variants `choice` names forced. Forcing one the
    /// adapter cannot run is an error.
    pub fn with_shaders(index: usize, choice: ShaderChoice) -> Result<Self> {
        let mut found = adapters();
        if found.is_empty() {
            return Err(Error::Wgpu(
                "no GPU adapter found (Vulkan, Metal or DX12): install a GPU driver (on Debian/Ubuntu \
                 Mesa's software Vulkan driver works: `apt-get install mesa-vulkan-drivers \
                 libvulkan1`), or use --backend cpu"
                    .into(),
            ));
        }
        if index >= found.len() {
            let names: Vec<String> = found
                .iter()
                .enumerate()
                .map(|(i, a)| format!("{i}: {}", a.get_info().name))
                .collect();
            return Err(Error::Wgpu(format!(
                "--device {index}: only {} adapter(s) ({})",
                found.len(),
                names.join(", ")
            )));
        }
        let adapter = found.swap_remove(index);
        let info = adapter.get_info();
        let features = adapter.features();
        if !features.contains(wgpu::Features::IMMEDIATES) {
            return Err(Error::Wgpu(format!(
                "adapter '{}' ({:?}) lacks the `immediates` feature (push constants), which every \
                 shader uses for its parameters; update its driver or use --backend cpu",
                info.name, info.backend
            )));
        }
        let limits = adapter.limits();
        let prefill =
            matmul::Prefill::choose(choice.prefill, features, &info.name).map_err(Error::Wgpu)?;
        let matvec = matmul::Matvec::choose(choice.matvec, features, &info).map_err(Error::Wgpu)?;
        // The device gets only the optional features the chosen shaders use, and the modules
        // that need others are not built.
        let mut required_features = wgpu::Features::IMMEDIATES;
        if matvec == matmul::Matvec::Subgroup {
            required_features |= wgpu::Features::SUBGROUP;
        }
        if prefill == matmul::Prefill::TiledF16 {
            required_features |= wgpu::Features::SHADER_F16;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("torchless"),
            required_features,
            // The adapter's own limits: the largest bindings and buffers it allows.
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Wgpu(format!("cannot open adapter '{}': {e}", info.name)))?;
        let error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let sink = error.clone();
        // Errors of recorded work arrive here (wgpu's default handler panics); keep the first.
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = lock(&sink);
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));
        let mut modules = HashMap::new();
        for m in wgsl::MODULES {
            if !required_features.contains(m.needs.feature()) {
                continue;
            }
            let (family, src) = (&m.family, m.wgsl);
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(family),
                source: wgpu::ShaderSource::Wgsl(std::borrow::Cow::Borrowed(src)),
            });
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(Error::Wgpu(format!(
                    "adapter '{}' rejected shaders/{family}.wgsl: {e}",
                    info.name
                )));
            }
            modules.insert(*family, module);
        }
        let report = AdapterReport {
            index,
            name: info.name.clone(),
            api: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            features: feature_names(features),
            limits: LimitsReport {
                max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
                max_buffer_size: limits.max_buffer_size,
                max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
                max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
                max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
                max_immediate_size: limits.max_immediate_size,
            },
            weight_types: WEIGHT_TYPES.iter().map(|t| t.name()).collect(),
            prefill_matmul: prefill.name(),
            decode_matvec: matvec.name(),
            subgroup_sizes: [info.subgroup_min_size, info.subgroup_max_size],
        };
        Ok(WgpuBackend {
            gpu: Gpu {
                device,
                queue,
                modules,
                pipelines: Mutex::new(HashMap::new()),
                pending: Mutex::new(None),
                staging: Mutex::new(None),
                scratch: Mutex::new(None),
                error,
                limits,
                prefill,
                matvec,
            },
            report,
            uploads: Mutex::new(HashMap::new()),
            rope: Mutex::new(RopeTables::default()),
        })
    }

    /// The adapter and what it supports.
    pub fn adapter_report(&self) -> &AdapterReport {
        &self.report
    }

    /// Buffer-to-buffer copy bandwidth in bytes/s, counting bytes read and written (as the CUDA
    /// backend does; `bench` compares decode's weight reads against it): the best of 5 copies.
    pub fn copy_bandwidth(&self) -> Result<f64> {
        let bytes = (256usize << 20).min(self.gpu.limits.max_buffer_size as usize / 2);
        let src = self.gpu.storage_zeroed_unbound("bandwidth probe", bytes)?;
        let dst = self.gpu.storage_zeroed_unbound("bandwidth probe", bytes)?;
        let mut best = f64::MAX;
        for _ in 0..6 {
            self.synchronize()?;
            let t0 = std::time::Instant::now();
            self.gpu
                .record(|enc| enc.copy_buffer_to_buffer(&src, 0, &dst, 0, bytes as u64));
            self.synchronize()?;
            best = best.min(t0.elapsed().as_secs_f64());
        }
        Ok(2.0 * bytes as f64 / best)
    }

    /// Submits everything recorded and waits for it; reports the first failure.
    pub fn synchronize(&self) -> Result<()> {
        self.gpu.submit();
        if let Err(e) = self.gpu.wait() {
            self.gpu.fail(e);
        }
        match self.gpu.take_error() {
            Some(e) => Err(Error::Wgpu(e)),
            None => Ok(()),
        }
    }

    fn upload(&self, v: &WeightView<'_>, row_bytes: usize) -> Result<Arc<[Part]>> {
        let key = (Arc::as_ptr(v.map) as usize, v.start, v.len);
        if let Some((_, d)) = lock(&self.uploads).get(&key) {
            return Ok(d.clone());
        }
        let max = self
            .gpu
            .limits
            .max_storage_buffer_binding_size
            .min(self.gpu.limits.max_buffer_size);
        // Whole rows per part, leaving room to pad the part to 4 bytes.
        let rows_per_part = (max as usize).saturating_sub(4) / row_bytes.max(1);
        if rows_per_part == 0 {
            return Err(Error::Wgpu(format!(
                "a row of tensor '{}' ({} bytes of {}) is larger than the adapter's \
                 max_storage_buffer_binding_size ({max} bytes)",
                v.name,
                row_bytes,
                v.ty.name()
            )));
        }
        let bytes = v.bytes();
        let mut parts = Vec::new();
        let mut row0 = 0;
        while row0 < v.rows {
            let rows = rows_per_part.min(v.rows - row0);
            let src = &bytes[row0 * row_bytes..(row0 + rows) * row_bytes];
            let what = if rows == v.rows {
                format!("tensor '{}'", v.name)
            } else {
                format!("tensor '{}' rows {row0}..{}", v.name, row0 + rows)
            };
            let buf = self.gpu.storage_init(&what, src)?;
            parts.push(Part { buf, row0, rows });
            row0 += rows;
        }
        let parts: Arc<[Part]> = parts.into();
        lock(&self.uploads).insert(key, (v.map.clone(), parts.clone()));
        Ok(parts)
    }
}

impl Gpu {
    /// A zeroed buffer that is never bound (only copied), so the binding limit does not apply.
    fn storage_zeroed_unbound(&self, what: &str, bytes: usize) -> Result<wgpu::Buffer> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: bytes as u64,
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        match pollster::block_on(scope.pop()) {
            Some(e) => Err(Error::Wgpu(format!("allocating {what}: {e}"))),
            None => Ok(buf),
        }
    }

    /// Copies `len` f32 values of `buf` back after running everything recorded.
    fn read_back(
        &self,
        buf: &wgpu::Buffer,
        len: usize,
        out: &mut Vec<f32>,
    ) -> std::result::Result<(), String> {
        let bytes = (len * 4) as u64;
        let mut slot = lock(&self.staging);
        if slot.as_ref().is_none_or(|s| s.size() < bytes) {
            *slot = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("read-back"),
                size: bytes.max(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let staging = slot.as_ref().expect("created above");
        self.record(|enc| enc.copy_buffer_to_buffer(buf, 0, staging, 0, bytes));
        self.submit();
        let mapped: Arc<Mutex<Option<std::result::Result<(), wgpu::BufferAsyncError>>>> =
            Arc::new(Mutex::new(None));
        let done = mapped.clone();
        staging.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
            *lock(&done) = Some(r)
        });
        self.wait()?;
        match lock(&mapped).take() {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(format!("reading results back: {e}")),
            None => return Err("reading results back: the mapping never completed".into()),
        }
        {
            let view = staging
                .get_mapped_range(..bytes)
                .map_err(|e| format!("reading results back: {e}"))?;
            out.extend(
                view.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        staging.unmap();
        Ok(())
    }
}

impl Backend for WgpuBackend {
    type Weight = WgpuWeight;
    type Buf = WgpuBuf;
    type KvCache = WgpuKvCache;

    fn name(&self) -> &'static str {
        "wgpu"
    }

    fn describe(&self) -> String {
        let r = &self.report;
        format!(
            "wgpu: {} ({}, {}, {}), features [{}], max binding {} MiB, {} prefill matmul, {} \
             decode matvec",
            r.name,
            r.api,
            r.device_type,
            r.driver,
            r.features.join(", "),
            r.limits.max_storage_buffer_binding_size >> 20,
            r.prefill_matmul,
            r.decode_matvec
        )
    }

    fn weight(&self, v: WeightView<'_>, role: Role) -> Result<WgpuWeight> {
        let supported = match role {
            Role::Norm => matches!(v.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16),
            Role::Matmul | Role::Embedding => WEIGHT_TYPES.contains(&v.ty),
        };
        if !supported {
            return Err(Error::UnsupportedType {
                name: v.name.to_string(),
                ty: v.ty.name(),
                backend: "wgpu",
                role: role.name(),
            });
        }
        let row_bytes = v.ty.row_bytes(v.cols).ok_or_else(|| {
            Error::Wgpu(format!(
                "tensor '{}': {} values per row is not a whole number of {} blocks",
                v.name,
                v.cols,
                v.ty.name()
            ))
        })?;
        Ok(WgpuWeight {
            name: v.name.to_string(),
            ty: v.ty,
            rows: v.rows,
            cols: v.cols,
            row_bytes,
            parts: self.upload(&v, row_bytes)?,
        })
    }

    fn buf(&self, len: usize) -> Result<WgpuBuf> {
        let buf = self
            .gpu
            .storage_zeroed(&format!("an activation buffer of {len} values"), len * 4)?;
        Ok(WgpuBuf { buf, len })
    }

    fn buf_len(&self, buf: &WgpuBuf) -> usize {
        buf.len
    }

    fn read(&self, buf: &WgpuBuf, len: usize, out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        if !self.gpu.failed() && len > 0 {
            if let Err(e) = self.gpu.read_back(&buf.buf, len.min(buf.len), out) {
                self.gpu.fail(e);
            }
        }
        self.synchronize()?;
        out.resize(len, 0.0);
        Ok(())
    }

    fn kv_cache(
        &self,
        n_layer: usize,
        n_ctx: usize,
        k_width: usize,
        v_width: usize,
    ) -> Result<WgpuKvCache> {
        WgpuKvCache::new(&self.gpu, n_layer, n_ctx, k_width, v_width)
    }

    fn embed(&self, table: &WgpuWeight, ids: &[u32], scale: f32, out: &mut WgpuBuf) {
        if self.gpu.failed() {
            return;
        }
        // get_rows reads row ids[t] of its part: refuse an id past the table here.
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= table.rows) {
            self.gpu.fail(format!(
                "token id {bad} is past the {} rows of '{}'",
                table.rows, table.name
            ));
            return;
        }
        embed::embed(&self.gpu, table, ids, scale, out);
    }

    fn norm(
        &self,
        spec: NormSpec,
        x: &WgpuBuf,
        w: &WgpuWeight,
        b: Option<&WgpuWeight>,
        rows: usize,
        dim: usize,
        out: &mut WgpuBuf,
    ) {
        norm::norm(&self.gpu, spec, x, w, b, rows, dim, out);
    }

    fn norm_inplace(
        &self,
        spec: NormSpec,
        x: &mut WgpuBuf,
        w: &WgpuWeight,
        rows: usize,
        dim: usize,
    ) {
        norm::norm_inplace(&self.gpu, spec, x, w, rows, dim);
    }

    fn matmul(&self, w: &WgpuWeight, x: &WgpuBuf, n_tok: usize, out: &mut WgpuBuf) {
        matmul::matmul(&self.gpu, w, x, n_tok, out);
    }

    fn rope(
        &self,
        x: &mut WgpuBuf,
        n_tok: usize,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        layout: RopeLayout,
        p: &RopeParams,
    ) {
        if self.gpu.failed() || p.n_rot == 0 {
            return;
        }
        let table =
            lock(&self.rope).get(p, pos0, n_tok, |cs| self.gpu.upload_f32("rope table", cs));
        let Some(cs) = table else {
            return;
        };
        rope::rope(&self.gpu, x, n_tok, n_heads, head_dim, p.n_rot, layout, &cs);
    }

    fn kv_store(
        &self,
        kv: &mut WgpuKvCache,
        layer: usize,
        pos0: usize,
        n_tok: usize,
        k: &WgpuBuf,
        v: &WgpuBuf,
    ) {
        kv.store(&self.gpu, layer, pos0, n_tok, k, v);
    }

    fn attention(
        &self,
        q: &WgpuBuf,
        kv: &WgpuKvCache,
        layer: usize,
        pos0: usize,
        n_tok: usize,
        shape: &AttnShape,
        out: &mut WgpuBuf,
    ) {
        attention::attention(&self.gpu, q, kv, layer, pos0, n_tok, shape, out);
    }

    fn add_bias(&self, x: &mut WgpuBuf, b: &WgpuWeight, rows: usize) {
        norm::add_bias(&self.gpu, x, b, rows);
    }

    fn act(&self, act: Activation, x: &mut WgpuBuf, len: usize) {
        activation::act(&self.gpu, act, x, len);
    }

    fn glu(&self, act: Activation, gate: &WgpuBuf, up: &WgpuBuf, len: usize, out: &mut WgpuBuf) {
        activation::glu(&self.gpu, act, gate, up, len, out);
    }

    fn add(&self, x: &mut WgpuBuf, y: &WgpuBuf, len: usize) {
        activation::add(&self.gpu, x, y, len);
    }

    fn softcap(&self, x: &mut WgpuBuf, c: f32, len: usize) {
        activation::softcap(&self.gpu, x, c, len);
    }

    fn copy_row(&self, x: &WgpuBuf, src_row: usize, width: usize, out: &mut WgpuBuf) {
        if self.gpu.failed() {
            return;
        }
        let (src, dst) = (&x.buf, &out.buf);
        self.gpu.record(|enc| {
            enc.copy_buffer_to_buffer(
                src,
                (src_row * width * 4) as u64,
                dst,
                0,
                (width * 4) as u64,
            )
        });
    }
}
