"""Pure ``nn.Module`` models (no I/O): SMPL, the EDGE motion diffusion model (and its motion
representation), later M2PEnc and the video LDM. Loaders for pretrained weights live in
``storage/`` (e.g. ``storage/edge_checkpoint.py``), next to the data they read.
"""
