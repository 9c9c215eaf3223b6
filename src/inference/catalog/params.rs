//! A node's parameters checked against its model's manifest: unknown names, types and ranges,
//! defaults filled in.

use std::collections::BTreeMap;

use serde::Serialize;

use super::manifest::{ParamSpec, ParamType};
use super::{ModelEntry, ParamError, Params};

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

impl ModelEntry {
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
