"""sgma: Semantic-Guided fusion + Modality-Aware sampling for multi-sensor segmentation."""

__version__ = "0.1.0"
__all__ = ["__version__"]
