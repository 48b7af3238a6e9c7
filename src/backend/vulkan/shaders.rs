//! The compiled compute shaders, embedded as SPIR-V.
//!
//! `build.rs` runs `glslc` on every `shaders/*.comp` and writes `$OUT_DIR/<name>.spv`, and the
//! variant that keeps NaN, ±∞ and −0 (the SignedZeroInfNanPreserve execution mode, declared by
//! `shaders/float_controls.glsl`) as `$OUT_DIR/<name>.nan.spv`; each [`Kernel`] names one pair.
//! Loading goes through `ShaderModule::new` with the raw words (vulkano-shaders is not used: it
//! links libshaderc, which does not load on Debian).

/// The two variants of one shader: as written, and keeping NaN, ±∞ and −0.
macro_rules! spirv {
    ($name:literal) => {
        (
            include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".spv")).as_slice(),
            include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".nan.spv")).as_slice(),
        )
    };
}

/// Declares [`Kernel`] from one table of variants and shader names, so that a kernel's name, the
/// two SPIR-V files it embeds and the list of all kernels cannot disagree.
macro_rules! kernels {
    ($($variant:ident => $file:literal,)*) => {
        /// One compute shader (one pipeline).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub(crate) enum Kernel {
            $($variant,)*
        }

        impl Kernel {
            /// Every kernel, in the table's order.
            #[cfg(test)]
            pub(crate) const ALL: &[Kernel] = &[$(Kernel::$variant,)*];

            /// The shader's file name (`shaders/<name>.comp`), for messages.
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(Kernel::$variant => $file,)*
                }
            }

            fn bytes(self, preserve_nan: bool) -> &'static [u8] {
                let (plain, nan) = match self {
                    $(Kernel::$variant => spirv!($file),)*
                };
                if preserve_nan { nan } else { plain }
            }
        }
    };
}

kernels! {
    Gemm => "gemm",
    Conv2d => "conv2d",
    Conv2dInputGrad => "conv2d_input_grad",
    Conv2dWeightGrad => "conv2d_weight_grad",
    Unary => "unary",
    Binary => "binary",
    Reduce => "reduce",
    InstanceNorm => "instance_norm",
    CinPlus => "cin_plus",
    AvgPool2d => "avg_pool2d",
    ResizeBilinear => "resize_bilinear",
    Embedding => "embedding",
    Adam => "adam",
    AdamAmsgrad => "adam_amsgrad",
    Philox => "philox",
    Langevin => "langevin",
    Strided => "strided",
    Select => "select",
    Index => "index",
    AvgPool2dAdjoint => "avg_pool2d_adjoint",
    ResizeBilinearAdjoint => "resize_bilinear_adjoint",
    SplitKSum => "split_k_sum",
}

impl Kernel {
    /// The SPIR-V as 32-bit words (`include_bytes!` gives no alignment guarantee, so copy): the
    /// variant that declares SignedZeroInfNanPreserve if `preserve_nan`, the plain one if not.
    pub(crate) fn words(self, preserve_nan: bool) -> Vec<u32> {
        let bytes = self.bytes(preserve_nan);
        assert_eq!(
            bytes.len() % 4,
            0,
            "{}.spv is not whole SPIR-V words",
            self.name()
        );
        spirv_words(bytes)
    }
}

/// The most storage buffers one kernel binds (`cin_plus.comp`'s seven). Vulkan promises only 4
/// per shader stage (`maxPerStageDescriptorStorageBuffers`), so the context checks the device
/// offers this many; a unit test reads it off the compiled shaders.
pub(crate) const STORAGE_BUFFERS_NEEDED: u32 = 7;

