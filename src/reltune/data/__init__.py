"""data subpackage: raw datasets -> scene tables (DESIGN §4, §5); the synthetic world (§9); downloads.

Public API:
- `scenes.read_scenes(dir, split) -> (DataFrame, vocab)`, `scenes.validate_scene_table(table, file, vocab=None)`,
  `scenes.write_scenes(dir, {split: table}, vocab)`, `scenes.SCENE_SCHEMA`
- `importer.import_scenes(format, src, dataset, val_size, skip_bad, check_images, box_tolerance) -> ImportResult`,
  `importer.write_import(result, out)`; formats `vg150`, `gqa200`, `oi`
- `world.generate_world(out, seed, size)`; `world_spec` (classes, predicates, cues, `WorldSize`)
- `download.fetch_dataset(dataset, out, path=None, urls=(), sha256s=(), members=())`
CLI: `reltune data import|world|download` (see `commands.py`).
"""
