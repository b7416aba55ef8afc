"""Pure ``nn.Module`` models (no I/O): M2PEnc, the EDGE motion diffusion model, the video LDM.

Empty until the model issues land; loaders for pretrained weights live beside each model.
"""
