"""``wsca demo``: the induced-shortcut demo (BUS-BRA, or the bundled digits)."""

from __future__ import annotations

from ..validation.demo import DEFAULT_EPOCHS, RESAMPLING    # RESAMPLING: the API's bootstrap and permutations
from .common import add_parser, progress_enabled

EXAMPLE = """\
example:
  wsca demo --out runs/demo

  BUS-BRA (read from --data-dir, else $WSCA_DATA_DIR, else ../shared/data): malignancy models
  trained on a balanced design (scanner independent of the class) and on a biased one (each
  class's majority from one scanner), fine-tuned and multi-task; WSC malignancy x scanner with
  bootstrap intervals and permutation p-values. Without BUS-BRA it uses scikit-learn's bundled
  digits with a stamped artefact as the confounder, and says so. Writes runs/demo/report.html,
  runs/demo/summary.json and one analysis folder per condition.
"""


def register(sub) -> None:
    d = add_parser(sub, "demo", help="induced-shortcut demo on BUS-BRA: balanced vs biased, fine-tuned and multi-task", example=EXAMPLE)
    d.add_argument("--data-dir", help="folder with busbra_64.npz (default $WSCA_DATA_DIR, else ../shared/data)")
    d.add_argument("--dataset", default="auto", choices=["auto", "busbra", "digits"],
                   help="auto: BUS-BRA when found, else the bundled digits (default auto)")
    d.add_argument("--epochs", type=int, help="training epochs per condition (default: "
                   + ", ".join(f"{n} on {k}" for k, n in DEFAULT_EPOCHS.items()) + ")")
    d.add_argument("--bootstrap", type=int, default=RESAMPLING.bootstrap,
                   help="bootstrap replicates of every condition's analysis (0 switches the intervals off)")
    d.add_argument("--permutations", type=int, default=RESAMPLING.permutations,
                   help="label permutations of every condition's analysis (0 switches the p-values off)")
    d.add_argument("--seed", type=int, default=0, help="seeds the designs, the training and the analyses")
    d.add_argument("--quiet", action="store_true", help="no progress (the results and 'wrote' line still print)")
    d.add_argument("--out", required=True, help="output folder")
    d.set_defaults(handler=run)


def run(args) -> int:
    from ..validation.demo import run_demo

    run_demo(args.out, dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs, bootstrap=args.bootstrap,
             permutations=args.permutations, seed=args.seed, progress=progress_enabled(args))
    return 0
