"""Explanations: Grad-CAM heatmaps, overlays, heatmap-to-box and IoBB/IoU localization scoring."""
