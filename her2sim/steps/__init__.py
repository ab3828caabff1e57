"""The study's steps: one module per stage function of :func:`her2sim.pipeline.build_stages`.

* :mod:`~her2sim.steps.params` - the typed view of a stage's JSON parameters (:class:`StepParams`);
* :mod:`~her2sim.steps.common` - what every stage shares: fault injection, seeds, the scan-start time;
* :mod:`~her2sim.steps.scan` - simulating and reconstructing one scan with the study's protocol;
* :mod:`~her2sim.steps.calibration`, :mod:`~her2sim.steps.phantom`, :mod:`~her2sim.steps.simulate`,
  :mod:`~her2sim.steps.recon`, :mod:`~her2sim.steps.quantify`, :mod:`~her2sim.steps.statistics`,
  :mod:`~her2sim.steps.dicom`, :mod:`~her2sim.steps.report` - the stage functions ``stage_<name>(task)``.

Stage functions are module-level so a process pool or a Dask worker can import them; they communicate only
through the files of the study folder (:mod:`her2sim.stages`).
"""
