#!/bin/sh
# Starts the example Cog model on 127.0.0.1:5055 (PORT overrides the port), the address the
# README's `acme/sketch` entry routes to. Run it with the Python that has `cog` and `coglet`
# first on PATH (an activated virtualenv: coglet starts its worker as `python` from PATH).
# Extra arguments go to the server, e.g. --upload-url "$(augur cog upload-url acme/sketch)".
#
# It first writes .cog/openapi_schema.json from predict.py's signature (scripts/cog_schema.py;
# `cog build` would, but needs Docker and the Go CLI): without it coglet serves no
# /openapi.json and checks no inputs, and neither can Augur.
set -eu
cd "$(dirname "$0")"
python ../../scripts/cog_schema.py predict.py:Predictor
export COG_PREDICT_TYPE_STUB=predict.py:Predictor PORT="${PORT:-5055}"
exec python -m cog.server.http --host 127.0.0.1 "$@"
