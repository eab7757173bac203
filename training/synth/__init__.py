"""Synthetic microbleed engine (numpy/scipy/SimpleITK only; no torch).

``generate_case(seed, ...)`` makes one SWI or T2* case from a SynthSeg label
map: deformed anatomy, tissue contrast, veins, iron nuclei, microbleeds with
physical blooming, mimics, and a simulated acquisition; see
docs/synthetic-data.md.
"""

from training.synth.engine import SynthCase, generate_case
from training.synth.params import SynthParams

__all__ = ["SynthCase", "SynthParams", "generate_case"]
