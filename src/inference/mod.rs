//! # Inference: running the catalog's models on a worker with ONNX Runtime
//!
//! - [`runtime`]: loads ONNX Runtime ([`ort::init_from`], `load-dynamic`) and picks the execution
//!   provider ([`ExecutionProvider`]: `auto`, `cuda`, `cpu`) → a [`Device`] (`"cpu"`, `"cuda:0"`).
//! - [`catalog`]: the models directory's manifests → [`ModelCatalog`], node types, parameter checks.
//! - [`sampler`]: the multistep consistency sampler, generic over a [`Denoiser`](sampler::Denoiser).
//! - [`session`]: one model's ONNX Runtime session, one denoising step per run, and the
//!   [`CancelToken`] that terminates a running step (`RunOptions::terminate`).
//! - [`image`]: heights → 16-bit grayscale PNG, and 8-bit previews.
//! - [`op`]: plain ONNX graphs over ports and parameters (the workflow's image operations).
//! - [`tensor`]: the images that flow between a workflow's nodes ([`Tensor`]), their bytes.
//! - [`tiles`]: outputs larger than a fixed-size model's, as overlapping tiles blended at their
//!   seams (several tiles per ONNX Runtime run).
//!
//! A workflow node runs with [`Engine::run_node`]: its input ports' tensors in, its output ports'
//! tensors (and the PNG people see) out.
//! - [`bench`]: per-step timing of a model, for comparing against the Python runtime.
//!
//! ```no_run
//! # use atelier::inference::*;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::load(&EngineConfig::new("models"))?; // errors name the model and why
//! println!("{} models on {}", engine.catalog().names().len(), engine.device());
//! let cancel = CancelToken::new(); // keep a clone to cancel from another thread
//! let params = Params::from([("steps".to_string(), 4.into()), ("difficulty".to_string(), 70.into())]);
//! let out = engine.run("terrain", &params, 7, |p: StepProgress| {
//!     println!("step {}/{} ({} byte preview)", p.step, p.total, p.preview_png.len());
//! }, &cancel)?;
//! std::fs::write("terrain.png", &out.png)?;
//! # Ok(()) }
//! ```
//!
//! **Threads.** [`Engine::load`] and [`Engine::run`] block (model loading takes a second, a terrain
//! step about one second on one CPU core). Call them from `tokio::task::spawn_blocking` or a
//! dedicated thread, never on the async executor. The engine is `Send + Sync`: share it in an
//! `Arc`. Runs of the same model are serialised (one session per model); runs of different models
//! proceed in parallel.
//!
//! **Files.** `scripts/fetch-models` fetches everything into gitignored places: ONNX Runtime's
//! `libonnxruntime.so.1.31.1` (CPU, from the `onnxruntime==1.31.1` wheel) into
//! `.tools/onnxruntime/`, and the models into `models/` (`ATELIER_MODELS_DIR`).
//!
//! **GPU hosts.** `ort` is built with CUDA support (feature `cuda`); what decides is the library.
//! A GPU host installs the CUDA build of the same ONNX Runtime and points `ORT_DYLIB_PATH` at it:
//!
//! ```sh
//! python3 -m venv /opt/ort-gpu
//! /opt/ort-gpu/bin/pip install onnxruntime-gpu==1.31.1 nvidia-cudnn-cu13   # cuDNN 9 for CUDA 13
//! # CUDA 13 runtime libraries on the loader path (NVIDIA's CUDA 13 packages, or its pip wheels):
//! #   libcudart.so.13 libcublasLt.so.13 libcublas.so.13 libnvrtc.so.13 libcurand.so.10 libcufft.so.12
//! #   and cuDNN 9's libcudnn*.so.9 — e.g. export LD_LIBRARY_PATH=/usr/local/cuda-13/lib64:<cudnn>/lib
//! export ORT_DYLIB_PATH=$(echo /opt/ort-gpu/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1)
//! ```
//!
//! (`libonnxruntime_providers_cuda.so` sits next to that library and is found there.) Then the
//! `cuda` execution provider fails at start-up with ONNX Runtime's reason when CUDA cannot be used,
//! and `auto` falls back to the CPU with a warning in the log and `cpu` as the reported device.

