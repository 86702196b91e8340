"""The study platform: study files -> Ray Tune (Optuna / random / grid search, ASHA) -> trials running
``automix.train.train`` on one or several data-parallel workers -> MLflow runs.

Modules, one concept each: ``study`` (study files, validation), ``smoke`` (the --smoke-test variant),
``space`` (Tune/Optuna search space, search algorithm, scheduler), ``trainable`` (the Tune trainable, Ray
Train for multi-worker trials), ``failures`` (which errors are retried, the placement timeout),
``preflight`` (checks before any trial starts), ``ray_local`` (starting Ray on 127.0.0.1, attaching,
leftover processes), ``resume`` (the launch folder and its state file), ``launch`` (the Tuner and its
fit), ``launch_tracking`` (the launch's parent run), ``console`` / ``report`` (the progress table, the
final summary), ``runner`` (the steps of a launch, resume and cleanup); MLflow: ``uris``,
``parent_run``, ``mlflow_callback``, ``run_record``, ``single_run`` (a tracked ``automix.train``
run). Only this package imports Ray and MLflow; ``automix`` imports neither.
"""
