"""oikyo: fine-tune language models from raw data to a deployed, monitored model.

The stage packages (``oikyo.data``, ``oikyo.models``, ``oikyo.train`` ...) expose plain functions;
the CLI, the REST API and the dashboard only adapt them.
"""

__version__ = "0.1.0"
