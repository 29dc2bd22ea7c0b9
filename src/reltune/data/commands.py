"""`reltune data ...` subcommands: thin wrappers over the data functions.

    reltune data import   --format vg150|gqa200|oi --src DIR --out DIR [...]   (stage scenes@<dataset>)
    reltune data world    --out DIR --seed S [...]                             (stage world)
    reltune data download --dataset NAME --out DIR (--path DIR | --url URL --sha256 HEX ...)  (stage download@<dataset>)
    reltune data names    --scenes data/scenes --out data/names.json           (stage names)

Defaults come from the functions' modules (importer, download, world_spec); params.yaml sets them per stage.
"""

from __future__ import annotations

import argparse

from reltune.data import world_spec
from reltune.data.importer import DEFAULT_BOX_TOLERANCE, DEFAULT_VAL_SIZE
from reltune.data.download import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, ArchiveLimits
from reltune.argtypes import boolean, int_at_least, non_negative_int, positive_float, positive_int, unit_interval

DEFAULT_WORLD = world_spec.WorldSize()
DEFAULT_LIMITS = ArchiveLimits()


def _probabilities(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if len(values) != 4 or not all(0.0 <= value <= 1.0 for value in values) or abs(sum(values) - 1.0) > 1e-5:
        raise argparse.ArgumentTypeError(f"expected 4 probabilities in [0, 1] summing to 1, got {text!r}")
    return values


def _jpeg_quality(text: str) -> int:
    quality = int_at_least(1)(text)
    if quality > 100:
        raise argparse.ArgumentTypeError(f"must be at most 100, got {quality}")
    return quality


def _run_import(args: argparse.Namespace) -> int:
    from reltune.data.importer import import_scenes, write_import

    result = import_scenes(
        format=args.format,
        src=args.src,
        dataset=args.dataset,
        val_size=args.val_size,
        skip_bad=args.skip_bad,
        check_images=args.check_images,
        box_tolerance=args.box_tolerance,
        held_in=args.held_in_dataset is not None and args.held_in_dataset == (args.dataset or args.format),
    )
    write_import(result, args.out)
    return 0


def _run_names(args: argparse.Namespace) -> int:
    from reltune.data.scenes import write_dataset_names
    from reltune.progress import log

    names = write_dataset_names(args.scenes, args.out)
    log(f"names -> {args.out}: " + ", ".join(
        f"{dataset} ({len(lists['objects'])} objects, {len(lists['predicates'])} predicates)" for dataset, lists in names["datasets"].items()
    ))
    return 0


def _run_world(args: argparse.Namespace) -> int:
    from reltune.data.world import generate_world

    size = world_spec.WorldSize(
        train_images=args.train_images,
        test_images=args.test_images,
        ood_images=args.ood_images,
        image_size=args.image_size,
        pair_probabilities=args.pair_probabilities,
        distractor_probability=args.distractor_probability,
        ood_unseen_object_probability=args.ood_unseen_object_probability,
        jpeg_quality=args.jpeg_quality,
    )
    generate_world(args.out, seed=args.seed, size=size)
    return 0


def _run_download(args: argparse.Namespace) -> int:
    from reltune.data.download import fetch_dataset

    fetch_dataset(
        dataset=args.dataset,
        out=args.out,
        path=args.path,
        urls=args.url or [],
        sha256s=args.sha256 or [],
        members=args.member or [],
        retries=args.retries,
        timeout=args.timeout,
        limits=ArchiveLimits(max_members=args.max_members, max_bytes=args.max_bytes, max_ratio=args.max_ratio),
    )
    return 0


def dataset_name(text: str) -> str:
    """A dataset that has a predicate category map (the name also never names a path)."""
    from reltune.instructions.categories import available_category_maps

    if text not in available_category_maps():
        raise argparse.ArgumentTypeError(f"no predicate category map for {text!r} (have: {', '.join(available_category_maps())})")
    return text


def _add_import_command(data_commands: argparse._SubParsersAction) -> None:
    importer = data_commands.add_parser(
        "import", help="convert a raw dataset (VG150 h5, GQA200 json, Open Images PySGG json) to scene tables"
    )
    importer.add_argument("--format", required=True, choices=("vg150", "gqa200", "oi"))
    importer.add_argument("--src", required=True, help="raw dataset directory (its layout per DESIGN §5)")
    importer.add_argument("--out", required=True, help="output directory for {train,val,test}.parquet + vocab.json")
    importer.add_argument(
        "--dataset",
        default=None,
        type=dataset_name,
        help="dataset name selecting the predicate category map (vg150, gqa200, oiv4, oiv6, synthetic, "
        "synthetic-ood); default: the format name (required for oi)",
    )
    importer.add_argument("--val-size", type=non_negative_int, default=DEFAULT_VAL_SIZE, help="images in val (format convention)")
    importer.add_argument(
        "--held-in-dataset",
        default=None,
        metavar="NAME",
        help="the pipeline's held-in dataset (params.yaml held_in): when it is this one, val comes from "
        "training images even where the format's convention takes it from test (GQA200)",
    )
    # flags take an optional true/false so that DVC can pass `--skip-bad ${...}` from params.yaml
    importer.add_argument(
        "--skip-bad",
        nargs="?",
        const=True,
        default=False,
        type=boolean,
        metavar="BOOL",
        help="skip bad images and list them in import_report.json",
    )
    importer.add_argument(
        "--check-images",
        nargs="?",
        const=True,
        default=True,
        type=boolean,
        metavar="BOOL",
        help="check that every image file exists (default true)",
    )
    importer.add_argument("--no-check-images", dest="check_images", action="store_false", help="same as --check-images false")
    importer.add_argument(
        "--box-tolerance",
        type=unit_interval,
        default=DEFAULT_BOX_TOLERANCE,
        help="boxes may overshoot the image by this fraction of its longer side (then clipped); more is bad input",
    )
    importer.set_defaults(func=_run_import)


def _add_world_command(data_commands: argparse._SubParsersAction) -> None:
    world = data_commands.add_parser("world", help="generate the synthetic scene-graph world (held-in + held-out)")
    world.add_argument("--out", required=True, help="output directory (synthetic/, synthetic-ood/, world_spec.json, world_counts.json)")
    world.add_argument("--seed", type=non_negative_int, default=0)
    world.add_argument("--train-images", type=non_negative_int, default=DEFAULT_WORLD.train_images)
    world.add_argument("--test-images", type=non_negative_int, default=DEFAULT_WORLD.test_images)
    world.add_argument("--ood-images", type=non_negative_int, default=DEFAULT_WORLD.ood_images)
    world.add_argument("--image-size", type=int_at_least(64), default=DEFAULT_WORLD.image_size, help="square image side in pixels")
    world.add_argument(
        "--pair-probabilities",
        type=_probabilities,
        default=",".join(f"{p:g}" for p in DEFAULT_WORLD.pair_probabilities),
        help="comma-separated probabilities of 1,2,3,4 related pairs per image (one pair per grid cell)",
    )
    world.add_argument("--distractor-probability", type=unit_interval, default=DEFAULT_WORLD.distractor_probability)
    world.add_argument(
        "--ood-unseen-object-probability", type=unit_interval, default=DEFAULT_WORLD.ood_unseen_object_probability
    )
    world.add_argument("--jpeg-quality", type=_jpeg_quality, default=DEFAULT_WORLD.jpeg_quality)
    world.set_defaults(func=_run_world)


def _add_download_command(data_commands: argparse._SubParsersAction) -> None:
    download = data_commands.add_parser(
        "download", help="link a local dataset directory, or download + verify + extract archives"
    )
    download.add_argument("--dataset", required=True, help="dataset name (for messages and the manifest)")
    download.add_argument("--out", required=True, help="the raw dataset directory to create")
    source = download.add_mutually_exclusive_group(required=True)
    source.add_argument("--path", help="an existing local directory: --out becomes a symlink to it (nothing copied)")
    source.add_argument("--url", action="append", help="a file or archive to download (repeatable)")
    download.add_argument("--sha256", action="append", help="expected SHA-256 of each --url, in the same order")
    download.add_argument(
        "--member", action="append", help="extract only this path (file or folder) from the archives (repeatable)"
    )
    download.add_argument("--retries", type=non_negative_int, default=DEFAULT_RETRIES, help="resume attempts per file after a broken transfer")
    download.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT_S, help="network timeout in seconds")
    limits = download.add_argument_group("archive limits (an archive beyond one fails before anything is written)")
    limits.add_argument("--max-members", "--max_members", type=positive_int, default=DEFAULT_LIMITS.max_members,
                        help="most members extracted from one archive")
    limits.add_argument("--max-bytes", "--max_bytes", type=positive_int, default=DEFAULT_LIMITS.max_bytes,
                        help="most uncompressed bytes extracted from one archive")
    limits.add_argument("--max-ratio", "--max_ratio", type=positive_float, default=DEFAULT_LIMITS.max_ratio,
                        help="most uncompressed bytes per byte of archive (stops archive bombs)")
    download.set_defaults(func=_run_download)


def _add_names_command(data_commands: argparse._SubParsersAction) -> None:
    names = data_commands.add_parser(
        "names", help="every dataset's object and predicate names in one file (what training excludes from its substitutes)"
    )
    names.add_argument("--scenes", required=True, help="the scene root: data/scenes (its */vocab.json are read)")
    names.add_argument("--out", required=True, help="the names file to write: data/names.json")
    names.set_defaults(func=_run_names)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="raw datasets -> scene tables; synthetic world; downloads")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    _add_import_command(data_commands)
    _add_world_command(data_commands)
    _add_download_command(data_commands)
    _add_names_command(data_commands)
