//! Blueprints: a workflow's nodes (each a prediction of a model, with templated input), the
//! edges their references make, and validation that names the node and field at fault.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::template::{self, Reference};
use super::{Catalog, InputProblem};
use crate::id::ModelName;

/// The most nodes a blueprint may have.
pub const MAX_NODES: usize = 256;

/// The most extra attempts a node may ask for.
pub const MAX_RETRIES: u32 = 5;

/// What a node's failure does to its run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Cancel what runs, start nothing new, refund what never ran: the run fails.
    #[default]
    Fail,
    /// The node's output is `null` (per item, for a fan-out) and the run goes on.
    Continue,
}

/// One node: a prediction of `model` (one per item with `for_each`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The model, `owner/name`.
    pub model: String,
    /// The input, with templates.
    #[serde(default = "empty_object")]
    pub input: Value,
    /// Nodes that must settle first, beyond those the input references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// A template naming a list: one prediction per item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    /// Extra attempts after a failed prediction.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// Seconds a prediction of the node may take (from its creation) before it is canceled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_run_time: Option<f64>,
    /// What its failure does.
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_failure: OnFailure,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_default(f: &OnFailure) -> bool {
    *f == OnFailure::Fail
}

/// A workflow's definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blueprint {
    /// `owner/name`.
    pub name: String,
    /// One line about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema subset the run's input must satisfy: `type: object`, `required`, and
    /// each property's `type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    /// The nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// The run's output, with templates (`null` if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

/// What is wrong with a blueprint (or a run's input): the field and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BlueprintError {
    /// The field at fault (`nodes.left.input.image`).
    pub field: String,
    /// Why.
    pub message: String,
}

impl BlueprintError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A node's place in the graph, computed once when a run starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Node names in an order where every node comes after those it depends on.
    pub order: Vec<String>,
    /// Each node's dependencies.
    pub deps: BTreeMap<String, BTreeSet<String>>,
}

/// Whether `name` may name a node.
pub fn is_valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Node {
    /// The nodes this one depends on: those its input and `for_each` reference, and `after`.
    pub fn dependencies(&self) -> BTreeSet<String> {
        let mut deps: BTreeSet<String> = self.after.iter().cloned().collect();
        let mut add = |refs: Vec<(String, Reference)>| {
            for (_, r) in refs {
                if let Reference::Node { name, .. } = r {
                    deps.insert(name);
                }
            }
        };
        if let Ok(refs) = template::references(&self.input) {
            add(refs);
        }
        if let Some(each) = &self.for_each
            && let Ok(refs) = template::references(&Value::String(each.clone()))
        {
            add(refs);
        }
        deps
    }
}

impl Blueprint {
    /// Its name, parsed.
    pub fn model_name(&self) -> Result<ModelName, BlueprintError> {
        ModelName::parse(&self.name).map_err(|e| {
            BlueprintError::new("name", format!("{e} (a workflow is named owner/name)"))
        })
    }

    /// Checks everything that can be checked before a run: the name, each node's model,
    /// templates, references, `for_each`, limits, cycles, and each input against its model's
    /// schema as far as it is written out (fields filled by templates are checked when the
    /// node starts). Returns the graph's shape.
    pub fn validate(&self, catalog: &dyn Catalog) -> Result<Shape, BlueprintError> {
        self.model_name()?;
        if self.nodes.is_empty() {
            return Err(BlueprintError::new(
                "nodes",
                "a workflow needs at least one node",
            ));
        }
        if self.nodes.len() > MAX_NODES {
            return Err(BlueprintError::new(
                "nodes",
                format!("at most {MAX_NODES} nodes, got {}", self.nodes.len()),
            ));
        }
        if let Some(schema) = &self.input_schema {
            check_schema(schema)?;
        }
        for (name, node) in &self.nodes {
            self.validate_node(name, node, catalog)?;
        }
        if let Some(output) = &self.output {
            let refs = template::references(output)
                .map_err(|(field, e)| BlueprintError::new(join("output", &field), e.0))?;
            for (field, r) in refs {
                let at = join("output", &field);
                match r {
                    Reference::Node { name, .. } if !self.nodes.contains_key(&name) => {
                        return Err(BlueprintError::new(
                            at,
                            format!("there is no node {name:?}"),
                        ));
                    }
                    Reference::Item(_) | Reference::Index => {
                        return Err(BlueprintError::new(
                            at,
                            "item and index exist only inside a node with for_each",
                        ));
                    }
                    _ => {}
                }
            }
        }
        self.shape()
    }

