//! Templates in blueprints: `{{ input.prompt }}`, `{{ nodes.draw.output }}`, `{{ item }}`,
//! `{{ index }}`, found in any string of a node's input and rendered against a run's values.
//!
//! A string that is one template as a whole becomes the value it names, whatever its type (a
//! list, an object, a number); a template inside other text is interpolated as text (strings
//! as they are, other values as JSON). A path goes into objects by key and into lists by
//! position (`nodes.split.output.0`); a path that leads nowhere renders as `null`.

use std::fmt;

use serde_json::Value;

/// What a template names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// The run's input, or a part of it.
    Input(Vec<String>),
    /// A node's output, or a part of it.
    Node {
        /// The node.
        name: String,
        /// The path inside its output.
        path: Vec<String>,
    },
    /// The current item of a fan-out, or a part of it.
    Item(Vec<String>),
    /// The current item's position in a fan-out, from 0.
    Index,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, path): (String, &[String]) = match self {
            Reference::Input(path) => ("input".into(), path),
            Reference::Node { name, path } => (format!("nodes.{name}.output"), path),
            Reference::Item(path) => ("item".into(), path),
            Reference::Index => ("index".into(), &[]),
        };
        f.write_str(&head)?;
        path.iter().try_for_each(|p| write!(f, ".{p}"))
    }
}

