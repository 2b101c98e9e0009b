//! The operator's workflow blueprints: TOML files in a directory, stored at start-up as the
//! admin's workflows (which every account may run).

use std::path::Path;

use anyhow::{Context, Result, bail};

use augur_core::workflow::{Blueprint, Catalog, WorkflowPut};
use augur_core::{AccountId, Predictions};

/// Parses a blueprint file: TOML (by its `.toml` extension) or JSON.
pub fn read_blueprint(path: &Path) -> Result<Blueprint> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read workflow file {}", path.display()))?;
    let value: serde_json::Value = if path.extension().is_some_and(|e| e == "toml") {
        let parsed: toml::Value =
            toml::from_str(&text).with_context(|| format!("invalid TOML in {}", path.display()))?;
        serde_json::to_value(parsed)?
    } else {
        serde_json::from_str(&text)
            .with_context(|| format!("invalid JSON in {}", path.display()))?
    };
    serde_json::from_value(value)
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