pub mod bench;
pub mod catalog;
pub mod image;
pub mod op;
pub mod runtime;
pub mod sampler;
pub mod session;
pub mod tensor;
pub mod tiles;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use catalog::{
    CatalogError, ModelCatalog, ModelEntry, NodeType, ParamError, ParamSpec, ParamType, Params,
    ResolvedParams,
};
pub use runtime::{Device, ExecutionProvider, RuntimeError};
pub use session::CancelToken;
pub use tensor::Tensor;

use catalog::{Decode, ModelKind};
use op::OpSession;
use runtime::{OpenError, SessionSettings};
use sampler::ConsistencySampler;
use session::ModelSession;

/// The longest side of a progress preview, in pixels.
pub const PREVIEW_MAX_SIDE: u32 = 64;

/// How to start the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The models directory (`ATELIER_MODELS_DIR`, default `./models`).
    pub models_dir: PathBuf,
    /// The ONNX Runtime library; `None`: `ORT_DYLIB_PATH`, else
    /// `.tools/onnxruntime/libonnxruntime.so.1.31.1` relative to the working directory.
    pub ort_dylib_path: Option<PathBuf>,
    pub execution_provider: ExecutionProvider,
    /// The CUDA device when CUDA is used.
    pub device_id: i32,
    /// ONNX Runtime intra-op threads per session; 0 lets ONNX Runtime decide.
    pub intra_threads: usize,
}

impl EngineConfig {
    /// `auto` provider, device 0, ONNX Runtime's default thread count.
    pub fn new(models_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            models_dir: models_dir.into(),
            ort_dylib_path: None,
            execution_provider: ExecutionProvider::Auto,
            device_id: 0,
            intra_threads: 0,
        }
    }

    /// `ATELIER_MODELS_DIR` (default `./models`) and `ORT_DYLIB_PATH`, other settings default.
    pub fn from_env() -> Self {
        let dir = std::env::var_os("ATELIER_MODELS_DIR")
            .filter(|d| !d.is_empty())
            .map_or_else(|| PathBuf::from("models"), PathBuf::from);
        Self::new(dir)
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("cancelled")]
    Cancelled,
    #[error("model '{model}' failed: {reason}")]
    Inference { model: String, reason: String },
    #[error("cannot encode the output image: {0}")]
    Image(String),
    #[error("internal inference error: {0}")]
    Internal(String),
}

/// Progress after a denoising step: `step` of `total` (1-based), with a preview of the current
/// estimate (8-bit grayscale PNG, at most [`PREVIEW_MAX_SIDE`] on a side).
#[derive(Debug, Clone)]
pub struct StepProgress {
    pub step: u32,
    pub total: u32,
    pub sigma: f32,
    pub preview_png: Vec<u8>,
    /// Time since the first step started (waiting for the model's session is not counted).
    pub elapsed: Duration,
}

/// A finished run.
#[derive(Debug, Clone, Serialize)]
pub struct Output {
    /// 16-bit grayscale PNG, min–max normalised; the range is in its `value_min`/`value_max` text
    /// chunks and in [`Output::value_min`]/[`Output::value_max`].
    #[serde(skip)]
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub value_min: f32,
    pub value_max: f32,
    /// `"m"` for heights, else `None`.
    pub unit: Option<&'static str>,
    pub model: String,
    pub seed: u64,
    pub steps: u32,
    /// The parameters used, defaults filled in.
    pub params: ResolvedParams,
    pub device: String,
    pub elapsed_ms: u64,
}

/// One workflow node to run: its model, parameters, seed, the tensors on its input ports, and
/// the bytes of the media its parameters name (by media id).
#[derive(Debug, Clone, Copy)]
pub struct NodeRequest<'a> {
    pub model: &'a str,
    pub params: &'a Params,
    pub seed: u64,
    pub inputs: &'a BTreeMap<String, Arc<Tensor>>,
    pub media: &'a BTreeMap<String, Vec<u8>>,
}

/// What a node produced: a tensor per output port, and the PNG people see (its first port).
#[derive(Debug, Clone)]
pub struct NodeOutput {
    pub ports: BTreeMap<String, Tensor>,
    pub png: Vec<u8>,
    /// Time spent inside ONNX Runtime runs; the rest of the node's time is overhead.
    pub inference: Duration,
}

enum Loaded {
    Denoiser(Mutex<ModelSession>),
    Op(Mutex<OpSession>),
}

/// The loaded models, ready to run. See the [module docs](self).
pub struct Engine {
    device: Device,
    catalog: ModelCatalog,
    sessions: BTreeMap<String, Loaded>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("device", &self.device)
            .field("models", &self.catalog.names())
            .finish()
    }
}

