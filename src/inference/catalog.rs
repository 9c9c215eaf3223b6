//! The model catalog: one subdirectory per model under the models directory, each with a
//! `model.json` manifest next to its ONNX file.
//!
//! ```text
//! models/
//!   terrain/        model.json  terrain_consistency_unet_difficulty100.onnx
//!   tiny-denoiser/  model.json  tiny_denoiser.onnx
//! ```
//!
//! [`ModelCatalog::load`] reads and checks every manifest (not the ONNX files' contents: that is
//! [`Engine::load`](super::Engine::load)'s job) and fails with a [`CatalogError`] naming the model
//! and the reason. [`ModelCatalog::node_types`] describes each model as a node type for the graph
//! editor; [`ModelCatalog::validate_params`] checks a node's parameters against the manifest.
//!
//! # Manifest (`model.json`)
//!
//! ```json
//! {
//!   "name": "terrain",                       // unique; [a-z0-9_-], also the node type's name
//!   "title": "Terrain diffusion",            // optional, for people
//!   "description": "...",                   // optional
//!   "kind": "consistency-denoiser",          // the only kind so far
//!   "file": "terrain.onnx",                  // relative to the manifest's directory
//!   "source": "...", "license": "MIT",       // optional, informative
//!   "size": { "width": 128, "height": 128 }, // output size unless `width`/`height` params exist
//!   "inputs": [                              // the ONNX inputs, every one of them
//!     { "name": "noisy", "role": "noisy", "shape": ["batch", 1, 128, 128] },
//!     { "name": "sigma", "role": "sigma", "shape": ["batch"] },
//!     { "name": "difficulty", "role": "condition", "param": "difficulty",
//!       "map": { "from": [1, 100], "to": [0, 1] } }   // param value mapped linearly, as f32[batch]
//!   ],
//!   "outputs": [ { "name": "denoised", "role": "denoised" } ],
//!   "sampler": { "kind": "consistency", "sigma_min": 0.002, "sigma_max": 80.0,
//!                "sigma_data": 0.5, "rho": 7.0 },
//!   "decode": { "kind": "asinh", "asinh_scale": 0.1, "height_range": 22.17, "zero_floor": true },
//!                                            // or { "kind": "linear" }: model space as is
//!   "params": [                              // the node's parameters; `steps` is required
//!     { "name": "steps", "type": "int", "default": 1, "min": 1, "max": 16, "description": "..." },
//!     { "name": "difficulty", "type": "int", "default": 50, "min": 1, "max": 100 },
//!     { "name": "width", "type": "int", "default": 128, "min": 128, "max": 512,
//!       "multiple_of": 64 }                  // optional: the value must be a multiple of it
//!   ],
//!   "ports": { "inputs": [], "outputs": [ { "name": "heightmap", "type": "image/png" } ] }
//! }
//! ```
//!
//! Parameter types are `int` and `float`; `min`/`max` are inclusive. The engine reads the well-known
//! parameters `steps` (required), and `width`/`height` (optional: without them the size is fixed).
//! A model whose ONNX graph fixes its size and whose `width`/`height` go beyond it makes the
//! larger sizes as overlapping tiles blended at their seams ([`super::tiles`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The manifest's file name inside each model directory.
pub const MANIFEST_FILE: &str = "model.json";

/// Parameter values as they arrive from a job (a node's parameters): name → JSON value.
pub type Params = BTreeMap<String, serde_json::Value>;

/// Why the catalog could not be loaded. Every variant names the model (its directory name when the
/// manifest could not be read) and says why.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("models directory {path} cannot be read: {reason} (set ATELIER_MODELS_DIR, or run scripts/fetch-models)")]
    Dir { path: PathBuf, reason: String },
    #[error("model '{model}': {path} cannot be read: {reason}")]
    Manifest {
        model: String,
        path: PathBuf,
        reason: String,
    },
    #[error("model '{model}': invalid manifest {path}: {reason}")]
    Invalid {
        model: String,
        path: PathBuf,
        reason: String,
    },
    #[error("model '{model}': model file {path} is missing (run scripts/fetch-models)")]
    MissingFile { model: String, path: PathBuf },
    #[error("model '{model}': model file {path} cannot be loaded: {reason}")]
    CorruptFile {
        model: String,
        path: PathBuf,
        reason: String,
    },
    #[error("model '{model}': {path} does not match its manifest: {reason}")]
    Mismatch {
        model: String,
        path: PathBuf,
        reason: String,
    },
    #[error("model name '{model}' is used by both {first} and {second}")]
    Duplicate {
        model: String,
        first: PathBuf,
        second: PathBuf,
    },
}

