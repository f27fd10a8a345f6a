//! Kernel launches. Each op wrapper names its kernel (`Dev::kernel`), pushes its
//! arguments and launches. On devices with programmatic dependent launch (PDL: compute
//! capability 9.0 and newer, driver 12.3 and newer) every kernel is launched so that it may start
//! while the kernel before it in the stream is still finishing.
//!
//! Why: a decode step is a few hundred short kernels (a 7B layer's output projection reads 9 MB,
//! about 3 µs of H100 bandwidth), so the gap between one kernel's last block and the next one's
//! first block is a large share of the step. With PDL the next kernel's launch and block
//! scheduling overlap the tail of the one before it.
//!
//! How: every kernel starts with `tl_kernel_start()` (kernels/prelude.cuh), which waits for the
//! kernels before it to complete before it touches memory, then lets the next one launch. The
//! kernels are built for sm_80 at PTX ISA 7.5, which cannot name those instructions, so the PTX
//! carries them as the comments [`WAIT_MARK`] and [`LAUNCH_MARK`]; [`ptx_for_pdl`] turns them
//! into `griddepcontrol.wait` / `griddepcontrol.launch_dependents` and the module into sm_90 PTX
//! (ISA 7.8) when the backend loads it on such a device. A kernel whose PTX does not wait before
//! its first memory access ([`entries_without_wait`]) is launched the ordinary way. PDL is off
//! unless `TORCHLESS_CUDA_PDL=on` asks for it: on an H100 (2026-11-24, docs/performance.md) it
//! made prefill and the float decode matvec slower and the int8 one no faster, since each
//! kernel lets the next launch at its start and the next kernel's waiting blocks then hold SM
//! slots the running one's later waves need.
//!
//! Before its wait, a decode matvec may only ask L2 for the weight rows it reads first
//! (`tl_prefetch_l2`): a kernel that launched early then spends the tail of the one before it
//! fetching its weights instead of idling. The PTX carries those requests as [`PREFETCH_MARK`]
//! comments too, which [`ptx_for_pdl`] turns into `prefetch.L2` when asked
//! (`TORCHLESS_CUDA_PREFETCH=off` keeps them comments).
//!
//! Where a kernel lets the next one launch is [`PdlTrigger`] (`TORCHLESS_CUDA_PDL_TRIGGER`):
//! right after its wait, or only as its blocks exit (the launch mark left a comment), which
//! keeps the next kernel's blocks off the SMs until this one's last block ends and still
//! overlaps the next launch with this kernel's memory flush.

use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::driver::sys;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, DevicePtr, DriverError,
    LaunchConfig,
};

use super::profile::{self, Profiler};

/// The PTX comment that `griddepcontrol.wait` replaces.
pub const WAIT_MARK: &str = "// tl-pdl-wait";
/// The PTX comment that `griddepcontrol.launch_dependents` replaces.
pub const LAUNCH_MARK: &str = "// tl-pdl-launch";
/// The PTX comment, followed by an address register, that `prefetch.L2 [register]` replaces.
pub const PREFETCH_MARK: &str = "// tl-pdl-prefetch";
/// The first compute capability with PDL (`griddepcontrol` needs sm_90).
pub(crate) const PDL_MIN_COMPUTE: (i32, i32) = (9, 0);
/// The first driver (cuDriverGetVersion) that records PDL launches into a graph as programmatic
/// edges (CUDA 12.3).
pub(crate) const PDL_MIN_DRIVER: i32 = 12030;
/// The PTX ISA and target that have `griddepcontrol`.
const PDL_ISA: (u32, u32) = (7, 8);
const PDL_TARGET: u32 = 90;

/// Where a kernel launched with PDL lets the next kernel launch (`TORCHLESS_CUDA_PDL_TRIGGER`).
/// The results are the same either way: every kernel still waits for the one before it to
/// complete before it touches memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PdlTrigger {
    /// Right after its wait (`griddepcontrol.launch_dependents`): the next kernel may launch
    /// once every block of this one has started, and its blocks wait on the SMs they find free.
    Start,
    /// No explicit trigger: a block counts as triggering when it exits, so the next kernel
    /// launches as this one's last block ends and waits only for its memory flush.
    Exit,
}

impl PdlTrigger {
    /// The value of `TORCHLESS_CUDA_PDL_TRIGGER` that selects it.
    pub fn name(self) -> &'static str {
        match self {
            PdlTrigger::Start => "start",
            PdlTrigger::Exit => "exit",
        }
    }
}

