//! An ONNX Runtime session for one model, running one denoising step at a time, and the
//! [`CancelToken`] that stops a run: between steps (the sampler checks it) and inside a step
//! (`RunOptions::terminate` on the step that is running).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ort::session::{RunOptions, Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, ValueType};

use super::catalog::{CatalogError, Dim, LinearMap, ModelEntry, ResolvedParams, TensorRole};
use super::RunError;

/// Cancels a run. Cheap to clone; every clone controls the same run. Cancelling is sticky: a
/// token, once cancelled, cancels every later step too (make a new token per job).
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<CancelInner>);

#[derive(Default)]
struct CancelInner {
    cancelled: AtomicBool,
    /// The run options of the step that is running, if any.
    running: Mutex<Option<Arc<RunOptions>>>,
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the run: the step that is running is terminated (ONNX Runtime stops it at its next
    /// node boundary) and no further step starts. Callable from any thread; returns at once.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        if let Some(options) = self.running().as_ref() {
            if let Err(e) = options.terminate() {
                tracing::warn!(error = %e, "could not terminate the running inference step");
            }
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// `Err(Cancelled)` once cancelled.
    pub fn check(&self) -> Result<(), RunError> {
        if self.is_cancelled() {
            Err(RunError::Cancelled)
        } else {
            Ok(())
        }
    }

    fn running(&self) -> MutexGuard<'_, Option<Arc<RunOptions>>> {
        self.0.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `options` as the running step's until the guard drops. Checks the flag after
    /// registering, so a cancel racing with the start of a step is never lost: either `cancel` sees
    /// the options, or this sees the flag.
    pub(super) fn attach(&self, options: Arc<RunOptions>) -> Result<Attached<'_>, RunError> {
        *self.running() = Some(options);
        let attached = Attached(self);
        self.check()?;
        Ok(attached)
    }
}

impl std::fmt::Debug for CancelInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelInner")
            .field("cancelled", &self.cancelled)
            .finish_non_exhaustive()
    }
}

pub(super) struct Attached<'a>(&'a CancelToken);

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        *self.0.running() = None;
    }
}

/// A condition input and the parameter value that feeds it.
#[derive(Debug, Clone)]
struct Condition {
    input: String,
    param: String,
    map: Option<LinearMap>,
}

/// One model's ONNX Runtime session and the names of its tensors.
pub struct ModelSession {
    model: String,
    session: Session,
    noisy: String,
    sigma: String,
    output: String,
    conditions: Vec<Condition>,
    /// Fixed spatial size from the ONNX graph, if it has one.
    fixed_size: Option<(usize, usize)>,
}

