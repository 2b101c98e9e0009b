//! Models built into Augur, so that a fresh `augur serve` does real work with nothing else
//! installed: `augur/demo-image` (a procedural PNG, step by step) and `augur/echo` (returns
//! its input at once, for tests and benchmarks).

mod demo_image;
mod echo;

use std::sync::Arc;

use augur_core::ModelName;

pub use demo_image::{DemoImage, render_png};
pub use echo::Echo;

use crate::models::{Model, ModelRegistry, ModelSettings};

/// Registers the built-in models.
pub fn register(registry: &mut ModelRegistry) {
    let revision = env!("CARGO_PKG_VERSION");
    registry.register(Model::new(
        ModelName::parse("augur/demo-image").expect("valid name"),
        revision,
        "Draws a deterministic abstract PNG from a prompt and a seed, one visible step at a time",
        ModelSettings::default(),
        Arc::new(DemoImage),
    ));
    registry.register(Model::new(
        ModelName::parse("augur/echo").expect("valid name"),
        revision,
        "Returns its input as its output, at once",
        ModelSettings::default(),
        Arc::new(Echo),
    ));
}
