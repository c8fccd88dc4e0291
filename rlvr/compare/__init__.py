"""Studies: variants x seeds of a recipe, run as ordinary run directories, reported with intervals."""

from rlvr.compare.report import mean_interval, summarize_study, write_report
from rlvr.compare.study import Study, StudyError, Variant, load_study, run_study, study_from_dir

__all__ = ["Study", "StudyError", "Variant", "load_study", "mean_interval", "run_study", "study_from_dir",
           "summarize_study", "write_report"]
