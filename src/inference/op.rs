//! Ops: plain ONNX graphs over ports and parameters (image input, upscale, blur, blend,
//! hillshade, colour map). The manifest binds every graph input to a port, a parameter or a media
//! parameter, and every graph output to a port; the session checks the graph against it at load.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use ort::session::{RunOptions, Session, SessionInputValue};

use super::catalog::{CatalogError, ModelEntry, ResolvedParams, TensorRole, TensorSpec};
use super::session::{check_outlet, CancelToken};
use super::tensor::Tensor;
use super::RunError;

pub struct OpSession {
    model: String,
    session: Session,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
}

impl std::fmt::Debug for OpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpSession")
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl OpSession {
    /// Checks that the graph has exactly the manifest's inputs and its outputs, all float32.
    pub fn new(session: Session, entry: &ModelEntry) -> Result<Self, CatalogError> {
        let mismatch = |reason: String| CatalogError::Mismatch {
            model: entry.name().to_string(),
            path: entry.file.clone(),
            reason,
        };
        let m = &entry.manifest;
        let mut declared: Vec<&str> = m.inputs.iter().map(|t| t.name.as_str()).collect();
        let mut actual: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        declared.sort_unstable();
        actual.sort_unstable();
        if declared != actual {
            return Err(mismatch(format!(
                "the manifest declares inputs [{}] but the model has [{}]",
                declared.join(", "),
                actual.join(", ")
            )));
        }
        for outlet in session.inputs() {
            check_outlet(outlet.name(), outlet.dtype(), None).map_err(&mismatch)?;
        }
        for t in &m.outputs {
            let outlet = session
                .outputs()
                .iter()
                .find(|o| o.name() == t.name)
                .ok_or_else(|| mismatch(format!("the model has no output '{}'", t.name)))?;
            check_outlet(outlet.name(), outlet.dtype(), None).map_err(&mismatch)?;
        }
        Ok(OpSession {
            model: entry.name().to_string(),
            inputs: m.inputs.clone(),
            outputs: m.outputs.clone(),
            session,
        })
    }

    /// Runs the graph: ports from `ports` (an unconnected optional port gets a neutral `[1,1,1,1]`
    /// of ones, which broadcasts), parameters as f32 `[1]`, media from `media`. Returns the
    /// output ports' tensors.
    pub fn run(
        &mut self,
        params: &ResolvedParams,
        ports: &BTreeMap<String, Arc<Tensor>>,
        media: &BTreeMap<String, Arc<Tensor>>,
        cancel: &CancelToken,
    ) -> Result<BTreeMap<String, Tensor>, RunError> {
        let model = self.model.clone();
        let failed = |reason: String| RunError::Inference {
            model: model.clone(),
            reason,
        };
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(self.inputs.len());
        for spec in &self.inputs {
            let value: ort::value::Tensor<f32> = match spec.role {
                TensorRole::Port => {
                    let port = spec.port.as_deref().unwrap_or_default();
                    match ports.get(port) {
                        Some(t) => ort::value::Tensor::from_array((t.shape(), t.data.clone())),
                        None => ort::value::Tensor::from_array(([1usize, 1, 1, 1], vec![1.0f32])),
                    }
                }
                TensorRole::Param => {
                    let param = spec.param.as_deref().unwrap_or_default();
                    let v = params.get_f64(param).ok_or_else(|| {
                        RunError::Internal(format!("parameter '{param}' was not resolved"))
                    })?;
                    let v = spec.map.map_or(v, |m| m.apply(v));
                    ort::value::Tensor::from_array(([1usize], vec![v as f32]))
                }
                TensorRole::Media => {
                    let param = spec.param.as_deref().unwrap_or_default();
                    let t = media.get(param).ok_or_else(|| {
                        failed(format!(
                            "the image of parameter '{param}' was not delivered"
                        ))
                    })?;
                    ort::value::Tensor::from_array((t.shape(), t.data.clone()))
                }
                other => {
                    return Err(RunError::Internal(format!(
                        "an op cannot take a {other:?} input"
                    )))
                }
            }
            .map_err(|e| failed(format!("input tensor '{}': {e}", spec.name)))?;
            inputs.push((Cow::Borrowed(spec.name.as_str()), value.into()));
        }
        let options = Arc::new(RunOptions::new().map_err(|e| failed(format!("run options: {e}")))?);
        let _attached = cancel.attach(Arc::clone(&options))?;
        let outputs = match self.session.run_with_options(inputs, &*options) {
            Ok(outputs) => outputs,
            Err(_) if cancel.is_cancelled() => return Err(RunError::Cancelled),
            Err(e) => return Err(failed(e.to_string())),
        };
        let mut out = BTreeMap::new();
        for spec in &self.outputs {
            let value = outputs
                .get(&spec.name)
                .ok_or_else(|| failed(format!("no '{}' output", spec.name)))?;
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| failed(format!("output '{}': {e}", spec.name)))?;
            let tensor = Tensor::from_shape(&shape[..], data.to_vec())
                .map_err(|e| failed(format!("output '{}': {e}", spec.name)))?;
            out.insert(spec.port.clone().unwrap_or_default(), tensor);
        }
        Ok(out)
    }
}
