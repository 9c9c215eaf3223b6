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
//!
//! Files: [`manifest`] (the schema above), [`checks`] (its structural checks at load),
//! [`params`] (a node's parameters checked against it), [`views`] (the node type the editor
//! sees); this file loads the catalog.
//! A model whose ONNX graph fixes its size and whose `width`/`height` go beyond it makes the
//! larger sizes as overlapping tiles blended at their seams ([`super::tiles`]).

mod checks;
mod manifest;
mod params;
mod views;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use checks::check_manifest;
pub use manifest::*;
pub use params::{ParamValue, ResolvedParams};
pub use views::NodeType;

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
