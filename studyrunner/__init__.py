"""The study platform: study files -> Ray Tune (Optuna / random / grid search, ASHA) -> trials running
``automix.train.train`` on one or several data-parallel workers -> MLflow runs.

Modules, one concept each: ``study`` (study files, validation, smoke variant), ``space`` (Tune/Optuna
search space, search algorithm, scheduler), ``trainable`` (the Tune trainable, Ray Train for multi-worker
trials), ``tracking`` (MLflow layout, the driver-side callback), ``report`` (final table), ``runner``
(launch and resume). Only this package imports Ray and MLflow; ``automix`` imports neither.
"""
