"""Evaluation: recall metrics (DESIGN §7), scene-graph export, the HTML report.

Public API:
- `metrics.evaluate_predictions(scenes, predictions, train_predicates, ks, similarity_threshold, similarity)`
  -> `EvaluationResult(metrics, per_predicate, ground_truth, predicted_predicates)`
- `graphs.scene_graphs(scenes, predictions, top_k)` and `graphs.write_scene_graphs(graphs, out)`
- `report.build_report(ReportConfig(...))` (`report_data.ReportConfig`)
CLI: `reltune evaluate`, `reltune export-graphs`, `reltune report` (commands.py).
"""
