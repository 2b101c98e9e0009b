//! `augur/demo-image`: draws a deterministic abstract PNG from a prompt and a seed.
//!
//! Each of `steps` steps waits `step_ms` milliseconds and logs one tqdm-style progress line
//! (which the Replicate Python client parses into `Prediction.progress`), so progress,
//! streaming and cancel can be watched. The picture is a sum of plane waves whose directions,
//! frequencies and palette come from the prompt and the seed: the same prompt, seed and size
//! always give the same bytes.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::models::parse_input;
use crate::provider::{InputError, Outcome, Provider, ProviderError, RunContext};

/// The demo image model.
#[derive(Debug, Clone, Copy)]
pub struct DemoImage;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    prompt: String,
    #[serde(default = "default_side")]
    width: u32,
    #[serde(default = "default_side")]
    height: u32,
    #[serde(default = "default_steps")]
    steps: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(default = "default_step_ms")]
    step_ms: u64,
}

fn default_side() -> u32 {
    512
}
fn default_steps() -> u32 {
    10
}
fn default_step_ms() -> u64 {
    100
}

const MIN_SIDE: u32 = 8;
const MAX_SIDE: u32 = 2048;
const MAX_STEPS: u32 = 200;
const MAX_STEP_MS: u64 = 60_000;
const MAX_PROMPT: usize = 10_000;

