//! Build script: with the `vulkan` feature, compile every `shaders/*.comp` to SPIR-V with `glslc`.
//!
//! Without the feature this does nothing, so the default build needs no system package.
//! The SPIR-V lands in `$OUT_DIR/<name>.spv` and is embedded by `src/backend/vulkan/shaders.rs`.
//! We call the `glslc` binary rather than linking shaderc from Rust: Debian's libshaderc does not
//! load with `vulkano-shaders` (undefined symbol `spvBinaryDestroy`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=shaders");
    println!("cargo:rerun-if-env-changed=GLSLC");
    if env::var_os("CARGO_FEATURE_VULKAN").is_none() {
        return;
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let glslc = env::var("GLSLC").unwrap_or_else(|_| "glslc".to_string());

    let mut shaders: Vec<PathBuf> = std::fs::read_dir("shaders")
        .expect("the `vulkan` feature needs the shaders/ directory")
        .map(|e| e.expect("reading shaders/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "comp"))
        .collect();
    shaders.sort();

    for src in &shaders {
        println!("cargo:rerun-if-changed={}", src.display());
        compile(&glslc, src, &out_dir);
    }
}

/// Runs `glslc` on one compute shader; panics with a message that names the fix.
fn compile(glslc: &str, src: &Path, out_dir: &Path) {
    let stem = src.file_stem().unwrap().to_string_lossy();
    let dst = out_dir.join(format!("{stem}.spv"));
    let result = Command::new(glslc)
        .arg("--target-env=vulkan1.1")
        .arg("-O")
        .arg("-fshader-stage=compute")
        .arg("-Ishaders")
        .arg(src)
        .arg("-o")
        .arg(&dst)
        .output();
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "the `vulkan` feature compiles shaders/*.comp with `{glslc}`, which was not found on \
             PATH. Install it (Debian/Ubuntu: `apt-get install glslc`, or run .ci/vulkan-deps as \
             root), or point the GLSLC environment variable at a glslc binary."
        ),
        Err(e) => panic!("could not run `{glslc}`: {e}"),
        Ok(out) if !out.status.success() => panic!(
            "glslc failed on {}:\n{}{}",
            src.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(_) => {}
    }
}