/// Little-endian bytes as 32-bit words (a trailing partial word is dropped; callers check).
fn spirv_words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    /// SPIR-V's numbers for what the NaN-preserving variant declares.
    const OP_CAPABILITY: u32 = 17;
    const OP_EXECUTION_MODE: u32 = 16;
    const CAPABILITY_SIGNED_ZERO_INF_NAN_PRESERVE: u32 = 4466;
    const MODE_SIGNED_ZERO_INF_NAN_PRESERVE: u32 = 4461;

    /// The instructions of a SPIR-V module (after the five-word header), each as its words.
    fn instructions(words: &[u32]) -> Vec<&[u32]> {
        assert_eq!(words[0], 0x0723_0203, "SPIR-V magic number");
        let (mut at, mut out) = (5, Vec::new());
        while at < words.len() {
            let count = (words[at] >> 16) as usize;
            assert!(
                count > 0 && at + count <= words.len(),
                "malformed SPIR-V at word {at}"
            );
            out.push(&words[at..at + count]);
            at += count;
        }
        out
    }

    /// The number of resources a module binds (OpDecorate … Binding).
    fn bindings(words: &[u32]) -> u32 {
        const OP_DECORATE: u32 = 71;
        const DECORATION_BINDING: u32 = 33;
        let ins = instructions(words);
        let n = ins
            .iter()
            .filter(|i| i[0] & 0xffff == OP_DECORATE && i.len() >= 3 && i[2] == DECORATION_BINDING)
            .count();
        n as u32
    }

    /// The device check asks for as many storage buffers per stage as the widest kernel binds:
    /// not fewer (a device that could not run it would pass), not more (one that could would be
    /// refused). Every binding is a storage buffer (the shaders declare no other kind).
    #[test]
    fn the_storage_buffers_asked_of_a_device_are_the_widest_kernels() {
        let widest = std::fs::read_dir(env!("OUT_DIR"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "spv"))
            .map(|p| bindings(&super::spirv_words(&std::fs::read(&p).unwrap())))
            .max()
            .unwrap();
        assert_eq!(widest, super::STORAGE_BUFFERS_NEEDED);
    }

    /// The number of shaders in `shaders/`.
    fn shader_sources() -> usize {
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders"))
            .unwrap()
            .filter(|e| {
                let path = e.as_ref().unwrap().path();
                path.extension().is_some_and(|x| x == "comp")
            })
            .count()
    }

    /// Every kernel embeds the two files its name names (the profile counts commands by that name,
    /// and errors name the shader by it), the names are distinct, and every shader has a kernel.
    #[test]
    fn every_kernel_embeds_the_shader_it_is_named_after() {
        let dir = std::path::Path::new(env!("OUT_DIR"));
        let file = |name: String| super::spirv_words(&std::fs::read(dir.join(name)).unwrap());
        for &kernel in super::Kernel::ALL {
            let name = kernel.name();
            assert_eq!(
                kernel.words(false),
                file(format!("{name}.spv")),
                "{kernel:?}"
            );
            assert_eq!(
                kernel.words(true),
                file(format!("{name}.nan.spv")),
                "{kernel:?}"
            );
        }
        let mut names: Vec<&str> = super::Kernel::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        let sources = shader_sources();
        assert_eq!((names.len(), super::Kernel::ALL.len()), (sources, sources));
    }

    /// (declares the capability, declares the mode for 32-bit floats on its entry point)
    fn nan_preserve(words: &[u32]) -> (bool, bool) {
        let ins = instructions(words);
        let capability = ins.iter().any(|i| {
            i[0] & 0xffff == OP_CAPABILITY && i[1] == CAPABILITY_SIGNED_ZERO_INF_NAN_PRESERVE
        });
        let mode = ins.iter().any(|i| {
            i[0] & 0xffff == OP_EXECUTION_MODE
                && i.len() == 4
                && i[2] == MODE_SIGNED_ZERO_INF_NAN_PRESERVE
                && i[3] == 32
        });
        (capability, mode)
    }

    /// Every shader the build compiled (read from `OUT_DIR`, so a kernel that forgets to include
    /// float_controls.glsl is caught even before it has a [`super::Kernel`]): the `.nan.spv`
    /// variant declares the capability and the mode for f32, the plain one neither.
    #[test]
    fn every_nan_variant_declares_signed_zero_inf_nan_preserve_and_only_it() {
        let words = |path: &std::path::Path| super::spirv_words(&std::fs::read(path).unwrap());
        let mut checked = 0;
        for entry in std::fs::read_dir(env!("OUT_DIR")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".nan.spv") else {
                continue;
            };
            let plain = path.with_file_name(format!("{stem}.spv"));
            assert_eq!(nan_preserve(&words(&path)), (true, true), "{name}");
            assert_eq!(nan_preserve(&words(&plain)), (false, false), "{stem}.spv");
            checked += 1;
        }
        let sources = shader_sources();
        assert_eq!(checked, sources, "one pair of variants per shaders/*.comp");
    }
}
