//! Workflow blueprint files (JSON, or TOML converted to the same JSON), read by
//! `augur workflow apply` and by start-up, which stores the operator's (the TOML files of a
//! directory) as the admin's workflows, which every account may run.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value};

use augur_core::workflow::{Blueprint, Catalog, WorkflowPut};
use augur_core::{AccountId, Predictions};

/// Reads a workflow blueprint: JSON, or TOML when the file name ends in `.toml` (converted
/// to the same JSON: tables become objects, arrays arrays, datetimes strings).
pub fn read_blueprint_value(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let blueprint = if is_toml {
        toml_to_json(&text)
            .with_context(|| format!("{} is not a TOML blueprint", path.display()))?
    } else {
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON blueprint", path.display()))?
    };
    if !blueprint.is_object() {
        bail!(
            "{}: a blueprint is an object (name, nodes, output, ...)",
            path.display()
        );
    }
    Ok(blueprint)
}

/// A TOML document as the JSON value it spells.
pub fn toml_to_json(text: &str) -> Result<Value> {
    fn convert(value: toml::Value, at: &str) -> Result<Value> {
        Ok(match value {
            toml::Value::String(s) => Value::String(s),
            toml::Value::Integer(i) => Value::from(i),
            toml::Value::Float(f) => Value::Number(
                serde_json::Number::from_f64(f)
                    .ok_or_else(|| anyhow!("{at}: {f} has no JSON equivalent"))?,
            ),
            toml::Value::Boolean(b) => Value::Bool(b),
            toml::Value::Datetime(d) => Value::String(d.to_string()),
            toml::Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| convert(item, &format!("{at}[{i}]")))
                    .collect::<Result<_>>()?,
            ),
            toml::Value::Table(table) => Value::Object(convert_table(table, at)?),
        })
    }
    fn convert_table(table: toml::Table, at: &str) -> Result<Map<String, Value>> {
        table
            .into_iter()
            .map(|(key, value)| {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                Ok((key, convert(value, &path)?))
            })
            .collect()
    }
    let table: toml::Table = toml::from_str(text)?;
    Ok(Value::Object(convert_table(table, "")?))
}

/// Reads a blueprint file ([`read_blueprint_value`]) as a [`Blueprint`]: an unknown field is
/// named.
pub fn read_blueprint(path: &Path) -> Result<Blueprint> {
    serde_json::from_value(read_blueprint_value(path)?)
        .with_context(|| format!("{} is not a workflow blueprint", path.display()))
}

/// Stores every `*.toml` blueprint in `dir` as the admin's workflow; a blueprint that does not
/// validate stops the start with its file and field named.
pub async fn apply_dir(service: &Predictions, catalog: &dyn Catalog, dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the workflows directory {}", dir.display()))?;
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for file in files {
        let blueprint = read_blueprint(&file)?;
        let name = blueprint.name.clone();
        match service
            .put_workflow(&AccountId::admin(), blueprint, catalog)
            .await
        {
            Ok(put) => {
                let version = put.workflow().version;
                let what = match put {
                    WorkflowPut::Created(_) => "stored",
                    WorkflowPut::Updated(_) => "updated",
                    WorkflowPut::Unchanged(_) => "unchanged",
                };
                tracing::info!(workflow = %name, version, file = %file.display(), "operator workflow {what}");
            }
            Err(augur_core::Error::InvalidBlueprint(e)) => {
                bail!("workflow {} in {}: {e}", name, file.display())
            }
            Err(e) => return Err(e).with_context(|| format!("cannot store workflow {name}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_json_blueprints_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let toml_file = dir.path().join("variants.toml");
        std::fs::write(
            &toml_file,
            r#"
name = "acme/variants"
output = "{{ nodes.left.output }}"

[nodes.draw]
model = "augur/demo-image"
input = { prompt = "{{ input.prompt }}", width = 64 }

[nodes.left]
model = "augur/echo"
input = { image = "{{ nodes.draw.output }}" }
on_failure = "continue"
"#,
        )
        .unwrap();
        let json_file = dir.path().join("variants.json");
        std::fs::write(
            &json_file,
            r#"{"name": "acme/variants", "output": "{{ nodes.left.output }}", "nodes": {
                "draw": {"model": "augur/demo-image", "input": {"prompt": "{{ input.prompt }}", "width": 64}},
                "left": {"model": "augur/echo", "input": {"image": "{{ nodes.draw.output }}"}, "on_failure": "continue"}}}"#,
        )
        .unwrap();
        assert_eq!(
            read_blueprint(&toml_file).unwrap(),
            read_blueprint(&json_file).unwrap()
        );
        std::fs::write(
            &toml_file,
            "name = \"a/b\"\n[nodes.x]\nmodel = \"m/n\"\nbogus = 1\n",
        )
        .unwrap();
        let err = format!("{:#}", read_blueprint(&toml_file).unwrap_err());
        assert!(err.contains("bogus"), "{err}");
    }
}
