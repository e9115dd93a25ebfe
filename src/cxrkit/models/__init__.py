"""Models: a registry of small CNNs, torchvision and timm backbones under one CAM-friendly head."""

from cxrkit.models.registry import create_model, list_models, model_info

__all__ = ["create_model", "list_models", "model_info"]
