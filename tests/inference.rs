//! The inference engine against the real ONNX Runtime library and the real models, as fetched by
//! `scripts/fetch-models`. Locations: `ORT_DYLIB_PATH` and `ATELIER_MODELS_DIR`, else
//! `<repo>/.tools/onnxruntime/libonnxruntime.so.1.31.1` and `<repo>/models`.
//!
//! This machine has no GPU: `cuda` must fail clearly and `auto` must fall back to the CPU.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use atelier::inference::bench::{self, BenchConfig};
use atelier::inference::image::decode_png;
use atelier::inference::{
    CancelToken, CatalogError, Device, Engine, EngineConfig, EngineError, ExecutionProvider,
    Params, RunError, RuntimeError, StepProgress,
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ort_path() -> PathBuf {
    let path = match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo().join(".tools/onnxruntime/libonnxruntime.so.1.31.1"),
    };
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-models",
        path.display()
    );
    path
}

fn models_dir() -> PathBuf {
    let dir = match std::env::var_os("ATELIER_MODELS_DIR") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo().join("models"),
    };
    for model in ["terrain", "tiny-denoiser"] {
        assert!(
            dir.join(model).join("model.json").is_file(),
            "{}/{model} is missing: run scripts/fetch-models",
            dir.display()
        );
    }
    dir
}

fn config(dir: &Path, provider: ExecutionProvider) -> EngineConfig {
    EngineConfig {
        ort_dylib_path: Some(ort_path()),
        execution_provider: provider,
        ..EngineConfig::new(dir)
    }
}

/// The real catalog (terrain + tiny), loaded once for the tests that share it.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::load(&config(&models_dir(), ExecutionProvider::Cpu)).unwrap())
}

