//! Loading ONNX Runtime (`ort` with `load-dynamic`) and choosing the execution provider.
//!
//! The library is loaded once per process, always through [`ort::init_from`], which returns an
//! error for a missing or too-old library (any other first use of `ort` would panic instead). The
//! environment is process-wide too: ONNX Runtime allows one per process, so every
//! [`Engine`](super::Engine) shares it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use ort::environment::Environment;
use ort::ep::{ExecutionProvider as _, CPU, CUDA};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use serde::{Deserialize, Serialize};

/// The ONNX Runtime version `scripts/fetch-models` provides and `ort` is built for.
pub const ORT_VERSION: &str = "1.31.1";

/// Where `scripts/fetch-models` puts the library, relative to the repository.
pub const DEFAULT_ORT_DYLIB: &str = ".tools/onnxruntime/libonnxruntime.so.1.31.1";

/// Which execution provider runs the models.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// CUDA when it is available, else the CPU (the log and the reported device say which).
    #[default]
    Auto,
    /// CUDA only: refuses to start when CUDA is unavailable.
    Cuda,
    /// The CPU only.
    Cpu,
}

impl ExecutionProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Cuda => "cuda",
            Self::Cpu => "cpu",
        }
    }
}

impl fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExecutionProvider {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cuda" | "gpu" => Ok(Self::Cuda),
            "cpu" => Ok(Self::Cpu),
            other => Err(format!(
                "unknown execution provider '{other}': expected auto, cuda or cpu"
            )),
        }
    }
}

/// The device the models run on, once chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Cuda { device_id: i32 },
}

impl Device {
    /// `"cpu"` or `"cuda:<id>"`.
    pub fn name(&self) -> String {
        self.to_string()
    }

    /// The ONNX Runtime name of the provider, e.g. `CUDAExecutionProvider`.
    pub fn provider_name(&self) -> &'static str {
        match self {
            Self::Cpu => CPU::NAME,
            Self::Cuda { .. } => CUDA::NAME,
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda { device_id } => write!(f, "cuda:{device_id}"),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("ONNX Runtime library {path} does not exist (run scripts/fetch-models, or point ORT_DYLIB_PATH at libonnxruntime.so.{ORT_VERSION})")]
    Missing { path: PathBuf },
    #[error("cannot load ONNX Runtime from {path}: {reason} (ONNX Runtime {ORT_VERSION} is required: run scripts/fetch-models, or point ORT_DYLIB_PATH at it)")]
    Load { path: PathBuf, reason: String },
    #[error("cannot create the ONNX Runtime environment: {0}")]
    Environment(String),
    #[error("the CUDA execution provider was requested but is unavailable: {}. Use the auto or cpu execution provider, or install onnxruntime-gpu {ORT_VERSION} with CUDA 13 and cuDNN 9 and point ORT_DYLIB_PATH at its libonnxruntime.so", reason.trim_end_matches(['.', ' ']))]
    CudaUnavailable { reason: String },
    #[error("cannot configure an ONNX Runtime session: {0}")]
    Session(String),
}

static RUNTIME: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// Loads ONNX Runtime from `path` (once per process) and returns the process's environment.
/// A later call with another path gets the library already loaded, with a warning.
pub fn environment(path: &Path) -> Result<Environment, RuntimeError> {
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((loaded, env)) = slot.as_ref() {
        if loaded != path {
            tracing::warn!(
                loaded = %loaded.display(),
                requested = %path.display(),
                "ONNX Runtime is already loaded in this process; using the library already loaded"
            );
        }
        return Ok(env.clone());
    }
    if !path.is_file() {
        return Err(RuntimeError::Missing {
            path: path.to_path_buf(),
        });
    }
    // A relative path would be resolved against the executable's directory by `ort`; make it
    // relative to the working directory, as a person expects.
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let builder = ort::init_from(&absolute).map_err(|e| RuntimeError::Load {
        path: absolute.clone(),
        reason: e.to_string(),
    })?;
    let env = builder
        .with_name("atelier")
        .with_telemetry(false)
        .build()
        .map_err(|e| RuntimeError::Environment(e.to_string()))?;
    tracing::info!(path = %absolute.display(), "ONNX Runtime loaded");
    *slot = Some((path.to_path_buf(), env.clone()));
    Ok(env)
}

/// The library path to use: `configured`, else `ORT_DYLIB_PATH`, else [`DEFAULT_ORT_DYLIB`]
/// (relative to the working directory).
pub fn dylib_path(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_ORT_DYLIB),
    }
}

