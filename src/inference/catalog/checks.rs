//! Structural checks of a manifest, run at load: names, tensors and their roles, sampler and
//! decode constants, parameters and ports. The reason names the offending field.

use std::collections::BTreeSet;
use std::path::Path;

use super::manifest::*;

/// Structural checks of a manifest; the reason names the offending field.
pub(super) fn check_manifest(m: &Manifest) -> Result<(), String> {
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
