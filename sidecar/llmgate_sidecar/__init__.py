"""llmgate's data plane: the sidecar that serves the OpenAI API on localhost.

Entry points: `app.create_app` (the aiohttp application), `server.run` (the process, with
signals and the ops port). Reads the compiled config (`llmgate_contract`); never imports the
operator.
"""