impl Engine {
    /// Loads ONNX Runtime, reads the catalog and opens a session for every model. Fails with the
    /// first problem: the library (missing, too old), the provider (`cuda` without CUDA), or a
    /// model (missing manifest or file, corrupt file, inputs not as the manifest says) — naming
    /// the model and why. Blocks: see the module docs.
    pub fn load(config: &EngineConfig) -> Result<Engine, EngineError> {
        let path = runtime::dylib_path(config.ort_dylib_path.as_deref());
        let env = runtime::environment(&path)?;
        let settings = SessionSettings {
            intra_threads: config.intra_threads,
            device_id: config.device_id,
        };
        if config.execution_provider == ExecutionProvider::Cuda {
            runtime::probe_cuda(&env, settings)
                .map_err(|reason| RuntimeError::CudaUnavailable { reason })?;
        }
        let catalog = ModelCatalog::load(&config.models_dir)?;

        let mut device: Option<Device> = None;
        let mut sessions = BTreeMap::new();
        for entry in catalog.models() {
            let started = Instant::now();
            let opened = match device {
                None => runtime::open_first(&env, &entry.file, config.execution_provider, settings)
                    .map(|(s, d)| {
                        device = Some(d);
                        s
                    }),
                Some(d) => runtime::open(&env, &entry.file, d, settings),
            };
            let session = opened.map_err(|e| match e {
                OpenError::Runtime(r) => EngineError::Runtime(r),
                OpenError::Model(reason) => EngineError::Catalog(CatalogError::CorruptFile {
                    model: entry.name().to_string(),
                    path: entry.file.clone(),
                    reason,
                }),
            })?;
            let session = match entry.manifest.kind {
                ModelKind::Op => Loaded::Op(Mutex::new(OpSession::new(session, entry)?)),
                ModelKind::ConsistencyDenoiser | ModelKind::ConsistencyRefine => {
                    Loaded::Denoiser(Mutex::new(ModelSession::new(session, entry)?))
                }
            };
            tracing::info!(
                model = entry.name(),
                file = %entry.file.display(),
                ms = started.elapsed().as_millis() as u64,
                "model loaded"
            );
            sessions.insert(entry.name().to_string(), session);
        }
        let device = match (device, config.execution_provider) {
            (Some(d), _) => d,
            (None, ExecutionProvider::Cpu) => Device::Cpu,
            // No model to try CUDA on: the probe decides.
            (None, _) => match runtime::probe_cuda(&env, settings) {
                Ok(()) => Device::Cuda {
                    device_id: config.device_id,
                },
                Err(_) => Device::Cpu,
            },
        };
        tracing::info!(
            device = %device,
            requested = %config.execution_provider,
            models = ?catalog.names(),
            "inference engine ready"
        );
        Ok(Engine {
            device,
            catalog,
            sessions,
        })
    }

    /// Where the models run: `"cpu"` or `"cuda:<id>"`.
    pub fn device(&self) -> Device {
        self.device
    }

    pub fn catalog(&self) -> &ModelCatalog {
        &self.catalog
    }

    /// Every model as a node type (serialisable).
    pub fn node_types(&self) -> Vec<NodeType> {
        self.catalog.node_types()
    }

    /// Checks parameters for `model` without running it.
    pub fn validate(&self, model: &str, params: &Params) -> Result<ResolvedParams, RunError> {
        if self.catalog.get(model).is_none() {
            return Err(RunError::UnknownModel(model.to_string()));
        }
        Ok(self.catalog.validate_params(model, params)?)
    }

    /// Runs `model` with `params` and `seed`: validates the parameters, samples (calling `on_step`
    /// after every step, on this thread), and encodes the result. `cancel` stops the run within
    /// one step, with [`RunError::Cancelled`]. Blocks for the whole run: see the module docs.
    pub fn run(
        &self,
        model: &str,
        params: &Params,
        seed: u64,
        mut on_step: impl FnMut(StepProgress),
        cancel: &CancelToken,
    ) -> Result<Output, RunError> {
        let started = Instant::now();
        let generated = self.generate(model, params, seed, &mut on_step, cancel)?;
        let Generated {
            values,
            width,
            height,
            steps,
            resolved,
            unit,
            ..
        } = generated;
        let (value_min, value_max) = image::range(&values);
        let png = image::heightmap_png(&values, width, height, unit).map_err(RunError::Image)?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(model, seed, steps, elapsed_ms, device = %self.device, "run finished");
        Ok(Output {
            png,
            width,
            height,
            value_min,
            value_max,
            unit,
            model: model.to_string(),
            seed,
            steps,
            params: resolved,
            device: self.device.name(),
            elapsed_ms,
        })
    }

