//! The CUDA build without a GPU: build.rs compiled every kernel file to PTX (with clang or
//! nvcc), and the embedded PTX has an entry point for every op × weight type the backend
//! launches, with no unresolved external function, and NVIDIA's own PTX assembler accepts every
//! module for the GPUs the backend targets; every kernel file builds with nvcc as well (the
//! prelude's promise), to the same entry points; the int8 matvecs' weight loads are scheduled
//! as their row loop intends (tools/sass-rounds.py). Runs in CI (`--features cuda`, no device).
//!
//! nvcc and ptxas come from `TORCHLESS_NVCC` / `TORCHLESS_PTXAS` (tools/test.sh sets both from
//! tools/fetch-cuda-tools.sh), else from the PATH; missing, those tests fail and say so. The
//! host CUDA emulator (tests/cuda_emu) that runs tests/cuda_device.rs in CI gets a self-test here.
#![cfg(feature = "cuda")]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use torchless::backend::cuda::{
    launch, ptx_entry_points, ptx_header, ptx_modules, required_entry_points,
};

// build.rs's own compiler command line, so that the nvcc build below is the one build.rs runs.
#[allow(dead_code)]
#[path = "../build/cuda_compiler.rs"]
mod cuda_compiler;

/// Every weight type the CUDA backend has matmul and embedding kernels for.
const TYPES: &[&str] = &[
    "f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k",
    "q6_k",
];
/// The ops that exist once per weight type: decode matvec, tiled prefill matmul, row lookup.
const TYPED_OPS: &[&str] = &["matvec", "matmul", "get_rows"];
/// One file per op family.
const FAMILIES: &[&str] = &["activation", "attention", "embed", "matmul", "norm", "rope"];

fn entry_points() -> BTreeSet<String> {
    ptx_modules()
        .iter()
        .flat_map(|(_, ptx)| ptx_entry_points(ptx))
        .collect()
}

#[test]
fn every_op_family_is_a_compiled_module() {
    let stems: BTreeSet<&str> = ptx_modules().iter().map(|(s, _)| *s).collect();
    for f in FAMILIES {
        assert!(stems.contains(f), "no PTX for kernels/{f}.cu: {stems:?}");
    }
    for (stem, ptx) in ptx_modules() {
        assert!(ptx.contains(".target sm_80"), "{stem}: not built for sm_80");
        assert!(!ptx_entry_points(ptx).is_empty(), "{stem}: no kernels");
    }
}

#[test]
fn every_op_and_weight_type_has_an_entry_point() {
    let have = entry_points();
    let mut missing = Vec::new();
    for op in TYPED_OPS {
        for ty in TYPES {
            let name = format!("{op}_{ty}");
            if !have.contains(&name) {
                missing.push(name);
            }
        }
    }
    for name in required_entry_points() {
        if !have.contains(&name) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "PTX lacks {missing:?}");
    // And the other way round: the backend launches every typed kernel it ships.
    let required: BTreeSet<String> = required_entry_points().into_iter().collect();
    for op in TYPED_OPS {
        for ty in TYPES {
            assert!(
                required.contains(&format!("{op}_{ty}")),
                "{op}_{ty} is never launched"
            );
        }
    }
}

#[test]
fn ptx_calls_no_external_function() {
    for (stem, ptx) in ptx_modules() {
        assert!(
            !ptx.contains(".extern .func"),
            "kernels/{stem}.cu calls an unresolved function (libdevice is not linked)"
        );
    }
}

/// An NVIDIA tool: the path in `env`, else `name` on the PATH. Missing, the test fails and says
/// how to get it.
fn cuda_tool(env: &str, name: &str) -> PathBuf {
    let bin = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(name));
    match Command::new(&bin).arg("--version").output() {
        Ok(o) if o.status.success() => bin,
        _ => panic!(
            "NVIDIA's {name} not found ({}): run `tools/fetch-cuda-tools.sh` and set {env} to \
             bin/{name} in the folder it prints (tools/test.sh does both)",
            bin.display()
        ),
    }
}

fn ptxas() -> PathBuf {
    cuda_tool("TORCHLESS_PTXAS", "ptxas")
}

/// One kernel's resources as ptxas reports them with `-v`.
#[derive(Debug, Default)]
struct KernelResources {
    name: String,
    registers: u32,
    spill_stores: u32,
    spill_loads: u32,
}

