"""The study's steps: the stage functions of :func:`her2sim.pipeline.build_stages` and what they share.

* :mod:`~her2sim.steps.params` - the typed view of a stage's JSON parameters (:class:`StepParams`).
"""
