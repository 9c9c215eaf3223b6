//! Multistep consistency sampling (Song et al., "Consistency Models", 2023, Algorithm 1), generic
//! over a [`Denoiser`] so it can be tested without ONNX Runtime.
//!
//! With `N` steps and the sigmas `s_0 = sigma_max > s_1 > … > s_{N-1} > sigma_min` (a Karras
//! schedule over `N + 1` points from `sigma_max` to `sigma_min`, without the last):
//!
//! ```text
//! x = sigma_max · z                                   z ~ N(0, I), from the seeded RNG
//! for i in 0..N:
//!     d = D(x, s_i)                                    one model run
//!     if i is the last step: return d
//!     x = d + sqrt(s_{i+1}² − sigma_min²) · z'         re-noise to the next, lower sigma
//! ```
//!
//! One step is exactly the terrain package's own sampler (`noisy = noise · sigma_max`, one
//! denoise at `sigma_max`). The noise comes from ChaCha8 seeded with the job's seed, through
//! Box–Muller, so a seed gives the same noise on every platform and every run.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::session::CancelToken;
use super::RunError;

/// One denoising step of a model: `x` (one image, `height × width`, row-major) at noise level
/// `sigma` → the denoised estimate, same length.
pub trait Denoiser {
    fn denoise(&mut self, x: &[f32], sigma: f32) -> Result<Vec<f32>, RunError>;
}

impl<F> Denoiser for F
where
    F: FnMut(&[f32], f32) -> Result<Vec<f32>, RunError>,
{
    fn denoise(&mut self, x: &[f32], sigma: f32) -> Result<Vec<f32>, RunError> {
        self(x, sigma)
    }
}

/// What a step reports: its 1-based number, the total, its sigma, and the denoised estimate.
#[derive(Debug)]
pub struct Step<'a> {
    pub step: u32,
    pub total: u32,
    pub sigma: f32,
    pub denoised: &'a [f32],
}

/// The sampler's constants, from the model's manifest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConsistencySampler {
    pub sigma_min: f32,
    pub sigma_max: f32,
    pub rho: f32,
}

impl ConsistencySampler {
    /// The sigma of each of `steps` steps: `sigmas[0] == sigma_max`, strictly decreasing, all above
    /// `sigma_min`. Empty for 0 steps.
    pub fn sigmas(&self, steps: u32) -> Vec<f32> {
        let (min, max, rho) = (
            f64::from(self.sigma_min),
            f64::from(self.sigma_max),
            f64::from(self.rho),
        );
        let (a, b) = (max.powf(1.0 / rho), min.powf(1.0 / rho));
        (0..steps)
            .map(|i| {
                if i == 0 {
                    self.sigma_max
                } else {
                    let t = f64::from(i) / f64::from(steps);
                    (a + t * (b - a)).powf(rho) as f32
                }
            })
            .collect()
    }

