//! Build script: with the `vulkan` feature, compile every `shaders/*.comp` to SPIR-V with `glslc`.
//!
//! Without the feature this does nothing, so the default build needs no system package.
//! Each shader is compiled twice: as written into `$OUT_DIR/<name>.spv`, and with
//! `NCSN_PRESERVE_NAN` defined into `$OUT_DIR/<name>.nan.spv`, the variant that declares the
//! SignedZeroInfNanPreserve execution mode (see `shaders/float_controls.glsl`). Both are embedded
//! by `src/backend/vulkan/shaders.rs`; the context loads the second where the device supports it.
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
        let stem = src.file_stem().unwrap().to_string_lossy();
        compile(&glslc, src, &out_dir.join(format!("{stem}.spv")), None);
        compile(
            &glslc,
            src,
            &out_dir.join(format!("{stem}.nan.spv")),
            Some("NCSN_PRESERVE_NAN"),
        );
    }
}

/// Runs `glslc` on one compute shader, with the macro `define` defined if given, writing `dst`;
/// panics with a message that names the fix.
fn compile(glslc: &str, src: &Path, dst: &Path, define: Option<&str>) {
    let mut command = Command::new(glslc);
    command
        .arg("--target-env=vulkan1.1")
        .arg("-O")
        .arg("-fshader-stage=compute")
        .arg("-Ishaders");
    if let Some(name) = define {
        command.arg(format!("-D{name}"));
    }
    let result = command.arg(src).arg("-o").arg(dst).output();
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "the `vulkan` feature compiles shaders/*.comp with `{glslc}`, which was not found on \
             PATH. Install it (Debian/Ubuntu: `apt-get install glslc`, or run .ci/vulkan-deps as \
             root), or point the GLSLC environment variable at a glslc binary."
        ),
        Err(e) => panic!("could not run `{glslc}`: {e}"),
        Ok(out) if !out.status.success() => panic!(
            "glslc failed on {}{}:\n{}{}",
            src.display(),
            define.map(|d| format!(" (with -D{d})")).unwrap_or_default(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(_) => {}
    }
}
