"""PETL comparisons as data: an experiment folder trains, benchmarks and records its runs (`adaptir experiment`)."""

from adaptir_cli.experiments.config import Experiment, ExperimentError, Run, load_experiment
from adaptir_cli.experiments.results import ResultsError, experiment_results, read_results

__all__ = ["Experiment", "ExperimentError", "ResultsError", "Run", "experiment_results", "load_experiment", "read_results"]
