"""Evaluation: recall metrics (DESIGN §7), scene-graph export, the HTML report.

Public API:
- `metrics.evaluate_predictions(scenes, predictions, train_predicates, ks, similarity_threshold, similarity,
  graph_constraint=True, vocabulary=None)` -> `EvaluationResult(metrics, per_predicate, ground_truth, predicted_predicates)`:
  graph-constrained keys (`R@K`, ...) and unconstrained ones (`ngR@K`, ...), `mR_vocab@K` with a vocabulary
- `metrics.compared_metrics(metrics)`: the keys `evaluate --out` keeps (constrained R/mR/gR/mgR@K, unique/unseen); `--details` has all
- `metrics.chance_metrics(scenes, train_predicates, ks, vocabulary=None)`: the same keys for one random guess per pair
- the similarity: `reltune.embedding.similarity_from_settings(model, sentence)`
- `graphs.scene_graphs(scenes, predictions, top_k)` and `graphs.write_scene_graphs(graphs, out)`
- `report.build_report(ReportConfig(...))` (`report_data.ReportConfig`)
CLI: `reltune evaluate`, `reltune export-graphs`, `reltune report` (commands.py).
"""
