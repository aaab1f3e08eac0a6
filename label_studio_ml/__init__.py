"""Label Studio ML backend SDK: turn a model class into the web server Label Studio talks to."""

__version__ = "2.0.0"