/// Session settings shared by every model.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    /// Threads inside one operator; 0 lets ONNX Runtime decide (one per physical core).
    pub intra_threads: usize,
    pub device_id: i32,
}

fn builder(env: &Environment, settings: SessionSettings) -> Result<SessionBuilder, RuntimeError> {
    let err = |e: ort::Error<SessionBuilder>| RuntimeError::Session(e.to_string());
    let mut b = Session::builder(env)
        .map_err(|e| RuntimeError::Session(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(err)?;
    if settings.intra_threads > 0 {
        b = b.with_intra_threads(settings.intra_threads).map_err(err)?;
    }
    Ok(b)
}

/// Checks that the CUDA execution provider can be registered (the library has it and its CUDA
/// libraries load). A GPU-less host with the GPU library may still fail later, when a session is
/// created; [`open`] handles that.
pub fn probe_cuda(env: &Environment, settings: SessionSettings) -> Result<(), String> {
    let b = builder(env, settings).map_err(|e| e.to_string())?;
    b.with_execution_providers([CUDA::default()
        .with_device_id(settings.device_id)
        .build()
        .error_on_failure()])
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Why a session could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The runtime or the provider, not the model.
    Runtime(RuntimeError),
    /// The model file (corrupt, unsupported).
    Model(String),
}

/// Opens a session for the model file at `path` on `device`.
pub fn open(
    env: &Environment,
    path: &Path,
    device: Device,
    settings: SessionSettings,
) -> Result<Session, OpenError> {
    let mut b = builder(env, settings).map_err(OpenError::Runtime)?;
    if let Device::Cuda { device_id } = device {
        b = b
            .with_execution_providers([CUDA::default()
                .with_device_id(device_id)
                .build()
                .error_on_failure()])
            .map_err(|e| {
                OpenError::Runtime(RuntimeError::CudaUnavailable {
                    reason: e.to_string(),
                })
            })?;
    }
    b.commit_from_file(path)
        .map_err(|e| OpenError::Model(e.to_string()))
}

/// Resolves the provider for the first model: with `auto`, CUDA is tried first and the CPU is
/// used when CUDA cannot be registered or cannot open the model (logged as a warning).
pub fn open_first(
    env: &Environment,
    path: &Path,
    requested: ExecutionProvider,
    settings: SessionSettings,
) -> Result<(Session, Device), OpenError> {
    let cuda = Device::Cuda {
        device_id: settings.device_id,
    };
    match requested {
        ExecutionProvider::Cpu => Ok((open(env, path, Device::Cpu, settings)?, Device::Cpu)),
        ExecutionProvider::Cuda => match open(env, path, cuda, settings) {
            Ok(s) => Ok((s, cuda)),
            // The model may be fine and CUDA broken: tell them apart by trying the CPU.
            Err(OpenError::Model(reason)) => match open(env, path, Device::Cpu, settings) {
                Ok(_) => Err(OpenError::Runtime(RuntimeError::CudaUnavailable { reason })),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        ExecutionProvider::Auto => match open(env, path, cuda, settings) {
            Ok(s) => Ok((s, cuda)),
            Err(e) => {
                let reason = match &e {
                    OpenError::Runtime(r) => r.to_string(),
                    OpenError::Model(m) => m.clone(),
                };
                let session = open(env, path, Device::Cpu, settings)?;
                tracing::warn!(%reason, "execution provider auto: CUDA is unavailable, using the CPU");
                Ok((session, Device::Cpu))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The library unit tests never load the real library, so these see a process without one.
    // (Once a library is loaded, `environment` returns it whatever the path: see its docs.)

    #[test]
    fn a_missing_library_is_an_error_not_a_panic() {
        let err = environment(Path::new("/nonexistent/libonnxruntime.so.1.31.1")).unwrap_err();
        assert!(matches!(err, RuntimeError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("scripts/fetch-models"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_the_library_is_an_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = tmp.path().join("libonnxruntime.so.1.31.1");
        std::fs::write(&fake, b"not a shared library").unwrap();
        let err = environment(&fake).unwrap_err();
        assert!(matches!(err, RuntimeError::Load { .. }), "{err}");
        assert!(
            err.to_string().contains("cannot load ONNX Runtime from"),
            "{err}"
        );
    }

    #[test]
    fn dylib_path_prefers_the_configured_path() {
        assert_eq!(
            dylib_path(Some(Path::new("/x/libonnxruntime.so"))),
            PathBuf::from("/x/libonnxruntime.so")
        );
    }
}
