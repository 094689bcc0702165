"""``sgma export``: a checkpoint as an ONNX or ExportedProgram graph that runs on its own."""

from sgma_cli.engine.export.job import ExportJob, ExportResult, run_export

__all__ = ["ExportJob", "ExportResult", "run_export"]
