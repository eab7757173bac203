"""Training of the contrast-agnostic parcellation network (the location filter's eyes).

SynthSeg's recipe (Billot et al. 2023) at 2 mm: random-contrast images are
synthesised from whole-head label maps on the fly, so the network never sees a
real contrast and learns to segment any of them.  ``labelmaps`` caches the
label maps on the canonical grid, ``synth`` draws images, ``train`` fits the
network, ``export`` writes the ONNX model, ``evaluate`` measures Dice on the
held-out subjects.
"""