/// Why a string is not a valid template.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// Parses the expression between `{{` and `}}`.
pub fn parse_reference(expr: &str) -> Result<Reference, TemplateError> {
    let expr = expr.trim();
    let bad = |why: &str| TemplateError(format!("{{{{ {expr} }}}}: {why}"));
    let mut parts = expr.split('.').map(str::trim);
    let valid = |p: &str| {
        !p.is_empty()
            && p.len() <= 128
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let head = parts.next().unwrap_or_default();
    let rest: Vec<String> = parts.map(str::to_owned).collect();
    if let Some(p) = rest.iter().find(|p| !valid(p)) {
        return Err(bad(&format!("{p:?} is not a valid path segment")));
    }
    match head {
        "input" => Ok(Reference::Input(rest)),
        "item" => Ok(Reference::Item(rest)),
        "index" if rest.is_empty() => Ok(Reference::Index),
        "index" => Err(bad("index is a number and has no fields")),
        "nodes" => {
            let mut rest = rest.into_iter();
            let name = rest
                .next()
                .ok_or_else(|| bad("name a node: nodes.<name>.output"))?;
            if rest.next().as_deref() != Some("output") {
                return Err(bad("a node is referenced as nodes.<name>.output"));
            }
            Ok(Reference::Node {
                name,
                path: rest.collect(),
            })
        }
        other => Err(bad(&format!(
            "unknown name {other:?}; use input, nodes.<name>.output, item or index"
        ))),
    }
}

/// One piece of a string: text, or a template.
#[derive(Debug)]
enum Piece<'a> {
    Text(&'a str),
    Template(Reference),
}

fn pieces(s: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError(format!("{s:?}: a {{{{ without its }}}}")))?;
        out.push(Piece::Template(parse_reference(&after[..end])?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Every reference in `value`'s strings, each with the path of the field it is in (`prompt`,
/// `images.0`), relative to `value`.
pub fn references(value: &Value) -> Result<Vec<(String, Reference)>, (String, TemplateError)> {
    fn walk(
        value: &Value,
        path: &mut Vec<String>,
        out: &mut Vec<(String, Reference)>,
    ) -> Result<(), (String, TemplateError)> {
        match value {
            Value::String(s) if s.contains("{{") => {
                for piece in pieces(s).map_err(|e| (path.join("."), e))? {
                    if let Piece::Template(r) = piece {
                        out.push((path.join("."), r));
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    path.push(i.to_string());
                    walk(v, path, out)?;
                    path.pop();
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    path.push(k.clone());
                    walk(v, path, out)?;
                    path.pop();
                }
            }
            _ => {}
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out)?;
    Ok(out)
}

/// Whether `value` holds any template.
pub fn has_templates(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains("{{"),
        Value::Array(items) => items.iter().any(has_templates),
        Value::Object(map) => map.values().any(has_templates),
        _ => false,
    }
}

/// The reference `s` is as a whole (`"{{ input.prompts }}"`), if it is exactly one template.
pub fn whole_reference(s: &str) -> Result<Option<Reference>, TemplateError> {
    match pieces(s.trim())?.as_slice() {
        [Piece::Template(r)] => Ok(Some(r.clone())),
        _ => Ok(None),
    }
}

/// What templates render against.
pub trait Scope {
    /// The value a reference names (`Value::Null` if it names nothing).
    fn lookup(&self, reference: &Reference) -> Value;
}

/// Follows `path` into `value`: object keys, and list positions.
pub fn follow(mut value: &Value, path: &[String]) -> Value {
    for segment in path {
        let next = match value {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(v) => value = v,
            None => return Value::Null,
        }
    }
    value.clone()
}

/// `value` with every template replaced by what it names in `scope`. Strings that do not parse
/// are left as they are (blueprints are validated before they are run).
pub fn render(value: &Value, scope: &dyn Scope) -> Value {
    match value {
        Value::String(s) if s.contains("{{") => {
            let Ok(pieces) = pieces(s) else {
                return value.clone();
            };
            match pieces.as_slice() {
                [Piece::Template(r)] if s.trim() == s => scope.lookup(r),
                _ => {
                    let mut out = String::with_capacity(s.len());
                    for piece in &pieces {
                        match piece {
                            Piece::Text(t) => out.push_str(t),
                            Piece::Template(r) => match scope.lookup(r) {
                                Value::String(s) => out.push_str(&s),
                                Value::Null => {}
                                other => out.push_str(&other.to_string()),
                            },
                        }
                    }
                    Value::String(out)
                }
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| render(v, scope)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render(v, scope)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed;
    impl Scope for Fixed {
        fn lookup(&self, r: &Reference) -> Value {
            let root = json!({"prompt": "a cat", "n": 3, "list": [1, 2], "nested": {"k": "v"}});
            match r {
                Reference::Input(path) => follow(&root, path),
                Reference::Node { name, path } => follow(&json!({"name": name}), path),
                Reference::Item(path) => follow(&json!("it"), path),
                Reference::Index => json!(7),
            }
        }
    }

    #[test]
    fn whole_templates_keep_their_type_and_inline_ones_interpolate() {
        let input = json!({
            "a": "{{ input.list }}",
            "b": "size {{ input.n }} of {{input.prompt}}",
            "c": ["{{ index }}", {"d": "{{ input.nested.k }}"}],
            "e": "{{ input.list.1 }}",
            "f": "{{ input.missing }}",
            "g": "{{ nodes.draw.output.name }}",
            "h": 5,
        });
        assert_eq!(
            render(&input, &Fixed),
            json!({"a": [1, 2], "b": "size 3 of a cat", "c": [7, {"d": "v"}], "e": 2,
                   "f": null, "g": "draw", "h": 5})
        );
    }

    #[test]
    fn references_name_their_fields() {
        let refs = references(&json!({"x": ["{{ nodes.a.output }}", "{{ item.k }}"]})).unwrap();
        assert_eq!(
            refs,
            vec![
                (
                    "x.0".to_owned(),
                    Reference::Node {
                        name: "a".into(),
                        path: vec![]
                    }
                ),
                ("x.1".to_owned(), Reference::Item(vec!["k".into()])),
            ]
        );
    }

    #[test]
    fn bad_templates_are_named() {
        for (bad, why) in [
            ("{{ input.x", "without"),
            ("{{ nodes.a }}", "nodes.<name>.output"),
            ("{{ env.HOME }}", "unknown name"),
            ("{{ index.x }}", "no fields"),
            ("{{ input..x }}", "path segment"),
        ] {
            let err = references(&json!({"f": bad})).unwrap_err();
            assert_eq!(err.0, "f");
            assert!(err.1.0.contains(why), "{bad}: {}", err.1);
        }
    }

    #[test]
    fn references_display_as_written() {
        let r = parse_reference(" nodes.a.output.0 ").unwrap();
        assert_eq!(r.to_string(), "nodes.a.output.0");
        assert_eq!(
            whole_reference("{{ input.p }}").unwrap(),
            Some(Reference::Input(vec!["p".into()]))
        );
        assert_eq!(whole_reference("x {{ input.p }}").unwrap(), None);
    }
}
