"""Training sets: import human labels, ask a teacher for rationales, build augmented splits
and export them for trainers. Where images are read from is ``llavaguard.inputs``."""