    /// Runs `steps` steps on an image of `len` values. `on_step` is called after every step with
    /// its denoised estimate; `cancel` is checked before every step (the step itself is cut short
    /// by the denoiser, which sees the same token). Returns the last step's estimate.
    pub fn sample<D, F>(
        &self,
        denoiser: &mut D,
        len: usize,
        steps: u32,
        seed: u64,
        cancel: &CancelToken,
        mut on_step: F,
    ) -> Result<Vec<f32>, RunError>
    where
        D: Denoiser + ?Sized,
        F: FnMut(Step<'_>),
    {
        if steps == 0 {
            return Err(RunError::Internal(
                "the sampler needs at least one step".into(),
            ));
        }
        let sigmas = self.sigmas(steps);
        let mut noise = Noise::new(seed);
        let mut x: Vec<f32> = (0..len).map(|_| noise.next() * self.sigma_max).collect();
        for (i, &sigma) in sigmas.iter().enumerate() {
            cancel.check()?;
            let denoised = denoiser.denoise(&x, sigma)?;
            if denoised.len() != len {
                return Err(RunError::Internal(format!(
                    "the denoiser returned {} values for an image of {len}",
                    denoised.len()
                )));
            }
            let step = i as u32 + 1;
            on_step(Step {
                step,
                total: steps,
                sigma,
                denoised: &denoised,
            });
            match sigmas.get(i + 1) {
                None => return Ok(denoised),
                Some(&next) => {
                    let scale = (next * next - self.sigma_min * self.sigma_min)
                        .max(0.0)
                        .sqrt();
                    x = denoised.iter().map(|&d| d + scale * noise.next()).collect();
                }
            }
        }
        // Unreachable: the last step returns above.
        Err(RunError::Internal("the sampler ran no step".into()))
    }

    /// The noise level image-to-image re-noises to: `strength` (0..=1) along the Karras
    /// schedule, `sigma_min` at 0 and `sigma_max` at 1 (which ignores the input entirely).
    pub fn refine_sigma(&self, strength: f32) -> f32 {
        let s = f64::from(strength.clamp(0.0, 1.0));
        let rho = f64::from(self.rho);
        let (a, b) = (
            f64::from(self.sigma_max).powf(1.0 / rho),
            f64::from(self.sigma_min).powf(1.0 / rho),
        );
        (b + s * (a - b)).powf(rho) as f32
    }

    /// Image-to-image in one step, the consistency model's own way: `x = x0 + sigma · z` at the
    /// sigma of `strength`, then one denoise. Returns the sigma used and the estimate.
    pub fn refine<D>(
        &self,
        denoiser: &mut D,
        x0: &[f32],
        strength: f32,
        seed: u64,
        cancel: &CancelToken,
    ) -> Result<(f32, Vec<f32>), RunError>
    where
        D: Denoiser + ?Sized,
    {
        let sigma = self.refine_sigma(strength);
        let mut noise = Noise::new(seed);
        let x: Vec<f32> = x0.iter().map(|&v| v + sigma * noise.next()).collect();
        cancel.check()?;
        let denoised = denoiser.denoise(&x, sigma)?;
        if denoised.len() != x0.len() {
            return Err(RunError::Internal(format!(
                "the denoiser returned {} values for an image of {}",
                denoised.len(),
                x0.len()
            )));
        }
        Ok((sigma, denoised))
    }
}

/// Standard normal noise from a seeded ChaCha8 stream (Box–Muller, both values used).
pub(super) struct Noise {
    rng: ChaCha8Rng,
    spare: Option<f32>,
}

impl Noise {
    pub(super) fn new(seed: u64) -> Self {
        Noise {
            rng: ChaCha8Rng::seed_from_u64(seed),
            spare: None,
        }
    }

