"""FetalIQA core: everything that is not Qt (I/O, preprocessing, models, engine, analysis,
review store, command line)."""

__version__ = "0.1.0"

from fetaliqa_core.errors import FetalIQAError  # noqa: E402,F401
