//! The compiled compute shaders, embedded as SPIR-V.
//!
//! `build.rs` runs `glslc` on every `shaders/*.comp` and writes `$OUT_DIR/<name>.spv`; each
//! [`Kernel`] names one of them. Loading goes through `ShaderModule::new` with the raw words
//! (vulkano-shaders is not used: it links libshaderc, which does not load on Debian).

/// One compute shader (one pipeline).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    Gemm,
    Conv2d,
    Conv2dInputGrad,
    Conv2dWeightGrad,
    Unary,
    Binary,
    Reduce,
    InstanceNorm,
    CinPlus,
    AvgPool2d,
    ResizeBilinear,
    Embedding,
    Adam,
    AdamAmsgrad,
    Philox,
    Langevin,
    Strided,
    Select,
    Index,
    AvgPool2dAdjoint,
    ResizeBilinearAdjoint,
    SplitKSum,
}

macro_rules! spirv {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".spv"))
    };
}

impl Kernel {
    /// The shader's file name, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kernel::Gemm => "gemm",
            Kernel::Conv2d => "conv2d",
            Kernel::Conv2dInputGrad => "conv2d_input_grad",
            Kernel::Conv2dWeightGrad => "conv2d_weight_grad",
            Kernel::Unary => "unary",
            Kernel::Binary => "binary",
            Kernel::Reduce => "reduce",
            Kernel::InstanceNorm => "instance_norm",
            Kernel::CinPlus => "cin_plus",
            Kernel::AvgPool2d => "avg_pool2d",
            Kernel::ResizeBilinear => "resize_bilinear",
            Kernel::Embedding => "embedding",
            Kernel::Adam => "adam",
            Kernel::AdamAmsgrad => "adam_amsgrad",
            Kernel::Philox => "philox",
            Kernel::Langevin => "langevin",
            Kernel::Strided => "strided",
            Kernel::Select => "select",
            Kernel::Index => "index",
            Kernel::AvgPool2dAdjoint => "avg_pool2d_adjoint",
            Kernel::ResizeBilinearAdjoint => "resize_bilinear_adjoint",
            Kernel::SplitKSum => "split_k_sum",
        }
    }

    fn bytes(self) -> &'static [u8] {
        match self {
            Kernel::Gemm => spirv!("gemm"),
            Kernel::Conv2d => spirv!("conv2d"),
            Kernel::Conv2dInputGrad => spirv!("conv2d_input_grad"),
            Kernel::Conv2dWeightGrad => spirv!("conv2d_weight_grad"),
            Kernel::Unary => spirv!("unary"),
            Kernel::Binary => spirv!("binary"),
            Kernel::Reduce => spirv!("reduce"),
            Kernel::InstanceNorm => spirv!("instance_norm"),
            Kernel::CinPlus => spirv!("cin_plus"),
            Kernel::AvgPool2d => spirv!("avg_pool2d"),
            Kernel::ResizeBilinear => spirv!("resize_bilinear"),
            Kernel::Embedding => spirv!("embedding"),
            Kernel::Adam => spirv!("adam"),
            Kernel::AdamAmsgrad => spirv!("adam_amsgrad"),
            Kernel::Philox => spirv!("philox"),
            Kernel::Langevin => spirv!("langevin"),
            Kernel::Strided => spirv!("strided"),
            Kernel::Select => spirv!("select"),
            Kernel::Index => spirv!("index"),
            Kernel::AvgPool2dAdjoint => spirv!("avg_pool2d_adjoint"),
            Kernel::ResizeBilinearAdjoint => spirv!("resize_bilinear_adjoint"),
            Kernel::SplitKSum => spirv!("split_k_sum"),
        }
    }

    /// The SPIR-V as 32-bit words (`include_bytes!` gives no alignment guarantee, so copy).
    pub(crate) fn words(self) -> Vec<u32> {
        let bytes = self.bytes();
        assert_eq!(
            bytes.len() % 4,
            0,
            "{}.spv is not whole SPIR-V words",
            self.name()
        );
        bytes
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect()
    }
}
