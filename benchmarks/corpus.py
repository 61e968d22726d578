"""A fixed train/evaluation split of an image corpus, by file, so that no evaluation image is ever trained on.

    python -m benchmarks.corpus ../shared/corpus --out data/corpus_split

Each file goes to the evaluation set when the MD5 of its path relative to the corpus root falls in the first
``eval_fraction`` of the hash range: the split does not depend on the order of a folder listing, on the
machine, or on files added later (an added file never moves another). The corpus layout is ``photos/``
(content) and ``art/`` (style), searched recursively. ``--out`` materialises the split as folders of symbolic
links that ``python -m agents.train_sac --content-dir``/``--style-dir`` and ``benchmarks.quality`` take::

    data/corpus_split/train/photos/  train/art/  eval/photos/  eval/art/  split.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from agents.cli import cli_main
from nst_env.images import scan_folder

#: The corpus' sub-folders: content photos and style images.
KINDS = ("photos", "art")
#: Default share of the files held out for evaluation.
EVAL_FRACTION = 0.25


def is_evaluation_file(relative_path: str, eval_fraction: float = EVAL_FRACTION) -> bool:
    """Whether a file belongs to the evaluation set.

    :param relative_path: the file's path relative to the corpus root, with ``/`` separators.
    :param eval_fraction: share of the hash range that is held out, in ``(0, 1)``.
    """
    digest = int(hashlib.md5(relative_path.encode()).hexdigest()[:8], 16)
    return digest < eval_fraction * 16**8


def split_corpus(root: Path, eval_fraction: float = EVAL_FRACTION) -> dict[str, dict[str, list[Path]]]:
    """The corpus' images, split into ``{"train": {"photos": [...], "art": [...]}, "eval": {...}}``.

    :param root: the corpus folder, holding ``photos/`` and ``art/``.
    :param eval_fraction: share of the files held out for evaluation, in ``(0, 1)``.
    :raises ValueError: when ``eval_fraction`` is outside ``(0, 1)`` or a sub-folder is missing.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must lie in (0, 1), got {eval_fraction}.")
    split: dict[str, dict[str, list[Path]]] = {"train": {}, "eval": {}}
    for kind in KINDS:
        folder = root / kind
        if not folder.is_dir():
            raise ValueError(f"{root} is not a corpus: it has no {kind}/ folder.")
        files = sorted(scan_folder(folder))
        held_out = [is_evaluation_file(path.relative_to(root).as_posix(), eval_fraction) for path in files]
        split["eval"][kind] = [path for path, out in zip(files, held_out) if out]
        split["train"][kind] = [path for path, out in zip(files, held_out) if not out]
    return split


def materialise(split: dict[str, dict[str, list[Path]]], root: Path, out: Path) -> Path:
    """Write the split as folders of symbolic links (``out/{train,eval}/{photos,art}/``) and ``split.json``.

    Link names are the files' paths relative to their kind folder with ``/`` replaced by ``__`` (unique).

    :param split: :func:`split_corpus`'s output.
    :param root: the corpus folder the paths are under.
    :param out: the output folder (existing links are replaced).
    :return: the path of ``split.json``.
    """
    manifest: dict[str, dict[str, list[str]]] = {}
    for part, kinds in split.items():
        for kind, files in kinds.items():
            folder = out / part / kind
            folder.mkdir(parents=True, exist_ok=True)
            for path in files:
                link = folder / path.relative_to(root / kind).as_posix().replace("/", "__")
                link.unlink(missing_ok=True)
                link.symlink_to(path.resolve())
            manifest.setdefault(part, {})[kind] = [path.relative_to(root).as_posix() for path in files]
    path = out / "split.json"
    path.write_text(json.dumps({"root": str(root.resolve()), **manifest}, indent=1))
    return path


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.corpus ROOT --out DIR``: split the corpus and write the link folders."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("root", type=Path, help="corpus folder with photos/ and art/")
    p.add_argument("--out", type=Path, default=Path("data/corpus_split"), help="where the split's folders go")
    p.add_argument("--eval-fraction", type=float, default=EVAL_FRACTION, help="share held out for evaluation")
    args = p.parse_args(argv)
    try:
        split = split_corpus(args.root, args.eval_fraction)
    except ValueError as exc:
        p.error(str(exc))
    manifest = materialise(split, args.root, args.out)
    for part, kinds in split.items():
        print(f"{part}: " + ", ".join(f"{len(files)} {kind}" for kind, files in kinds.items()))
    print(f"Wrote {manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