impl std::fmt::Debug for ModelSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSession")
            .field("model", &self.model)
            .field("noisy", &self.noisy)
            .field("sigma", &self.sigma)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl ModelSession {
    /// Wraps `session`, checking that its inputs and outputs are the manifest's: the same input
    /// names, all float tensors, and fixed dimensions that agree with the manifest's shapes.
    pub fn new(session: Session, entry: &ModelEntry) -> Result<Self, CatalogError> {
        let mismatch = |reason: String| CatalogError::Mismatch {
            model: entry.name().to_string(),
            path: entry.file.clone(),
            reason,
        };
        let m = &entry.manifest;
        let graph_inputs: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        let mut declared: Vec<String> = m.inputs.iter().map(|t| t.name.clone()).collect();
        let mut actual = graph_inputs.clone();
        declared.sort();
        actual.sort();
        if declared != actual {
            return Err(mismatch(format!(
                "the manifest declares inputs [{}] but the model has [{}]",
                declared.join(", "),
                actual.join(", ")
            )));
        }
        for outlet in session.inputs() {
            let spec = m.inputs.iter().find(|t| t.name == outlet.name());
            check_outlet(
                outlet.name(),
                outlet.dtype(),
                spec.and_then(|s| s.shape.as_deref()),
            )
            .map_err(&mismatch)?;
        }
        let output = entry
            .output(TensorRole::Denoised)
            .ok_or_else(|| mismatch("no 'denoised' output in the manifest".into()))?;
        let Some(out_outlet) = session.outputs().iter().find(|o| o.name() == output.name) else {
            let names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
            return Err(mismatch(format!(
                "the model has no output '{}' (it has: {})",
                output.name,
                names.join(", ")
            )));
        };
        check_outlet(
            out_outlet.name(),
            out_outlet.dtype(),
            output.shape.as_deref(),
        )
        .map_err(&mismatch)?;

        let name_of = |role| {
            entry
                .input(role)
                .map(|t| t.name.clone())
                .ok_or_else(|| mismatch(format!("no {role:?} input in the manifest")))
        };
        let noisy = name_of(TensorRole::Noisy)?;
        let sigma = name_of(TensorRole::Sigma)?;
        let fixed_size = session
            .inputs()
            .iter()
            .find(|o| o.name() == noisy)
            .and_then(|o| o.dtype().tensor_shape())
            .and_then(|shape| match shape.get(2..4) {
                Some(&[h, w]) if h > 0 && w > 0 => Some((h as usize, w as usize)),
                _ => None,
            });
        let conditions = m
            .inputs
            .iter()
            .filter(|t| t.role == TensorRole::Condition)
            .map(|t| Condition {
                input: t.name.clone(),
                param: t.param.clone().unwrap_or_default(),
                map: t.map,
            })
            .collect();
        Ok(ModelSession {
            model: entry.name().to_string(),
            noisy,
            sigma,
            output: output.name.clone(),
            conditions,
            fixed_size,
            session,
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The spatial size the ONNX graph fixes, `(height, width)`, if it fixes one.
    pub fn fixed_size(&self) -> Option<(usize, usize)> {
        self.fixed_size
    }

    /// A [`Denoiser`](super::sampler::Denoiser) running this session for one image of
    /// `height × width`, with the condition inputs taken from `params`.
    pub fn denoiser<'a>(
        &'a mut self,
        height: usize,
        width: usize,
        params: &ResolvedParams,
        cancel: &'a CancelToken,
    ) -> Result<SessionDenoiser<'a>, RunError> {
        let mut conditions = Vec::with_capacity(self.conditions.len());
        for c in &self.conditions {
            let value = params.get(&c.param).ok_or_else(|| {
                RunError::Internal(format!("parameter '{}' was not resolved", c.param))
            })?;
            let v = value.as_f64().ok_or_else(|| {
                RunError::Internal(format!("parameter '{}' is not a number", c.param))
            })?;
            let v = c.map.map_or(v, |m| m.apply(v));
            conditions.push((c.input.clone(), v as f32));
        }
        Ok(SessionDenoiser {
            session: self,
            height,
            width,
            conditions,
            cancel,
        })
    }

    /// Runs one step on one image (`height × width` values). The run can be terminated
    /// through `cancel`.
    pub fn step(
        &mut self,
        x: &[f32],
        height: usize,
        width: usize,
        sigma: f32,
        conditions: &[(String, f32)],
        cancel: &CancelToken,
    ) -> Result<Vec<f32>, RunError> {
        self.step_batch(x, 1, height, width, sigma, conditions, cancel)
    }

    /// Runs one step on `n` images of `height × width` at once (the model's batch dimension),
    /// all at noise level `sigma` and with the same conditions; `xs` holds them back to back,
    /// and so does the result.
    #[allow(clippy::too_many_arguments)]
    pub fn step_batch(
        &mut self,
        xs: &[f32],
        n: usize,
        height: usize,
        width: usize,
        sigma: f32,
        conditions: &[(String, f32)],
        cancel: &CancelToken,
    ) -> Result<Vec<f32>, RunError> {
        let failed = |what: &str, e: ort::Error| RunError::Inference {
            model: self.model.clone(),
            reason: format!("{what}: {e}"),
        };
        let len = n * height * width;
        if n == 0 || xs.len() != len {
            return Err(RunError::Internal(format!(
                "{n} images of {height}x{width} need {len} values, got {}",
                xs.len()
            )));
        }
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(2 + conditions.len());
        let noisy = Tensor::from_array(([n, 1, height, width], xs.to_vec()))
            .map_err(|e| failed("input tensor", e))?;
        inputs.push((Cow::Borrowed(self.noisy.as_str()), noisy.into()));
        let sigma_t =
            Tensor::from_array(([n], vec![sigma; n])).map_err(|e| failed("input tensor", e))?;
        inputs.push((Cow::Borrowed(self.sigma.as_str()), sigma_t.into()));
        for (name, value) in conditions {
            let t = Tensor::from_array(([n], vec![*value; n]))
                .map_err(|e| failed("input tensor", e))?;
            inputs.push((Cow::Owned(name.clone()), t.into()));
        }

        let options = Arc::new(RunOptions::new().map_err(|e| failed("run options", e))?);
        let _attached = cancel.attach(Arc::clone(&options))?;
        let model = self.model.clone();
        let output_name = self.output.clone();
        let outputs = match self.session.run_with_options(inputs, &*options) {
            Ok(outputs) => outputs,
            // A terminated run fails; report it as the cancel it is.
            Err(_) if cancel.is_cancelled() => return Err(RunError::Cancelled),
            Err(e) => {
                return Err(RunError::Inference {
                    model,
                    reason: e.to_string(),
                })
            }
        };
        let value = outputs
            .get(&output_name)
            .ok_or_else(|| RunError::Inference {
                model: model.clone(),
                reason: format!("the model returned no '{output_name}' output"),
            })?;
        let (shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| RunError::Inference {
                model: model.clone(),
                reason: format!("output '{output_name}': {e}"),
            })?;
        if data.len() != len {
            return Err(RunError::Inference {
                model,
                reason: format!(
                    "output '{output_name}' has shape {:?}, expected [{n}, 1, {height}, {width}]",
                    &shape[..]
                ),
            });
        }
        Ok(data.to_vec())
    }
}

/// [`ModelSession::step`] as a [`Denoiser`](super::sampler::Denoiser).
pub struct SessionDenoiser<'a> {
    session: &'a mut ModelSession,
    height: usize,
    width: usize,
    conditions: Vec<(String, f32)>,
    cancel: &'a CancelToken,
}

