"""Evaluation protocols (the official pixelSplat one: fixed views per scene)."""

from pixelsplat_ns.evaluation.protocol import (
    EvaluationIndexError,
    EvaluationResults,
    SceneScores,
    ViewChoice,
    evaluate_scene,
    format_summary,
    load_evaluation_index,
    render_targets,
    run_evaluation,
    score_views,
)

__all__ = [
    "EvaluationIndexError",
    "EvaluationResults",
    "SceneScores",
    "ViewChoice",
    "evaluate_scene",
    "format_summary",
    "load_evaluation_index",
    "render_targets",
    "run_evaluation",
    "score_views",
]
