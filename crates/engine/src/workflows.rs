//! [`ModelCatalog`]: the server's models as workflow runs see them ([`Catalog`]): versions,
//! prices, input validation, and output file references made URLs a model server can fetch.

use std::sync::Arc;

use serde_json::Value;

use augur_core::ModelName;
use augur_core::workflow::{Catalog, InputProblem, ModelInfo};

use crate::models::ModelRegistry;

/// The [`Catalog`] over a [`ModelRegistry`], rendering file references under `public_url`.
#[derive(Debug, Clone)]
pub struct ModelCatalog {
    models: Arc<ModelRegistry>,
    public_url: String,
}

impl ModelCatalog {
    /// The catalog of `models`, whose output files are served under `public_url`.
    pub fn new(models: Arc<ModelRegistry>, public_url: &str) -> Self {
        Self {
            models,
            public_url: public_url.trim_end_matches('/').to_owned(),
        }
    }
}

impl Catalog for ModelCatalog {
    fn model(&self, name: &ModelName) -> Option<ModelInfo> {
        self.models.get(name).map(|m| ModelInfo {
            version: m.version.clone(),
            price: m.price,
        })
    }

    fn validate(&self, name: &ModelName, input: &Value) -> Result<Value, InputProblem> {
        let model = self.models.get(name).ok_or_else(|| InputProblem {
            field: None,
            message: format!("model {name} does not exist on this server"),
        })?;
        model.validate_input(input).map_err(|e| InputProblem {
            field: e.field,
            message: e.message,
        })
    }

    fn render_files(&self, value: Value) -> Value {
        match augur_core::output::render(&self.public_url, &value) {
            std::borrow::Cow::Borrowed(_) => value,
            std::borrow::Cow::Owned(rendered) => rendered,
        }
    }
}