impl super::tiles::BatchDenoiser for SessionDenoiser<'_> {
    fn denoise_batch(&mut self, xs: &[f32], n: usize, sigma: f32) -> Result<Vec<f32>, RunError> {
        self.session.step_batch(
            xs,
            n,
            self.height,
            self.width,
            sigma,
            &self.conditions,
            self.cancel,
        )
    }
}

impl super::sampler::Denoiser for SessionDenoiser<'_> {
    fn denoise(&mut self, x: &[f32], sigma: f32) -> Result<Vec<f32>, RunError> {
        self.session.step(
            x,
            self.height,
            self.width,
            sigma,
            &self.conditions,
            self.cancel,
        )
    }
}

pub(super) fn check_outlet(
    name: &str,
    dtype: &ValueType,
    declared: Option<&[Dim]>,
) -> Result<(), String> {
    let ValueType::Tensor { ty, shape, .. } = dtype else {
        return Err(format!("'{name}' is not a tensor"));
    };
    if *ty != TensorElementType::Float32 {
        return Err(format!(
            "'{name}' is a {ty:?} tensor; only float32 is supported"
        ));
    }
    if let Some(declared) = declared {
        if declared.len() != shape.len() {
            return Err(format!(
                "'{name}' has {} dimensions, the manifest says {}",
                shape.len(),
                declared.len()
            ));
        }
        for (i, (d, &actual)) in declared.iter().zip(shape.iter()).enumerate() {
            if let (Dim::Fixed(want), true) = (d, actual >= 0) {
                if *want != actual {
                    return Err(format!(
                        "'{name}' dimension {i} is {actual}, the manifest says {want}"
                    ));
                }
            }
        }
    }
    Ok(())
}
