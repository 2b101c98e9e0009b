//! `augur/echo`: returns its input object as its output, at once.

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::provider::{Outcome, Provider, ProviderError, RunContext};

/// The echo model.
#[derive(Debug, Clone, Copy)]
pub struct Echo;

#[async_trait]
impl Provider for Echo {
    fn openapi_schema(&self) -> Option<Value> {
        Some(json!({
            "openapi": "3.0.2",
            "info": {"title": "Cog", "version": "0.1.0"},
            "components": {"schemas": {
                "Input": {"title": "Input", "type": "object", "additionalProperties": true,
                          "description": "Any object; it is returned unchanged"},
                "Output": {"title": "Output", "type": "object"}
            }}
        }))
    }

    async fn run(&self, ctx: RunContext) -> Result<Outcome, ProviderError> {
        Ok(Outcome::Succeeded(ctx.prediction.input))
    }
}
