"""instyle: real-time neural style transfer with instance-normalized feed-forward generators."""

__version__ = "0.1.0"
