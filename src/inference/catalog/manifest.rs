//! The manifest's schema: `model.json` as written (see the format in [`super`]), deserialised
//! with unknown fields refused. Its structural checks are in [`super::checks`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// `model.json`, as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub kind: ModelKind,
    pub file: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub license: Option<String>,
    /// The output size of a denoiser (unless `width`/`height` params exist); ops have none.
    #[serde(default)]
    pub size: Option<Size>,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// The sampler's constants (denoisers only).
    #[serde(default)]
    pub sampler: Option<SamplerSpec>,
    #[serde(default = "default_decode")]
    pub decode: Decode,
    pub params: Vec<ParamSpec>,
    #[serde(default)]
    pub ports: Ports,
    /// A model for tests and smoke checks: kept out of the studio's palette unless the operator
    /// enables test models.
    #[serde(default)]
    pub test_model: bool,
    /// For ops that enlarge their input: the int parameter the output's sides are multiplied by,
    /// so the engine can refuse an oversized result before running.
    #[serde(default)]
    pub output_scale_param: Option<String>,
}

fn default_decode() -> Decode {
    Decode::Linear
}

/// The port types edges carry. Tensors are NCHW float32 with batch 1: `heightmap` `[1,1,H,W]`
/// heights in metres, `image` `[1,3,H,W]` RGB in 0..1, `mask` `[1,1,H,W]` in 0..1; `any` (ops
/// that work on every type: upscale, blur) takes whatever its input edge brings, and its output
/// has that type.
pub const PORT_TYPES: &[&str] = &["heightmap", "image", "mask", "any"];

impl Manifest {
    /// Denoisers draw noise: their nodes take a `seed`. Ops are deterministic.
    pub fn stochastic(&self) -> bool {
        self.kind != ModelKind::Op
    }

    /// The sampler constants, for denoiser kinds (checked present at load).
    pub fn sampler(&self) -> Option<(f32, f32, f32)> {
        self.sampler.map(|s| {
            let SamplerSpec::Consistency {
                sigma_min,
                sigma_max,
                rho,
                ..
            } = s;
            (sigma_min, sigma_max, rho)
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// A denoiser `D(x, sigma, conditions…) -> x0` sampled with consistency sampling (one step,
    /// or several when the manifest has a `steps` parameter).
    ConsistencyDenoiser,
    /// The same kind of denoiser, image-to-image: its `heightmap` input port is encoded to model
    /// space, re-noised to the sigma its `strength` picks on the Karras schedule and denoised in
    /// one step.
    ConsistencyRefine,
    /// A plain ONNX graph over ports and parameters (image operations).
    Op,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TensorRole {
    /// The noisy sample, f32 `[batch, 1, height, width]`.
    Noisy,
    /// The noise level, f32 `[batch]`.
    Sigma,
    /// A conditioning value taken from a parameter, f32 `[batch]`.
    Condition,
    /// The denoised estimate, f32 `[batch, 1, height, width]`.
    Denoised,
    /// Ops: the tensor of the port named by `port` (input or output).
    Port,
    /// Ops: a parameter's value as f32 `[1]` (`param`, optional `map`).
    Param,
    /// Ops: a media parameter's image, decoded to RGBA f32 `[1, 4, H, W]` in 0..1.
    Media,
}

/// A dimension in a manifest shape: a fixed size or a symbolic name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(i64),
    Named(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub role: TensorRole,
    #[serde(default)]
    pub shape: Option<Vec<Dim>>,
    /// For `condition` inputs: the parameter whose value feeds this input.
    #[serde(default)]
    pub param: Option<String>,
    /// For `condition` inputs: a linear map from the parameter's range to the model's.
    #[serde(default)]
    pub map: Option<LinearMap>,
    /// For `port` tensors: the port.
    #[serde(default)]
    pub port: Option<String>,
}

/// `value' = to[0] + (value - from[0]) * (to[1] - to[0]) / (from[1] - from[0])`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearMap {
    pub from: [f64; 2],
    pub to: [f64; 2],
}

impl LinearMap {
    pub fn apply(&self, value: f64) -> f64 {
        let [a, b] = self.from;
        let [c, d] = self.to;
        c + (value - a) * (d - c) / (b - a)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SamplerSpec {
    /// Multistep consistency sampling (Song et al. 2023, Algorithm 1) on a Karras schedule.
    Consistency {
        sigma_min: f32,
        sigma_max: f32,
        sigma_data: f32,
        #[serde(default = "default_rho")]
        rho: f32,
    },
}

fn default_rho() -> f32 {
    7.0
}

/// How the model's output (model space) maps to the values written to the image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Decode {
    /// Model space as is.
    Linear,
    /// The terrain package's height encoding: `unit = clip((v + 1) / 2, 0, 1)`,
    /// `h = asinh_scale * sinh(unit * asinh(height_range / asinh_scale))`, clipped to
    /// `[0, height_range]`; with `zero_floor` the minimum is moved to 0.
    Asinh {
        asinh_scale: f32,
        height_range: f32,
        #[serde(default)]
        zero_floor: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    Int,
    Float,
    /// A media id (a string): an image uploaded to the session. Required, no range.
    Media,
}

/// A node parameter: its type, default and inclusive range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ParamType,
    #[serde(default)]
    pub default: f64,
    #[serde(default)]
    pub min: f64,
    #[serde(default)]
    pub max: f64,
    /// Int parameters: the value must be a multiple of this (a size made of whole tiles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiple_of: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    #[serde(default)]
    pub inputs: Vec<Port>,
    #[serde(default)]
    pub outputs: Vec<Port>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// An input port that may stay unconnected (the node then uses a neutral value).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Int => "int",
            Self::Float => "float",
            Self::Media => "media",
        })
    }
}