impl Input {
    fn check(&self) -> Result<(), InputError> {
        if self.prompt.trim().is_empty() {
            return Err(InputError::field("prompt", "must not be empty"));
        }
        if self.prompt.chars().count() > MAX_PROMPT {
            return Err(InputError::field(
                "prompt",
                format!("must be at most {MAX_PROMPT} characters"),
            ));
        }
        for (field, v) in [("width", self.width), ("height", self.height)] {
            if !(MIN_SIDE..=MAX_SIDE).contains(&v) {
                return Err(InputError::field(
                    field,
                    format!("must be between {MIN_SIDE} and {MAX_SIDE}, got {v}"),
                ));
            }
        }
        if !(1..=MAX_STEPS).contains(&self.steps) {
            return Err(InputError::field(
                "steps",
                format!("must be between 1 and {MAX_STEPS}, got {}", self.steps),
            ));
        }
        if self.step_ms > MAX_STEP_MS {
            return Err(InputError::field(
                "step_ms",
                format!("must be at most {MAX_STEP_MS}, got {}", self.step_ms),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Provider for DemoImage {
    fn validate_input(&self, input: &Map<String, Value>) -> Result<Map<String, Value>, InputError> {
        let parsed: Input = parse_input(input)?;
        parsed.check()?;
        match serde_json::to_value(parsed) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(InputError::field("input", "cannot be normalised")),
        }
    }

    fn openapi_schema(&self) -> Option<Value> {
        Some(json!({
            "openapi": "3.0.2",
            "info": {"title": "Cog", "version": "0.1.0"},
            "components": {"schemas": {
                "Input": {
                    "title": "Input", "type": "object", "required": ["prompt"],
                    "properties": {
                        "prompt": {"title": "Prompt", "type": "string", "x-order": 0,
                                   "description": "What to draw (it picks the palette and the waves)"},
                        "width": {"title": "Width", "type": "integer", "default": default_side(),
                                  "minimum": MIN_SIDE, "maximum": MAX_SIDE, "x-order": 1},
                        "height": {"title": "Height", "type": "integer", "default": default_side(),
                                   "minimum": MIN_SIDE, "maximum": MAX_SIDE, "x-order": 2},
                        "steps": {"title": "Steps", "type": "integer", "default": default_steps(),
                                  "minimum": 1, "maximum": MAX_STEPS, "x-order": 3},
                        "seed": {"title": "Seed", "type": "integer", "minimum": 0, "x-order": 4,
                                 "description": "Random if not given; the same seed gives the same image"},
                        "step_ms": {"title": "Step Ms", "type": "integer", "default": default_step_ms(),
                                    "minimum": 0, "maximum": MAX_STEP_MS, "x-order": 5,
                                    "description": "How long each step takes, in milliseconds"}
                    }
                },
                "Output": {"title": "Output", "type": "string", "format": "uri"}
            }}
        }))
    }

    async fn run(&self, ctx: RunContext) -> Result<Outcome, ProviderError> {
        let map = match &ctx.prediction.input {
            Value::Object(map) => map.clone(),
            _ => return Err(ProviderError::Failed("input must be a JSON object".into())),
        };
        let input: Input = parse_input(&map).map_err(|e| ProviderError::Failed(e.to_string()))?;
        input
            .check()
            .map_err(|e| ProviderError::Failed(e.to_string()))?;
        let seed = input.seed.unwrap_or_else(rand::random);
        ctx.progress
            .log(format!(
                "drawing {}x{} with seed {seed}: {}",
                input.width, input.height, input.prompt
            ))
            .await?;
        for step in 1..=input.steps {
            tokio::time::sleep(Duration::from_millis(input.step_ms)).await;
            ctx.progress.log(progress_line(step, input.steps)).await?;
        }
        let (prompt, width, height) = (input.prompt.clone(), input.width, input.height);
        let png = tokio::task::spawn_blocking(move || render_png(&prompt, seed, width, height))
            .await
            .map_err(|e| ProviderError::Failed(format!("renderer crashed: {e}")))?
            .map_err(|e| ProviderError::Failed(format!("cannot encode png: {e}")))?;
        let url = ctx
            .files
            .put(&ctx.prediction.id, "out.png", Bytes::from(png))
            .await
            .map_err(|e| ProviderError::Retryable(format!("cannot store output: {e}")))?;
        Ok(Outcome::Succeeded(Value::String(url)))
    }
}

/// A tqdm-style line: ` 40%|████      | 4/10`.
fn progress_line(step: u32, steps: u32) -> String {
    let pct = step * 100 / steps;
    let filled = (step * 10 / steps) as usize;
    format!(
        "{pct:3}%|{}{}| {step}/{steps}",
        "█".repeat(filled),
        " ".repeat(10 - filled)
    )
}

/// Renders the picture for `prompt` and `seed` as PNG bytes (RGB, 8 bits).
pub fn render_png(
    prompt: &str,
    seed: u64,
    width: u32,
    height: u32,
) -> Result<Vec<u8>, png::EncodingError> {
    let digest = Sha256::digest(prompt.as_bytes());
    let mut key = [0u8; 32];
    for (i, b) in digest.iter().enumerate() {
        key[i] = b ^ seed.to_le_bytes()[i % 8];
    }
    let mut rng = StdRng::from_seed(key);
    let palette: Vec<[f32; 3]> = (0..3)
        .map(|_| {
            [
                rng.random::<f32>(),
                rng.random::<f32>(),
                rng.random::<f32>(),
            ]
        })
        .collect();
    let waves: Vec<(f32, f32, f32, f32)> = (0..6)
        .map(|_| {
            let angle = rng.random::<f32>() * std::f32::consts::TAU;
            let freq = 2.0 + rng.random::<f32>() * 10.0;
            let phase = rng.random::<f32>() * std::f32::consts::TAU;
            let weight = 0.3 + rng.random::<f32>();
            (angle.cos() * freq, angle.sin() * freq, phase, weight)
        })
        .collect();
    let total: f32 = waves.iter().map(|w| w.3).sum();

    let mut data = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        let v = y as f32 / height as f32;
        for x in 0..width {
            let u = x as f32 / width as f32;
            let s: f32 = waves
                .iter()
                .map(|(fx, fy, phase, weight)| weight * (fx * u + fy * v + phase).sin())
                .sum::<f32>()
                / total;
            let t = (s + 1.0) / 2.0;
            let (a, b, k) = if t < 0.5 {
                (palette[0], palette[1], t * 2.0)
            } else {
                (palette[1], palette[2], (t - 0.5) * 2.0)
            };
            for c in 0..3 {
                data.push(((a[c] + (b[c] - a[c]) * k) * 255.0) as u8);
            }
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&data)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> (u32, u32) {
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        (info.width, info.height)
    }

    #[test]
    fn renders_a_valid_png_of_the_requested_size_deterministically() {
        let a = render_png("a red fox", 7, 64, 32).unwrap();
        assert_eq!(decode(&a), (64, 32));
        assert_eq!(a, render_png("a red fox", 7, 64, 32).unwrap());
        assert_ne!(a, render_png("a red fox", 8, 64, 32).unwrap());
        assert_ne!(a, render_png("a blue fox", 7, 64, 32).unwrap());
    }

    #[test]
    fn validation_names_the_field_and_fills_defaults() {
        let ok = DemoImage
            .validate_input(json!({"prompt": "x"}).as_object().unwrap())
            .unwrap();
        assert_eq!(ok["width"], 512);
        assert_eq!(ok["steps"], 10);
        let cases = [
            (json!({}), Some("prompt"), "is required"),
            (
                json!({"prompt": "x", "width": "wide"}),
                Some("width"),
                "must be a whole number from 0 to 4294967295, got the text \"wide\"",
            ),
            (
                json!({"prompt": "x", "steps": -1}),
                Some("steps"),
                "must be a whole number from 0 to 4294967295, got -1",
            ),
            (json!({"prompt": "x", "width": 4}), Some("width"), "between"),
            (json!({"prompt": "x", "steps": 0}), Some("steps"), "between"),
            (
                json!({"prompt": "x", "bogus": 1}),
                Some("bogus"),
                "is not a known field (expected one of prompt, width,",
            ),
            (json!({"prompt": " "}), Some("prompt"), "empty"),
        ];
        for (input, field, needle) in cases {
            let err = DemoImage
                .validate_input(input.as_object().unwrap())
                .unwrap_err();
            assert_eq!(err.field.as_deref(), field, "{input}");
            assert!(err.message.contains(needle), "{input}: {}", err.message);
        }
    }

    #[test]
    fn progress_lines_look_like_tqdm() {
        assert_eq!(progress_line(4, 10), " 40%|████      | 4/10");
        assert_eq!(progress_line(10, 10), "100%|██████████| 10/10");
    }
}
