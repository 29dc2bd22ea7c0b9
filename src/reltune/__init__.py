"""reltune: Adaptive Relation Tuning (ART) as a DVC pipeline.

Subpackages, one concept each:
  data/          raw dataset formats -> scene tables; the synthetic world
  instructions/  scene tables -> instruction tables
  sampling/      balanced, random and adaptive (ART) selection
  models/        VLM backends, crops, training, generation with entropy
  evaluation/    PredCls metrics, reports
"""

__version__ = "0.1.0"
