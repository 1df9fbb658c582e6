"""mri2mri.starters: the recipes of the starter models and the one command that builds them.

A starter model is trained on simulated subjects only (`mri2mri.data.simulate`, with
per-subject variety) and shipped in the runtime package (`mri2mri.runtime.models`), so a
user without paired scans can synthesize with ``mri2mri-run --model NAME`` right after
``pip install``. `recipes` holds what each model is made from, `build` runs a recipe
(simulate, train, export, score), `card` writes the model card, and ``mri2mri-starter``
(`cli`) is the command line. It sits on top, beside `demo` and `benchmarks`.
"""
