"""The generator behind `python xtask.py regen` and `python xtask.py check`.

specs/ (OpenAPI 3.1 + JSON Schema 2020-12)  ->  generated/llama_orch_gen/
  - schemas/*.json            -> contracts/<module>.py       (datamodel-code-generator, pydantic v2)
  - <name>.openapi.yaml       -> <name>/ or engines/<name>/  (openapi-python-client with templates/)
                                 + wire.py for local components (datamodel-code-generator)
  - templates/*.py.jinja      -> project runtime modules (jinja2), e.g. the stream decoders
"""