impl CatalogError {
    /// The model the error is about, when there is one.
    pub fn model(&self) -> Option<&str> {
        match self {
            Self::Dir { .. } => None,
            Self::Manifest { model, .. }
            | Self::Invalid { model, .. }
            | Self::MissingFile { model, .. }
            | Self::CorruptFile { model, .. }
            | Self::Mismatch { model, .. }
            | Self::Duplicate { model, .. } => Some(model),
        }
    }
}

/// A parameter that does not fit its model's manifest. The message names the parameter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("parameter '{param}' of model '{model}' {reason}")]
pub struct ParamError {
    pub model: String,
    pub param: String,
    pub reason: String,
}

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

/// A checked parameter value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    Int(i64),
    Float(f64),
    Media(uuid::Uuid),
}

impl ParamValue {
    /// The number, for int and float parameters.
    pub fn as_f64(self) -> Option<f64> {
        match self {
            Self::Int(v) => Some(v as f64),
            Self::Float(v) => Some(v),
            Self::Media(_) => None,
        }
    }
}

/// Parameters after [`ModelCatalog::validate_params`]: every declared parameter, defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedParams(pub BTreeMap<String, ParamValue>);

impl ResolvedParams {
    pub fn get(&self, name: &str) -> Option<ParamValue> {
        self.0.get(name).copied()
    }

    /// An integer parameter (checked to be in range by validation, so non-negative ranges fit u32).
    pub fn get_u32(&self, name: &str) -> Option<u32> {
        match self.get(name)? {
            ParamValue::Int(v) => u32::try_from(v).ok(),
            ParamValue::Float(_) | ParamValue::Media(_) => None,
        }
    }

    /// A number parameter as f64.
    pub fn get_f64(&self, name: &str) -> Option<f64> {
        self.get(name)?.as_f64()
    }

    /// The media ids of media parameters.
    pub fn media(&self) -> impl Iterator<Item = (&str, uuid::Uuid)> {
        self.0.iter().filter_map(|(k, v)| match v {
            ParamValue::Media(id) => Some((k.as_str(), *id)),
            _ => None,
        })
    }
}

/// What the graph editor and the job compiler need to know about a model, as a node type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeType {
    /// The node type's name: the model's name.
    pub name: String,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub kind: ModelKind,
    pub params: Vec<ParamSpec>,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    /// Output size of a denoiser without `width`/`height` parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// The node draws noise and takes a `seed` (fixed, or random and recorded in the job).
    pub stochastic: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub test_model: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
}

/// One model of the catalog: its manifest and where its files are.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub manifest: Manifest,
    /// The model's directory.
    pub dir: PathBuf,
    /// The ONNX file (`dir/manifest.file`).
    pub file: PathBuf,
    /// Hex SHA-256 over the manifest's text and the model file's length: part of every cache
    /// key, so a changed model or manifest never serves old results.
    pub fingerprint: String,
}