    pub(super) fn next(&mut self) -> f32 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        // u1 in (0, 1] so ln(u1) is finite.
        let u1: f64 = 1.0 - self.rng.random::<f64>();
        let u2: f64 = self.rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        self.spare = Some((r * theta.sin()) as f32);
        (r * theta.cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLER: ConsistencySampler = ConsistencySampler {
        sigma_min: 0.002,
        sigma_max: 80.0,
        rho: 7.0,
    };

    #[test]
    fn refine_sigma_spans_the_schedule() {
        assert!((SAMPLER.refine_sigma(1.0) - 80.0).abs() < 1e-3);
        assert!((SAMPLER.refine_sigma(0.0) - 0.002).abs() < 1e-6);
        let mid = SAMPLER.refine_sigma(0.5);
        assert!(mid > 0.002 && mid < 80.0 && SAMPLER.refine_sigma(0.6) > mid);
        let mut seen = Vec::new();
        let mut d = |x: &[f32], s: f32| {
            seen.push(s);
            Ok(x.to_vec())
        };
        let (sigma, out) = SAMPLER
            .refine(&mut d, &[0.0; 4], 0.5, 3, &CancelToken::new())
            .unwrap();
        assert_eq!(seen, vec![sigma]);
        assert_eq!(out.len(), 4);
    }

    /// A fake denoiser: shrinks towards 0 by sigma, and records the sigmas it saw.
    struct Fake {
        sigmas: Vec<f32>,
    }

    impl Denoiser for Fake {
        fn denoise(&mut self, x: &[f32], sigma: f32) -> Result<Vec<f32>, RunError> {
            self.sigmas.push(sigma);
            let c = 0.25 / (sigma * sigma + 0.25);
            Ok(x.iter()
                .map(|v| v * c + (1.0 - c) * v.tanh() * 0.1)
                .collect())
        }
    }

    #[test]
    fn schedule_starts_at_sigma_max_and_decreases_above_sigma_min() {
        for steps in 1..=20 {
            let s = SAMPLER.sigmas(steps);
            assert_eq!(s.len(), steps as usize);
            assert_eq!(s[0], 80.0);
            assert!(s.windows(2).all(|w| w[0] > w[1]), "{s:?}");
            assert!(s.iter().all(|&v| v > 0.002), "{s:?}");
        }
        assert!(SAMPLER.sigmas(0).is_empty());
        let four = SAMPLER.sigmas(4);
        assert!((four[1] - 17.5).abs() < 1.0, "{four:?}");
    }

    #[test]
    fn runs_each_sigma_once_and_reports_every_step() {
        let mut fake = Fake { sigmas: vec![] };
        let mut reported = vec![];
        let out = SAMPLER
            .sample(&mut fake, 64, 4, 7, &CancelToken::new(), |s| {
                reported.push((s.step, s.total, s.sigma, s.denoised.len()))
            })
            .unwrap();
        assert_eq!(out.len(), 64);
        assert_eq!(fake.sigmas, SAMPLER.sigmas(4));
        assert_eq!(
            reported.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
            vec![(1, 4), (2, 4), (3, 4), (4, 4)]
        );
        assert!(reported.iter().all(|r| r.3 == 64));
    }

    #[test]
    fn same_seed_same_output_other_seed_other_output() {
        let run = |seed| {
            SAMPLER
                .sample(
                    &mut Fake { sigmas: vec![] },
                    256,
                    3,
                    seed,
                    &CancelToken::new(),
                    |_| {},
                )
                .unwrap()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn first_input_is_scaled_standard_normal_noise() {
        let mut first: Vec<f32> = vec![];
        let mut capture = |x: &[f32], _sigma: f32| {
            if first.is_empty() {
                first = x.to_vec();
            }
            Ok(x.to_vec())
        };
        SAMPLER
            .sample(&mut capture, 20_000, 1, 1, &CancelToken::new(), |_| {})
            .unwrap();
        let n = first.len() as f64;
        let mean = first.iter().map(|&v| f64::from(v) / 80.0).sum::<f64>() / n;
        let var = first
            .iter()
            .map(|&v| (f64::from(v) / 80.0 - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }

    #[test]
    fn renoises_to_the_next_sigma() {
        // An identity denoiser that returns zeros: the next input is pure noise at the next sigma.
        let mut inputs: Vec<Vec<f32>> = vec![];
        let mut zeros = |x: &[f32], _sigma: f32| {
            inputs.push(x.to_vec());
            Ok(vec![0.0; x.len()])
        };
        SAMPLER
            .sample(&mut zeros, 20_000, 2, 3, &CancelToken::new(), |_| {})
            .unwrap();
        let next = SAMPLER.sigmas(2)[1];
        let expected = (next * next - 0.002f32 * 0.002).sqrt();
        let n = inputs[1].len() as f64;
        let std = (inputs[1].iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n).sqrt();
        assert!(
            (std / f64::from(expected) - 1.0).abs() < 0.05,
            "{std} vs {expected}"
        );
    }

    #[test]
    fn cancel_between_steps_stops_before_the_next_step() {
        let cancel = CancelToken::new();
        let mut fake = Fake { sigmas: vec![] };
        let err = SAMPLER
            .sample(&mut fake, 16, 5, 1, &cancel, |s| {
                if s.step == 2 {
                    cancel.cancel();
                }
            })
            .unwrap_err();
        assert!(matches!(err, RunError::Cancelled), "{err}");
        assert_eq!(fake.sigmas.len(), 2);

        let cancelled = CancelToken::new();
        cancelled.cancel();
        let mut fake = Fake { sigmas: vec![] };
        let err = SAMPLER
            .sample(&mut fake, 16, 5, 1, &cancelled, |_| {})
            .unwrap_err();
        assert!(matches!(err, RunError::Cancelled));
        assert!(fake.sigmas.is_empty());
    }

    #[test]
    fn denoiser_errors_and_bad_lengths_are_errors() {
        let mut failing = |_: &[f32], _: f32| -> Result<Vec<f32>, RunError> {
            Err(RunError::Internal("boom".into()))
        };
        let err = SAMPLER
            .sample(&mut failing, 4, 2, 1, &CancelToken::new(), |_| {})
            .unwrap_err();
        assert!(err.to_string().contains("boom"));
        let mut short = |_: &[f32], _: f32| Ok(vec![0.0; 3]);
        assert!(SAMPLER
            .sample(&mut short, 4, 2, 1, &CancelToken::new(), |_| {})
            .is_err());
        assert!(SAMPLER
            .sample(&mut short, 4, 0, 1, &CancelToken::new(), |_| {})
            .is_err());
    }
}
