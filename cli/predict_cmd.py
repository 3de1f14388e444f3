"""`kernelfit predict`: a saved model's test error on a dataset."""

from __future__ import annotations

from .run_cmd import check_outputs, positive_int, write_outputs

EXAMPLES = """\
examples:
  kernelfit run --n-train 1000 --save-model digits.kfm
  kernelfit predict --model digits.kfm                  test error on digits' test split
  kernelfit predict --model digits.kfm --n-test 200 --json predict.json
"""


def register(sub) -> None:
    from . import HelpFormatter

    p = sub.add_parser(
        "predict", help="test error of a model saved by `kernelfit run --save-model`",
        description="Load a model saved by `kernelfit run --save-model PATH` and report its\n"
                    "test error on a dataset's test split. The images go through the\n"
                    "training run's preprocessing and feature map.\n\n"
                    "A model file is a Python pickle, and loading a pickle runs code: only\n"
                    "load files you made or trust. Its recorded sha256 is checked first,\n"
                    "which catches a damaged or edited file, not a forged one.",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, metavar="PATH",
                   help="model file written by `kernelfit run --save-model` (trusted files only)")
    p.add_argument("--dataset", default=None,
                   help="dataset to predict (default: the one the model was trained on)")
    p.add_argument("--n-test", type=positive_int, default=None, metavar="N",
                   help="test points, a stratified subset (default: all)")
    p.add_argument("--data-home", default=None, metavar="DIR",
                   help="dataset cache (default: $KERNELFIT_DATA or the user cache dir)")
    p.add_argument("--json", metavar="PATH", default=None, help="write the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=main)


def main(args) -> int:
    from ..atomic import write_json_atomic
    from ..experiments.saved_model import load_model, predict_dataset

    check_outputs(args.json)
    model = load_model(args.model)
    dataset = args.dataset or model.settings["dataset"]
    result = predict_dataset(model, dataset, n_test=args.n_test, data_home=args.data_home,
                             progress=not args.quiet)
    result = {"model": str(args.model), **result}
    rec = model.record
    trained = model.settings
    kern = rec.get("kernel", {})
    scale = ", ".join(f"{k}={v:.4g}" for k, v in kern.items() if isinstance(v, float))
    print(f"model        {args.model}")
    print(f"trained on   {trained['dataset']} (n_train={trained['n_train']:,}, "
          f"features {trained['features']}, kernel {kern.get('name')} ({scale}), "
          f"randomization {trained['randomization']})")
    print(f"dataset      {dataset}  (n_test={result['n_test']:,})")
    print(f"test error   {100 * result['test_error']:.2f}%")
    return write_outputs([("result", args.json, lambda p: write_json_atomic(p, result))])
