"""Datasets and how samples reach the model.

Imports only torch, torchvision, numpy and scikit-learn, so that it runs as it is on a bare
GPU machine.
"""
