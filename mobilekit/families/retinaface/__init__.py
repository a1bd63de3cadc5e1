"""Family "retinaface": Pytorch_Retinaface's priors, box coding, MultiBox loss and end-to-end graph."""
