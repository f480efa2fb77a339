"""Average the weights of several runs of one architecture (a uniform "model soup").

    python recipes/average_weights.py OUT.safetensors RUN_A/model.safetensors RUN_B/model.safetensors ...

Runs fine-tuned from the same weights with different seeds or augmentations stay close enough
for their average to work as one model, usually at least as well as each (Wortsman et al., 2022,
"Model soups"). Every floating-point tensor, batch-norm running statistics included, is the mean
of the inputs' (computed in float64, stored in the input dtype); integer tensors (batch norm's
``num_batches_tracked`` counters, which inference ignores) are the first input's. The inputs
must hold the same keys, shapes and dtypes and the same ``featherface`` metadata (the
architecture); the output keeps that metadata, so ``create_model(arch, checkpoint_path=OUT)``
loads it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def average_weights(paths: list[Path]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The element-wise mean of the state dicts in ``paths`` and their shared metadata."""
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two weight files, got {len(paths)}")
    metadatas, states = [], []
    for path in paths:
        with safe_open(str(path), "pt") as handle:
            metadatas.append(handle.metadata() or {})
            names = handle.keys()  # a safetensors file handle is not iterable
            states.append({name: handle.get_tensor(name) for name in names})
    metadata = metadatas[0]
    for path, meta in zip(paths[1:], metadatas[1:]):
        if meta.get("featherface") != metadata.get("featherface"):
            raise ValueError(
                f"{path} is a {meta.get('featherface')} checkpoint, {paths[0]} a "
                f"{metadata.get('featherface')} one: average runs of one architecture"
            )
    first = states[0]
    for path, state in zip(paths[1:], states[1:]):
        if state.keys() != first.keys():
            missing, extra = sorted(first.keys() - state.keys()), sorted(state.keys() - first.keys())
            raise ValueError(
                f"{path} differs from {paths[0]} in its keys: lacks {missing[:5]}, adds {extra[:5]}"
            )
        for key, tensor in state.items():
            if tensor.shape != first[key].shape or tensor.dtype != first[key].dtype:
                raise ValueError(
                    f"{path}: {key} is {tuple(tensor.shape)} {tensor.dtype}, in {paths[0]} "
                    f"{tuple(first[key].shape)} {first[key].dtype}"
                )
    averaged = {
        key: (sum(state[key].double() for state in states) / len(states)).to(tensor.dtype)
        if tensor.is_floating_point()
        else tensor
        for key, tensor in first.items()
    }
    return averaged, metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="the averaged .safetensors file to write")
    parser.add_argument("inputs", type=Path, nargs="+", help="two or more .safetensors weight files")
    args = parser.parse_args()
    try:
        averaged, metadata = average_weights(args.inputs)
    except ValueError as error:
        parser.error(str(error))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_file(averaged, str(args.output), metadata=metadata)
    print(f"wrote {args.output}: the mean of {len(args.inputs)} weight files ({len(averaged)} tensors)")


if __name__ == "__main__":
    main()