    fn validate_node(
        &self,
        name: &str,
        node: &Node,
        catalog: &dyn Catalog,
    ) -> Result<(), BlueprintError> {
        let at = format!("nodes.{name}");
        if !is_valid_node_name(name) {
            return Err(BlueprintError::new(
                at,
                "a node name is 1 to 64 letters, digits, '_' or '-'",
            ));
        }
        let model = ModelName::parse(&node.model)
            .map_err(|e| BlueprintError::new(format!("{at}.model"), e.to_string()))?;
        if catalog.model(&model).is_none() {
            return Err(BlueprintError::new(
                format!("{at}.model"),
                format!("model {model} does not exist on this server; GET /v1/models lists them"),
            ));
        }
        if !node.input.is_object() {
            return Err(BlueprintError::new(
                format!("{at}.input"),
                "must be an object",
            ));
        }
        if node.retries > MAX_RETRIES {
            return Err(BlueprintError::new(
                format!("{at}.retries"),
                format!("at most {MAX_RETRIES}"),
            ));
        }
        if let Some(t) = node.max_run_time
            && !(t.is_finite() && t > 0.0 && t <= 7.0 * 86_400.0)
        {
            return Err(BlueprintError::new(
                format!("{at}.max_run_time"),
                "seconds, more than 0 and at most a week",
            ));
        }
        let fanned = node.for_each.is_some();
        let mut refs = template::references(&node.input)
            .map_err(|(field, e)| BlueprintError::new(join(&format!("{at}.input"), &field), e.0))?
            .into_iter()
            .map(|(field, r)| (join(&format!("{at}.input"), &field), r))
            .collect::<Vec<_>>();
        if let Some(each) = &node.for_each {
            let field = format!("{at}.for_each");
            match template::whole_reference(each) {
                Ok(Some(r @ (Reference::Input(_) | Reference::Node { .. }))) => {
                    refs.push((field, r));
                }
                Ok(_) => {
                    return Err(BlueprintError::new(
                        field,
                        "one template naming a list: {{ input.<field> }} or {{ nodes.<name>.output }}",
                    ));
                }
                Err(e) => return Err(BlueprintError::new(field, e.0)),
            }
        }
        for (field, r) in &refs {
            match r {
                Reference::Node { name: other, .. } if other == name => {
                    return Err(BlueprintError::new(
                        field,
                        "a node cannot use its own output",
                    ));
                }
                Reference::Node { name: other, .. } if !self.nodes.contains_key(other) => {
                    return Err(BlueprintError::new(
                        field,
                        format!("there is no node {other:?}"),
                    ));
                }
                Reference::Item(_) | Reference::Index if !fanned => {
                    return Err(BlueprintError::new(
                        field,
                        "item and index exist only inside a node with for_each",
                    ));
                }
                _ => {}
            }
        }
        for (i, other) in node.after.iter().enumerate() {
            if !self.nodes.contains_key(other) || other == name {
                return Err(BlueprintError::new(
                    format!("{at}.after.{i}"),
                    format!("{other:?} is not another node of this workflow"),
                ));
            }
        }
        // The input as far as it is written out: template-filled fields are left to the
        // model's check when the node starts.
        let Value::Object(input) = &node.input else {
            return Ok(());
        };
        let templated: BTreeSet<&str> = input
            .iter()
            .filter(|(_, v)| template::has_templates(v))
            .map(|(k, _)| k.as_str())
            .collect();
        let literal: serde_json::Map<String, Value> = input
            .iter()
            .filter(|(k, _)| !templated.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Err(InputProblem { field, message }) =
            catalog.validate(&model, &Value::Object(literal))
        {
            // A problem is reported when it is about a field written out, or when nothing is
            // filled later (a problem without a field may be about a templated one).
            let top = field
                .as_deref()
                .map(|f| f.split(['.', '[']).next().unwrap_or(f));
            let filled_later = match top {
                Some(f) => templated.contains(f),
                None => !templated.is_empty(),
            };
            if !filled_later {
                let field =
                    field.map_or_else(|| format!("{at}.input"), |f| format!("{at}.input.{f}"));
                return Err(BlueprintError::new(field, message));
            }
        }
        Ok(())
    }

    /// The graph's order and dependencies; an error names a node on a cycle.
    pub fn shape(&self) -> Result<Shape, BlueprintError> {
        let deps: BTreeMap<String, BTreeSet<String>> = self
            .nodes
            .iter()
            .map(|(name, node)| (name.clone(), node.dependencies()))
            .collect();
        let mut order = Vec::with_capacity(deps.len());
        let mut placed = BTreeSet::new();
        while order.len() < deps.len() {
            let ready: Vec<&String> = deps
                .iter()
                .filter(|(n, d)| !placed.contains(*n) && d.iter().all(|x| placed.contains(x)))
                .map(|(n, _)| n)
                .collect();
            if ready.is_empty() {
                let stuck = deps.keys().find(|n| !placed.contains(*n)).cloned();
                let stuck = stuck.unwrap_or_default();
                let cycle = self.cycle_from(&deps, &placed, &stuck);
                return Err(BlueprintError::new(
                    format!("nodes.{}", cycle.first().unwrap_or(&stuck)),
                    format!("the nodes form a cycle: {}", cycle.join(" -> ")),
                ));
            }
            for n in ready {
                placed.insert(n.clone());
                order.push(n.clone());
            }
        }
        Ok(Shape { order, deps })
    }

    /// A cycle among the unplaced nodes, reached from `start`.
    fn cycle_from(
        &self,
        deps: &BTreeMap<String, BTreeSet<String>>,
        placed: &BTreeSet<String>,
        start: &str,
    ) -> Vec<String> {
        let mut path = vec![start.to_owned()];
        let mut current = start.to_owned();
        loop {
            let Some(next) = deps
                .get(&current)
                .and_then(|d| d.iter().find(|x| !placed.contains(*x)))
            else {
                return path;
            };
            if let Some(at) = path.iter().position(|p| p == next) {
                let mut cycle = path[at..].to_vec();
                cycle.push(next.clone());
                return cycle;
            }
            path.push(next.clone());
            current = next.clone();
        }
    }

    /// Checks a run's input against `input_schema`.
    pub fn check_input(&self, input: &Value) -> Result<(), BlueprintError> {
        let Value::Object(map) = input else {
            return Err(BlueprintError::new("input", "must be a JSON object"));
        };
        let Some(schema) = &self.input_schema else {
            return Ok(());
        };
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for field in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(field) {
                    return Err(BlueprintError::new(format!("input.{field}"), "is required"));
                }
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (field, value) in map {
                let Some(want) = props
                    .get(field)
                    .and_then(|p| p.get("type"))
                    .and_then(Value::as_str)
                else {
                    continue;
                };
                if !has_type(value, want) {
                    return Err(BlueprintError::new(
                        format!("input.{field}"),
                        format!("must be of type {want}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn join(prefix: &str, field: &str) -> String {
    if field.is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

const TYPES: [&str; 7] = [
    "string", "integer", "number", "boolean", "array", "object", "null",
];

fn has_type(value: &Value, want: &str) -> bool {
    match want {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        _ => true,
    }
}

/// Checks the subset of JSON Schema `check_input` understands.
fn check_schema(schema: &Value) -> Result<(), BlueprintError> {
    let Value::Object(map) = schema else {
        return Err(BlueprintError::new(
            "input_schema",
            "must be a JSON Schema object",
        ));
    };
    if map.get("type").is_some_and(|t| t != "object") {
        return Err(BlueprintError::new(
            "input_schema.type",
            "must be \"object\"",
        ));
    }
    if let Some(required) = map.get("required")
        && !required
            .as_array()
            .is_some_and(|r| r.iter().all(Value::is_string))
    {
        return Err(BlueprintError::new(
            "input_schema.required",
            "must be a list of field names",
        ));
    }
    if let Some(props) = map.get("properties") {
        let Value::Object(props) = props else {
            return Err(BlueprintError::new(
                "input_schema.properties",
                "must be an object",
            ));
        };
        for (field, prop) in props {
            if let Some(t) = prop.get("type")
                && !t.as_str().is_some_and(|t| TYPES.contains(&t))
            {
                return Err(BlueprintError::new(
                    format!("input_schema.properties.{field}.type"),
                    format!("one of {}", TYPES.join(", ")),
                ));
            }
        }
    }
    Ok(())
}