/// A module's PTX for a device with PDL: the wait mark becomes `griddepcontrol.wait`, the launch
/// mark `griddepcontrol.launch_dependents` with [`PdlTrigger::Start`] (a comment still with
/// `Exit`), the target at least sm_90 and the ISA at least 7.8 (PTX of an older target is valid
/// PTX of a newer one), and with `prefetch` the prefetch marks `prefetch.L2` (generic addressing:
/// the register holds a generic address). Errors when the header has no `.version` or `.target`
/// it can read, or a prefetch mark names no register.
pub fn ptx_for_pdl(
    ptx: &str,
    prefetch: bool,
    trigger: PdlTrigger,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(ptx.len() + 4096);
    let (mut version, mut target) = (false, false);
    for line in ptx.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix(".version ") {
            let (major, minor) = v
                .split_whitespace()
                .next()
                .unwrap_or("")
                .split_once('.')
                .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
                .ok_or_else(|| format!("unreadable PTX header line {line:?}"))?;
            let (major, minor) = (major, minor).max(PDL_ISA);
            out.push_str(&format!(".version {major}.{minor}\n"));
            version = true;
        } else if let Some(v) = t.strip_prefix(".target sm_") {
            let (sm, rest) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
            let sm: u32 = sm
                .parse()
                .map_err(|_| format!("unreadable PTX header line {line:?}"))?;
            out.push_str(&format!(".target sm_{}{rest}\n", sm.max(PDL_TARGET)));
            target = true;
        } else if t == WAIT_MARK {
            out.push_str("\tgriddepcontrol.wait;\n");
        } else if t == LAUNCH_MARK && trigger == PdlTrigger::Start {
            out.push_str("\tgriddepcontrol.launch_dependents;\n");
        } else if let Some(reg) = t.strip_prefix(PREFETCH_MARK) {
            let reg = reg.trim();
            // A register name (`%rd12`), not an operand the compiler left unfilled (`%0`).
            let is_reg = reg.strip_prefix('%').is_some_and(|r| {
                r.starts_with(|c: char| c.is_ascii_alphabetic())
                    && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
            if !is_reg {
                return Err(format!(
                    "a prefetch mark without an address register: {line:?}"
                ));
            }
            if prefetch {
                out.push_str(&format!("\tprefetch.L2 [{reg}];\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !(version && target) {
        return Err("the PTX has no .version / .target header".into());
    }
    Ok(out)
}

/// The entry points of a PTX text that may not be launched with PDL: those with no
/// [`WAIT_MARK`], or with a memory access before it (`touches_memory`). Such a kernel could read
/// an input before the kernel writing it has finished. This scan, not the source, is what
/// guarantees the order: the compiler may move a load through a `const __restrict__` pointer
/// above the mark's inline asm, since no memory clobber can alias it.
pub fn entries_without_wait(ptx: &str) -> Vec<String> {
    let mut bad = Vec::new();
    // (name, whether the mark has been seen, whether a memory access came first)
    let mut cur: Option<(String, bool, bool)> = None;
    let finish = |cur: Option<(String, bool, bool)>, bad: &mut Vec<String>| {
        if let Some((name, seen, early)) = cur {
            if !seen || early {
                bad.push(name);
            }
        }
    };
    for line in ptx.lines() {
        let t = line.trim();
        if let Some(rest) = t
            .strip_prefix(".visible .entry ")
            .or_else(|| t.strip_prefix(".entry "))
        {
            finish(cur.take(), &mut bad);
            let name = rest.split('(').next().unwrap_or(rest).trim().to_string();
            cur = Some((name, false, false));
            continue;
        }
        let Some((_, seen, early)) = cur.as_mut() else {
            continue;
        };
        if *seen {
            continue;
        }
        if t == WAIT_MARK {
            *seen = true;
        } else if touches_memory(t) {
            *early = true;
        }
    }
    finish(cur, &mut bad);
    bad
}

/// Whether a line of PTX may read or write memory other than kernel parameters: a load (other
/// than `ld.param`), a store, an atomic or reduction, an async copy, a prefetch, a texture or
/// surface access, or a call (whose body is not scanned). Looks at every instruction of the
/// line, past labels, braces and guard predicates.
fn touches_memory(line: &str) -> bool {
    const OPS: &[&str] = &[
        "ld.", "ldu.", "st.", "atom.", "red.", "cp.", "prefetch", "tex.", "tld4.", "suld.",
        "sust.", "sured.", "call",
    ];
    let code = line.split("//").next().unwrap_or("");
    code.split(';').any(|stmt| {
        let mut op = stmt.trim_start_matches(|c: char| c.is_whitespace() || c == '{' || c == '}');
        // A label (`$L__BB0_2:`) may start the line.
        if let Some((head, rest)) = op.split_once(':') {
            if !head.contains(char::is_whitespace) && !head.is_empty() {
                op = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '{');
            }
        }
        // A guard predicate (`@%p1 ld.global...`) comes first.
        if op.starts_with('@') {
            op = op
                .split_once(char::is_whitespace)
                .map_or("", |(_, o)| o)
                .trim_start();
        }
        !op.starts_with("ld.param") && OPS.iter().any(|p| op.starts_with(p))
    })
}

/// A loaded kernel, and whether it is launched with PDL.
pub(crate) struct Kernel {
    pub(crate) f: CudaFunction,
    pub(crate) pdl: bool,
}

/// A value a kernel takes as an argument: a device buffer's address, or a scalar.
pub(crate) trait KernelArg {
    /// The argument's bytes, in the low bytes of a u64 (the driver reads as many as the
    /// kernel's parameter has; the host is little-endian, as every CUDA host is).
    fn bits(&self, stream: &CudaStream) -> u64;
}

impl<T> KernelArg for &CudaSlice<T> {
    fn bits(&self, stream: &CudaStream) -> u64 {
        self.device_ptr(stream).0
    }
}

// The written buffers take `device_ptr` too: its `SyncOnDrop` (dropped before the launch) and
// `device_ptr_mut`'s differ only in the cross-stream events, which this backend turns off
// (`disable_event_tracking`: one stream).
impl<T> KernelArg for &mut CudaSlice<T> {
    fn bits(&self, stream: &CudaStream) -> u64 {
        self.device_ptr(stream).0
    }
}

impl<T> KernelArg for &CudaView<'_, T> {
    fn bits(&self, stream: &CudaStream) -> u64 {
        self.device_ptr(stream).0
    }
}

impl KernelArg for &i32 {
    fn bits(&self, _: &CudaStream) -> u64 {
        u64::from(**self as u32)
    }
}

impl KernelArg for &u32 {
    fn bits(&self, _: &CudaStream) -> u64 {
        u64::from(**self)
    }
}

impl KernelArg for &f32 {
    fn bits(&self, _: &CudaStream) -> u64 {
        u64::from(self.to_bits())
    }
}

impl KernelArg for &u64 {
    fn bits(&self, _: &CudaStream) -> u64 {
        **self
    }
}

/// One launch being put together: the kernel and its arguments so far.
pub(crate) struct Launch<'a> {
    ctx: &'a Arc<CudaContext>,
    stream: &'a CudaStream,
    /// The entry point's name and its function.
    name: &'a str,
    kernel: &'a Kernel,
    args: Vec<u64>,
    /// Bytes of weight matrices among the arguments ([`Launch::weight`]), for the profile.
    weight_bytes: u64,
    /// The kernel profile, which times the launch while a profiled decode step is queued.
    profile: &'a Mutex<Option<Profiler>>,
}

impl<'a> Launch<'a> {
    pub(crate) fn new(
        ctx: &'a Arc<CudaContext>,
        stream: &'a CudaStream,
        (name, kernel): (&'a str, &'a Kernel),
        profile: &'a Mutex<Option<Profiler>>,
    ) -> Self {
        Launch {
            ctx,
            stream,
            name,
            kernel,
            args: Vec::with_capacity(16),
            weight_bytes: 0,
            profile,
        }
    }

    /// Appends the next argument.
    pub(crate) fn arg(&mut self, a: impl KernelArg) -> &mut Self {
        self.args.push(a.bits(self.stream));
        self
    }

    /// Appends a weight matrix as the next argument; a profile counts its bytes as read.
    pub(crate) fn weight(&mut self, w: &CudaSlice<u8>) -> &mut Self {
        self.weight_bytes += w.len() as u64;
        self.arg(w)
    }

    /// Queues the kernel on the stream.
    ///
    /// # Safety
    /// The arguments must be the kernel's parameters in number, order and type, and the
    /// kernel must stay within the buffers they name for this launch configuration.
    pub(crate) unsafe fn launch(
        &mut self,
        cfg: LaunchConfig,
    ) -> std::result::Result<(), DriverError> {
        // SAFETY: the caller's contract.
        unsafe { self.queue(cfg) }?;
        profile::queued(
            self.profile,
            self.ctx,
            self.stream,
            self.name,
            self.weight_bytes,
        )
    }

    /// [`Launch::launch`] without the profile.
    ///
    /// # Safety
    /// As [`Launch::launch`].
    unsafe fn queue(&mut self, cfg: LaunchConfig) -> std::result::Result<(), DriverError> {
        self.ctx.bind_to_thread()?;
        let mut params: Vec<*mut c_void> = self
            .args
            .iter_mut()
            .map(|a| a as *mut u64 as *mut c_void)
            .collect();
        let f = self.kernel.f.cu_function();
        if !self.kernel.pdl {
            // SAFETY: the caller's contract; params point at one value per kernel parameter,
            // alive until the call returns (the driver copies them).
            return unsafe {
                cudarc::driver::result::launch_kernel(
                    f,
                    cfg.grid_dim,
                    cfg.block_dim,
                    cfg.shared_mem_bytes,
                    self.stream.cu_stream(),
                    &mut params,
                )
            };
        }
        let mut value = sys::CUlaunchAttributeValue { pad: [0; 64] };
        value.programmaticStreamSerializationAllowed = 1;
        let mut attr = sys::CUlaunchAttribute {
            id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
            pad: [0; 4],
            value,
        };
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: 1,
        };
        // SAFETY: as above; `config` and `attr` outlive the call. The kernel was loaded from
        // PTX whose wait comes before any memory access (`Kernel::pdl` is only set then), so it
        // reads nothing its predecessor writes, and overwrites nothing it reads, before that
        // predecessor has completed.
        unsafe {
            sys::cuLaunchKernelEx(&config, f, params.as_mut_ptr(), std::ptr::null_mut()).result()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTX: &str = "//\n.version 7.5\n.target sm_80\n.address_size 64\n\n\
        .visible .entry good(\n\t.param .u64 good_param_0\n)\n{\n\tld.param.u64 %rd1, [good_param_0];\n\
        \t// begin inline asm\n\t// tl-pdl-prefetch %rd1\n\t// end inline asm\n\
        \t// begin inline asm\n\t// tl-pdl-wait\n\t// end inline asm\n\t// begin inline asm\n\
        \t// tl-pdl-launch\n\t// end inline asm\n\tld.global.f32 %f1, [%rd1];\n\tret;\n}\n\
        .visible .entry early(\n\t.param .u64 early_param_0\n)\n{\n\tld.param.u64 %rd1, [early_param_0];\n\
        \t@%p1 ld.global.f32 %f1, [%rd1];\n\t// tl-pdl-wait\n\tret;\n}\n\
        .visible .entry none(\n)\n{\n\tret;\n}\n";

    #[test]
    fn patches_header_and_marks() {
        let p = ptx_for_pdl(PTX, true, PdlTrigger::Start).unwrap();
        assert!(p.contains(".version 7.8\n.target sm_90\n"), "{p}");
        assert!(p.contains("\tgriddepcontrol.wait;\n"));
        assert!(p.contains("\tgriddepcontrol.launch_dependents;\n"));
        assert!(p.contains("\tprefetch.L2 [%rd1];\n"));
        assert!(!p.contains(WAIT_MARK) && !p.contains(LAUNCH_MARK) && !p.contains(PREFETCH_MARK));
        // Without prefetch the mark stays a comment.
        let p = ptx_for_pdl(PTX, false, PdlTrigger::Start).unwrap();
        assert!(p.contains("\t// tl-pdl-prefetch %rd1\n") && !p.contains("prefetch.L2"));
        for bad in ["tl-pdl-prefetch", "tl-pdl-prefetch %0"] {
            let bad = PTX.replace("tl-pdl-prefetch %rd1", bad);
            assert!(ptx_for_pdl(&bad, true, PdlTrigger::Start).is_err(), "{bad}");
        }
        // A newer header is kept.
        let newer = PTX
            .replace(".version 7.5", ".version 8.7 // a comment")
            .replace("sm_80", "sm_100a");
        let p = ptx_for_pdl(&newer, true, PdlTrigger::Start).unwrap();
        assert!(p.contains(".version 8.7\n.target sm_100a\n"), "{p}");
        assert!(ptx_for_pdl("ret;", true, PdlTrigger::Start).is_err());
        // Triggering at exit leaves the launch mark a comment and still waits.
        let p = ptx_for_pdl(PTX, true, PdlTrigger::Exit).unwrap();
        assert!(p.contains("\tgriddepcontrol.wait;\n") && p.contains("\t// tl-pdl-launch\n"));
        assert!(!p.contains("launch_dependents"));
    }

    #[test]
    fn finds_kernels_that_touch_memory_before_waiting() {
        assert_eq!(entries_without_wait(PTX), ["early", "none"]);
        for line in [
            "\t{ ld.global.nc.f32 %f1, [%rd1]; }",
            "$L__BB0_1: st.global.f32 [%rd1], %f1;",
            "\tmov.u32 %r1, 0; ldu.global.f32 %f1, [%rd1];",
            "\tcall.uni (retval0), helper, (param0);",
            "\t@!%p2 atom.global.add.u32 %r1, [%rd1], 1;",
            "\tprefetch.global.L2 [%rd1];",
        ] {
            assert!(touches_memory(line), "{line}");
        }
        for line in [
            "\tld.param.u64 %rd1, [k_param_0];",
            "\tcvta.to.global.u64 %rd2, %rd1;",
            "\tmov.u32 %r1, %tid.x; // ld.global in a comment",
            "$L__BB0_1:",
        ] {
            assert!(!touches_memory(line), "{line}");
        }
    }
}
