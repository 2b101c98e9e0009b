"""Writes a Cog predictor's OpenAPI schema, as `cog build` would, without Docker or the Go CLI.

coglet (the Cog model server on PyPI) serves `GET /openapi.json` and validates inputs only
when `.cog/openapi_schema.json` exists in its working directory; the Go `cog` CLI, which
normally writes that file, is not on PyPI. This script derives the schema from the predictor's
signature with the Cog SDK's own inspector (the same one coglet uses to load the predictor), so
that coglet and Augur (which reads the schema from `GET /openapi.json`) both refuse bad inputs
with a 422 naming the field.

Usage, from the model's directory, with the Python that has `cog` installed:

    python path/to/cog_schema.py predict.py:Predictor          # writes .cog/openapi_schema.json
    python path/to/cog_schema.py predict.py:Predictor -        # prints it instead

Covered: input types (str, int, float, bool, Path, File, Secret, lists, Optional), defaults,
descriptions, ge/le, min_length/max_length, regex, choices, deprecated, and the output type.
"""

import ast
import dataclasses
import json
import os
import sys
import tempfile
import warnings

from cog import _adt, _inspector


def explicit_defaults(path, predictor):
    """The inputs given a default in the source, even `None` (`Input(default=None)` or `= None`):
    the SDK cannot tell `Input()` from `Input(default=None)`, but `cog build` makes only the
    first required, so the source decides."""
    tree = ast.parse(open(path).read())
    functions = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == predictor:
            functions += [f for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                          and f.name in ("predict", "run")]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == predictor:
            functions.append(node)
    names = set()
    for f in functions:
        args = f.args.posonlyargs + f.args.args
        pairs = list(zip(args[len(args) - len(f.args.defaults):], f.args.defaults))
        pairs += [(a, d) for a, d in zip(f.args.kwonlyargs, f.args.kw_defaults) if d is not None]
        for arg, default in pairs:
            is_input = isinstance(default, ast.Call) and getattr(default.func, "id", getattr(default.func, "attr", "")) == "Input"
            if not is_input or any(k.arg == "default" for k in default.keywords):
                names.add(arg.arg)
    return names


def input_schema(info, defaulted):
    properties = {}
    required = []
    for name, field in info.inputs.items():
        prop = {"title": name.replace("_", " ").title(), "x-order": field.order}
        prop.update(field.type.json_type())
        if field.description is not None:
            prop["description"] = field.description
        default = field.default
        if isinstance(default, dataclasses.Field):  # a list default, kept as a dataclass field
            if default.default_factory is not dataclasses.MISSING:
                default = default.default_factory()
            else:
                default = None if default.default is dataclasses.MISSING else default.default
        if default is not None:
            prop["default"] = field.type.json_encode(default)
        elif name not in defaulted and field.type.repetition not in (
            _adt.Repetition.OPTIONAL,
            _adt.Repetition.OPTIONAL_REPEATED,
        ):
            required.append(name)
        if name in defaulted and field.default is None or field.type.repetition in (
            _adt.Repetition.OPTIONAL,
            _adt.Repetition.OPTIONAL_REPEATED,
        ):
            prop["nullable"] = True
        numeric = {"minimum": field.ge, "maximum": field.le}
        for key, value in numeric.items():
            if value is not None:
                # ge/le come back as floats; an integer field keeps integer bounds.
                prop[key] = int(value) if prop.get("type") == "integer" and float(value).is_integer() else value
        for key, value in (
            ("minLength", field.min_length),
            ("maxLength", field.max_length),
            ("pattern", field.regex),
            ("enum", field.choices),
            ("deprecated", field.deprecated),
        ):
            if value is not None:
                prop[key] = value
        properties[name] = prop
    schema = {"title": "Input", "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def document(info, defaulted):
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {
            "/predictions": {
                "post": {
                    "summary": "Predict",
                    "operationId": "predict_predictions_post",
                    "requestBody": {
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/PredictionRequest"}}
                        }
                    },
                    "responses": {
                        "200": {
                            "description": "Successful Response",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/PredictionResponse"}
                                }
                            },
                        }
                    },
                }
            }
        },
        "components": {
            "schemas": {
                "Input": input_schema(info, defaulted),
                "Output": info.output.json_type(),
                "PredictionRequest": {
                    "title": "PredictionRequest",
                    "type": "object",
                    "properties": {
                        "id": {"title": "Id", "type": "string"},
                        "input": {"$ref": "#/components/schemas/Input"},
                        "webhook": {"title": "Webhook", "type": "string", "format": "uri"},
                    },
                },
                "PredictionResponse": {
                    "title": "PredictionResponse",
                    "type": "object",
                    "properties": {
                        "id": {"title": "Id", "type": "string"},
                        "input": {"$ref": "#/components/schemas/Input"},
                        "output": {"$ref": "#/components/schemas/Output"},
                        "status": {"title": "Status", "type": "string"},
                        "error": {"title": "Error", "type": "string"},
                        "logs": {"title": "Logs", "type": "string", "default": ""},
                    },
                },
            }
        },
    }


def main(argv):
    if len(argv) not in (2, 3) or ":" not in argv[1]:
        sys.exit("usage: cog_schema.py FILE.py:PREDICTOR [OUT (default .cog/openapi_schema.json, - for stdout)]")
    path, predictor = argv[1].rsplit(":", 1)
    module = os.path.splitext(os.path.basename(path))[0]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    # The SDK's deprecation notices (BasePredictor, predict()) are coglet's to show, not ours.
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        info = _inspector.create_predictor(module, predictor)
    except Exception as e:  # the SDK's own message, e.g. a missing type annotation
        sys.exit(f"cog_schema.py: cannot inspect {argv[1]}: {e}")
    text = json.dumps(document(info, explicit_defaults(path, predictor)), indent=2) + "\n"
    out = argv[2] if len(argv) == 3 else os.path.join(".cog", "openapi_schema.json")
    if out == "-":
        sys.stdout.write(text)
        return
    directory = os.path.dirname(out) or "."
    os.makedirs(directory, exist_ok=True)
    # Written beside and renamed, so a server starting meanwhile never reads half a file.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".openapi_schema.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, out)
    print(f"cog_schema.py: wrote {out} ({len(info.inputs)} inputs)", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
