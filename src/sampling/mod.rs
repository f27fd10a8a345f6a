//! Token sampling as a small pipeline, in llama.cpp's default order:
//!
//! 1. penalties (repetition, presence, frequency) over the last `penalty_last_n` tokens;
//! 2. top-k, 3. top-p, 4. min-p — all three judged on the temperature-1 distribution;
//! 5. temperature, then a draw from the seeded generator.
//!
//! Temperature 0 means greedy: the argmax after penalties. Each stage is a plain function over a
//! candidate list (see [`stages`]) with its own unit tests; [`Sampler`] composes them. A sampler
//! with the same seed, config and inputs always picks the same tokens.

pub mod stages;
pub mod stop;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use stages::Candidate;
pub use stop::StopStrings;

/// The knobs of the pipeline. `Default` is llama.cpp's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; 0 (or less) = greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p; 1.0 = off.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one; 0 = off.
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recent tokens by this; 1.0 = off.
    pub repeat_penalty: f32,
    /// Subtract this from the logit of every recent token; 0 = off.
    pub presence_penalty: f32,
    /// Subtract this × (times seen) from the logit of every recent token; 0 = off.
    pub frequency_penalty: f32,
    /// How many of the most recent tokens the penalties look at (0 = none).
    pub penalty_last_n: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding (argmax), with no penalties.
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Checks that every knob is in range; the message names the knob.
    pub fn validate(&self) -> Result<(), String> {
        let finite = |name: &str, v: f32| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(format!("{name} must be a finite number, got {v}"))
            }
        };
        finite("temperature", self.temperature)?;
        finite("top_p", self.top_p)?;
        finite("min_p", self.min_p)?;
        finite("repeat_penalty", self.repeat_penalty)?;
        finite("presence_penalty", self.presence_penalty)?;
        finite("frequency_penalty", self.frequency_penalty)?;
        if self.temperature < 0.0 {
            return Err(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if self.repeat_penalty <= 0.0 {
            return Err(format!(
                "repeat_penalty must be > 0, got {}",
                self.repeat_penalty
            ));
        }
        Ok(())
    }
}

/// The pipeline with its random generator and scratch space.
pub struct Sampler {
    cfg: SamplerConfig,
    rng: StdRng,
    logits: Vec<f32>,
    candidates: Vec<Candidate>,
}

impl Sampler {
    /// A sampler seeded from `cfg.seed`.
    pub fn new(cfg: SamplerConfig) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        Sampler {
            cfg,
            rng,
            logits: Vec::new(),
            candidates: Vec::new(),
        }
    }

    /// The configuration this sampler runs.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Picks the next token from `logits`; `history` is the sequence so far (prompt and
    /// generated tokens), of which the last `penalty_last_n` are penalised.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        if self.cfg.temperature <= 0.0 {
            if !self.penalties_active() {
                return argmax(logits);
            }
            self.penalised(logits, history);
            return argmax(&self.logits);
        }
        self.distribution(logits, history);
        let r = self.rng.gen::<f32>();
        stages::draw(&self.candidates, r)
    }

    /// The final distribution `sample` draws from at temperature > 0: candidates (most likely
    /// first) with probabilities that sum to 1.
    pub fn distribution(&mut self, logits: &[f32], history: &[u32]) -> &[Candidate] {
        let src: &[f32] = if self.penalties_active() {
            self.penalised(logits, history);
            &self.logits
        } else {
            logits
        };
        let cfg = &self.cfg;
        let c = &mut self.candidates;
        stages::top_k(src, cfg.top_k, c);
        stages::softmax(c);
        stages::top_p(c, cfg.top_p);
        stages::min_p(c, cfg.min_p);
        stages::temperature(c, cfg.temperature.max(f32::MIN_POSITIVE));
        &self.candidates
    }

    fn penalties_active(&self) -> bool {
        let c = &self.cfg;
        c.penalty_last_n > 0
            && (c.repeat_penalty != 1.0 || c.presence_penalty != 0.0 || c.frequency_penalty != 0.0)
    }

    /// Copies `logits` into scratch with the penalties applied.
    fn penalised(&mut self, logits: &[f32], history: &[u32]) {
        self.logits.clear();
        self.logits.extend_from_slice(logits);
        let recent = &history[history.len().saturating_sub(self.cfg.penalty_last_n)..];
        stages::penalize(
            &mut self.logits,
            recent,
            self.cfg.repeat_penalty,
            self.cfg.presence_penalty,
            self.cfg.frequency_penalty,
        );
    }
}

/// Index of the largest logit (the first on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_argmax() {
        let mut s = Sampler::new(SamplerConfig::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, 2.0], &[]), 1);
    }

    #[test]
    fn greedy_respects_penalties() {
        let mut s = Sampler::new(SamplerConfig {
            repeat_penalty: 2.0,
            ..SamplerConfig::greedy()
        });
        // Token 1 was just seen: 3.0 / 2 = 1.5 < 2.0.
        assert_eq!(s.sample(&[0.1, 3.0, 2.0], &[1]), 2);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 1,
            seed: 7,
            ..Default::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.1, 3.0, 2.9], &[]), 1);
        }
    }

    #[test]
    fn pipeline_distribution_is_exact() {
        // logits ln(4), ln(2), ln(1), ln(1): probabilities .5 .25 .125 .125.
        let logits = [4f32.ln(), 2f32.ln(), 0.0, 0.0];
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 3,   // drops one of the two ln(1) tokens (the higher id)
            top_p: 0.7, // .5/.875 = .571 < .7, .75/.875 = .857 >= .7: keeps 2
            min_p: 0.0,
            ..Default::default()
        });
        let d = s.distribution(&logits, &[]);
        let got: Vec<(u32, f32)> = d.iter().map(|c| (c.id, c.p)).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 0);
        assert_eq!(got[1].0, 1);
        assert!((got[0].1 - 2.0 / 3.0).abs() < 1e-6);
        assert!((got[1].1 - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn empirical_frequencies_match_the_distribution() {
        let logits = [1f32.ln(), 3f32.ln()];
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 3,
            ..Default::default()
        });
        let n = 20000;
        let ones = (0..n).filter(|_| s.sample(&logits, &[]) == 1).count();
        let f = ones as f64 / n as f64;
        assert!((f - 0.75).abs() < 0.015, "P(1) = {f}, expected 0.75");
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 42,
            ..Default::default()
        };
        let (mut a, mut b) = (Sampler::new(cfg.clone()), Sampler::new(cfg));
        let xs: Vec<u32> = (0..50).map(|_| a.sample(&logits, &[])).collect();
        let ys: Vec<u32> = (0..50).map(|_| b.sample(&logits, &[])).collect();
        assert_eq!(xs, ys);
        assert!(
            xs.iter().any(|&x| x != xs[0]),
            "sampling at T=1 should vary"
        );
    }

    #[test]
    fn validate_names_the_bad_knob() {
        let bad = SamplerConfig {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("top_p"));
        let bad = SamplerConfig {
            temperature: f32::NAN,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("temperature"));
        assert!(SamplerConfig::default().validate().is_ok());
    }
}