/// The per-kernel lines of `ptxas -v`: "Compiling entry function 'k' for 'sm_90'", then
/// "N bytes stack frame, S bytes spill stores, L bytes spill loads" and "Used R registers, ...".
fn parse_ptxas_report(report: &str) -> Vec<KernelResources> {
    let number_before = |line: &str, word: &str| -> Option<u32> {
        let head = &line[..line.find(word)?];
        head.split_whitespace().last()?.parse().ok()
    };
    let mut out: Vec<KernelResources> = Vec::new();
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            out.push(KernelResources {
                name,
                ..Default::default()
            });
        } else if let Some(k) = out.last_mut() {
            if line.contains("bytes spill stores") {
                k.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                k.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used ") && line.contains(" registers") {
                k.registers = number_before(line, "registers").unwrap_or(0);
            }
        }
    }
    out
}

/// The driver JIT-compiles each module with the same assembler when the backend loads it: a
/// module ptxas rejects would only fail on a GPU. Assembles every module for sm_80 (the PTX
/// target) and sm_90 (the H100 / H200), both as built and in the form the backend loads with
/// programmatic dependent launch (`ptx_for_pdl`: sm_90, `griddepcontrol`), and prints each
/// kernel's registers and spills.
#[test]
fn ptx_assembles_with_nvidia_ptxas_for_sm80_and_sm90() {
    let ptxas = ptxas();
    let dir = std::env::temp_dir().join(format!("torchless-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    for (arch, pdl) in [("sm_80", false), ("sm_90", false), ("sm_90", true)] {
        let arch_name = if pdl { "sm_90 (PDL)" } else { arch };
        for (stem, built) in ptx_modules() {
            let ptx = &if pdl {
                launch::ptx_for_pdl(built, true, launch::PdlTrigger::Start)
                    .unwrap_or_else(|e| panic!("kernels/{stem}.cu: {e}"))
            } else {
                built.to_string()
            };
            if pdl {
                assert!(ptx.contains("griddepcontrol.wait;"), "{stem}: no wait");
            }
            let src = dir.join(format!("{stem}.ptx"));
            let cubin = dir.join(format!("{stem}.{arch}.cubin"));
            std::fs::write(&src, ptx).unwrap();
            let out = Command::new(&ptxas)
                .arg(format!("-arch={arch}"))
                .arg("-v")
                .arg(&src)
                .arg("-o")
                .arg(&cubin)
                .output()
                .expect("ptxas runs");
            let report = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                failures.push(format!("kernels/{stem}.cu for {arch_name}:\n{report}"));
                continue;
            }
            let kernels = parse_ptxas_report(&report);
            let compiled: BTreeSet<&str> = kernels.iter().map(|k| k.name.as_str()).collect();
            for entry in ptx_entry_points(ptx) {
                assert!(
                    compiled.contains(entry.as_str()),
                    "ptxas did not report {entry} of kernels/{stem}.cu for {arch_name}"
                );
            }
            for k in &kernels {
                println!(
                    "{arch_name} {:<28} {:>3} registers, spills {} B stored / {} B loaded",
                    k.name, k.registers, k.spill_stores, k.spill_loads
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        failures.is_empty(),
        "ptxas rejected:\n{}",
        failures.join("\n")
    );
}

/// On a device with programmatic dependent launch every kernel may start before the one before
/// it has finished, and must wait for it before touching memory: each entry point's first
/// memory access comes after the wait mark that becomes `griddepcontrol.wait`, and each also
/// lets its successor launch. (The backend launches a kernel failing this the ordinary way, so
/// this keeps every kernel on the fast path.)
#[test]
fn every_kernel_waits_for_its_predecessor_before_touching_memory() {
    for (stem, ptx) in ptx_modules() {
        let bad = launch::entries_without_wait(ptx);
        assert!(
            bad.is_empty(),
            "kernels/{stem}.cu: these kernels touch memory before tl_kernel_start(): {bad:?}"
        );
        let entries = ptx_entry_points(ptx).len();
        for mark in [launch::WAIT_MARK, launch::LAUNCH_MARK] {
            assert_eq!(
                ptx.lines().filter(|l| l.trim() == mark).count(),
                entries,
                "kernels/{stem}.cu: one {mark:?} per kernel"
            );
        }
    }
}

/// The int8 matvecs' row loop asks for all of a pass's weights before its first dot product, so
/// that a warp waits for DRAM once a pass; ptxas may sink loads towards their uses and undo
/// that (it did for the full passes before every pass checked its blocks: two DRAM trips a
/// 4096-column Q4_K row). tools/sass-rounds.py reads ptxas's sm_90 schedule (clang and the
/// pinned ptxas 13.5, as the build and the JIT do); for these kernels every weight load of the
/// inner loop must come before its first wait on a load. No GPU runs here, so this is the
/// check that the schedule the H100 will be timed with is the one intended.
#[test]
fn int8_matvecs_issue_a_pass_of_weight_loads_before_waiting() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(root.join("tools/sass-rounds.py"))
        .arg("^matvec_(glu_)?q8_(q4_1|q5_1|q2_k|q4_k|q5_k)$")
        .output()
        .expect("python3 runs tools/sass-rounds.py");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tools/sass-rounds.py failed:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    let want = [
        "matvec_q8_q4_1",
        "matvec_glu_q8_q4_1",
        "matvec_q8_q5_1",
        "matvec_glu_q8_q5_1",
        "matvec_q8_q2_k",
        "matvec_glu_q8_q2_k",
        "matvec_q8_q4_k",
        "matvec_q8_q5_k",
    ];
    for kernel in want {
        // The kernel's line, then its loops' lines (indented) up to the next kernel.
        let head = format!("{kernel}: ");
        let loops: Vec<&str> = report
            .lines()
            .skip_while(|l| !l.starts_with(&head))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .collect();
        assert_eq!(
            loops.len(),
            1,
            "{kernel}: one inner loop with weight loads\n{report}"
        );
        assert!(
            loops[0].contains("weight rounds 1:"),
            "{kernel}: ptxas splits a pass's weight loads around a wait\n{report}"
        );
    }
}

#[test]
fn every_module_has_one_ptx_header() {
    let headers: BTreeSet<(String, String)> = ptx_modules()
        .iter()
        .map(|(_, ptx)| ptx_header(ptx))
        .collect();
    assert_eq!(
        headers.len(),
        1,
        "modules disagree on PTX version / target: {headers:?}"
    );
}

/// build.rs takes nvcc when it is on the PATH; CI builds with clang, so this builds every kernel
/// file with nvcc through build.rs's command line and checks the result: it compiles, calls no
/// external function, has the same entry points as the embedded module, waits for the kernel
/// before it as clang's does, and assembles for sm_90, with programmatic dependent launch too.
#[test]
fn every_kernel_file_builds_with_nvcc_to_the_same_entry_points() {
    let nvcc = cuda_tool("TORCHLESS_NVCC", "nvcc");
    let ptxas = ptxas();
    let kernels = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let dir = std::env::temp_dir().join(format!("torchless-nvcc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let compiler = cuda_compiler::Compiler::Nvcc(nvcc.to_string_lossy().into_owned());
    for (stem, embedded) in ptx_modules() {
        let src = kernels.join(format!("{stem}.cu"));
        let ptx_path = dir.join(format!("{stem}.ptx"));
        let out = compiler
            .command(&src, &kernels, &ptx_path)
            .output()
            .expect("nvcc runs");
        assert!(
            out.status.success(),
            "nvcc could not build kernels/{stem}.cu:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ptx = std::fs::read_to_string(&ptx_path).unwrap();
        assert!(
            !ptx.contains(".extern .func"),
            "kernels/{stem}.cu under nvcc calls an external function"
        );
        assert_eq!(ptx_header(&ptx).1, "sm_80", "kernels/{stem}.cu under nvcc");
        let ours: BTreeSet<String> = ptx_entry_points(embedded).into_iter().collect();
        let theirs: BTreeSet<String> = ptx_entry_points(&ptx).into_iter().collect();
        assert_eq!(
            ours, theirs,
            "kernels/{stem}.cu: nvcc and the embedded build differ"
        );
        let bad = launch::entries_without_wait(&ptx);
        assert!(
            bad.is_empty(),
            "kernels/{stem}.cu under nvcc: memory touched before the PDL wait in {bad:?}"
        );
        // As built, and in the form the backend loads with programmatic dependent launch.
        let pdl_path = dir.join(format!("{stem}.pdl.ptx"));
        std::fs::write(
            &pdl_path,
            launch::ptx_for_pdl(&ptx, true, launch::PdlTrigger::Start).unwrap(),
        )
        .unwrap();
        for path in [&ptx_path, &pdl_path] {
            let out = Command::new(&ptxas)
                .args(["-arch=sm_90", "-o"])
                .arg(dir.join(format!("{stem}.cubin")))
                .arg(path)
                .output()
                .expect("ptxas runs");
            assert!(
                out.status.success(),
                "ptxas rejected nvcc's kernels/{stem}.cu ({}):\n{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Compile the host C++ program `src` (relative to the repository) into `exe` with the C++
/// compiler (`CXX`, else `c++`), warnings as errors, `extra` after the sources.
fn build_host_cpp(src: &str, exe: &std::path::Path, extra: &[&str]) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let out = Command::new(&cxx)
        .args(["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror"])
        .arg(root.join(src))
        .arg("-o")
        .arg(exe)
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C++ compiler `{cxx}` (set CXX): {e}"));
    assert!(
        out.status.success(),
        "{src} does not build:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The integer decode matvec's arithmetic (kernels/q8dot.cuh), compiled for the host by
/// tests/cuda_host/q8dot.cpp and replayed lane by lane with the kernels' addressing and loads
/// (each load's alignment checked), for every weight type with int8 kernels, against the CPU's
/// decoding: the Q8 form of x is a faithful rounding, and W x from the integer dot equals the f64
/// dot of the decoded weights with that rounded x (and stays within the rounding's reach of the
/// exact one).
#[test]
fn q8_dot_arithmetic_matches_the_cpu_decoding_on_the_host() {
    use rand::{Rng, SeedableRng};
    use torchless::quant::{dequantize_row, GgmlType};

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("torchless-q8dot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("q8dot");
    let kernels = format!("-I{}", root.join("kernels").display());
    // The header's `#pragma unroll` is for the device compilers.
    build_host_cpp(
        "tests/cuda_host/q8dot.cpp",
        &exe,
        &[&kernels, "-Wno-unknown-pragmas"],
    );

    // (the driver's type code, the type, byte offsets of its f16 scale fields)
    let types: [(u32, GgmlType, &[usize]); 10] = [
        (0, GgmlType::Q4_0, &[0]),
        (1, GgmlType::Q4_1, &[0, 2]),
        (2, GgmlType::Q5_0, &[0]),
        (3, GgmlType::Q5_1, &[0, 2]),
        (4, GgmlType::Q8_0, &[0]),
        (5, GgmlType::Q4_K, &[0, 2]),
        (6, GgmlType::Q6_K, &[208]),
        (7, GgmlType::Q5_K, &[0, 2]),
        (8, GgmlType::Q2_K, &[80, 82]),
        (9, GgmlType::Q3_K, &[108]),
    ];
    for (code, ty, scales) in types {
        let (qk, bsize) = (ty.block_len(), ty.block_bytes());
        // Whole passes of the kernel's row loop and a ragged one: 75 blocks of 32 values (passes
        // of 64), 11 of 256 (passes of 8).
        let nb = if qk == 32 { 75 } else { 11 };
        let (rows, cols) = (7usize, nb * qk);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x9_8d07 + u64::from(code));
        let mut w = vec![0u8; rows * nb * bsize];
        rng.fill(&mut w[..]);
        for blk in w.chunks_mut(bsize) {
            // Scales of magnitude [2^-8, 2^-7): finite, and of the size real models have; the
            // mins of Q4_1 / Q5_1 either sign.
            for (i, &at) in scales.iter().enumerate() {
                let sign = if i > 0 && rng.gen() { 0x8000u16 } else { 0 };
                let bits = sign | 0x1C00u16 | rng.gen_range(0..0x400u16);
                blk[at..at + 2].copy_from_slice(&bits.to_le_bytes());
            }
        }
        let mut x: Vec<f32> = (0..cols).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        x[5] = 7.5; // an outlier sets its group's scale
        x[64..96].iter_mut().for_each(|v| *v = 0.0); // an all-zero group
        let mut input = Vec::new();
        for v in [code, rows as u32, cols as u32] {
            input.extend_from_slice(&v.to_le_bytes());
        }
        input.extend_from_slice(&w);
        x.iter()
            .for_each(|v| input.extend_from_slice(&v.to_le_bytes()));
        let (in_path, out_path) = (dir.join("in.bin"), dir.join("out.bin"));
        std::fs::write(&in_path, &input).unwrap();
        let run = Command::new(&exe)
            .arg(&in_path)
            .arg(&out_path)
            .output()
            .unwrap();
        assert!(run.status.success(), "{ty}: q8dot failed: {run:?}");
        let bytes = std::fs::read(&out_path).unwrap();
        assert_eq!(bytes.len(), cols + 4 * (cols / 16) + 4 * rows);
        let f32_at = |i: usize| f32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
        let xq: Vec<i8> = bytes[..cols].iter().map(|&b| b as i8).collect();
        let ds: Vec<f32> = (0..cols / 16).map(|i| f32_at(cols + 4 * i)).collect();
        let y: Vec<f32> = (0..rows)
            .map(|r| f32_at(cols + 4 * (cols / 16) + 4 * r))
            .collect();

        // The Q8 form: d = max |x| / 127, every value within half a step, s = d * sum q.
        let mut xr = vec![0f64; cols];
        for g in 0..cols / 32 {
            let group = &x[32 * g..32 * g + 32];
            let amax = group.iter().fold(0f32, |m, v| m.max(v.abs()));
            let (d, s) = (ds[2 * g], ds[2 * g + 1]);
            assert_eq!(d, amax * (1.0 / 127.0), "group {g}: scale");
            let mut sum = 0i32;
            for i in 0..32 {
                let q = xq[32 * g + i];
                assert!(q != -128, "group {g}: -128 is outside the symmetric range");
                let err = (q as f32 * d - group[i]).abs();
                assert!(
                    err <= 0.5 * d * (1.0 + 1e-6),
                    "group {g} value {i}: {err} off, step {d}"
                );
                sum += i32::from(q);
                xr[32 * g + i] = f64::from(q) * f64::from(d);
            }
            assert_eq!(s, d * sum as f32, "group {g}: sum");
        }

        let row_bytes = nb * bsize;
        let mut wr = vec![0f32; cols];
        for r in 0..rows {
            dequantize_row(ty, &w[r * row_bytes..(r + 1) * row_bytes], &mut wr);
            let on_rounded: f64 = wr.iter().zip(&xr).map(|(&a, &b)| f64::from(a) * b).sum();
            let exact: f64 = wr
                .iter()
                .zip(&x)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let scale: f64 = wr
                .iter()
                .zip(&x)
                .map(|(&a, &b)| f64::from(a.abs() * b.abs()))
                .sum();
            let got = f64::from(y[r]);
            assert!(
                (got - on_rounded).abs() <= 1e-5 * scale,
                "{ty} row {r}: integer dot {got}, decoded weights . rounded x {on_rounded} \
                 (scale {scale})"
            );
            assert!(
                (got - exact).abs() <= 1e-2 * scale,
                "{ty} row {r}: {got} vs the exact {exact} (scale {scale})"
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The host CUDA emulator that runs tests/cuda_device.rs in CI (tools/cuda-emu.sh): a real
/// kernel launched through its driver API computes the right values, and a launch that reads
/// past the end of its buffers stops the process with a report naming the kernel, the block and
/// the thread (allocations end at an inaccessible page), instead of reading garbage.
#[test]
fn cuda_emulator_runs_a_kernel_and_reports_an_out_of_bounds_access() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let built = Command::new("bash")
        .arg(root.join("tools/cuda-emu.sh"))
        .output()
        .expect("cannot run bash");
    assert!(
        built.status.success(),
        "tools/cuda-emu.sh failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let lib_dir = PathBuf::from(String::from_utf8(built.stdout).unwrap().trim());
    let dir = std::env::temp_dir().join(format!("torchless-emu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("selftest");
    let link = format!("-L{}", lib_dir.display());
    build_host_cpp("tests/cuda_emu/selftest.cpp", &exe, &[&link, "-lcuda"]);
    let run = Command::new(&exe)
        .env("LD_LIBRARY_PATH", &lib_dir)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(stdout.contains("in bounds ok"), "{stdout}\n{stderr}");
    assert!(
        !run.status.success(),
        "the out-of-bounds launch was not stopped: {stdout}"
    );
    assert!(
        stderr.contains("cuda-emu: kernel act_add, block (4,0,0) thread (0,0,0)")
            && stderr.contains("out-of-bounds"),
        "unexpected report: {stderr}"
    );
}
