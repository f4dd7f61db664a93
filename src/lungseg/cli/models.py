"""``lungseg models``: the registered architectures with their size, cost and attention layout."""

from __future__ import annotations

import argparse

from lungseg.cli import add_parser, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_parser(
        subparsers,
        "models",
        "list the registered models: parameters, GFLOPs per image, which levels carry attention",
    )
    parser.add_argument(
        "--sizes",
        type=positive_int,
        nargs="+",
        default=[256, 512],
        metavar="N",
        help="square input sides to count GFLOPs at (multiples of the model stride)",
    )
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    import torch

    from lungseg.models import create_model, list_models
    from lungseg.models.complexity import attention_summary, count_flops, count_parameters

    header = ["name", "params (M)", *(f"GFLOPs@{size}" for size in args.sizes), "attention"]
    rows = []
    for name in list_models():
        with torch.device("meta"):  # shapes only: no weights to initialise, nothing computed
            model = create_model(name)
        rows.append(
            [
                name,
                f"{count_parameters(model) / 1e6:.2f}",
                *(f"{count_flops(model, size, size) / 1e9:.2f}" for size in args.sizes),
                attention_summary(model.config),
            ]
        )
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(
        "\nGFLOPs: FLOPs = 2 x multiply-accumulates of one 1-channel image, counted by "
        "torch.utils.flop_counter.FlopCounterMode (convolutions and matmuls; attention counted "
        "on its matmul path). Attention levels: 0 = full resolution; 'enc' = self-attention in "
        "the encoder, gates = on the decoder's skip connections."
    )
    return 0
