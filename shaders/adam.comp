#version 450
// Adam (see adam.glsl).
#extension GL_GOOGLE_include_directive : require
#include "float_controls.glsl"
#include "adam.glsl"