fn params(pairs: &[(&str, serde_json::Value)]) -> Params {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn std_dev(samples: &[u16]) -> f64 {
    let n = samples.len() as f64;
    let mean = samples.iter().map(|&s| f64::from(s)).sum::<f64>() / n;
    (samples
        .iter()
        .map(|&s| (f64::from(s) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt()
}

/// Log lines written while `f` runs on this thread.
fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (out, text)
}

#[test]
fn tiny_model_produces_a_valid_png() {
    let engine = Engine::load(&config(
        common::tiny_models_dir().path(),
        ExecutionProvider::Cpu,
    ))
    .unwrap();
    assert_eq!(engine.device(), Device::Cpu);
    let mut steps = vec![];
    let started = Instant::now();
    let out = engine
        .run(
            "tiny-denoiser",
            &params(&[
                ("steps", 3.into()),
                ("width", 48.into()),
                ("height", 32.into()),
            ]),
            11,
            |p: StepProgress| steps.push(p),
            &CancelToken::new(),
        )
        .unwrap();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    println!("tiny-denoiser, 3 steps at 48x32: {ms:.1} ms");
    assert_eq!((out.width, out.height, out.steps), (48, 32, 3));
    let png = decode_png(&out.png).unwrap();
    assert_eq!((png.width, png.height, png.bit_depth), (48, 32, 16));
    assert!(std_dev(&png.samples) > 1000.0, "a flat image");
    assert_eq!(steps.len(), 3);
    for (i, p) in steps.iter().enumerate() {
        assert_eq!((p.step, p.total), (i as u32 + 1, 3));
        let preview = decode_png(&p.preview_png).unwrap();
        assert_eq!(
            (preview.width, preview.height, preview.bit_depth),
            (48, 32, 8)
        );
    }
    assert!(steps[0].sigma > steps[1].sigma && steps[1].sigma > steps[2].sigma);
}

#[test]
fn terrain_one_step_is_a_seeded_128_heightmap_with_a_preview() {
    let engine = engine();
    let run = |seed| {
        let mut progress = vec![];
        let out = engine
            .run(
                "terrain",
                &params(&[("difficulty", 60.into())]),
                seed,
                |p: StepProgress| progress.push(p),
                &CancelToken::new(),
            )
            .unwrap();
        (out, progress)
    };
    let (a, progress) = run(7);
    println!("terrain, one step: {} ms on {}", a.elapsed_ms, a.device);
    assert_eq!((a.width, a.height, a.steps), (128, 128, 1));
    assert_eq!(a.device, "cpu");
    assert_eq!(a.unit, Some("m"));
    let png = decode_png(&a.png).unwrap();
    assert_eq!((png.width, png.height, png.bit_depth), (128, 128, 16));
    assert!(
        std_dev(&png.samples) > 2000.0,
        "std {}",
        std_dev(&png.samples)
    );
    assert!(a.value_max > a.value_min && a.value_min >= 0.0 && a.value_max <= 22.17);
    assert!(png.text.iter().any(|(k, _)| k == "value_max"));

    assert_eq!(progress.len(), 1);
    for (i, p) in progress.iter().enumerate() {
        assert_eq!((p.step, p.total), (i as u32 + 1, 1));
        let preview = decode_png(&p.preview_png).unwrap();
        assert_eq!(
            (preview.width, preview.height, preview.bit_depth),
            (64, 64, 8)
        );
    }

    let (again, _) = run(7);
    assert_eq!(a.png, again.png, "the same seed gave another heightmap");
    let (other, _) = run(8);
    assert_ne!(a.png, other.png, "another seed gave the same heightmap");
    let b = decode_png(&other.png).unwrap();
    let differing = png
        .samples
        .iter()
        .zip(&b.samples)
        .filter(|(x, y)| x.abs_diff(**y) > 1000)
        .count();
    assert!(differing > 128 * 128 / 10, "only {differing} pixels differ");
}

#[test]
fn cuda_provider_refuses_clearly_without_cuda() {
    let tmp = common::tiny_models_dir();
    let err = Engine::load(&config(tmp.path(), ExecutionProvider::Cuda)).unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(
        matches!(
            err,
            EngineError::Runtime(RuntimeError::CudaUnavailable { .. })
        ),
        "{err:?}"
    );
    assert!(
        msg.contains("CUDA execution provider was requested but is unavailable"),
        "{msg}"
    );
}

#[test]
fn auto_provider_falls_back_to_cpu_and_says_so() {
    let tmp = common::tiny_models_dir();
    let (engine, logs) =
        capture_logs(|| Engine::load(&config(tmp.path(), ExecutionProvider::Auto)));
    let engine = engine.unwrap();
    assert_eq!(engine.device(), Device::Cpu);
    assert_eq!(engine.device().name(), "cpu");
    assert!(
        logs.contains("CUDA is unavailable, using the CPU"),
        "{logs}"
    );
    assert!(logs.contains("device=cpu"), "{logs}");
    let out = engine
        .run(
            "tiny-denoiser",
            &Params::new(),
            1,
            |_| {},
            &CancelToken::new(),
        )
        .unwrap();
    assert_eq!(out.device, "cpu");
}

#[test]
fn missing_model_file_is_a_catalog_error_naming_the_model() {
    let tmp = common::tiny_models_dir();
    std::fs::remove_file(tmp.path().join("tiny-denoiser/tiny_denoiser.onnx")).unwrap();
    let err = Engine::load(&config(tmp.path(), ExecutionProvider::Cpu)).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, EngineError::Catalog(CatalogError::MissingFile { ref model, .. }) if model == "tiny-denoiser"),
        "{err:?}"
    );
    assert!(
        msg.starts_with("model 'tiny-denoiser': model file"),
        "{msg}"
    );
    assert!(msg.contains("is missing"), "{msg}");
}

#[test]
fn corrupt_model_files_are_catalog_errors_naming_the_model() {
    // Garbage.
    let tmp = common::tiny_models_dir();
    std::fs::write(
        tmp.path().join("tiny-denoiser/tiny_denoiser.onnx"),
        b"this is not an ONNX model at all\x00\xff\xfe",
    )
    .unwrap();
    let err = Engine::load(&config(tmp.path(), ExecutionProvider::Cpu)).unwrap_err();
    println!("{err}");
    assert!(
        matches!(err, EngineError::Catalog(CatalogError::CorruptFile { ref model, .. }) if model == "tiny-denoiser"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("model 'tiny-denoiser': model file"),
        "{err}"
    );

    // The terrain model, truncated.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("terrain");
    std::fs::create_dir_all(&dir).unwrap();
    let src = models_dir().join("terrain");
    std::fs::copy(src.join("model.json"), dir.join("model.json")).unwrap();
    let bytes = std::fs::read(src.join("terrain_consistency_unet_difficulty100.onnx")).unwrap();
    std::fs::write(
        dir.join("terrain_consistency_unet_difficulty100.onnx"),
        &bytes[..bytes.len() / 3],
    )
    .unwrap();
    let err = Engine::load(&config(tmp.path(), ExecutionProvider::Cpu)).unwrap_err();
    println!("{err}");
    assert!(
        matches!(err, EngineError::Catalog(CatalogError::CorruptFile { ref model, .. }) if model == "terrain"),
        "{err:?}"
    );
}

#[test]
fn a_manifest_that_does_not_match_the_model_is_a_catalog_error() {
    let tmp = common::tiny_models_dir();
    let path = tmp.path().join("tiny-denoiser/model.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(r#""name": "sigma""#, r#""name": "noise_level""#);
    std::fs::write(&path, text).unwrap();
    let err = Engine::load(&config(tmp.path(), ExecutionProvider::Cpu)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("model 'tiny-denoiser'"), "{msg}");
    assert!(msg.contains("noise_level"), "{msg}");
}

#[test]
fn out_of_range_and_unknown_parameters_are_errors_naming_them() {
    let engine = engine();
    let err = engine
        .run(
            "terrain",
            &params(&[("difficulty", 101.into())]),
            1,
            |_| {},
            &CancelToken::new(),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, RunError::Param(p) if p.param == "difficulty"),
        "{err:?}"
    );
    assert!(msg.contains("parameter 'difficulty'"), "{msg}");
    assert!(msg.contains("between 1 and 100"), "{msg}");

    let err = engine
        .run(
            "terrain",
            &params(&[("steps", 0.into())]),
            1,
            |_| {},
            &CancelToken::new(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, RunError::Param(p) if p.param == "steps"),
        "{err:?}"
    );
    let err = engine
        .run(
            "terrain",
            &params(&[("width", 64.into())]),
            1,
            |_| {},
            &CancelToken::new(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, RunError::Param(p) if p.param == "width"),
        "{err:?}"
    );
    let err = engine
        .run("nope", &Params::new(), 1, |_| {}, &CancelToken::new())
        .unwrap_err();
    assert!(matches!(err, RunError::UnknownModel(_)), "{err:?}");
}

#[test]
fn node_types_describe_the_models() {
    let types = serde_json::to_value(engine().node_types()).unwrap();
    let terrain = types
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "terrain")
        .unwrap();
    let difficulty = terrain["params"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "difficulty")
        .unwrap();
    assert_eq!(difficulty["type"], "int");
    assert_eq!(difficulty["min"], 1.0);
    assert_eq!(difficulty["max"], 100.0);
    assert_eq!(terrain["outputs"][0]["name"], "heightmap");
    assert_eq!(terrain["size"]["width"], 128);
}

#[test]
fn cancel_during_a_step_terminates_it() {
    let engine = engine();
    // The terrain model runs one step: time one (warm), then cancel early inside another — 30 ms
    // in, or a third of a step if steps are faster than that.
    engine
        .run("terrain", &Params::new(), 2, |_| {}, &CancelToken::new())
        .unwrap();
    let timed = Instant::now();
    engine
        .run("terrain", &Params::new(), 2, |_| {}, &CancelToken::new())
        .unwrap();
    let step = timed.elapsed();
    let cancel = CancelToken::new();
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep((step / 3).min(Duration::from_millis(30)));
            let at = Instant::now();
            cancel.cancel();
            at
        })
    };
    let mut reported = 0;
    let result = engine.run(
        "terrain",
        &Params::new(),
        3,
        |p: StepProgress| reported = p.step,
        &cancel,
    );
    let returned = Instant::now();
    let cancelled_at = canceller.join().unwrap();
    let after_cancel = returned.saturating_duration_since(cancelled_at);
    println!("a step {step:?}; returned {after_cancel:?} after cancel");
    assert!(matches!(result, Err(RunError::Cancelled)), "{result:?}");
    assert_eq!(reported, 0, "the step ran to its end");
    // Terminated inside the step: well under a step's time.
    assert!(
        after_cancel < step,
        "{after_cancel:?} vs a step of {step:?}"
    );

    // A token cancelled before the run stops it before any step.
    let mut any = false;
    let result = engine.run("terrain", &Params::new(), 1, |_| any = true, &cancel);
    assert!(matches!(result, Err(RunError::Cancelled)));
    assert!(!any);
}

#[test]
fn bench_times_steps() {
    // ATELIER_BENCH_MODEL / _THREADS / _ITERATIONS measure the terrain model (see the report in
    // scripts/bench-terrain-python.py); by default this is a quick smoke run on the tiny model.
    let model = std::env::var("ATELIER_BENCH_MODEL").unwrap_or_else(|_| "tiny-denoiser".into());
    let threads = std::env::var("ATELIER_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let iterations = std::env::var("ATELIER_BENCH_ITERATIONS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(5);
    let report = bench::per_step(&BenchConfig {
        models_dir: models_dir(),
        model,
        ort_dylib_path: Some(ort_path()),
        threads,
        warmup: 2,
        iterations,
    })
    .unwrap();
    println!("bench: {report}");
    assert_eq!(report.iterations, iterations);
    assert!(report.min_ms > 0.0 && report.min_ms <= report.median_ms);
}
