// Included by every kernel. In the build's NaN-preserving variant of each (glslc -DNCSN_PRESERVE_NAN,
// see build.rs) it declares the SPIR-V execution mode SignedZeroInfNanPreserve for 32-bit floats
// (SPV_KHR_float_controls, core in Vulkan 1.2). Without it the Vulkan specification lets a driver
// compile as if no value were NaN, ±∞ or −0: NaN + 0 may come out as a number, and an isnan() test
// may be folded to false. With it, a NaN in, a NaN out, as on the CPU and in PyTorch. The host
// loads this variant where the device reports shaderSignedZeroInfNanPreserveFloat32, and the
// plain one elsewhere (VulkanContext::preserves_nan).
//
// GLSL has no syntax for the mode; GL_EXT_spirv_intrinsics writes SPIR-V directly: capability
// 4466 is SignedZeroInfNanPreserve, execution mode 4461 the mode of the same name, 32 its width.
#ifdef NCSN_PRESERVE_NAN
#extension GL_EXT_spirv_intrinsics : require
spirv_execution_mode(extensions = ["SPV_KHR_float_controls"], capabilities = [4466], 4461, 32);
#endif

// A quiet NaN and +inf, for kernels that must return them where GLSL leaves a result undefined.
#define NAN uintBitsToFloat(0x7fc00000u)
#define INF uintBitsToFloat(0x7f800000u)