impl ModelEntry {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.manifest.params.iter().find(|p| p.name == name)
    }

    pub fn input(&self, role: TensorRole) -> Option<&TensorSpec> {
        self.manifest.inputs.iter().find(|t| t.role == role)
    }

    pub fn output(&self, role: TensorRole) -> Option<&TensorSpec> {
        self.manifest.outputs.iter().find(|t| t.role == role)
    }

    pub fn node_type(&self) -> NodeType {
        let m = &self.manifest;
        NodeType {
            name: m.name.clone(),
            title: m.title.clone().unwrap_or_else(|| m.name.clone()),
            description: m.description.clone(),
            kind: m.kind,
            params: m.params.clone(),
            inputs: m.ports.inputs.clone(),
            outputs: m.ports.outputs.clone(),
            size: m.size,
            stochastic: m.stochastic(),
            test_model: m.test_model,
            license: m.license.clone(),
        }
    }

    /// Checks `params` against the manifest: unknown names, types and ranges. Missing parameters
    /// take their defaults.
    pub fn validate_params(&self, params: &Params) -> Result<ResolvedParams, ParamError> {
        let err = |param: &str, reason: String| ParamError {
            model: self.manifest.name.clone(),
            param: param.to_string(),
            reason,
        };
        if let Some(unknown) = params.keys().find(|k| self.param(k).is_none()) {
            let known: Vec<&str> = self
                .manifest
                .params
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            return Err(err(
                unknown,
                format!(
                    "is not a parameter of this model (it has: {})",
                    known.join(", ")
                ),
            ));
        }
        let mut out = BTreeMap::new();
        for spec in &self.manifest.params {
            if spec.ty == ParamType::Media {
                let id = match params.get(&spec.name) {
                    None | Some(serde_json::Value::Null) => {
                        return Err(err(
                            &spec.name,
                            "is required: pick an image uploaded to this session".into(),
                        ))
                    }
                    Some(raw) => raw
                        .as_str()
                        .and_then(|s| uuid::Uuid::parse_str(s).ok())
                        .ok_or_else(|| err(&spec.name, format!("must be a media id, got {raw}")))?,
                };
                out.insert(spec.name.clone(), ParamValue::Media(id));
                continue;
            }
            let value = match params.get(&spec.name) {
                None | Some(serde_json::Value::Null) => default_value(spec),
                Some(raw) => {
                    let number = raw
                        .as_f64()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| err(&spec.name, format!("must be a number, got {raw}")))?;
                    match spec.ty {
                        ParamType::Int => {
                            if number.fract() != 0.0 {
                                return Err(err(
                                    &spec.name,
                                    format!("must be a whole number, got {raw}"),
                                ));
                            }
                            ParamValue::Int(number as i64)
                        }
                        ParamType::Float | ParamType::Media => ParamValue::Float(number),
                    }
                }
            };
            let v = value.as_f64().unwrap_or(f64::NAN);
            if v < spec.min || v > spec.max {
                return Err(err(
                    &spec.name,
                    format!(
                        "must be between {} and {}, got {}",
                        fmt_num(spec.min),
                        fmt_num(spec.max),
                        fmt_num(v)
                    ),
                ));
            }
            if let (Some(m), ParamValue::Int(i)) = (spec.multiple_of, value) {
                if i % i64::from(m) != 0 {
                    return Err(err(
                        &spec.name,
                        format!("must be a multiple of {m}, got {i}"),
                    ));
                }
            }
            out.insert(spec.name.clone(), value);
        }
        Ok(ResolvedParams(out))
    }
}

