"""Networks, losses, curriculum and the training loop of the hybrid network.

Imports only torch, torchvision and numpy, so that it runs as it is on a bare GPU machine.
"""
