//! Build script: records the git commit (printed by `torchless bench` and used in
//! docs/performance.md) and, with feature `cuda`, compiles every `kernels/*.cu` to PTX.
//!
//! PTX comes from `nvcc` when it is on the PATH, else from `clang`, which compiles CUDA without
//! any CUDA installation (`-nocudainc -nocudalib`; `kernels/prelude.cuh` supplies what the CUDA
//! headers would). `TORCHLESS_CUDA_COMPILER=nvcc|clang|/path/to/clang` picks one explicitly. The
//! PTX targets sm_80 at PTX ISA 7.5, which the driver JIT-compiles for any newer GPU. A kernel
//! that does not compile fails the build with the compiler's own `file:line` messages.
//!
//! With feature `wgpu`, every `shaders/*.wgsl` op family is validated with naga and embedded
//! (`build/shaders.rs`).

use std::path::PathBuf;
use std::process::Command;

#[cfg(feature = "wgpu")]
#[path = "build/shaders.rs"]
mod shaders;

#[path = "build/cuda_compiler.rs"]
mod cuda_compiler;
use cuda_compiler::Compiler;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TORCHLESS_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=build.rs");

    #[cfg(feature = "wgpu")]
    {
        let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        if let Err(e) = shaders::build(&out_dir) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        if let Err(e) = build_kernels() {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

fn build_kernels() -> Result<(), String> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let dir = root.join("kernels");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "cu" || x == "cuh" || x == "h")
        })
        .collect();
    sources.sort();
    for s in &sources {
        println!("cargo:rerun-if-changed={}", s.display());
    }
    println!("cargo:rerun-if-env-changed=TORCHLESS_CUDA_COMPILER");
    let compiler = Compiler::find()?;
    let mut table = String::from(
        "/// Every kernel module: (file stem, PTX text), compiled from kernels/*.cu by build.rs.\n\
         pub const MODULES: &[(&str, &str)] = &[\n",
    );
    for src in sources
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
    {
        let stem = src
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("{}: file name is not UTF-8", src.display()))?;
        let out = out_dir.join(format!("{stem}.ptx"));
        let result = compiler
            .command(src, &dir, &out)
            .output()
            .map_err(|e| format!("cannot run the CUDA compiler: {e}"))?;
        if !result.status.success() {
            return Err(format!(
                "compiling {} to PTX failed:\n{}{}",
                src.display(),
                String::from_utf8_lossy(&result.stdout),
                String::from_utf8_lossy(&result.stderr)
            ));
        }
        let ptx = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        // libdevice is not linked (clang runs with -nocudalib): an unresolved function would only
        // fail when the driver loads the module, so catch it here.
        if let Some(line) = ptx.lines().find(|l| l.contains(".extern .func")) {
            return Err(format!(
                "{}: the PTX calls an external function ({}); use the math in kernels/prelude.cuh",
                src.display(),
                line.trim()
            ));
        }
        table.push_str(&format!(
            "    ({stem:?}, include_str!(concat!(env!(\"OUT_DIR\"), \"/{stem}.ptx\"))),\n"
        ));
    }
    table.push_str("];\n");
    std::fs::write(out_dir.join("kernels.rs"), table).map_err(|e| e.to_string())?;
    Ok(())
}
