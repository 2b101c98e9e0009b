//! [`ModelRegistry`]: the models this server runs, each with its provider and limits.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use augur_core::{ModelName, Timestamp};

use crate::cog::CogHooks;
use crate::provider::{InputError, Provider};
use crate::replicate::ReplicateHooks;

/// Limits and policies of one model.
#[derive(Clone, Debug)]
pub struct ModelSettings {
    /// At most this many predictions of the model run at once on one worker (`None`: only the
    /// worker's own concurrency limits it).
    pub concurrency: Option<usize>,
    /// A prediction that runs longer fails with "timed out".
    pub max_run_time: Duration,
    /// Attempts before a prediction whose runs keep failing retryably fails for good.
    pub max_attempts: u32,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            concurrency: None,
            max_run_time: Duration::from_secs(30 * 60),
            max_attempts: 3,
        }
    }
}

/// A model this server can run.
#[derive(Debug)]
pub struct Model {
    /// `owner/name`.
    pub name: ModelName,
    /// Its version id (64 hex characters, like Replicate's).
    pub version: String,
    /// One line about it.
    pub description: String,
    /// When this version was registered.
    pub created_at: Timestamp,
    /// Its limits.
    pub settings: ModelSettings,
    /// What a prediction of it costs; `None` is free.
    pub price: Option<augur_core::Price>,
    /// What runs it.
    pub provider: Arc<dyn Provider>,
}

impl Model {
    /// A model whose version id is derived from its name and `revision` text.
    pub fn new(
        name: ModelName,
        revision: &str,
        description: impl Into<String>,
        settings: ModelSettings,
        provider: Arc<dyn Provider>,
    ) -> Self {
        let digest = Sha256::digest(format!("{name}@{revision}").as_bytes());
        Self {
            version: digest.iter().map(|b| format!("{b:02x}")).collect(),
            name,
            description: description.into(),
            created_at: Timestamp::now(),
            settings,
            price: None,
            provider,
        }
    }

    /// Validates an input for this model (see [`Provider::validate_input`]).
    pub fn validate_input(&self, input: &Value) -> Result<Value, InputError> {
        let Value::Object(map) = input else {
            return Err(InputError {
                field: None,
                message: "input must be a JSON object".into(),
            });
        };
        self.provider.validate_input(map).map(Value::Object)
    }

    /// The OpenAPI schema, or a permissive one when the provider has none.
    pub fn openapi_schema(&self) -> Value {
        self.provider.openapi_schema().unwrap_or_else(|| {
            serde_json::json!({
                "openapi": "3.0.2",
                "info": {"title": "Cog", "version": "0.1.0"},
                "components": {"schemas": {
                    "Input": {"title": "Input", "type": "object", "properties": {}},
                    "Output": {"title": "Output"}
                }}
            })
        })
    }
}

/// The models of this server, by name and by version id.
#[derive(Debug, Default)]
pub struct ModelRegistry {
    by_name: BTreeMap<ModelName, Arc<Model>>,
    by_version: HashMap<String, ModelName>,
    /// The callbacks of Cog model servers, when the server has Cog models.
    cog_hooks: Option<Arc<CogHooks>>,
    /// The webhooks of upstream Replicate APIs, when the server has Replicate models.
    replicate_hooks: Option<Arc<ReplicateHooks>>,
}

impl ModelRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a model.
    pub fn register(&mut self, model: Model) {
        self.by_version
            .insert(model.version.clone(), model.name.clone());
        self.by_name.insert(model.name.clone(), Arc::new(model));
    }

    /// Sets the price of a registered model (a `[[models]]` entry that names a built-in
    /// model and sets only `price`). False if there is no such model, or it is already shared.
    pub fn set_price(&mut self, name: &ModelName, price: Option<augur_core::Price>) -> bool {
        match self.by_name.get_mut(name).and_then(Arc::get_mut) {
            Some(model) => {
                model.price = price;
                true
            }
            None => false,
        }
    }

    /// A model by name.
    pub fn get(&self, name: &ModelName) -> Option<&Arc<Model>> {
        self.by_name.get(name)
    }

    /// A model by Replicate-style version reference: a version id, `owner/name:version`, or
    /// `owner/name`.
    pub fn resolve_version(&self, reference: &str) -> Option<&Arc<Model>> {
        if let Some((name, version)) = reference.split_once(':') {
            let model = self.get(&ModelName::parse(name).ok()?)?;
            return (model.version == version).then_some(model);
        }
        if let Some(name) = self.by_version.get(reference) {
            return self.get(name);
        }
        self.get(&ModelName::parse(reference).ok()?)
    }

    /// All models, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.by_name.values()
    }

    /// Sets where Cog model servers' callbacks (webhooks, uploads) go.
    pub fn set_cog_hooks(&mut self, hooks: Arc<CogHooks>) {
        self.cog_hooks = Some(hooks);
    }

    /// The callbacks of Cog model servers; `None` when no Cog model is configured.
    pub fn cog_hooks(&self) -> Option<&Arc<CogHooks>> {
        self.cog_hooks.as_ref()
    }

    /// Sets where upstream Replicate APIs' webhooks go.
    pub fn set_replicate_hooks(&mut self, hooks: Arc<ReplicateHooks>) {
        self.replicate_hooks = Some(hooks);
    }

    /// The webhooks of upstream Replicate APIs; `None` when no Replicate model is configured.
    pub fn replicate_hooks(&self) -> Option<&Arc<ReplicateHooks>> {
        self.replicate_hooks.as_ref()
    }
}

