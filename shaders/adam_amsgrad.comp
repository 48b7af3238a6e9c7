#version 450
// Adam with AMSGrad: the running maximum of the second moment (see adam.glsl).
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"
#define AMSGRAD
#include "adam.glsl"