    fn entry_and_session(&self, model: &str) -> Result<(&ModelEntry, &Loaded), RunError> {
        let entry = self
            .catalog
            .get(model)
            .ok_or_else(|| RunError::UnknownModel(model.to_string()))?;
        let session = self
            .sessions
            .get(model)
            .ok_or_else(|| RunError::UnknownModel(model.to_string()))?;
        Ok((entry, session))
    }

    /// A generating denoiser's sampled values (decoded), with what describes them.
    fn generate(
        &self,
        model: &str,
        params: &Params,
        seed: u64,
        on_step: &mut dyn FnMut(StepProgress),
        cancel: &CancelToken,
    ) -> Result<Generated, RunError> {
        let (entry, session) = self.entry_and_session(model)?;
        let m = &entry.manifest;
        let (Loaded::Denoiser(session), ModelKind::ConsistencyDenoiser) = (session, m.kind) else {
            return Err(RunError::Internal(format!(
                "model '{model}' takes inputs: run it as a node of a graph"
            )));
        };
        let resolved = entry.validate_params(params)?;
        // One step unless the model offers more: the terrain model is endpoint-distilled, and
        // noise re-injected by further steps is only partly removed.
        let steps = resolved.get_u32("steps").unwrap_or(1);
        let size = m
            .size
            .ok_or_else(|| RunError::Internal("a denoiser without a size".into()))?;
        let width = resolved.get_u32("width").unwrap_or(size.width);
        let height = resolved.get_u32("height").unwrap_or(size.height);
        let (sigma_min, sigma_max, rho) = m
            .sampler()
            .ok_or_else(|| RunError::Internal("a denoiser without a sampler".into()))?;
        let sampler = ConsistencySampler {
            sigma_min,
            sigma_max,
            rho,
        };
        cancel.check()?;

        let mut guard = session.lock().unwrap_or_else(|e| e.into_inner());
        // A model that fixes its size makes larger outputs as overlapping tiles.
        let tile = match guard.fixed_size() {
            Some(fixed) if fixed == (height as usize, width as usize) => None,
            Some((th, tw)) if height as usize >= th && width as usize >= tw => Some((th, tw)),
            Some((th, tw)) => {
                return Err(RunError::Internal(format!(
                    "model '{model}' takes {tw}x{th} images or larger ones made of tiles, asked for {width}x{height}"
                )))
            }
            None => None,
        };
        let (w, h) = (width as usize, height as usize);
        let sampling_started = Instant::now();
        let decode = m.decode;
        tracing::debug!(model, seed, steps, width, height, ?tile, "run started");
        let inference_started = Instant::now();
        let estimate = match tile {
            None => {
                let mut denoiser = guard.denoiser(h, w, &resolved, cancel)?;
                sampler.sample(&mut denoiser, w * h, steps, seed, cancel, |s| {
                    on_step(progress(
                        s.step,
                        s.total,
                        s.sigma,
                        &image::decode(s.denoised, &decode),
                        (width, height),
                        sampling_started,
                    ));
                })?
            }
            Some((th, tw)) => {
                let grid = tiles::TileGrid::new(h, w, th, tw).map_err(RunError::Internal)?;
                let mut inner = guard.denoiser(th, tw, &resolved, cancel)?;
                // Progress per tile: the sampler's own per-step report would repeat the last.
                let mut on_tile = |p: tiles::TileProgress<'_>| {
                    on_step(progress(
                        p.done,
                        p.total,
                        p.sigma,
                        &image::decode(p.canvas, &decode),
                        (width, height),
                        sampling_started,
                    ));
                };
                let mut tiled = tiles::TiledDenoiser {
                    inner: &mut inner,
                    grid: &grid,
                    total: (grid.len() as u32).saturating_mul(steps),
                    done: 0,
                    on_tile: &mut on_tile,
                };
                sampler.sample(&mut tiled, w * h, steps, seed, cancel, |_| {})?
            }
        };
        let inference = inference_started.elapsed();
        drop(guard);
        Ok(Generated {
            values: image::decode(&estimate, &decode),
            width,
            height,
            steps,
            resolved,
            unit: unit_of(&decode),
            inference,
        })
    }

    /// Runs one workflow node (see [`NodeRequest`]): a denoiser generates, a refiner re-noises
    /// and denoises its input heightmap, an op runs its graph. Blocks: see the module docs.
    pub fn run_node(
        &self,
        request: NodeRequest<'_>,
        mut on_step: impl FnMut(StepProgress),
        cancel: &CancelToken,
    ) -> Result<NodeOutput, RunError> {
        let NodeRequest {
            model,
            params,
            seed,
            inputs,
            media,
        } = request;
        let (entry, session) = self.entry_and_session(model)?;
        let m = &entry.manifest;
        let first_port = m
            .ports
            .outputs
            .first()
            .ok_or_else(|| RunError::Internal(format!("model '{model}' has no output port")))?;
        let (ports, unit, inference) = match (m.kind, session) {
            (ModelKind::ConsistencyDenoiser, _) => {
                let g = self.generate(model, params, seed, &mut on_step, cancel)?;
                let t = Tensor::new(1, g.height as usize, g.width as usize, g.values)
                    .map_err(RunError::Internal)?;
                (
                    BTreeMap::from([(first_port.name.clone(), t)]),
                    g.unit,
                    g.inference,
                )
            }
            (ModelKind::ConsistencyRefine, Loaded::Denoiser(session)) => {
                self.refine(entry, session, params, seed, inputs, &mut on_step, cancel)?
            }
            (ModelKind::Op, Loaded::Op(session)) => {
                let resolved = entry.validate_params(params)?;
                for port in &m.ports.inputs {
                    if !port.optional && !inputs.contains_key(&port.name) {
                        return Err(RunError::Internal(format!(
                            "input '{}' was not delivered",
                            port.name
                        )));
                    }
                }
                if let Some(scale) = &m.output_scale_param {
                    let f = resolved.get_u32(scale).unwrap_or(1) as usize;
                    for t in inputs.values() {
                        let pixels = t.height * t.width * f * f;
                        if pixels > tensor::MAX_PIXELS {
                            return Err(RunError::Inference {
                                model: model.to_string(),
                                reason: format!(
                                    "the result would be {}x{}, above the {}-pixel limit",
                                    t.width * f,
                                    t.height * f,
                                    tensor::MAX_PIXELS
                                ),
                            });
                        }
                    }
                }
                let mut images = BTreeMap::new();
                for (param, id) in resolved.media() {
                    let bytes = media
                        .get(&id.to_string())
                        .ok_or_else(|| RunError::Inference {
                            model: model.to_string(),
                            reason: format!("media {id} was not delivered"),
                        })?;
                    let t = Tensor::from_png_rgba(bytes).map_err(|e| RunError::Inference {
                        model: model.to_string(),
                        reason: format!("media {id}: {e}"),
                    })?;
                    images.insert(param.to_string(), Arc::new(t));
                }
                cancel.check()?;
                let mut guard = session.lock().unwrap_or_else(|e| e.into_inner());
                let started = Instant::now();
                let out = guard.run(&resolved, inputs, &images, cancel)?;
                let inference = started.elapsed();
                drop(guard);
                // One step, so every node reports progress, with a preview of what it made.
                if let Some(t) = out.get(&first_port.name) {
                    on_step(progress(
                        1,
                        1,
                        0.0,
                        t.plane(0),
                        (t.width as u32, t.height as u32),
                        started,
                    ));
                }
                let unit = (first_port.ty == "heightmap").then_some("m");
                (out, unit, inference)
            }
            _ => {
                return Err(RunError::Internal(format!(
                    "model '{model}' was loaded as another kind"
                )))
            }
        };
        let shown = ports
            .get(&first_port.name)
            .ok_or_else(|| RunError::Inference {
                model: model.to_string(),
                reason: format!("no '{}' output", first_port.name),
            })?;
        let png = shown.to_png(unit).map_err(RunError::Image)?;
        Ok(NodeOutput {
            ports,
            png,
            inference,
        })
    }

    /// Image-to-image with a consistency denoiser (see [`ModelKind::ConsistencyRefine`]).
    #[allow(clippy::too_many_arguments)]
    fn refine(
        &self,
        entry: &ModelEntry,
        session: &Mutex<ModelSession>,
        params: &Params,
        seed: u64,
        inputs: &BTreeMap<String, Arc<Tensor>>,
        on_step: &mut dyn FnMut(StepProgress),
        cancel: &CancelToken,
    ) -> Result<NodeResult, RunError> {
        let m = &entry.manifest;
        let model = entry.name();
        let resolved = entry.validate_params(params)?;
        let strength = resolved.get_f64("strength").unwrap_or(0.5) as f32;
        let size = m
            .size
            .ok_or_else(|| RunError::Internal("a refiner without a size".into()))?;
        let (sigma_min, sigma_max, rho) = m
            .sampler()
            .ok_or_else(|| RunError::Internal("a refiner without a sampler".into()))?;
        let in_port = m
            .ports
            .inputs
            .first()
            .ok_or_else(|| RunError::Internal("a refiner without an input port".into()))?;
        let out_port = m
            .ports
            .outputs
            .first()
            .ok_or_else(|| RunError::Internal("a refiner without an output port".into()))?;
        let input = inputs.get(&in_port.name).ok_or_else(|| {
            RunError::Internal(format!("input '{}' was not delivered", in_port.name))
        })?;
        if input.channels != 1 {
            return Err(RunError::Inference {
                model: model.to_string(),
                reason: format!("input '{}' is not a heightmap", in_port.name),
            });
        }
        let (w, h) = (size.width as usize, size.height as usize);
        // The model takes one size: the input is resampled to it.
        let input = input.resized(h, w).map_err(RunError::Internal)?;
        let x0 = image::encode(&input.data, &m.decode);
        let sampler = ConsistencySampler {
            sigma_min,
            sigma_max,
            rho,
        };
        cancel.check()?;
        let mut guard = session.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        let mut denoiser = guard.denoiser(h, w, &resolved, cancel)?;
        let (sigma, estimate) = sampler.refine(&mut denoiser, &x0, strength, seed, cancel)?;
        let inference = started.elapsed();
        drop(guard);
        let values = image::decode(&estimate, &m.decode);
        on_step(progress(
            1,
            1,
            sigma,
            &values,
            (size.width, size.height),
            started,
        ));
        tracing::debug!(model, seed, strength, sigma, "refined");
        let t = Tensor::new(1, h, w, values).map_err(RunError::Internal)?;
        Ok((
            BTreeMap::from([(out_port.name.clone(), t)]),
            unit_of(&m.decode),
            inference,
        ))
    }

    /// The model file and directory of `model`, if it is in the catalog.
    pub fn model_file(&self, model: &str) -> Option<&Path> {
        self.catalog.get(model).map(|e| e.file.as_path())
    }
}

