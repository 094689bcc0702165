"""``sgma predict``: whole scenes by sliding windows, written as georeferenced outputs."""

from sgma_cli.engine.predict.job import PredictJob, PredictResult, predict_scene, run_predict

__all__ = ["PredictJob", "PredictResult", "predict_scene", "run_predict"]
