"""`deal-ros eval PRED_DIR GT_DIR`: mIoU of predicted label PNGs against ground-truth label PNGs.

Files are matched by name (e.g. `deal-ros label`'s mask/000042.png against a hand-labelled
000042.png); both are single-channel PNGs of class ids with 255 = ignore. Counts are accumulated
over all frames before taking IoU (deal_ros.labels.metrics.ConfusionMatrix, the VOC protocol). Class
names come from --classes-json, or classes.json beside or above PRED_DIR (what `label` writes),
else the ids found are numbered. Ground-truth files without a prediction are an error; predictions
without ground truth are reported and left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from deal_ros.cli import UserError
from deal_ros.config import IGNORE_INDEX as IGNORE
from deal_ros.frames.checks import check_same_size

if TYPE_CHECKING:
    from deal_ros.labels.metrics import ConfusionMatrix

MAX_LISTED = 5


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="mIoU of label PNGs against ground-truth PNGs",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pred_dir", metavar="PRED_DIR", help="folder of predicted label PNGs (e.g. labels/mask)")
    parser.add_argument("gt_dir", metavar="GT_DIR", help="folder of ground-truth label PNGs with the same names")
    parser.add_argument("--classes-json", metavar="FILE",
                        help="class names: a JSON list, or {'classes': [...]} as written by deal-ros label "
                             "(default: classes.json in PRED_DIR or its parent)")
    parser.add_argument("--json", dest="json_out", metavar="FILE", help="write the results as JSON")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--ignore-as-background", dest="ignore_as_background", action="store_true", default=True,
                       help="predicted 255 (ignore) pixels count as background (default)")
    group.add_argument("--skip-ignore", dest="ignore_as_background", action="store_false",
                       help="predicted 255 pixels are left out of the counts")
    parser.set_defaults(func=run)


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f", ... ({len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else "")


def _png_names(folder: Path, role: str) -> set[str]:
    if not folder.is_dir():
        raise UserError(f"{role} folder not found: {folder}")
    names = {p.name for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file()}
    if not names:
        raise UserError(f"{role} folder {folder} has no .png files")
    return names


def match_files(pred_dir: Path, gt_dir: Path) -> tuple[list[str], list[str]]:
    """File names present in both folders, and predictions without ground truth; error on missing predictions."""
    preds, gts = _png_names(pred_dir, "prediction"), _png_names(gt_dir, "ground-truth")
    missing = sorted(gts - preds)
    if missing:
        raise UserError(f"{len(missing)} of {len(gts)} ground-truth file(s) have no prediction in {pred_dir}: "
                        f"{_listing(missing)}")
    return sorted(gts), sorted(preds - gts)


def load_class_names(path: str | None, pred_dir: Path) -> list[str] | None:
    """Names indexed by id (background first), from a JSON list or {'classes': [...]}; None if there is none."""
    if path is None:
        found = [p / "classes.json" for p in (pred_dir, pred_dir.parent) if (p / "classes.json").is_file()]
        if not found:
            return None
        path = str(found[0])
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"classes file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"classes file {path} is not valid JSON: {exc}") from None
    names = data.get("classes") if isinstance(data, dict) else data
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise UserError(f"classes file {path}: expected a list of class names or {{'classes': [...]}}")
    if len(names) >= IGNORE:
        raise UserError(f"classes file {path}: {len(names)} classes do not fit uint8 labels with 255 = ignore")
    return names


def read_label_png(path: Path) -> np.ndarray:
    """A single-channel uint8 label image (a colour or 16-bit PNG is refused: it holds no class ids)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UserError(f"cannot read {path}: not a PNG image")
    if image.ndim != 2 or image.dtype != np.uint8:
        kind = f"{image.shape[2]}-channel" if image.ndim == 3 else "single-channel"
        raise UserError(f"{path} is a {kind} {image.dtype} image; label PNGs must be single-channel uint8 class ids")
    return image


def evaluate_folders(pred_dir: Path, gt_dir: Path, class_names: list[str] | None,
                     ignore_as_background: bool = True) -> tuple[ConfusionMatrix, dict[str, Any]]:
    """Confusion matrix over all matched files, and what was matched (for the report)."""
    from deal_ros.labels.metrics import ConfusionMatrix

    names, extra = match_files(pred_dir, gt_dir)
    # count into a matrix wide enough for any uint8 id, then keep the ids that exist
    full = ConfusionMatrix(IGNORE, ignore_index=IGNORE, pred_ignore_as_background=ignore_as_background)
    for name in names:
        pred, gt = read_label_png(pred_dir / name), read_label_png(gt_dir / name)
        check_same_size(name, "prediction", pred, "ground truth", gt)
        if class_names is not None:
            for role, image in (("prediction", pred), ("ground truth", gt)):
                bad = image[(image >= len(class_names)) & (image != IGNORE)]
                if bad.size:
                    raise UserError(f"{role} {name} holds label id {int(bad.max())}, outside 0..{len(class_names) - 1} "
                                    f"of the {len(class_names)} classes {class_names} (255 = ignore)")
        full.update(pred, gt)
    used = np.flatnonzero(full.matrix.sum(0) + full.matrix.sum(1))
    if class_names is None:
        count = int(used.max()) + 1 if used.size else 1
        class_names = ["background"] + [f"class_{i}" for i in range(1, count)]
    count = len(class_names)
    matrix = ConfusionMatrix(count, class_names, ignore_index=IGNORE, pred_ignore_as_background=ignore_as_background)
    matrix.matrix[:] = full.matrix[:count, :count]
    return matrix, {"files": len(names), "predictions_without_ground_truth": len(extra),
                    "unmatched_examples": extra[:MAX_LISTED]}


def check_json_path(path: str) -> Path:
    """--json must name a file in a writable folder: checked before the evaluation, not after it."""
    from deal_ros.storage.files import check_output_dir

    target = Path(path)
    if target.is_dir():
        raise UserError(f"--json {target} is a folder; give a file name, e.g. {target / 'eval.json'}")
    check_output_dir(target.parent, "--json folder")
    return target


def run(args: argparse.Namespace) -> int:
    from deal_ros.storage.files import atomic_write_text

    pred_dir, gt_dir = Path(args.pred_dir), Path(args.gt_dir)
    json_out = check_json_path(args.json_out) if args.json_out else None
    class_names = load_class_names(args.classes_json, pred_dir)
    matrix, matched = evaluate_folders(pred_dir, gt_dir, class_names, args.ignore_as_background)
    if matched["predictions_without_ground_truth"]:
        print(f"note: {matched['predictions_without_ground_truth']} prediction(s) have no ground truth and are "
              f"not evaluated: {_listing(matched['unmatched_examples'])}")
    ignore = "counted as background" if args.ignore_as_background else "skipped"
    print(f"{matched['files']} frame(s), {matrix.total} pixel(s); predicted 255 (ignore) {ignore}")
    print(matrix.format_table())
    if json_out is not None:
        report = {"pred_dir": str(pred_dir), "gt_dir": str(gt_dir),
                  "ignore_as_background": args.ignore_as_background, **matched, **matrix.as_dict()}
        atomic_write_text(json_out, json.dumps(report, indent=1))
        print(f"json: {json_out}")
    return 0
