"""`kernelfit predict`: a saved model's test error on a dataset."""

from __future__ import annotations

from kernelfit.cli.run_cmd import write_outputs
from kernelfit.cli.settings import add_settings
from kernelfit.pipeline.outputs import check_outputs

EXAMPLES = """\
examples:
  kernelfit run --n-train 1000 --save-model digits.kfm
  kernelfit predict --model digits.kfm                  test error on digits' test split
  kernelfit predict --model digits.kfm --n-test 200 --json predict.json
"""


def register(sub) -> None:
    from kernelfit.cli import HelpFormatter

    p = sub.add_parser(
        "predict", help="test error of a model saved by `kernelfit run --save-model`",
        description="Load a model saved by `kernelfit run --save-model PATH` and report its\n"
                    "test error on a dataset's test split. The images go through the\n"
                    "training run's preprocessing and feature map.\n\n"
                    "A model file holds numbers and text only (JSON and .npy arrays, never\n"
                    "a pickle): loading one runs none of its contents. Files saved by older\n"
                    "kernelfit versions (pickles) are refused unread; refit and save again.",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, metavar="PATH",
                   help="model file written by `kernelfit run --save-model`")
    add_settings(p, ("dataset", "n_test", "data_home"), dataset=dict(
        default=None, help="dataset to predict (default: the one the model was trained on)"))
    p.add_argument("--json", metavar="PATH", default=None, help="write the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=main)


def main(args) -> int:
    from kernelfit.atomic import write_json_atomic
    from kernelfit.pipeline.saved_model import load_model, predict_dataset

    model = load_model(args.model)
    dataset = args.dataset or model.settings["dataset"]
    check_outputs({"--json": args.json}, inputs={"model": args.model}, datasets=[dataset],
                  data_home=args.data_home)
    result = predict_dataset(model, dataset, n_test=args.n_test, data_home=args.data_home,
                             progress=not args.quiet)
    result = {"model": str(args.model), **result}
    trained = model.settings
    kern = model.estimator.kernel_.params
    scale = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in kern.items() if k not in ("name", "dim"))
    print(f"model        {args.model}")
    print(f"trained on   {trained['dataset']} (n_train={trained['n_train']:,}, "
          f"features {trained['features']}, kernel {kern.get('name')} ({scale}), "
          f"randomization {trained['randomization']})")
    print(f"dataset      {dataset}  (n_test={result['n_test']:,})")
    print(f"test error   {100 * result['test_error']:.2f}%")
    return write_outputs([("result", args.json, lambda p: write_json_atomic(p, result))])
