//! Per-step timing of one model, to compare with ONNX Runtime from Python
//! (`scripts/bench-terrain-python.py` runs the same feeds at the same thread count).
//!
//! A step is one session run on one `[1, 1, H, W]` sample at `sigma_max`, with every condition
//! input at its parameter's default — the same work as one sampler step.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::catalog::ModelCatalog;
use super::runtime::{self, Device, OpenError, SessionSettings};
use super::sampler::Denoiser;
use super::session::{CancelToken, ModelSession};
use super::{CatalogError, EngineError, Params, RunError};

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub models_dir: PathBuf,
    pub model: String,
    /// As [`EngineConfig::ort_dylib_path`](super::EngineConfig::ort_dylib_path).
    pub ort_dylib_path: Option<PathBuf>,
    /// ONNX Runtime intra-op threads (as Python's `intra_op_num_threads`); 0 lets it decide.
    pub threads: usize,
    /// Untimed runs first.
    pub warmup: u32,
    pub iterations: u32,
}

/// Milliseconds per step, on the CPU.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub device: String,
    pub threads: usize,
    pub iterations: u32,
    pub mean_ms: f64,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} on {} with {} thread(s): median {:.2} ms, mean {:.2} ms, min {:.2} ms, max {:.2} ms per step ({} steps)",
            self.model,
            self.device,
            self.threads,
            self.median_ms,
            self.mean_ms,
            self.min_ms,
            self.max_ms,
            self.iterations
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Times `config.iterations` single steps of `config.model` on the CPU. Blocks.
pub fn per_step(config: &BenchConfig) -> Result<BenchReport, BenchError> {
    let env = runtime::environment(&runtime::dylib_path(config.ort_dylib_path.as_deref()))
        .map_err(EngineError::from)?;
    let catalog = ModelCatalog::load(&config.models_dir).map_err(EngineError::from)?;
    let entry = catalog
        .get(&config.model)
        .ok_or_else(|| RunError::UnknownModel(config.model.clone()))?;
    let settings = SessionSettings {
        intra_threads: config.threads,
        device_id: 0,
    };
    let session = runtime::open(&env, &entry.file, Device::Cpu, settings).map_err(|e| match e {
        OpenError::Runtime(r) => EngineError::Runtime(r),
        OpenError::Model(reason) => EngineError::Catalog(CatalogError::CorruptFile {
            model: entry.name().to_string(),
            path: entry.file.clone(),
            reason,
        }),
    })?;
    let mut session = ModelSession::new(session, entry).map_err(EngineError::from)?;
    let params = entry
        .validate_params(&Params::new())
        .map_err(RunError::from)?;
    let (Some(size), Some((_, sigma_max, _))) = (entry.manifest.size, entry.manifest.sampler())
    else {
        return Err(RunError::Internal(format!(
            "model '{}' is not a denoiser: only denoisers are benched per step",
            entry.name()
        ))
        .into());
    };
    let (w, h) = (
        params.get_u32("width").unwrap_or(size.width) as usize,
        params.get_u32("height").unwrap_or(size.height) as usize,
    );
    // A deterministic, noise-like input, bit-identical to the Python bench's.
    let x: Vec<f32> = (0..w * h)
        .map(|i| (((i * 7919) % 2001) as f32 / 1000.0 - 1.0) * sigma_max)
        .collect();
    let cancel = CancelToken::new();
    let mut denoiser = session.denoiser(h, w, &params, &cancel)?;
    for _ in 0..config.warmup {
        denoiser.denoise(&x, sigma_max)?;
    }
    let mut times = Vec::with_capacity(config.iterations as usize);
    for _ in 0..config.iterations.max(1) {
        let t = Instant::now();
        denoiser.denoise(&x, sigma_max)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    };
    Ok(BenchReport {
        model: config.model.clone(),
        device: Device::Cpu.name(),
        threads: config.threads,
        iterations: n as u32,
        mean_ms: times.iter().sum::<f64>() / n as f64,
        median_ms: median,
        min_ms: times[0],
        max_ms: times[n - 1],
    })
}
