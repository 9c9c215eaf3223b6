//! What the graph editor and the job compiler see of a model: its node type.

use serde::Serialize;

use super::manifest::{ModelKind, ParamSpec, Port, Size};
use super::ModelEntry;

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

impl ModelEntry {
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
}