/// Builds an [`InputError`] from a serde error on an input object, naming the field.
pub fn input_error_from_serde(err: serde_path_to_error::Error<serde_json::Error>) -> InputError {
    let path = err.path().to_string();
    let (field, message) = describe_serde_error(&path, &err.into_inner().to_string());
    InputError { field, message }
}

/// A serde or serde_json error at `path` (serde_path_to_error's, `.` for the top, `?` for a
/// part it could not name) as a person would say it: the field to blame (the missing or
/// unknown one itself, not its parent object) and what is wrong with it, without serde's
/// type names (`u32`), backquotes, or the line and column of a document the user did not
/// write.
pub fn describe_serde_error(path: &str, message: &str) -> (Option<String>, String) {
    // serde_json appends " at line L column C", which means nothing for an object we built.
    let message = match message.find(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    let mut field: Vec<String> = path
        .split('.')
        .filter(|part| !part.is_empty() && *part != "?")
        .map(str::to_owned)
        .collect();
    let quoted = |text: &str| -> Option<String> {
        let start = text.find('`')? + 1;
        let end = start + text[start..].find('`')?;
        Some(text[start..end].to_owned())
    };
    let list = |text: &str| text.replace('`', "");
    let said = if let Some(rest) = message.strip_prefix("missing field ") {
        name_field(&mut field, quoted(rest));
        "is required".to_owned()
    } else if let Some(rest) = message.strip_prefix("unknown field ") {
        name_field(&mut field, quoted(rest));
        match rest.split_once(", expected ") {
            Some((_, known)) => format!("is not a known field (expected {})", list(known)),
            None => "is not a known field (there are none)".to_owned(),
        }
    } else if let Some(rest) = message.strip_prefix("duplicate field ") {
        name_field(&mut field, quoted(rest));
        "is given twice".to_owned()
    } else if let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    {
        match rest.rsplit_once(", expected ") {
            Some((got, expected)) => {
                format!("must be {}, got {}", expected_name(expected), got_name(got))
            }
            None => rest.to_owned(),
        }
    } else if let Some(rest) = message.strip_prefix("unknown variant ") {
        match rest.split_once(", expected ") {
            Some((got, known)) => format!("must be {}, got {}", list(known), list(got)),
            None => format!("is not one of the known values, got {}", list(rest)),
        }
    } else if let Some(what) = message.strip_prefix("EOF while parsing ") {
        format!("the JSON ends in the middle of {what}")
    } else {
        list(message)
    };
    let field = (!field.is_empty()).then(|| field.join("."));
    (field, said)
}

/// Appends the field serde named in its message to the path, unless the path ends with it
/// already (serde_path_to_error puts an unknown field in the path, not a missing one).
fn name_field(path: &mut Vec<String>, name: Option<String>) {
    if let Some(name) = name
        && path.last() != Some(&name)
    {
        path.push(name);
    }
}

/// Serde's name of an expected type, in words.
fn expected_name(expected: &str) -> String {
    let whole = |min: &str, max: &str| format!("a whole number from {min} to {max}");
    match expected {
        "u8" => whole("0", "255"),
        "u16" => whole("0", "65535"),
        "u32" => whole("0", "4294967295"),
        "u64" | "usize" | "u128" => "a whole number, 0 or more".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" | "i128" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a sequence" => "a list".to_owned(),
        "a map" => "an object".to_owned(),
        other if other.starts_with("struct ") => "an object".to_owned(),
        other => other.replace('`', ""),
    }
}

/// Serde's description of an unexpected value (`string "x"`, ``integer `5` ``), in words.
fn got_name(got: &str) -> String {
    let unquote = |text: &str| text.trim().trim_matches('`').to_owned();
    if let Some(text) = got.strip_prefix("string ") {
        format!("the text {text}")
    } else if let Some(rest) = got
        .strip_prefix("integer ")
        .or_else(|| got.strip_prefix("floating point "))
        .or_else(|| got.strip_prefix("boolean "))
    {
        unquote(rest)
    } else {
        match got {
            "map" => "an object".to_owned(),
            "sequence" => "a list".to_owned(),
            "unit value" | "null" => "null".to_owned(),
            other => other.replace('`', ""),
        }
    }
}

/// Deserializes an input object into a typed struct, with field-naming errors.
pub fn parse_input<T: serde::de::DeserializeOwned>(
    input: &Map<String, Value>,
) -> Result<T, InputError> {
    let value = Value::Object(input.clone());
    serde_path_to_error::deserialize(value).map_err(input_error_from_serde)
}