fn default_value(spec: &ParamSpec) -> ParamValue {
    match spec.ty {
        ParamType::Int => ParamValue::Int(spec.default as i64),
        ParamType::Float | ParamType::Media => ParamValue::Float(spec.default),
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The models found in the models directory, by name.
#[derive(Debug, Clone, Default)]
pub struct ModelCatalog {
    dir: PathBuf,
    models: BTreeMap<String, ModelEntry>,
}

impl ModelCatalog {
    /// Reads every `<dir>/<model>/model.json`, checks it, and checks that its model file exists.
    /// Directories whose names start with `.` are skipped. The first problem found is returned.
    pub fn load(dir: &Path) -> Result<ModelCatalog, CatalogError> {
        let dir_err = |reason: String| CatalogError::Dir {
            path: dir.to_path_buf(),
            reason,
        };
        let read = std::fs::read_dir(dir).map_err(|e| dir_err(e.to_string()))?;
        let mut subdirs = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| dir_err(e.to_string()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            subdirs.push((name, entry.path()));
        }
        subdirs.sort();
        let mut models: BTreeMap<String, ModelEntry> = BTreeMap::new();
        for (dir_name, path) in subdirs {
            let entry = load_entry(&dir_name, &path)?;
            if let Some(previous) = models.get(entry.name()) {
                return Err(CatalogError::Duplicate {
                    model: entry.name().to_string(),
                    first: previous.dir.clone(),
                    second: entry.dir.clone(),
                });
            }
            models.insert(entry.name().to_string(), entry);
        }
        Ok(ModelCatalog {
            dir: dir.to_path_buf(),
            models,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models.get(name)
    }

    pub fn models(&self) -> impl Iterator<Item = &ModelEntry> {
        self.models.values()
    }

    pub fn names(&self) -> Vec<String> {
        self.models.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Every model as a node type, sorted by name.
    pub fn node_types(&self) -> Vec<NodeType> {
        self.models.values().map(ModelEntry::node_type).collect()
    }

    /// The node types of the studio's palette: test models only when `with_test_models`.
    pub fn palette(&self, with_test_models: bool) -> Vec<NodeType> {
        self.models
            .values()
            .filter(|m| with_test_models || !m.manifest.test_model)
            .map(ModelEntry::node_type)
            .collect()
    }

    /// Checks a node's parameters for `model`. An unknown model is reported as a parameter error on
    /// `model`.
    pub fn validate_params(
        &self,
        model: &str,
        params: &Params,
    ) -> Result<ResolvedParams, ParamError> {
        match self.get(model) {
            Some(entry) => entry.validate_params(params),
            None => Err(ParamError {
                model: model.to_string(),
                param: "model".to_string(),
                reason: format!(
                    "is not in the catalog (it has: {})",
                    self.names().join(", ")
                ),
            }),
        }
    }
}

fn load_entry(dir_name: &str, dir: &Path) -> Result<ModelEntry, CatalogError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| CatalogError::Manifest {
        model: dir_name.to_string(),
        path: manifest_path.clone(),
        reason: e.to_string(),
    })?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| CatalogError::Invalid {
        model: dir_name.to_string(),
        path: manifest_path.clone(),
        reason: e.to_string(),
    })?;
    check_manifest(&manifest).map_err(|reason| CatalogError::Invalid {
        model: if manifest.name.is_empty() {
            dir_name.to_string()
        } else {
            manifest.name.clone()
        },
        path: manifest_path.clone(),
        reason,
    })?;
    let file = dir.join(&manifest.file);
    let file_len = match std::fs::metadata(&file) {
        Ok(meta) if meta.is_file() && meta.len() > 0 => meta.len(),
        Ok(meta) if meta.is_file() => {
            return Err(CatalogError::CorruptFile {
                model: manifest.name.clone(),
                path: file,
                reason: "the file is empty".to_string(),
            })
        }
        _ => {
            return Err(CatalogError::MissingFile {
                model: manifest.name.clone(),
                path: file,
            })
        }
    };
    let fingerprint = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(text.as_bytes());
        h.update(file_len.to_le_bytes());
        hex::encode(h.finalize())
    };
    Ok(ModelEntry {
        manifest,
        dir: dir.to_path_buf(),
        file,
        fingerprint,
    })
}

/// Structural checks of a manifest; the reason names the offending field.
fn check_manifest(m: &Manifest) -> Result<(), String> {
    let valid_name = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    };
    if !valid_name(&m.name) {
        return Err(format!(
            "name '{}' must be 1-64 characters of a-z, 0-9, '-' and '_'",
            m.name
        ));
    }
    let file = Path::new(&m.file);
    if m.file.is_empty()
        || file.is_absolute()
        || file
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(format!(
            "file '{}' must be a relative path inside the model's directory",
            m.file
        ));
    }
    if let Some(size) = m.size {
        if size.width == 0 || size.height == 0 || size.width > 4096 || size.height > 4096 {
            return Err("size must be between 1x1 and 4096x4096".to_string());
        }
    }

    // Parameters.
    let mut names = BTreeSet::new();
    for p in &m.params {
        if !valid_name(&p.name) {
            return Err(format!("parameter name '{}' is not valid", p.name));
        }
        if !names.insert(p.name.as_str()) {
            return Err(format!("parameter '{}' is declared twice", p.name));
        }
        if p.name == "seed" {
            return Err("'seed' is not a manifest parameter: every random node takes one".into());
        }
        if p.ty == ParamType::Media {
            continue;
        }
        if !(p.min.is_finite() && p.max.is_finite() && p.default.is_finite()) || p.min > p.max {
            return Err(format!(
                "parameter '{}' needs finite min <= max and a finite default",
                p.name
            ));
        }
        if p.default < p.min || p.default > p.max {
            return Err(format!(
                "parameter '{}': default {} is outside {}..{}",
                p.name, p.default, p.min, p.max
            ));
        }
        if p.ty == ParamType::Int
            && [p.min, p.max, p.default]
                .iter()
                .any(|v| v.fract() != 0.0 || v.abs() > 1e15)
        {
            return Err(format!(
                "parameter '{}' is an int: min, max and default must be whole numbers",
                p.name
            ));
        }
        if let Some(m) = p.multiple_of {
            let fits = |v: f64| v % f64::from(m) == 0.0;
            if p.ty != ParamType::Int || m == 0 || !fits(p.default) || !fits(p.min) {
                return Err(format!(
                    "parameter '{}': multiple_of needs an int parameter whose min and default are multiples of it",
                    p.name
                ));
            }
        }
    }
    let param_of = |name: &str| m.params.iter().find(|p| p.name == name);
    if let Some(p) = param_of("steps") {
        if !(p.ty == ParamType::Int && p.min >= 1.0 && p.max <= 1000.0) {
            return Err("'steps' must be an int parameter with a range inside 1..1000".into());
        }
    }
    for dim in ["width", "height"] {
        if let Some(p) = param_of(dim) {
            if p.ty != ParamType::Int || p.min < 1.0 || p.max > 4096.0 {
                return Err(format!(
                    "parameter '{dim}' must be an int with a range inside 1..4096"
                ));
            }
        }
    }

    // Ports.
    let mut port_names = BTreeSet::new();
    let sides = m.ports.inputs.iter().map(|p| (p, true));
    for (port, input) in sides.chain(m.ports.outputs.iter().map(|p| (p, false))) {
        if port.name.is_empty() || !PORT_TYPES.contains(&port.ty.as_str()) {
            return Err(format!(
                "port '{}' needs a name and a type of {} (an older manifest? scripts/fetch-models \
                 copies the current ones from models-manifests/)",
                port.name,
                PORT_TYPES.join(", ")
            ));
        }
        if !port_names.insert((port.name.as_str(), input)) {
            return Err(format!("port '{}' is declared twice", port.name));
        }
    }
    if m.ports.outputs.is_empty() {
        return Err("a node needs at least one output port".into());
    }
    if m.ports.outputs.iter().any(|p| p.optional) {
        return Err("only input ports can be optional".into());
    }
    if m.ports.outputs.iter().any(|p| p.ty == "any")
        && !m.ports.inputs.iter().any(|p| p.ty == "any" && !p.optional)
    {
        return Err("an output of type 'any' needs a required input of type 'any'".into());
    }

    // Tensors.
    let mut tensor_names = BTreeSet::new();
    for t in m.inputs.iter().chain(&m.outputs) {
        if t.name.is_empty() || !tensor_names.insert(t.name.as_str()) {
            return Err(format!("tensor name '{}' is empty or used twice", t.name));
        }
        if t.map.is_some() && !matches!(t.role, TensorRole::Condition | TensorRole::Param) {
            return Err(format!(
                "only condition and param inputs take a 'map' ('{}')",
                t.name
            ));
        }
        if let Some(map) = &t.map {
            if map.from[0] == map.from[1] || !map.from.iter().chain(&map.to).all(|v| v.is_finite())
            {
                return Err(format!(
                    "input '{}': map.from must be two different finite numbers",
                    t.name
                ));
            }
        }
        let wants_param = matches!(
            t.role,
            TensorRole::Condition | TensorRole::Param | TensorRole::Media
        );
        match (&t.param, wants_param) {
            (Some(param), true) => {
                let Some(spec) = param_of(param) else {
                    return Err(format!(
                        "input '{}' refers to unknown parameter '{param}'",
                        t.name
                    ));
                };
                if (spec.ty == ParamType::Media) != (t.role == TensorRole::Media) {
                    return Err(format!(
                        "input '{}': media inputs take media parameters, others numbers",
                        t.name
                    ));
                }
            }
            (None, true) => return Err(format!("input '{}' needs a 'param'", t.name)),
            (Some(_), false) => {
                return Err(format!(
                    "only condition, param and media inputs take a 'param' ('{}')",
                    t.name
                ))
            }
            (None, false) => {}
        }
        if (t.role == TensorRole::Port) != t.port.is_some() {
            return Err(format!(
                "port tensors (and only they) name a 'port' ('{}')",
                t.name
            ));
        }
    }
    let bound_ports = |tensors: &[TensorSpec], ports: &[Port], side: &str| {
        for port in ports {
            let n = tensors
                .iter()
                .filter(|t| t.port.as_deref() == Some(port.name.as_str()))
                .count();
            if n != 1 {
                return Err(format!(
                    "{side} port '{}' must be bound to exactly one tensor, found {n}",
                    port.name
                ));
            }
        }
        for t in tensors {
            if let Some(port) = &t.port {
                if !ports.iter().any(|p| &p.name == port) {
                    return Err(format!(
                        "tensor '{}' names unknown {side} port '{port}'",
                        t.name
                    ));
                }
            }
        }
        Ok(())
    };

    match m.kind {
        ModelKind::Op => {
            if m.inputs.iter().any(|t| {
                !matches!(
                    t.role,
                    TensorRole::Port | TensorRole::Param | TensorRole::Media
                )
            }) || m.outputs.iter().any(|t| t.role != TensorRole::Port)
            {
                return Err(
                    "op inputs are port, param or media tensors; outputs port tensors".into(),
                );
            }
            bound_ports(&m.inputs, &m.ports.inputs, "input")?;
            bound_ports(&m.outputs, &m.ports.outputs, "output")?;
            if m.sampler.is_some() || m.size.is_some() {
                return Err("ops take no sampler and no size".into());
            }
            if let Some(scale) = &m.output_scale_param {
                if param_of(scale).is_none_or(|p| p.ty != ParamType::Int || p.min < 1.0) {
                    return Err(format!(
                        "output_scale_param '{scale}' must be an int parameter of at least 1"
                    ));
                }
            }
        }
        ModelKind::ConsistencyDenoiser | ModelKind::ConsistencyRefine => {
            let count = |role| m.inputs.iter().filter(|t| t.role == role).count();
            if count(TensorRole::Noisy) != 1 || count(TensorRole::Sigma) != 1 {
                return Err("inputs need exactly one 'noisy' and one 'sigma' input".into());
            }
            if m.inputs.iter().any(|t| {
                !matches!(
                    t.role,
                    TensorRole::Noisy | TensorRole::Sigma | TensorRole::Condition
                )
            }) {
                return Err("denoiser inputs are noisy, sigma and condition tensors".into());
            }
            if m.outputs.len() != 1 || m.outputs.iter().any(|t| t.role != TensorRole::Denoised) {
                return Err("outputs need exactly one output, with role 'denoised'".into());
            }
            if m.size.is_none() {
                return Err("a denoiser needs a size".into());
            }
            let Some(SamplerSpec::Consistency {
                sigma_min,
                sigma_max,
                sigma_data,
                rho,
            }) = m.sampler
            else {
                return Err("a denoiser needs a sampler".into());
            };
            let finite = [sigma_min, sigma_max, sigma_data, rho]
                .iter()
                .all(|v| v.is_finite());
            let ordered = sigma_min > 0.0 && sigma_max > sigma_min && sigma_data > 0.0 && rho > 0.0;
            if !(finite && ordered) {
                return Err(
                    "sampler needs 0 < sigma_min < sigma_max, sigma_data > 0 and rho > 0".into(),
                );
            }
            let heightmap_out = m.ports.outputs.len() == 1 && m.ports.outputs[0].ty == "heightmap";
            if !heightmap_out {
                return Err("a denoiser has one output port, of type heightmap".into());
            }
            if m.kind == ModelKind::ConsistencyRefine {
                let heightmap_in = m.ports.inputs.len() == 1
                    && m.ports.inputs[0].ty == "heightmap"
                    && !m.ports.inputs[0].optional;
                if !heightmap_in {
                    return Err("a refiner has one required input port, of type heightmap".into());
                }
                match param_of("strength") {
                    Some(p) if p.ty == ParamType::Float && p.min > 0.0 && p.max <= 1.0 => {}
                    _ => {
                        return Err(
                            "a refiner needs a float 'strength' parameter inside (0, 1]".into()
                        )
                    }
                }
                if param_of("steps").is_some() {
                    return Err("a refiner runs one step: no 'steps' parameter".into());
                }
            } else if !m.ports.inputs.is_empty() {
                return Err("a denoiser takes no input ports".into());
            }
        }
    }
    if let Decode::Asinh {
        asinh_scale,
        height_range,
        ..
    } = m.decode
    {
        if !(asinh_scale > 0.0
            && height_range > 0.0
            && asinh_scale.is_finite()
            && height_range.is_finite())
        {
            return Err("decode: asinh_scale and height_range must be positive".into());
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = r#"{
      "name": "tiny", "kind": "consistency-denoiser", "file": "tiny.onnx",
      "size": { "width": 16, "height": 16 },
      "inputs": [
        { "name": "noisy", "role": "noisy" }, { "name": "sigma", "role": "sigma" },
        { "name": "level", "role": "condition", "param": "level", "map": { "from": [1, 100], "to": [0, 1] } }
      ],
      "outputs": [{ "name": "denoised", "role": "denoised" }],
      "sampler": { "kind": "consistency", "sigma_min": 0.002, "sigma_max": 80, "sigma_data": 0.5 },
      "decode": { "kind": "linear" },
      "params": [
        { "name": "steps", "type": "int", "default": 2, "min": 1, "max": 8 },
        { "name": "level", "type": "int", "default": 50, "min": 1, "max": 100 },
        { "name": "gain", "type": "float", "default": 0.5, "min": 0, "max": 1 }
      ],
      "ports": { "outputs": [{ "name": "image", "type": "heightmap" }] }
    }"#;

    fn write_model(root: &Path, dir: &str, manifest: &str, file: Option<&[u8]>) {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(MANIFEST_FILE), manifest).unwrap();
        if let Some(bytes) = file {
            std::fs::write(d.join("tiny.onnx"), bytes).unwrap();
        }
    }

    #[test]
    fn loads_and_describes_node_types() {
        let tmp = tempfile::tempdir().unwrap();
        write_model(tmp.path(), "tiny", TINY, Some(b"x"));
        std::fs::create_dir_all(tmp.path().join(".hidden")).unwrap();
        let catalog = ModelCatalog::load(tmp.path()).unwrap();
        assert_eq!(catalog.names(), vec!["tiny".to_string()]);
        let types = catalog.node_types();
        assert_eq!(types.len(), 1);
        let json = serde_json::to_value(&types[0]).unwrap();
        assert_eq!(json["name"], "tiny");
        assert_eq!(json["params"][1]["name"], "level");
        assert_eq!(json["params"][1]["type"], "int");
        assert_eq!(json["params"][1]["min"], 1.0);
        assert_eq!(json["params"][1]["max"], 100.0);
        assert_eq!(json["outputs"][0]["type"], "heightmap");
        assert_eq!(json["stochastic"], true);
        let map = catalog
            .get("tiny")
            .unwrap()
            .input(TensorRole::Condition)
            .unwrap()
            .map
            .unwrap();
        assert!((map.apply(100.0) - 1.0).abs() < 1e-12);
        assert!((map.apply(1.0)).abs() < 1e-12);
    }

    #[test]
    fn validates_params() {
        let tmp = tempfile::tempdir().unwrap();
        write_model(tmp.path(), "tiny", TINY, Some(b"x"));
        let catalog = ModelCatalog::load(tmp.path()).unwrap();
        let ok = catalog.validate_params("tiny", &Params::new()).unwrap();
        assert_eq!(ok.get("steps"), Some(ParamValue::Int(2)));
        assert_eq!(ok.get("gain"), Some(ParamValue::Float(0.5)));

        let p = |k: &str, v: serde_json::Value| Params::from([(k.to_string(), v)]);
        let e = catalog
            .validate_params("tiny", &p("level", 101.into()))
            .unwrap_err();
        assert_eq!(e.param, "level");
        assert!(e.to_string().contains("'level'"), "{e}");
        assert!(e.to_string().contains("between 1 and 100, got 101"), "{e}");
        let e = catalog
            .validate_params("tiny", &p("steps", 1.5.into()))
            .unwrap_err();
        assert!(e.to_string().contains("whole number"), "{e}");
        let e = catalog
            .validate_params("tiny", &p("gain", "loud".into()))
            .unwrap_err();
        assert_eq!(e.param, "gain");
        let e = catalog
            .validate_params("tiny", &p("bogus", 1.into()))
            .unwrap_err();
        assert_eq!(e.param, "bogus");
        let e = catalog.validate_params("nope", &Params::new()).unwrap_err();
        assert!(e.to_string().contains("not in the catalog"), "{e}");
        let ok = catalog
            .validate_params("tiny", &p("steps", 3.0.into()))
            .unwrap();
        assert_eq!(ok.get_u32("steps"), Some(3));
    }

    #[test]
    fn multiple_of_is_checked_in_manifests_and_params() {
        let sized = TINY.replace(
            r#"{ "name": "gain","#,
            r#"{ "name": "width", "type": "int", "default": 128, "min": 128, "max": 512, "multiple_of": 64 },
        { "name": "gain","#,
        );
        let tmp = tempfile::tempdir().unwrap();
        write_model(tmp.path(), "tiny", &sized, Some(b"x"));
        let catalog = ModelCatalog::load(tmp.path()).unwrap();
        let p = |v: i64| Params::from([("width".to_string(), v.into())]);
        assert_eq!(
            catalog
                .validate_params("tiny", &p(256))
                .unwrap()
                .get_u32("width"),
            Some(256)
        );
        let e = catalog.validate_params("tiny", &p(200)).unwrap_err();
        assert_eq!(e.param, "width");
        assert!(e.to_string().contains("multiple of 64, got 200"), "{e}");
        let e = catalog.validate_params("tiny", &p(576)).unwrap_err();
        assert!(
            e.to_string().contains("between 128 and 512, got 576"),
            "{e}"
        );
        let json = serde_json::to_value(&catalog.node_types()[0]).unwrap();
        assert_eq!(json["params"][2]["multiple_of"], 64);

        let tmp = tempfile::tempdir().unwrap();
        write_model(
            tmp.path(),
            "tiny",
            &sized.replace(r#""default": 128"#, r#""default": 130"#),
            Some(b"x"),
        );
        let e = ModelCatalog::load(tmp.path()).unwrap_err();
        assert!(e.to_string().contains("multiple_of"), "{e}");
    }

    #[test]
    fn reports_missing_and_invalid_models_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        write_model(tmp.path(), "tiny", TINY, None);
        let e = ModelCatalog::load(tmp.path()).unwrap_err();
        assert!(matches!(e, CatalogError::MissingFile { .. }), "{e}");
        assert_eq!(e.model(), Some("tiny"));
        assert!(e.to_string().contains("tiny.onnx is missing"), "{e}");

        let tmp = tempfile::tempdir().unwrap();
        write_model(tmp.path(), "tiny", TINY, Some(b""));
        let e = ModelCatalog::load(tmp.path()).unwrap_err();
        assert!(matches!(e, CatalogError::CorruptFile { .. }), "{e}");

        let tmp = tempfile::tempdir().unwrap();
        write_model(tmp.path(), "broken", "{ not json", Some(b"x"));
        let e = ModelCatalog::load(tmp.path()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("model 'broken': invalid manifest"),
            "{e}"
        );

        let tmp = tempfile::tempdir().unwrap();
        let bad = TINY.replace(r#""default": 50"#, r#""default": 500"#);
        write_model(tmp.path(), "tiny", &bad, Some(b"x"));
        let e = ModelCatalog::load(tmp.path()).unwrap_err();
        assert!(
            e.to_string().contains("parameter 'level': default 500"),
            "{e}"
        );

        let tmp = tempfile::tempdir().unwrap();
        let bad = TINY.replace(r#""file": "tiny.onnx""#, r#""file": "../tiny.onnx""#);
        write_model(tmp.path(), "tiny", &bad, Some(b"x"));
        let e = ModelCatalog::load(tmp.path()).unwrap_err();
        assert!(e.to_string().contains("relative path"), "{e}");

        let e = ModelCatalog::load(&tmp.path().join("absent")).unwrap_err();
        assert!(matches!(e, CatalogError::Dir { .. }), "{e}");
    }
}
