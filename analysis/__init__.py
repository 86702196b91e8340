"""Tables and plots rebuilt from a study's MLflow runs (the analysis layer; see docs/architecture.md).

    from analysis import load_experiment, build_results, render, analyse, write_report
    study = load_experiment("sqlite:///mlflow.db", "quickstart")  # trials + per-epoch history frames
    results = build_results(study)                                # the paper table, long form
    print(render(results, "md", study))
    analyse(study, "analysis_output/quickstart")                  # sensitivity plots + fANOVA

Names are imported on first use, so `python -m analysis.paper_table` does not import its own module
twice (and `import analysis` stays cheap).
"""

from importlib import import_module

_EXPORTS = {
    "AnalysisError": "analysis.errors",
    "ExperimentNotFound": "analysis.errors",
    "NoResults": "analysis.errors",
    "TrackingUnavailable": "analysis.errors",
    "StudyData": "analysis.loading",
    "load_experiment": "analysis.loading",
    "build_results": "analysis.table",
    "paper_layout": "analysis.layout",
    "render": "analysis.rendering",
    "SensitivityReport": "analysis.sensitivity",
    "analyse": "analysis.sensitivity",
    "sweep_parameters": "analysis.sensitivity",
    "plot_cost": "analysis.cost",
    "pareto_front": "analysis.cost",
    "make_gallery": "analysis.gallery",
    "plot_trial_curves": "analysis.curves",
    "trials_by_top1": "analysis.curves",
    "write_report": "analysis.report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
