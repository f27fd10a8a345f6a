//! Build-time half of the wgpu backend: composes every `shaders/*.wgsl` op family with the files
//! it includes, parses and validates the result with naga (the version wgpu itself uses), and
//! embeds the checked sources. A broken shader fails the build with its own file and line.

use std::fmt::Write as _;
use std::path::Path;

/// An optional adapter feature a module uses. Its module is validated with that capability and
/// built only on adapters that have the feature; every other module must do without it.
/// The variant names are those of the backend's `ModuleNeeds`, which the generated table uses.
#[derive(Clone, Copy, Debug)]
pub enum Needs {
    /// Only what every adapter the backend accepts has.
    Base,
    /// Subgroup operations (wgpu's `SUBGROUP` feature).
    Subgroup,
    /// The `f16` type (wgpu's `SHADER_F16` feature; the module opens with `enable f16;`).
    F16,
}

/// Each shader module: its name, the files concatenated in order (the last one is its own, except
/// that a file with an `enable` directive, which must open the module, comes first) and the
/// optional feature it needs. Must list every `shaders/*.wgsl` that is not a shared part.
pub const FAMILIES: &[(&str, &[&str], Needs)] = &[
    ("activation", &["common", "activation"], Needs::Base),
    ("norm", &["common", "norm"], Needs::Base),
    ("rope", &["common", "rope"], Needs::Base),
    ("attention", &["common", "attention"], Needs::Base),
    ("embed", &["common", "quant", "embed"], Needs::Base),
    ("matmul", &["common", "quant", "matmul"], Needs::Base),
    (
        "matvec_subgroup",
        &["common", "quant", "matmul", "matvec_subgroup"],
        Needs::Subgroup,
    ),
    (
        "matmul_f16",
        &["matmul_f16", "common", "quant", "matmul"],
        Needs::F16,
    ),
];

/// Files that are only ever included into a module (`matmul` is also a family of its own).
const SHARED: &[&str] = &["common", "quant"];

/// What a module may use. Immediates (push constants) carry every dispatch's parameters (the
/// backend requires the feature at start-up); halves are decoded with `unpack2x16float`, which
/// naga gates behind SHADER_FLOAT16_IN_FLOAT32 (wgpu grants it on Vulkan, Metal and DX12).
fn capabilities(needs: Needs) -> naga::valid::Capabilities {
    use naga::valid::Capabilities as C;
    let base = C::IMMEDIATES | C::SHADER_FLOAT16_IN_FLOAT32;
    match needs {
        Needs::Base => base,
        Needs::Subgroup => base | C::SUBGROUP,
        Needs::F16 => base | C::SHADER_FLOAT16,
    }
}

/// A composed module and where each of its parts starts (0-based line), for error locations.
struct Composed {
    text: String,
    parts: Vec<(String, usize)>,
}

impl Composed {
    /// `shaders/<file>.wgsl:<line>` of 1-based line `line` of the composed text.
    fn locate(&self, line: usize) -> String {
        let (file, start) = self
            .parts
            .iter()
            .rev()
            .find(|(_, s)| *s < line)
            .cloned()
            .unwrap_or_else(|| (self.parts[0].0.clone(), 0));
        format!("shaders/{file}.wgsl:{}", line - start)
    }
}

fn compose(dir: &Path, parts: &[&str]) -> Result<Composed, String> {
    let mut text = String::new();
    let mut spans = Vec::new();
    for part in parts {
        let path = dir.join(format!("{part}.wgsl"));
        let src = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        spans.push((part.to_string(), text.lines().count()));
        text.push_str(&src);
        if !src.ends_with('\n') {
            text.push('\n');
        }
    }
    Ok(Composed { text, parts: spans })
}

/// Parse and validate one family; the error names the file and line.
fn check(family: &str, needs: Needs, c: &Composed) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(&c.text).map_err(|e| {
        let at = e
            .location(&c.text)
            .map(|l| c.locate(l.line_number as usize))
            .unwrap_or_else(|| format!("shaders/{family}.wgsl"));
        format!("{at}: {}\n{}", e.message(), e.emit_to_string(&c.text))
    })?;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities(needs))
        .validate(&module)
        .map_err(|e| {
            let at = e
                .spans()
                .next()
                .map(|(span, _)| c.locate(span.location(&c.text).line_number as usize))
                .unwrap_or_else(|| format!("shaders/{family}.wgsl"));
            format!(
                "{at}: invalid shader ({family}): {}",
                e.emit_to_string(&c.text)
            )
        })?;
    Ok(())
}

/// Validates every family and writes `OUT_DIR/shaders.rs`, defining
/// `pub const MODULES: &[Module]` (the backend defines `Module`: family, needed feature as a
/// `ModuleNeeds`, composed WGSL).
pub fn build(out_dir: &Path) -> Result<(), String> {
    let dir = Path::new("shaders");
    println!("cargo:rerun-if-changed=shaders");
    // Every file must be a family or a shared part, so a new shader cannot be silently left out.
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("shaders/: {e}"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .filter_map(|p| Some(p.file_stem()?.to_string_lossy().into_owned()))
        .collect();
    on_disk.sort();
    for stem in &on_disk {
        let known = FAMILIES.iter().any(|(f, _, _)| f == stem) || SHARED.contains(&stem.as_str());
        if !known {
            return Err(format!(
                "shaders/{stem}.wgsl is neither an op family nor a shared part (build/shaders.rs)"
            ));
        }
    }
    let mut table = String::from("pub const MODULES: &[Module] = &[\n");
    for (family, parts, needs) in FAMILIES {
        let c = compose(dir, parts)?;
        check(family, *needs, &c)?;
        let file = out_dir.join(format!("{family}.wgsl"));
        std::fs::write(&file, &c.text).map_err(|e| format!("{}: {e}", file.display()))?;
        writeln!(
            table,
            "    Module {{ family: {family:?}, needs: ModuleNeeds::{needs:?}, wgsl: \
             include_str!(concat!(env!(\"OUT_DIR\"), \"/{family}.wgsl\")) }},"
        )
        .expect("write to a String");
    }
    table.push_str("];\n");
    let rs = out_dir.join("shaders.rs");
    std::fs::write(&rs, table).map_err(|e| format!("{}: {e}", rs.display()))
}