/// A node's output ports, the unit of its first port, and the time ONNX Runtime ran.
type NodeResult = (BTreeMap<String, Tensor>, Option<&'static str>, Duration);

/// A generating denoiser's result.
struct Generated {
    values: Vec<f32>,
    width: u32,
    height: u32,
    steps: u32,
    resolved: ResolvedParams,
    unit: Option<&'static str>,
    inference: Duration,
}

fn unit_of(decode: &Decode) -> Option<&'static str> {
    match decode {
        Decode::Asinh { .. } => Some("m"),
        Decode::Linear => None,
    }
}

fn progress(
    step: u32,
    total: u32,
    sigma: f32,
    values: &[f32],
    (width, height): (u32, u32),
    started: Instant,
) -> StepProgress {
    let preview_png = match image::preview_png(values, width, height, PREVIEW_MAX_SIDE) {
        Ok(png) => png,
        Err(e) => {
            tracing::warn!(error = %e, "preview failed");
            Vec::new()
        }
    };
    StepProgress {
        step,
        total,
        sigma,
        preview_png,
        elapsed: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_and_cancel_token_can_be_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Engine>();
        shared::<CancelToken>();
        shared::<Output>();
    }

    #[test]
    fn execution_provider_parses_and_prints() {
        for (text, p) in [
            ("auto", ExecutionProvider::Auto),
            ("CUDA", ExecutionProvider::Cuda),
            (" cpu ", ExecutionProvider::Cpu),
        ] {
            assert_eq!(text.parse::<ExecutionProvider>(), Ok(p));
            assert_eq!(p.to_string(), text.trim().to_lowercase());
        }
        assert!("tpu"
            .parse::<ExecutionProvider>()
            .unwrap_err()
            .contains("auto, cuda or cpu"));
        assert_eq!(Device::Cuda { device_id: 0 }.name(), "cuda:0");
        assert_eq!(Device::Cpu.name(), "cpu");
        assert_eq!(ExecutionProvider::default(), ExecutionProvider::Auto);
    }
}
