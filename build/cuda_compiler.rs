//! Which program turns `kernels/*.cu` into PTX, and its command line. Shared by build.rs and by
//! tests/cuda_build.rs, which builds every kernel file with nvcc too, with this same command.
//!
//! nvcc when it is on the PATH, else clang (no CUDA installation needed:
//! `-nocudainc -nocudalib`, with kernels/prelude.cuh in place of the CUDA headers);
//! `TORCHLESS_CUDA_COMPILER=nvcc|clang|/path/to/compiler` picks one. Both target sm_80; clang
//! writes PTX ISA 7.5, nvcc the ISA of its own release.

use std::path::Path;
use std::process::Command;

/// The program that turns `.cu` into `.ptx`.
pub enum Compiler {
    Nvcc(String),
    Clang(String),
}

impl Compiler {
    pub fn find() -> Result<Compiler, String> {
        let runs = |p: &str| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if let Ok(choice) = std::env::var("TORCHLESS_CUDA_COMPILER") {
            let is_nvcc = Path::new(&choice)
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("nvcc"));
            if !runs(&choice) {
                return Err(format!(
                    "TORCHLESS_CUDA_COMPILER={choice}: cannot run `{choice} --version`"
                ));
            }
            return Ok(if is_nvcc {
                Compiler::Nvcc(choice)
            } else {
                Compiler::Clang(choice)
            });
        }
        if runs("nvcc") {
            return Ok(Compiler::Nvcc("nvcc".into()));
        }
        for c in [
            "clang", "clang-14", "clang-15", "clang-16", "clang-17", "clang-18",
        ] {
            if runs(c) {
                return Ok(Compiler::Clang(c.into()));
            }
        }
        Err(
            "feature `cuda` compiles kernels/*.cu to PTX and needs nvcc (CUDA toolkit) or clang \
             (e.g. `apt-get install clang`); neither was found on the PATH \
             (or set TORCHLESS_CUDA_COMPILER)"
                .into(),
        )
    }

    pub fn command(&self, src: &Path, include: &Path, out: &Path) -> Command {
        match self {
            Compiler::Nvcc(p) => {
                let mut c = Command::new(p);
                c.args(["--ptx", "-arch=compute_80", "-O3", "-std=c++17"])
                    .arg("-I")
                    .arg(include)
                    .arg(src)
                    .arg("-o")
                    .arg(out);
                c
            }
            Compiler::Clang(p) => {
                let mut c = Command::new(p);
                c.args([
                    "-x",
                    "cuda",
                    "--cuda-device-only",
                    "--cuda-gpu-arch=sm_80",
                    "-nocudainc",
                    "-nocudalib",
                    "-Xclang",
                    "-target-feature",
                    "-Xclang",
                    "+ptx75",
                    "-O3",
                    "-std=c++17",
                    "-S",
                ])
                .arg("-I")
                .arg(include)
                .arg(src)
                .arg("-o")
                .arg(out);
                c
            }
        }
    }
}
