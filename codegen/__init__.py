"""The generator behind `python xtask.py regen` and `python xtask.py check`.

specs/ (OpenAPI 3.1 + JSON Schema 2020-12)  ->  generated/llama_orch_gen/
  - schemas/*.json            -> contracts/<module>.py       (datamodel-code-generator, pydantic v2)
  - orchestrator.openapi.yaml -> orchestrator/               (templates/resources/ over the contracts' classes:
                                 a spec with `x-client` operations; why, in codegen/resources.py)
  - engines/<name>.openapi.yaml -> engines/<name>/           (openapi-python-client with templates/)
                                 + wire.py for local components (datamodel-code-generator)
  - templates/*.py.jinja      -> package docs and contract tables (jinja2); the runtime they import is
                                 hand-written code in src/llama_orch_runtime, never a template
"""
