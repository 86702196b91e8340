"""AutoMix (Liu, Li et al., arXiv 2103.13027) and its mixup baselines in PyTorch.

This package imports neither Ray nor MLflow: the study platform (``studyrunner``) wraps it.
"""
__version__ = "0.1.0"
